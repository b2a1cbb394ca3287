"""Harvesting: run a model over a corpus and append each hook's activations to its store.

`harvest` makes sure the store of every (model, hook, corpus, context length) holds enough
tokens, resuming where a store stopped; the chunking it defines (`iter_chunks`,
`forward_chunks`) is also what `saefast.data.stream` uses, so a stream's token t is a
store's token t. The store files themselves are written by `saefast.data.store.StoreWriter`.
Progress goes to an `on_progress(done, wanted)` callback; this module never draws on the
screen. transformer_lens is imported only when a model has to be loaded.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from saefast.data import models
from saefast.data.corpora import iter_documents
from saefast.data.models import Framing, check_hooks, model_framing
from saefast.data.store import StoreWriter, store_dir, store_key, write_lock
from saefast.errors import ConfigError, CorpusError, HookError

FORWARD_CHUNKS = 16  # chunks per forward pass (a stream's forward batches are the same)

Progress = Callable[[int, int], None]  # (tokens done, tokens wanted)


def harvest(model: str, hooks: list[str], corpus: str, n_tokens: int, *, context_length: int = 128,
            drop_special_tokens: bool = True, device: str = "cpu",
            cache_dir: str | os.PathLike | None = None,
            on_progress: Progress | None = None,
            on_wait: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Make sure the cache holds >= n_tokens activations of every hook; return hook -> store dir.

    Chunking (`store.CHUNKING`, "packed-v1"): documents (in `iter_documents` order) are tokenized without
    special tokens and concatenated into one stream, which is cut into chunks of
    ``context_length - len(prefix) - len(suffix)`` tokens; each chunk gets the model's own
    special tokens back (BERT: ``[CLS] ... [SEP]``; Gemma: ``<bos> ...``), so every sequence
    is exactly ``context_length`` long (only the last one may be shorter) and needs no padding.
    We chunk ourselves because ``model.to_tokens`` silently truncates (at 512 for BERT).

    drop_special_tokens (default True) drops the positions of those special tokens (and any
    text token with the same id). They are not text, they sit at the same position in every
    chunk, and in decoder LMs the BOS position is a well-known outlier (an attention sink
    whose residual norm is many times a text token's), so an SAE would spend features and
    loss on them. Measured here: Gemma 270M's <bos> has norm ~43,000 at blocks.6.hook_resid_pre
    against ~2,000-4,000 for text tokens; MiniLM's [CLS]/[SEP] are milder (~10 vs ~12-14 at
    blocks.4.hook_resid_pre) but are still the same two tokens in every chunk.

    The model is loaded only if some hook's store lacks tokens; one forward pass harvests
    every hook that still needs them. Stores grow by append-only shards, and meta.json is
    replaced atomically after each shard, so a killed harvest resumes from its last shard.
    If the corpus runs out first, the stores keep what they have (marked exhausted) and
    CorpusError says how many tokens the corpus has.

    on_progress(done, wanted), when given, is called as the harvest advances: first with the
    tokens the stores already hold, then after every forward batch (done <= wanted =
    n_tokens; done is the least of the hooks being harvested). It is not called when every
    store already holds n_tokens.
    """
    hooks = list(dict.fromkeys(hooks))
    if not hooks:
        raise ValueError("harvest needs at least one hook")
    if int(n_tokens) <= 0:
        raise ValueError(f"n_tokens must be positive, got {n_tokens}")
    n_tokens = int(n_tokens)
    keys = {hook: store_key(model, hook, corpus, context_length=context_length,
                            drop_special_tokens=drop_special_tokens, cache_dir=cache_dir)
            for hook in hooks}
    stores = {hook: store_dir(key, cache_dir) for hook, key in keys.items()}
    if not _lacking(stores, keys, n_tokens, corpus, drop_special_tokens):
        return stores  # complete: read without taking the lock
    with write_lock(list(stores.values()), on_wait):
        todo = _lacking(stores, keys, n_tokens, corpus, drop_special_tokens)  # after a wait: less
        if todo:
            _harvest_into(todo, model, corpus, n_tokens, context_length, drop_special_tokens,
                          device, cache_dir, on_progress)
    return stores


