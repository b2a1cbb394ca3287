"""Run directories on disk: write ours atomically, read ours, the original study's and SAELens'.

Layout of a run directory (ours and the original study's share the first three files):

    sae_weights.safetensors       encoder.weight [F, d], encoder.bias [F],
                                  decoder.weight [d, F]  (columns are features), decoder.bias [d]
    sae_weights.safetensors.json  {"input_dim": d, "n_features": F, "k": k, ...}
    feature_analysis.json         {"features": [{"feature_index", "dead", "fire_count", ...}]}
    run.json                      ours only: config, model, hook, corpus, tokens, metrics, timings
                                  (the schema is `run_record` below)

SAELens checkpoints (`cfg.json` + `sae_weights.safetensors` with `W_dec` [F, d]) are read too,
and other tools' checkpoints through `saefast.runs.formats` (EleutherAI sparsify: `sae.safetensors`
+ `cfg.json`; dictionary_learning: `ae.pt` + `config.json`), chosen by the files present.
Orientation always comes from the format, never from the shapes (F == d happens).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saefast.errors import RunDirError
from saefast.fsio import atomic_dir, dump_json
from saefast.runs import formats
from saefast.runs.reading import (  # the file names are re-exported: callers import them here
    FEATURES,
    RUN,
    SAELENS_CFG,
    WEIGHTS,
    WEIGHTS_META,
    need_tensor,
    read_json,
    read_run_json,
    read_tensors,
)

# ---------------------------------------------------------------------------- writing


def run_record(*, name: str, group: str, config: dict[str, Any], model: dict[str, Any],
               corpus: dict[str, Any], tokens: dict[str, int], metrics: dict[str, Any],
               history: list, activation_store: str, timings: dict[str, Any],
               null_data: str | None = None) -> dict[str, Any]:
    """run.json: everything that made a run and what it measured. Keys are only ever added.

    config: RunConfig.to_dict(); model: {name, hook, weights_hash, d_model}; corpus: {name,
    fingerprint}; tokens: {harvested, train, held_out, seen}; metrics and history: from
    training; timings: {train_seconds, total_seconds, seeds_trained_together, peak_memory_bytes
    (the training process's, `peak_memory_bytes`)}; null_data: a
    streamed run's saved training-row moments and token pool (`data.stream_nulls`), or None.
    machine: what trained it (`machine(device)`), since its timings depend on it."""
    from saefast import __version__

    return {
        "name": name,
        "group": group,
        "config": config,
        "seed": config["train"]["seed"],
        "model": model,
        "corpus": corpus,
        "tokens": tokens,
        "metrics": metrics,
        "history": history,
        "encoder_input": "x - decoder.bias",
        "activation_store": activation_store,
        "null_data": null_data,
        "timings": timings,
        "versions": {"saefast": __version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "machine": machine((config.get("model") or {}).get("device", "cpu")),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def machine(device: str) -> dict[str, Any]:
    """The machine as run.json records it: OS, CPU architecture and count, and the GPU's name
    on CUDA (no host name: reports are shared)."""
    out: dict[str, Any] = {"platform": platform.platform(terse=True),
                           "cpu": platform.machine(), "cpus": os.cpu_count()}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


def peak_memory_bytes() -> int:
    """The largest resident memory this process or any of its finished children (seed and
    report workers) reached so far (Linux and macOS `getrusage`; 0 where it is missing): a
    sweep's summary.json `memory.peak_bytes`, a run.json's `timings.peak_memory_bytes`."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return scale * max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                       resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def write_run_dir(
    run_dir: Path,
    *,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    W_dec: torch.Tensor,
    b_dec: torch.Tensor,
    k: int,
    features: list[dict[str, Any]],
    run_info: dict[str, Any],
    weights_meta: dict[str, Any] | None = None,
) -> Path:
    """Write a complete run directory atomically: all files land in a temp sibling that is
    renamed into place, so `run_dir` either holds a whole run or does not exist.

    Shapes: W_enc [F, d], b_enc [F], W_dec [F, d] (rows are features; stored transposed as
    the original format's `decoder.weight` [d, F]), b_dec [d].
    """
    from safetensors.torch import save

    run_dir = Path(run_dir)
    F, d = W_enc.shape
    if W_dec.shape != (F, d) or b_enc.shape != (F,) or b_dec.shape != (d,):
        raise ValueError(  # a caller's bug, not user input
            f"inconsistent SAE shapes: W_enc {tuple(W_enc.shape)}, b_enc {tuple(b_enc.shape)}, "
            f"W_dec {tuple(W_dec.shape)}, b_dec {tuple(b_dec.shape)}")
    # a stale, incomplete dir (no run.json) from a killed run is replaced
    with atomic_dir(run_dir) as tmp:
        tensors = {
            "encoder.weight": W_enc.detach().float().contiguous().cpu(),
            "encoder.bias": b_enc.detach().float().contiguous().cpu(),
            "decoder.weight": W_dec.detach().float().t().contiguous().cpu(),  # [d, F]
            "decoder.bias": b_dec.detach().float().contiguous().cpu(),
        }
        # bytes, then our own write: safetensors' save_file creates files 0600
        (tmp / WEIGHTS).write_bytes(save(tensors, metadata={"format": "saefast"}))
        meta = {"input_dim": d, "n_features": F, "k": k,
                "decoder_layout": "decoder.weight is [input_dim, n_features]"}
        meta.update(weights_meta or {})
        # plain writes: atomic_dir syncs the folder's files and renames it whole
        for name, obj in ((WEIGHTS_META, meta), (FEATURES, {"n_features": F, "features": features}),
                          (RUN, run_info)):
            with open(tmp / name, "w") as f:
                dump_json(f, obj)
    return run_dir


def is_complete_run(run_dir: Path) -> bool:
    """A run directory counts as finished when its run.json and weights are present."""
    run_dir = Path(run_dir)
    return (run_dir / RUN).is_file() and (run_dir / WEIGHTS).is_file()


# ---------------------------------------------------------------------------- reading


@dataclass
class LoadedSAE:
    """What the stability analysis needs from a run directory, in one orientation."""

    path: Path
    name: str
    decoder: torch.Tensor  # [F, d], rows are features (not normalised)
    k: int | None
    format: str  # "saefast", "original", "saelens", "sparsify" or "dictionary_learning"
    dead: torch.Tensor | None  # [F] bool, from feature_analysis.json when present
    info: dict[str, Any]  # run.json (ours), cfg.json (SAELens, sparsify), dictionary_learning's config, else {}
    # the encoder, for encoder matching and codes (None where a format has none): W_enc
    # [F, d] rows are features, b_enc [F], b_dec [d] (z = TopK(relu(W_enc (x - b_dec) + b_enc)))
    encoder: torch.Tensor | None = None
    b_enc: torch.Tensor | None = None
    b_dec: torch.Tensor | None = None

    @classmethod
    def in_memory(cls, encoder: torch.Tensor, decoder: torch.Tensor, k: int, *,
                  b_enc: torch.Tensor | None = None, b_dec: torch.Tensor | None = None,
                  name: str = "in-memory") -> "LoadedSAE":
        """An SAE given by its weights (W_enc, W_dec [F, d], rows are features; zero biases by
        default), for the equivalence and ablation functions without a run directory."""
        encoder, decoder = encoder.float(), decoder.float()
        F, d = decoder.shape
        return cls(path=Path(name), name=name, decoder=decoder, k=int(k), format="in-memory",
                   dead=None, info={}, encoder=encoder,
                   b_enc=torch.zeros(F) if b_enc is None else b_enc.float(),
                   b_dec=torch.zeros(d) if b_dec is None else b_dec.float())

    @property
    def n_features(self) -> int:
        return self.decoder.shape[0]

    @property
    def live_indices(self) -> torch.Tensor:
        if self.dead is None:
            raise RunDirError(
                f"{self.path}: no {FEATURES}, so live features are unknown (needed for live-only)")
        return torch.nonzero(~self.dead, as_tuple=False).flatten()


EXPECTED = (f"{WEIGHTS} (saefast, the original study's; SAELens with {SAELENS_CFG}), "
            f"{formats.SPARSIFY_WEIGHTS} + {formats.SPARSIFY_CFG} (EleutherAI sparsify) or "
            f"{formats.DL_WEIGHTS} (+ {formats.DL_CONFIG}, dictionary_learning)")


def load_sae(run_dir: str | Path) -> LoadedSAE:
    """Read a run directory in any supported format, chosen by the files it holds; errors
    name the file and what is wrong."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: not a directory")
    weights = run_dir / WEIGHTS
    if not weights.is_file():
        for name, reader, fmt in ((formats.SPARSIFY_WEIGHTS, formats.read_sparsify, "sparsify"),
                                  (formats.DL_WEIGHTS, formats.read_dictionary_learning,
                                   "dictionary_learning")):
            if (run_dir / name).is_file():
                dec, k, info, (enc, b_enc, b_dec) = reader(run_dir)
                return _loaded(run_dir, dec, k, fmt, info, run_dir / name, enc, b_enc, b_dec)
        ours = any((run_dir / f).is_file() for f in (WEIGHTS_META, FEATURES, RUN))
        raise RunDirError(f"{run_dir}: missing {WEIGHTS}" if ours else
                          f"{run_dir}: missing {WEIGHTS} and no other SAE checkpoint; expected {EXPECTED}")
    tensors = read_tensors(weights)
    if (run_dir / SAELENS_CFG).is_file() and "W_dec" in tensors:
        cfg = read_json(run_dir / SAELENS_CFG)
        dec = need_tensor(tensors, "W_dec", weights).float()  # SAELens: [F, d]
        d_in, d_sae = cfg.get("d_in"), cfg.get("d_sae")
        if dec.ndim != 2 or (d_sae is not None and d_in is not None
                             and tuple(dec.shape) != (d_sae, d_in)):
            raise RunDirError(
                f"{weights}: W_dec is {list(dec.shape)} but cfg.json says d_sae={d_sae}, d_in={d_in}")
        k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
        fmt, info = "saelens", cfg
        enc = tensors.get("W_enc")  # SAELens: [d, F]
        enc = None if enc is None or tuple(enc.shape) != tuple(dec.shape[::-1]) else enc.t()
        b_enc, b_dec = tensors.get("b_enc"), tensors.get("b_dec")
    else:
        dec_t = need_tensor(tensors, "decoder.weight", weights).float()  # [d, F]
        if dec_t.ndim != 2:
            raise RunDirError(f"{weights}: decoder.weight must be 2-D, got {list(dec_t.shape)}")
        meta = read_json(run_dir / WEIGHTS_META) if (run_dir / WEIGHTS_META).is_file() else {}
        d, F = dec_t.shape
        want = (meta.get("input_dim", d), meta.get("n_features", F))
        if (d, F) != want:
            raise RunDirError(
                f"{weights}: decoder.weight is {[d, F]} but {WEIGHTS_META} says "
                f"input_dim={want[0]}, n_features={want[1]}")
        enc = tensors.get("encoder.weight")
        if enc is not None and tuple(enc.shape) != (F, d):
            raise RunDirError(
                f"{weights}: encoder.weight is {list(enc.shape)}, expected {[F, d]} "
                f"to match decoder.weight {[d, F]}")
        dec = dec_t.t().contiguous()
        b_enc, b_dec = tensors.get("encoder.bias"), tensors.get("decoder.bias")
        k = meta.get("k")
        fmt = "saefast" if (run_dir / RUN).is_file() else "original"
        info = read_run_json(run_dir) if fmt == "saefast" else {}
    return _loaded(run_dir, dec, k, fmt, info, weights, enc, b_enc, b_dec)


def _loaded(run_dir: Path, dec: torch.Tensor, k, fmt: str, info: dict, weights: Path,
            enc, b_enc, b_dec) -> LoadedSAE:
    if not torch.isfinite(dec).all():
        raise RunDirError(f"{weights}: decoder contains NaN or infinite values")
    dead = _read_dead(run_dir, dec.shape[0])
    name = info.get("name") if isinstance(info.get("name"), str) else run_dir.name
    encoder = _encoder(enc, b_enc, b_dec, dec.shape)
    return LoadedSAE(path=run_dir, name=name, decoder=dec, k=k, format=fmt, dead=dead, info=info,
                     **encoder)


def _encoder(enc, b_enc, b_dec, shape) -> dict[str, torch.Tensor | None]:
    """The encoder fields of a LoadedSAE: all three when they are there, finite and of the
    decoder's shape (F, d), else none (the analyses that need them say they are missing)."""
    F, d = shape
    parts = (enc, b_enc, b_dec)
    if any(p is None for p in parts) or tuple(enc.shape) != (F, d) or tuple(b_enc.shape) != (F,) \
            or tuple(b_dec.shape) != (d,) or not all(torch.isfinite(p).all() for p in parts):
        return {"encoder": None, "b_enc": None, "b_dec": None}
    return {"encoder": enc.float().contiguous(), "b_enc": b_enc.float().contiguous(),
            "b_dec": b_dec.float().contiguous()}


def _read_dead(run_dir: Path, n_features: int) -> torch.Tensor | None:
    path = run_dir / FEATURES
    if not path.is_file():
        return None
    feats = read_json(path).get("features")
    if not isinstance(feats, list):
        raise RunDirError(f"{path}: expected a 'features' list")
    dead = torch.zeros(n_features, dtype=torch.bool)
    for entry in feats:
        try:
            i = int(entry["feature_index"])
            flag = bool(entry["dead"])
        except (KeyError, TypeError, ValueError):
            raise RunDirError(f"{path}: each feature needs 'feature_index' and 'dead'") from None
        if not 0 <= i < n_features:
            raise RunDirError(f"{path}: feature_index {i} out of range for {n_features} features")
        dead[i] = flag
    return dead


def _looks_like_run(path: Path) -> bool:
    return any((path / f).is_file() for f in (WEIGHTS, WEIGHTS_META, FEATURES, RUN, SAELENS_CFG,
                                              formats.SPARSIFY_WEIGHTS, formats.DL_WEIGHTS))


def find_run_dirs(paths: list[str | Path], *, one_group: bool = True) -> list[Path]:
    """What `analyze` was given, as run dirs: a folder of run dirs (a sweep's `runs/`, or
    its `--out`) stands for the runs in it. A run inside it that lacks its weights is an
    error, not skipped; runs of a sweep that belong to different seed groups (other layers,
    sizes, budgets: their seeds share initial weights, so matching them across groups
    inflates stability) are refused. (The same run given twice is refused where runs are
    loaded, report.inputs.load_runs.) one_group=False: a sweep's runs of every group (export)."""
    out: list[Path] = []
    for given in map(Path, paths):
        if not given.exists():
            raise RunDirError(f"{given}: no such directory")
        if not given.is_dir():
            raise RunDirError(f"{given}: not a directory")
        if _looks_like_run(given):
            out.append(given)  # load_sae says what is missing
            continue
        inner = given / "runs" if (given / "runs").is_dir() else given
        found = sorted(p for p in inner.iterdir()
                       if p.is_dir() and not p.name.startswith(".") and _looks_like_run(p))
        if not found:
            raise RunDirError(f"{given}: missing {WEIGHTS} (and no run dirs inside); expected {EXPECTED}")
        for p in found:
            if not (p / WEIGHTS).is_file():
                raise RunDirError(f"{p}: missing {WEIGHTS}")
        groups = sorted({read_run_json(p, missing_ok=True).get("group") for p in found} - {None})
        if one_group and len(groups) > 1:
            raise RunDirError(
                f"{given} holds runs of {len(groups)} seed groups ({', '.join(groups[:3])}"
                f"{', ...' if len(groups) > 3 else ''}); runs of one seed share initial weights "
                f"across groups, so analyze one group at a time, e.g. {inner}/{groups[0]}-s*")
        out += found
    return out


def read_fire_rates(sae: LoadedSAE) -> np.ndarray | None:
    """[F] each feature's firing frequency from feature_analysis.json: `fire_rate`, else
    `fire_count` (the same order within a run; a group's runs see the same tokens); None when
    the file or the field is missing."""
    path = Path(sae.path) / FEATURES
    if not path.is_file():
        return None
    feats = read_json(path).get("features") or []
    key = "fire_rate" if feats and all("fire_rate" in f for f in feats) else "fire_count"
    if not feats or not all(key in f for f in feats):
        return None
    out = np.full(sae.n_features, np.nan)
    for f in feats:
        i = int(f["feature_index"])
        if 0 <= i < sae.n_features:
            out[i] = float(f[key])
    return None if np.isnan(out).any() else out
