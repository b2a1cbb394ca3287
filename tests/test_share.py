"""The bulk-matched share beyond chance (saefast.stats.share), with planted truth at the level
of per-feature p-values: a shift of every unshared feature is not a share, planted shares are
found whatever the shift, features beyond every null draw are counted above the bulk, and the
bulk check names a null that is too strict or of the wrong shape."""

import numpy as np
import pytest
from scipy.stats import norm

from saefast.stats import inference as inf
from saefast.stats import share as sh

S, M, N = 5, 256, 16000  # runs, features per pair (both sides), null draws per pool (as evidence)


def _group(rng, shift: float, shared: float, *, width: float = 1.0) -> dict:
    """{(i, j): z} for S runs: unshared features' statistics ~ N(shift, width^2) in null SDs,
    `shared` of them far beyond every null draw; p-values against an empirical null of N."""
    null = np.sort(rng.standard_normal(N))
    out = {}
    for i in range(S):
        for j in range(i + 1, S):
            k = round(shared * M)
            stat = np.r_[shift + width * rng.standard_normal(M - k), 8 + rng.standard_normal(k)]
            out[i, j] = sh.zscores(inf.feature_pvalues(stat, null), N)
    return out


@pytest.mark.parametrize("shift", [0.0, 1.0, 2.0])
def test_a_shift_with_nothing_shared_is_no_share(shift):
    block = sh.null_share(_group(np.random.default_rng(int(10 * shift)), shift, 0.0), S)
    assert abs(block["estimate"]) <= 0.10  # (f)'s bound; its sd over seeds here is ~0.04
    assert block["bulk"]["shift"]["estimate"] == pytest.approx(shift, abs=0.2)
    assert block["bulk"]["fails"] is None
    # the location test calls 1 - 2 Phi(-shift) of them shared
    expect = 1 - 2 * norm.sf(shift)
    assert block["raw"]["estimate"] == pytest.approx(expect, abs=0.06)


@pytest.mark.parametrize("shared", [0.3, 0.6])
@pytest.mark.parametrize("shift", [0.0, 1.5])
def test_a_planted_share_is_found_whatever_the_shift(shared, shift):
    rng = np.random.default_rng(int(100 * shared + 10 * shift))
    block = sh.null_share(_group(rng, shift, shared), S)
    assert block["estimate"] == pytest.approx(shared, abs=0.08)
    lo, hi = block["ci"]
    assert lo < block["estimate"] < hi and hi - lo < 0.3
    # over lambda the share stays put: the fitted bulk is the unshared features' law
    assert block["lambda_range"][1] - block["lambda_range"][0] <= 0.1


def test_features_beyond_every_null_draw_are_counted_above_the_bulk():
    null = np.sort(np.random.default_rng(1).standard_normal(199))
    z = sh.zscores(inf.feature_pvalues(np.r_[np.zeros(10), np.full(5, 9.0)], null), 199)
    assert np.isinf(z[10:]).all() and np.isfinite(z[:10]).all()
    # a coarse null (200 draws): the capped features must not be taken for the bulk
    rng = np.random.default_rng(2)
    block = sh.null_share({(i, j): sh.zscores(inf.feature_pvalues(
        np.r_[rng.standard_normal(64), np.full(64, 9.0)], null), 199)
        for i in range(3) for j in range(i + 1, 3)}, 3)
    assert block["estimate"] == pytest.approx(0.5, abs=0.08)


def test_the_bulk_check_names_a_null_too_strict_or_of_another_shape():
    rng = np.random.default_rng(3)
    low = sh.null_share(_group(rng, -1.0, 0.0), S)
    assert "below" in low["bulk"]["fails"]
    narrow = sh.null_share(_group(rng, 1.0, 0.0, width=0.3), S)
    assert "wide" in narrow["bulk"]["fails"]
    slightly = sh.null_share(_group(rng, -0.1, 0.0), S)  # within the tolerance
    assert slightly["bulk"]["fails"] is None


def test_nearly_everything_shared_leaves_no_bulk_and_uses_the_null_as_it_is():
    rng = np.random.default_rng(4)
    block = sh.null_share(_group(rng, 0.0, 0.99), S)
    assert not block["bulk"]["fitted"] and block["bulk"]["shift"] is None
    assert block["bulk"]["note"] == sh.NOT_FITTED and block["bulk"]["fails"] is None
    assert block["estimate"] == pytest.approx(0.99, abs=0.02)


def test_unclamped_a_bulk_below_the_null_gives_a_negative_raw_share():
    block = sh.null_share(_group(np.random.default_rng(5), -1.0, 0.0), S)
    assert block["raw"]["estimate"] < -0.3  # shown as it is, not clamped to 0
