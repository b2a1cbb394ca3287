"""What a training call ends with: per seed, its SAE and metrics (run.json's `metrics`), or
the divergence that stopped it; and the held-out FVU traced while it trained."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from saefast.data.windows import TokenSource
from saefast.train.evaluation import convergence, decoder_drift, evaluate_many
from saefast.train.progress import Progress, TrainingDiverged
from saefast.train.sae import TopKSAE
from saefast.train.step import SeedGroup


@dataclass
class TrainResult:
    sae: TopKSAE
    metrics: dict
    """`train` and `held_out`: mse, fvu, l0, dead_fraction; `decoder_drift`; `steps`..."""
    fire_counts: torch.Tensor  # [F] int64, over one pass of the training tokens after training
    history: list[dict] = field(default_factory=list)


def trace_fvu(group: SeedGroup, progress: Progress, eval_src: TokenSource, device: str) -> None:
    """The live seeds' held-out FVU now, appended to their traces (for `convergence`)."""
    live = progress.live()
    for i, ev in zip(live, evaluate_many([group.saes[i] for i in live], eval_src, device=device)):
        progress.fvu_trace[i].append({"step": progress.step, "fvu": ev["fvu"]})


def results(group: SeedGroup, progress: Progress, train_src: TokenSource,
            eval_src: TokenSource | None, shared: dict, *, cuda_graphs: dict | None,
            device: str, on_evaluation: Callable[[int, int], None] | None = None,
            ) -> list[TrainResult | TrainingDiverged]:
    """One result per seed, in order. `shared`: the metrics every seed has alike (steps,
    epochs, lr, ...), first in each seed's metrics; `cuda_graphs`: the graphs' stats, if used.
    Train metrics come first, then held-out: a stream reads on from where it stopped.
    on_evaluation(done, total): the training tokens encoded so far for the firing counts."""
    live = progress.live()
    saes = [group.saes[i] for i in live]
    train_evals = dict(zip(live, evaluate_many(saes, train_src, device=device,
                                                   on_progress=on_evaluation)))
    held_evals: dict[int, dict] = {}
    if eval_src is not None and eval_src.n_tokens > 0:
        held_evals = dict(zip(live, evaluate_many(saes, eval_src, device=device)))
    out: list[TrainResult | TrainingDiverged] = []
    for i, sae in enumerate(group.saes):
        if i in progress.failed:
            out.append(progress.failed[i])
            continue
        history = progress.histories[i]
        metrics = {
            **shared,
            "train": _without_fire_counts(train_evals[i]),
            "held_out": None,
            "decoder_drift": decoder_drift(group.init_decs[i], sae.W_dec.detach()),
            "final_loss": history[-1]["loss"] if history else None,
        }
        if cuda_graphs is not None:
            metrics["cuda_graphs"] = dict(cuda_graphs)
        if i in held_evals:
            metrics["held_out"] = _without_fire_counts(held_evals[i])
            metrics["convergence"] = convergence(
                progress.fvu_trace[i] + [{"step": progress.step, "fvu": held_evals[i]["fvu"]}])
        out.append(TrainResult(sae=sae, metrics=metrics,
                               fire_counts=train_evals[i]["fire_counts"], history=history))
    return out


def _without_fire_counts(evaluation: dict) -> dict:
    return {k: v for k, v in evaluation.items() if k != "fire_counts"}
