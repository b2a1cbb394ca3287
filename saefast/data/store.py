"""The on-disk activation store: its layout, its key, its writer and both of its readers.

This module is the one owner of the store format; `harvest` fills stores through
`StoreWriter`, training reads them through `load_activations` (into memory) or `StoreSource`
(memory-mapped), and both readers check the shards through `open_shards` before reading any
data, so a corrupt store is a `StoreError` naming the file, never a numpy error mid-training.

Cache layout (root: ``cache_dir`` argument, else ``$SAEFAST_CACHE_DIR``, else
``platformdirs.user_cache_dir("saefast")``; see `models.cache_root`)::

    <root>/activations/<model>__<hook>__<corpus>__ctx<L>__<hash12>/   (this module)
        meta.json            key fields, d_model, n_tokens, chunks_consumed, exhausted, shards,
                             layout (2; absent in stores written before token ids: 1)
        shard-00000.npy      [n_i, d] float32, append-only
        tokens-00000.npy     [n_i] int32 token id of each row of shard-00000 (layout 2)
        moments-n<rows>-<hash8>.npz   cached ActivationMoments of the first <rows> rows
                             (`training_moments`), keyed by the shards they cover;
        moments-r<a>-<b>-<hash8>.npz  the same of rows [a, b) (`range_moments`: the shared
                             held-out block the nulls of every budget draw from)
    <root>/models/gemma-270m-<sha16>/   de-quantized Gemma weights (saefast.data.models)
    <root>/weights-hashes.json          memoised file hashes by path, size, mtime (models)

The store key (hashed into the folder name) is: model name + weights hash, hook, corpus +
content fingerprint, context length, chunking scheme, dtype and drop_special_tokens. The
token budget is not in it: a smaller budget reads a prefix of a bigger store, and a bigger
budget extends a store from the chunk where it stopped.

Every file is written atomically (`saefast.fsio`): a shard (and its token ids) first, then
meta.json, so a killed writer leaves a store that is valid up to its last shard. One process
writes a store at a time (`write_lock`, in `store_lock`: flock on `.write.lock` in the store);
another sweep harvesting the same store waits, then finds what the first wrote and harvests
only the rest; a harvest that fails before its first shard leaves no folder.

Layout 2 adds the token ids (what the activation-sampled null needs: distinct tokens) as a
shard kind beside the activation shards; a shard's meta entry names its ids file. A store
written before (layout 1) still loads and trains; it just has no token ids, and a layout-1
store resumed by a newer harvest gets ids for its new shards only (`load_token_ids` of a
prefix that an old shard covers is None). The layout is not in the store key, so existing
caches are found again. This module does not
import transformer_lens.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from saefast.data.corpora import BUILTIN_CORPORA, corpus_fingerprint
from saefast.data.models import cache_root, model_weights_hash
from saefast.data.store_lock import WRITE_LOCK, write_lock  # noqa: F401  (part of this API)
from saefast.data.windows import TokenSource
from saefast.errors import StoreError, first_line
from saefast.fsio import atomic_open, read_json, write_json_atomic

FORMAT_VERSION = 1  # in the store key (the folder name): changing it would orphan every cache
LAYOUT_VERSION = 2  # meta.json "layout": 2 = token-id shards beside the activation shards
CHUNKING = "packed-v1"  # the chunking scheme of saefast.data.harvest.iter_chunks
DTYPE = "float32"
SHARD_TOKENS = 65_536  # a shard is written once this many tokens are pending (and at the end)
META = "meta.json"

__all__ = ["store_key", "store_dir", "StoreWriter", "store_info", "open_shards",
           "load_activations", "StoreSource", "write_lock", "load_token_ids", "gather_rows", "rows_key",
           "training_moments", "range_moments"]


# ---------------------------------------------------------------------------- where a store lives


def store_key(model: str, hook: str, corpus: str, *, context_length: int = 128,
              drop_special_tokens: bool = True, cache_dir: str | os.PathLike | None = None) -> dict:
    """Every field that decides what a store holds (all but the token budget)."""
    corpus_id = corpus if corpus in BUILTIN_CORPORA or corpus.startswith("hf:") else str(Path(corpus).resolve())
    return {
        "format_version": FORMAT_VERSION,
        "model": model,
        "weights_hash": model_weights_hash(model, cache_dir),
        "hook": hook,
        "corpus": corpus_id,
        "corpus_fingerprint": corpus_fingerprint(corpus),
        "context_length": int(context_length),
        "chunking": CHUNKING,
        "dtype": DTYPE,
        "drop_special_tokens": bool(drop_special_tokens),
    }


def store_dir(key: dict, cache_dir: str | os.PathLike | None = None) -> Path:
    """<root>/activations/<readable slug>__<hash12> for a store key."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    corpus = Path(key["corpus"]).name if not key["corpus"].startswith("hf:") else key["corpus"]
    special = "" if key["drop_special_tokens"] else "-keepspecial"
    slug = f"{key['model']}__{key['hook']}__{corpus}__ctx{key['context_length']}{special}"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", slug)[:120]
    return cache_root(cache_dir) / "activations" / f"{slug}__{digest}"


