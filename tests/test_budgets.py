"""Tokens apart from steps: a held-out set shared by every budget, fixed optimizer steps
(step-matched controls, single-epoch training) and the convergence flag in run.json."""

import json

import pytest
import torch

from saefast.config import (
    ConfigError,
    RunConfig,
    SAEConfig,
    TrainConfig,
    apply_overrides,
)
from saefast.sweep.plan import data_ranges, token_steps
from saefast.train.trainer import convergence, train_saes


def acts(n, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g)


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


@pytest.mark.parametrize("n", [300, 3000])
def test_fixed_steps_are_the_same_for_every_budget(n):
    cfg = TrainConfig(steps=30, batch_size=64, epochs=8)
    (r,) = train_saes(acts(n), None, SAEConfig(32, 4), cfg, [1])
    assert r.metrics["steps"] == 30 and r.history[-1]["step"] == 30
    # 300 tokens: 5 steps a pass -> 6 passes; 3000: 47 a pass -> one pass, cut short
    assert r.metrics["epochs"] == (6 if n == 300 else 1)
    cfg8 = apply_overrides(RunConfig(), {"train.steps": 30, "train.batch_size": 64})
    assert token_steps(cfg8) == 30 * 64


def test_steps_zero_keeps_epochs():
    (r,) = train_saes(acts(640), None, SAEConfig(32, 4), TrainConfig(batch_size=64, epochs=3), [1])
    assert r.metrics["steps"] == 30 and r.metrics["epochs"] == 3


def test_convergence_traces_held_out_fvu_and_flags_a_plateau():
    x = acts(4000)
    (r,) = train_saes(x[:3600], x[3600:], SAEConfig(32, 4), TrainConfig(batch_size=64, epochs=4), [1])
    conv = r.metrics["convergence"]
    assert [t["step"] for t in conv["held_out_fvu"]] == [114, 171, 228]
    assert conv["held_out_fvu"][-1]["fvu"] == pytest.approx(r.metrics["held_out"]["fvu"])
    assert isinstance(conv["converged"], bool)
    flat = convergence([{"step": 1, "fvu": 0.5}, {"step": 2, "fvu": 0.3}, {"step": 3, "fvu": 0.299}])
    steep = convergence([{"step": 1, "fvu": 0.5}, {"step": 2, "fvu": 0.4}, {"step": 3, "fvu": 0.3}])
    assert flat["converged"] is True and steep["converged"] is False
    assert convergence([{"step": 3, "fvu": 0.3}])["converged"] is None


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