def _lacking(stores: dict[str, Path], keys: dict[str, dict], n_tokens: int, corpus: str,
             drop_special: bool) -> list[StoreWriter]:
    """Writers of the stores holding fewer than n_tokens (their meta read now)."""
    writers = [StoreWriter.open(stores[hook], keys[hook]) for hook in stores]
    todo = [w for w in writers if w.meta["n_tokens"] < n_tokens]
    for w in todo:
        if w.meta["exhausted"]:
            raise corpus_too_small(corpus, w.meta["n_tokens"], n_tokens, drop_special)
    return todo


def _harvest_into(todo: list[StoreWriter], model: str, corpus: str, n_tokens: int,
                  context_length: int, drop_special_tokens: bool, device: str,
                  cache_dir: str | os.PathLike | None, on_progress: Progress | None) -> None:
    lm, info = models.load_model(model, device, cache_dir=cache_dir)
    check_hooks([w.hook for w in todo], info["hook_names"], model=model, n_layers=info["n_layers"])
    framing = model_framing(lm)
    content_len = content_length(framing, info, context_length)
    try:
        _run_harvest(lm, todo, corpus, n_tokens, framing, content_len, drop_special_tokens,
                     device, on_progress)
    finally:
        for w in todo:
            w.flush()
    short = [w for w in todo if w.meta["n_tokens"] < n_tokens]
    if short:
        raise corpus_too_small(corpus, min(w.meta["n_tokens"] for w in short), n_tokens, drop_special_tokens)


def content_length(framing: Framing, info: dict, context_length: int) -> int:
    """Text tokens per chunk: context_length minus the model's special tokens."""
    content_len = context_length - len(framing.prefix) - len(framing.suffix)
    if context_length > info["n_ctx"] or content_len < 1:
        raise ConfigError(f"context_length {context_length} does not fit model '{info['name']}' "
                         f"(n_ctx {info['n_ctx']}, {len(framing.prefix) + len(framing.suffix)} special tokens)")
    return content_len


def kept_tokens(chunk: list[int], framing: Framing, drop_special: bool) -> int:
    """How many activation vectors `forward_chunks` keeps for a chunk, without running the model."""
    if not drop_special:
        return len(framing.prefix) + len(chunk) + len(framing.suffix)
    special_ids = set(framing.prefix) | set(framing.suffix)
    return sum(1 for t in chunk if t not in special_ids)


def _run_harvest(lm, writers: list[StoreWriter], corpus: str, n_tokens: int, framing: Framing,
                 content_len: int, drop_special: bool, device: str, on_progress: Progress | None) -> None:
    start = min(w.meta["chunks_consumed"] for w in writers)
    chunks = iter_chunks(corpus, framing.encode, content_len)
    for _ in range(start):
        if next(chunks, None) is None:
            break
    per_chunk = content_len if drop_special else content_len + len(framing.prefix) + len(framing.suffix)
    index = start
    report = on_progress or (lambda done, wanted: None)
    report(min(min(w.tokens for w in writers), n_tokens), n_tokens)
    while True:
        active = [w for w in writers if w.tokens < n_tokens]
        if not active:
            return
        behind = max(math.ceil((n_tokens - w.tokens) / per_chunk) + w.next_chunk - index for w in active)
        batch = _next_forward(chunks, min(FORWARD_CHUNKS, max(behind, 1)))
        if not batch:
            for w in active:
                w.mark_exhausted()
            return
        wanted = [w for w in active if w.next_chunk < index + len(batch)]
        names = {w.hook for w in wanted}
        acts = forward_chunks(lm, batch, names, framing, drop_special, device)  # hook -> per chunk [n_c, d]
        ids = chunk_token_ids(batch, framing, drop_special)  # per chunk [n_c]
        for w in wanted:
            first = w.next_chunk - index  # chunks before this one are already in its store
            w.add(np.concatenate(acts[w.hook][first:]), len(batch) - first, n_tokens,  # [n, d]
                  token_ids=np.concatenate(ids[first:]))  # [n]
        index += len(batch)
        report(min(min(w.tokens for w in writers), n_tokens), n_tokens)


