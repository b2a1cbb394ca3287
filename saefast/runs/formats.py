"""SAE checkpoints written by other tools, read into saefast's orientation (decoder rows are
features). `artifacts.load_sae` picks the reader from the files a folder holds.

- EleutherAI sparsify (`Sae.save_to_disk` / `SparseCoder.save_to_disk`): `cfg.json` (the
  config plus `d_in`; `num_latents`, or 0 for `d_in * expansion_factor`; `k`) and
  `sae.safetensors` with encoder.weight [F, d], encoder.bias [F], W_dec [F, d], b_dec [d]
  (W_skip [d, d] with a skip connection).
- saprmarks dictionary_learning (`trainSAE`): `ae.pt`, a torch state dict, and `config.json`
  beside it ({"trainer": {dict_class, activation_dim, dict_size, k, ...}, "buffer": ...}).
  AutoEncoderTopK / BatchTopKSAE: encoder.weight [F, d], encoder.bias [F], decoder.weight
  [d, F] (an nn.Linear(F, d): columns are features), b_dec [d], buffers k, threshold; the
  plain AutoEncoder: encoder.weight, encoder.bias, decoder.weight [d, F], bias [d];
  JumpReluAutoEncoder: W_enc [d, F], W_dec [F, d], b_enc, b_dec, threshold.

Each reader returns (decoder [F, d] float32, k or None, info dict, (encoder [F, d], b_enc [F],
b_dec [d]) or Nones) or raises one RunDirError line naming the file and what is wrong. The
encoder is given where the tool's encoding is saefast's, relu(W_enc (x - b_dec) + b_enc)
before the top-k (sparsify's SparseCoder.encode and dictionary_learning's autoencoders
subtract b_dec; a sparsify transcoder or group-max coder does not qualify). Orientation comes from the format's tensor names,
never from the shapes (F == d happens).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from saefast.errors import RunDirError, first_line
from saefast.runs.reading import need_tensor, read_json, read_tensors

SPARSIFY_WEIGHTS = "sae.safetensors"
SPARSIFY_CFG = "cfg.json"
DL_WEIGHTS = "ae.pt"
DL_CONFIG = "config.json"


Parts = tuple  # (encoder [F, d] | None, b_enc [F] | None, b_dec [d] | None)
NO_ENCODER: Parts = (None, None, None)


def read_sparsify(run_dir: Path) -> tuple[torch.Tensor, int | None, dict[str, Any], Parts]:
    """An EleutherAI sparsify checkpoint folder (cfg.json + sae.safetensors)."""

    cfg_path, weights = run_dir / SPARSIFY_CFG, run_dir / SPARSIFY_WEIGHTS
    if not cfg_path.is_file():
        raise RunDirError(f"{run_dir}: {SPARSIFY_WEIGHTS} without {SPARSIFY_CFG} "
                          "(an EleutherAI sparsify checkpoint has both)")
    cfg = read_json(cfg_path)
    if not isinstance(cfg, dict):
        raise RunDirError(f"{cfg_path}: expected a JSON object")
    tensors = read_tensors(weights)
    dec = need_tensor(tensors, "W_dec", weights)  # [F, d]
    d_in = _int_or_none(cfg.get("d_in"))
    n = _int_or_none(cfg.get("num_latents")) or 0
    if not n and d_in and _int_or_none(cfg.get("expansion_factor")):
        n = d_in * int(cfg["expansion_factor"])  # sparsify: num_latents 0 means this
    want = (n or None, d_in)
    if dec.ndim != 2 or any(w is not None and w != s for w, s in zip(want, dec.shape)):
        raise RunDirError(f"{weights}: W_dec is {list(dec.shape)}, but {SPARSIFY_CFG} says "
                          f"[num_latents, d_in] = [{want[0]}, {want[1]}]")
    _check_encoder(tensors.get("encoder.weight"), tuple(dec.shape), "encoder.weight", weights)
    same_encoding = not cfg.get("transcode") and cfg.get("activation", "topk") == "topk"
    parts = ((tensors.get("encoder.weight"), tensors.get("encoder.bias"), tensors.get("b_dec"))
             if same_encoding else NO_ENCODER)
    return dec.float(), _int_or_none(cfg.get("k")), cfg, parts


def read_dictionary_learning(run_dir: Path) -> tuple[torch.Tensor, int | None, dict[str, Any], Parts]:
    """A saprmarks dictionary_learning save folder (ae.pt, with config.json when present)."""

    weights = run_dir / DL_WEIGHTS
    state = _load_state_dict(weights)
    cfg_path = run_dir / DL_CONFIG
    config = read_json(cfg_path) if cfg_path.is_file() else {}
    trainer = config.get("trainer") if isinstance(config, dict) else None
    trainer = trainer if isinstance(trainer, dict) else {}
    if "decoder.weight" in state:  # nn.Linear(dict_size, activation_dim): [d, F]
        dec_t = _tensor(state, "decoder.weight", weights)
        if dec_t.ndim != 2:
            raise RunDirError(f"{weights}: decoder.weight must be 2-D, got {list(dec_t.shape)}")
        dec = dec_t.t()
        enc_name = "encoder.weight"
        enc = state.get(enc_name)
        b_enc = state.get("encoder.bias")
        b_dec = state.get("b_dec", state.get("bias"))  # TopK / BatchTopK: b_dec; AutoEncoder: bias
    elif "W_dec" in state:  # JumpReluAutoEncoder: W_dec [F, d], W_enc [d, F]
        dec = _tensor(state, "W_dec", weights)
        enc_name, enc = "W_enc", state.get("W_enc")
        enc = enc.t() if isinstance(enc, torch.Tensor) and enc.ndim == 2 else enc
        b_enc, b_dec = state.get("b_enc"), state.get("b_dec")
    else:
        keys = ", ".join(sorted(map(str, state))[:8])
        raise RunDirError(f"{weights}: no decoder.weight or W_dec in the state dict (has {keys}); "
                          "not a dictionary_learning autoencoder")
    if dec.ndim != 2:
        raise RunDirError(f"{weights}: the decoder must be 2-D, got {list(dec.shape)}")
    want = (_int_or_none(trainer.get("dict_size")), _int_or_none(trainer.get("activation_dim")))
    if any(w is not None and w != s for w, s in zip(want, dec.shape)):
        raise RunDirError(f"{weights}: the decoder holds {dec.shape[0]} features of dimension "
                          f"{dec.shape[1]}, but {DL_CONFIG} says dict_size={want[0]}, "
                          f"activation_dim={want[1]}")
    _check_encoder(enc, tuple(dec.shape), enc_name, weights)
    k = state.get("k")
    k = int(k.item()) if isinstance(k, torch.Tensor) and k.numel() == 1 else _int_or_none(trainer.get("k"))
    # not under "config": that key is run.json's (our RunConfig) wherever info is read
    info = {"dict_class": trainer.get("dict_class"), "trainer": trainer}
    parts = tuple(t if isinstance(t, torch.Tensor) else None for t in (enc, b_enc, b_dec))
    return dec.float().contiguous(), k, info, parts


# ---------------------------------------------------------------------------- helpers


def _load_state_dict(path: Path) -> dict:
    """torch.load with weights_only=True (no code runs); any failure is one RunDirError line."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip, pickle, EOF, refused globals: all mean "not a state dict"
        raise RunDirError(f"{path}: corrupt or not a torch state dict ({first_line(err)})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise RunDirError(f"{path}: expected a state dict (names -> tensors), got {type(state).__name__}")
    return state


def _tensor(state: dict, key: str, path: Path) -> torch.Tensor:
    value = state[key]
    if not isinstance(value, torch.Tensor):
        raise RunDirError(f"{path}: {key} is a {type(value).__name__}, not a tensor")
    return value


def _check_encoder(enc, dec_shape: tuple, name: str, path: Path) -> None:
    """The encoder, rows-are-features, must have the decoder's shape [F, d]."""
    if isinstance(enc, torch.Tensor) and tuple(enc.shape) != dec_shape:
        raise RunDirError(f"{path}: {name} is {list(enc.shape)} as [features, d], but the "
                          f"decoder is {list(dec_shape)}")


def _int_or_none(value) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
