"""A report's long numeric lists, kept beside stability.json in one safetensors file.

At 16,384 features each pair of a report carries ~2 MB of per-feature lists (matched
cosines, indices, p-values, the views' cosines): ~400 MB of JSON at 20 seeds' 190 pairs,
minutes to write and to parse, for numbers nobody reads as text. `split` moves every flat
list (or numpy array) of at least INLINE_MAX numbers out of the report into {key: array},
leaving {"$array": key} in its place and the report's `arrays` key naming the file and an
id; `join` puts them back, as numpy arrays. Shorter lists stay in the JSON, so the pairs of
small dictionaries read as plain JSON (the nulls' pooled draws are long at any size).

The id is a digest of the arrays, written into both files: a stability.json whose side file
was since replaced (a killed rewrite) reads as corrupt, and is recomputed, never mixed.

    split(report) -> (tree for json, {key: array})      join(tree, folder) -> report
    write(folder, arrays) -> the `arrays` entry          ARRAYS_FILE
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from saefast.errors import RunDirError
from saefast.fsio import atomic_open

ARRAYS_FILE = "stability_arrays.safetensors"
INLINE_MAX = 4096  # lists of fewer numbers stay in the JSON
REF = "$array"
KEY = "arrays"  # the report's entry: {"file", "id", "count"}


def _as_array(value: Any) -> np.ndarray | None:
    """The flat numeric array a long list or array stands for; None: it stays in the JSON."""
    if isinstance(value, np.ndarray):
        if value.ndim == 1 and value.size >= INLINE_MAX and value.dtype.kind in "biuf":
            return value
        return None
    if not isinstance(value, list) or len(value) < INLINE_MAX:
        return None
    kinds = {type(x) for x in value}
    if kinds == {bool}:
        return np.asarray(value, dtype=np.bool_)
    if kinds <= {int}:
        return np.asarray(value, dtype=np.int64)
    if kinds <= {int, float, type(None)} and float in kinds:  # None: a value scrubbed of NaN
        return np.asarray([np.nan if x is None else x for x in value], dtype=np.float64)
    return None


def split(report: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """(the report with each long numeric list replaced by {"$array": key}, {key: array}).
    Keys are the lists' paths ("pairs/3/all_cosines"). The report itself is not changed."""
    arrays: dict[str, np.ndarray] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, f"{path}/{k}" if path else str(k)) for k, v in node.items()}
        arr = _as_array(node)
        if arr is not None:
            arrays[path] = np.ascontiguousarray(arr)
            return {REF: path}
        if isinstance(node, list):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(node)]
        return node

    return walk(report, ""), arrays


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = arrays[key]
        h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def write(folder: str | Path, arrays: dict[str, np.ndarray]) -> dict | None:
    """Write `arrays` (from `split`) to folder/ARRAYS_FILE atomically; returns the report's
    `arrays` entry, or None (and no file: an old one is removed) when there are none."""
    from safetensors.numpy import save

    path = Path(folder) / ARRAYS_FILE
    if not arrays:
        path.unlink(missing_ok=True)
        return None
    ident = _digest(arrays)
    with atomic_open(path, "wb") as f:  # save_file would create it 0600, whatever the umask
        f.write(save(arrays, metadata={"id": ident}))
    return {"file": ARRAYS_FILE, "id": ident, "count": len(arrays)}


def join(tree: dict, folder: str | Path) -> dict:
    """The report `split` took apart, its arrays read from folder (as numpy arrays).
    RunDirError (one line) when the side file is missing, corrupt or another report's."""
    entry = tree.pop(KEY, None) if isinstance(tree, dict) else None
    if entry is None:
        return tree
    path = Path(folder) / str(entry.get("file", ARRAYS_FILE))
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            ident = (f.metadata() or {}).get("id")
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise RunDirError(f"{path}: missing (stability.json keeps its long lists there)") from None
    except Exception as e:  # safetensors raises its own error types for a damaged file
        raise RunDirError(f"{path}: corrupt ({type(e).__name__})") from None
    if ident != entry.get("id"):
        raise RunDirError(f"{path}: belongs to another stability.json (id {ident} != "
                          f"{entry.get('id')}); recompute the report")

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if len(node) == 1 and REF in node:
                try:
                    return arrays[node[REF]]
                except KeyError:
                    raise RunDirError(f"{path}: has no array {node[REF]!r}") from None
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(tree)
