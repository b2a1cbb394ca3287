"""Tokens apart from steps (saefast/sweep/plan.py's data ranges): a held-out set shared by
every budget, and a sweep over budgets with it and fixed steps, down to run.json and the
trend. The trainer's side of fixed steps is in test_settings.py, the convergence flag in
test_evaluation.py."""

import json

import pytest

from saefast.config import ConfigError, RunConfig, apply_overrides
from saefast.sweep.plan import data_ranges


def test_default_ranges_are_the_last_fraction_of_each_budget():
    cfg = apply_overrides(RunConfig(), {"data.tokens": 30000})
    assert data_ranges(cfg) == ((0, 27000), (27000, 30000))


def test_a_fixed_held_out_set_comes_first_and_is_the_same_for_every_budget():
    small = apply_overrides(RunConfig(), {"data.tokens": 1000, "data.held_out_tokens": 5000})
    large = apply_overrides(RunConfig(), {"data.tokens": 100000, "data.held_out_tokens": 5000})
    assert data_ranges(small) == ((5000, 6000), (0, 5000))
    assert data_ranges(large)[1] == data_ranges(small)[1]  # the same held-out tokens
    assert data_ranges(large)[0][0] >= data_ranges(large)[1][1]  # never trained on


def test_a_fixed_held_out_set_needs_the_cache():
    with pytest.raises(ConfigError, match="held_out_tokens needs the activation cache"):
        apply_overrides(RunConfig(), {"data.held_out_tokens": 100, "data.cache": False})


def test_a_sweep_with_a_shared_held_out_set_and_fixed_steps(tmp_path):
    from pydoc_data.topics import topics

    from saefast.cli.main import main

    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n\n".join(topics[k] for k in sorted(topics)[:40]))
    rc = main(["sweep", "--model", "tiny", "--hook", "blocks.1.hook_resid_pre", "--corpus",
               str(corpus), "--features", "16", "--k", "2", "--axis", "data.tokens=300,600",
               "--axis", "data.held_out_tokens=200", "--axis", "train.steps=12", "--seeds", "2",
               "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "out" / "runs").glob("*/run.json"))]
    assert len(records) == 4
    for rec in records:
        n = rec["config"]["data"]["tokens"]
        assert rec["tokens"] == {"harvested": n + 200, "train": n, "held_out": 200,
                                 "seen": 12 * 256, "held_out_shared": True}
        assert rec["metrics"]["steps"] == 12
        assert len(rec["metrics"]["convergence"]["held_out_fvu"]) == 3
    # the two budgets form one family: a slope per decade of tokens (no interval at 2 seeds)
    (trend,) = json.loads((tmp_path / "out" / "summary.json").read_text())["trends"]
    assert trend["global_median"]["budgets"] == [300, 600] and trend["seeds"] == [1, 2]
    assert trend["global_median"]["ci"] is None
