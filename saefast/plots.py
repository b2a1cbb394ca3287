"""Figures of a stability report (PNG, matplotlib's Agg backend, imported only when drawing).

plot_pair_heatmap(report, path)      runs x runs matrix of pairwise median matched cosines
plot_cosine_histogram(report, path)  all matched cosines against the random-matching null
plot_all(report, out_dir)            both, as pair_heatmap.png and cosine_histogram.png, plus
                                     live_only_*.png when the report holds a "live_only" report
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        _pyplot().close(fig)
    return path


def _mode_note(report: dict) -> str:
    return " (live features only)" if report["summary"].get("mode") == "live_only" else ""


def _run_labels(report: dict) -> list[str]:
    runs = report["summary"].get("runs")
    if runs:
        return [r["label"] for r in runs]
    names: list[str] = []  # a report without `runs`: recover the run order from the pairs
    for p in report["pairs"]:
        for n in (p["run_a_name"], p["run_b_name"]):
            if n not in names:
                names.append(n)
    return names


def plot_pair_heatmap(report: dict, path: str | Path) -> Path:
    """Runs x runs heatmap of each pair's median matched cosine (diagonal 1), annotated
    with the values when there are at most 12 runs."""
    plt = _pyplot()
    labels = _run_labels(report)
    n = len(labels)
    med = np.eye(n)  # [n, n]
    for p in report["pairs"]:
        if "index_a" in p:
            i, j = p["index_a"], p["index_b"]
        else:
            i, j = labels.index(p["run_a_name"]), labels.index(p["run_b_name"])
        med[i, j] = med[j, i] = p["median_cosine"]
    size = max(4.0, 0.55 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(med, vmin=0.0, vmax=1.0, cmap="viridis")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="median matched cosine")
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    if n <= 12:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{med[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if med[i, j] > 0.6 else "white")
    s = report["summary"]
    null = s.get("baseline")
    sub = f"; random null median {null['median_cosine']:.3f}" if null else ""
    ax.set_title(f"Median matched decoder cosine per pair{_mode_note(report)}\n"
                 f"{n} runs, {len(report['pairs'])} pairs{sub}", fontsize=10)
    return _save(fig, path)


def plot_cosine_histogram(report: dict, path: str | Path) -> Path:
    """Density histogram of all matched cosines (pooled over pairs) over the random-matching
    null's cosines, with the threshold and both medians marked."""
    plt = _pyplot()
    s = report["summary"]
    obs = np.concatenate([np.asarray(p["all_cosines"], dtype=np.float64)
                          for p in report["pairs"]])
    null = s.get("baseline")
    bins = np.linspace(min(-0.05, float(obs.min())), 1.0, 81)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ax.hist(obs, bins=bins, density=True, alpha=0.65, color="tab:blue",
            label=f"observed: {len(report['pairs'])} pairs, n={obs.size} matches")
    obs_med = float(np.median(obs))
    ax.axvline(obs_med, color="tab:blue", linestyle="--",
               label=f"observed median {obs_med:.3f}")
    if null:
        nc = np.asarray(null["cosines"], dtype=np.float64)
        ax.hist(nc, bins=bins, density=True, histtype="step", linewidth=1.8, color="black",
                label=f"random null: n={nc.size} ({null['n_a']}x{null['n_b']}, d={null['d']})")
        ax.axvline(null["median_cosine"], color="black", linestyle=":",
                   label=f"null median {null['median_cosine']:.3f}")
    thr = s["threshold"]
    frac = np.mean(obs >= thr)
    ax.axvline(thr, color="tab:red", label=f"threshold {thr:g} ({100 * frac:.1f}% at or above)")
    ax.set_xlabel("cosine of matched decoder directions")
    ax.set_ylabel("density")
    ax.set_title(f"Matched decoder cosines{_mode_note(report)} vs random matching\n"
                 f"{s['n_runs']} runs, {obs.size} matched pairs of features", fontsize=10)
    ax.legend(fontsize=8, loc="best", framealpha=0.9)
    return _save(fig, path)


HEATMAP_PNG = "pair_heatmap.png"
HISTOGRAM_PNG = "cosine_histogram.png"


def plot_all(report: dict, out_dir: str | Path) -> list[Path]:
    """Draw every figure of a report (and of its "live_only" report, prefixed live_only_)
    into out_dir; returns the paths written."""
    out_dir = Path(out_dir)
    paths = []
    for rep, prefix in ((report, ""), (report.get("live_only"), "live_only_")):
        if rep and rep.get("pairs"):
            paths.append(plot_pair_heatmap(rep, out_dir / f"{prefix}{HEATMAP_PNG}"))
            paths.append(plot_cosine_histogram(rep, out_dir / f"{prefix}{HISTOGRAM_PNG}"))
    return paths
