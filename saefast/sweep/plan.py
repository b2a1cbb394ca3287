"""What a sweep will do before it does it: checks, harvests, seed passes, estimates.

- `preflight`: model, hook and corpus names, each corpus's size against the tokens asked,
  devices and output paths are checked before any work starts (and by --dry-run), so a typo
  fails in a second with one line, not after a harvest.
- `pending`: which runs are finished (skipped on resume) and which are left; a run dir of the
  same name but another config is refused.
- `harvest_jobs`: one forward pass per (model, corpus, context, device) harvests every hook
  its runs need, up to the largest token budget.
- `seed_passes`: runs that differ only by seed train together, in as many passes as the
  memory budget needs.
- `report_matchings`: the matchings a group report makes of each pair (what the Ray
  executor's pair tasks compute ahead of the report, and what `estimate` counts).
- `estimate`: memory and time for `--dry-run`, the trained null's training on its own line
  (`null_runs`: which groups get one, and how many null runs).
Imports no torch at module level (a dry run stays quick).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saefast.config import MatchConfig, NullsConfig, RunConfig, affects_results
from saefast.errors import SweepError
from saefast.fsio import check_output_dir
from saefast.runs import layout
from saefast.sweep.experiment import RunSpec, groups
from saefast.train import memory

# d_model of the built-in models and of some Hugging Face models, for estimates made before
# a model is loaded (a dry run loads nothing and needs no network); others are guessed at 768
D_MODEL_GUESS = {"minilm": 384, "tiny": 64, "gemma-270m": 640,
                 "gpt2": 768, "gpt2-medium": 1024, "gpt2-large": 1280, "gpt2-xl": 1600,
                 "EleutherAI/pythia-70m": 512, "EleutherAI/pythia-160m": 768,
                 "EleutherAI/pythia-410m": 1024, "EleutherAI/pythia-1b": 2048,
                 "google/gemma-2-2b": 2304}

# Rates measured on the 2-core dev box (docs/benchmarks.md), used by --dry-run
# SAE training, counted as 4 x tokens x F x d per seed: 20 seeds of 16,384 x 384 train at
# 5,150-5,500 token-steps/s summed (batch 256, k 8: 1.3e11; docs/benchmarks.md). The 50e9
# used before put experiments/scale_16k.yaml's 16,384-feature group at 2.8 h of training;
# it trained at ~3K token-steps/s on a box shared with other work (488 steps in ~2 h)
TRAIN_FLOPS_PER_S = 1.2e11
# the same on an H100 in strict float32: train_saes at 1.05M token-steps/s, 16,384 x 768,
# batch 4,096 (docs/benchmarks.md); used for runs on cuda
TRAIN_FLOPS_PER_S_CUDA = 5.2e13
HARVEST_TOKENS_PER_S = 10_000.0  # MiniLM, middle layers; models not listed below
# other models' forward passes on the same box: gemma-270m to its middle layer, 30K tokens
# per corpus in 43-72 s (experiments/domains_gemma.yaml, 2026-12-07)
HARVEST_TOKENS_PER_S_BY_MODEL = {"minilm": HARVEST_TOKENS_PER_S, "gemma-270m": 500.0}
# one certified matching of two trained 16,384-feature dictionaries, machine seconds with
# two pairs at a time on the two cores (experiments/scale_16k.yaml: 190 pairs ~7.1 s each;
# candidates' GEMM ~3.6 s of one core, sparse solve ~7.5, certificate ~1.5)
MATCH_SECONDS_16K = 7.0
EQUIVALENCE_MAX_PAIRS = 20  # stats.equivalence's (the plan imports no stats)
MODEL_LOAD_SECONDS = 7.0  # importing transformer_lens and loading a model, per harvest or stream
SEED_STEP_SECONDS = 0.0015  # a small SAE's optimizer step is overhead, not FLOPs
PAIR_SECONDS = 0.05  # a small pair's fixed cost: matching, live-only, recurrence
GROUP_REPORT_SECONDS = 0.5  # the null and the plots of a group


# ---------------------------------------------------------------------------- checks


def preflight(runs: list[RunSpec], out_dir: str | Path, cache_dir: str | Path | None = None,
              *, devices: bool = True) -> list[str]:
    """Refuse what would fail later: an unknown model, hook or corpus, more tokens than a
    built-in corpus holds, a device this torch cannot use, an output or cache folder that
    cannot be written. Nothing is loaded or created. devices=False: the runs train elsewhere
    (a Ray cluster checks its own nodes), not on this machine's devices. Returns warnings (a
    budget within a corpus size's estimate error)."""
    warnings = check_inputs(runs)
    for path in (layout.runs_dir(out_dir), layout.reports_dir(out_dir)):
        check_output_dir(path, "--out")
    if cache_dir is not None:
        check_output_dir(cache_dir, "--cache-dir")
    for device in sorted({r.config.model.device for r in runs}) if devices else ():
        check_device(device)
    return warnings


