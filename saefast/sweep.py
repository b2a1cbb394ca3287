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
from typing import Any, Callable

import yaml

from saefast.config import ConfigError, RunConfig, apply_overrides, flatten

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
    runs: dict[str, RunSpec] = {}
    for variant in exp.variants:
        vcfg = apply_overrides(base, variant)
        for combo in itertools.product(*(grid[k] for k in keys)):
            cfg = apply_overrides(vcfg, dict(zip(keys, combo)))
            name = run_name(cfg)
            runs.setdefault(name, RunSpec(name=name, group=group_name(cfg), config=cfg))
    return list(runs.values())


# ---------------------------------------------------------------------------- naming

# Keys that change a trained SAE but are not in the name's fixed core, with short labels.
_NAME_EXTRAS = [
    ("model.context_length", "ctx"), ("model.drop_special_tokens", "special"),
    ("data.held_out", "ho"), ("train.epochs", "e"), ("train.batch_size", "b"),
    ("train.lr", "lr"), ("train.optimizer", ""), ("train.dtype", ""),
]


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


def run_name(cfg: RunConfig) -> str:
    """`L3-f128-k8-t30000-s2`, plus labels for every non-default training setting, so a
    name is stable when the grid grows and two different trainings never share a name."""
    default = RunConfig()
    parts = []
    if cfg.model.name != default.model.name:
        parts.append(_slug(Path(cfg.model.name).name or cfg.model.name))
    if cfg.data.corpus != default.data.corpus:
        parts.append(_slug(Path(cfg.data.corpus).name or cfg.data.corpus))
    parts += [_hook_label(cfg.model.hook), f"f{cfg.sae.n_features}", f"k{cfg.sae.k}",
              f"t{cfg.data.tokens}"]
    for key, label in _NAME_EXTRAS:
        section, attr = key.split(".")
        value = getattr(getattr(cfg, section), attr)
        if value != getattr(getattr(default, section), attr):
            parts.append(f"{label}{_slug(str(value))}")
    return "-".join(parts + [f"s{cfg.train.seed}"])


def group_name(cfg: RunConfig) -> str:
    """Runs that differ only by seed form a group; their pairs are matched."""
    return run_name(cfg).rsplit("-s", 1)[0]


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


def harvest_jobs(runs: list[RunSpec]) -> list[HarvestJob]:
    jobs: dict[tuple, HarvestJob] = {}
    for r in runs:
        m, d = r.config.model, r.config.data
        key = (m.name, d.corpus, m.context_length, m.drop_special_tokens, m.device)
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


