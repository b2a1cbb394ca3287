"""Running a sweep: harvest, train each pass of seeds, match every pair, summarise.

    experiment.expand -> plan.preflight / plan.pending -> execute_runs:
        harvest each corpus once for all its hooks (data.harvest), or open a stream
        for each pass (plan.seed_passes):  run_pass  <- THE seam where a pass is executed
    -> analyze_groups (reports.group_report per seed group) -> summarize -> OUT/summary.json

`run_pass` trains the seeds of one pass together from one activation source and writes their
run dirs; everything it needs is in its arguments, so a remote executor (Ray) can call it on
another machine. Every stage is resumable: finished runs are skipped, activations come from
the on-disk cache, reports are recomputed only when their runs changed. Progress goes through
`Events`; nothing here draws on the screen.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from saefast.config import RunConfig
from saefast.runs.layout import REPORTS_DIR, RUNS_DIR
from saefast.runs.layout import SUMMARY_JSON as SUMMARY
from saefast.sweep import plan
from saefast.sweep.experiment import RunSpec, groups
from saefast.sweep.plan import HarvestJob, data_ranges, harvested_count, token_steps

if TYPE_CHECKING:
    from saefast.data.stream import StreamSource

__all__ = ["Events", "ClusterProgress", "NodeRate", "Executor", "RunOutcome", "run_sweep", "execute_runs", "run_pass", "analyze_groups",
           "run_pass_here", "summarize", "RUNS_DIR", "REPORTS_DIR", "SUMMARY"]


@dataclass
class RunOutcome:
    spec: RunSpec
    status: str  # "done", "skipped", "failed"
    path: Path | None = None
    error: str | None = None
    metrics: dict | None = None


@dataclass
class NodeRate:
    """One node's finished work in a remote sweep: passes, token-steps (tokens seen summed
    over seeds), and the seconds since its first task started."""

    passes: int = 0
    token_steps: int = 0
    seconds: float = 0.0

    @property
    def token_steps_per_s(self) -> float:
        return self.token_steps / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ClusterProgress:
    """Where a remote executor's tasks stand: passes and pair batches queued (submitted, not
    started), running, done and failed, and each node's throughput."""

    passes: dict[str, int]  # queued, running, done, failed
    pairs: dict[str, int]  # the same, for batches of pair matchings
    nodes: dict[str, NodeRate]
    running: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # pass -> node, step, total


class Events:
    """What a sweep reports while it works; the CLI draws it with rich. No-ops by default."""

    def harvest_started(self, job: HarvestJob) -> None: ...
    def harvest_progress(self, done: int, total: int) -> None: ...
    def pass_started(self, label: str, n_seeds: int, index: int, total: int) -> None: ...
    def run_step(self, step: int, total: int, stats: dict) -> None: ...
    def run_finished(self, outcome: RunOutcome) -> None: ...
    def report_started(self, group: str) -> None: ...
    def message(self, text: str) -> None: ...
    def cluster_progress(self, progress: ClusterProgress) -> None: ...


class Executor(Protocol):
    """What trains a sweep's runs: `execute_runs` here, or `ray_executor.RayExecutor` on a
    cluster. Returns one RunOutcome per run (skipped, done or failed)."""

    def __call__(self, runs: list[RunSpec], out_dir: Path, *, cache_dir: str | Path | None,
                 events: Events, memory_budget: int | None,
                 threads: int | None) -> list[RunOutcome]: ...


def run_sweep(runs: list[RunSpec], out_dir: str | Path, *, cache_dir: str | Path | None = None,
              events: Events | None = None, analyze: bool = True,
              memory_budget: int | None = None,
              experiment: dict[str, Any] | None = None,
              threads: int | None = None,
              executor: Executor | None = None) -> dict[str, Any]:
    """Harvest, train, match and report; returns the sweep summary (also OUT/summary.json,
    and with analyze=True OUT/report.html, the page to share: `report.page.write_html`, written
    after the summary so it never shows an older one). Devices and output paths are checked
    first: nothing is created for a sweep that cannot start. experiment: what the study is
    ({name, description, file}), stored as summary["experiment"]. threads: `--threads`
    (`saefast.sweep.threads`). executor: what trains the runs (default `execute_runs`, here); an
    executor whose `local_devices` is False checks the devices where its tasks run."""
    from saefast.fsio import write_json_atomic

    executor = executor or execute_runs
    plan.preflight(runs, out_dir, cache_dir,
                   devices=getattr(executor, "local_devices", True))
    events = events or Events()
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    outcomes = executor(runs, out_dir, cache_dir=cache_dir, events=events,
                        memory_budget=memory_budget, threads=threads)
    reports = analyze_groups(runs, out_dir, events=events) if analyze else {}
    summary = summarize(outcomes, reports)
    summary["seconds"] = time.perf_counter() - t0
    if experiment is not None:
        summary["experiment"] = experiment
    write_json_atomic(out_dir / SUMMARY, summary)
    if analyze:
        from saefast.report import page

        page.write_html(out_dir, summary)
    return summary