# ---------------------------------------------------------------------------- writing

@dataclass
class StoreWriter:
    """One hook's store: meta.json + append-only shards; pending rows wait for a full shard."""

    hook: str
    path: Path
    meta: dict
    pending: list = field(default_factory=list)
    pending_ids: list = field(default_factory=list)
    pending_tokens: int = 0
    pending_chunks: int = 0
    meta_changed: bool = False

    @classmethod
    def open(cls, path: Path, key: dict) -> "StoreWriter":
        """The store at `path` (resumed where it stopped), or a new empty one for `key`."""
        if (path / META).exists():
            meta = store_info(path)
        else:
            meta = {**key, "d_model": None, "n_tokens": 0, "chunks_consumed": 0,
                    "exhausted": False, "shards": [], "layout": LAYOUT_VERSION}
        return cls(key["hook"], path, meta)

    @property
    def tokens(self) -> int:
        return self.meta["n_tokens"] + self.pending_tokens

    @property
    def next_chunk(self) -> int:
        return self.meta["chunks_consumed"] + self.pending_chunks

    def add(self, rows: np.ndarray, n_chunks: int, n_tokens: int,
            token_ids: np.ndarray | None = None) -> None:
        """Append `rows` [n, d], the kept tokens of the next `n_chunks` chunks, with their
        token ids [n] (None: the shard gets no ids file); a shard is written once
        SHARD_TOKENS are pending or the store reaches `n_tokens`."""
        if token_ids is not None and len(token_ids) != len(rows):
            raise ValueError(f"{len(token_ids)} token ids for {len(rows)} rows")  # a bug
        self.pending.append(rows)
        self.pending_ids.append(token_ids)
        self.pending_tokens += len(rows)
        self.pending_chunks += n_chunks
        if self.pending_tokens >= SHARD_TOKENS or self.tokens >= n_tokens:
            self.flush()

    def mark_exhausted(self) -> None:
        self.meta["exhausted"] = True
        self.meta_changed = True

    def flush(self) -> None:
        """Write pending rows as the next shard, then meta.json (both atomically)."""
        if not self.pending_chunks and not self.meta_changed:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        if self.pending_chunks:
            rows = np.concatenate(self.pending).astype(np.float32, copy=False)  # [n, d]
            name = f"shard-{len(self.meta['shards']):05d}.npy"
            entry = {"file": name, "n_tokens": int(len(rows))}
            if all(ids is not None for ids in self.pending_ids):
                entry["token_ids"] = f"tokens-{len(self.meta['shards']):05d}.npy"
                with atomic_open(self.path / entry["token_ids"], "wb") as f:
                    np.save(f, np.concatenate(self.pending_ids).astype(np.int32))  # [n]
            with atomic_open(self.path / name, "wb") as f:
                np.save(f, rows)
            self.meta["d_model"] = int(rows.shape[1])
            self.meta["shards"].append(entry)
            self.meta["n_tokens"] += int(len(rows))
            self.meta["chunks_consumed"] += self.pending_chunks
        self.pending, self.pending_ids, self.pending_tokens, self.pending_chunks = [], [], 0, 0
        self.meta_changed = False
        write_json_atomic(self.path / META, self.meta, indent=1, sort_keys=True, newline=False)  # bytes as before


# ---------------------------------------------------------------------------- reading


def store_info(store: str | os.PathLike) -> dict:
    """The store's meta.json (key fields, d_model, n_tokens, chunks_consumed, exhausted, shards)."""
    path = Path(store) / META
    if not path.exists():
        raise StoreError(f"activation store '{store}' not found (no meta.json): run harvest first")
    try:
        meta = read_json(path)
    except (OSError, ValueError):
        meta = None
    if not _valid_meta(meta):
        raise StoreError(f"activation store '{store}' is corrupt (bad meta.json): delete the folder and harvest again")
    return meta


