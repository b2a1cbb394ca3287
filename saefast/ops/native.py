"""Load the C++ op library `saefast._C` once, and say what this install can do.

Environment:
  SAEFAST_DISABLE_NATIVE=1  never load the extension: every op runs saefast/ops/reference.py.
  SAEFAST_REQUIRE_NATIVE=1  a missing, failed or disabled native build is an ImportError
                            (raised by `load()`, so by `import saefast.ops`).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import platform
import warnings
from pathlib import Path

import torch

from saefast.errors import NativeRequiredError

_FAILURE_FILE = Path(__file__).parent.parent / "_build_failure.txt"  # written by setup.py
_state: tuple[bool, str | None] | None = None  # (loaded, reason it is not)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _try_load() -> tuple[bool, str | None]:
    if _env_flag("SAEFAST_DISABLE_NATIVE"):
        return False, "disabled by SAEFAST_DISABLE_NATIVE=1"
    try:
        importlib.import_module("saefast._C")  # runs TORCH_LIBRARY(saefast, ...)
    except ModuleNotFoundError as exc:
        if exc.name != "saefast._C":
            return False, f"import error: {exc}"
        if _FAILURE_FILE.exists():
            return False, _FAILURE_FILE.read_text().strip()
        return False, ("not built: no compiled saefast._C "
                       "(reinstall with `pip install --no-build-isolation -e .` and a C++ compiler)")
    except (ImportError, OSError) as exc:  # e.g. built against another torch (undefined symbol)
        return False, f"import error: {exc} (rebuild against torch {torch.__version__})"
    _warn_on_torch_mismatch()
    return True, None


def _base_version(version: str) -> str:
    return version.split("+", 1)[0]  # "2.13.0+cpu" -> "2.13.0"


def torch_mismatch(built_with: str | None, running: str | None = None) -> str | None:
    """Why a library built against torch `built_with` should not run on `running`, or None.

    C++ extensions have no stable ABI across torch releases: one built against another
    torch may fail to load (undefined symbol) or, worse, load and misbehave."""
    running = running or torch.__version__
    if built_with and _base_version(built_with) != _base_version(running):
        return (f"saefast's native ops were built against torch {built_with} but torch "
                f"{running} is running; rebuild them against this torch: "
                f"pip install --no-build-isolation -e . (or set SAEFAST_DISABLE_NATIVE=1)")
    return None


def _warn_on_torch_mismatch() -> None:
    message = torch_mismatch(json.loads(torch.ops.saefast.build_info()).get("torch_version"))
    if message:
        warnings.warn(message, RuntimeWarning, stacklevel=2)


def _load_state() -> tuple[bool, str | None]:
    global _state
    if _state is None:
        _state = _try_load()
    return _state


def load() -> bool:
    """Load the extension (once). True if its ops are registered; False if the pure-PyTorch
    path must be used. Raises ImportError if SAEFAST_REQUIRE_NATIVE=1 and it did not load."""
    loaded, reason = _load_state()
    if not loaded and _env_flag("SAEFAST_REQUIRE_NATIVE"):
        raise NativeRequiredError(f"saefast native ops are required (SAEFAST_REQUIRE_NATIVE=1) "
                          f"but unavailable: {reason}")
    return loaded


def is_loaded() -> bool:
    """Whether the native extension is loaded (never raises)."""
    return _load_state()[0]


def build_info() -> dict:
    """What this install can do, as a dict.

    With the native build: the extension's own report (`native`: True, `torch_version` and
    `compiler` it was built with, `cuda`, `cuda_version`, `openmp`, `cpu_kernels`,
    `cuda_kernels`: ops with native kernels, `cpu_tiles`: the CPU kernels' blocking, e.g.
    {"max_row_block": 256, "gemm_tile": 1024}) plus `loaded`: True and `torch_mismatch`: None,
    or the message (also warned once at import) when it was built against another torch.
    Without it: `native`: False and `reason` (disabled by env / not built / the build failure
    / the import error).
    Always: `torch` (runtime version), `python`, `saefast`, `devices` ({"cpu": True,
    "cuda": device count}), `lapjv` and `scipy` (importable).
    """
    from saefast import __version__

    loaded, reason = _load_state()
    if loaded:
        info = json.loads(torch.ops.saefast.build_info())
        info["loaded"] = True
        info["torch_mismatch"] = torch_mismatch(info.get("torch_version"))
    else:
        info = {"native": False, "reason": reason}
    info.update(
        torch=torch.__version__,
        python=platform.python_version(),
        saefast=__version__,
        devices={"cpu": True, "cuda": torch.cuda.device_count() if torch.cuda.is_available() else 0},
        lapjv=importlib.util.find_spec("lapjv") is not None,
        scipy=importlib.util.find_spec("scipy") is not None,
    )
    return info
