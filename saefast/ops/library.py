"""The `saefast` op library as Python sees it: schemas, who defined them, one `register`.

The schemas are written once, in saefast/ops/schemas.inc. Two loaders define them:
  - C++ (csrc/saefast.cpp, TORCH_LIBRARY) when the native library loads, with its CPU
    kernels (csrc/cpu/<op>.cpp), so the library CMakeLists.txt builds works on its own;
  - this module when it does not (SAEFAST_DISABLE_NATIVE=1, no compiler, failed build).
Either way each op module (encode.py, decode.py, cosine.py) then calls `register` once:
its reference kernel for every backend without a native one (CompositeExplicitAutograd,
which a backend kernel such as TORCH_LIBRARY_IMPL(saefast, CPU) overrides), its fake kernel
and its autograd formula.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Callable

import torch

from saefast.ops import native

SCHEMA_FILE = Path(__file__).with_name("schemas.inc")


def read_schemas(path: Path = SCHEMA_FILE) -> list[str]:
    """The op schema strings of schemas.inc (shared with csrc/saefast.cpp)."""
    schemas = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("//"):
            schemas.append(ast.literal_eval(line.rstrip(",")))
    return schemas


SCHEMAS: list[str] = read_schemas()
NATIVE: bool = native.load()  # True: C++ defined the schemas (and its kernels)

if NATIVE:
    LIB = torch.library.Library("saefast", "IMPL")
else:
    LIB = torch.library.Library("saefast", "DEF")
    for _schema in SCHEMAS:
        LIB.define(_schema)
    LIB.impl("build_info", lambda: json.dumps({"native": False}), "CompositeImplicitAutograd")


def register(name: str, *, reference: Callable, fake: Callable,
             backward: Callable | None = None, setup_context: Callable | None = None) -> None:
    """One op's Python side: reference kernel for all devices, fake kernel, autograd."""
    qualname = f"saefast::{name}"
    # "default": every backend (the CompositeExplicitAutograd key). Not register_kernel, which
    # wraps the kernel in torch._disable_dynamo and so imports dynamo (~0.8 s) on first call.
    torch.library.impl(qualname, "default", reference, lib=LIB)
    torch.library.register_fake(qualname, fake, lib=LIB)
    if backward is not None:
        torch.library.register_autograd(qualname, backward, setup_context=setup_context, lib=LIB)
