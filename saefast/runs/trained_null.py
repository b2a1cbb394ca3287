"""A seed group's trained null, planned from its real runs' run.json alone: which seeds, on
which surrogate sample, in which folder. The sweep trains what this plans
(`sweep.null_runs`); a report reads the same folder (`report.trained_null`), so both name it
the same way without reading any activations.

The null runs of a group are its recipe (run.json `config`: k, lr, steps or epochs, batch,
AuxK, schedule, dtype, init, data order) trained with the group's first min(S, MAX_SEEDS)
seeds (numerically), only when those are >= MIN_SEEDS, on ONE surrogate sample
(`data.surrogate.SurrogateSpec`) of exactly the group's training token count, placed where
the training rows are in the store (the held-out rows stay real). Null seed s starts from
the init of real seed s and reads the sample in s's data order, so null pair (s, t) is real
pair (s, t) with the data's sparse structure taken away.

They live in OUT/runs/.null/<kind>-<key>/runs/s<seed>/ (`runs.layout.null_runs_dir`), the
key naming everything that decides their weights: the surrogate kind and sample seed, the
rows Σ is estimated from and the training rows (`store.rows_key`: the store and its shards,
so a store harvested again gets new null runs), the chunking of the sample, the recipe and
d. A second sweep or a report finds them by that key; the seed picks the run dir.

Runs without a recipe (other tools' formats, planted run dirs), streamed runs (no store),
runs whose store is gone, fewer than MIN_SEEDS seeds, or a Σ from fewer than
`surrogate.MIN_MOMENT_TOKENS` rows get the reason instead of a plan.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from saefast.runs import layout
from saefast.runs.reading import read_run_json

MAX_SEEDS = 5  # null seeds per group at most: the group's first ones
MIN_SEEDS = 3  # fewer give no interval over runs (the jackknife needs 3)
SAMPLE_SEED = 0  # the surrogate sample's seed (one sample per group and kind)
KEY_VERSION = 1  # bump when what a null run is trained on changes: old folders are not read
NAMES = {"gaussian": "trained", "elliptical": "trained_elliptical"}  # summary.nulls.kinds keys
NO_RECIPE = ("the runs carry no training recipe (no saefast run.json config), so they "
             "cannot be retrained on a surrogate")
STREAMED = ("the runs streamed their activations (data.cache false): no store holds the rows "
            "the surrogate's mean and covariance come from")


@dataclass(frozen=True)
class NullPlan:
    """A group's null runs of one surrogate kind: seeds, folder (their own OUT), the sample,
    the real runs' config (the seed replaced per null run), the recipe's fingerprint, the key."""

    kind: str
    group: str
    seeds: tuple[int, ...]
    folder: Path
    sample: object  # data.surrogate.SurrogateSpec
    config: dict
    recipe: str
    key: str

    @property
    def name(self) -> str:
        """The kind's key in summary.nulls.kinds ("trained" for the gaussian surrogate)."""
        return NAMES[self.kind]

    def run_name(self, seed: int) -> str:
        return f"s{int(seed)}"

    def run_dir(self, seed: int) -> Path:
        return layout.run_dir(self.folder, self.run_name(seed))

    def config_of(self, seed: int) -> dict:
        """The recipe with seed `seed` (a RunConfig dict)."""
        return {**self.config, "train": {**self.config["train"], "seed": int(seed)}}


def recipe(config: dict) -> dict:
    """What trains a run besides its data and seed: the SAE and every training setting but
    the seed and the checkpoint interval (`train.settings.fingerprint`'s settings)."""
    train = {k: v for k, v in (config.get("train") or {}).items()
             if k not in ("seed", "checkpoint_every")}
    return {"sae": config.get("sae"), "train": train}


def recipe_fingerprint(config: dict) -> str:
    text = json.dumps(recipe(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ranges(tokens: dict) -> tuple[tuple[int, int], tuple[int, int]]:
    """(training rows, held-out rows) [start, end) in the store from run.json `tokens`
    (`sweep.plan.data_ranges` of the run's config)."""
    n, h = int(tokens["train"]), int(tokens["held_out"])
    if tokens.get("held_out_shared"):
        return (h, h + n), (0, h)
    return (0, n), (n, n + h)


def plan(run_dirs: Sequence[str | Path], kind: str) -> NullPlan | str:
    """The null runs of these real runs (one seed group) for surrogate `kind`, or why there
    are none. Reads run.json files and the store's meta.json and shard sizes only."""
    from saefast.data import store as _store
    from saefast.data.surrogate import CHUNK_ROWS, MIN_MOMENT_TOKENS, REL_FLOOR

    infos = [read_run_json(d, missing_ok=True) for d in run_dirs]
    configs = [i.get("config") for i in infos]
    if not infos or any(not isinstance(c, dict) or not isinstance(c.get("train"), dict)
                        or "seed" not in c["train"] or not isinstance(c.get("sae"), dict)
                        for c in configs):
        return NO_RECIPE
    if len({recipe_fingerprint(c) for c in configs}) != 1:
        return "the runs differ in more than their seed, so they have no one recipe"
    stores = {str(i.get("activation_store", "")) for i in infos}
    if any(s.startswith("stream") for s in stores):
        return STREAMED
    tokens = [i.get("tokens") for i in infos]
    if len(stores) != 1 or any(t != tokens[0] or not isinstance(t, dict) for t in tokens) \
            or not {"train", "held_out"} <= set(tokens[0]):
        return "the runs did not all train on the same rows of one store"
    store = Path(stores.pop())
    if not store.is_dir():
        return f"the activation store the runs trained on ({store}) is not there any more"
    parents = {Path(d).resolve().parent for d in run_dirs}
    if len(parents) != 1:
        return "the runs are in different folders; the null runs live beside them"
    seeds = sorted({int(c["train"]["seed"]) for c in configs})[:MAX_SEEDS]
    if len(seeds) < MIN_SEEDS:
        return f"{len(seeds)} seed(s); the trained null needs >= {MIN_SEEDS} for an interval"
    train, held = ranges(tokens[0])
    rows = max(train[1] - train[0], held[1] - held[0])
    if rows < MIN_MOMENT_TOKENS:
        return (f"the surrogate's covariance needs >= {MIN_MOMENT_TOKENS:,} tokens; the larger "
                f"of the training and held-out ranges has {rows:,} (set data.held_out_tokens "
                "to a shared held-out block of that size)")
    d = int((infos[0].get("model") or {}).get("d_model") or _store.store_info(store)["d_model"])
    fp = recipe_fingerprint(configs[0])
    text = json.dumps([KEY_VERSION, kind, SAMPLE_SEED, CHUNK_ROWS, REL_FLOOR, list(train),
                       list(held), _store.rows_key(store, max(train[1], held[1])), fp, d])
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    from saefast.data.surrogate import SurrogateSpec

    sample = SurrogateSpec(str(store), train, held, kind=kind, seed=SAMPLE_SEED, d=d)
    return NullPlan(kind, str(infos[0].get("group") or ""), tuple(seeds),
                    layout.null_runs_dir(parents.pop()) / f"{kind}-{key}", sample,
                    configs[0], fp, key)
