"""Cross-domain recurrence: a sweep over corpora (a grid axis of data.corpus), then analyze on
runs of two corpora matches their decoders against the nulls that need no training set (the
isotropic and dictionary-covariance ones), says which, and skips the data-shaped nulls with
the reason. On the tiny random model (no files, no network)."""

import json

import pytest

from saefast.cli.main import main


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    """Two seeds of a 16-feature SAE on 600 tokens of each of python-docs and math."""
    root = tmp_path_factory.mktemp("domains")
    rc = main(["sweep", "--model", "tiny", "--hook", "blocks.1.hook_resid_pre", "--tokens", "600",
               "--features", "16", "--k", "2", "--epochs", "2", "--seeds", "2",
               "--axis", "data.corpus=python-docs,math",
               "--out", str(root / "out"), "--cache-dir", str(root / "cache")])
    assert rc == 0
    runs = {p.name: p for p in (root / "out" / "runs").iterdir() if not p.name.startswith(".")}
    stores = list((root / "cache" / "activations").iterdir())
    return root, runs, stores


def _corpus(run):
    return json.loads((run / "run.json").read_text())["corpus"]["name"]


def test_a_corpus_axis_gives_one_seed_group_per_domain(domains):
    root, runs, stores = domains
    assert sorted({_corpus(r) for r in runs.values()}) == ["math", "python-docs"]
    assert len(stores) == 2  # one harvest per corpus
    summary = json.loads((root / "out" / "summary.json").read_text())
    assert len(summary["groups"]) == 2


def test_analyze_across_domains_judges_with_the_nulls_of_no_training_set(domains, tmp_path,
                                                                         capsys):
    _, runs, stores = domains
    docs = sorted(r for r in runs.values() if _corpus(r) == "python-docs")
    math = sorted(r for r in runs.values() if _corpus(r) == "math")
    given = [docs[0], math[1]]  # seeds 1 and 2: no shared init
    assert main(["analyze", *map(str, given), "--out", str(tmp_path / "x")]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err
    report = json.loads((tmp_path / "x" / "stability.json").read_text())
    (pair,) = report["pairs"]
    assert pair["n_matched_pairs"] == 16 and pair["baseline_median_cosine"] is not None
    nulls = report["summary"]["nulls"]
    assert not nulls["kinds"]["isotropic"]["skipped"]
    assert not nulls["kinds"]["dictionary"]["skipped"]  # the decoders' own: no one store needed
    for kind in ("covariance", "activations"):
        assert nulls["kinds"][kind]["skipped"]
        assert "different corpora (math, python-docs)" in nulls["kinds"][kind]["reason"]
    # the report says which nulls it has, and why no others
    assert nulls["computed"] == ["isotropic", "dictionary"]
    assert "different corpora (math, python-docs)" in nulls["data"]["cross_domain"]
    assert "isotropic and dictionary-covariance nulls only" in nulls["note"]
    assert set(report["summary"]["evidence"]["by_null"]) == {"isotropic", "dictionary"}
    (line,) = [x for x in captured.out.splitlines() if x.startswith("not computed:")]
    assert "different corpora" in line
    (line,) = [x for x in captured.out.splitlines() if x.startswith("nulls computed:")]
    assert line.startswith("nulls computed: isotropic, dictionary (cross-domain: the runs "
                           "trained on different corpora")
    # the encoder view's floor needs only the runs: a cross-domain report has it
    enc_null = report["summary"]["equivalence"]["encoder"]["null"]
    assert enc_null["cosine"]["floor"]["n"] > 0 and "floor_median" in pair["encoder"]
    assert report["summary"]["equivalence"]["activation"] is None
    skipped = report["summary"]["equivalence"]["skipped"]  # no shared held-out tokens either
    assert any("different corpora" in x and "held-out" in x for x in skipped), skipped
    # a store cannot stand for two corpora: refused in one line, nothing written
    assert main(["analyze", *map(str, given), "--out", str(tmp_path / "y"), "--acts",
                 str(stores[0])]) == 2
    err = capsys.readouterr().err
    assert "different corpora" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "y").exists()


def test_runs_of_one_seed_in_two_domains_are_flagged(domains, tmp_path, capsys):
    _, runs, _ = domains
    s1 = sorted(r for r in runs.values() if r.name.endswith("-s1"))
    assert len(s1) == 2 and {_corpus(r) for r in s1} == {"math", "python-docs"}
    assert main(["analyze", *map(str, s1), "--out", str(tmp_path / "x")]) == 0
    err = capsys.readouterr().err
    assert "share seed 1" in err and "same decoder" in err


def test_the_study_file_and_the_axis_name_every_domain():
    from saefast.sweep import experiment

    runs = experiment.expand(experiment.load_experiment("experiments/domains.yaml"), [], {})
    assert sorted({r.config.data.corpus for r in runs}) == ["math", "multilingual", "python-code",
                                                            "python-docs"]
    assert len(runs) == 20 and {r.config.model.hook for r in runs} == {"blocks.3.hook_resid_pre"}
    assert len({r.group for r in runs}) == 4
