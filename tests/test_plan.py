"""sweep/plan.py: what a sweep will do before it does it: harvest jobs, warnings, the
matchings a report makes of each pair, the --dry-run estimate, and the data ranges (token
budgets apart from steps: a held-out set shared by every budget)."""

import json

import pytest
import torch

from saefast.config import ConfigError, MatchConfig, RunConfig, apply_overrides
from saefast.sweep import plan
from saefast.sweep.experiment import Experiment, expand, load_experiment
from saefast.sweep.plan import data_ranges, harvest_jobs
from saefast.sweep.plan_warnings import undertrained_warnings


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


def test_at_20_seeds_the_estimate_counts_encoder_matchings_of_the_views_pairs_only():
    """190 decoder matchings, but the equivalence views (and so the encoder matchings) on
    one pair a run (stats.equivalence.equivalence_pairs), as the report makes them."""
    from saefast.stats import equivalence

    assert plan.EQUIVALENCE_MAX_PAIRS == equivalence.EQUIVALENCE_MAX_PAIRS
    runs = expand(Experiment(), overrides={"sae.n_features": 16384},
                  axes=[("train.seed", list(range(1, 21)))])
    est = plan.estimate(runs, memory_budget=2**34)
    one = plan.MATCH_SECONDS_16K
    assert est["pairs"] == 190
    assert est["match_seconds"] == pytest.approx(
        190 * (one + plan.PAIR_SECONDS) + 20 * one + plan.GROUP_REPORT_SECONDS)


def test_the_harvest_estimate_knows_each_models_speed():
    """gemma-270m's forward pass is ~20x MiniLM's per token here: a dry run of the gemma
    domains study said ~40 s of harvest for what took ~6 minutes."""
    from pathlib import Path

    gemma = expand(load_experiment(Path(__file__).parents[1] / "experiments" /
                                   "domains_gemma.yaml"))
    est = plan.estimate(gemma, memory_budget=2**34)
    tokens = est["harvest_tokens"]
    assert tokens == 4 * 30000  # four corpora, 10K training tokens after a 20K held-out block
    assert est["harvest_seconds"] >= tokens / plan.harvest_rate("gemma-270m") >= 180
    minilm = expand(Experiment(), overrides={"data.tokens": 30000})
    assert plan.estimate(minilm, memory_budget=2**34)["harvest_seconds"] < 30


# ---------------------------------------------------------------------------- token budgets


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


def test_a_sweep_with_a_shared_held_out_set_and_fixed_steps(tmp_path, corpus):
    """Tokens apart from steps, down to run.json and the trend (the trainer's side of fixed
    steps: test_settings.py; the convergence flag: test_evaluation.py)."""
    from saefast.cli.main import main

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


def test_runs_that_barely_trained_are_flagged_from_what_they_measured():
    """The warning after a sweep rests on what training measured (cosine to init, dead
    share), not on a token count: a group at 0.99 cosine to its init is flagged whatever its
    budget, one that moved is not."""
    from saefast.sweep.summary import trained_warnings

    rows = [{"group": "still-init", "decoder_cosine_to_init": 0.99, "dead_fraction": 0.0},
            {"group": "mostly-dead", "decoder_cosine_to_init": 0.4, "dead_fraction": 0.65},
            {"group": "trained", "decoder_cosine_to_init": 0.21, "dead_fraction": 0.0},
            {"group": "unknown", "decoder_cosine_to_init": None, "dead_fraction": None}]
    warnings = trained_warnings(rows)
    assert len(warnings) == 2
    assert warnings[0].startswith("still-init:") and "0.99 cosine to their random init" in warnings[0]
    assert warnings[1].startswith("mostly-dead:") and "65% of its features never fired" in warnings[1]


def test_the_live_only_median_is_the_full_one_when_no_feature_is_dead():
    """A report with no dead feature has no live-only twin (summary.live_only_note); the
    sweep's `live` column then shows the full median, not a blank."""
    from saefast.sweep.summary import _live_only_median

    full = {"summary": {"global_median": 0.3, "live_only_note": "no run has a dead feature"},
            "live_only": None}
    assert _live_only_median(full) == 0.3
    twin = {"summary": {"global_median": 0.3}, "live_only": {"summary": {"global_median": 0.4}}}
    assert _live_only_median(twin) == 0.4
    assert _live_only_median({"summary": {"global_median": 0.3}}) is None  # not asked for


def test_the_memory_estimate_covers_the_report_as_well_as_training():
    """A 16K-feature sweep peaked in its report (1.16 GiB measured) above the training
    pass's estimate (0.76 GiB): the dry run's peak is the larger of the two."""
    runs = expand(Experiment(), overrides={"sae.n_features": 16384, "data.tokens": 5000},
                  axes=[("train.seed", [1, 2, 3])])
    est = plan.estimate(runs, memory_budget=2**34)
    assert est["peak_memory_bytes"] == max(plan.PROCESS_BYTES + est["rows"][0]["memory_bytes"],
                                           plan.report_bytes(16384, 3, 384))
    assert est["peak_memory_bytes"] >= 1.16 * 2**30
    assert plan.report_bytes(16384, 20, 384) > plan.report_bytes(16384, 3, 384)


def test_a_sweeps_peak_memory_is_within_the_dry_runs_estimate(tmp_path, corpus):
    """Measured in a process of its own, as a user runs it (summary.json `memory`)."""
    import subprocess
    import sys

    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "saefast.cli.main", "sweep", "--model", "tiny", "--hook",
         "blocks.1.hook_resid_pre", "--corpus", str(corpus), "--tokens", "800", "--features",
         "16", "--k", "2", "--epochs", "2", "--seeds", "3", "--out", str(out),
         "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    mem = json.loads((out / "summary.json").read_text())["memory"]
    assert 0 < mem["peak_bytes"] <= mem["estimate_bytes"]
    assert "peak memory" in " ".join(done.stdout.split())
    for run in (out / "runs").glob("*-s*"):  # each run's training process, in its run.json
        timings = json.loads((run / "run.json").read_text())["timings"]
        assert 0 < timings["peak_memory_bytes"] <= mem["peak_bytes"]
