"""Match two SAE dictionaries one-to-one by decoder cosine.

`match_decoders(dec_a, dec_b)` L2-normalises the decoder rows, computes the cosine matrix
(GEMM in float32, like the original study), upcasts it to float64 and finds the one-to-one
matching of min(n_a, n_b) pairs with the largest total cosine.

Solvers live in `SOLVERS` (name -> function(a_unit [n_a, d], b_unit [n_b, d]) -> Matching).
The dense ones build the full [n_a, n_b] matrix and are exact (`certified=True`). The sparse
"native" solver (top-K candidates + Jonker-Volgenant with a dual-variable optimality
certificate, see DESIGN.md "Matching") plugs in here under the name "native"; until it is
built, asking for it is an error.

`linear_assignment(cost_matrix, maximize=False)` is a drop-in for
`scipy.optimize.linear_sum_assignment`: same signature, defaults, rectangular handling and
errors, solved by lapjv (with padding) when that is installed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

EPS = 1e-12  # rows shorter than this are treated as zero vectors (cosine 0 with everything)


@dataclass
class Matching:
    """A one-to-one matching between the features of dictionary A and dictionary B."""

    rows: np.ndarray  # [n] int64, indices into A, sorted ascending
    cols: np.ndarray  # [n] int64, indices into B; rows[i] is matched to cols[i]
    cosines: np.ndarray  # [n] float64, cosine of each matched pair
    certified: bool  # True when the matching is proven optimal (always, for dense solvers)
    solver: str  # the solver that produced it ("lapjv", "scipy", ...)
    timings: dict[str, float] = field(default_factory=dict)  # gemm_s, solve_s (seconds)

    @property
    def total(self) -> float:
        """Total cosine of the matching (the quantity it maximises)."""
        return float(self.cosines.sum())

    def __len__(self) -> int:
        return int(self.rows.shape[0])


# ------------------------------------------------------------------ dense assignment


def lapjv_available() -> bool:
    try:
        import lapjv  # noqa: F401
    except ImportError:
        return False
    return True


def _lapjv_min(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment of a finite float64 [n, m] matrix with lapjv (square only).

    A rectangular problem (n < m, say) is padded to [m, m] with m - n dummy rows that all hold
    one constant c. Every complete assignment of the square matrix puts the dummy rows on some
    m - n columns, so it costs (real part) + (m - n) * c: the constant shifts every candidate's
    total by the same amount and the argmin is unchanged. Conversely every one-to-one matching
    of the n real rows extends to a square assignment (dummies take the unused columns). So the
    real rows of an optimal square solution are an optimal rectangular matching, for ANY c.
    c only changes speed: c = min(cost) is fast; a constant above the real costs makes
    lapjv crawl through ties (measured: 0.16 s vs 9.5 s at 2048 x 4096).
    """
    import lapjv

    n, m = cost.shape
    if n == 0 or m == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    transposed = n > m
    if transposed:  # pad rows only: solve the transpose and swap back
        cost, (n, m) = cost.T, (m, n)
    if n < m:
        square = np.empty((m, m), dtype=np.float64)
        square[:n] = cost
        square[n:] = cost.min()
    else:
        square = np.ascontiguousarray(cost, dtype=np.float64)
    # force_doubles: without it lapjv 1.3 solves in float32 and returns suboptimal matchings
    # when totals differ by less than float32 resolution (seen here, ~1e-7).
    row_to_col = lapjv.lapjv(square, force_doubles=True)[0][:n].astype(np.int64)  # [n]
    rows = np.arange(n, dtype=np.int64)
    if transposed:
        order = np.argsort(row_to_col)
        return row_to_col[order], rows[order]
    return rows, row_to_col


def linear_assignment(cost_matrix, maximize=False):
    """Drop-in for `scipy.optimize.linear_sum_assignment(cost_matrix, maximize=False)`.

    Returns `(row_ind, col_ind)` (int64, `row_ind` sorted) with `cost_matrix[row_ind, col_ind]`
    of minimal (or maximal) sum; rectangular matrices match min(n, m) pairs. Finite matrices
    are solved by lapjv (padded to square) when installed. Everything else (infinite entries,
    which SciPy treats as forbidden pairs, NaN, wrong dimensions or dtypes, empty matrices) is
    passed to SciPy, so semantics and error messages are SciPy's own.
    """
    from scipy.optimize import linear_sum_assignment

    arr = np.asarray(cost_matrix)
    if (not lapjv_available() or arr.ndim != 2 or arr.size == 0
            or arr.dtype.kind not in "biuf" or not np.isfinite(arr).all()):
        row, col = linear_sum_assignment(cost_matrix, maximize=maximize)
        return row.astype(np.int64, copy=False), col.astype(np.int64, copy=False)
    cost = arr.astype(np.float64)  # a copy: we may negate it in place
    if maximize:
        np.negative(cost, out=cost)
    return _lapjv_min(cost)


