"""How much memory training S SAEs together needs, and how many seeds fit in one pass.

Estimated before training starts, so a sweep splits its seeds into passes instead of dying
half-way; a clear error only when a single seed cannot fit.
"""

from __future__ import annotations

import re

from saefast.errors import ConfigError, MemoryBudgetError

__all__ = ["MemoryBudgetError", "parse_bytes", "per_seed_bytes", "shared_bytes", "available_bytes",
           "seeds_per_pass"]

BYTES = {"float32": 4, "float64": 8, "bfloat16": 2}
REFERENCE_TILE_F = 4096  # saefast.ops.reference.TILE_F (not imported: this module stays torch-free)


def format_bytes(n: float) -> str:
    """1.5 GiB, 200 MiB, 3 KiB, 12 B."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def parse_bytes(text: str | int | float | None) -> int | None:
    """`8G`, `512M`, `1.5GiB`, `2000000000` -> bytes; None stays None."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else int(text)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgGtT]?)(i?[bB])?\s*", text)
    if not m:
        raise ConfigError(f"cannot read a memory size from {text!r} (use e.g. 8G or 512M)")
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def per_seed_bytes(n_features: int, d_model: int, batch_size: int, dtype: str = "float32") -> int:
    """One SAE: parameters, gradients, Adam's two moments, the AuxK gather/scatter of the
    encoder, and the encoder's [B, tile] intermediates: the reference kernels' tiles are
    [B, 4096]; the native kernels hold less ([256, 1024] a thread), so this is an upper bound."""
    b = BYTES[dtype]
    params = (2 * n_features * d_model + n_features + d_model) * b
    aux = 2 * n_features * d_model * b
    tiles = 3 * batch_size * min(n_features, REFERENCE_TILE_F) * 4
    return 4 * params + aux + tiles + n_features * 8  # + the since-fired counters


def shared_bytes(d_model: int, window_tokens: int, resident_tokens: int) -> int:
    """What all seeds share: the current window (and its device copy) and any activations
    held in memory (the whole training set when it is small, else none)."""
    return 4 * d_model * (2 * window_tokens + resident_tokens)


def available_bytes(device: str = "cpu") -> int:
    """A budget for training: 80% of the host memory free now; on CUDA, 90% of the GPU's
    free memory (nothing else of ours lives there)."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free * 0.9)
    import psutil

    return int(psutil.virtual_memory().available * 0.8)


def seeds_per_pass(n_seeds: int, n_features: int, d_model: int, batch_size: int,
                   window_tokens: int, resident_tokens: int, budget: int,
                   dtype: str = "float32") -> int:
    """How many of n_seeds SAEs to train together so the pass fits in `budget` bytes."""
    one = per_seed_bytes(n_features, d_model, batch_size, dtype)
    room = budget - shared_bytes(d_model, window_tokens, resident_tokens)
    if room < one:
        need = one + shared_bytes(d_model, window_tokens, resident_tokens)
        raise MemoryBudgetError(
            f"one SAE with {n_features:,} features on d_model={d_model} needs ~{format_bytes(need)}"
            f" but the budget is {format_bytes(budget)}; lower train.batch_size or "
            "train.shuffle_buffer, or raise --memory-budget")
    return max(1, min(n_seeds, room // one))
