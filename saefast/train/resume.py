"""Checkpointing a training call and resuming it: the state that makes a resumed call end
with the same weights as an uninterrupted one.

That state is everything a step reads besides the data: each SAE's parameters, the
optimizer's moments and step counts, each seed's tokens since each latent fired (AuxK), the
step and the position in the window schedule (so the data order goes on where it stopped),
and the progress so far (histories, divergences, the held-out FVU trace). It is taken at
window boundaries, every `checkpoint_every` training tokens, and written by
`train.checkpoints` (atomic, hashed, tied to the setup's fingerprint).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saefast.data.windows import Position
from saefast.train import checkpoints
from saefast.train.progress import Progress, TrainingDiverged
from saefast.train.step import SeedGroup


def state_of(group: SeedGroup, progress: Progress, position: Position) -> dict[str, Any]:
    """The checkpoint's contents (plain tensors and containers, as torch.load reads them)."""
    return {
        "saes": [sae.state_dict() for sae in group.saes], "optimizer": group.opt.state_dict(),
        "since_fired": group.since_fired.cpu(), "step": progress.step,
        "position": [position.epoch, position.window],
        "failed": {i: [e.step, e.loss] for i, e in progress.failed.items()},
        "histories": progress.histories, "fvu_trace": progress.fvu_trace}


def restore(state: dict[str, Any], group: SeedGroup, progress: Progress) -> Position:
    """Puts `state_of`'s contents back in place; returns where the data order goes on."""
    for sae, sd in zip(group.saes, state["saes"]):
        sae.load_state_dict(sd)
    group.opt.load_state_dict(state["optimizer"])
    group.since_fired.copy_(state["since_fired"])
    progress.step = state["step"]
    progress.failed = {i: TrainingDiverged(*v) for i, v in state["failed"].items()}
    progress.histories = state["histories"]
    progress.fvu_trace = state.get("fvu_trace", progress.fvu_trace)  # older checkpoints lack it
    return Position(*state["position"])


class Checkpointer:
    """Checkpoints of one training call in `directory` (None: none are read or written)."""

    def __init__(self, directory: Path | None, fingerprint: str, every_tokens: int, batch: int):
        self.directory, self.fingerprint = directory, fingerprint
        self.every_tokens, self.batch = every_tokens, batch
        self.saved_at_tokens = 0  # training tokens done at the last checkpoint

    def resume(self, group: SeedGroup, progress: Progress) -> Position:
        """Restores the newest good checkpoint of this setup, if any; where to start reading."""
        state = (checkpoints.load_latest(self.directory, self.fingerprint)
                 if self.directory is not None else None)
        if state is None:
            return Position()
        position = restore(state, group, progress)
        self.saved_at_tokens = progress.step * self.batch
        return position

    def after_window(self, group: SeedGroup, progress: Progress, position: Position) -> None:
        """Saves when checkpoint_every tokens have passed since the last save (not at the end:
        a finished call needs none). `position` is the next window's."""
        tokens_done = progress.step * self.batch
        if (self.directory is not None and self.every_tokens
                and tokens_done - self.saved_at_tokens >= self.every_tokens
                and progress.step < progress.total):
            checkpoints.save(self.directory, progress.step, self.fingerprint,
                             state_of(group, progress, position))
            self.saved_at_tokens = tokens_done
