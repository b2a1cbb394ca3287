"""What a training call derives from its TrainConfig before the first step: the learning
rate and its schedule, AuxK's k and dead window, the window schedule and number of steps,
b_dec's start, the parameters' dtype, and the fingerprint that ties a checkpoint to this exact setup. Defaults and their sources:
config.TrainConfig."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict

import torch

from saefast.config import SAEConfig, TrainConfig
from saefast.data.windows import TokenSource, WindowSchedule

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


def resolve_lr(cfg: TrainConfig, n_features: int) -> float:
    """lr, or the Top-K paper's scaling 2e-4 / sqrt(F / 2^14) when lr is 0 (auto)."""
    return cfg.lr if cfg.lr > 0 else 2e-4 / math.sqrt(n_features / 2**14)


def resolve_aux_k(cfg: TrainConfig, d_model: int, n_features: int) -> int:
    """aux_k, or the power of two nearest d_model / 2 (Gao et al.), at most n_features."""
    k = cfg.aux_k or 2 ** round(math.log2(max(d_model / 2, 1)))
    return max(1, min(k, n_features))


def resolve_dead_window(cfg: TrainConfig, n_train_tokens: int) -> int:
    """Tokens without firing after which a latent counts as dead for AuxK."""
    return cfg.dead_window or min(10_000_000, n_train_tokens)


def lr_factor(step: int, total: int, warmup_fraction: float, decay_fraction: float) -> float:
    """Linear warm-up from 0, constant, then linear decay to 0 over the last steps."""
    warmup = math.ceil(warmup_fraction * total)
    decay = math.ceil(decay_fraction * total)
    if warmup and step < warmup:
        return (step + 1) / warmup
    if decay and step >= total - decay:
        return (total - step) / decay
    return 1.0


def window_schedule(cfg: TrainConfig, seeds: list[int], source: TokenSource,
                    batch: int) -> tuple[WindowSchedule, int, int]:
    """(schedule, epochs, total steps) of a call. Fixed steps (step-matched controls) take
    as many passes as they need, the last cut short."""

    def schedule_of(epochs: int) -> WindowSchedule:
        return WindowSchedule(source.n_tokens, cfg.shuffle_buffer, epochs, cfg.data_seed, seeds,
                              per_seed=cfg.data_order == "per_seed",
                              shuffle_windows=source.random_access)

    epochs = math.ceil(cfg.steps / schedule_of(1).steps(batch)) if cfg.steps else cfg.epochs
    schedule = schedule_of(epochs)
    return schedule, epochs, cfg.steps or schedule.steps(batch)


@torch.no_grad()
def geometric_median(points: torch.Tensor, iters: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising the summed distance to `points` [N, d]."""
    x = points.double()
    median = x.mean(dim=0)  # [d]
    for _ in range(iters):
        dist = (x - median).norm(dim=1).clamp_min(1e-12)  # [N]
        weights = 1.0 / dist
        new = (weights[:, None] * x).sum(dim=0) / weights.sum()
        if (new - median).norm() <= tol * max(1.0, float(median.norm())):
            median = new
            break
        median = new
    return median.float()


def initial_b_dec(source: TokenSource, how: str, sample: int = 32_768) -> torch.Tensor:
    """b_dec before training, from (a prefix of at most `sample`) training tokens."""
    x = source.read(0, min(sample, source.n_tokens)).double()  # [n, d]
    if how == "zeros":
        return torch.zeros(source.d)
    if how == "mean":
        return x.mean(dim=0).float()
    return geometric_median(x)


def fingerprint(sae_cfg: SAEConfig, cfg: TrainConfig, seeds: list[int], source: TokenSource,
                data_key: str) -> str:
    """What a checkpoint must have been written for to be resumed from: every setting that
    changes the weights (not the seed field, which `seeds` replaces, nor how often to save)."""
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("seed", "checkpoint_every")}
    text = json.dumps([asdict(sae_cfg), settings, seeds, source.n_tokens, data_key], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
