"""The native build: built when a compiler exists, and when it is not, build_info says why."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import saefast
from saefast.ops import native as _native


def test_extension_built_when_a_compiler_exists():
    info = saefast.build_info()
    if not info["native"]:
        assert info["reason"], "build_info must say why the native ops are missing"
        pytest.skip(f"saefast._C not loaded: {info['reason']}")
    assert info["loaded"] is True
    assert torch.__version__.startswith(info["torch_version"]), (
        f"saefast._C was built against torch {info['torch_version']}, running {torch.__version__}")
    assert info["compiler"] and isinstance(info["openmp"], bool)
    assert isinstance(info["cpu_kernels"], list) and isinstance(info["cuda_kernels"], list)
    assert info["cuda"] == (info["cuda_version"] is not None)


def test_native_build_info_is_json_from_cpp():
    if not _native.is_loaded():
        pytest.skip("native build not loaded")
    info = json.loads(torch.ops.saefast.build_info())
    assert info["native"] is True and "cpu_kernels" in info


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SAEFAST_")}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env)


def test_disabled_native_says_why():
    done = _run("import saefast, json; print(json.dumps(saefast.build_info()))",
                SAEFAST_DISABLE_NATIVE="1")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["native"] is False and "SAEFAST_DISABLE_NATIVE" in info["reason"]


def test_require_native_makes_a_missing_build_an_import_error():
    done = _run("import saefast.ops", SAEFAST_DISABLE_NATIVE="1", SAEFAST_REQUIRE_NATIVE="1")
    assert done.returncode != 0
    assert "ImportError" in done.stderr and "SAEFAST_DISABLE_NATIVE" in done.stderr


def test_build_failure_file_is_the_reason(monkeypatch, tmp_path):
    """A failed build leaves saefast/_build_failure.txt; build_info reports its text."""
    failure = tmp_path / "_build_failure.txt"
    failure.write_text("native build failed: RuntimeError: no C++ compiler\n")

    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.delenv("SAEFAST_DISABLE_NATIVE", raising=False)
    monkeypatch.setattr(_native, "_FAILURE_FILE", failure)
    monkeypatch.setattr(_native.importlib, "import_module", missing)
    assert _native._try_load() == (False, "native build failed: RuntimeError: no C++ compiler")
    failure.unlink()
    loaded, reason = _native._try_load()
    assert not loaded and reason.startswith("not built")
