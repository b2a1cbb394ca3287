"""Matching two SAE dictionaries one-to-one by decoder cosine, and SciPy-compatible assignment.

Modules, one job each (mirroring csrc/lap):

- `decoders`: `match_decoders` and its `Matching` result, the solver table `SOLVERS` and
  `resolve_solver` ("auto" -> native, lapjv or scipy), input checks (`MatchError`).
- `certified`: the native certified sparse solver (top-K candidates, sparse solve, a dual
  certificate of optimality over all pairs; its docstring holds the proof).
- `assignment`: `linear_assignment`, a drop-in for `scipy.optimize.linear_sum_assignment`
  that returns SciPy's indices, ties included.
- `cache`: pair matchings kept on disk by content (`MatchingCache`, OUT/reports/.matchings),
  so a report recomputed with other settings, or made after a Ray pair task, matches nothing
  again.
- `_lap`: the numpy front end of the C++ solver ops (`torch.ops.saefast_lap.*`).
"""

from __future__ import annotations

from saefast.match.assignment import linear_assignment
from saefast.match.certified import gemm_margin
from saefast.match.decoders import (
    SOLVERS,
    Matching,
    lapjv_available,
    match_decoders,
    native_available,
    resolve_solver,
    unit_rows,
)

__all__ = ["match_decoders", "Matching", "linear_assignment", "resolve_solver", "SOLVERS",
           "native_available", "lapjv_available", "unit_rows", "gemm_margin"]
