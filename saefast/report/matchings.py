"""Every matching a report is made of, through the matching cache (`saefast.match.cache`).

A report matches each pair of runs by decoder (all features, and the live ones for its
live-only part), by encoder rows, and by activation correlation on held-out tokens. Given a
`MatchingCache` (a sweep's, under OUT/reports/.matchings; a remote executor fills it while
runs train), each matching is read from it when it was computed before and kept there when
it was not, under a key naming its kind, its solver and the bytes of both inputs; so a report
recomputed for another threshold matches nothing again. Without a cache, everything is
matched afresh. The statistics of these matchings are `saefast.stats`.
"""

from __future__ import annotations

import hashlib

import numpy as np

from saefast.match import Matching, parallel
from saefast.match import cache as match_cache
from saefast.match.cache import MatchingCache
from saefast.runs.artifacts import LoadedSAE
from saefast.stats import correlation
from saefast.stats.stability import features

# the kind (and the method: exact, `correlation.correlation_matching`, among firing features;
# renamed when the method changed, so a cached matching of the old one is not read)
CORRELATION = "correlation-firing"


def pair_matching(sa: LoadedSAE, sb: LoadedSAE, *, live_only: bool, solver: str,
                  matchings: MatchingCache | None = None
                  ) -> tuple[np.ndarray, np.ndarray, Matching]:
    """(A's feature indices, B's, their decoder matching): the matching a report's pair is
    made of, read from `matchings` when it was computed before."""
    idx_a, dec_a = features(sa, live_only)
    idx_b, dec_b = features(sb, live_only)
    rows = (lambda idx: idx) if live_only else (lambda idx: None)
    m = match_cache.match(matchings, dec_a, dec_b, solver=solver,
                          kind="decoder-live" if live_only else "decoder",
                          id_a=match_cache.identity(sa.decoder, rows(idx_a)),
                          id_b=match_cache.identity(sb.decoder, rows(idx_b)))
    return idx_a, idx_b, m


def encoder_matching(sa: LoadedSAE, sb: LoadedSAE, *, solver: str = "auto",
                     matchings: MatchingCache | None = None) -> Matching:
    """The one-to-one matching of two runs' encoder rows (every feature), read from
    `matchings` when it was computed before."""
    return match_cache.match(matchings, sa.encoder, sb.encoder, kind="encoder", solver=solver)


def encoder_matchings(saes, pairs: list[dict], *, solver: str,
                      matchings: MatchingCache | None = None) -> dict | None:
    """{(i, j): encoder matching} of every pair of the report; None when a run has no encoder."""
    if any(s.encoder is None for s in saes):
        return None
    keys = [(p["index_a"], p["index_b"]) for p in pairs]
    return dict(zip(keys, parallel.map_ordered(lambda ij: encoder_matching(
        saes[ij[0]], saes[ij[1]], solver=solver, matchings=matchings), keys)))


def codes_identity(codes: correlation.Codes) -> str:
    """What names one side of a correlation matching: the run's sparse codes of the held-out
    tokens (feature count, values and indices, byte for byte)."""
    h = hashlib.sha256(f"codes:{codes.F}:{codes.values.shape}:".encode())
    h.update(np.ascontiguousarray(codes.values).tobytes())
    h.update(np.ascontiguousarray(codes.indices).tobytes())
    return h.hexdigest()


def correlation_matching(a: correlation.Codes, b: correlation.Codes, *, id_a: str, id_b: str,
                         matchings: MatchingCache | None = None) -> tuple:
    """`correlation.correlation_matching(a, b)` -> (a_idx, b_idx, r, info), read from
    `matchings` when it was computed before (id_a / id_b: `codes_identity`)."""
    if matchings is None:
        return correlation.correlation_matching(a, b)

    def solve() -> Matching:
        a_idx, b_idx, r, info = correlation.correlation_matching(a, b)
        return Matching(rows=a_idx, cols=b_idx, cosines=r, certified=bool(info["certified"]),
                        solver=CORRELATION, info=info)

    m = matchings.cached(matchings.key(CORRELATION, CORRELATION, id_a, id_b), solve)
    return m.rows, m.cols, m.cosines, m.info


def correlation_matchings(codes, pairs: list[dict], *,
                          matchings: MatchingCache | None = None) -> dict | None:
    """{(i, j): correlation matching} of every pair of the report from the runs' held-out
    codes (`equivalence.held_out_codes`); None without codes."""
    if codes is None:
        return None
    ids = [codes_identity(c) for c in codes] if matchings is not None else [""] * len(codes)
    keys = [(p["index_a"], p["index_b"]) for p in pairs]
    return dict(zip(keys, parallel.map_ordered(lambda ij: correlation_matching(
        codes[ij[0]], codes[ij[1]], id_a=ids[ij[0]], id_b=ids[ij[1]], matchings=matchings),
        keys)))
