"""Sweeps: an experiment YAML (+ --axis, + shorthand flags) -> a grid of runs -> run dirs -> reports.

    base:      {model: ..., data: ..., sae: ..., train: ..., match: ...}   # one RunConfig
    variants:  [{model: {hook: ...}, sae: {n_features: 512, k: 32}}, ...] # partial overrides
    grid:      {train.seed: 1..5, data.tokens: [1000, 30000]}              # key -> values

runs = variants x grid. Every stage is resumable: finished runs are skipped, activations come
from the on-disk cache, reports are recomputed only when their runs changed.
`execute_runs` is the one place where runs are trained (the seam for batched or remote runs).
"""

from __future__ import annotations

import itertools
import math
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from saefast.config import ConfigError, RunConfig, apply_overrides, flatten

if TYPE_CHECKING:
    from saefast.data.stream import StreamSource

RUNS_DIR, REPORTS_DIR, SUMMARY = "runs", "reports", "summary.json"


class SweepError(RuntimeError):
    """A sweep that cannot go on: conflicting run dirs, bad experiment file."""


# ---------------------------------------------------------------------------- the grid


@dataclass
class Experiment:
    base: dict[str, Any] = field(default_factory=dict)  # dotted key -> value
    variants: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    grid: dict[str, list] = field(default_factory=dict)
    name: str = "sweep"


def parse_values(text: Any) -> list:
    """`1..5` -> [1, 2, 3, 4, 5]; `1,2,3` -> [1, 2, 3]; a YAML list as is; a scalar -> [it]."""
    if isinstance(text, list):
        out: list = []
        for item in text:
            out.extend(parse_values(item) if isinstance(item, str) and ".." in item else [item])
        return out
    if not isinstance(text, str):
        return [text]
    m = re.fullmatch(r"\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*", text)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        if hi < lo:
            raise ConfigError(f"empty range {text!r}")
        return list(range(lo, hi + 1))
    return [_scalar(v.strip()) for v in text.split(",") if v.strip()]


