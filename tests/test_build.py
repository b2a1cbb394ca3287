"""The native build: built when a compiler exists, and when it is not, build_info says why;
the library CMakeLists.txt builds works on its own; a torch mismatch is reported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import saefast
from saefast.ops import native as _native

ROOT = Path(__file__).resolve().parents[1]


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "c++").split()[0])


def test_extension_built_when_a_compiler_exists():
    info = saefast.build_info()
    if not info["native"]:
        assert info["reason"], "build_info must say why the native ops are missing"
        if "SAEFAST_DISABLE_NATIVE" in info["reason"]:
            pytest.skip(f"saefast._C not loaded: {info['reason']}")
        # a compiler is here, so a missing build is a failure, not a skip
        assert _compiler() is None, f"a C++ compiler exists ({_compiler()}) but: {info['reason']}"
        pytest.skip(f"no C++ compiler: {info['reason']}")
    assert info["loaded"] is True
    assert torch.__version__.startswith(info["torch_version"]), (
        f"saefast._C was built against torch {info['torch_version']}, running {torch.__version__}")
    assert info["torch_mismatch"] is None
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
    code = ("try:\n    import saefast.ops\nexcept ImportError as e:\n"
            "    print(type(e).__name__, e)\n    raise SystemExit(3)")
    done = _run(code, SAEFAST_DISABLE_NATIVE="1", SAEFAST_REQUIRE_NATIVE="1")
    assert done.returncode == 3, done.stderr  # an ImportError (saefast.errors.NativeRequiredError)
    assert "SAEFAST_DISABLE_NATIVE" in done.stdout


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


def test_torch_mismatch_is_named():
    assert _native.torch_mismatch("2.13.0", "2.13.0+cpu") is None
    assert _native.torch_mismatch(None, "2.13.0") is None
    message = _native.torch_mismatch("2.14.1", "2.13.0+cpu")
    assert "2.14.1" in message and "2.13.0+cpu" in message and "--no-build-isolation" in message


def test_torch_mismatch_warns_once_at_load(monkeypatch):
    if not _native.is_loaded():
        pytest.skip("native build not loaded")
    monkeypatch.setattr(_native.torch, "__version__", "9.9.9")
    with pytest.warns(RuntimeWarning, match="built against torch .* but torch 9.9.9 is running"):
        assert _native._try_load() == (True, None)
    monkeypatch.setattr(_native, "_state", None)
    with pytest.warns(RuntimeWarning):
        _native.load()
    assert _native.build_info()["torch_mismatch"]


# The library CMakeLists.txt builds, loaded with torch alone (no saefast import), must define
# the ops and compute the right top-k with its CPU kernel.
STANDALONE = textwrap.dedent("""
    import sys, torch
    torch.ops.load_library(sys.argv[1])
    assert "saefast" not in sys.modules
    x, W, b = torch.randn(5, 8), torch.randn(3000, 8), torch.randn(3000)
    values, indices = torch.ops.saefast.topk_encode(x, W, b, 7)
    want = torch.relu(x @ W.T + b).topk(7, dim=1)
    torch.testing.assert_close(values, want.values, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.relu(x @ W.T + b).gather(1, indices), values, atol=1e-5, rtol=1e-5)
    table = torch._C._dispatch_dump_table("saefast::topk_encode")
    assert "csrc/cpu/topk_encode.cpp" in table.split("CPU: ", 1)[1].splitlines()[0], table
    print("ok")
""")


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("cmake") and _compiler()), reason="needs cmake and a C++ compiler")
def test_cmake_library_registers_working_ops_on_its_own(tmp_path):
    import torch.utils

    build = tmp_path / "build"
    configure = ["cmake", "-S", str(ROOT), "-B", str(build),
                 f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
                 "-DSAEFAST_CPU_OPS=topk_encode", "-DSAEFAST_LAP=OFF"]  # only what is checked
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    for cmd in (configure, ["cmake", "--build", str(build), "-j", str(os.cpu_count() or 2)]):
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    library = build / "libsaefast.so"
    assert library.exists()
    done = subprocess.run([sys.executable, "-c", STANDALONE, str(library)], capture_output=True,
                          text=True, env={k: v for k, v in os.environ.items() if not k.startswith("SAEFAST_")})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr


CUDA_KERNELS = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))
# Hopper (H100) and one older architecture (A100), as a GPU build would
NVCC_ARCHS = ["-gencode", "arch=compute_90,code=sm_90", "-gencode", "arch=compute_80,code=sm_80"]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA compiler)")
@pytest.mark.parametrize("source", CUDA_KERNELS, ids=lambda p: p.name)
def test_cuda_kernels_compile_with_nvcc_alone(source, tmp_path):
    """The kernel files are plain CUDA C++ (no torch headers), so they compile here even with a
    CPU torch; the torch glue beside them builds where torch has CUDA (setup.py)."""
    done = subprocess.run(["nvcc", "-std=c++17", "-O3", *NVCC_ARCHS, "-c", str(source),
                           "-o", str(tmp_path / "k.o")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "k.o").stat().st_size > 0


def test_cuda_kernel_files_do_not_include_torch():
    for path in [*CUDA_KERNELS, *(ROOT / "csrc" / "cuda").glob("*.cuh"), ROOT / "csrc" / "cuda" / "kernels.h"]:
        text = path.read_text()
        assert "#include <ATen" not in text and "#include <torch" not in text and "#include <c10" not in text, path


def test_a_wheel_holds_every_module_and_installs_without_the_source(tmp_path):
    """CI installs editable, which finds modules in the source tree whatever setup.py lists;
    a wheel holds only what setup.py packages. Build one (pure Python: the native build is
    skipped to keep this fast), check it holds every module, and import the whole package
    from it in a process that cannot see the source tree."""
    import zipfile

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "SAEFAST_BUILD_NATIVE": "0"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist"), str(root)], check=True, env=env,
                   capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("saefast-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {str(p.relative_to(root)) for p in (root / "saefast").rglob("*.py")}
    sources |= {"saefast/cli/" + p.name for p in (root / "cli").glob("*.py")}
    assert sources - names == set(), "modules missing from the wheel: add their package to setup.py"
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    code = ("import pkgutil, importlib, saefast; "
            "assert saefast.__file__.startswith(%r), saefast.__file__; "
            "[importlib.import_module(m.name) for m in pkgutil.walk_packages(saefast.__path__, 'saefast.') "
            "if m.name != 'saefast._C']; "
            "from saefast.cli.main import main" % str(tmp_path / "site"))
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path,
                   env={**clean, "PYTHONPATH": str(tmp_path / "site")})
