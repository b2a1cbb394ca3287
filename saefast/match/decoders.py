"""`match_decoders`: the one-to-one matching of two SAE dictionaries by decoder cosine.

`match_decoders(dec_a, dec_b)` L2-normalises the decoder rows (float32) and finds the
matching of min(n_a, n_b) pairs with the largest total cosine, as a `Matching`.

Solvers live in `SOLVERS` (name -> function(a_unit [n_a, d], b_unit [n_b, d], candidates)
-> Matching):

- "native" (the default when the C++ extension is built): the certified sparse solver
  (certified.py): top-K cosine candidates, a sparse solve, and a proof of optimality over all
  pairs; `certified=False` when its budget runs out first. Small problems (n_a * n_b <=
  `DENSE_NATIVE_MAX`) are solved densely by the native solver, duals checked on every pair.
- "lapjv", "scipy": dense float32 cosine GEMM upcast to float64, exact (`certified=True`).

Values: the dense solvers, and the native one on small problems, maximise the float32 GEMM
cosines upcast to float64 (the original study's recipe). The native sparse path maximises
float64 dot products of the same float32 unit rows (a GEMM's float32 values depend on its
blocking, so they cannot be rescored pair by pair). The two differ by ~1e-7 per pair, so
totals agree to ~1e-7 relative; each is exact for its own values (the tests compare each
against SciPy on the same values).

Bad inputs, an unknown or unavailable solver and a bad `candidates` raise `MatchError`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from saefast.errors import MatchError
from saefast.match import certified

EPS = 1e-12  # rows shorter than this are treated as zero vectors (cosine 0 with everything)
DEFAULT_CANDIDATES = 32  # K: top-K cosines kept per row and per column
DENSE_NATIVE_MAX = 1 << 22  # n_a * n_b up to this: solve densely (float64 matrix <= 32 MiB)
DENSE_BUDGET_BYTES = 16 << 30  # dense solvers: float32 + float64 matrices at most this


@dataclass
class Matching:
    """A one-to-one matching between the features of dictionary A and dictionary B."""

    rows: np.ndarray  # [n] int64, indices into A, sorted ascending
    cols: np.ndarray  # [n] int64, indices into B; rows[i] is matched to cols[i]
    cosines: np.ndarray  # [n] float64, cosine of each matched pair
    certified: bool  # True when the matching is proven optimal (always, for dense solvers)
    solver: str  # the solver that produced it ("native", "lapjv", "scipy")
    timings: dict[str, float] = field(default_factory=dict)  # seconds: gemm_s, solve_s, ...
    info: dict = field(default_factory=dict)  # native: k, edges, rounds, gap_bound, ...
    # (each A row's nearest B row [n_a], each B row's nearest A row [n_b]) by the float32
    # cosines the solver computed anyway (its candidates' first entries, or the dense
    # matrix's argmax): the nearest-neighbour statistics reuse them instead of a second
    # n_a x n_b GEMM. None where they were not kept (e.g. a matching cached before).
    nearest: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def total(self) -> float:
        """Total cosine of the matching (the quantity it maximises)."""
        return float(self.cosines.sum())

    def __len__(self) -> int:
        return int(self.rows.shape[0])


# ------------------------------------------------------------------ dense solvers


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


def _cosine_matrix(a_unit: torch.Tensor, b_unit: torch.Tensor) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    cos = (a_unit @ b_unit.T).numpy()  # [n_a, n_b] float32
    return cos, time.perf_counter() - t0


def _argmax(cos32: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`Matching.nearest` of a dense [n_a, n_b] cosine matrix."""
    return cos32.argmax(1).astype(np.int64), cos32.argmax(0).astype(np.int64)


