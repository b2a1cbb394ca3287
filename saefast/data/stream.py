"""Activations straight from the model into training, with no disk cache (`data.cache: false`).

`StreamSource` is a `TokenSource` whose tokens are computed on demand by the model's forward
pass: model forward -> activations -> the trainer's shuffle window -> SAE steps. Nothing
is written to disk, so a token budget is bounded by time, not by disk or memory (one window
of `train.shuffle_buffer` tokens is in memory at a time).

Tokens are numbered exactly as in the activation cache (same chunking, same dropped special
tokens), so token t of a stream is token t of the cached store. Reads are meant to move
forward; a read behind the current batch restarts the corpus, and a read far ahead skips
whole forward batches by tokenizing only. Forward batches are always the chunks
[i * FORWARD_CHUNKS, (i + 1) * FORWARD_CHUNKS), whatever read asked for them, so a token's
activation does not depend on where a (resumed) stream started: resuming is bitwise.

Costs: every epoch, and the evaluation pass after training, run the model again.

`on_batch(start, acts, token_ids)`, when set, sees every forward batch as it is computed
(tokens [start, start + len(acts))): how `stream_nulls` gathers the data-shaped nulls' data
during training without a second pass.
"""

from __future__ import annotations

import itertools
import os
from typing import Iterator

import numpy as np
import torch

from saefast.data import harvest as H
from saefast.data import models as M
from saefast.data.store import store_key
from saefast.data.windows import TokenSource

_MODELS: dict[tuple, tuple] = {}  # one loaded model per (name, device, cache dir) a process


def _load(model: str, device: str, cache_dir) -> tuple:
    key = (model, device, str(cache_dir))
    if key not in _MODELS:
        _MODELS[key] = M.load_model(model, device, cache_dir=cache_dir)
    return _MODELS[key]


class StreamSource(TokenSource):
    """The first `n_tokens` activations of `hook` on `corpus`, computed as they are read."""

    random_access = False  # the trainer visits its windows in order (windows.WindowSchedule)

    def __init__(self, model: str, hook: str, corpus: str, n_tokens: int, *,
                 context_length: int = 128, drop_special_tokens: bool = True,
                 device: str = "cpu", cache_dir: str | os.PathLike | None = None):
        if n_tokens <= 0:
            raise ValueError(f"n_tokens must be positive, got {n_tokens}")
        self.lm, info = _load(model, device, cache_dir)
        M.check_hooks([hook], info["hook_names"])
        self.framing = M.model_framing(self.lm)
        self.content_len = H.content_length(self.framing, info, context_length)
        self.model, self.hook, self.corpus, self.device = model, hook, corpus, device
        self.drop_special = drop_special_tokens
        self.n_tokens, self.d = int(n_tokens), info["d_model"]
        self.key = store_key(model, hook, corpus, context_length=context_length,
                             drop_special_tokens=drop_special_tokens, cache_dir=cache_dir)
        self.forward_batches = 0  # how many forward passes ran (tests, progress)
        self.on_batch = None  # callable(start, acts [n, d], token_ids [n]) per forward batch
        self._restart()

    def _batches(self) -> Iterator[tuple[list[list[int]], int]]:
        """(chunks, kept tokens) per forward batch, from the start of the corpus."""
        chunks = H.iter_chunks(self.corpus, self.framing.encode, self.content_len)
        while True:
            batch = list(itertools.islice(chunks, H.FORWARD_CHUNKS))
            if not batch:
                return
            yield batch, sum(H.kept_tokens(c, self.framing, self.drop_special) for c in batch)

    def _restart(self) -> None:
        self._iter = self._batches()
        self._start, self._count = 0, 0  # token range [start, start + count) of this batch
        self._chunks: list[list[int]] = []
        self._acts: np.ndarray | None = None  # [count, d] once computed
        self._ids: np.ndarray | None = None  # [count] token ids, with _acts

    def _advance(self) -> None:
        got = next(self._iter, None)
        if got is None:
            raise H.corpus_too_small(self.corpus, self._start + self._count, self.n_tokens,
                                     self.drop_special)
        self._start += self._count
        self._chunks, self._count = got
        self._acts = self._ids = None

    def check_length(self) -> None:
        """Raise CorpusError now, not hours into training, when the corpus is too short
        (tokenizes up to n_tokens; no forward pass)."""
        probe = self._batches()
        have = 0
        while have < self.n_tokens:
            got = next(probe, None)
            if got is None:
                raise H.corpus_too_small(self.corpus, have, self.n_tokens, self.drop_special)
            have += got[1]

    def _activations(self) -> np.ndarray:
        if self._acts is None:
            acts = H.forward_chunks(self.lm, self._chunks, {self.hook}, self.framing,
                                    self.drop_special, self.device)[self.hook]
            self._acts = np.concatenate(acts) if acts else np.zeros((0, self.d), np.float32)
            ids = H.chunk_token_ids(self._chunks, self.framing, self.drop_special)
            self._ids = np.concatenate(ids) if ids else np.zeros(0, np.int32)
            self.forward_batches += 1
            if self.on_batch is not None:
                self.on_batch(self._start, self._acts, self._ids)
        return self._acts

    def read(self, start: int, end: int) -> torch.Tensor:
        return torch.from_numpy(self._read(start, end, ids=False))  # [end - start, d]

    def token_ids(self, start: int, end: int) -> np.ndarray:
        """[end - start] token id of each row of read(start, end)."""
        return self._read(start, end, ids=True)

    def _read(self, start: int, end: int, *, ids: bool) -> np.ndarray:
        if not 0 <= start <= end <= self.n_tokens:
            raise ValueError(f"read [{start}, {end}) outside the stream's {self.n_tokens:,} tokens")
        if start < self._start:
            self._restart()
        # filled batch by batch, no extra copy
        out = np.empty(end - start, np.int32) if ids else np.empty((end - start, self.d), np.float32)
        pos = start
        while pos < end:
            if pos >= self._start + self._count:
                self._advance()  # batches before `start` are only tokenized
                continue
            lo, hi = pos - self._start, min(end, self._start + self._count) - self._start
            acts = self._activations()
            out[pos - start:pos - start + hi - lo] = (self._ids if ids else acts)[lo:hi]
            pos += hi - lo
        return out
