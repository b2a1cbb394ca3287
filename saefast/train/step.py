"""One optimizer step of every live seed: the body of `train.trainer.train_saes`' loop.

All S SAEs share one optimizer (one fused Adam call a step). A step sets the scheduled lr,
computes each live seed's loss on its own batch (reconstruction + AuxK on dead latents),
removes the decoder gradient's component along each row, steps the optimizer and puts the
decoder rows back on the unit sphere. Two paths compute the losses:

- the host path (`seed_loss`, the CPU's default): every loss is read at once, so a diverged
  seed stops before its update and progress is reported every step;
- the sync-free path (the GPU's): `sync_free.seed_step` per seed, eagerly or replayed from a
  CUDA graph, losses kept on the device and read every log_every steps (`read_out`).

Either way a seed's update uses only its own tensors, so it ends with the weights it gets
when trained alone. Progress (histories, divergences, on_step) goes through `Progress`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from saefast import ops
from saefast.config import SAEConfig, TrainConfig
from saefast.train import cuda_graphs as graphs_mod
from saefast.train.progress import Progress
from saefast.train.sae import TopKSAE
from saefast.train.settings import DTYPES, lr_factor
from saefast.train.sync_free import DeviceLog, seed_step


@dataclass
class SeedGroup:
    """The S SAEs trained together and what their steps update."""

    saes: list[TopKSAE]
    opt: torch.optim.Optimizer  # over every SAE's parameters
    since_fired: torch.Tensor  # [S, F] int64: tokens since each latent last fired
    init_decs: list[torch.Tensor]  # each decoder [F, d] at its init, for decoder_drift


def new_saes(d: int, sae_cfg: SAEConfig, cfg: TrainConfig, seeds: list[int],
             device: str) -> list[TopKSAE]:
    """One freshly initialised SAE per seed (each from its own generator)."""
    saes = [TopKSAE(d, sae_cfg.n_features, sae_cfg.k, seed=s, dtype=DTYPES[cfg.dtype],
                    device=device) for s in seeds]
    if cfg.matmul == "bfloat16":
        for sae in saes:
            sae.matmul_dtype = torch.bfloat16
    return saes


def start_group(saes: list[TopKSAE], b_dec: torch.Tensor, cfg: TrainConfig, lr: float,
                device: str) -> SeedGroup:
    """The SAEs with b_dec [d] set, their optimizer, and no latent dead yet."""
    for sae in saes:
        with torch.no_grad():
            sae.b_dec.copy_(b_dec.to(DTYPES[cfg.dtype]))
    init_decs = [sae.W_dec.detach().clone() for sae in saes]
    params = [p for sae in saes for p in sae.parameters()]
    # fused Adam: the same update rule in one kernel per tensor, without [F, d] temporaries
    # (benchmarks/bench_train.py --sections adam: ~5x faster than the default here)
    opt = (torch.optim.Adam(params, lr=lr, fused=True) if cfg.optimizer == "adam"
           else torch.optim.SGD(params, lr=lr))
    F = saes[0].n_features
    since_fired = torch.zeros(len(saes), F, dtype=torch.int64, device=device)  # [S, F]
    return SeedGroup(saes, opt, since_fired, init_decs)


def seed_loss(sae: TopKSAE, x: torch.Tensor, since_fired: torch.Tensor, dead_window: int,
              aux_k: int, aux_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstruction loss (+ AuxK on dead latents) for one SAE on x [B, d]; updates
    since_fired [F] (tokens since each latent last fired). Returns (loss, n_dead)."""
    x_hat, values, indices = sae(x)
    loss = (x_hat - x).pow(2).sum(dim=-1).mean()
    dead = since_fired >= dead_window  # [F], from before this batch
    n_dead = dead.sum()
    if aux_coef > 0 and int(n_dead) > 0:
        # AuxK: reconstruct the residual with the top aux_k dead latents, so they get
        # gradient again (Gao et al. 2024, section 2.4). The residual is the target.
        dead_idx = torch.nonzero(dead).squeeze(1)  # [n_dead]
        ka = min(aux_k, dead_idx.numel())
        mm = sae.matmul_dtype or sae.W_enc.dtype
        v_aux, i_aux = ops.topk_encode((x - sae.b_dec).detach().to(mm), sae.W_enc[dead_idx].to(mm),
                                       sae.b_enc[dead_idx].to(mm), ka)  # [B, ka]
        e_hat = sae.decode_aux(v_aux, dead_idx[i_aux])  # [B, d]
        residual = (x - x_hat).detach()
        loss = loss + aux_coef * (e_hat - residual).pow(2).sum(dim=-1).mean()
    with torch.no_grad():
        since_fired += x.shape[0]
        since_fired[indices[values > 0]] = 0
    return loss, n_dead