# ---------------------------------------------------------------------------- training


def execute_runs(runs: list[RunSpec], out_dir: Path, *, cache_dir: str | Path | None = None,
                 events: Events | None = None, memory_budget: int | None = None,
                 threads: int | None = None) -> list[RunOutcome]:
    """The local executor: train every run that is not finished yet. Harvest each corpus once
    for all its hooks, then hand each pass of seeds to `run_pass`. A diverged run is recorded
    and the others go on; nothing is written for it. `threads`: see `run_pass`."""
    from saefast.sweep import seed_pool

    try:
        return _execute_runs(runs, out_dir, cache_dir, events, memory_budget, threads)
    finally:
        seed_pool.shutdown()  # the seed workers live for one sweep


def _execute_runs(runs: list[RunSpec], out_dir: Path, cache_dir: str | Path | None,
                  events: Events | None, memory_budget: int | None,
                  threads: int | None) -> list[RunOutcome]:
    from saefast.data import harvest, store

    events = events or Events()
    out_dir = Path(out_dir)
    todo, done = plan.pending(runs, out_dir)
    outcomes = [RunOutcome(spec, "skipped", path=path, metrics=info.get("metrics"))
                for spec, path, info in done]
    for o in outcomes:
        events.run_finished(o)
    if not todo:
        return outcomes
    sources: dict[str, Path | StreamSource] = {}  # group -> activation store, or a stream
    for job in plan.harvest_jobs(todo):
        events.harvest_started(job)
        got = harvest.harvest(
            job.model, job.hooks, job.corpus, job.tokens, context_length=job.context_length,
            drop_special_tokens=job.drop_special_tokens, device=job.device,
            cache_dir=cache_dir, on_progress=events.harvest_progress, on_wait=events.message)
        sources.update(stores_of_job(todo, job, got))
    for spec in todo:
        if not spec.config.data.cache and spec.group not in sources:
            events.message(f"{spec.group}: streaming activations from the model (no disk cache)")
            sources[spec.group] = open_stream(spec.config, cache_dir)
    d_model = {g: int(store.store_info(s)["d_model"]) if isinstance(s, Path) else s.d
               for g, s in sources.items()}
    passes = plan.seed_passes(todo, d_model, memory_budget)
    for i, runs_of_pass in enumerate(passes):
        events.pass_started(pass_label(runs_of_pass), len(runs_of_pass), i, len(passes))
        for outcome in run_pass(runs_of_pass, sources[runs_of_pass[0].group], out_dir,
                                events=events, memory_budget=memory_budget, threads=threads):
            outcomes.append(outcome)
            events.run_finished(outcome)
    return outcomes


def stores_of_job(todo: list[RunSpec], job: HarvestJob, got: dict[str, Path]) -> dict[str, Path]:
    """group -> activation store, for the cached groups a harvest job served ({hook: store})."""
    return {spec.group: got[spec.config.model.hook] for spec in todo
            if spec.config.data.cache and plan.harvest_key(spec.config) == job.key}


def pass_label(runs_of_pass: list[RunSpec]) -> str:
    """"<group> seeds 1,2,3": how progress names a pass."""
    seeds = ",".join(str(r.config.train.seed) for r in runs_of_pass)
    return f"{runs_of_pass[0].group} seed{'s' if len(runs_of_pass) > 1 else ''} {seeds}"


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
    """Where a pass's activations come from, and what identifies them."""

    source: Any  # data.windows.TokenSource: [N, d]
    meta: dict  # weights_hash, corpus_fingerprint, ...
    key: str  # checkpoints of other data are never resumed
    where: str  # for run.json


def training_data(data: Path | StreamSource, cfg: RunConfig,
                  memory_budget: int | None = None) -> TrainingData:
    """A cache store held in memory when it fits a quarter of the budget, else memory-mapped;
    or a stream."""
    from saefast.data import store
    from saefast.data.windows import TensorSource
    from saefast.train import memory

    if not isinstance(data, Path):
        digest = hashlib.sha256(json.dumps(data.key, sort_keys=True).encode()).hexdigest()[:16]
        return TrainingData(data, data.key, f"stream:{digest}", "stream (no disk cache)")
    meta = store.store_info(data)
    budget = memory_budget or memory.available_bytes(cfg.model.device)
    if plan.resident(cfg, int(meta["d_model"]), budget):
        source = TensorSource(store.load_activations(data, harvested_count(cfg)))  # [N, d]
    else:
        source = store.StoreSource(data, 0, harvested_count(cfg))
    key = f"{meta.get('weights_hash')}:{meta.get('corpus_fingerprint')}:{data.name}"
    return TrainingData(source, meta, key, str(data))


