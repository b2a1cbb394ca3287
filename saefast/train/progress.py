"""What training has done so far, and the progress record it reports.

`Progress` keeps the step count and, per seed, the loss history, the held-out FVU trace and
the divergence that stopped it: what a checkpoint saves and a resume restores
(`train.resume`), and what the results end with (`train.results`). `step_record` is the one
shape of a progress line, the stats `on_step` receives: built here for the trainer's host and
sync-free paths alike, and for the merge of several workers' lines (`sweep.seed_pool`).
No torch here: the sweep's workers import it cheaply.
"""

from __future__ import annotations

import math
import time
from typing import Callable

# on_step(step, total_steps, stats): stats = step_record(...) (see there)
StepCallback = Callable[[int, int, dict], None]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; `step` says when. Nothing of the run is written."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"loss became {loss} at step {step}; the run was stopped")
        self.step, self.loss = step, loss


def step_record(per_seed: dict[int, dict], tokens_per_second: float) -> dict:
    """on_step's stats: {"loss", "dead" (means over seeds), "per_seed": {seed: {"loss",
    "dead"}}, "tokens_per_second"}; dead = fraction of latents AuxK counts dead."""
    n = max(1, len(per_seed))
    return {"loss": sum(v["loss"] for v in per_seed.values()) / n,
            "dead": sum(v["dead"] for v in per_seed.values()) / n,
            "per_seed": per_seed,
            "tokens_per_second": tokens_per_second}


class Progress:
    """The steps of S seeds trained together, as far as they have gone. Seeds are indices
    0..S-1 here; `seeds` names them in the progress record."""

    def __init__(self, seeds: list[int], n_features: int, total: int, log_every: int,
                 on_step: StepCallback | None):
        self.seeds, self.n_features, self.total = list(seeds), n_features, total
        self.log_every, self.on_step = log_every, on_step
        self.step = 0  # steps done (the next step's index)
        self.failed: dict[int, TrainingDiverged] = {}
        self.histories: list[list[dict]] = [[] for _ in seeds]  # {"step", "loss"}
        self.fvu_trace: list[list[dict]] = [[] for _ in seeds]  # held-out {"step", "fvu"}
        self.start_clock()

    def start_clock(self) -> None:
        """Tokens per second count from here (after a resume: from where it resumed)."""
        self.started, self.tokens_this_call = time.perf_counter(), 0

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def live(self) -> list[int]:
        """The seeds still training (not diverged), in order."""
        return [i for i in range(len(self.seeds)) if i not in self.failed]

    def log_loss(self, i: int, step: int, loss: float) -> bool:
        """Seed i's loss at `step` (counted from 1): kept every log_every steps and at the
        end; a non-finite loss stops the seed at its step instead (False)."""
        if not math.isfinite(loss):
            self.failed[i] = TrainingDiverged(step - 1, loss)
            return False
        if step % self.log_every == 0 or step == self.total:
            self.histories[i].append({"step": step, "loss": loss})
        return True

    def report(self, step: int, losses: dict[int, float], dead: dict[int, int]) -> None:
        """Calls on_step with `step`'s losses and dead-latent counts of the seeds that have them."""
        if self.on_step is None or not losses:
            return
        per_seed = {self.seeds[i]: {"loss": losses[i], "dead": dead[i] / self.n_features}
                    for i in losses}
        rate = self.tokens_this_call / max(self.seconds(), 1e-9)
        self.on_step(step, self.total, step_record(per_seed, rate))
