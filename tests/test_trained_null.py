"""The trained null end to end (runs.trained_null, sweep.null_runs, report.trained_null,
stats.trained_null) on the tiny random model: which null runs a group gets and with which
recipe and seeds, the one surrogate sample they share (and read again bitwise on resume),
real runs unchanged by it, reuse without retraining, the switch that turns it off, the
report's pair-by-pair excess, runs without a recipe, and the dry run's cost line."""

import json

import numpy as np
import pytest
from safetensors.torch import load_file

from saefast.cli.main import main
from saefast.config import NullsConfig, nulls_from_dict
from saefast.errors import ConfigError
from saefast.runs import trained_null as plans
from saefast.stats import inference
from saefast.stats.trained_null import trained_null

GROUP = "L1-f16-k2-t1000-hot20000"
SEEDS = (1, 2, 3)


def sweep_args(corpus, out, cache, *extra):
    # a shared held-out block of 20,000 tokens: the surrogate's covariance needs >= 20K rows
    return ["sweep", "--model", "tiny", "--hook", "blocks.1.hook_resid_pre", "--corpus",
            str(corpus), "--tokens", "1000", "--axis", "data.held_out_tokens=20000",
            "--features", "16", "--k", "2", "--epochs", "3", "--seeds", str(len(SEEDS)),
            "--out", str(out), "--cache-dir", str(cache), *extra]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, corpus):
    root = tmp_path_factory.mktemp("trained")
    assert main(sweep_args(corpus, root / "on", root / "cache")) == 0
    return root


def null_dirs(out):
    return sorted((out / "runs" / ".null").glob("gaussian-*/runs/s*"))


def weights(run_dir):
    return load_file(str(run_dir / "sae_weights.safetensors"))


def stability(out):
    return json.loads((out / "reports" / GROUP / "stability.json").read_text())


def test_null_runs_train_the_group_recipe_with_its_seeds(sweep):
    out = sweep / "on"
    dirs = null_dirs(out)
    assert [d.name for d in dirs] == [f"s{s}" for s in SEEDS]
    assert len({d.parent.parent for d in dirs}) == 1  # one folder: one sample, one recipe
    for d, seed in zip(dirs, SEEDS):
        null = json.loads((d / "run.json").read_text())
        real = json.loads((out / "runs" / f"{GROUP}-s{seed}" / "run.json").read_text())
        assert null["config"] == real["config"]  # the exact recipe, this seed
        assert null["tokens"] == real["tokens"]  # as many training tokens, same held-out rows
        for key in ("steps", "epochs", "lr", "aux_k", "dead_window"):
            assert null["metrics"][key] == real["metrics"][key]
        assert null["surrogate"]["kind"] == "gaussian"
        assert null["surrogate"]["train_rows"] == [20000, 21000]
        assert null["surrogate"]["moments_rows"] == [0, 20000]  # the larger block: held out
        # the same init and order, other data: other weights
        assert not np.array_equal(weights(d)["decoder.weight"].numpy(),
                                  weights(out / "runs" / f"{GROUP}-s{seed}")["decoder.weight"].numpy())


def test_one_sample_per_group_read_the_same_by_every_seed_and_on_resume(sweep, tmp_path):
    from saefast.config import from_dict
    from saefast.data.store import StoreSource
    from saefast.sweep.passes import training_data
    from saefast.train.trainer import train_saes

    infos = [json.loads((d / "run.json").read_text()) for d in null_dirs(sweep / "on")]
    assert len({i["surrogate"]["sample_fingerprint"] for i in infos}) == 1
    null = plans.plan(sorted((sweep / "on" / "runs").glob(f"{GROUP}-s*")), "gaussian")
    cfg = from_dict(null.config_of(1))
    a, b = training_data(null.sample, cfg), training_data(null.sample, cfg)
    (t0, t1), (h0, h1) = null.sample.train, null.sample.held_out
    assert np.array_equal(a.source.read(0, t1).numpy(), b.source.read(0, t1).numpy())
    real = StoreSource(null.sample.store, 0, t1).read(0, t1).numpy()
    assert np.array_equal(a.source.read(h0, h1).numpy(), real[h0:h1])  # held out: real rows
    assert not np.array_equal(a.source.read(t0, t1).numpy(), real[t0:t1])  # trained: surrogate

    def train(**kw):
        got = training_data(null.sample, cfg)
        return train_saes(got.source.slice(t0, t1), None, cfg.sae, cfg.train, [1, 2],
                          data_key=got.key, checkpoint_dir=tmp_path / "ckpt", **kw)

    whole = train_saes(a.source.slice(t0, t1), None, cfg.sae, cfg.train, [1, 2])
    assert train(stop_after_steps=5) == []  # killed after a checkpoint of its first window
    for x, y in zip(whole, train()):  # a fresh sample object resumes bitwise
        assert np.array_equal(x.sae.W_dec.detach().numpy(), y.sae.W_dec.detach().numpy())


