"""Reading the files of a run directory, with errors that name the file (`RunDirError`):
the file names of ours and the original study's, JSON, safetensors, and run.json, whose one
reader is `read_run_json`. `artifacts` (ours, the original study's, SAELens) and `formats`
(other tools) read through here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from saefast import fsio
from saefast.errors import RunDirError

WEIGHTS = "sae_weights.safetensors"
WEIGHTS_META = "sae_weights.safetensors.json"
FEATURES = "feature_analysis.json"
RUN = "run.json"
SAELENS_CFG = "cfg.json"


def read_json(path: Path) -> Any:
    """JSON of a run dir; unreadable or corrupt is a RunDirError naming the file."""
    return fsio.read_json(path, error=RunDirError)


def read_run_json(run_dir: str | Path, *, missing_ok: bool = False) -> dict[str, Any]:
    """A run's run.json. Missing: {} with missing_ok (other tools' runs have none), else a
    RunDirError; unreadable, corrupt or not an object: always a RunDirError naming the file."""
    path = Path(run_dir) / RUN
    if missing_ok and not path.is_file():
        return {}
    info = read_json(path)
    if not isinstance(info, dict):
        raise RunDirError(f"{path}: expected a JSON object, got {type(info).__name__}")
    return info


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise RunDirError(f"{path}: corrupt or unreadable safetensors file ({e})") from None


def need_tensor(tensors: dict[str, torch.Tensor], key: str, path: Path) -> torch.Tensor:
    if key not in tensors:
        raise RunDirError(f"{path}: missing tensor {key!r} (has {', '.join(sorted(tensors))})")
    return tensors[key]