def _stream_null_data(got: TrainingData, out_dir: Path, t0: int, t1: int):
    """(path, gatherer): where a streamed pass's null data lives and, when no earlier pass of
    the same stream and rows wrote it, a `StreamNullData` attached to the stream to gather
    it; (None, None) for a store (its reports read the store)."""
    if not got.key.startswith("stream:"):
        return None, None
    from saefast.data import stream_nulls

    path = stream_nulls.null_data_path(out_dir / RUNS_DIR, got.key.removeprefix("stream:"), t0, t1)
    if path.is_file():
        return path, None
    return path, stream_nulls.StreamNullData(got.source, t0, t1).attach()


def run_pass(runs: list[RunSpec], data: Path | StreamSource, out_dir: Path, *,
             events: Events | None = None, memory_budget: int | None = None,
             threads: int | None = None) -> list[RunOutcome]:
    """Train the seeds of one pass (runs that differ only by seed) from one activation
    store or stream, and write each run dir. Checkpoints let a killed pass resume bitwise.

    Where the seeds run is `threads.plan_pass`'s choice (`threads`: the sweep's thread
    budget, default $SAEFAST_THREADS or torch's): small dictionaries from a store are split
    over worker processes (`seed_pool`), everything else trains in this process. A seed's
    weights are the same either way."""
    from saefast.sweep import seed_pool
    from saefast.sweep import threads as threads_

    events = events or Events()
    cfg = runs[0].config
    plan_ = threads_.plan_pass(len(runs), cfg.sae.n_features, _width(data),
                               steps=token_steps(cfg) // cfg.train.batch_size,
                               batch_size=cfg.train.batch_size, device=cfg.model.device,
                               cached=isinstance(data, Path), threads=threads)
    if plan_.parallel_seeds:
        return seed_pool.run_parts(threads_.split(runs, plan_.workers), data, out_dir,
                                   events=events, memory_budget=memory_budget, threads=plan_.threads)
    with threads_.torch_threads(plan_.threads):
        return run_pass_here(runs, data, out_dir, events=events, memory_budget=memory_budget)


def _width(data: Path | StreamSource) -> int:
    from saefast.data import store

    return int(store.store_info(data)["d_model"]) if isinstance(data, Path) else data.d


def run_pass_here(runs: list[RunSpec], data: Path | StreamSource, out_dir: Path, *,
                  events: Events | None = None,
                  memory_budget: int | None = None) -> list[RunOutcome]:
    """`run_pass` in this process with torch's threads as they are: all seeds of `runs`
    under one optimizer."""
    from saefast.data.windows import split
    from saefast.runs import artifacts
    from saefast.train import checkpoints
    from saefast.train import trainer as train

    events = events or Events()
    cfg = runs[0].config
    t0 = time.perf_counter()
    got = training_data(data, cfg, memory_budget)
    (t0_, t1_), (e0, e1) = data_ranges(cfg)
    train_src, eval_src = split(got.source, t0_, t1_), split(got.source, e0, e1)
    seeds = [r.config.train.seed for r in runs]
    ckpt_dir = out_dir / RUNS_DIR / ".checkpoints" / f"{runs[0].group}-s{'_'.join(map(str, seeds))}"
    null_data, gather = _stream_null_data(got, out_dir, t0_, t1_)
    results = train.train_saes(
        train_src, eval_src, cfg.sae, cfg.train, seeds, device=cfg.model.device,
        on_step=events.run_step, checkpoint_dir=ckpt_dir, data_key=got.key)
    if gather is not None:  # the streamed rows' moments and token pool, for the nulls
        gather.finish().save(null_data)
    outcomes = []
    for spec, result in zip(runs, results):
        if isinstance(result, train.TrainingDiverged):
            outcomes.append(RunOutcome(spec, "failed", error=str(result)))
            continue
        record = artifacts.run_record(
            name=spec.name, group=spec.group, config=spec.config.to_dict(),
            model={"name": cfg.model.name, "hook": cfg.model.hook,
                   "weights_hash": got.meta.get("weights_hash"), "d_model": got.source.d},
            corpus={"name": cfg.data.corpus, "fingerprint": got.meta.get("corpus_fingerprint")},
            tokens={"harvested": harvested_count(cfg), "train": train_src.n_tokens,
                    "held_out": eval_src.n_tokens, "seen": token_steps(cfg),
                    "held_out_shared": bool(cfg.data.held_out_tokens)},
            metrics=result.metrics, history=result.history, activation_store=got.where,
            null_data=None if null_data is None else str(null_data),
            timings={"train_seconds": result.metrics["train_seconds"],
                     "total_seconds": time.perf_counter() - t0,
                     "seeds_trained_together": len(runs)})
        sae = result.sae
        path = artifacts.write_run_dir(
            out_dir / RUNS_DIR / spec.name,
            W_enc=sae.W_enc, b_enc=sae.b_enc, W_dec=sae.W_dec, b_dec=sae.b_dec, k=cfg.sae.k,
            features=train.feature_records(result.fire_counts, train_src.n_tokens),
            run_info=record)
        outcomes.append(RunOutcome(spec, "done", path=path, metrics=result.metrics))
    checkpoints.clear(ckpt_dir)  # every run of the pass is written (or failed for good)
    return outcomes


