"""Figures of a stability report: valid PNGs from real and minimal (original-study) reports,
colours scaled to the pair medians, the null drawn with every draw."""

import struct

import numpy as np
import pytest
import torch

from saefast.report import plots
from saefast.report.assemble import (
    compute_live_only_stability_report,
    compute_stability_report,
)
from saefast.report.files import write_plots
from saefast.runs.artifacts import write_run_dir

PNG = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def save(fig, path):
    """Save a figure the way the tests want it (the library's saving is in saefast.report.files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=60)
    plots.close(fig)
    return path


def make_runs(root, n_runs=3, F=24, d=16):
    g = np.random.default_rng(0)
    shared = g.standard_normal((F // 2, d))
    dirs = []
    for s in range(n_runs):
        rows = np.vstack([shared + 0.1 * g.standard_normal(shared.shape),
                          g.standard_normal((F - F // 2, d))])
        W = torch.tensor(rows, dtype=torch.float32)
        feats = [{"feature_index": i, "dead": i == F - 1, "fire_count": 1} for i in range(F)]
        dirs.append(write_run_dir(root / f"seed{s}", W_enc=W, b_enc=torch.zeros(F), W_dec=W,
                                  b_dec=torch.zeros(d), k=2, features=feats,
                                  run_info={"name": f"seed{s}"}))
    return dirs


def test_plots_of_a_real_report(tmp_path):
    dirs = make_runs(tmp_path)
    for rep in (compute_stability_report(dirs), compute_live_only_stability_report(dirs)):
        mode = rep["summary"]["mode"]
        h = save(plots.pair_heatmap(rep), tmp_path / f"{mode}_heat.png")
        c = save(plots.cosine_histogram(rep), tmp_path / f"{mode}_hist.png")
        assert min(png_size(h)) > 100 and min(png_size(c)) > 100


def test_plots_of_a_minimal_original_report(tmp_path):
    # the original study's keys only: no runs list, no baseline, no index_a/index_b
    g = np.random.default_rng(1)
    names = [f"r{i}" for i in range(15)]  # more than 12 runs: no annotations
    pairs = [{"run_a_name": a, "run_b_name": b, "median_cosine": float(g.random()),
              "all_cosines": g.random(50).tolist()}
             for i, a in enumerate(names) for b in names[i + 1:]]
    rep = {"pairs": pairs, "summary": {"n_runs": 15, "n_pairs": len(pairs), "threshold": 0.9}}
    png_size(save(plots.pair_heatmap(rep), tmp_path / "sub" / "heat.png"))
    png_size(save(plots.cosine_histogram(rep), tmp_path / "hist.png"))
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == ["heat.png", "hist.png"]
    # saved through saefast.report.files, they land atomically with the report's file names
    paths = write_plots(rep, tmp_path / "figs")
    assert sorted(p.name for p in paths) == ["cosine_histogram.png", "pair_heatmap.png"]
    assert not list((tmp_path / "figs").glob(".*"))  # no temporary files left


def test_write_plots_draws_full_and_live_only(tmp_path):
    dirs = make_runs(tmp_path / "runs", n_runs=2)
    rep = compute_stability_report(dirs)
    rep["live_only"] = compute_live_only_stability_report(dirs)
    paths = write_plots(rep, tmp_path / "figs")
    assert sorted(p.name for p in paths) == [
        "cosine_histogram.png", "live_only_cosine_histogram.png",
        "live_only_pair_heatmap.png", "live_only_seed_count_curve.png", "pair_heatmap.png",
        "seed_count_curve.png"]
    for p in paths:
        png_size(p)


def _minimal(medians: dict, n_runs: int) -> dict:
    pairs = [{"run_a_name": f"r{i}", "run_b_name": f"r{j}", "median_cosine": m,
              "all_cosines": [m]} for (i, j), m in medians.items()]
    return {"pairs": pairs, "summary": {"n_runs": n_runs, "n_pairs": len(pairs),
                                       "threshold": 0.9}}


def test_heatmap_colours_span_the_pair_medians_not_the_diagonal():
    rep = _minimal({(0, 1): 0.40, (0, 2): 0.60, (1, 2): 0.50}, 3)
    med = plots.pair_medians(rep)
    assert np.isnan(np.diag(med)).all()  # a run against itself is not a measurement
    assert med[0, 1] == med[1, 0] == 0.40 and med[2, 0] == 0.60
    assert plots.heatmap_scale(med) == (0.40, 0.60)
    fig = plots.pair_heatmap(rep)
    try:
        (im,) = fig.axes[0].get_images()
        assert im.norm.vmin == 0.40 and im.norm.vmax == 0.60
        rgba = im.cmap(im.norm(np.array([0.40, 0.60])))
        assert np.abs(rgba[0] - rgba[1]).max() > 0.3  # 0.40 and 0.60 look different
        assert np.ma.getmaskarray(im.get_array()).diagonal().all()  # diagonal drawn grey
    finally:
        plots.close(fig)
    # seed noise (0.296-0.306) spans at least 0.10 about its middle: nearly one colour
    noise = plots.pair_medians(_minimal({(0, 1): 0.296, (0, 2): 0.306, (1, 2): 0.30}, 3))
    lo, hi = plots.heatmap_scale(noise)
    assert (lo, hi) == pytest.approx((0.251, 0.351))
    fig = plots.pair_heatmap(_minimal({(0, 1): 0.296, (0, 2): 0.306, (1, 2): 0.30}, 3))
    try:
        (im,) = fig.axes[0].get_images()
        rgba = im.cmap(im.norm(np.array([0.296, 0.306])))
        assert np.abs(rgba[0] - rgba[1]).max() < 0.15  # noise does not look like structure
    finally:
        plots.close(fig)
    # one pair: a band around its value; nothing at all: the full cosine range
    assert plots.heatmap_scale(plots.pair_medians(_minimal({(0, 1): 0.8}, 2))) == \
        pytest.approx((0.75, 0.85))
    assert plots.heatmap_scale(np.full((2, 2), np.nan)) == (0.0, 1.0)


def test_histogram_draws_every_draw_of_the_null(tmp_path):
    dirs = make_runs(tmp_path, n_runs=2)
    rep = compute_stability_report(dirs)
    null = rep["summary"]["baseline"]
    fig = plots.cosine_histogram(rep)
    try:
        labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    finally:
        plots.close(fig)
    n = null["n_draws"] * null["n_per_draw"]
    assert any(f"random null: {null['n_draws']} draws, n={n} " in lab for lab in labels), labels
    assert any(lab.startswith("observed pooled median") for lab in labels)
    # a report written before every draw was stored holds one draw, and says so
    old = dict(null, cosines=null["cosines"][:null["n_per_draw"]])
    del old["n_per_draw"]
    rep["summary"]["baseline"] = old
    fig = plots.cosine_histogram(rep)
    try:
        labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    finally:
        plots.close(fig)
    assert any("random null: 1 draw, n=" in lab for lab in labels), labels
