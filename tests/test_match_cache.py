"""Pair matchings kept on disk (saefast.match.cache): named by what decides them, read back
exactly, recomputed when damaged, and a report made from them equals one matched afresh."""

import numpy as np
import pytest
import torch

from saefast.match import cache as match_cache
from saefast.match import match_decoders, native_available
from saefast.match.cache import MatchingCache, identity
from saefast.report import files as reports

from planted_runs import make_run

KW = dict(threshold=0.9, top_k=20, live_only=True, solver="auto", plots=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [make_run(root, f"s{i}", seed=i, dead=(0, 5))[0] for i in range(1, 4)]


def test_a_stored_matching_reads_back_exactly_and_a_damaged_one_is_recomputed(tmp_path):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(40, 8, generator=g), torch.randn(30, 8, generator=g)
    cache = MatchingCache(tmp_path)
    first = match_cache.match(cache, a, b, kind="decoder", solver="auto")
    (path,) = tmp_path.glob("*.npz")
    again = match_cache.match(cache, a, b, kind="decoder", solver="auto")
    fresh = match_decoders(a, b)
    for m in (first, again):
        assert np.array_equal(m.rows, fresh.rows) and np.array_equal(m.cols, fresh.cols)
        assert np.array_equal(m.cosines, fresh.cosines) and m.certified == fresh.certified
        assert all(np.array_equal(x, y) for x, y in zip(m.nearest, fresh.nearest))
    path.write_bytes(b"not a zip")  # a torn or foreign file: matched again and replaced
    assert np.array_equal(match_cache.match(cache, a, b, kind="decoder", solver="auto").cosines,
                          fresh.cosines)
    assert cache.get(path.stem) is not None


def test_keys_change_with_kind_solver_content_and_rows(tmp_path):
    cache = MatchingCache(tmp_path)
    a, b = torch.ones(4, 3), torch.zeros(4, 3)
    base = cache.key("decoder", "scipy", identity(a), identity(b))
    assert base == cache.key("decoder", "scipy", identity(a.clone()), identity(b))  # content, not object
    assert base != cache.key("encoder", "scipy", identity(a), identity(b))
    if native_available():
        assert base != cache.key("decoder", "native", identity(a), identity(b))
        # "auto" is keyed by the solver it resolves to
        assert cache.key("decoder", "auto", identity(a), identity(b)) == \
            cache.key("decoder", "native", identity(a), identity(b))
    changed = a.clone()
    changed[0, 0] = 2.0
    assert base != cache.key("decoder", "scipy", identity(changed), identity(b))
    assert base != cache.key("decoder", "scipy", identity(a, np.array([0, 1])), identity(b))
    assert base != cache.key("decoder", "scipy", identity(b), identity(a))  # order matters


def test_a_report_from_stored_matchings_equals_one_matched_afresh(runs, tmp_path, monkeypatch):
    cache = MatchingCache(tmp_path / "matchings")
    fresh = reports.analyze_runs(runs, tmp_path / "fresh", **KW)
    filled = reports.group_report(runs, tmp_path / "filled", **KW, matchings=cache)
    # 3 pairs x (decoder, live-only decoder, encoder)
    assert len(list(cache.folder.glob("*.npz"))) == 9

    def refuse(*args, **kwargs):
        raise AssertionError("matched again")

    monkeypatch.setattr(match_cache, "match_decoders", refuse)
    # another threshold: a new report, from the stored matchings alone
    reread = reports.group_report(runs, tmp_path / "reread", **{**KW, "threshold": 0.5},
                                  matchings=cache)
    assert reread["summary"]["threshold"] == 0.5
    for rep in (filled, reread):
        for p, q in zip(fresh["pairs"], rep["pairs"]):
            assert p["all_cosines"] == q["all_cosines"] and p["a_indices"] == q["a_indices"]
            assert p["encoder"]["cosines"] == q["encoder"]["cosines"]
        for p, q in zip(fresh["live_only"]["pairs"], rep["live_only"]["pairs"]):
            assert p["all_cosines"] == q["all_cosines"] and p["b_indices"] == q["b_indices"]