# ---------------------------------------------------------------------------- reports


def analyze_groups(runs: list[RunSpec], out_dir: Path, *,
                   events: Events | None = None) -> dict[str, dict]:
    """Match every pair within each seed group (reports.group_report reuses a report whose
    runs are unchanged), with the nulls of the activation store the runs name in run.json.
    Pair matchings go through the sweep's cache (`matching_cache`): the ones a remote
    executor computed while runs trained are read, not matched again."""
    from saefast.report import files as reports

    events = events or Events()
    out: dict[str, dict] = {}
    for gname, members in groups(runs).items():
        args = _report_args(members, Path(out_dir))
        if args is None:
            continue
        dirs, report_dir, settings = args
        out[gname] = reports.group_report(
            dirs, report_dir, **settings, extra={"group": gname},
            on_start=lambda g=gname: events.report_started(g), matchings=matching_cache(out_dir))
    return out


def _report_args(members: list[RunSpec], out_dir: Path) -> tuple[list[Path], Path, dict] | None:
    """(run dirs, report dir, settings) of a seed group's report; None below two runs."""
    from saefast.report import nulls as report_nulls
    from saefast.runs.artifacts import is_complete_run

    dirs = [d for d in (out_dir / RUNS_DIR / r.name for r in members) if is_complete_run(d)]
    if len(dirs) < 2:
        return None
    mc = members[0].config.match
    return dirs, out_dir / REPORTS_DIR / members[0].group, dict(
        threshold=mc.threshold, top_k=mc.top_k, live_only=mc.live_only, solver=mc.solver,
        acts=report_nulls.store_of_runs(dirs))  # the store the runs trained on


def report_is_current(members: list[RunSpec], out_dir: Path) -> bool:
    """Whether `analyze_groups` would reuse this group's stored report as it is."""
    from saefast.report import files as reports

    args = _report_args(members, Path(out_dir))
    if args is None:
        return False
    dirs, report_dir, settings = args
    return reports.stored_report(dirs, report_dir, **settings) is not None


def matching_cache(out_dir: Path):
    """OUT/reports/.matchings: the sweep's pair matchings (`match.cache`)."""
    from saefast.match.cache import FOLDER, MatchingCache

    return MatchingCache(Path(out_dir) / REPORTS_DIR / FOLDER)


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _null_medians(report: dict) -> dict[str, float]:
    """Each null's median for a report (isotropic, covariance, activation where computed);
    trends report the excess over each."""
    kinds = ((report.get("summary") or {}).get("nulls") or {}).get("kinds") or {}
    out = {k: v.get("median_cosine") for k, v in kinds.items() if v.get("median_cosine") is not None}
    if not out:
        base = (report.get("summary") or {}).get("baseline") or {}
        if base.get("median_cosine", base.get("median")) is not None:
            out["isotropic"] = base.get("median_cosine", base.get("median"))
    return out


def _null_columns(nulls: dict | None) -> dict[str, Any]:
    """null_medians {kind: median or None (skipped)}, excess {kind: {estimate, ci} or None}."""
    kinds = (nulls or {}).get("kinds") or {}
    medians = {k: v.get("median_cosine") for k, v in kinds.items()}
    excess = {k: ({"estimate": v["excess_median"]["estimate"], "ci": v["excess_median"]["ci"]}
                  if v.get("excess_median") else None) for k, v in kinds.items()}
    return {"null_medians": medians, "excess": excess}