def _scalar(text: str) -> Any:
    """YAML scalar, but `1e-3` is a number (YAML 1.1 would keep it a string)."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def parse_axis(text: str) -> tuple[str, list]:
    """`train.seed=1..20` -> ("train.seed", [1, ..., 20])."""
    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise ConfigError(f"--axis expects KEY=VALUES (e.g. train.seed=1..5), got {text!r}")
    return key.strip(), parse_values(values)


def load_experiment(path: str | Path) -> Experiment:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such experiment file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with base/variants/grid")
    unknown = set(raw) - {"base", "variants", "grid", "name", "description"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(unknown)} "
                          "(expected base, variants, grid, name, description)")
    variants = raw.get("variants") or [{}]
    if not isinstance(variants, list):
        raise ConfigError(f"{path}: 'variants' must be a list of partial configs")
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict):
        raise ConfigError(f"{path}: 'grid' must map keys like train.seed to value lists")
    exp = Experiment(
        base=flatten(raw.get("base") or {}),
        variants=[flatten(v or {}) for v in variants],
        grid={k: parse_values(v) for k, v in grid.items()},
        name=str(raw.get("name") or path.stem),
    )
    expand(exp)  # validate every key and value now, with the file's name in the error
    return exp


@dataclass
class RunSpec:
    name: str
    group: str
    config: RunConfig


def expand(exp: Experiment, axes: list[tuple[str, list]] = (),
           overrides: dict[str, Any] | None = None) -> list[RunSpec]:
    """variants x grid -> RunSpecs. `overrides` set base keys; `axes` add to (or replace in)
    the grid. Names are unique; duplicates (same config twice) are dropped."""
    base = apply_overrides(RunConfig(), {**exp.base, **(overrides or {})})
    grid = dict(exp.grid)
    for key, values in axes:
        grid[key] = values
    keys = list(grid)
    labeled = varied_keys(exp, axes)
    runs: dict[str, RunSpec] = {}
    for variant in exp.variants:
        vcfg = apply_overrides(base, variant)
        for combo in itertools.product(*(grid[k] for k in keys)):
            cfg = apply_overrides(vcfg, dict(zip(keys, combo)))
            name = run_name(cfg, labeled)
            runs.setdefault(name, RunSpec(name=name, group=group_name(cfg, labeled), config=cfg))
    return list(runs.values())


# ---------------------------------------------------------------------------- naming

# Always in a name: hook, n_features, k, tokens, seed. Never: settings that do not change
# the trained weights. Any other key gets a label when the experiment varies it.
_CORE = {"model.hook", "sae.n_features", "sae.k", "data.tokens", "train.seed"}
_UNNAMED = {"model.device", "train.checkpoint_every"}
_LABELS = {
    "model.name": "", "data.corpus": "", "model.context_length": "ctx", "data.cache": "cache",
    "model.drop_special_tokens": "special", "data.held_out": "ho", "train.epochs": "e",
    "train.batch_size": "b", "train.lr": "lr", "train.optimizer": "", "train.dtype": "",
    "train.warmup_fraction": "wu", "train.decay_fraction": "dc", "train.b_dec_init": "bdec",
    "train.aux_k": "auxk", "train.aux_coef": "aux", "train.dead_window": "dw",
    "train.data_order": "", "train.data_seed": "ds", "train.shuffle_buffer": "buf",
}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_")[:40]


def _hook_label(hook: str) -> str:
    m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_pre", hook)
    if m:
        return f"L{m.group(1)}"
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", hook)
    if m:
        return f"L{m.group(1)}{_slug(m.group(2).replace('hook_', ''))}"
    return _slug(hook)


def varied_keys(exp: Experiment, axes: list[tuple[str, list]] = ()) -> list[str]:
    """Keys the experiment varies (variants, grid, --axis) that get a label in run names."""
    keys = {k for v in exp.variants for k in v} | set(exp.grid) | {k for k, _ in axes}
    return sorted(k for k in keys if k not in _CORE and k not in _UNNAMED
                  and not k.startswith("match."))


def run_name(cfg: RunConfig, labeled: list[str] = ()) -> str:
    """`L3-f128-k8-t30000-s2`, plus a label for each varied key (`e10`, `lr0.0003`), so a name
    is stable when a grid grows. Two runs with one name but different configs in one output
    folder are refused (sweep._pending), never silently mixed."""
    parts = []
    for key in ("model.name", "data.corpus"):
        if key in labeled:
            value = str(getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1]))
            parts.append(_slug(Path(value).name or value))
    parts += [_hook_label(cfg.model.hook), f"f{cfg.sae.n_features}", f"k{cfg.sae.k}",
              f"t{cfg.data.tokens}"]
    for key in labeled:
        if key in ("model.name", "data.corpus"):
            continue
        section, attr = key.split(".")
        value = getattr(getattr(cfg, section), attr)
        parts.append(f"{_LABELS.get(key, attr)}{_slug(str(value))}")
    return "-".join(parts + [f"s{cfg.train.seed}"])


def group_name(cfg: RunConfig, labeled: list[str] = ()) -> str:
    """Runs that differ only by seed form a group; their pairs are matched."""
    return run_name(cfg, labeled).rsplit("-s", 1)[0]


def groups(runs: list[RunSpec]) -> dict[str, list[RunSpec]]:
    out: dict[str, list[RunSpec]] = {}
    for r in runs:
        out.setdefault(r.group, []).append(r)
    return out


# ---------------------------------------------------------------------------- planning


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


def _harvest_key(cfg: RunConfig) -> tuple:
    """What decides which forward pass a run's activations come from (HarvestJob's fields)."""
    m = cfg.model
    return (m.name, cfg.data.corpus, m.context_length, m.drop_special_tokens, m.device)


def harvest_jobs(runs: list[RunSpec]) -> list[HarvestJob]:
    """The cache harvests the runs need (streamed runs harvest as they train)."""
    jobs: dict[tuple, HarvestJob] = {}
    for r in runs:
        if not r.config.data.cache:
            continue
        m, d = r.config.model, r.config.data
        key = _harvest_key(r.config)
        job = jobs.setdefault(key, HarvestJob(*key, hooks=[], tokens=0))
        if m.hook not in job.hooks:
            job.hooks.append(m.hook)
        job.tokens = max(job.tokens, d.tokens)
    return list(jobs.values())


def expected_fires_per_feature(cfg: RunConfig) -> float:
    """Training tokens seen x k / F: how often an average feature is selected in training."""
    train_tokens = cfg.data.tokens - held_out_count(cfg)
    return train_tokens * cfg.train.epochs * cfg.sae.k / cfg.sae.n_features


def undertrained_warnings(runs: list[RunSpec], min_fires: float = 10.0) -> list[str]:
    """A dictionary whose average feature is selected fewer than ~10 times in training
    stays at its random init: its matching measures seeds, not the model."""
    out = []
    for gname, members in groups(runs).items():
        fires = expected_fires_per_feature(members[0].config)
        if fires < min_fires:
            c = members[0].config
            need = math.ceil(min_fires * c.sae.n_features / (c.sae.k * c.train.epochs)
                             / (1 - c.data.held_out))
            out.append(f"{gname}: each feature is selected ~{fires:.1f} times in training; "
                       f"the SAE will barely leave its random init (try --tokens {need:,} or more)")
    return out


def held_out_count(cfg: RunConfig) -> int:
    return int(round(cfg.data.tokens * cfg.data.held_out))


D_MODEL_GUESS = {"minilm": 384, "tiny": 64, "gemma-270m": 640}


def estimate(runs: list[RunSpec], memory_budget: int | None = None) -> dict[str, Any]:
    """Rough memory and time for --dry-run, from rates measured on a 2-core laptop CPU
    (docs/benchmarks.md): SAE training ~50 GFLOP/s counted as 4 x tokens x F x d per seed
    (the encoder GEMM and its overheads), harvesting ~10,000 tokens/s (MiniLM, mid layers),
    matching ~2.5 s per 16K pair. d_model is guessed from the model name (768 if unknown)."""
    from saefast import memory

    n_pairs = sum(len(m) * (len(m) - 1) // 2 for m in groups(runs).values())
    harvest_tokens = sum(job.tokens for job in harvest_jobs(runs))
    # a stream runs the model once per epoch and once more for the evaluation pass
    harvest_tokens += sum(m[0].config.data.tokens * (m[0].config.train.epochs + 1)
                          for m in groups(runs).values() if not m[0].config.data.cache)
    rows, flops, match_s, peak = [], 0.0, 0.0, 0
    budget = memory_budget or memory.available_bytes("cpu")
    for gname, members in groups(runs).items():
        c = members[0].config
        d = D_MODEL_GUESS.get(c.model.name, 768)
        train_tokens = c.data.tokens - held_out_count(c)
        resident = train_tokens if _resident(c, d, budget) else 0
        window = min(c.train.shuffle_buffer, train_tokens)
        try:
            per_pass = memory.seeds_per_pass(len(members), c.sae.n_features, d,
                                             c.train.batch_size, window, resident, budget,
                                             c.train.dtype)
        except memory.MemoryBudgetError:
            per_pass = 0
        need = memory.shared_bytes(d, window, resident) + max(per_pass, 1) * \
            memory.per_seed_bytes(c.sae.n_features, d, c.train.batch_size, c.train.dtype)
        peak = max(peak, need)
        flops += len(members) * 2 * train_tokens * c.train.epochs * c.sae.n_features * d * 2
        pairs = len(members) * (len(members) - 1) // 2
        match_s += pairs * (c.sae.n_features / 16384) ** 2 * 2.5
        rows.append({"group": gname, "seeds": [r.config.train.seed for r in members],
                     "passes": -(-len(members) // per_pass) if per_pass else None,
                     "memory_bytes": need, "config": c})
    return {
        "runs": len(runs), "groups": len(rows), "pairs": n_pairs, "rows": rows,
        "peak_memory_bytes": peak, "harvest_tokens": harvest_tokens,
        "harvest_seconds": harvest_tokens / 10_000.0,
        "train_seconds": flops / 50e9, "match_seconds": match_s,
    }


# ---------------------------------------------------------------------------- running


@dataclass
class RunOutcome:
    spec: RunSpec
    status: str  # "done", "skipped", "failed"
    path: Path | None = None
    error: str | None = None
    metrics: dict | None = None


class Events:
    """What a sweep reports while it works; the CLI draws it with rich. No-ops by default."""

    def harvest_started(self, job: HarvestJob) -> None: ...
    def batch_started(self, label: str, n_seeds: int, index: int, total: int) -> None: ...
    def run_step(self, step: int, total: int, stats: dict) -> None: ...
    def run_finished(self, outcome: RunOutcome) -> None: ...
    def report_started(self, group: str) -> None: ...
    def message(self, text: str) -> None: ...


def run_sweep(runs: list[RunSpec], out_dir: str | Path, *, cache_dir: str | Path | None = None,
              events: Events | None = None, analyze: bool = True,
              memory_budget: int | None = None) -> dict[str, Any]:
    """Harvest, train, match and report; returns the sweep summary (also OUT/summary.json)."""
    from saefast.artifacts import write_json_atomic

    events = events or Events()
    out_dir = Path(out_dir)
    (out_dir / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    outcomes = execute_runs(runs, out_dir, cache_dir=cache_dir, events=events,
                            memory_budget=memory_budget)
    reports = analyze_groups(runs, out_dir, events=events) if analyze else {}
    summary = summarize(outcomes, reports)
    summary["seconds"] = time.perf_counter() - t0
    write_json_atomic(out_dir / SUMMARY, summary)
    return summary


def _pending(runs: list[RunSpec], out_dir: Path) -> tuple[list[RunSpec], list[RunOutcome]]:
    from saefast.artifacts import RUN, is_complete_run, read_json

    pending, skipped = [], []
    for spec in runs:
        path = out_dir / RUNS_DIR / spec.name
        if is_complete_run(path):
            info = read_json(path / RUN)
            stored = info.get("config", {})
            mine, default = spec.config.to_dict(), RunConfig().to_dict()
            # a key a run dir lacks was written before that setting existed: it had the default
            diff = [f"{s}.{k}" for s in mine if s != "match" for k in mine[s]
                    if f"{s}.{k}" not in _UNNAMED
                    and stored.get(s, {}).get(k, default[s][k]) != mine[s][k]]
            if diff:
                raise SweepError(f"{path} already holds a run with a different config "
                                 f"({', '.join(diff[:3])}); use another --out or remove it")
            skipped.append(RunOutcome(spec, "skipped", path=path, metrics=info.get("metrics")))
        else:
            pending.append(spec)
    return pending, skipped


def _same_but_seed(a: RunConfig, b: RunConfig) -> bool:
    da, db = a.to_dict(), b.to_dict()
    da["train"].pop("seed"), db["train"].pop("seed")
    return da == db


def training_batches(pending: list[RunSpec], d_model: dict[str, int],
                     memory_budget: int | None = None) -> list[list[RunSpec]]:
    """Runs that differ only by seed train together, split into passes that fit in memory.
    `d_model` maps a group to its activation width."""
    from saefast import memory

    batches = []
    for gname, members in groups(pending).items():
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
            train_tokens = c.data.tokens - held_out_count(c)
            resident = train_tokens if _resident(c, d_model[gname], budget) else 0
            per_pass = memory.seeds_per_pass(
                len(same), c.sae.n_features, d_model[gname], c.train.batch_size,
                min(c.train.shuffle_buffer, train_tokens), resident, budget, c.train.dtype)
            batches += [same[i:i + per_pass] for i in range(0, len(same), per_pass)]
    return batches


def _resident(cfg: RunConfig, d_model: int, budget: int) -> bool:
    """Hold all training activations in memory when they take under a quarter of the budget;
    otherwise read them window by window from the memory-mapped cache. Both give the same
    weights. A stream (no cache) is never resident."""
    return cfg.data.cache and cfg.data.tokens * d_model * 4 <= budget // 4


def execute_runs(runs: list[RunSpec], out_dir: Path, *, cache_dir: str | Path | None = None,
                 events: Events | None = None,
                 memory_budget: int | None = None) -> list[RunOutcome]:
    """Train every run that is not finished yet. The one place runs are executed: harvest each
    corpus once for all its hooks, then train each group's seeds together (in as many passes
    as memory needs). A diverged run is recorded and the others go on; nothing is written
    for it."""
    from saefast.data import activations

    events = events or Events()
    out_dir = Path(out_dir)
    pending, outcomes = _pending(runs, out_dir)
    for o in outcomes:
        events.run_finished(o)
    if not pending:
        return outcomes
    stores: dict[str, Path | StreamSource] = {}  # group -> activation store, or a stream
    for job in harvest_jobs(pending):
        events.harvest_started(job)
        got = activations.harvest(
            job.model, job.hooks, job.corpus, job.tokens, context_length=job.context_length,
            drop_special_tokens=job.drop_special_tokens, device=job.device,
            cache_dir=cache_dir, progress=True)
        for spec in pending:
            if spec.config.data.cache and _harvest_key(spec.config) == (
                    job.model, job.corpus, job.context_length, job.drop_special_tokens, job.device):
                stores[spec.group] = got[spec.config.model.hook]
    for spec in pending:
        if not spec.config.data.cache and spec.group not in stores:
            events.message(f"{spec.group}: streaming activations from the model (no disk cache)")
            stores[spec.group] = open_stream(spec.config, cache_dir)
    d_model = {g: int(activations.store_info(s)["d_model"]) if isinstance(s, Path) else s.d
               for g, s in stores.items()}
    batches = training_batches(pending, d_model, memory_budget)
    for i, batch in enumerate(batches):
        seeds = ",".join(str(r.config.train.seed) for r in batch)
        events.batch_started(f"{batch[0].group} seeds {seeds}", len(batch), i, len(batches))
        for outcome in train_batch(batch, stores[batch[0].group], out_dir, events=events,
                                   memory_budget=memory_budget):
            outcomes.append(outcome)
            events.run_finished(outcome)
    return outcomes


def open_stream(cfg: RunConfig, cache_dir: str | Path | None = None) -> StreamSource:
    """The activations of a run with data.cache false, checked to be long enough."""
    from saefast.data.stream import StreamSource

    m = cfg.model
    source = StreamSource(m.name, m.hook, cfg.data.corpus, cfg.data.tokens,
                          context_length=m.context_length, drop_special_tokens=m.drop_special_tokens,
                          device=m.device, cache_dir=cache_dir)
    source.check_length()
    return source


@dataclass
class TrainingData:
    """Where a batch's activations come from, and what identifies them."""

    source: Any  # batches.TokenSource: [N, d]
    meta: dict  # weights_hash, corpus_fingerprint, ...
    key: str  # checkpoints of other data are never resumed
    where: str  # for run.json


