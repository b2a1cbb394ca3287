"""Plots of a stability report: valid PNGs from real and minimal (original-study) reports."""

import struct

import numpy as np
import torch

from saefast.artifacts import write_run_dir
from saefast.plots import plot_cosine_histogram, plot_pair_heatmap
from saefast.stability import compute_live_only_stability_report, compute_stability_report

PNG = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


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
        h = plot_pair_heatmap(rep, tmp_path / f"{mode}_heat.png")
        c = plot_cosine_histogram(rep, tmp_path / f"{mode}_hist.png")
        assert min(png_size(h)) > 100 and min(png_size(c)) > 100


def test_plots_of_a_minimal_original_report(tmp_path):
    # the original study's keys only: no runs list, no baseline, no index_a/index_b
    g = np.random.default_rng(1)
    names = [f"r{i}" for i in range(15)]  # more than 12 runs: no annotations
    pairs = [{"run_a_name": a, "run_b_name": b, "median_cosine": float(g.random()),
              "all_cosines": g.random(50).tolist()}
             for i, a in enumerate(names) for b in names[i + 1:]]
    rep = {"pairs": pairs, "summary": {"n_runs": 15, "n_pairs": len(pairs), "threshold": 0.9}}
    png_size(plot_pair_heatmap(rep, tmp_path / "sub" / "heat.png"))
    png_size(plot_cosine_histogram(rep, tmp_path / "hist.png"))
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == ["heat.png", "hist.png"]


def test_plot_all_draws_full_and_live_only(tmp_path):
    from saefast.plots import plot_all

    dirs = make_runs(tmp_path / "runs", n_runs=2)
    rep = compute_stability_report(dirs)
    rep["live_only"] = compute_live_only_stability_report(dirs)
    paths = plot_all(rep, tmp_path / "figs")
    assert sorted(p.name for p in paths) == [
        "cosine_histogram.png", "live_only_cosine_histogram.png",
        "live_only_pair_heatmap.png", "pair_heatmap.png"]
    for p in paths:
        png_size(p)