# ------------------------------------------------------------------ solvers on decoders


def _cosine_matrix(a_unit: torch.Tensor, b_unit: torch.Tensor) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    cos = (a_unit @ b_unit.T).numpy()  # [n_a, n_b] float32
    return cos, time.perf_counter() - t0


def _dense_matching(a_unit, b_unit, solver: str, solve: Callable) -> Matching:
    cos32, gemm_s = _cosine_matrix(a_unit, b_unit)
    t0 = time.perf_counter()
    cos64 = cos32.astype(np.float64)  # [n_a, n_b]: the solver sees the same values as SciPy would
    rows, cols = solve(cos64)
    solve_s = time.perf_counter() - t0
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    cosines = cos32[rows, cols].astype(np.float64)
    return Matching(rows=rows, cols=cols, cosines=cosines, certified=True, solver=solver,
                    timings={"gemm_s": gemm_s, "solve_s": solve_s})


def _solve_lapjv(a_unit, b_unit) -> Matching:
    def solve(cos64):
        np.negative(cos64, out=cos64)  # lapjv minimises; cos64 is our private copy
        return _lapjv_min(cos64)
    return _dense_matching(a_unit, b_unit, "lapjv", solve)


def _solve_scipy(a_unit, b_unit) -> Matching:
    from scipy.optimize import linear_sum_assignment

    return _dense_matching(a_unit, b_unit, "scipy",
                           lambda cos64: linear_sum_assignment(cos64, maximize=True))


def _solve_native(a_unit, b_unit) -> Matching:
    raise ValueError("solver 'native' (sparse exact JV with certificate) is not built yet; "
                     "use solver='lapjv', 'scipy' or 'auto'")


# name -> function(a_unit [n_a, d] float32, b_unit [n_b, d] float32) -> Matching
SOLVERS: dict[str, Callable[[torch.Tensor, torch.Tensor], Matching]] = {
    "lapjv": _solve_lapjv,
    "scipy": _solve_scipy,
    "native": _solve_native,
}


def resolve_solver(solver: str) -> str:
    """The concrete solver name for `solver` ("auto" -> lapjv if installed, else scipy)."""
    if solver == "auto":
        return "lapjv" if lapjv_available() else "scipy"
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of auto, {', '.join(SOLVERS)}")
    if solver == "lapjv" and not lapjv_available():
        raise ValueError("solver 'lapjv' needs the lapjv package (pip install lapjv); "
                         "or use solver='scipy'")
    return solver


def _as_matrix(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"match_decoders: {name} must be a torch tensor or numpy array, "
                         f"got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"match_decoders: {name} must be 2-D [n_features, d], "
                         f"got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"match_decoders: {name} is empty, shape {tuple(x.shape)}")
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"match_decoders: {name} has unsupported dtype {x.dtype}")
    x = x.detach().to(device="cpu", dtype=torch.float32)
    if not np.isfinite(x.numpy()).all():  # numpy: torch's isfinite is slow on busy CPUs
        raise ValueError(f"match_decoders: {name} contains NaN or infinite values")
    return x


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (float32); near-zero rows stay zero instead of dividing by 0."""
    return torch.nn.functional.normalize(x.float(), dim=1, eps=EPS)  # [n, d]


def match_decoders(dec_a, dec_b, *, solver: str = "auto") -> Matching:
    """Maximum-total-cosine one-to-one matching between the rows of dec_a and dec_b.

    dec_a [n_a, d], dec_b [n_b, d]: decoder rows (features), torch or numpy, any scale.
    Returns min(n_a, n_b) pairs as a `Matching` (rows sorted ascending).
    """
    name = resolve_solver(solver)
    a = _as_matrix(dec_a, "dec_a")
    b = _as_matrix(dec_b, "dec_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"match_decoders: dec_a has d={a.shape[1]} but dec_b has d={b.shape[1]}; "
                         "both must be [n_features, d] with the same d")
    return SOLVERS[name](unit_rows(a), unit_rows(b))
