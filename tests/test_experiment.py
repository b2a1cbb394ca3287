"""sweep/experiment.py: experiment files (base / variants / grid) and --axis values parsed,
the grid expanded into runs, run and group names, and the shipped experiments."""

import textwrap

import pytest

from saefast.config import ConfigError, RunConfig, apply_overrides
from saefast.sweep.experiment import (
    Experiment,
    expand,
    group_name,
    load_experiment,
    parse_axis,
    parse_values,
    run_name,
)


def test_parse_values_ranges_and_lists():
    assert parse_values("1..5") == [1, 2, 3, 4, 5]
    assert parse_values("8,16, 32") == [8, 16, 32]
    assert parse_values("1e-3,3e-4") == [1e-3, 3e-4]
    assert parse_values([1000, "2..3"]) == [1000, 2, 3]
    with pytest.raises(ConfigError):
        parse_values("5..1")


def test_parse_axis():
    assert parse_axis("train.seed=1..3") == ("train.seed", [1, 2, 3])
    with pytest.raises(ConfigError, match="KEY=VALUES"):
        parse_axis("train.seed")


def test_run_names_are_stable_and_group_by_seed():
    cfg = apply_overrides(RunConfig(), {"model.hook": "blocks.3.hook_resid_pre", "data.tokens": 30000,
                                        "train.seed": 2})
    assert run_name(cfg) == "L3-f128-k8-t30000-s2"
    assert group_name(cfg) == "L3-f128-k8-t30000"
    other = apply_overrides(cfg, {"train.lr": 3e-4, "model.name": "tiny", "data.corpus": "/x/my.txt"})
    # only the keys an experiment varies get labels
    assert run_name(other) == "L3-f128-k8-t30000-s2"
    assert run_name(other, ["data.corpus", "model.name", "train.lr"]) == "tiny-my.txt-L3-f128-k8-t30000-lr0.0003-s2"
    mlp = apply_overrides(cfg, {"model.hook": "blocks.1.hook_mlp_out"})
    assert run_name(mlp).startswith("L1mlp_out-")


def test_varied_keys_label_names_but_core_and_match_keys_do_not():
    exp = Experiment(variants=[{"train.lr": 1e-3}, {"train.lr": 3e-4}],
                     grid={"train.seed": [1], "sae.k": [4, 8], "match.threshold": [0.5]})
    names = {r.name for r in expand(exp)}
    assert names == {"L0-f128-k4-t30000-lr0.001-s1", "L0-f128-k4-t30000-lr0.0003-s1",
                     "L0-f128-k8-t30000-lr0.001-s1", "L0-f128-k8-t30000-lr0.0003-s1"}


def test_expand_variants_times_grid_and_axes_add_to_grid():
    exp = Experiment(base={"sae.k": 4}, variants=[{"model.hook": "blocks.0.hook_resid_pre"},
                                                  {"model.hook": "blocks.1.hook_resid_pre"}],
                     grid={"train.seed": [1, 2]})
    runs = expand(exp, axes=[("data.tokens", [100, 200])])
    assert len(runs) == 2 * 2 * 2
    assert len({r.name for r in runs}) == 8
    assert len({r.group for r in runs}) == 4
    assert all(r.config.sae.k == 4 for r in runs)
    # growing the grid keeps existing names
    more = expand(exp, axes=[("data.tokens", [100, 200]), ("train.seed", [1, 2, 3])])
    assert {r.name for r in runs} < {r.name for r in more}


def test_overrides_set_base_keys_and_bad_keys_fail():
    runs = expand(Experiment(), overrides={"sae.n_features": 64, "sae.k": 2})
    assert runs[0].config.sae.n_features == 64
    with pytest.raises(ConfigError, match="unknown config key 'sae.features'"):
        expand(Experiment(), axes=[("sae.features", [1])])


def test_load_experiment(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(textwrap.dedent("""
        base:
          sae: {n_features: 32, k: 4}
        variants:
          - {model: {hook: blocks.1.hook_resid_pre}}
        grid:
          train.seed: 1..3
    """))
    exp = load_experiment(path)
    runs = expand(exp)
    assert [r.config.train.seed for r in runs] == [1, 2, 3]
    assert runs[0].config.model.hook == "blocks.1.hook_resid_pre"


@pytest.mark.parametrize("text, message", [
    ("base: {sae: {n_feat: 3}}", "unknown config key 'sae.n_feat'"),
    ("bsae: {}", "unknown top-level key"),
    ("base: [1, 2]", "mapping"),
    ("base: {sae: {k: 999}}", "sae.k must be between"),
    ("base: {sae: {k: [", "invalid YAML"),
])
def test_bad_experiment_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_experiment(path)


def test_missing_experiment_file(tmp_path):
    with pytest.raises(ConfigError, match="no such experiment file"):
        load_experiment(tmp_path / "nope.yaml")


def test_shipped_experiment_is_the_documented_study():
    from pathlib import Path

    runs = expand(load_experiment(Path(__file__).parents[1] / "experiments" / "seed_repro.yaml"))
    assert len(runs) == 3 * 2 * 5
    groups = {r.group for r in runs}
    assert groups == {"L0-f128-k8-t1000-e8", "L0-f128-k8-t30000-e8", "L3-f128-k8-t1000-e8",
                      "L3-f128-k8-t30000-e8", "L3-f512-k32-t1000-e10", "L3-f512-k32-t30000-e10"}
    # the study pins the original recipe, whatever the defaults become
    cfg = runs[0].config
    assert (cfg.train.lr, cfg.train.aux_coef, cfg.train.warmup_fraction, cfg.train.b_dec_init) == \
        (0.001, 0.0, 0.0, "mean")


def test_scale_experiment_spans_1k_to_1m_tokens_with_five_seeds():
    from pathlib import Path

    runs = expand(load_experiment(Path(__file__).parents[1] / "experiments" / "scale.yaml"))
    budgets = sorted({r.config.data.tokens for r in runs})
    assert budgets[0] == 1000 and budgets[-1] == 1_000_000
    # an epoch-matched and a step-matched run of every budget and seed
    for steps in (0, 3000):
        assert all(sum(r.config.data.tokens == t and r.config.train.steps == steps for r in runs) == 5
                   for t in budgets)
    assert {r.config.data.corpus for r in runs} == {"python-code"}
    assert {r.config.data.held_out_tokens for r in runs} == {20000}  # one held-out set
