"""Figures of a stability report: valid PNGs from real and minimal (original-study) reports,
colours scaled to the pair medians, the null drawn with every draw."""

import struct
import tempfile
from pathlib import Path

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


def _curve(values):
    """A seed-count curve with these 'in all' means at N = 2, 3, ... ('half' the same)."""
    return {"curve": [{"n_runs": n, "all": {"mean": v, "jackknife": None},
                       "half": {"mean": v, "jackknife": None}}
                      for n, v in enumerate(values, start=2)]}


def _curve_report(values):
    keys = ("at_threshold", "beyond_chance", "null_at_threshold", "null_beyond_chance")
    return {"summary": {"threshold": 0.9, "n_runs": len(values) + 1,
                        "evidence": {"level": 0.9, "null": {"kind": "isotropic"},
                                     "seed_count_curve": {k: _curve(values) for k in keys}}}}


def test_seed_count_curves_stay_visible_and_their_legend_is_off_the_data():
    """Curves that coincide (all at 0, as most are) are drawn side by side, each with its own
    marker, the y range fits small shares, and the legend sits below the axes, readable."""
    fig = plots.seed_count_curve(_curve_report([0.0] * 6))
    try:
        ax = fig.axes[0]
        fig.canvas.draw()
        legend = ax.get_legend()
        assert legend.get_window_extent().y1 < ax.get_window_extent().y0  # under the axes
        assert min(t.get_fontsize() for t in legend.get_texts()) >= 9
        xs = {tuple(np.round(line.get_xdata(), 6)) for line in ax.get_lines()
              if len(line.get_xdata()) == 6}
        assert len(xs) == 8  # 4 curves x (all, half): no two drawn at the same places
        markers = {line.get_marker() for line in ax.get_lines() if len(line.get_xdata()) == 6}
        assert len(markers - {"_"}) == 4  # "_": the error bars' caps
        assert any("every curve is 0" in t.get_text() for t in ax.texts)
    finally:
        plots.close(fig)
    fig = plots.seed_count_curve(_curve_report([0.05, 0.04, 0.03]))
    try:
        lo, hi = fig.axes[0].get_ylim()
        assert 0.05 < hi <= 0.1 and lo < 0  # 5 % is not pressed onto a 0-1 axis
        assert not fig.axes[0].texts
    finally:
        plots.close(fig)
    fig = plots.seed_count_curve(_curve_report([0.9, 0.8]))
    try:
        assert fig.axes[0].get_ylim()[1] == pytest.approx(1.02)
    finally:
        plots.close(fig)


def test_the_histogram_legend_is_below_the_bars():
    dirs = make_runs(Path(tempfile.mkdtemp()), n_runs=2)
    fig = plots.cosine_histogram(compute_stability_report(dirs))
    try:
        ax = fig.axes[0]
        fig.canvas.draw()
        assert ax.get_legend().get_window_extent().y1 < ax.get_window_extent().y0
    finally:
        plots.close(fig)
