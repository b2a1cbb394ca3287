"""Train one Top-K SAE on an activation matrix and measure it.

Deterministic: the seed fixes the initialisation (its own generator) and the data order
(a second generator), so the same seed gives the same weights on CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from saefast.config import SAEConfig, TrainConfig
from saefast.sae import TopKSAE

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}

# on_step(step, total_steps, loss) -> None; used by the CLI's progress bar
StepCallback = Callable[[int, int, float], None]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; `step` says when. Nothing of the run is written."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"loss became {loss} at step {step}; the run was stopped")
        self.step, self.loss = step, loss


@dataclass
class TrainResult:
    sae: TopKSAE
    metrics: dict
    """`train` and `held_out`: mse, fvu, l0, dead_fraction; `decoder_drift`; `steps`..."""
    fire_counts: torch.Tensor  # [F] int64, over one pass of the training tokens after training
    history: list[dict] = field(default_factory=list)


def train_sae(
    acts_train: torch.Tensor,
    acts_eval: torch.Tensor | None,
    sae_cfg: SAEConfig,
    train_cfg: TrainConfig,
    *,
    device: str = "cpu",
    on_step: StepCallback | None = None,
    log_every: int = 50,
) -> TrainResult:
    """Train a TopKSAE on acts_train [N, d]; evaluate on acts_train and acts_eval [M, d]."""
    if acts_train.ndim != 2 or acts_train.shape[0] == 0:
        raise ValueError(f"training activations must be [N, d] with N > 0, got {list(acts_train.shape)}")
    if not torch.isfinite(acts_train).all():
        raise ValueError("training activations contain NaN or infinite values")
    n, d = acts_train.shape
    dtype = DTYPES[train_cfg.dtype]
    sae = TopKSAE(d, sae_cfg.n_features, sae_cfg.k, seed=train_cfg.seed, dtype=dtype, device=device)
    init_dec = sae.W_dec.detach().clone()  # [F, d], for decoder drift
    with torch.no_grad():  # b_dec from the data: the mean activation
        sae.b_dec.copy_(acts_train.mean(dim=0).to(dtype))

    params = list(sae.parameters())
    if train_cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=train_cfg.lr)
    else:
        opt = torch.optim.SGD(params, lr=train_cfg.lr)
    order_gen = torch.Generator().manual_seed(train_cfg.seed + 1_000_003)
    batch = min(train_cfg.batch_size, n)
    steps_per_epoch = math.ceil(n / batch)
    total = steps_per_epoch * train_cfg.epochs
    history: list[dict] = []
    step = 0
    t0 = time.perf_counter()
    for _epoch in range(train_cfg.epochs):
        perm = torch.randperm(n, generator=order_gen)  # [N]
        for start in range(0, n, batch):
            x = acts_train[perm[start:start + batch]].to(device=device, dtype=dtype)  # [B, d]
            x_hat, _, _ = sae(x)
            loss = (x_hat - x).pow(2).sum(dim=-1).mean()
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise TrainingDiverged(step, loss_value)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            sae.remove_parallel_grad_()
            opt.step()
            sae.normalize_decoder_()
            step += 1
            if step % log_every == 0 or step == total:
                history.append({"step": step, "loss": loss_value})
            if on_step is not None:
                on_step(step, total, loss_value)
    train_s = time.perf_counter() - t0

    train_eval = evaluate(sae, acts_train, device=device)
    metrics = {
        "steps": step,
        "train_seconds": train_s,
        "tokens_per_second": n * train_cfg.epochs / max(train_s, 1e-9),
        "train": {k: v for k, v in train_eval.items() if k != "fire_counts"},
        "held_out": None,
        "decoder_drift": decoder_drift(init_dec, sae.W_dec.detach()),
        "final_loss": history[-1]["loss"] if history else None,
    }
    if acts_eval is not None and acts_eval.shape[0] > 0:
        held = evaluate(sae, acts_eval, device=device)
        metrics["held_out"] = {k: v for k, v in held.items() if k != "fire_counts"}
    return TrainResult(sae=sae, metrics=metrics, fire_counts=train_eval["fire_counts"],
                       history=history)


@torch.no_grad()
def evaluate(sae: TopKSAE, acts: torch.Tensor, *, device: str = "cpu",
             batch_size: int = 4096) -> dict:
    """Reconstruction metrics over acts [N, d] plus how often each feature fired.

    A feature fires on a token when it is among the k kept latents with a value > 0
    (ReLU can leave fewer than k positive). dead = never fired over these tokens.
    """
    dtype = sae.W_dec.dtype
    fire = torch.zeros(sae.n_features, dtype=torch.int64)  # [F]
    sq_err = 0.0
    l0_sum = 0.0
    n = acts.shape[0]
    mean = acts.double().mean(dim=0)  # [d]
    total_var = float((acts.double() - mean).pow(2).sum())
    for start in range(0, n, batch_size):
        x = acts[start:start + batch_size].to(device=device, dtype=dtype)  # [B, d]
        x_hat, values, indices = sae(x)
        sq_err += float((x_hat.double() - x.double()).pow(2).sum())
        active = values > 0  # [B, k]
        l0_sum += float(active.sum())
        fire.index_add_(0, indices[active].cpu(), torch.ones(int(active.sum()), dtype=torch.int64))
    d = acts.shape[1]
    return {
        "tokens": n,
        "mse": sq_err / (n * d),
        "fvu": sq_err / total_var if total_var > 0 else float("nan"),
        "l0": l0_sum / n,
        "dead_fraction": float((fire == 0).double().mean()),
        "fire_counts": fire,
    }


def decoder_drift(init_dec: torch.Tensor, dec: torch.Tensor) -> dict:
    """How far training moved each decoder row from its own initial direction.

    At ~1K tokens rows barely move (cosine ~1): the SAE is still mostly its random init,
    and matching two such SAEs measures their seeds, not the model.
    """
    a = init_dec.double() / init_dec.double().norm(dim=1, keepdim=True)
    b = dec.double() / dec.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = (a * b).sum(dim=1)  # [F]
    return {
        "mean_cosine_to_init": float(cos.mean()),
        "median_cosine_to_init": float(cos.median()),
        "fraction_above_0.9": float((cos >= 0.9).double().mean()),
    }


def feature_records(fire_counts: torch.Tensor, n_tokens: int) -> list[dict]:
    """feature_analysis.json entries: {feature_index, dead, fire_count, fire_rate}."""
    return [
        {"feature_index": i, "dead": int(c) == 0, "fire_count": int(c),
         "fire_rate": int(c) / max(n_tokens, 1)}
        for i, c in enumerate(fire_counts.tolist())
    ]