def test_real_runs_are_bitwise_the_same_with_the_null_off(sweep, corpus):
    off = sweep / "off"
    assert main(sweep_args(corpus, off, sweep / "cache", "--no-trained-null")) == 0
    for seed in SEEDS:
        a, b = (weights(o / "runs" / f"{GROUP}-s{seed}") for o in (sweep / "on", off))
        assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert not (off / "runs" / ".null").exists()
    kind = stability(off)["summary"]["nulls"]["kinds"]["trained"]
    assert kind["skipped"] and "turned off" in kind["reason"]


def test_a_second_sweep_and_analyze_reuse_the_null_runs(sweep, corpus, tmp_path, capsys):
    out = sweep / "on"
    before = {d: (d / "sae_weights.safetensors").stat().st_mtime_ns for d in null_dirs(out)}
    assert main(sweep_args(corpus, out, sweep / "cache")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trained_null"]["groups"][GROUP]["gaussian"]["trained"] == 0
    assert summary["trained_null"]["groups"][GROUP]["gaussian"]["reused"] == len(SEEDS)
    runs = sorted((out / "runs").glob(f"{GROUP}-s*"))
    assert main(["analyze", *map(str, runs), "--out", str(tmp_path / "a")]) == 0
    after = {d: (d / "sae_weights.safetensors").stat().st_mtime_ns for d in null_dirs(out)}
    assert after == before  # nothing retrained
    report = json.loads((tmp_path / "a" / "stability.json").read_text())
    assert not report["summary"]["nulls"]["kinds"]["trained"]["skipped"]
    assert "trained null" in capsys.readouterr().out


def test_the_report_states_the_excess_pair_by_pair(sweep):
    report = stability(sweep / "on")
    kind = report["summary"]["nulls"]["kinds"]["trained"]
    assert kind["n_runs"] == len(SEEDS) and kind["n_draws"] == 3 and kind["recipe"]
    seed_of = {i: r["name"].rsplit("-s", 1)[1] for i, r in enumerate(report["summary"]["runs"])}
    observed = {tuple(sorted((int(seed_of[p["index_a"]]), int(seed_of[p["index_b"]])))):
                (p["median_cosine"], p["mean_cosine"]) for p in report["pairs"]}
    diffs = []
    for row in kind["pairs"]:
        assert (row["observed_median"], row["observed_pw_mcc"]) == observed[tuple(row["seeds"])]
        diffs.append((row["observed_median"] - row["null_median"],
                      row["observed_pw_mcc"] - row["null_pw_mcc"]))
    assert kind["excess_median"]["estimate"] == pytest.approx(np.mean([d[0] for d in diffs]))
    assert kind["excess_pw_mcc"]["estimate"] == pytest.approx(np.mean([d[1] for d in diffs]))
    lo, hi = kind["excess_median"]["ci"]
    assert lo <= kind["excess_median"]["estimate"] <= hi
    assert "pair" in kind["excess_median"]["method"]
    live = report["live_only"] if report.get("live_only") else None
    if live:
        assert "trained" in live["summary"]["nulls"]["kinds"]
    # per feature too, so the headline can rest on it: the real pairs' nearest cosines
    # against the null pairs' pooled ones, and the headline takes it among its candidates
    ev = report["summary"]["evidence"]
    block = ev["by_null"]["trained"]
    assert block["null"]["null_pairs"] == 3 and not block["skipped"]
    assert block["null"]["pooled_nearest"] == 3 * 2 * report["summary"]["runs"][0]["n_features"]
    assert block["significance"]["n_matched"] == sum(p["n_matched_pairs"] for p in report["pairs"])
    assert "bulk" in block["share_beyond_chance"]
    assert "trained" in [c["null"] for c in ev["headline"]["candidates"]]
    # the numbers the planted check reports (tests print them with -s)
    print(f"real pooled median {report['summary']['global_median']:.3f}, trained null median "
          f"{kind['median_cosine']:.3f}, excess {kind['excess_median']['estimate']:+.3f} "
          f"{kind['excess_median']['ci']}")


def test_the_excess_interval_carries_the_null_seed_spread():
    """Pair by pair: a null whose pairs differ widens the interval; its mean does not move."""
    pairs = [{"index_a": i, "index_b": j, "median_cosine": 0.5, "mean_cosine": 0.5}
             for i in range(4) for j in range(i + 1, 4)]
    seeds = [1, 2, 3, 4]
    rng = np.random.default_rng(0)

    def entry(spread):
        cos = {(a, b): 0.3 + spread * (a + b) / 10 + 0.01 * rng.standard_normal(16)
               for a in seeds for b in seeds if a < b}
        return trained_null(pairs, seeds, cos, name="trained", surrogate="gaussian",
                            recipe="r", hist_edges=np.linspace(-1, 1, 11))

    flat, spread = entry(0.0), entry(0.2)
    width = [e["excess_median"]["ci"][1] - e["excess_median"]["ci"][0] for e in (flat, spread)]
    assert width[1] > 5 * width[0]
    ex = spread["excess_median"]
    assert ex["estimate"] == pytest.approx(np.mean([0.5 - r["null_median"] for r in spread["pairs"]]))
    data = inference.PairedRuns.from_dict(4, {(a - 1, b - 1): [0.5 - r["null_median"]]
                                              for r in spread["pairs"] for a, b in [r["seeds"]]})
    assert ex["se"] == pytest.approx(inference.jackknife(data, inference.mean())["se"])


def planted_group(root, n, **config):
    """n run dirs whose run.json names a recipe and a store (no weights: plan reads run.json)."""
    from saefast.fsio import write_json_atomic

    store = root / "store"
    store.mkdir(exist_ok=True)
    dirs = []
    for seed in range(1, n + 1):
        d = root / f"g-s{seed}"
        d.mkdir()
        write_json_atomic(d / "run.json", {
            "group": "g", "config": {"sae": {"n_features": 8, "k": 2},
                                     "train": {"seed": seed, "lr": 1e-3, **config}},
            "activation_store": str(store), "model": {"d_model": 4},
            "tokens": {"train": 30_000, "held_out": 3_000, "held_out_shared": False}})
        dirs.append(d)
    return dirs


@pytest.mark.parametrize("n, expect", [(6, (1, 2, 3, 4, 5)), (2, None)])
def test_null_seeds_are_the_first_five_and_at_least_three(tmp_path, monkeypatch, n, expect):
    from saefast.data import store

    monkeypatch.setattr(store, "rows_key", lambda s, n: "k")  # the planted store has no shards
    got = plans.plan(planted_group(tmp_path, n), "gaussian")
    if expect is None:
        assert isinstance(got, str) and "needs >= 3" in got
    else:
        assert got.seeds == expect and got.sample.train == (0, 30_000)
        assert got.folder.parent == tmp_path / ".null"


def test_runs_without_a_recipe_or_a_store_skip_it_with_the_reason(tmp_path):
    from saefast.report import files as reports

    from planted_runs import make_run

    dirs = [make_run(tmp_path, f"r{s}", s)[0] for s in (1, 2, 3)]
    report = reports.analyze_runs(dirs, tmp_path / "out", plots=False)
    kind = report["summary"]["nulls"]["kinds"]["trained"]
    assert kind["skipped"] and "no training recipe" in kind["reason"]
    (tmp_path / "s").mkdir()
    streamed = planted_group(tmp_path / "s", 3)
    for d in streamed:  # a streamed run names no store
        info = json.loads((d / "run.json").read_text())
        (d / "run.json").write_text(json.dumps({**info, "activation_store": "stream (no disk cache)"}))
    assert plans.plan(streamed, "gaussian") == plans.STREAMED


def test_the_config_key_turns_it_off(tmp_path):
    from saefast.sweep.experiment import load_experiment

    path = tmp_path / "exp.yaml"
    path.write_text("grid: {train.seed: 1..3}\nnulls: {trained: false}\n")
    assert load_experiment(path).nulls == NullsConfig(trained=False)
    assert load_experiment(path).nulls.kinds() == ()
    assert nulls_from_dict({"trained_kind": "both"}).kinds() == ("gaussian", "elliptical")
    with pytest.raises(ConfigError, match="nulls.trained_kind"):
        nulls_from_dict({"trained_kind": "laplace"})
    with pytest.raises(ConfigError, match="nulls.train"):
        nulls_from_dict({"train": False})


def test_dry_run_shows_the_null_cost(tmp_path, capsys):
    base = ["sweep", "--features", "128", "--seeds", "5", "--out", str(tmp_path / "o"), "--dry-run"]
    assert main(base + ["--tokens", "30000"]) == 0
    out = capsys.readouterr().out
    assert "trained null: 5 null runs" in out and "training ~" in out
    assert main(base + ["--tokens", "30000", "--no-trained-null"]) == 0
    assert "trained null" not in capsys.readouterr().out
    assert main(base + ["--tokens", "1000"]) == 0  # too few tokens for a covariance: none
    assert "trained null" not in capsys.readouterr().out