def _dense_matching(a_unit, b_unit, solver: str, solve: Callable) -> Matching:
    need = 12 * a_unit.shape[0] * b_unit.shape[0]  # [n_a, n_b] float32 + float64 copy
    if need > DENSE_BUDGET_BYTES:
        raise MatchError(f"match_decoders: solver {solver!r} needs the dense "
                         f"{a_unit.shape[0]} x {b_unit.shape[0]} cosine matrix ({need / 2**30:.0f} "
                         f"GiB > {DENSE_BUDGET_BYTES / 2**30:.0f} GiB budget); use "
                         "solver='native' (build saefast with a C++ compiler)")
    cos32, gemm_s = _cosine_matrix(a_unit, b_unit)
    t0 = time.perf_counter()
    cos64 = cos32.astype(np.float64)  # [n_a, n_b]: the solver sees the same values as SciPy would
    rows, cols = solve(cos64)
    solve_s = time.perf_counter() - t0
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    cosines = cos32[rows, cols].astype(np.float64)
    return Matching(rows=rows, cols=cols, cosines=cosines, certified=True, solver=solver,
                    timings={"gemm_s": gemm_s, "solve_s": solve_s}, nearest=_argmax(cos32))


def _solve_lapjv(a_unit, b_unit, candidates=None) -> Matching:
    def solve(cos64):
        np.negative(cos64, out=cos64)  # lapjv minimises; cos64 is our private copy
        return _lapjv_min(cos64)
    return _dense_matching(a_unit, b_unit, "lapjv", solve)


def _solve_scipy(a_unit, b_unit, candidates=None) -> Matching:
    from scipy.optimize import linear_sum_assignment

    return _dense_matching(a_unit, b_unit, "scipy",
                           lambda cos64: linear_sum_assignment(cos64, maximize=True))


# ------------------------------------------------------------------ native


def _solve_native(a_unit, b_unit, candidates=None, device=None) -> Matching:
    from saefast.match import _lap

    if not _lap.available():
        raise MatchError(f"solver 'native' is unavailable ({_lap.unavailable_reason()}); "
                         "use solver='auto', 'lapjv' or 'scipy'")
    t_start = time.perf_counter()
    transposed = a_unit.shape[0] > b_unit.shape[0]
    a, b = (b_unit, a_unit) if transposed else (a_unit, b_unit)  # n <= m
    n, m = a.shape[0], b.shape[0]
    k = DEFAULT_CANDIDATES if candidates is None else int(candidates)
    if k < 1:
        raise MatchError("match_decoders: candidates must be a positive integer, "
                         f"got {candidates!r}")
    timings: dict[str, float] = {}
    if n * m <= DENSE_NATIVE_MAX or k >= n:
        # Small: the dense solvers' values (float32 GEMM in the caller's orientation, upcast),
        # so small problems give exactly what lapjv / SciPy / the original study give.
        cos32, timings["gemm_s"] = _cosine_matrix(a_unit, b_unit)  # [n_a, n_b]
        t0 = time.perf_counter()
        cos64 = np.ascontiguousarray(cos32.T if transposed else cos32, dtype=np.float64)
        x, cos, info = certified.solve_dense(cos64)
        timings["solve_s"] = time.perf_counter() - t0
        proven = info["gap_bound"] <= certified.DUAL_TOL * n + 1e-12
        nearest = _argmax(cos32)
    else:
        top1: list = []
        x, cos, proven, info = certified.solve_sparse(a, b, min(k, n), timings, device=device,
                                                      top1=top1)
        row_best, col_best = top1  # in the solver's orientation (n <= m)
        nearest = (col_best, row_best) if transposed else (row_best, col_best)
    timings["total_s"] = time.perf_counter() - t_start
    rows, cols = np.arange(n, dtype=np.int64), x.astype(np.int64)
    if transposed:
        order = np.argsort(cols)
        rows, cols, cos = cols[order], rows[order], cos[order]
    return Matching(rows=rows, cols=cols, cosines=np.asarray(cos, np.float64),
                    certified=bool(proven), solver="native", timings=timings, info=info,
                    nearest=nearest)