def estimate(runs: list[RunSpec]) -> dict[str, Any]:
    """Rough memory and time for --dry-run. CPU throughput assumptions are stated, not measured:
    ~20 GFLOP/s for SAE training (the encoder GEMM dominates), ~700 tokens/s harvesting."""
    n_pairs = sum(len(m) * (len(m) - 1) // 2 for m in groups(runs).values())
    peak_mem, flops, harvest_tokens = 0, 0.0, 0
    for job in harvest_jobs(runs):
        harvest_tokens += job.tokens
    for r in runs:
        c = r.config
        d = D_MODEL_GUESS.get(c.model.name, 768)
        params = 2 * c.sae.n_features * d * 4  # W_enc + W_dec, fp32
        acts = c.data.tokens * d * 4
        batch = min(c.train.batch_size, c.data.tokens) * c.sae.n_features * 4 * 2
        peak_mem = max(peak_mem, params * 4 + acts + batch)  # params, grads, Adam m and v
        seen = (c.data.tokens - held_out_count(c)) * c.train.epochs
        flops += 2 * seen * c.sae.n_features * d * 2  # forward GEMM + its backward share
    match_s = 0.0
    for members in groups(runs).values():
        F = members[0].config.sae.n_features
        pairs = len(members) * (len(members) - 1) // 2
        match_s += pairs * (F / 16384) ** 2.5 * 16.0  # dense GEMM + lapjv, ~16 s at 16K here
    return {
        "runs": len(runs), "groups": len(groups(runs)), "pairs": n_pairs,
        "peak_memory_bytes": peak_mem, "harvest_tokens": harvest_tokens,
        "harvest_seconds": harvest_tokens / 700.0,
        "train_seconds": flops / 20e9, "match_seconds": match_s,
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
    def run_started(self, spec: RunSpec, index: int, total: int) -> None: ...
    def run_step(self, step: int, total: int, loss: float) -> None: ...
    def run_finished(self, outcome: RunOutcome) -> None: ...
    def report_started(self, group: str) -> None: ...
    def message(self, text: str) -> None: ...


def run_sweep(runs: list[RunSpec], out_dir: str | Path, *, cache_dir: str | Path | None = None,
              events: Events | None = None, analyze: bool = True) -> dict[str, Any]:
    """Harvest, train, match and report; returns the sweep summary (also OUT/summary.json)."""
    from saefast.artifacts import write_json_atomic

    events = events or Events()
    out_dir = Path(out_dir)
    (out_dir / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    outcomes = execute_runs(runs, out_dir, cache_dir=cache_dir, events=events)
    reports = analyze_groups(runs, out_dir, events=events) if analyze else {}
    summary = summarize(outcomes, reports)
    summary["seconds"] = time.perf_counter() - t0
    write_json_atomic(out_dir / SUMMARY, summary)
    return summary


def _pending(runs: list[RunSpec], out_dir: Path) -> tuple[list[RunSpec], list[RunOutcome]]:
    from saefast.artifacts import RUN, read_json, is_complete_run

    pending, skipped = [], []
    for spec in runs:
        path = out_dir / RUNS_DIR / spec.name
        if is_complete_run(path):
            stored = read_json(path / RUN).get("config", {})
            mine = spec.config.to_dict()
            diff = [f"{s}.{k}" for s in mine if s != "match" for k in mine[s]
                    if k != "device" and stored.get(s, {}).get(k) != mine[s][k]]
            if diff:
                raise SweepError(f"{path} already holds a run with a different config "
                                 f"({', '.join(diff[:3])}); use another --out or remove it")
            skipped.append(RunOutcome(spec, "skipped", path=path,
                                      metrics=read_json(path / RUN).get("metrics")))
        else:
            pending.append(spec)
    return pending, skipped


def execute_runs(runs: list[RunSpec], out_dir: Path, *, cache_dir: str | Path | None = None,
                 events: Events | None = None) -> list[RunOutcome]:
    """Train every run that is not finished yet. The one place runs are executed: harvest each
    corpus once for all its hooks, then train run by run. A diverged run is recorded and
    the others go on; nothing is written for it."""
    from saefast import activations

    events = events or Events()
    pending, outcomes = _pending(runs, Path(out_dir))
    for o in outcomes:
        events.run_finished(o)
    if not pending:
        return outcomes
    stores: dict[tuple, Path] = {}
    harvest_seconds: dict[tuple, float] = {}
    for job in harvest_jobs(pending):
        events.harvest_started(job)
        t = time.perf_counter()
        got = activations.harvest(
            job.model, job.hooks, job.corpus, job.tokens, context_length=job.context_length,
            drop_special_tokens=job.drop_special_tokens, device=job.device,
            cache_dir=cache_dir, progress=True)
        for hook, store in got.items():
            key = (job.model, job.corpus, job.context_length, job.drop_special_tokens, hook)
            stores[key] = store
            harvest_seconds[key] = time.perf_counter() - t
    for i, spec in enumerate(pending):
        m = spec.config.model
        key = (m.name, spec.config.data.corpus, m.context_length, m.drop_special_tokens, m.hook)
        events.run_started(spec, i, len(pending))
        outcome = train_one(spec, stores[key], Path(out_dir), events=events)
        outcomes.append(outcome)
        events.run_finished(outcome)
    return outcomes


def train_one(spec: RunSpec, store: Path, out_dir: Path, *, events: Events) -> RunOutcome:
    """Train one run from its activation store and write its directory atomically."""
    import torch

    from saefast import activations, artifacts, train
    from saefast import __version__

    cfg = spec.config
    t0 = time.perf_counter()
    acts = activations.load_activations(store, cfg.data.tokens)  # [N, d]
    n_eval = held_out_count(cfg)
    acts_train, acts_eval = acts[: len(acts) - n_eval], acts[len(acts) - n_eval:]
    try:
        result = train.train_sae(acts_train, acts_eval, cfg.sae, cfg.train,
                                 device=cfg.model.device, on_step=events.run_step)
    except train.TrainingDiverged as e:
        return RunOutcome(spec, "failed", error=str(e))
    store_meta = activations.store_info(store)
    sae = result.sae
    run_info = {
        "name": spec.name,
        "group": spec.group,
        "config": cfg.to_dict(),
        "seed": cfg.train.seed,
        "model": {"name": cfg.model.name, "hook": cfg.model.hook,
                  "weights_hash": store_meta.get("weights_hash"),
                  "d_model": int(acts.shape[1])},
        "corpus": {"name": cfg.data.corpus, "fingerprint": store_meta.get("corpus_fingerprint")},
        "tokens": {"harvested": int(acts.shape[0]), "train": int(acts_train.shape[0]),
                   "held_out": int(acts_eval.shape[0]),
                   "seen": int(acts_train.shape[0]) * cfg.train.epochs},
        "metrics": result.metrics,
        "history": result.history,
        "encoder_input": "x - decoder.bias",
        "activation_store": str(store),
        "timings": {"train_seconds": result.metrics["train_seconds"],
                    "total_seconds": time.perf_counter() - t0},
        "versions": {"saefast": __version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = artifacts.write_run_dir(
        out_dir / RUNS_DIR / spec.name,
        W_enc=sae.W_enc, b_enc=sae.b_enc, W_dec=sae.W_dec, b_dec=sae.b_dec, k=cfg.sae.k,
        features=train.feature_records(result.fire_counts, int(acts_train.shape[0])),
        run_info=run_info)
    return RunOutcome(spec, "done", path=path, metrics=result.metrics)


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