def _beyond_chance(summary: dict) -> dict[str, Any]:
    """Per null judged in the evidence: {share, share_ci, fraction_significant_by}, or None
    where that null was skipped (too few distinct tokens)."""
    out = {}
    for kind, block in ((summary.get("evidence") or {}).get("by_null") or {}).items():
        out[kind] = None if block.get("skipped") else {
            "share": block["share_beyond_chance"]["estimate"],
            "share_ci": block["share_beyond_chance"]["ci"],
            "fraction_significant_by": block["fraction_significant_by"]["estimate"]}
    return out


def _equivalence(summary: dict) -> dict[str, Any] | None:
    """{shared, shared_ci (decoder and encoder >= threshold), r, r_ci (Pearson r of the
    decoder-matched pairs' held-out activations), same_partner, agreement}, None when absent."""
    e = summary.get("equivalence") or {}
    enc, act = e.get("encoder"), e.get("activation")
    if not enc and not act:
        return None
    t = f"{summary.get('threshold', 0):g}"
    shared = (enc or {}).get("shared_fraction", {}).get(t) or {}
    r = ((act or {}).get("decoder_pairs_r") or {}).get("median") or {}
    return {"shared": shared.get("estimate"), "shared_ci": shared.get("ci"),
            "r": r.get("estimate"), "r_ci": r.get("ci"),
            "same_partner": ((act or {}).get("same_partner") or {}).get("estimate"),
            "agreement": (((act or {}).get("correlation_matching") or {})
                          .get("agreement_with_decoder") or {}).get("estimate")}


def _evidence(summary: dict, key: str, field: str):
    """summary.evidence[key][field], None where a report has no evidence (or no null)."""
    return ((summary.get("evidence") or {}).get(key) or {}).get(field)


def summarize(outcomes: list[RunOutcome], reports: dict[str, dict]) -> dict[str, Any]:
    """One row per group: stability next to its random baseline and training health.
    `global_median` is the pooled median over every pair's matched cosines;
    `median_of_medians` the median of the per-pair medians."""
    by_group: dict[str, list[RunOutcome]] = {}
    for o in outcomes:
        by_group.setdefault(o.spec.group, []).append(o)
    rows = []
    for gname, members in by_group.items():
        ok = [o for o in members if o.metrics]
        report = reports.get(gname, {})
        s = report.get("summary", {})
        base = s.get("baseline") or {}
        pair_medians = [p["median_cosine"] for p in report.get("pairs", [])]
        intervals = s.get("seed_intervals") or {}  # 90 % over runs; None below 3 runs
        rows.append({
            "group": gname,
            "runs": len(ok),
            "pairs": s.get("n_pairs", 0),
            "median_of_medians": s.get("median_of_medians"),
            "pair_median_min": min(pair_medians, default=None),
            "pair_median_max": max(pair_medians, default=None),
            "global_median": s.get("global_median"),
            "global_median_ci": intervals.get("global_median", {}).get("ci"),
            "excess_median": intervals.get("excess_median", {}).get("estimate"),
            "excess_median_ci": intervals.get("excess_median", {}).get("ci"),
            "fraction_above": s.get("fraction_above"),
            "baseline_median": base.get("median_cosine", base.get("median")),
            **_null_columns(s.get("nulls")),
            "share_beyond_chance": _evidence(s, "share_beyond_chance", "estimate"),
            "share_beyond_chance_ci": _evidence(s, "share_beyond_chance", "ci"),
            "fraction_significant_by": _evidence(s, "fraction_significant_by", "estimate"),
            "beyond_chance": _beyond_chance(s),
            "equivalence": _equivalence(s),
            "live_only_global_median": (report.get("live_only") or {}).get(
                "summary", {}).get("global_median"),
            "dead_fraction": _mean([o.metrics["train"]["dead_fraction"] for o in ok]),
            "held_out_fvu": _mean([(o.metrics.get("held_out") or {}).get("fvu") for o in ok]),
            "decoder_cosine_to_init": _mean(
                [o.metrics["decoder_drift"]["mean_cosine_to_init"] for o in ok]),
        })
    from saefast.stats.trend import family_trends

    configs = {o.spec.group: o.spec.config.to_dict() for o in outcomes}
    return {
        "groups": rows,
        # groups that differ only in tokens: slope per decade, seeds resampled jointly
        "trends": family_trends(reports, configs, null_medians=_null_medians),
        "runs": {"done": sum(o.status == "done" for o in outcomes),
                 "skipped": sum(o.status == "skipped" for o in outcomes),
                 "failed": [{"name": o.spec.name, "error": o.error}
                            for o in outcomes if o.status == "failed"]},
    }
