"""sweep/plan.py: what a sweep will do before it does it: harvest jobs, warnings, the
matchings a report makes of each pair, and the --dry-run estimate."""

import pytest
import torch

from saefast.config import MatchConfig
from saefast.sweep import plan
from saefast.sweep.experiment import Experiment, expand, load_experiment
from saefast.sweep.plan import harvest_jobs, undertrained_warnings


def test_one_harvest_serves_all_hooks_at_the_largest_budget():
    exp = Experiment(variants=[{"model.hook": "blocks.0.hook_resid_pre"}, {"model.hook": "blocks.3.hook_resid_pre"}],
                     grid={"data.tokens": [1000, 30000], "train.seed": [1, 2]})
    jobs = harvest_jobs(expand(exp))
    assert len(jobs) == 1
    assert jobs[0].tokens == 30000 and sorted(jobs[0].hooks) == ["blocks.0.hook_resid_pre", "blocks.3.hook_resid_pre"]


def test_warns_when_the_budget_cannot_train_the_dictionary():
    small = expand(Experiment(), overrides={"sae.n_features": 16384, "data.tokens": 1000})
    assert undertrained_warnings(small) and "--tokens" in undertrained_warnings(small)[0]
    assert undertrained_warnings(expand(Experiment())) == []


def test_full_grid_dry_run_shows_its_cost_offline(tmp_path, monkeypatch, capsys):
    """experiments/full_grid.yaml (3 models x 5 layers x 4 sizes x 20 seeds, Hugging Face
    names): --dry-run plans it without loading a model or touching the network."""
    import socket
    from pathlib import Path

    from saefast.cli.main import main

    def no_network(*args, **kwargs):
        raise AssertionError("a dry run must not use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setenv("COLUMNS", "200")
    grid = Path(__file__).parents[1] / "experiments" / "full_grid.yaml"
    assert main(["sweep", str(grid), "--dry-run", "--out", str(tmp_path / "out")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "1200 runs" in out and "60 groups" in out and "11400 pairs to match" in out
    assert "token-steps of training" in out
    runs = expand(load_experiment(grid))
    assert len({r.config.model.name for r in runs}) == 3
    assert len({(r.config.model.name, r.config.model.hook) for r in runs}) == 15
    assert sorted({r.config.sae.n_features for r in runs}) == [4096, 8192, 16384, 32768]
    assert not (tmp_path / "out").exists()
    # planned for a GPU cluster from a machine without one (Ray not needed for a dry run)
    assert main(["sweep", str(grid), "--dry-run", "--device", "cuda", "--executor", "ray",
                 "--out", str(tmp_path / "out")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "11400 pairs to match" in out
    if not torch.cuda.is_available():
        assert "no GPU here" in out


def test_a_report_matches_decoders_and_encoders_and_live_features_when_asked():
    assert plan.report_matchings(MatchConfig()) == ("decoder", "encoder")
    assert plan.report_matchings(MatchConfig(live_only=True)) == \
        ("decoder", "decoder-live", "encoder")


@pytest.mark.parametrize("live_only", [False, True])
def test_the_estimate_times_every_matching_a_report_makes(live_only):
    """--dry-run's matching time counts each pair's report matchings, as the Ray executor's
    pair batches do (plan.pair_seconds)."""
    runs = expand(Experiment(), overrides={"sae.n_features": 16384, "match.live_only": live_only},
                  axes=[("train.seed", [1, 2, 3])])
    est = plan.estimate(runs, memory_budget=2**34)
    kinds = 3 if live_only else 2
    per_pair = kinds * plan.MATCH_SECONDS_16K + plan.PAIR_SECONDS
    assert plan.pair_seconds(runs[0].config) == pytest.approx(per_pair)
    assert est["pairs"] == 3
    assert est["match_seconds"] == pytest.approx(3 * per_pair + plan.GROUP_REPORT_SECONDS)