def training_data(data: Path | StreamSource, cfg: RunConfig,
                  memory_budget: int | None = None) -> TrainingData:
    """A cache store held in memory when it fits a quarter of the budget, else memory-mapped;
    or a stream."""
    import hashlib
    import json

    from saefast import memory
    from saefast.data import activations
    from saefast.data.batches import StoreSource, TensorSource

    n_tokens = cfg.data.tokens
    if not isinstance(data, Path):
        digest = hashlib.sha256(json.dumps(data.key, sort_keys=True).encode()).hexdigest()[:16]
        return TrainingData(data, data.key, f"stream:{digest}", "stream (no disk cache)")
    meta = activations.store_info(data)
    budget = memory_budget or memory.available_bytes(cfg.model.device)
    if _resident(cfg, int(meta["d_model"]), budget):
        source = TensorSource(activations.load_activations(data, n_tokens))  # [N, d]
    else:
        source = StoreSource(data, 0, n_tokens)
    key = f"{meta.get('weights_hash')}:{meta.get('corpus_fingerprint')}:{data.name}"
    return TrainingData(source, meta, key, str(data))


def train_batch(batch: list[RunSpec], data: Path | StreamSource, out_dir: Path, *,
                events: Events, memory_budget: int | None = None) -> list[RunOutcome]:
    """Train the seeds of `batch` together from one activation store (or stream); write each
    run dir."""
    import torch

    from saefast import artifacts, checkpoints, train
    from saefast import __version__
    from saefast.data.batches import split

    cfg = batch[0].config
    t0 = time.perf_counter()
    n_tokens, n_eval = cfg.data.tokens, held_out_count(cfg)
    got = training_data(data, cfg, memory_budget)
    source, store_meta, d_model = got.source, got.meta, got.source.d
    train_src = split(source, 0, n_tokens - n_eval)
    eval_src = split(source, n_tokens - n_eval, n_tokens)
    seeds = [r.config.train.seed for r in batch]
    ckpt_dir = out_dir / RUNS_DIR / ".checkpoints" / f"{batch[0].group}-s{'_'.join(map(str, seeds))}"
    results = train.train_saes(
        train_src, eval_src, cfg.sae, cfg.train, seeds, device=cfg.model.device,
        on_step=events.run_step, checkpoint_dir=ckpt_dir, data_key=got.key)
    outcomes = []
    for spec, result in zip(batch, results):
        if isinstance(result, train.TrainingDiverged):
            outcomes.append(RunOutcome(spec, "failed", error=str(result)))
            continue
        sae = result.sae
        run_info = {
            "name": spec.name,
            "group": spec.group,
            "config": spec.config.to_dict(),
            "seed": spec.config.train.seed,
            "model": {"name": cfg.model.name, "hook": cfg.model.hook,
                      "weights_hash": store_meta.get("weights_hash"), "d_model": d_model},
            "corpus": {"name": cfg.data.corpus,
                       "fingerprint": store_meta.get("corpus_fingerprint")},
            "tokens": {"harvested": n_tokens, "train": train_src.n_tokens,
                       "held_out": eval_src.n_tokens,
                       "seen": train_src.n_tokens * cfg.train.epochs},
            "metrics": result.metrics,
            "history": result.history,
            "encoder_input": "x - decoder.bias",
            "activation_store": got.where,
            "timings": {"train_seconds": result.metrics["train_seconds"],
                        "total_seconds": time.perf_counter() - t0,
                        "seeds_trained_together": len(batch)},
            "versions": {"saefast": __version__, "torch": torch.__version__,
                         "python": platform.python_version()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        path = artifacts.write_run_dir(
            out_dir / RUNS_DIR / spec.name,
            W_enc=sae.W_enc, b_enc=sae.b_enc, W_dec=sae.W_dec, b_dec=sae.b_dec, k=cfg.sae.k,
            features=train.feature_records(result.fire_counts, train_src.n_tokens),
            run_info=run_info)
        outcomes.append(RunOutcome(spec, "done", path=path, metrics=result.metrics))
    checkpoints.clear(ckpt_dir)  # every run of the batch is written (or failed for good)
    return outcomes


# ---------------------------------------------------------------------------- reports


def analyze_groups(runs: list[RunSpec], out_dir: Path, *,
                   events: Events | None = None) -> dict[str, dict]:
    """Match every pair within each seed group; reuse a report whose inputs are unchanged."""
    from saefast import stability
    from saefast.artifacts import read_json, is_complete_run, write_json_atomic

    events = events or Events()
    reports: dict[str, dict] = {}
    for gname, members in groups(runs).items():
        dirs = [out_dir / RUNS_DIR / r.name for r in members]
        dirs = [d for d in dirs if is_complete_run(d)]
        if len(dirs) < 2:
            continue
        report_dir = out_dir / REPORTS_DIR / gname
        fingerprint = _inputs_fingerprint(dirs)
        existing = report_dir / "stability.json"
        if existing.is_file():
            try:
                old = read_json(existing)
                if old.get("inputs_fingerprint") == fingerprint:
                    reports[gname] = old
                    continue
            except Exception:  # a corrupt report is simply recomputed
                pass
        events.report_started(gname)
        mc = members[0].config.match
        report = stability.analyze_runs(
            dirs, report_dir, threshold=mc.threshold, top_k=mc.top_k,
            live_only=mc.live_only, solver=mc.solver)
        report.update(group=gname, inputs_fingerprint=fingerprint)
        write_json_atomic(existing, report)  # stamped last: a killed analysis is redone
        reports[gname] = report
    return reports


def _inputs_fingerprint(dirs: list[Path]) -> str:
    import hashlib

    h = hashlib.sha256()
    for d in sorted(dirs):
        st = (d / "sae_weights.safetensors").stat()
        h.update(f"{d.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def summarize(outcomes: list[RunOutcome], reports: dict[str, dict]) -> dict[str, Any]:
    """One row per group: stability next to its random baseline and training health."""
    by_group: dict[str, list[RunOutcome]] = {}
    for o in outcomes:
        by_group.setdefault(o.spec.group, []).append(o)
    rows = []
    for gname, members in by_group.items():
        ok = [o for o in members if o.metrics]
        report = reports.get(gname, {})
        s = report.get("summary", {})
        base = s.get("baseline") or {}

        def mean(values):
            values = [v for v in values if v is not None]
            return sum(values) / len(values) if values else None

        rows.append({
            "group": gname,
            "runs": len(ok),
            "pairs": s.get("n_pairs", 0),
            "median_of_medians": s.get("median_of_medians"),
            "pair_median_min": min((p["median_cosine"] for p in report.get("pairs", [])),
                                   default=None),
            "pair_median_max": max((p["median_cosine"] for p in report.get("pairs", [])),
                                   default=None),
            "global_median": s.get("global_median"),
            "fraction_above": s.get("fraction_above"),
            "baseline_median": base.get("median_cosine", base.get("median")),
            "live_only_global_median": (report.get("live_only") or {}).get(
                "summary", {}).get("global_median"),
            "dead_fraction": mean([o.metrics["train"]["dead_fraction"] for o in ok]),
            "held_out_fvu": mean([(o.metrics.get("held_out") or {}).get("fvu") for o in ok]),
            "decoder_cosine_to_init": mean(
                [o.metrics["decoder_drift"]["mean_cosine_to_init"] for o in ok]),
        })
    return {
        "groups": rows,
        "runs": {"done": sum(o.status == "done" for o in outcomes),
                 "skipped": sum(o.status == "skipped" for o in outcomes),
                 "failed": [{"name": o.spec.name, "error": o.error}
                            for o in outcomes if o.status == "failed"]},
    }