def check_inputs(runs: list[RunSpec]) -> list[str]:
    """The names (`data.names`) and each built-in corpus's size (`data.corpus_size`) against
    the most tokens its runs read, harvested or streamed; warnings for budgets near a size."""
    from saefast.data import corpus_size, names

    for model in sorted({r.config.model.name for r in runs}):
        names.check_model(model)
        names.check_hooks(model, sorted({r.config.model.hook for r in runs
                                         if r.config.model.name == model}))
    for corpus in sorted({r.config.data.corpus for r in runs}):
        names.check_corpus(corpus)
    most: dict[tuple, RunConfig] = {}  # per harvest (device aside), the run reading the most
    for c in sorted((r.config for r in runs), key=harvested_count):
        most[(c.model.name, c.data.corpus, c.model.context_length, c.model.drop_special_tokens)] = c
    warnings = []
    for (model, corpus, context, drop), cfg in most.items():
        held = f" (with {cfg.data.held_out_tokens:,} held out)" if cfg.data.held_out_tokens else ""
        line = corpus_size.check_budget(model, corpus, harvested_count(cfg), context_length=context,
                                        drop_special_tokens=drop, what=held)
        warnings += [line] if line else []
    return warnings


def check_device(device: str) -> None:
    """`cuda` needs a CUDA build of torch and a visible GPU; config has checked the form."""
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        why = ("this torch is a CPU build" if torch.version.cuda is None
               else "no GPU is visible (CUDA_VISIBLE_DEVICES?)")
        raise SweepError(f"device {device!r} is not available: {why}; use --device cpu")
    index = torch.device(device).index
    if index is not None and index >= torch.cuda.device_count():
        raise SweepError(f"device {device!r} is not available: "
                         f"{torch.cuda.device_count()} GPU(s) visible")


# ---------------------------------------------------------------------------- resume


def pending(runs: list[RunSpec], out_dir: Path) -> tuple[list[RunSpec], list[tuple[RunSpec, Path, dict]]]:
    """(runs left to train, finished runs as (spec, path, run.json)). A finished run dir of
    the same name must hold the same config; a key it lacks was written before that setting
    existed, so it had the default."""
    from saefast.runs.artifacts import is_complete_run, read_run_json

    todo, done = [], []
    default = RunConfig().to_dict()
    for spec in runs:
        path = layout.run_dir(out_dir, spec.name)
        if not is_complete_run(path):
            todo.append(spec)
            continue
        info = read_run_json(path)
        stored, mine = info.get("config", {}), spec.config.to_dict()
        diff = [f"{s}.{k}" for s in mine for k in mine[s] if affects_results(f"{s}.{k}")
                and stored.get(s, {}).get(k, default[s][k]) != mine[s][k]]
        if diff:
            raise SweepError(f"{path} already holds a run with a different config "
                             f"({', '.join(diff[:3])}); use another --out or remove it")
        done.append((spec, path, info))
    return todo, done


# ---------------------------------------------------------------------------- harvests


@dataclass
class HarvestJob:
    """One forward pass over a corpus serves every hook the runs on it need."""

    model: str
    corpus: str
    context_length: int
    drop_special_tokens: bool
    device: str
    hooks: list[str]
    tokens: int

    @property
    def key(self) -> tuple:
        """harvest_key of the runs it serves (the fields above, in order)."""
        return (self.model, self.corpus, self.context_length, self.drop_special_tokens, self.device)


def harvest_key(cfg: RunConfig) -> tuple:
    """What decides which forward pass a run's activations come from (HarvestJob.key)."""
    m = cfg.model
    return (m.name, cfg.data.corpus, m.context_length, m.drop_special_tokens, m.device)


