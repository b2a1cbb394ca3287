"""The headline verdict with planted truth under a real anisotropic Σ (issue 22's done-when
(a), (b), (c), (f)): MiniLM's layer-3 residual stream on the offline Python docs is harvested
into a store once; planted run dirs are judged through `saefast analyze RUNS --acts STORE`
(the headline: summary.evidence.headline, and the terminal's verdict line) and through the
library (stats.share, stats.verdict).

(a) dictionaries that share no feature, rows uniform in the span of the store's top r = 12
    principal directions: headline share <= 0.10, no BY discoveries under the headline's null;
(b) the same with 30 % of the features planted shared: 0.30 +- 0.08;
(c) a common drift toward the top principal directions (rows ~ N(0, Σ^2): more concentrated
    than the covariance null's N(0, Σ)), nothing shared: at chance, though beyond the
    covariance null's location;
(f) nothing shared, every nearest cosine shifted up by 1 and 2 null SDs: headline <= 0.10.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from saefast.cli.main import main
from saefast.data.harvest import harvest
from saefast.data.store import load_activations
from saefast.report import cells
from saefast.stats import inference as inf
from saefast.stats import recurrence as rec
from saefast.stats import share as sh
from saefast.stats import verdict
from saefast.stats.evidence_nulls import EvidenceNulls
from saefast.stats.null_model import covariance_null_model

from planted_runs import write_rows

HOOK = "blocks.3.hook_resid_pre"
F, S, R = 128, 5, 12  # features, runs, planted span (not a power of two: no band boundary)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """6,000 tokens of MiniLM layer 3 on python-docs: a real anisotropic Σ (d = 384)."""
    import os

    cache = tmp_path_factory.mktemp("cache")
    before = os.environ.get("SAEFAST_CACHE_DIR")
    os.environ["SAEFAST_CACHE_DIR"] = str(cache)
    try:
        path = harvest("minilm", [HOOK], "python-docs", 6000)[HOOK]
    finally:
        if before is None:
            os.environ.pop("SAEFAST_CACHE_DIR")
        else:
            os.environ["SAEFAST_CACHE_DIR"] = before
    x = load_activations(path, 6000).double().numpy()
    cov = np.cov(x, rowvar=False)
    w, v = np.linalg.eigh(cov)
    order = np.argsort(w)[::-1]
    return path, cov, v[:, order]  # [d, d] eigenvectors, largest first


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _write(root, dictionaries):
    return [write_rows(root, f"run{k}", rows.astype(np.float32), k + 1)
            for k, rows in enumerate(dictionaries)]


def _analyze(runs, store_path, out, capsys) -> tuple[dict, str]:
    capsys.readouterr()
    assert main(["analyze", *map(str, runs), "--out", str(out), "--acts",
                 str(store_path)]) == 0
    text = capsys.readouterr().out
    report = json.loads((out / "stability.json").read_text())
    return report["summary"]["evidence"]["headline"], text


def _in_top_span(rng, n, basis):
    return _unit(rng.standard_normal((n, basis.shape[1])) @ basis.T)


def _planted(store, shared: float, seed: int):
    """S dictionaries of F unit rows uniform in the top-R span; `shared` of them one common
    direction per feature (+ small noise, so a planted match is cosine ~0.98)."""
    _, _, v = store
    rng = np.random.default_rng(seed)
    top = v[:, :R]
    n_shared = round(shared * F)
    common = _in_top_span(rng, n_shared, top)
    out = []
    for _ in range(S):
        own = _in_top_span(rng, F - n_shared, top)
        noisy = _unit(common + 0.02 * rng.standard_normal(common.shape))
        out.append(rng.permutation(np.vstack([noisy, own])))
    return out


def test_a_same_top_subspace_nothing_shared_is_chance(store, tmp_path, capsys):
    head, text = _analyze(_write(tmp_path, _planted(store, 0.0, 1)), store[0], tmp_path / "a",
                          capsys)
    by = {c["null"]: c for c in head["candidates"]}
    assert head["null"] is not None and head["share"]["estimate"] <= 0.10, head
    # BY keeps P(any false discovery in a pair) <= 5 % under the null: 10 pairs, at most one
    assert head["n_significant_by"] <= 1
    # the covariance null's rows spread over the whole spectrum: every planted feature beats
    # it by more than the bulk fit matches, so it calls them all beyond chance...
    assert by["covariance"]["share"] > 0.9 and by["covariance"]["bulk_shift_sd"] is None
    # ...and the headline names the null that explains the most, in the terminal too
    assert f"beyond chance: {cells.value_cell(head['share']['estimate'])}" in text
    assert f"against the {head['null']} null" in text


def test_b_thirty_percent_shared_is_thirty_percent(store, tmp_path, capsys):
    head, _ = _analyze(_write(tmp_path, _planted(store, 0.30, 2)), store[0], tmp_path / "b",
                       capsys)
    assert abs(head["share"]["estimate"] - 0.30) <= 0.08, head
    lo, hi = head["share"]["ci"]
    assert lo <= 0.30 <= hi + 0.02
    assert head["n_significant_by"] > 0


def test_c_a_common_drift_to_the_top_directions_is_chance(store, tmp_path, capsys):
    _, cov, _ = store
    w, v = np.linalg.eigh(cov)
    root = v * np.clip(w, 0, None)  # Σ^2's factor: rows ~ N(0, Σ^2)
    rng = np.random.default_rng(3)
    dicts = [rng.standard_normal((F, cov.shape[0])) @ root.T for _ in range(S)]
    head, _ = _analyze(_write(tmp_path, dicts), store[0], tmp_path / "c", capsys)
    assert head["share"]["estimate"] <= 0.10, head
    (cov,) = [c for c in head["candidates"] if c["null"] == "covariance"]
    assert cov["share"] > 0.5  # the covariance null alone would call most of them shared


@pytest.mark.parametrize("shift_sd", [1.0, 2.0])
def test_f_a_pure_upward_shift_is_not_a_share(store, shift_sd):
    """Through the library: the covariance null of the store's Σ for F x F pairs; each pair's
    nearest cosines are fresh null draws moved up by shift_sd of the null's SD."""
    _, cov, _ = store
    model = covariance_null_model(cov, "test-f")
    pool = EvidenceNulls(model, 0.9, "auto").pair(F, F)
    sd = float(np.std(pool["near_a"]))
    rng = np.random.default_rng(int(10 * shift_sd))
    z_by_pair = {}
    for i in range(S):
        for j in range(i + 1, S):
            a, b = model.sample([F, F], rng)
            best_a, best_b = rec.nearest_cosines(a, b)
            p_a = inf.feature_pvalues(best_a + shift_sd * sd, pool["near_a"])
            p_b = inf.feature_pvalues(best_b + shift_sd * sd, pool["near_b"])
            z_by_pair[i, j] = np.r_[sh.zscores(p_a, pool["near_a"].size),
                                    sh.zscores(p_b, pool["near_b"].size)]
    block = sh.null_share(z_by_pair, S)
    assert block["raw"]["estimate"] > 0.5  # the location test calls most of them shared
    assert abs(block["bulk"]["shift"]["estimate"] - shift_sd) < 0.4
    head = verdict.headline({"covariance": _evidence_block(block)})
    assert head["null"] == "covariance" and head["share"]["estimate"] <= 0.10