def _valid_meta(meta) -> bool:
    required = {"n_tokens", "d_model", "shards", "chunks_consumed", "exhausted"}
    if not isinstance(meta, dict) or not required <= set(meta) or not isinstance(meta["shards"], list):
        return False
    shards = meta["shards"]
    if not all(isinstance(s, dict) and isinstance(s.get("file"), str) and isinstance(s.get("n_tokens"), int)
               for s in shards):
        return False
    return sum(s["n_tokens"] for s in shards) == meta["n_tokens"] and (meta["d_model"] is not None or not shards)


def open_shards(store: str | os.PathLike, meta: dict | None = None) -> list[np.ndarray]:
    """Every shard of the store memory-mapped ([n_i, d] float32 each), checked against
    meta.json: present, a readable .npy header, dtype float32, shape (n_i, d_model), and the
    file as long as that shape needs. Only headers are read; StoreError names the bad file.
    The one check both readers use."""
    meta = store_info(store) if meta is None else meta
    out = []
    for shard in meta["shards"]:
        path = Path(store) / shard["file"]
        try:
            rows = np.load(path, mmap_mode="r")  # [n_i, d]; a short file fails here (mmap length)
        except (OSError, ValueError, EOFError) as err:
            raise StoreError(f"activation store '{store}' is corrupt ({shard['file']}: {first_line(err)}): "
                             "delete the folder and harvest again") from None
        want = (shard["n_tokens"], meta["d_model"])
        if rows.shape != want or rows.dtype != np.float32:
            raise StoreError(f"activation store '{store}' is corrupt ({shard['file']} has shape "
                             f"{tuple(rows.shape)} {rows.dtype}, meta.json says {want} float32): "
                             "delete the folder and harvest again")
        out.append(rows)
    return out


def _check_size(store, have: int, want: int) -> None:
    if want > have:
        raise StoreError(f"activation store '{store}' has {have:,} tokens; asked for {want:,}")


def load_activations(store: str | os.PathLike, n_tokens: int | None = None) -> torch.Tensor:
    """The store's first n_tokens activations (all when None) as one [n_tokens, d] float32 tensor."""
    meta = store_info(store)
    have = meta["n_tokens"]
    n = have if n_tokens is None else int(n_tokens)
    _check_size(store, have, n)
    shards = open_shards(store, meta)
    out = torch.empty(n, meta["d_model"] or 0, dtype=torch.float32)  # [n, d]
    filled = 0
    for rows in shards:
        if filled >= n:
            break
        take = min(len(rows), n - filled)
        out[filled:filled + take].numpy()[...] = rows[:take]  # one copy, straight from the mmap
        filled += take
    return out


class StoreSource(TokenSource):
    """Tokens [start, end) of an activation store's .npy shards, memory-mapped: only the
    window being trained on is in memory. The shards are checked when the source is opened."""

    def __init__(self, store: str | os.PathLike, start: int, end: int):
        meta = store_info(store)
        _check_size(store, meta["n_tokens"], end)
        if not 0 <= start <= end:
            raise ValueError(f"bad token range [{start}, {end})")
        self.shards = open_shards(store, meta)
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])  # [n_shards + 1]
        self.start, self.n_tokens, self.d = start, end - start, int(meta["d_model"] or 0)

    def read(self, start: int, end: int) -> torch.Tensor:
        a, b = self.start + start, self.start + end
        parts = []
        first = int(np.searchsorted(self.offsets, a, side="right")) - 1
        for i in range(first, len(self.shards)):
            lo, hi = self.offsets[i], self.offsets[i + 1]
            if lo >= b:
                break
            parts.append(self.shards[i][max(a, lo) - lo: min(b, hi) - lo])
        return torch.from_numpy(np.concatenate(parts).astype(np.float32, copy=False))

    def slice(self, start: int, end: int) -> "StoreSource":
        out = object.__new__(StoreSource)
        out.shards, out.offsets, out.d = self.shards, self.offsets, self.d
        out.start, out.n_tokens = self.start + start, end - start
        return out


# ---------------------------------------------------------------------------- what the nulls read