def harvest_jobs(runs: list[RunSpec]) -> list[HarvestJob]:
    """The cache harvests the runs need (streamed runs harvest as they train)."""
    jobs: dict[tuple, HarvestJob] = {}
    for r in runs:
        if not r.config.data.cache:
            continue
        key = harvest_key(r.config)
        job = jobs.setdefault(key, HarvestJob(*key, hooks=[], tokens=0))
        if r.config.model.hook not in job.hooks:
            job.hooks.append(r.config.model.hook)
        job.tokens = max(job.tokens, harvested_count(r.config))
    return list(jobs.values())


def harvested_count(cfg: RunConfig) -> int:
    """Activations a run reads from its store: its training and held-out tokens."""
    return cfg.data.tokens + cfg.data.held_out_tokens


def held_out_count(cfg: RunConfig) -> int:
    return cfg.data.held_out_tokens or int(round(cfg.data.tokens * cfg.data.held_out))


def train_count(cfg: RunConfig) -> int:
    return cfg.data.tokens if cfg.data.held_out_tokens else cfg.data.tokens - held_out_count(cfg)


def data_ranges(cfg: RunConfig) -> tuple[tuple[int, int], tuple[int, int]]:
    """(training [start, end), held-out [start, end)) in the store's order: a fixed held-out
    set first (data.held_out_tokens), else the last held_out fraction of the budget."""
    if cfg.data.held_out_tokens:
        h = cfg.data.held_out_tokens
        return (h, h + cfg.data.tokens), (0, h)
    n, e = cfg.data.tokens, held_out_count(cfg)
    return (0, n - e), (n - e, n)


def token_steps(cfg: RunConfig) -> int:
    """Training tokens a seed sees: steps x batch when steps are fixed, else tokens x epochs."""
    if cfg.train.steps:
        return cfg.train.steps * cfg.train.batch_size
    return train_count(cfg) * cfg.train.epochs


# ---------------------------------------------------------------------------- seed passes


def resident(cfg: RunConfig, d_model: int, budget: int) -> bool:
    """Hold all training activations in memory when they take under a quarter of the budget;
    otherwise read them window by window from the memory-mapped cache. Both give the same
    weights. A stream (no cache) is never resident."""
    return cfg.data.cache and harvested_count(cfg) * d_model * 4 <= budget // 4


def _same_but_seed(a: RunConfig, b: RunConfig) -> bool:
    da, db = a.to_dict(), b.to_dict()
    da["train"].pop("seed"), db["train"].pop("seed")
    return da == db


def _per_pass(cfg: RunConfig, n_seeds: int, d_model: int, budget: int) -> int:
    train_tokens = train_count(cfg)
    return memory.seeds_per_pass(
        n_seeds, cfg.sae.n_features, d_model, cfg.train.batch_size,
        min(cfg.train.shuffle_buffer, train_tokens),
        train_tokens if resident(cfg, d_model, budget) else 0, budget, cfg.train.dtype)


# The sweep's process before it holds anything of its own: Python with torch, transformers,
# TransformerLens, SciPy and matplotlib (measured: a 16-feature sweep of the tiny model peaked
# at 0.58 GiB on the dev box and at 0.90 GiB in CI's fresh environment). A training pass's
# estimate (`pass_bytes`) comes on top of it.
PROCESS_BYTES = 2**30
# A group's report in that process (measured: 16,384 features x 3 seeds in d = 384 peaked at
# 1.22 GiB, 2026-12-07): each run loaded (encoder, decoder, their float64 unit copies while
# matched); two runs' float64 copies and their indexed copies at a time (the views' floors);
# each pair's per-feature lists (cosines, indices, p-values under each null, as Python
# numbers); a 25 % margin
REPORT_RUN_BYTES_PER_CELL = 15  # per feature x d of a loaded run
REPORT_WORK_BYTES_PER_CELL = 64  # per feature x d: float64 copies of two runs, and indexed
REPORT_PAIR_BYTES_PER_FEATURE = 400
REPORT_MARGIN = 1.25


def report_bytes(n_features: int, n_runs: int, d_model: int) -> int:
    """Peak memory of the sweep's process during one group's report (`PROCESS_BYTES` and the
    constants after it)."""
    cells = int(n_features) * int(d_model)
    pairs = int(n_runs) * (int(n_runs) - 1) // 2
    return int(REPORT_MARGIN * (PROCESS_BYTES + n_runs * cells * REPORT_RUN_BYTES_PER_CELL
                                + cells * REPORT_WORK_BYTES_PER_CELL
                                + pairs * int(n_features) * REPORT_PAIR_BYTES_PER_FEATURE))


