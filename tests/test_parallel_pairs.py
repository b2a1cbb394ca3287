"""Pairs matched side by side in threads (saefast/match/parallel.py): in order, each pair
the same as when matched alone, truly concurrent, on T // W torch threads each, and an
error in one pair is raised, not lost."""

import threading

import numpy as np
import pytest
import torch

from planted_runs import write_rows
from saefast.match import match_decoders, parallel


def test_results_come_back_in_order_and_progress_counts_every_item():
    seen = []
    out = parallel.map_ordered(lambda x: x * x, range(7), n_workers=3,
                               on_done=lambda done, total: seen.append((done, total)))
    assert out == [x * x for x in range(7)]
    assert seen == [(i, 7) for i in range(1, 8)]
    assert parallel.map_ordered(lambda x: x, [], n_workers=2) == []


def test_two_workers_run_at_once_each_on_its_share_of_torch_threads():
    """A barrier two items must reach together: it would time out if they ran one after the
    other. Inside, torch has T // 2 threads; after, T again."""
    barrier = threading.Barrier(2, timeout=20)
    before = torch.get_num_threads()

    def item(_):
        barrier.wait()
        return torch.get_num_threads()

    inside = parallel.map_ordered(item, [0, 1], n_workers=2)
    assert inside == [max(1, before // 2)] * 2
    assert torch.get_num_threads() == before


def test_workers_follow_torch_threads_and_the_item_count():
    assert parallel.workers(190, threads=2) == 2
    assert parallel.workers(1, threads=16) == 1
    assert parallel.workers(190, threads=64) == parallel.MAX_WORKERS
    assert parallel.workers(190, threads=1) == 1


def test_an_error_in_one_item_is_raised():
    def item(x):
        if x == 3:
            raise ValueError("pair 3 failed")
        return x

    with pytest.raises(ValueError, match="pair 3 failed"):
        parallel.map_ordered(item, range(6), n_workers=2)


def test_a_report_matched_in_two_threads_equals_one_matched_in_one(tmp_path, monkeypatch):
    """Dictionaries of 2,100 features: each pair takes the certified sparse path (candidates
    GEMM, sparse solve, certificate), the part that runs in threads."""
    from saefast.report.assemble import compute_stability_report

    rng = np.random.default_rng(0)
    base = rng.standard_normal((2100, 24))
    runs = [write_rows(tmp_path, f"r{s}", base + 0.8 * rng.standard_normal(base.shape), s)
            for s in range(4)]
    reports = {}
    for w in (1, 2):
        monkeypatch.setattr(parallel, "workers", lambda n, threads=None, w=w: min(w, n))
        reports[w] = compute_stability_report(runs, baseline=False)
    one, two = reports[1]["pairs"], reports[2]["pairs"]
    assert [p["solver"] for p in one] == ["native"] * 6 and all(p["certified"] for p in one)
    assert [(p["index_a"], p["index_b"]) for p in two] == [(p["index_a"], p["index_b"]) for p in one]
    for a, b in zip(one, two):
        for key in ("a_indices", "b_indices", "all_cosines", "nearest", "median_cosine"):
            assert a[key] == b[key], key


def _fresh_null_memos(monkeypatch):
    """Every memo of null draws emptied, so the second computation draws again."""
    from saefast.stats import evidence_nulls, matched, nulls, recurrence

    monkeypatch.setattr(evidence_nulls, "_MEMO", {})
    monkeypatch.setattr(matched, "_BASELINE_CACHE", {})
    monkeypatch.setattr(nulls, "_NULL_CACHE", {})
    monkeypatch.setattr(recurrence, "_NN_CACHE", {})


def test_the_evidence_and_subspace_nulls_drawn_side_by_side_equal_those_drawn_in_turn(
        monkeypatch):
    """The evidence judges each null, and the subspace block draws each null, in threads
    (one torch / BLAS thread each): every number equals the one-worker computation, drawn
    afresh (memos emptied) both times, and the two-worker run did use two workers."""
    import json

    from saefast.stats import evidence, subspace
    from saefast.stats.null_model import covariance_null_model, isotropic_null_model

    rng = np.random.default_rng(3)
    d, n = 16, 96
    scales = np.linspace(3.0, 0.2, d)  # anisotropic: the covariance null differs
    base = rng.standard_normal((n, d)) * scales
    rows = [(base + 0.7 * rng.standard_normal((n, d)) * scales).astype(np.float32)
            for _ in range(3)]
    cov = np.diag(scales ** 2)
    pairs_of = []
    for i in range(3):
        for j in range(i + 1, 3):
            m = match_decoders(rows[i], rows[j])
            pairs_of.append({"index_a": i, "index_b": j, "a_indices": m.rows.tolist(),
                             "b_indices": m.cols.tolist(), "all_cosines": m.cosines.tolist(),
                             "threshold": 0.5, "n_matched_pairs": int(m.cosines.size)})
    rates = [rng.uniform(0.001, 0.1, n) for _ in range(3)]
    used = []
    real_map = parallel.map_ordered

    def spy(fn, items, **kw):
        used.append(kw.get("n_workers"))
        return real_map(fn, items, **kw)

    out = {}
    for w in (1, 2):
        _fresh_null_memos(monkeypatch)
        monkeypatch.setattr(parallel, "workers", lambda k, threads=None, w=w: min(w, k))
        monkeypatch.setattr(parallel, "map_ordered", spy)
        models = [isotropic_null_model(d), covariance_null_model(cov, "diag")]
        pairs = [dict(p) for p in pairs_of]
        ev = evidence.add_evidence(pairs, rows, n_features=[n] * 3, labels=["a", "b", "c"],
                                   threshold=0.5, null=models[0], other_nulls=models[1:])
        sub = subspace.subspace_block(rows, rates, models, labels=["a", "b", "c"])
        out[w] = json.dumps([ev, sub, pairs], sort_keys=True, default=str)
    assert used.count(2) == 2  # the evidence's nulls and the subspace's, two at a time
    assert out[1] == out[2]


def test_a_value_two_threads_ask_for_together_is_computed_once():
    """Pairs matched side by side ask for the same null draws at once: the second waits for
    the first's result (the same object) instead of drawing again; other keys do not wait."""
    import time

    cache, calls = {}, []

    def compute(key):
        calls.append(key)
        time.sleep(0.3)
        return [key]

    got = parallel.map_ordered(lambda key: parallel.computed_once(cache, key,
                                                                  lambda: compute(key)),
                               ["null", "null", "other", "null"], n_workers=4)
    assert sorted(calls) == ["null", "other"]
    assert got[0] is got[1] is got[3] and got[2] == ["other"]


def test_the_evidence_null_draws_go_ahead_beside_the_pairs_and_change_nothing(tmp_path,
                                                                            monkeypatch):
    """A report queues its evidence's null draws behind its pair matchings (they depend on
    the shapes only): when the evidence starts, its null pools are already drawn, and the
    report equals one whose evidence drew them itself (memos emptied before each)."""
    import json

    from saefast.report.assemble import compute_stability_report
    from saefast.stats import evidence, evidence_nulls

    rng = np.random.default_rng(5)
    base = rng.standard_normal((300, 24)) * np.linspace(2.0, 0.3, 24)
    runs = [write_rows(tmp_path, f"r{s}", base + 0.8 * rng.standard_normal(base.shape), s)
            for s in range(3)]
    real_add = evidence.add_evidence
    memo_at_start = []

    def add(*args, **kw):
        memo_at_start.append(sum(len(m["pair"]) for m in evidence_nulls._MEMO.values()))
        return real_add(*args, **kw)

    monkeypatch.setattr(evidence, "add_evidence", add)
    reports = {}
    for ahead in (True, False):
        _fresh_null_memos(monkeypatch)
        if not ahead:
            monkeypatch.setattr(evidence, "report_prefetch", lambda *a, **k: ([], []))
        report = compute_stability_report(runs)
        reports[ahead] = json.dumps(_untimed([report["pairs"], report["summary"]["evidence"]]),
                                    sort_keys=True, default=str)
    assert memo_at_start[0] >= 1 and memo_at_start[1] == 0  # drawn ahead, or not
    assert reports[True] == reports[False]


def _untimed(x):
    """x without its wall-clock fields (keys ending in _s or naming seconds)."""
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items()
                if not (k.endswith("_s") or "seconds" in k)}
    if isinstance(x, list):
        return [_untimed(v) for v in x]
    return x