def load_token_ids(store: str | os.PathLike, n_rows: int) -> np.ndarray | None:
    """[n_rows] int64 token ids of the store's first n_rows rows, or None when a shard they
    cover has no ids file (a store written before layout 2). StoreError for a bad ids file."""
    meta = store_info(store)
    _check_size(store, meta["n_tokens"], n_rows)
    out, filled = [], 0
    for shard in meta["shards"]:
        if filled >= n_rows:
            break
        if "token_ids" not in shard:
            return None
        path = Path(store) / shard["token_ids"]
        try:
            ids = np.load(path, mmap_mode="r")  # [n_i]
        except (OSError, ValueError, EOFError) as err:
            raise StoreError(f"activation store '{store}' is corrupt ({shard['token_ids']}: "
                             f"{first_line(err)}): delete the folder and harvest again") from None
        if ids.shape != (shard["n_tokens"],) or not np.issubdtype(ids.dtype, np.integer):
            raise StoreError(f"activation store '{store}' is corrupt ({shard['token_ids']} has "
                             f"shape {tuple(ids.shape)} {ids.dtype}, meta.json says "
                             f"({shard['n_tokens']},) integer): delete the folder and harvest again")
        take = min(len(ids), n_rows - filled)
        out.append(np.asarray(ids[:take], dtype=np.int64))
        filled += take
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def gather_rows(store: str | os.PathLike, rows: np.ndarray) -> np.ndarray:
    """[len(rows), d] float32 activation rows at the given store positions (any order),
    read from the memory-mapped shards (only those rows are copied)."""
    meta = store_info(store)
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= meta["n_tokens"]):
        raise StoreError(f"activation store '{store}' has {meta['n_tokens']:,} tokens; asked "
                         f"for row {int(rows.max()):,}")
    shards = open_shards(store, meta)
    offsets = np.cumsum([0] + [len(s) for s in shards])  # [n_shards + 1]
    out = np.empty((rows.size, meta["d_model"] or 0), dtype=np.float32)
    which = np.searchsorted(offsets, rows, side="right") - 1  # [n] shard of each row
    for i in np.unique(which):
        sel = np.flatnonzero(which == i)
        out[sel] = shards[i][rows[sel] - offsets[i]]
    return out


def rows_key(store: str | os.PathLike, n_rows: int) -> str:
    """12 hex digits naming the first n_rows rows of a store: the store folder and each shard
    they cover (name, length, file size, mtime). Shards are append-only, so a longer harvest
    keeps the key of a prefix, and a store harvested again from scratch gets a new one."""
    meta = store_info(store)
    _check_size(store, meta["n_tokens"], n_rows)
    h = hashlib.sha256(f"{Path(store).resolve()}:{int(n_rows)};".encode())
    covered = 0
    for shard in meta["shards"]:
        if covered >= n_rows:
            break
        try:
            st = (Path(store) / shard["file"]).stat()
        except OSError:
            raise StoreError(f"activation store '{store}' is corrupt ({shard['file']} is "
                             "missing): delete the folder and harvest again") from None
        h.update(f"{shard['file']}:{shard['n_tokens']}:{st.st_size}:{st.st_mtime_ns};".encode())
        covered += shard["n_tokens"]
    return h.hexdigest()[:12]


def training_moments(store: str | os.PathLike, n_rows: int):
    """`moments.ActivationMoments` (float64 mean and centred covariance) of the store's first
    n_rows rows (a run's training tokens): `range_moments(store, 0, n_rows)`."""
    return range_moments(store, 0, n_rows)


def range_moments(store: str | os.PathLike, start: int, end: int):
    """`moments.ActivationMoments` of the store's rows [start, end), computed once and cached
    beside the store as moments-n<end>-<rows_key[:8]>.npz for a prefix (start 0), else
    moments-r<start>-<end>-<rows_key[:8]>.npz (atomic write; rows_key of the first `end`
    rows names the shards they lie in). A cache file that cannot be read is recomputed."""
    from saefast.data.moments import ActivationMoments

    start, end = int(start), int(end)
    name = f"n{end}" if start == 0 else f"r{start}-{end}"
    path = Path(store) / f"moments-{name}-{rows_key(store, end)[:8]}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return ActivationMoments.from_dict(
                    {"format": str(z["format"]), "n": int(z["n"]), "d": int(z["d"]),
                     "mean": z["mean"], "m2": z["m2"]})
        except Exception:  # torn or foreign file: recompute and replace it
            pass
    moments = ActivationMoments()
    source = StoreSource(store, start, end)
    for a in range(0, source.n_tokens, SHARD_TOKENS):
        moments.update(source.read(a, min(a + SHARD_TOKENS, source.n_tokens)).numpy())
    rec = moments.to_dict(arrays=True)
    with atomic_open(path, "wb") as f:
        np.savez(f, format=np.array(rec["format"]), n=np.array(rec["n"]),
                 d=np.array(rec["d"] or 0), mean=rec["mean"], m2=rec["m2"])
    return moments