def _stop_layer(hooks: set[str]) -> int | None:
    """Run only up to the deepest block the hooks need (all must be blocks.N.*)."""
    layers = [re.match(r"blocks\.(\d+)\.", h) for h in hooks]
    if not layers or not all(layers):
        return None
    return max(int(m.group(1)) for m in layers) + 1


def iter_chunks(corpus: str, encode: Callable[[str], list[int]], size: int) -> Iterator[list[int]]:
    """The packed token stream of the corpus cut into chunks of `size` tokens (last may be short)."""
    buf: list[int] = []
    for doc in iter_documents(corpus):
        buf.extend(encode(doc))
        n_full = len(buf) // size
        for i in range(n_full):
            yield buf[i * size:(i + 1) * size]
        buf = buf[n_full * size:]
    if buf:
        yield buf


def _next_forward(chunks: Iterator[list[int]], limit: int) -> list[list[int]]:
    """The next `limit` chunks (fewer at the end of the corpus, none once it is used up)."""
    return list(itertools.islice(chunks, limit))


def _keep_mask(ids: torch.Tensor, framing: Framing, drop_special: bool) -> torch.Tensor:
    """[b, L] bool: the positions of framed chunks ids [b, L] whose activations are kept."""
    keep = torch.ones_like(ids, dtype=torch.bool)  # [b, L]
    if drop_special:
        keep[:, :len(framing.prefix)] = False
        keep[:, ids.shape[1] - len(framing.suffix):] = False
        for sid in set(framing.prefix) | set(framing.suffix):
            keep &= ids != sid
    return keep


def chunk_token_ids(batch: list[list[int]], framing: Framing, drop_special: bool) -> list[np.ndarray]:
    """The token id of every activation row `forward_chunks` keeps, per chunk [n_kept] (the
    same mask, so row i of a chunk's activations is the token ids[i])."""
    out = []
    for c in batch:
        ids = torch.tensor([framing.prefix + tuple(c) + framing.suffix])  # [1, L]
        out.append(ids[_keep_mask(ids, framing, drop_special)].numpy().astype(np.int32))
    return out


def forward_chunks(lm, batch: list[list[int]], hooks: set[str], framing: Framing, drop_special: bool,
                   device: str) -> dict[str, list[np.ndarray]]:
    """Activations of `hooks` for each chunk: hook -> [per chunk: [n_kept, d] float32]."""
    out: dict[str, list[np.ndarray]] = {h: [] for h in hooks}
    # one forward per run of equal-length chunks (only the corpus's last chunk is shorter)
    for _, group in itertools.groupby(batch, key=len):
        ids = torch.tensor([framing.prefix + tuple(c) + framing.suffix for c in group],
                           device=device)  # [b, L]
        keep = _keep_mask(ids, framing, drop_special)  # [b, L]
        with torch.inference_mode():
            _, cache = lm.run_with_cache(ids, names_filter=lambda n: n in hooks,
                                         stop_at_layer=_stop_layer(hooks))
        for hook in hooks:
            if hook not in cache:
                raise HookError(f"hook '{hook}' did not fire in a forward pass "
                                "(pattern: blocks.N.hook_resid_pre)")
            acts = cache[hook].to(torch.float32)  # [b, L, d]
            out[hook] += [acts[i][keep[i]].cpu().numpy() for i in range(len(ids))]  # [n_kept, d]
    return out


def corpus_too_small(corpus: str, have: int, want: int, drop_special: bool) -> CorpusError:
    """The error for a corpus with fewer tokens than asked (the harvest's and the stream's)."""
    how = "after dropping special tokens" if drop_special else "including special tokens"
    return CorpusError(f"corpus '{corpus}' has only {have:,} tokens for this model {how}; asked for {want:,}")