def pass_bytes(cfg: RunConfig, n_seeds: int, d_model: int, budget: int) -> int:
    """The memory a pass of n_seeds needs (`memory.py`'s estimate): what the seeds share
    (the window, resident activations) and each seed's own. A remote executor declares it."""
    train_tokens = train_count(cfg)
    window = min(cfg.train.shuffle_buffer, train_tokens)
    shared = memory.shared_bytes(d_model, window, train_tokens if resident(cfg, d_model, budget) else 0)
    return shared + n_seeds * memory.per_seed_bytes(cfg.sae.n_features, d_model,
                                                   cfg.train.batch_size, cfg.train.dtype)


def seed_passes(todo: list[RunSpec], d_model: dict[str, int],
                memory_budget: int | None = None) -> list[list[RunSpec]]:
    """Runs that differ only by seed train together (a pass), as many per pass as fit in
    memory. `d_model` maps a group to its activation width."""
    passes = []
    for gname, members in groups(todo).items():
        sets: list[list[RunSpec]] = []
        for spec in members:  # a group's configs should only differ by seed; be sure
            for s in sets:
                if _same_but_seed(s[0].config, spec.config):
                    s.append(spec)
                    break
            else:
                sets.append([spec])
        for same in sets:
            c = same[0].config
            budget = memory_budget or memory.available_bytes(c.model.device)
            n = _per_pass(c, len(same), d_model[gname], budget)
            passes += [same[i:i + n] for i in range(0, len(same), n)]
    return passes


# ---------------------------------------------------------------------------- matchings


def report_matchings(match: MatchConfig) -> tuple[str, ...]:
    """The matchings a group report makes of each pair, as `match.cache` kinds: the decoder
    matching, the live-only one when match.live_only, and the encoder matching (of runs
    that have an encoder, as every saefast run does). A full report also matches the pairs'
    activation correlations, which need the store's held-out rows: the first report makes
    them on the driver (`report.matchings`) and later ones read them from the cache."""
    return ("decoder", "decoder-live", "encoder") if match.live_only else ("decoder", "encoder")


def pair_seconds(cfg: RunConfig) -> float:
    """Seconds to match one pair of a group (the rates above): each of its report's
    matchings, and the pair's fixed cost."""
    one = (cfg.sae.n_features / 16384) ** 2 * MATCH_SECONDS_16K
    return len(report_matchings(cfg.match)) * one + PAIR_SECONDS


def group_match_seconds(cfg: RunConfig, n_runs: int, *, views: bool = True) -> float:
    """Seconds to match a group's pairs in its report: the decoder matchings (and live-only
    ones) of every pair, and with `views` the encoder matchings of the pairs the equivalence
    views use (all up to 20 pairs, else one a run: `stats.equivalence.equivalence_pairs`)."""
    one = (cfg.sae.n_features / 16384) ** 2 * MATCH_SECONDS_16K
    pairs = n_runs * (n_runs - 1) // 2
    decoder = len([k for k in report_matchings(cfg.match) if k.startswith("decoder")])
    encoder = 0 if not views else pairs if pairs <= EQUIVALENCE_MAX_PAIRS else n_runs
    return pairs * (decoder * one + PAIR_SECONDS) + encoder * one


# ---------------------------------------------------------------------------- estimates


def null_runs(members: list[RunSpec], nulls: NullsConfig | None) -> int:
    """How many null runs the trained null adds to a seed group (`runs.trained_null`: its
    first min(S, 5) seeds when >= 3, per surrogate kind, a cached group whose training or
    held-out range has the tokens a covariance needs); 0 when it gets none."""
    from saefast.data.surrogate import MIN_MOMENT_TOKENS
    from saefast.runs.trained_null import MAX_SEEDS, MIN_SEEDS

    c = members[0].config
    seeds = min(len({r.config.train.seed for r in members}), MAX_SEEDS)
    if nulls is None or not c.data.cache or seeds < MIN_SEEDS \
            or max(train_count(c), held_out_count(c)) < MIN_MOMENT_TOKENS:
        return 0
    return seeds * len(nulls.kinds())


def harvest_rate(model: str) -> float:
    """Tokens per second one harvest of `model` runs at here (a guess for unlisted models)."""
    return HARVEST_TOKENS_PER_S_BY_MODEL.get(model, HARVEST_TOKENS_PER_S)


