"""Training steps that never wait for the host: the GPU path of `train.trainer.train_saes`.

A host sync (`float(loss)`, `int(n_dead)`, a boolean-mask index) stalls the GPU until every
queued kernel has run, so a step is only as fast as Python's round trip. Here losses, NaN
checks and dead counts stay on the device (`DeviceLog`) and are read every N steps; AuxK
masks live latents with a -inf bias instead of gathering the dead ones
(`seed_loss_sync_free`). `seed_step` is one seed's whole step before the optimizer: what
`train.step` runs eagerly or replays from a CUDA graph, and what benchmarks/bench_cuda.py
times. The CPU path (`train.step.seed_loss`) is unchanged; both give the same losses
(tests/test_sync_free.py compares them).
"""

from __future__ import annotations

import contextlib

import torch

from saefast.train.sae import TopKSAE


def seed_loss_sync_free(sae: TopKSAE, x: torch.Tensor, since_fired: torch.Tensor,
                        dead_window: int, aux_k: int, aux_coef: float, aux_on: bool,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """`step.seed_loss` without a host sync (the GPU path): the same losses, computed so that no
    value has to reach the host. AuxK runs over all latents with a -inf bias on the live
    ones (the kernels keep the dead ones' top aux_k, then zeros), and only when `aux_on` (the
    last read-out saw dead latents; a latent is dead only after dead_window tokens, so
    starting AuxK up to one read-out late changes little). Returns (loss, latents dead after
    this step: with a read-out every step, `aux_on` is exactly the host path's test)."""
    x_hat, values, indices = sae(x)
    loss = (x_hat - x).pow(2).sum(dim=-1).mean()
    dead = since_fired >= dead_window  # [F]
    n_dead = dead.sum()
    if aux_coef > 0 and aux_on:
        masked_bias = torch.where(dead, sae.b_enc, float("-inf"))
        v_aux, i_aux = sae.encode_with((x - sae.b_dec).detach(), masked_bias,
                                       min(aux_k, sae.n_features))  # [B, aux_k]
        e_hat = sae.decode_aux(v_aux, i_aux)  # [B, d]
        residual = (x - x_hat).detach()
        aux = (e_hat - residual).pow(2).sum(dim=-1).mean()
        loss = loss + aux_coef * aux * (n_dead > 0)
    with torch.no_grad():
        fired = torch.zeros_like(since_fired).index_add_(
            0, indices.reshape(-1), (values > 0).reshape(-1).to(since_fired.dtype))
        since_fired.add_(x.shape[0]).masked_fill_(fired > 0, 0)
        dead_after = (since_fired >= dead_window).sum()  # what the next step's AuxK will see
    return loss, dead_after


def seed_step(sae: TopKSAE, x: torch.Tensor, since_fired: torch.Tensor, dead_window: int,
              aux_k: int, aux_coef: float, aux_on: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One seed's forward, losses, backward and parallel-gradient removal on x [B, d]: the
    unit a CUDA graph captures (`cuda_graphs.SeedStep`). Leaves the gradients in the SAE's
    .grad for the optimizer; returns `seed_loss_sync_free`'s (loss, dead after)."""
    loss, n_dead = seed_loss_sync_free(sae, x, since_fired, dead_window, aux_k, aux_coef, aux_on)
    loss.backward()
    sae.remove_parallel_grad_()
    return loss, n_dead


class DeviceLog:
    """Per-step losses and dead counts kept on the device and read every `every` steps (one
    sync), so a GPU never waits for the host inside a step. A read-out turns each seed's
    first non-finite loss into its TrainingDiverged, with the exact step."""

    def __init__(self, n_seeds: int, every: int, device):
        self.every = max(1, every)
        self.loss = torch.zeros(n_seeds, self.every, dtype=torch.float64, device=device)
        self.dead = torch.zeros(n_seeds, self.every, dtype=torch.int64, device=device)
        self.first_step, self.count = 0, 0

    def record(self, i: int, loss: torch.Tensor, n_dead: torch.Tensor) -> None:
        self.loss[i, self.count] = loss.detach()
        self.dead[i, self.count] = n_dead

    def advance(self, step: int) -> bool:
        """The step is done; True when the buffer is full and must be read."""
        if self.count == 0:
            self.first_step = step
        self.count += 1
        return self.count == self.every

    def read(self) -> tuple[list[int], list[list[float]], list[list[int]]]:
        """(steps, loss per seed per step, dead per seed per step) since the last read."""
        losses = self.loss[:, :self.count].cpu().tolist()
        dead = self.dead[:, :self.count].cpu().tolist()
        steps = list(range(self.first_step + 1, self.first_step + self.count + 1))
        self.count = 0
        return steps, losses, dead


@contextlib.contextmanager
def matmul_precision(matmul: str, device):
    """TF32 for float32 GEMMs on CUDA while training with matmul=tf32 (restored after)."""
    if matmul != "tf32" or torch.device(device).type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
