"""One pass: the seeds of a group that train together, from one activation source.

`run_pass` is THE seam where a pass is executed, by every executor (the local one in this
process, the Ray executor in a task): `threads.plan_pass` decides where its seeds run, in
this process (`run_pass_here`) or split over seed worker processes (`seed_pool`; each
worker, `seed_worker`, runs `run_pass_here` on its part). `run_pass_here` opens the pass's activations
(`training_data`: a store in memory or memory-mapped, or a stream), trains the seeds under
one optimizer (`train.trainer.train_saes`, resumable from checkpoints) and writes each run
dir. Everything a pass needs is in its arguments, so it runs the same on another machine.
A trained null's pass (`sweep.null_runs`) is the same pass on a `SurrogateSpec`: its
training rows come from the surrogate sample, its held-out rows from the real store.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saefast.config import RunConfig
from saefast.runs import layout
from saefast.sweep import plan, seed_pool
from saefast.sweep import threads as threads_
from saefast.sweep.events import Events, RunOutcome
from saefast.sweep.executor import source_width
from saefast.sweep.experiment import RunSpec
from saefast.sweep.plan import data_ranges, harvested_count, token_steps

if TYPE_CHECKING:
    from saefast.data.stream import StreamSource
    from saefast.data.surrogate import SurrogateSpec

__all__ = ["run_pass", "run_pass_here", "training_data", "TrainingData", "open_stream"]


def run_pass(runs: list[RunSpec], data: Path | StreamSource | SurrogateSpec, out_dir: Path, *,
             events: Events | None = None, memory_budget: int | None = None,
             threads: int | None = None) -> list[RunOutcome]:
    """Train the seeds of one pass (runs that differ only by seed) from one activation
    store or stream, and write each run dir. Checkpoints let a killed pass resume bitwise.

    Where the seeds run is `threads.plan_pass`'s choice (`threads`: the sweep's thread
    budget, default $SAEFAST_THREADS or torch's): small dictionaries from a store are split
    over worker processes (`seed_pool`), everything else trains in this process. A seed's
    weights are the same either way."""
    events = events or Events()
    cfg = runs[0].config
    plan_ = threads_.plan_pass(len(runs), cfg.sae.n_features, source_width(data),
                               steps=token_steps(cfg) // cfg.train.batch_size,
                               batch_size=cfg.train.batch_size, device=cfg.model.device,
                               cached=_from_store(data), threads=threads)
    if plan_.parallel_seeds:
        return seed_pool.run_parts(threads_.split(runs, plan_.workers), data, out_dir,
                                   events=events, memory_budget=memory_budget, threads=plan_.threads)
    with threads_.torch_threads(plan_.threads):
        return run_pass_here(runs, data, out_dir, events=events, memory_budget=memory_budget)


def _from_store(data) -> bool:
    """A store, or a surrogate of one (seed workers open either themselves); not a stream."""
    from saefast.data.surrogate import SurrogateSpec

    return isinstance(data, (Path, SurrogateSpec))


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
    record: dict | None = None  # more for run.json (a surrogate's `surrogate` block)


def training_data(data: Path | StreamSource | SurrogateSpec, cfg: RunConfig,
                  memory_budget: int | None = None) -> TrainingData:
    """A cache store held in memory when it fits a quarter of the budget, else memory-mapped;
    or a stream; or a store's surrogate (`_surrogate_data`)."""
    from saefast.data import store
    from saefast.data.surrogate import SurrogateSpec
    from saefast.data.windows import TensorSource
    from saefast.train import memory

    if isinstance(data, SurrogateSpec):
        return _surrogate_data(data, cfg, memory_budget)
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


def _surrogate_data(spec: SurrogateSpec, cfg: RunConfig,
                    memory_budget: int | None) -> TrainingData:
    """The store's rows with the training range replaced by the surrogate sample (generated
    once into memory when the store would be resident: the same bits, read once)."""
    from saefast.data.surrogate import Placed
    from saefast.data.windows import TensorSource

    real = training_data(Path(spec.store), cfg, memory_budget)
    sample = spec.open()
    inner = sample
    if isinstance(real.source, TensorSource):
        inner = TensorSource(sample.read(0, sample.n_tokens))  # [n, d]
    if sample.n_tokens != spec.train[1] - spec.train[0]:
        raise ValueError(f"surrogate of {sample.n_tokens} rows for training rows {spec.train}")
    record = {"kind": spec.kind, "seed": spec.seed, "store": spec.store,
              "train_rows": list(spec.train), "held_out_rows": list(spec.held_out),
              "moments_rows": max([list(spec.train), list(spec.held_out)],
                                  key=lambda r: r[1] - r[0]),
              "rank": sample.rank, "moments_fingerprint": sample.moments_fingerprint,
              "sample_fingerprint": sample.fingerprint()}
    return TrainingData(Placed(real.source, spec.train[0], inner), real.meta,
                        f"surrogate:{sample.fingerprint()}:{real.key}",
                        f"surrogate {spec.kind} of {spec.store}", record)


def _stream_null_data(got: TrainingData, out_dir: Path, t0: int, t1: int):
    """(path, gatherer): where a streamed pass's null data lives and, when no earlier pass of
    the same stream and rows wrote it, a `StreamNullData` attached to the stream to gather
    it; (None, None) for a store (its reports read the store)."""
    if not got.key.startswith("stream:"):
        return None, None
    from saefast.data import stream_nulls

    path = stream_nulls.null_data_path(layout.runs_dir(out_dir), got.key.removeprefix("stream:"), t0, t1)
    if path.is_file():
        return path, None
    return path, stream_nulls.StreamNullData(got.source, t0, t1).attach()


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
    ckpt_dir = layout.checkpoints_dir(out_dir, f"{runs[0].group}-s{'_'.join(map(str, seeds))}")
    null_data, gather = _stream_null_data(got, out_dir, t0_, t1_)
    results = train.train_saes(
        train_src, eval_src, cfg.sae, cfg.train, seeds, device=cfg.model.device,
        on_step=events.run_step, on_evaluation=events.run_evaluation,
        checkpoint_dir=ckpt_dir, data_key=got.key)
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
                     "seeds_trained_together": len(runs),
                     "peak_memory_bytes": artifacts.peak_memory_bytes()})
        if got.record is not None:
            record["surrogate"] = got.record
        sae = result.sae
        path = artifacts.write_run_dir(
            layout.run_dir(out_dir, spec.name),
            W_enc=sae.W_enc, b_enc=sae.b_enc, W_dec=sae.W_dec, b_dec=sae.b_dec, k=cfg.sae.k,
            features=train.feature_records(result.fire_counts, train_src.n_tokens),
            run_info=record)
        outcomes.append(RunOutcome(spec, "done", path=path, metrics=result.metrics))
    checkpoints.clear(ckpt_dir)  # every run of the pass is written (or failed for good)
    return outcomes
