"""saefast runs written in other tools' formats, so their features can be looked at where
people already look: SAELens (`SAE.load_from_disk`, then Neuronpedia, SAEBench) and EleutherAI
sparsify (`Sae.load_from_disk`).

    export_run(run_dir, dest, fmt, *, hookpoint=None) -> Path     one run into dest
    export_runs(run_dirs, out, fmt, *, force=False) -> [Path]     one folder per run under out
    FORMATS = ("sae-lens", "sparsify")

SAELens v6 (`<dest>/`): cfg.json (architecture "topk", d_in, d_sae, k, dtype, device,
apply_b_dec_to_input true, normalize_activations "none", and `metadata`: what a Neuronpedia
upload or SAEBench run reads: model_name, hook_name, context_size, dataset_path, prepend_bos,
sae_lens_version), sae_weights.safetensors (W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in],
b_dec) and, where the run recorded firing rates, sparsity.safetensors (`sparsity`: log10 of each
feature's firing frequency, SAELens' feature-sparsity file).

sparsify (`<dest>/<hookpoint>/`): cfg.json (SparseCoderConfig: activation "topk", num_latents,
k, d_in, no skip connection, multi_topk off, normalize_decoder off so loading changes nothing)
and sae.safetensors (encoder.weight [F, d], encoder.bias, W_dec [F, d], b_dec). sparsify names
a hookpoint after the module whose OUTPUT it reads, so TransformerLens's
`blocks.N.hook_resid_pre` is the output of layer N - 1 (`<layers>.<N-1>`: `encoder.layer` in
BERT, `layers` in Llama-style models, `h` in GPT-2) and `blocks.N.hook_resid_post` is layer N's;
`blocks.0.hook_resid_pre` is BERT's `embeddings` output (elsewhere no one module outputs it, so
`hookpoint=` must say which).

All three formats encode alike, z = TopK(ReLU(W_enc (x - b_dec) + b_enc)), x_hat = z W_dec +
b_dec, so an exported SAE computes what the run does (tests/test_peers.py checks it with the
real packages). The weights are float32, as trained.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch

from saefast.errors import ConfigError, OutputError
from saefast.fsio import atomic_open, write_json_atomic
from saefast.runs.artifacts import LoadedSAE, load_sae, read_fire_rates
from saefast.runs.formats import SPARSIFY_CFG, SPARSIFY_WEIGHTS
from saefast.runs.reading import RUN, SAELENS_CFG, WEIGHTS

FORMATS = ("sae-lens", "sparsify")
SAELENS_SPARSITY = "sparsity.safetensors"
SAELENS_VERSION = "6.54.0"  # the cfg.json layout written here (`metadata.sae_lens_version`)

# what the built-in model names are on the Hugging Face hub (SAELens' metadata.model_name)
HUB_NAMES = {"minilm": "sentence-transformers/all-MiniLM-L6-v2",
             "gemma-270m": "google/gemma-3-270m"}
# the module list holding the transformer layers, per architecture (sparsify's hookpoints)
LAYER_MODULES = {"bert": "encoder.layer", "gpt2": "h", "gpt_neox": "layers", "llama": "layers",
                 "gemma": "layers", "gemma2": "layers", "gemma3": "layers",
                 "gemma3_text": "layers", "mistral": "layers", "qwen2": "layers",
                 "qwen3": "layers", "phi3": "layers"}
BUILTIN_ARCH = {"minilm": "bert", "gemma-270m": "gemma3_text"}
EMBEDDINGS_MODULE = {"bert": "embeddings"}  # outputs blocks.0.hook_resid_pre exactly

_RESID = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


def _need_encoder(sae: LoadedSAE) -> None:
    if sae.encoder is None or sae.b_enc is None or sae.b_dec is None or not sae.k:
        raise ConfigError(f"{sae.path}: no encoder, biases or k to export (a {sae.format} "
                          "checkpoint); export needs a whole Top-K SAE")


def _raw_model(info: dict) -> str | None:
    """The model as the run names it (a built-in name, a hub name or a folder)."""
    return ((info.get("model") or {}).get("name")
            or ((info.get("config") or {}).get("model") or {}).get("name"))


def _model_name(info: dict) -> str | None:
    """The model's hub name (SAELens' metadata.model_name)."""
    name = _raw_model(info)
    return HUB_NAMES.get(name, name) if name else None


def _hook(info: dict) -> str | None:
    return ((info.get("model") or {}).get("hook")
            or ((info.get("config") or {}).get("model") or {}).get("hook"))


def _architecture(model: str | None) -> str | None:
    """The model's `model_type` (transformers), for built-in names without network; None
    when it cannot be known offline."""
    if model in BUILTIN_ARCH:
        return BUILTIN_ARCH[model]
    if not model:
        return None
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(model, local_files_only=True).model_type
    except Exception:  # not cached, not a model folder, no transformers: unknown offline
        return None


def sparsify_hookpoint(model: str | None, hook: str | None) -> str:
    """sparsify's name for the activation TransformerLens calls `hook` in `model` (module
    docstring); ConfigError (one line) where there is no one module to name."""
    m = _RESID.match(hook or "")
    if m is None:
        raise ConfigError(f"export --format sparsify: hook {hook!r} is not a residual-stream "
                          "hook (blocks.N.hook_resid_pre/post); pass --hookpoint")
    arch = _architecture(model)
    layers = LAYER_MODULES.get(arch or "")
    if layers is None:
        raise ConfigError(f"export --format sparsify: the layer modules of model {model!r} "
                          f"(architecture {arch or 'unknown offline'}) are not known here; pass "
                          "--hookpoint (sparsify's module name)")
    n, where = int(m.group(1)), m.group(2)
    layer = n if where == "post" else n - 1
    if layer >= 0:
        return f"{layers}.{layer}"
    if arch in EMBEDDINGS_MODULE:
        return EMBEDDINGS_MODULE[arch]
    raise ConfigError(f"export --format sparsify: no module of {arch} outputs {hook} (its "
                      "embedding sum has no module of its own); pass --hookpoint")


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor],
                  metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save

    with atomic_open(path, "wb") as f:  # through fsio: atomic, and the umask's mode
        f.write(save({k: v.detach().float().contiguous() for k, v in tensors.items()},
                     metadata=metadata))


def _saelens(sae: LoadedSAE, dest: Path) -> None:
    info = sae.info or {}
    cfg_model = (info.get("config") or {}).get("model") or {}
    corpus = (info.get("corpus") or {}).get("name") or \
        ((info.get("config") or {}).get("data") or {}).get("corpus")
    F, d = sae.decoder.shape
    cfg = {
        "architecture": "topk", "d_in": int(d), "d_sae": int(F), "k": int(sae.k),
        "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
        "normalize_activations": "none", "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": SAELENS_VERSION,
            "sae_lens_training_version": None,
            "model_name": _model_name(info),
            "hook_name": _hook(info),
            "hook_head_index": None,
            "context_size": cfg_model.get("context_length"),
            "dataset_path": str(corpus).removeprefix("hf:") if corpus else None,
            # saefast drops special tokens ([CLS], [SEP], <bos>) from what it trains on
            "prepend_bos": not cfg_model.get("drop_special_tokens", False),
            "exclude_special_tokens": bool(cfg_model.get("drop_special_tokens", False)),
            "model_class_name": "HookedTransformer",
            "model_from_pretrained_kwargs": {},
            "trained_by": "saefast", "run_name": sae.name,
        },
    }
    _save_tensors(dest / WEIGHTS, {"W_enc": sae.encoder.T, "b_enc": sae.b_enc,
                                   "W_dec": sae.decoder, "b_dec": sae.b_dec})
    rates = read_fire_rates(sae)
    if rates is not None and not np.isnan(rates).any():
        log = torch.tensor(np.log10(np.maximum(rates, 1e-10)), dtype=torch.float32)
        _save_tensors(dest / SAELENS_SPARSITY, {"sparsity": log})
    write_json_atomic(dest / SAELENS_CFG, cfg)


def _sparsify(sae: LoadedSAE, dest: Path, hookpoint: str) -> Path:
    F, d = sae.decoder.shape
    folder = dest / hookpoint
    cfg = {"activation": "topk", "expansion_factor": max(1, math.ceil(F / d)),
           "normalize_decoder": False, "num_latents": int(F), "k": int(sae.k),
           "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": int(d)}
    _save_tensors(folder / SPARSIFY_WEIGHTS, {"encoder.weight": sae.encoder,
                                              "encoder.bias": sae.b_enc,
                                              "W_dec": sae.decoder, "b_dec": sae.b_dec})
    write_json_atomic(folder / SPARSIFY_CFG, cfg)
    return folder


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"export: unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def _prepared(run_dir: Path, fmt: str, hookpoint: str | None) -> tuple[LoadedSAE, str | None]:
    """(the run's SAE, its sparsify hookpoint or None for SAELens): everything an export
    checks before writing (it loads, has an encoder, a hookpoint is known)."""
    sae = load_sae(run_dir)
    _need_encoder(sae)
    if fmt == "sae-lens":
        return sae, None
    info = sae.info or {}
    return sae, hookpoint or sparsify_hookpoint(_raw_model(info), _hook(info))


def _write(sae: LoadedSAE, run_dir: Path, dest: Path, point: str | None) -> Path:
    if dest.resolve() == run_dir.resolve() or (dest / RUN).exists():
        raise OutputError(f"{dest}: is a run directory; export writes beside runs, never into "
                          f"one (SAELens' {WEIGHTS} would replace the run's)")
    dest.mkdir(parents=True, exist_ok=True)
    if point is None:
        _saelens(sae, dest)
        return dest
    return _sparsify(sae, dest, point)


def export_run(run_dir: str | Path, dest: str | Path, fmt: str, *,
               hookpoint: str | None = None) -> Path:
    """Write run_dir's SAE into the folder dest in format fmt; returns the folder that
    loads (dest for SAELens, dest/<hookpoint> for sparsify)."""
    _check_format(fmt)
    run_dir = Path(run_dir)
    sae, point = _prepared(run_dir, fmt, hookpoint)
    return _write(sae, run_dir, Path(dest), point)


def export_runs(run_dirs, out: str | Path, fmt: str, *, force: bool = False,
                hookpoint: str | None = None) -> list[Path]:
    """Export each run into out/<run name> (a sweep's names say model layer, size, k,
    tokens and seed); out must be empty or new unless force. Every run is checked (loads,
    has an encoder, a hookpoint is known) before anything is written."""
    out = Path(out)
    run_dirs = [Path(r) for r in run_dirs]
    if not run_dirs:
        raise ConfigError("export: no runs given")
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputError(f"{out}: not empty; pass --force to write into it")
    _check_format(fmt)
    names = [r.resolve().name for r in run_dirs]
    if len(set(names)) != len(names):
        raise ConfigError("export: two runs share a folder name; export them separately")
    ready = [_prepared(r, fmt, hookpoint) for r in run_dirs]  # all checked before any write
    return [_write(sae, r, out / n, point) for r, n, (sae, point) in zip(run_dirs, names, ready)]
