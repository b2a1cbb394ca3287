"""A report's long lists beside stability.json (saefast.report.arrays): the split and join are
exact, a sweep's reuse and `load_report` read them back, and a missing, damaged or foreign side
file is one clear error (or a recomputation), never a mixed report."""

import json

import numpy as np
import pytest

from saefast import errors
from saefast.report import arrays
from saefast.report import files as reports

from planted_runs import make_run, plain_report

KW = dict(threshold=0.9, top_k=20, live_only=True, solver="auto", plots=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [make_run(root, f"s{i}", seed=i, dead=(0,) if i == 1 else ())[0] for i in range(1, 4)]


@pytest.fixture
def small_inline(monkeypatch):
    """Planted runs have 48 features: move lists of >= 16 numbers out, as 16K-feature ones are."""
    monkeypatch.setattr(arrays, "INLINE_MAX", 16)


def test_split_and_join_are_exact_per_type(small_inline, tmp_path):
    report = {"pairs": [{"cos": [0.5] * 20, "idx": list(range(20)), "sig": [True, False] * 10,
                         "p": [None] + [0.25] * 19, "short": [1.0, 2.0], "names": ["a"] * 20,
                         "mixed": [1, 2.5] * 10}],
              "summary": {"arr": np.arange(30, dtype=np.int32), "x": 1}}
    tree, found = arrays.split(report)
    assert sorted(found) == ["pairs/0/cos", "pairs/0/idx", "pairs/0/mixed", "pairs/0/p",
                             "pairs/0/sig", "summary/arr"]
    assert tree["pairs"][0]["short"] == [1.0, 2.0] and tree["pairs"][0]["names"] == ["a"] * 20
    assert report["pairs"][0]["cos"] == [0.5] * 20  # the caller's report is not changed
    tree[arrays.KEY] = arrays.write(tmp_path, found)
    back = arrays.join(json.loads(json.dumps(tree)), tmp_path)
    p = back["pairs"][0]
    assert p["idx"].dtype == np.int64 and p["idx"].tolist() == list(range(20))
    assert p["sig"].dtype == np.bool_ and p["sig"].tolist() == [True, False] * 10
    assert np.isnan(p["p"][0]) and p["p"][1:].tolist() == [0.25] * 19  # None (scrubbed NaN)
    assert p["mixed"].tolist() == [1.0, 2.5] * 10 and p["cos"].tolist() == [0.5] * 20
    assert back["summary"]["arr"].tolist() == list(range(30)) and arrays.KEY not in back
    assert arrays.write(tmp_path, {}) is None and not (tmp_path / arrays.ARRAYS_FILE).exists()


def test_a_large_report_keeps_its_lists_beside_and_reads_back_equal(small_inline, runs,
                                                                     tmp_path):
    out = tmp_path / "r"
    rep = reports.analyze_runs(runs, out, **KW)
    assert rep["files"][-2:] == [arrays.ARRAYS_FILE, "stability.json"]
    on_disk = json.loads((out / "stability.json").read_text())
    assert on_disk["pairs"][0]["all_cosines"] == {"$array": "pairs/0/all_cosines"}
    assert on_disk[arrays.KEY]["file"] == arrays.ARRAYS_FILE
    loaded = reports.load_report(out)
    assert plain_report(loaded) == plain_report(rep)
    for p, q in zip(loaded["pairs"], rep["pairs"]):
        assert np.array_equal(p["all_cosines"], q["all_cosines"])
        assert np.array_equal(p["a_indices"], q["a_indices"])
    assert reports.redraw(out)  # the figures draw from the arrays




def test_reuse_reads_the_arrays_and_a_bad_side_file_is_recomputed(small_inline, runs, tmp_path):
    out = tmp_path / "g"
    started = []
    reports.group_report(runs, out, **KW, on_start=lambda: started.append(1))
    again = reports.group_report(runs, out, **KW, on_start=lambda: started.append(2))
    assert started == [1] and isinstance(again["pairs"][0]["all_cosines"], np.ndarray)
    side = out / arrays.ARRAYS_FILE
    good = side.read_bytes()
    side.write_bytes(b"torn")
    with pytest.raises(errors.RunDirError, match="corrupt"):
        reports.load_report(out)
    reports.group_report(runs, out, **KW, on_start=lambda: started.append(3))
    assert started == [1, 3]
    side.unlink()
    with pytest.raises(errors.RunDirError, match="missing"):
        reports.load_report(out)

    # a killed rewrite: another report's side file beside this stability.json
    other = tmp_path / "other"
    reports.analyze_runs(runs[:2], other, **KW)
    (out / arrays.ARRAYS_FILE).write_bytes((other / arrays.ARRAYS_FILE).read_bytes())
    with pytest.raises(errors.RunDirError, match="another stability.json"):
        reports.load_report(out)
    reports.group_report(runs, out, **KW, on_start=lambda: started.append(4))
    assert started == [1, 3, 4] and good


def test_small_dictionaries_keep_their_pairs_in_the_json(runs, tmp_path):
    rep = reports.analyze_runs(runs, tmp_path / "r", **KW)
    on_disk = json.loads((tmp_path / "r" / "stability.json").read_text())
    assert isinstance(on_disk["pairs"][0]["all_cosines"], list)
    assert on_disk["pairs"][0]["all_cosines"] == rep["pairs"][0]["all_cosines"]