# name -> function(a_unit [n_a, d] float32, b_unit [n_b, d] float32, candidates) -> Matching
SOLVERS: dict[str, Callable[..., Matching]] = {
    "native": _solve_native,
    "lapjv": _solve_lapjv,
    "scipy": _solve_scipy,
}


def native_available() -> bool:
    """Whether the native sparse solver (csrc/lap) is built and loaded."""
    from saefast.match import _lap

    return _lap.available()


def resolve_solver(solver: str) -> str:
    """The concrete solver name for `solver` ("auto" -> native if built, else lapjv if
    installed, else scipy)."""
    if solver == "auto":
        if native_available():
            return "native"
        return "lapjv" if lapjv_available() else "scipy"
    if solver not in SOLVERS:
        raise MatchError(f"unknown solver {solver!r}; choose one of auto, {', '.join(SOLVERS)}")
    if solver == "lapjv" and not lapjv_available():
        raise MatchError("solver 'lapjv' needs the lapjv package (pip install lapjv); "
                         "or use solver='scipy'")
    return solver


def _as_matrix(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise MatchError(f"match_decoders: {name} must be a torch tensor or numpy array, "
                         f"got {type(x).__name__}")
    if x.ndim != 2:
        raise MatchError(f"match_decoders: {name} must be 2-D [n_features, d], "
                         f"got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise MatchError(f"match_decoders: {name} is empty, shape {tuple(x.shape)}")
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
        raise MatchError(f"match_decoders: {name} has unsupported dtype {x.dtype}")
    x = x.detach().to(device="cpu", dtype=torch.float32)
    if not np.isfinite(x.numpy()).all():  # numpy: torch's isfinite is slow on busy CPUs
        raise MatchError(f"match_decoders: {name} contains NaN or infinite values")
    return x


def _is_positive_int(x) -> bool:
    """Whether x is a whole number >= 1 (2 and 2.0 are, True and "2" are not)."""
    if isinstance(x, (bool, str, bytes)):
        return False
    try:
        return int(x) == x and x >= 1
    except (TypeError, ValueError, OverflowError):
        return False


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (float32); near-zero rows stay zero instead of dividing by 0."""
    return torch.nn.functional.normalize(x.float(), dim=1, eps=EPS).contiguous()  # [n, d]


def match_decoders(dec_a, dec_b, *, solver: str = "auto", candidates: int | None = None,
                   device: str | torch.device | None = None) -> Matching:
    """Maximum-total-cosine one-to-one matching between the rows of dec_a and dec_b.

    dec_a [n_a, d], dec_b [n_b, d]: decoder rows (features), torch or numpy, any scale.
    solver: "auto" (native when built, else lapjv, else scipy), "native", "lapjv", "scipy".
    candidates: K, the top-K cosines per row and per column the native solver starts from
    (default 32; the certificate adds whatever else is needed). Ignored by dense solvers.
    device: where the native solver computes its candidates (`cpu`, `cuda`, ...); default: a
    GPU when present and the pair has >= 2^24 cosines, else the CPU. The solve and its
    certificate run on the CPU either way, so the result is certified the same.
    Returns min(n_a, n_b) pairs as a `Matching` (rows sorted ascending). Raises `MatchError`
    for bad inputs or a solver that does not exist or is not available here.
    """
    name = resolve_solver(solver)
    a = _as_matrix(dec_a, "dec_a")
    b = _as_matrix(dec_b, "dec_b")
    if a.shape[1] != b.shape[1]:
        raise MatchError(f"match_decoders: dec_a has d={a.shape[1]} but dec_b has d={b.shape[1]}; "
                         "both must be [n_features, d] with the same d")
    if candidates is not None and not _is_positive_int(candidates):
        raise MatchError("match_decoders: candidates must be a positive integer, "
                         f"got {candidates!r}")
    if name == "native":
        return _solve_native(unit_rows(a), unit_rows(b), candidates, device)
    return SOLVERS[name](unit_rows(a), unit_rows(b), candidates)
