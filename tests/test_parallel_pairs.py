"""Pairs matched side by side in threads (saefast/match/parallel.py): in order, each pair
the same as when matched alone, truly concurrent, on T // W torch threads each, and an
error in one pair is raised, not lost."""

import threading

import numpy as np
import pytest
import torch

from planted_runs import write_rows
from saefast.match import parallel


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