def _evidence_block(share_block: dict) -> dict:
    """The parts of an `evidence.by_null` block the headline reads."""
    return {"share_beyond_chance": share_block, "significance": {"n_significant_by": 0,
                                                                 "n_matched": 1},
            "fraction_significant_by": {"estimate": 0.0, "ci": None}, "seed_count_curve": {}}


def test_a_null_the_bulk_sits_below_is_named_and_not_used():
    """A null too strict (the observed bulk 1 SD below it) does not carry the headline."""
    rng = np.random.default_rng(4)
    fine = {(i, j): rng.standard_normal(400) for i in range(S) for j in range(i + 1, S)}
    low = {k: v - 1.0 for k, v in fine.items()}
    head = verdict.headline({"covariance": _evidence_block(sh.null_share(low, S)),
                             "dictionary": _evidence_block(sh.null_share(fine, S))})
    assert head["null"] == "dictionary"
    (cov,) = [c for c in head["candidates"] if c["null"] == "covariance"]
    assert not cov["used"] and "below" in cov["reason"]
    none = verdict.headline({"covariance": _evidence_block(sh.null_share(low, S))})
    assert none["null"] is None and "bulk check" in none["reason"]
    assert verdict.headline({"isotropic": _evidence_block(sh.null_share(fine, S))})["null"] is None


def test_a_null_too_small_for_by_gives_no_count_not_zero():
    """The trained null's few pairs cannot reach BY's first threshold at large F: the headline
    says so (by_powered False) and the verdict table prints n/a with the reason, not 0."""
    from rich.console import Console

    from cli.null_tables import UNDERPOWERED, print_verdict
    from saefast.sweep.summary import _headline

    rng = np.random.default_rng(5)
    fine = {(i, j): rng.standard_normal(400) for i in range(S) for j in range(i + 1, S)}
    block = _evidence_block(sh.null_share(fine, S))
    block["significance"].update(n_matched=5120, null_large_enough=False)
    head = verdict.headline({"trained": block})
    assert head["null"] == "trained" and head["by_powered"] is False
    console = Console(record=True, width=200)
    row = {"group": "g", "headline": _headline({"evidence": {"headline": head}})}
    print_verdict(console, [row])
    text = " ".join(console.export_text().split())
    assert "n/a/5120" in text and " ".join(UNDERPOWERED.split()) in text and "0/5120" not in text
    block["significance"]["null_large_enough"] = True
    row = {"group": "g", "headline": _headline({"evidence": {"headline": verdict.headline(
        {"trained": block})}})}
    console = Console(record=True, width=200)
    print_verdict(console, [row])
    assert "0/5120" in console.export_text()
