"""The data-shaped nulls of a scale study stand on one footing: with a shared held-out block
large enough, every token budget's covariance and activation nulls draw from that block, so
their medians are identical across budgets (report.nulls.null_rows); otherwise each budget
reads the larger of its training rows and its held-out block, and summary.nulls.data says
which. On the tiny random model (no files, no network); the 20,000-token rule is lowered to
the test's 600-token block, the rule itself is checked on run.json records."""

import json

import pytest

from saefast.cli.main import main
from saefast.report import nulls as report_nulls

HELD = 600
BUDGETS = (400, 800)


def tokens(train, held, shared):
    return {"tokens": {"train": train, "held_out": held, "held_out_shared": shared}}


@pytest.mark.parametrize("infos, want", [
    ([tokens(400, 20_000, True), tokens(800, 20_000, True)], (0, 20_000, "held_out")),
    ([tokens(30_000, 5_000, True)], (5_000, 35_000, "training")),  # after the shared block
    ([tokens(400, 5_000, True)], (0, 5_000, "held_out")),  # the larger of the two
    ([tokens(900, 100, False)], (0, 900, "training")),  # held out: the budget's last 10 %
    ([{"tokens": None}], (0, 1234, "store")),  # other tools' runs: the whole store
])
def test_the_rows_the_data_shaped_nulls_read(infos, want):
    start, end, rows, why = report_nulls.null_rows(infos, 1234)
    assert (start, end, rows) == want and why


@pytest.fixture(scope="module")
def study(tmp_path_factory, corpus):
    """Two budgets x two seeds of a 16-feature SAE, one store, a shared 600-token block,
    with the shared-block rule lowered to 500 tokens."""
    root = tmp_path_factory.mktemp("scale")
    mp = pytest.MonkeyPatch()
    mp.setattr(report_nulls, "MIN_MOMENT_TOKENS", 500)
    try:
        rc = main(["sweep", "--model", "tiny", "--hook", "blocks.1.hook_resid_pre", "--corpus",
                   str(corpus), "--features", "16", "--k", "2", "--epochs", "1", "--seeds", "2",
                   "--axis", f"data.tokens={','.join(map(str, BUDGETS))}",
                   "--axis", f"data.held_out_tokens={HELD}",
                   "--out", str(root / "out"), "--cache-dir", str(root / "cache")])
    finally:
        mp.undo()
    assert rc == 0
    reports = {b: json.loads((root / "out" / "reports" / f"L1-f16-k2-t{b}-hot{HELD}"
                              / "stability.json").read_text()) for b in BUDGETS}
    return root, reports


def test_every_budget_draws_its_nulls_from_the_shared_block(study):
    _, reports = study
    data = [reports[b]["summary"]["nulls"]["data"] for b in BUDGETS]
    for d in data:
        assert (d["start"], d["n_rows"], d["rows"]) == (0, HELD, "held_out")
        assert "shared held-out block" in d["why"]
    assert data[0]["rows_key"] == data[1]["rows_key"]
    for kind in ("covariance", "activations"):
        k = [reports[b]["summary"]["nulls"]["kinds"][kind] for b in BUDGETS]
        assert not k[0]["skipped"] and not k[1]["skipped"]
        assert k[0]["median_cosine"] == k[1]["median_cosine"]  # identical, not close
        assert k[0]["quantiles"] == k[1]["quantiles"]


def test_without_a_large_shared_block_each_budget_reads_its_own_rows(study):
    """The real rule (20,000 tokens): the 600-token block is no budget's; the 400-token budget
    reads the held-out block (larger), the 800-token one its training rows after it."""
    root, _ = study
    runs = sorted((root / "out" / "runs").iterdir())
    store = report_nulls.store_of_runs(runs)
    got = {}
    for b in BUDGETS:
        mine = [r for r in runs if json.loads((r / "run.json").read_text())["tokens"]["train"]
                == b]
        src = report_nulls.resolve(mine, store)
        got[b] = (src.start, src.n_rows, src.rows)
    assert got == {400: (0, HELD, "held_out"), 800: (HELD, 800, "training")}


def test_the_trend_has_the_share_beyond_each_null_and_the_page_shows_it(study):
    root, reports = study
    summary = json.loads((root / "out" / "summary.json").read_text())
    (trend,) = summary["trends"]
    shares = trend["share_beyond_chance"]
    assert {"isotropic", "covariance", "activations"} <= set(shares)
    for kind, fit in shares.items():
        got = [reports[b]["summary"]["evidence"]["by_null"][kind]["share_beyond_chance"]
               ["estimate"] for b in BUDGETS]
        assert fit["values"] == got and fit["budgets"] == list(BUDGETS)
        assert fit["slope_per_decade"] == pytest.approx((got[1] - got[0]) / 0.30103, rel=1e-4)
        assert fit["ci"] is None  # two seeds: no interval
    assert "share beyond covariance null" in (root / "out" / "report.html").read_text()
