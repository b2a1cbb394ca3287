"""Token sources and the resumable window schedule: which activations training reads, in
what order, from data that may not fit in memory.

A `TokenSource` is activation vectors [N, d] read by contiguous range: `TensorSource` (in
memory), `saefast.data.store.StoreSource` (memory-mapped store), `saefast.data.stream.
StreamSource` (computed by the model as it is read), and any slice of one (`split`).

The training tokens are cut into windows of `shuffle_buffer` tokens (a training batch, the
tokens of one step, is drawn from inside a window). Each epoch visits the windows in a
shuffled order (shared by all seeds, so one read of a window feeds every SAE trained
together; in corpus order when the source is a stream) and shuffles the tokens inside a
window (per seed, or shared). Every permutation comes from a generator seeded by
(seed, epoch, window), so a position
(epoch, window) is all a checkpoint needs to resume bitwise: no RNG state, and the shuffle
buffer is empty at every window boundary.

When the training tokens fit in one window this is a plain per-epoch shuffle.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator

import torch


class TokenSource:
    """Activation vectors [N, d] that can be read by contiguous range."""

    n_tokens: int
    d: int
    random_access = True  # False: reads should move forward (a stream); windows go in order

    def read(self, start: int, end: int) -> torch.Tensor:  # [end - start, d] float32
        raise NotImplementedError

    def __len__(self) -> int:
        return self.n_tokens

    def slice(self, start: int, end: int) -> "TokenSource":
        """Tokens [start, end) of this source as a source; subclasses that can cut without
        reading through themselves (in memory, memory-mapped) override it."""
        return _Slice(self, start, end)


class TensorSource(TokenSource):
    def __init__(self, acts: torch.Tensor):
        if acts.ndim != 2:
            raise ValueError(f"activations must be [N, d], got {list(acts.shape)}")
        self.acts, (self.n_tokens, self.d) = acts, acts.shape

    def read(self, start: int, end: int) -> torch.Tensor:
        return self.acts[start:end]

    def slice(self, start: int, end: int) -> "TensorSource":
        return TensorSource(self.acts[start:end])


def split(source: TokenSource, start: int, end: int) -> TokenSource:
    """A contiguous sub-range of a source, e.g. the training part or the held-out part."""
    return source.slice(start, end)


class _Slice(TokenSource):
    """Tokens [start, end) of any source, read through it (e.g. a stream)."""

    def __init__(self, source: TokenSource, start: int, end: int):
        self.source, self.start, self.n_tokens, self.d = source, start, end - start, source.d
        self.random_access = source.random_access

    def read(self, start: int, end: int) -> torch.Tensor:
        return self.source.read(self.start + start, self.start + end)


def _generator(*keys: int) -> torch.Generator:
    digest = hashlib.sha256(repr(keys).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


@dataclass(frozen=True)
class Position:
    """Where training is: the next window to train on (index into the epoch's window order)."""

    epoch: int = 0
    window: int = 0


@dataclass
class Window:
    position: Position  # the position of this window
    tokens: torch.Tensor  # [W, d]
    orders: list[torch.Tensor]  # one token permutation [W] per seed


class WindowSchedule:
    """The order in which `source` is visited for `epochs` epochs."""

    def __init__(self, n_tokens: int, window: int, epochs: int, data_seed: int,
                 seeds: list[int], per_seed: bool, shuffle_windows: bool = True):
        self.n_tokens, self.window, self.epochs = n_tokens, max(1, window), epochs
        self.data_seed, self.seeds, self.per_seed = data_seed, list(seeds), per_seed
        self.n_windows = -(-n_tokens // self.window)
        self.shuffle_windows = shuffle_windows  # False for streams: they are read in order

    def window_order(self, epoch: int) -> list[int]:
        if self.n_windows == 1 or not self.shuffle_windows:
            return list(range(self.n_windows))
        return torch.randperm(self.n_windows, generator=_generator(self.data_seed, epoch, -1)).tolist()

    def bounds(self, w: int) -> tuple[int, int]:
        return w * self.window, min((w + 1) * self.window, self.n_tokens)

    def token_orders(self, epoch: int, w: int, n: int) -> list[torch.Tensor]:
        if self.per_seed:
            return [torch.randperm(n, generator=_generator(s, epoch, w)) for s in self.seeds]
        shared = torch.randperm(n, generator=_generator(self.data_seed, epoch, w))
        return [shared for _ in self.seeds]

    def steps(self, batch_size: int) -> int:
        per_epoch = sum(-(-(b - a) // batch_size) for a, b in map(self.bounds, range(self.n_windows)))
        return per_epoch * self.epochs

    def windows(self, source: TokenSource, start: Position = Position()) -> Iterator[Window]:
        for epoch in range(start.epoch, self.epochs):
            order = self.window_order(epoch)
            first = start.window if epoch == start.epoch else 0
            for i in range(first, len(order)):
                a, b = self.bounds(order[i])
                # no local name for the tokens: the consumer can free a window before the next
                # one is read, so two windows are never in memory at once
                yield Window(Position(epoch, i), source.read(a, b),
                             self.token_orders(epoch, order[i], b - a))

    def next_position(self, pos: Position) -> Position:
        return Position(pos.epoch, pos.window + 1) if pos.window + 1 < self.n_windows \
            else Position(pos.epoch + 1, 0)
