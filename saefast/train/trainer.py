"""Train Top-K SAEs, several seeds at once, on activations that may not fit in memory.

`train_saes` trains S independent SAEs (one per seed) in one pass over the data: every
window of activations is read once and feeds all S. Each seed keeps its own init generator
and, with data_order=per_seed, its own token order, so a seed trained in a group ends with
exactly the weights it gets when trained alone (same kernels, same order, same updates).

Training follows current practice (Gao et al. 2024, "Scaling and evaluating sparse
autoencoders"; EleutherAI sparsify; SAELens): unit-norm decoder rows with the parallel
gradient component removed, AuxK on dead latents, lr scaled with dictionary size, b_dec at
the geometric median, linear warm-up and decay. Defaults and their sources: config.TrainConfig.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from saefast import ops
from saefast.config import SAEConfig, TrainConfig
from saefast.data.windows import Position, TensorSource, TokenSource, WindowSchedule
from saefast.errors import ActivationError, ConfigError
from saefast.train import checkpoints
from saefast.train import cuda_graphs as graphs_mod

# evaluation's functions are part of the trainer's public names (run dirs, tests use them here)
from saefast.train.evaluation import (  # noqa: F401
    convergence,
    convergence_steps,
    decoder_drift,
    evaluate,
    evaluate_many,
    feature_records,
)
from saefast.train.sae import TopKSAE
from saefast.train.sync_free import DeviceLog, matmul_precision, seed_loss_sync_free

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}

# on_step(step, total_steps, stats): stats = {"loss", "dead" (means over seeds), "per_seed":
# {seed: {"loss", "dead"}}, "tokens_per_second"}; dead = fraction of latents AuxK counts dead
StepCallback = Callable[[int, int, dict], None]


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


# ---------------------------------------------------------------------------- settings


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


def _fingerprint(sae_cfg: SAEConfig, cfg: TrainConfig, seeds: list[int], source: TokenSource,
                 data_key: str) -> str:
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("seed", "checkpoint_every")}
    text = json.dumps([asdict(sae_cfg), settings, seeds, source.n_tokens, data_key], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- training


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
    `on_step` is then called at those read-outs only. `cuda_graphs` (default: on CUDA, unless
    SAEFAST_CUDA_GRAPHS=0) replays each seed's step from a captured CUDA graph
    (`saefast.train.cuda_graphs`); metrics["cuda_graphs"] says how many steps it replayed.
    """
    train_src = TensorSource(train_src) if isinstance(train_src, torch.Tensor) else train_src
    if isinstance(eval_src, torch.Tensor):
        eval_src = TensorSource(eval_src)
    n, d = train_src.n_tokens, train_src.d
    if n == 0:
        raise ActivationError("no training tokens (data.tokens minus the held-out slice is 0)")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct, got {seeds}")
    dtype = DTYPES[cfg.dtype]
    F = sae_cfg.n_features
    saes = [TopKSAE(d, F, sae_cfg.k, seed=s, dtype=dtype, device=device) for s in seeds]
    if cfg.matmul == "bfloat16":
        for sae in saes:
            sae.matmul_dtype = torch.bfloat16
    if sync_free is None:
        sync_free = torch.device(device).type == "cuda"
    if cuda_graphs is None:
        cuda_graphs = sync_free and graphs_mod.wanted(device)
    if cuda_graphs and not (sync_free and torch.device(device).type == "cuda"):
        raise ConfigError("cuda_graphs needs a CUDA device and the sync-free path")
    b_dec = initial_b_dec(train_src, cfg.b_dec_init)
    if not torch.isfinite(b_dec).all():
        raise ActivationError("training activations contain NaN or infinite values")
    for sae in saes:
        with torch.no_grad():
            sae.b_dec.copy_(b_dec.to(dtype))
    init_decs = [sae.W_dec.detach().clone() for sae in saes]
    lr = resolve_lr(cfg, F)
    params = [p for sae in saes for p in sae.parameters()]
    # fused Adam: the same update rule in one kernel per tensor, without [F, d] temporaries
    # (benchmarks/bench_train.py --sections adam: ~5x faster than the default here)
    opt = (torch.optim.Adam(params, lr=lr, fused=True) if cfg.optimizer == "adam"
           else torch.optim.SGD(params, lr=lr))
    batch = min(cfg.batch_size, n)

    def schedule_of(epochs: int) -> WindowSchedule:
        return WindowSchedule(n, cfg.shuffle_buffer, epochs, cfg.data_seed, seeds,
                              per_seed=cfg.data_order == "per_seed",
                              shuffle_windows=train_src.random_access)

    # fixed steps (step-matched controls): as many passes as they need, the last cut short
    epochs = math.ceil(cfg.steps / schedule_of(1).steps(batch)) if cfg.steps else cfg.epochs
    schedule = schedule_of(epochs)
    total = cfg.steps or schedule.steps(batch)
    trace_at = (convergence_steps(total) if eval_src is not None and eval_src.n_tokens > 0
                and eval_src.random_access else set())
    fvu_trace: list[list[dict]] = [[] for _ in seeds]  # held-out FVU during training
    dead_window = resolve_dead_window(cfg, n)
    aux_k = resolve_aux_k(cfg, d, F)
    since_fired = torch.zeros(len(seeds), F, dtype=torch.int64, device=device)  # [S, F]
    failed: dict[int, TrainingDiverged] = {}
    histories: list[list[dict]] = [[] for _ in seeds]
    step, position, last_ckpt_tokens = 0, Position(), 0
    fingerprint = _fingerprint(sae_cfg, cfg, list(seeds), train_src, data_key)

    if checkpoint_dir is not None:
        state = checkpoints.load_latest(checkpoint_dir, fingerprint)
        if state is not None:
            for sae, sd in zip(saes, state["saes"]):
                sae.load_state_dict(sd)
            opt.load_state_dict(state["optimizer"])
            since_fired.copy_(state["since_fired"])
            step, position = state["step"], Position(*state["position"])
            failed = {i: TrainingDiverged(*v) for i, v in state["failed"].items()}
            histories = state["histories"]
            fvu_trace = state.get("fvu_trace", fvu_trace)
            last_ckpt_tokens = step * batch

    t0, tokens_this_call = time.perf_counter(), 0
    log = DeviceLog(len(seeds), log_every, device) if sync_free else None
    aux_on = (since_fired >= dead_window).any(dim=1).tolist()  # [S], read again at read-outs

    def read_out() -> None:
        """Sync-free path: read the device log; diverged seeds stop, histories fill in."""
        steps, step_losses, step_dead = log.read()
        for i in [i for i in range(len(seeds)) if i not in failed]:
            for t, value in zip(steps, step_losses[i]):
                if not math.isfinite(value):
                    failed[i] = TrainingDiverged(t - 1, value)
                    break
                if t % log_every == 0 or t == total:
                    histories[i].append({"step": t, "loss": value})
        live = [i for i in range(len(seeds)) if i not in failed]
        for i in live:  # each seed's AuxK starts when it has dead latents
            aux_on[i] = step_dead[i][-1] > 0
        if on_step is not None and live:
            elapsed = max(time.perf_counter() - t0, 1e-9)
            on_step(steps[-1], total, {
                "loss": sum(step_losses[i][-1] for i in live) / len(live),
                "dead": sum(step_dead[i][-1] for i in live) / (len(live) * F),
                "per_seed": {seeds[i]: {"loss": step_losses[i][-1], "dead": step_dead[i][-1] / F}
                             for i in live},
                "tokens_per_second": tokens_this_call / elapsed})

    def sync_free_step(i: int, x: torch.Tensor, aux: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Seed i's forward, backward and parallel-gradient removal; what a graph captures."""
        loss, n_dead = seed_loss_sync_free(saes[i], x, since_fired[i], dead_window, aux_k,
                                           cfg.aux_coef, aux)
        loss.backward()
        saes[i].remove_parallel_grad_()
        return loss, n_dead

    graphs = (graphs_mod.SeedStepGraphs(lambda i: list(saes[i].parameters()), sync_free_step,
                                        batch, graphs_mod.CudaGraphBackend(device))
              if cuda_graphs else None)

    def trace_fvu() -> None:
        live = [i for i in range(len(seeds)) if i not in failed]
        for i, ev in zip(live, evaluate_many([saes[i] for i in live], eval_src, device=device)):
            fvu_trace[i].append({"step": step, "fvu": ev["fvu"]})

    for window in schedule.windows(train_src, position):
        if step >= total:
            break
        tokens = window.tokens.to(device=device, dtype=dtype)  # [W, d]
        # each seed's token order moves to the device once a window, not once a step
        orders = [o.to(tokens.device) for o in window.orders]
        for start in range(0, tokens.shape[0], batch):
            if step >= total:
                break
            if stop_after_steps is not None and step >= stop_after_steps:
                return []  # a simulated kill: whatever was checkpointed stays
            active = [i for i in range(len(seeds)) if i not in failed]
            if not active:
                break
            for group in opt.param_groups:
                group["lr"] = lr * lr_factor(step, total, cfg.warmup_fraction, cfg.decay_fraction)
            opt.zero_grad(set_to_none=True)
            losses, total_loss, dead_counts = {}, None, {}
            if sync_free:  # nothing read back: the device log is read every log_every steps
                for i in active:  # each seed's backward on its own (a graph's unit)
                    x = tokens[orders[i][start:start + batch]]  # [B, d]
                    loss, n_dead = (graphs.run(i, x, aux_on[i]) if graphs is not None
                                    else sync_free_step(i, x, aux_on[i]))
                    log.record(i, loss, n_dead)
                stepped = active
            else:
                for i in active:
                    x = tokens[orders[i][start:start + batch]]  # [B, d]
                    loss, n_dead = seed_loss(saes[i], x, since_fired[i], dead_window, aux_k,
                                             cfg.aux_coef)
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        failed[i] = TrainingDiverged(step, value)
                        continue
                    losses[i] = value
                    dead_counts[i] = int(n_dead)
                    total_loss = loss if total_loss is None else total_loss + loss
                stepped = list(losses)
                if total_loss is not None:
                    total_loss.backward()
                    for i in stepped:
                        saes[i].remove_parallel_grad_()
            if stepped:
                opt.step()
                for i in stepped:
                    saes[i].normalize_decoder_()
            step += 1
            tokens_this_call += min(batch, tokens.shape[0] - start)
            if sync_free:
                if log.advance(step - 1) or step == total:
                    read_out()
            else:
                if step % log_every == 0 or step == total:
                    for i, value in losses.items():
                        histories[i].append({"step": step, "loss": value})
                if on_step is not None and losses:
                    elapsed = max(time.perf_counter() - t0, 1e-9)
                    on_step(step, total, {
                        "loss": sum(losses.values()) / len(losses),
                        "dead": sum(dead_counts.values()) / (len(dead_counts) * F),
                        "per_seed": {seeds[i]: {"loss": losses[i], "dead": dead_counts[i] / F}
                                     for i in losses},
                        "tokens_per_second": tokens_this_call / elapsed})
            if step in trace_at:
                trace_fvu()
        position = schedule.next_position(window.position)
        del window, tokens, orders  # free this window before the next one is read
        if sync_free and log.count:
            read_out()  # a checkpoint or the end must not miss a divergence
        tokens_done = step * batch
        if (checkpoint_dir is not None and cfg.checkpoint_every
                and tokens_done - last_ckpt_tokens >= cfg.checkpoint_every and step < total):
            checkpoints.save(checkpoint_dir, step, fingerprint, {
                "saes": [sae.state_dict() for sae in saes], "optimizer": opt.state_dict(),
                "since_fired": since_fired.cpu(), "step": step,
                "position": [position.epoch, position.window],
                "failed": {i: [e.step, e.loss] for i, e in failed.items()},
                "histories": histories, "fvu_trace": fvu_trace})
            last_ckpt_tokens = tokens_done
    train_s = time.perf_counter() - t0

    # train metrics first, then held-out: a stream reads on from where it stopped
    live = [i for i in range(len(saes)) if i not in failed]
    train_evals = dict(zip(live, evaluate_many([saes[i] for i in live], train_src, device=device)))
    held_evals: dict[int, dict] = {}
    if eval_src is not None and eval_src.n_tokens > 0:
        held_evals = dict(zip(live, evaluate_many([saes[i] for i in live], eval_src, device=device)))
    results: list[TrainResult | TrainingDiverged] = []
    for i, sae in enumerate(saes):
        if i in failed:
            results.append(failed[i])
            continue
        train_eval = train_evals[i]
        metrics = {
            "steps": step,
            "epochs": epochs,
            "lr": lr,
            "aux_k": aux_k,
            "dead_window": dead_window,
            "train_seconds": train_s,
            "seeds_trained_together": len(seeds),
            "tokens_per_second": tokens_this_call * len(seeds) / max(train_s, 1e-9),
            "train": {k: v for k, v in train_eval.items() if k != "fire_counts"},
            "held_out": None,
            "decoder_drift": decoder_drift(init_decs[i], sae.W_dec.detach()),
            "final_loss": histories[i][-1]["loss"] if histories[i] else None,
        }
        if graphs is not None:
            metrics["cuda_graphs"] = graphs.stats.as_dict()
        if i in held_evals:
            metrics["held_out"] = {k: v for k, v in held_evals[i].items() if k != "fire_counts"}
            metrics["convergence"] = convergence(
                fvu_trace[i] + [{"step": step, "fvu": held_evals[i]["fvu"]}])
        results.append(TrainResult(sae=sae, metrics=metrics, fire_counts=train_eval["fire_counts"],
                                   history=histories[i]))
    return results


def train_sae(acts_train, acts_eval, sae_cfg: SAEConfig, train_cfg: TrainConfig, *,
              device: str = "cpu", on_step: StepCallback | None = None,
              log_every: int = 50) -> TrainResult:
    """Train one SAE (seed train_cfg.seed); raises TrainingDiverged if its loss goes NaN."""
    (result,) = train_saes(acts_train, acts_eval, sae_cfg, train_cfg, [train_cfg.seed],
                           device=device, on_step=on_step, log_every=log_every)
    if isinstance(result, TrainingDiverged):
        raise result
    return result
