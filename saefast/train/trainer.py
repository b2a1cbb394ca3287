"""Train Top-K SAEs, several seeds at once, on activations that may not fit in memory.

`train_saes` trains S independent SAEs (one per seed) in one pass over the data: every
window of activations is read once and feeds all S. Each seed keeps its own init generator
and, with data_order=per_seed, its own token order, so a seed trained in a group ends with
exactly the weights it gets when trained alone (same kernels, same order, same updates).

Training follows current practice (Gao et al. 2024, "Scaling and evaluating sparse
autoencoders"; EleutherAI sparsify; SAELens): unit-norm decoder rows with the parallel
gradient component removed, AuxK on dead latents, lr scaled with dictionary size, b_dec at
the geometric median, linear warm-up and decay. Defaults and their sources: config.TrainConfig.

The parts, in the order a call runs them: `settings` (what the config resolves to),
`step.start_group` (the SAEs and their optimizer), `resume` (restoring a checkpoint, saving
new ones), `step.SeedSteps` (one step of all seeds), `progress` (histories, divergences, the
on_step record) and `results` (metrics at the end). This module only wires them together.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import torch

from saefast.config import SAEConfig, TrainConfig
from saefast.data.windows import TensorSource, TokenSource
from saefast.errors import ActivationError, ConfigError
from saefast.train import cuda_graphs as graphs_mod

# the trainer's public names, kept importable from here (run dirs, tests, benchmarks use them)
from saefast.train.evaluation import (  # noqa: F401
    convergence,
    convergence_steps,
    decoder_drift,
    evaluate,
    evaluate_many,
    feature_records,
)
from saefast.train.progress import Progress, StepCallback, TrainingDiverged
from saefast.train.results import TrainResult, results, trace_fvu
from saefast.train.resume import Checkpointer
from saefast.train.settings import (  # noqa: F401
    DTYPES,
    fingerprint,
    geometric_median,
    initial_b_dec,
    lr_factor,
    resolve_aux_k,
    resolve_dead_window,
    resolve_lr,
    window_schedule,
)
from saefast.train.step import SeedSteps, new_saes, start_group
from saefast.train.sync_free import matmul_precision


def _under_matmul_precision(train: Callable) -> Callable:
    """Runs `train` under the GEMM precision its TrainConfig (4th argument) asks for."""

    @functools.wraps(train)
    def wrapper(*args, **kwargs):
        cfg = kwargs["cfg"] if "cfg" in kwargs else args[3]
        with matmul_precision(cfg.matmul, kwargs.get("device", "cpu")):
            return train(*args, **kwargs)

    return wrapper


@_under_matmul_precision
def train_saes(
    train_src: TokenSource | torch.Tensor,
    eval_src: TokenSource | torch.Tensor | None,
    sae_cfg: SAEConfig,
    cfg: TrainConfig,
    seeds: list[int],
    *,
    device: str = "cpu",
    on_step: StepCallback | None = None,
    on_evaluation: Callable[[int, int], None] | None = None,
    checkpoint_dir: Path | None = None,
    data_key: str = "",
    log_every: int = 50,
    stop_after_steps: int | None = None,
    sync_free: bool | None = None,
    cuda_graphs: bool | None = None,
) -> list[TrainResult | TrainingDiverged]:
    """Train one SAE per seed together; one result (or the divergence) per seed.

    Checkpoints (when checkpoint_dir is given) go there every cfg.checkpoint_every training
    tokens, at window boundaries; an interrupted call resumes from the newest good one and
    ends with the same weights as an uninterrupted call. `stop_after_steps` simulates a kill.
    `sync_free` (default: on CUDA devices) keeps losses, NaN checks and dead counts on the
    device and reads them every `log_every` steps (`seed_loss_sync_free`, `DeviceLog`);
    `on_step` is then called at those read-outs only. `on_evaluation(done, total)` follows
    the encode pass over the training tokens after training (the firing counts). `cuda_graphs` (default: on CUDA, unless
    SAEFAST_CUDA_GRAPHS=0) replays each seed's step from a captured CUDA graph
    (`saefast.train.cuda_graphs`); metrics["cuda_graphs"] says how many steps it replayed.
    """
    train_src = TensorSource(train_src) if isinstance(train_src, torch.Tensor) else train_src
    if isinstance(eval_src, torch.Tensor):
        eval_src = TensorSource(eval_src)
    n, d, F = train_src.n_tokens, train_src.d, sae_cfg.n_features
    if n == 0:
        raise ActivationError("no training tokens (data.tokens minus the held-out slice is 0)")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct, got {seeds}")
    saes = new_saes(d, sae_cfg, cfg, seeds, device)
    sync_free, cuda_graphs = _step_path(device, sync_free, cuda_graphs)
    b_dec = initial_b_dec(train_src, cfg.b_dec_init)  # [d]
    if not torch.isfinite(b_dec).all():
        raise ActivationError("training activations contain NaN or infinite values")
    lr, batch = resolve_lr(cfg, F), min(cfg.batch_size, n)
    group = start_group(saes, b_dec, cfg, lr, device)

    schedule, epochs, total = window_schedule(cfg, seeds, train_src, batch)
    traced = eval_src is not None and eval_src.n_tokens > 0 and eval_src.random_access
    trace_at = convergence_steps(total) if traced else set()
    dead_window, aux_k = resolve_dead_window(cfg, n), resolve_aux_k(cfg, d, F)
    progress = Progress(seeds, F, total, log_every, on_step)
    ckpt = Checkpointer(checkpoint_dir, fingerprint(sae_cfg, cfg, list(seeds), train_src, data_key),
                        cfg.checkpoint_every, batch)
    position = ckpt.resume(group, progress)
    progress.start_clock()
    # after the resume: each seed's AuxK switch starts from the restored dead latents
    steps = SeedSteps(group, progress, cfg, lr=lr, dead_window=dead_window, aux_k=aux_k,
                      batch=batch, log_every=log_every, sync_free=sync_free,
                      cuda_graphs=cuda_graphs, device=device)

    for window in schedule.windows(train_src, position):
        if progress.step >= total:
            break
        tokens = window.tokens.to(device=device, dtype=DTYPES[cfg.dtype])  # [W, d]
        # each seed's token order moves to the device once a window, not once a step
        orders = [o.to(tokens.device) for o in window.orders]
        for start in range(0, tokens.shape[0], batch):
            if progress.step >= total:
                break
            if stop_after_steps is not None and progress.step >= stop_after_steps:
                return []  # a simulated kill: whatever was checkpointed stays
            if not progress.live():
                break
            steps.run(tokens, orders, start)
            if progress.step in trace_at:
                trace_fvu(group, progress, eval_src, device)
        position = schedule.next_position(window.position)
        del window, tokens, orders  # free this window before the next one is read
        steps.flush()  # a checkpoint or the end must not miss a divergence
        ckpt.after_window(group, progress, position)
    train_s = progress.seconds()

    shared = {"steps": progress.step, "epochs": epochs, "lr": lr, "aux_k": aux_k,
              "dead_window": dead_window, "train_seconds": train_s,
              "seeds_trained_together": len(seeds),
              "tokens_per_second": progress.tokens_this_call * len(seeds) / max(train_s, 1e-9)}
    graphs = steps.graphs.stats.as_dict() if steps.graphs is not None else None
    return results(group, progress, train_src, eval_src, shared, cuda_graphs=graphs, device=device,
                   on_evaluation=on_evaluation)


def _step_path(device: str, sync_free: bool | None, cuda_graphs: bool | None) -> tuple[bool, bool]:
    """(sync_free, cuda_graphs) with their defaults: both on a CUDA device (graphs unless
    SAEFAST_CUDA_GRAPHS=0); graphs need the sync-free path."""
    on_cuda = torch.device(device).type == "cuda"
    if sync_free is None:
        sync_free = on_cuda
    if cuda_graphs is None:
        cuda_graphs = sync_free and graphs_mod.wanted(device)
    if cuda_graphs and not (sync_free and on_cuda):
        raise ConfigError("cuda_graphs needs a CUDA device and the sync-free path")
    return sync_free, cuda_graphs


def train_sae(acts_train, acts_eval, sae_cfg: SAEConfig, train_cfg: TrainConfig, *,
              device: str = "cpu", on_step: StepCallback | None = None,
              log_every: int = 50) -> TrainResult:
    """Train one SAE (seed train_cfg.seed); raises TrainingDiverged if its loss goes NaN."""
    (result,) = train_saes(acts_train, acts_eval, sae_cfg, train_cfg, [train_cfg.seed],
                           device=device, on_step=on_step, log_every=log_every)
    if isinstance(result, TrainingDiverged):
        raise result
    return result