def estimate(runs: list[RunSpec], memory_budget: int | None = None, *,
             nulls: NullsConfig | None = None) -> dict[str, Any]:
    """Rough memory and time for --dry-run, from the rates above (including the costs that
    dominate small studies: loading the model, per-step overhead, each pair's and each
    group's report).
    d_model is guessed from the model name (768 if unknown). The budget is that of each
    group's device. nulls: the trained null; its runs cost like the group's own seeds
    (`null_runs`: null_runs, null_train_seconds, null_match_seconds)."""
    n_pairs = sum(len(m) * (len(m) - 1) // 2 for m in groups(runs).values())
    jobs = harvest_jobs(runs)
    streams = [m[0].config for m in groups(runs).values() if not m[0].config.data.cache]
    harvest_tokens = sum(job.tokens for job in jobs)
    # a stream runs the model once per epoch and once more for the evaluation pass
    harvest_tokens += sum(c.data.tokens * (c.train.epochs + 1) for c in streams)
    harvest_s = (sum(job.tokens / harvest_rate(job.model) for job in jobs)
                 + sum(c.data.tokens * (c.train.epochs + 1) / harvest_rate(c.model.name)
                       for c in streams))
    rows, train_s, match_s, peak, notes = [], 0.0, 0.0, 0, set()
    null_n, null_train_s, null_match_s = 0, 0.0, 0.0
    for gname, members in groups(runs).items():
        c = members[0].config
        d = D_MODEL_GUESS.get(c.model.name, 768)
        budget = memory_budget or _budget_here(c.model.device, notes)
        train_tokens = train_count(c)
        try:
            per_pass = _per_pass(c, len(members), d, budget)
        except memory.MemoryBudgetError:
            per_pass = 0
        need = pass_bytes(c, max(per_pass, 1), d, budget)
        peak = max(peak, PROCESS_BYTES + need, report_bytes(c.sae.n_features, len(members), d))
        flops = 4 * token_steps(c) * c.sae.n_features * d  # a seed
        # then its firing counts: one encode pass over the training tokens (2 F d a token;
        # measured at 16,384 features: ~1/3 of a one-epoch training)
        flops += 2 * train_tokens * c.sae.n_features * d
        steps = c.train.steps or math.ceil(train_tokens / c.train.batch_size) * c.train.epochs
        rate = TRAIN_FLOPS_PER_S_CUDA if c.model.device.startswith("cuda") else TRAIN_FLOPS_PER_S
        seed_s = max(flops / rate, steps * SEED_STEP_SECONDS)
        train_s += len(members) * seed_s
        pairs = len(members) * (len(members) - 1) // 2
        match_s += group_match_seconds(c, len(members))
        n_null = null_runs(members, nulls)
        null_n += n_null
        null_train_s += n_null * seed_s
        kinds = len(nulls.kinds()) if nulls is not None and n_null else 0
        per_kind = n_null // kinds if kinds else 0
        null_match_s += kinds * group_match_seconds(c, per_kind, views=False) if per_kind else 0.0
        match_s += GROUP_REPORT_SECONDS if pairs else 0.0
        rows.append({"group": gname, "seeds": [r.config.train.seed for r in members],
                     "passes": -(-len(members) // per_pass) if per_pass else None,
                     "memory_bytes": need, "config": c})
    return {
        "runs": len(runs), "groups": len(rows), "pairs": n_pairs, "rows": rows,
        "peak_memory_bytes": peak, "harvest_tokens": harvest_tokens,
        "harvest_seconds": harvest_s + MODEL_LOAD_SECONDS * (len(jobs) + len(streams)),
        "train_seconds": train_s, "match_seconds": match_s,
        "null_runs": null_n, "null_train_seconds": null_train_s,
        "null_match_seconds": null_match_s,
        "token_steps": sum(token_steps(r.config) for r in runs),  # tokens seen, over all runs
        "notes": sorted(notes),
    }


ASSUMED_GPU_BYTES = 80 * 2**30  # a dry run for a GPU cluster, planned where no GPU is


def _budget_here(device: str, notes: set[str]) -> int:
    """The memory budget of `device` on this machine; for a GPU this machine does not have
    (planning a cluster's sweep), that of an 80 GB GPU, noted."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            notes.add(f"no GPU here: passes sized for {ASSUMED_GPU_BYTES // 2**30} GiB of GPU "
                      "memory (--memory-budget to change)")
            return ASSUMED_GPU_BYTES
    return memory.available_bytes(device)
