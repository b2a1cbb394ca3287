"""How good a trained SAE is: reconstruction metrics, feature firing, decoder drift from
its init, and whether training had converged (the held-out FVU trace). Used by the trainer
(`train.results`, `train.trainer`) and by the run dirs it writes."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from saefast.data.windows import TensorSource, TokenSource
from saefast.train.sae import TopKSAE

PLATEAU = 0.01  # held-out FVU falling by less than this (relative) over the last quarter


def convergence_steps(total: int) -> set[int]:
    """Steps after which the held-out FVU is traced (half-way, three quarters), besides the end."""
    return {s for s in (math.ceil(total / 2), math.ceil(3 * total / 4)) if 0 < s < total}


def convergence(trace: list[dict]) -> dict:
    """run.json's `convergence`: the held-out FVU trace and whether it had reached a plateau
    (it fell by less than PLATEAU, relative, from three quarters of training to the end). A
    heuristic: a decaying learning rate also flattens the end of the curve."""
    out: dict = {"held_out_fvu": trace, "criterion": f"held-out FVU fell < {PLATEAU:.0%} "
                 "(relative) over the last quarter of the steps"}
    if len(trace) < 2 or not all(math.isfinite(t["fvu"]) for t in trace[-2:]) or trace[-1]["fvu"] <= 0:
        return {**out, "relative_drop_last_quarter": None, "converged": None}
    drop = (trace[-2]["fvu"] - trace[-1]["fvu"]) / trace[-1]["fvu"]
    return {**out, "relative_drop_last_quarter": drop, "converged": drop < PLATEAU}


@torch.no_grad()
def evaluate_many(saes: list[TopKSAE], acts: TokenSource | torch.Tensor, *, device: str = "cpu",
                  batch_size: int = 8192,
                  on_progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Reconstruction metrics of each SAE over acts [N, d], plus how often each feature fired.

    One read of each batch feeds every SAE (a stream runs the model once for all of them).
    A feature fires on a token when it is among the k kept latents with a value > 0
    (ReLU can leave fewer than k positive). dead = never fired over these tokens.
    """
    source = TensorSource(acts) if isinstance(acts, torch.Tensor) else acts
    n, d = source.n_tokens, source.d
    # sums stay on the device (float64) and are read once at the end: no sync per batch
    zero = torch.zeros((), dtype=torch.float64, device=device)
    total = torch.zeros(d, dtype=torch.float64, device=device)
    total_sq = zero.clone()
    sq_err = [zero.clone() for _ in saes]
    l0_sum = [torch.zeros((), dtype=torch.int64, device=device) for _ in saes]
    fire = [torch.zeros(sae.n_features, dtype=torch.int64, device=device) for sae in saes]  # [F]
    if on_progress is not None:
        on_progress(0, n)
    for start in range(0, n, batch_size):
        x64 = source.read(start, min(start + batch_size, n)).to(device).double()  # [b, d]
        total += x64.sum(dim=0)
        total_sq += x64.pow(2).sum()
        for j, sae in enumerate(saes):
            x = x64.to(dtype=sae.W_dec.dtype)
            x_hat, values, indices = sae(x)
            sq_err[j] += (x_hat.double() - x64).pow(2).sum()
            active = values > 0  # [b, k]
            l0_sum[j] += active.sum()
            fire[j].index_add_(0, indices.reshape(-1), active.reshape(-1).to(torch.int64))
        if on_progress is not None:
            on_progress(min(start + batch_size, n), n)
    sq_err, l0_sum = [float(e) for e in sq_err], [int(c) for c in l0_sum]
    fire = [f.cpu() for f in fire]
    total_var = float(total_sq) - float(total.pow(2).sum()) / max(n, 1)  # sum of squared deviations
    return [{
        "tokens": n,
        "mse": sq_err[j] / (n * d),
        "fvu": sq_err[j] / total_var if total_var > 0 else float("nan"),
        "l0": l0_sum[j] / n,
        "dead_fraction": float((fire[j] == 0).double().mean()),
        "fire_counts": fire[j],
    } for j in range(len(saes))]


def evaluate(sae: TopKSAE, acts: TokenSource | torch.Tensor, *, device: str = "cpu",
             batch_size: int = 8192) -> dict:
    """`evaluate_many` for one SAE."""
    return evaluate_many([sae], acts, device=device, batch_size=batch_size)[0]


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
