"""The SIMD threshold-mask kernels behind the native top-k selection agree with the scalar
loop on every instruction set this CPU has, not only the one picked at load time."""

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(platform.machine() != "x86_64" or not shutil.which("g++"),
                    reason="needs an x86-64 CPU and g++")
def test_every_simd_mask_kernel_matches_the_scalar_one(tmp_path):
    exe = tmp_path / "simd_masks_check"
    subprocess.run(["g++", "-O2", "-std=c++17", f"-I{ROOT / 'csrc' / 'cpu'}",
                    str(ROOT / "tests" / "csrc" / "simd_masks_check.cpp"), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    done = subprocess.run([str(exe)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mismatches 0" in done.stdout