class SeedSteps:
    """Runs the steps of a SeedGroup, recording into a Progress (see the module doc)."""

    def __init__(self, group: SeedGroup, progress: Progress, cfg: TrainConfig, *, lr: float,
                 dead_window: int, aux_k: int, batch: int, log_every: int, sync_free: bool,
                 cuda_graphs: bool, device: str):
        self.group, self.progress, self.cfg = group, progress, cfg
        self.lr, self.dead_window, self.aux_k, self.batch = lr, dead_window, aux_k, batch
        self.log = DeviceLog(len(group.saes), log_every, device) if sync_free else None
        # each seed's AuxK starts when it has dead latents: read again at each read-out
        self.aux_on = (group.since_fired >= dead_window).any(dim=1).tolist()  # [S]
        self.graphs = (graphs_mod.SeedStepGraphs(lambda i: list(group.saes[i].parameters()),
                                                 self._seed_step, batch,
                                                 graphs_mod.CudaGraphBackend(device))
                       if cuda_graphs else None)

    def run(self, tokens: torch.Tensor, orders: list[torch.Tensor], start: int) -> None:
        """Step number progress.step of every live seed; seed i's batch is
        tokens[orders[i][start:start + batch]] (tokens [W, d], orders [W] each)."""
        group, progress = self.group, self.progress
        active = progress.live()
        factor = lr_factor(progress.step, progress.total, self.cfg.warmup_fraction,
                           self.cfg.decay_fraction)
        for param_group in group.opt.param_groups:
            param_group["lr"] = self.lr * factor
        group.opt.zero_grad(set_to_none=True)
        rows = slice(start, start + self.batch)
        if self.log is not None:  # nothing read back: the device log is read every log_every
            stepped = self._sync_free_losses(active, lambda i: tokens[orders[i][rows]])
        else:
            stepped, losses, dead = self._host_losses(active, lambda i: tokens[orders[i][rows]])
        if stepped:
            group.opt.step()
            for i in stepped:
                group.saes[i].normalize_decoder_()
        progress.step += 1
        progress.tokens_this_call += min(self.batch, tokens.shape[0] - start)
        if self.log is None:
            progress.report(progress.step, losses, dead)
        elif self.log.advance(progress.step - 1) or progress.step == progress.total:
            self.read_out()

    def flush(self) -> None:
        """Sync-free path: read what the device log holds (before a checkpoint or the end,
        which must not miss a divergence)."""
        if self.log is not None and self.log.count:
            self.read_out()

    def read_out(self) -> None:
        """Sync-free path: read the device log; diverged seeds stop, histories fill in."""
        steps, losses, dead = self.log.read()  # each [S][steps read]
        progress = self.progress
        for i in progress.live():
            for t, value in zip(steps, losses[i]):
                if not progress.log_loss(i, t, value):
                    break
        live = progress.live()
        for i in live:
            self.aux_on[i] = dead[i][-1] > 0
        progress.report(steps[-1], {i: losses[i][-1] for i in live},
                        {i: dead[i][-1] for i in live})

    def _host_losses(self, active: list[int], batch_of) -> tuple[list[int], dict, dict]:
        """Every active seed's loss, read at once: a non-finite one stops its seed before the
        update. One backward over the sum. Returns (seeds stepped, their losses, dead counts)."""
        group, total_loss = self.group, None
        losses: dict[int, float] = {}
        dead: dict[int, int] = {}
        for i in active:
            loss, n_dead = seed_loss(group.saes[i], batch_of(i), group.since_fired[i],
                                     self.dead_window, self.aux_k, self.cfg.aux_coef)
            value = float(loss.detach())
            if not self.progress.log_loss(i, self.progress.step + 1, value):
                continue
            losses[i], dead[i] = value, int(n_dead)
            total_loss = loss if total_loss is None else total_loss + loss
        if total_loss is not None:
            total_loss.backward()
            for i in losses:
                group.saes[i].remove_parallel_grad_()
        return list(losses), losses, dead

    def _sync_free_losses(self, active: list[int], batch_of) -> list[int]:
        """Each active seed's step on its own (a graph's unit), its loss into the device log."""
        for i in active:
            x = batch_of(i)  # [B, d]
            loss, n_dead = (self.graphs.run(i, x, self.aux_on[i]) if self.graphs is not None
                            else self._seed_step(i, x, self.aux_on[i]))
            self.log.record(i, loss, n_dead)
        return active

    def _seed_step(self, i: int, x: torch.Tensor, aux_on: bool) -> tuple[torch.Tensor, torch.Tensor]:
        return seed_step(self.group.saes[i], x, self.group.since_fired[i], self.dead_window,
                         self.aux_k, self.cfg.aux_coef, aux_on)
