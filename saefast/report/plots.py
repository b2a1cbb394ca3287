"""Figures of a stability report (matplotlib's Agg backend, imported only when drawing).

Each function builds a matplotlib Figure and returns it; nothing here writes a file
(`saefast.report.files` saves them, under its file names):

pair_heatmap(report)       runs x runs matrix of pairwise median matched cosines
cosine_histogram(report)   all matched cosines (pooled over pairs) against every null
seed_count_curve(report)   the seed-count curve (share of features found in N-1 others) vs null
pair_medians(report)       the heatmap's [n_runs, n_runs] values (NaN on the diagonal)
heatmap_scale(medians)     its colour range: the off-diagonal values only
close(fig)                 release a figure once it is saved

Both accept the original study's minimal reports too (no `runs`, no `baseline`, no
`index_a`/`index_b`).
"""

from __future__ import annotations

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def close(fig) -> None:
    """Release a figure built here (pyplot keeps every open figure alive)."""
    _pyplot().close(fig)


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


def pair_medians(report: dict) -> np.ndarray:
    """[n_runs, n_runs] matrix of each pair's median matched cosine: NaN on the diagonal
    (a run against itself is not a measurement) and for pairs the report lacks."""
    labels = _run_labels(report)
    n = len(labels)
    med = np.full((n, n), np.nan)
    for p in report["pairs"]:
        if "index_a" in p:
            i, j = p["index_a"], p["index_b"]
        else:
            i, j = labels.index(p["run_a_name"]), labels.index(p["run_b_name"])
        med[i, j] = med[j, i] = p["median_cosine"]
    return med


HEATMAP_MIN_SPAN = 0.10  # colours never span less: seed noise of +-0.005 is not structure


def heatmap_scale(med: np.ndarray) -> tuple[float, float]:
    """(vmin, vmax) of the heatmap's colours: the range of the off-diagonal pair medians, so
    0.40 and 0.60 get different colours (the 1.00 diagonal does not set the scale), widened
    about its middle to HEATMAP_MIN_SPAN: pairs at 0.296-0.306 (seed noise) are not painted
    from one end of the colour map to the other. A single value (two runs) gets that band."""
    vals = med[np.isfinite(med)]
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = float(vals.min()), float(vals.max())
    if hi - lo < HEATMAP_MIN_SPAN:
        mid = (lo + hi) / 2
        return mid - HEATMAP_MIN_SPAN / 2, mid + HEATMAP_MIN_SPAN / 2
    return lo, hi


def pair_heatmap(report: dict):
    """Runs x runs heatmap of each pair's median matched cosine. Colours span the off-diagonal
    values only; the diagonal is drawn grey (a run against itself) and does not set the
    scale. Cells are annotated with the values when there are at most 12 runs."""
    plt = _pyplot()
    labels = _run_labels(report)
    n = len(labels)
    med = pair_medians(report)  # [n, n], NaN on the diagonal
    vmin, vmax = heatmap_scale(med)
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")  # diagonal, missing pairs
    size = max(4.0, 0.55 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(np.ma.masked_invalid(med), vmin=vmin, vmax=vmax, cmap=cmap)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04,
                 label="median matched cosine of the pair")
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    if n <= 12:
        for i in range(n):
            for j in range(n):
                if i == j:
                    ax.text(j, i, "-", ha="center", va="center", fontsize=8, color="dimgrey")
                elif np.isfinite(med[i, j]):
                    light = (med[i, j] - vmin) / (vmax - vmin) > 0.6  # viridis is light on top
                    ax.text(j, i, f"{med[i, j]:.2f}", ha="center", va="center", fontsize=8,
                            color="black" if light else "white")
    s = report["summary"]
    null = s.get("baseline")
    sub = f"; random null median {null['median_cosine']:.3f}" if null else ""
    ax.set_title(f"Median matched decoder cosine per pair{_mode_note(report)}\n"
                 f"{n} runs, {len(report['pairs'])} pairs{sub}; colours span "
                 f"{vmin:.2f}-{vmax:.2f}", fontsize=10)
    return fig


def cosine_histogram(report: dict):
    """Density histogram of all matched cosines (pooled over pairs) over the random null's
    cosines (every draw), with the threshold and both pooled medians marked."""
    plt = _pyplot()
    s = report["summary"]
    obs = np.concatenate([np.asarray(p["all_cosines"], dtype=np.float64)
                          for p in report["pairs"]])
    null = s.get("baseline")
    lo = min(-0.05, float(obs.min()))
    bins = np.linspace(lo, 1.0, 81)
    if (s.get("nulls") or {}).get("kinds"):  # whole stored null bins (0.005) in each bin
        bins = np.arange(np.floor(lo / NULL_BIN) * NULL_BIN, 1.0 + NULL_BIN / 2, NULL_BIN)
    fig, ax = plt.subplots(figsize=(8, 6.5))
    ax.hist(obs, bins=bins, density=True, alpha=0.65, color="tab:blue",
            label=f"observed: {len(report['pairs'])} pairs, n={obs.size} matches")
    obs_med = float(np.median(obs))
    ax.axvline(obs_med, color="tab:blue", linestyle="--",
               label=f"observed pooled median {obs_med:.3f}")
    drawn = _draw_nulls(ax, s.get("nulls"), bins)
    if null and not drawn:  # reports without `nulls`: the isotropic baseline's own draws
        nc = np.asarray(null["cosines"], dtype=np.float64)
        per = null.get("n_per_draw")  # reports written before it was added stored one draw
        draws = null["n_draws"] if per and nc.size == per * null["n_draws"] else 1
        ax.hist(nc, bins=bins, density=True, histtype="step", linewidth=1.8, color="black",
                label=f"random null: {draws} draw{'s' if draws != 1 else ''}, n={nc.size} "
                      f"({null['n_a']}x{null['n_b']}, d={null['d']})")
        ax.axvline(null["median_cosine"], color="black", linestyle=":",
                   label=f"null median {null['median_cosine']:.3f}")
    thr = s["threshold"]
    frac = np.mean(obs >= thr)
    ax.axvline(thr, color="tab:red", label=f"threshold {thr:g} ({100 * frac:.1f}% at or above)")
    ax.set_xlabel("cosine of matched decoder directions")
    ax.set_ylabel("density")
    ax.set_title(f"Matched decoder cosines{_mode_note(report)} vs the nulls\n"
                 f"{s['n_runs']} runs, {obs.size} matched pairs of features", fontsize=10)
    _legend_below(ax, ncol=1)
    fig.tight_layout()
    return fig


NULL_BIN = 0.02  # plot bin width with nulls: 4 of their stored histogram's 0.005 bins
NULL_STYLES = {"isotropic": ("black", "isotropic null"),
               "covariance": ("tab:orange", "covariance null"),
               "activations": ("tab:green", "activation-sampled null"),
               "dictionary": ("tab:purple", "dictionary-covariance null"),
               "spectrum": ("tab:olive", "spectrum-matched null"),
               "trained": ("tab:red", "trained null (gaussian surrogate)"),
               "trained_elliptical": ("tab:brown", "trained null (elliptical surrogate)")}


def _draw_nulls(ax, nulls: dict | None, bins: np.ndarray) -> bool:
    """Each computed null of summary["nulls"] as a step density (its stored histogram
    re-binned onto `bins`) with its median dotted; skipped ones are named in the legend.
    False when the report has no `nulls`."""
    if not nulls or not nulls.get("kinds"):
        return False
    for kind, null in nulls["kinds"].items():
        colour, name = NULL_STYLES.get(kind, ("grey", f"{kind} null"))
        if null.get("skipped"):
            ax.plot([], [], color=colour, linestyle=":", label=f"{name}: skipped")
            continue
        h = null["histogram"]
        edges, counts = np.asarray(h["edges"]), np.asarray(h["counts"], dtype=np.float64)
        centres = (edges[:-1] + edges[1:]) / 2  # fine stored bins -> the plot's bins
        density, _ = np.histogram(centres, bins=bins, weights=counts, density=True)
        ax.stairs(density, bins, color=colour, linewidth=1.6,
                  label=f"{name}: median {null['median_cosine']:.3f}, 99.9% "
                        f"{null['quantiles']['0.999']:.3f} ({null['n_draws']} draws)")
        ax.axvline(null["median_cosine"], color=colour, linestyle=":")
    return True


def _curve_lines(ax, curve: dict, color: str, label: str, dodge: float = 0.0,
                 marker: str = "o") -> float:
    """One seed-count curve: in all N-1 others (solid) and in at least half (dashed). dodge
    shifts it sideways (in runs) and each curve has its own marker, so curves that coincide
    stay visible side by side instead of hiding under the last one drawn. Returns the
    highest point drawn (interval tops included)."""
    top = 0.0
    pts = curve["curve"]
    n = np.array([p["n_runs"] for p in pts], dtype=np.float64)
    for kind, ls, shift in (("all", "-", -0.5), ("half", "--", 0.5)):
        y = np.array([p[kind]["mean"] for p in pts])
        err = np.array([[y_ - p[kind]["jackknife"]["ci"][0], p[kind]["jackknife"]["ci"][1] - y_]
                        if p[kind]["jackknife"] else [0.0, 0.0] for p, y_ in zip(pts, y)]).T
        ax.errorbar(n + dodge + shift * CURVE_DODGE / 2, y, yerr=np.clip(err, 0, None),
                    color=color, linestyle=ls, marker=marker, markersize=4, capsize=2,
                    fillstyle="full" if kind == "all" else "none",
                    label=f"{label}: in {'all' if kind == 'all' else '>= half'} of N-1 others")
        top = max(top, float(np.nanmax(y + np.clip(err[1], 0, None), initial=0.0)))
    return top


CURVE_DODGE = 0.08  # runs between neighbouring curves' points
CURVE_MARKERS = "osD^v<>p"


def _dodges(n: int) -> list[float]:
    return [(i - (n - 1) / 2) * CURVE_DODGE * 2 for i in range(n)]


def _legend_below(ax, ncol: int = 2) -> None:
    """The legend under the axes, readable and off the data."""
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=ncol,
              frameon=False)


_NULL_COLORS = {"isotropic": "tab:orange", "covariance": "tab:green", "activations": "tab:purple",
                "dictionary": "tab:brown"}


def seed_count_curve(report: dict):
    """The seed-count curve of `summary.evidence.seed_count_curve`: for N runs, the share of a
    run's features found in all N-1 others (solid) and in at least half (dashed), at the
    threshold and BY-significant (beyond chance), each beside the same curve on null
    dictionaries (grey); bars: jackknife intervals over runs (at the evidence's `level`). A
    second panel, when the report has data-shaped nulls (`evidence.by_null`): the
    BY-significant curve beyond each null. None without the curve."""
    ev = report["summary"].get("evidence") or {}
    curves = ev.get("seed_count_curve") or {}
    if not curves.get("at_threshold"):
        return None
    plt = _pyplot()
    s = report["summary"]
    beyond = {k: b["seed_count_curve"]["beyond_chance"]  # the spectrum null has no curve
              for k, b in (ev.get("by_null") or {}).items()
              if not b.get("skipped") and "seed_count_curve" in b}
    two = len(beyond) > 1
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(14 if two else 8, 6.5),
                             squeeze=False)
    ax = axes[0, 0]
    styles = {"at_threshold": ("tab:blue", f"cosine >= {s['threshold']:g}"),
              "beyond_chance": ("tab:orange", "BY-significant"),
              "null_at_threshold": ("grey", f"null, cosine >= {s['threshold']:g}"),
              "null_beyond_chance": ("black", "null, BY-significant")}
    present = [k for k in styles if curves.get(k)]
    tops = {ax: max((_curve_lines(ax, curves[key], *styles[key], dodge=dodge, marker=marker)
                     for key, dodge, marker in zip(present, _dodges(len(present)),
                                                   CURVE_MARKERS)), default=0.0)}
    null = ev.get("null") or {}
    level = f"{100 * ev['level']:g}% " if ev.get("level") else ""
    ax.set_title(f"Seed-count curve{_mode_note(report)}: features recurring across runs\n"
                 f"{level}jackknife intervals over runs; null: {null.get('kind', 'none')}",
                 fontsize=10)
    if two:
        right = axes[0, 1]
        tops[right] = max(_curve_lines(right, curve, _NULL_COLORS.get(kind, "tab:red"),
                                       f"beyond {kind}", dodge=dodge, marker=marker)
                          for (kind, curve), dodge, marker in zip(
                              beyond.items(), _dodges(len(beyond)), CURVE_MARKERS))
        right.set_title(f"BY-significant (FDR 5%) against each null\n{level}jackknife "
                        "intervals over runs", fontsize=10)
    for a in axes[0]:
        a.set_xlabel("N runs (seeds)")
        a.set_ylabel("share of a run's features")
        # the y range fits the curves (at least 0 to 0.1), so shares of a few percent
        # are not pressed flat onto the axis of a 0-1 scale
        top = min(1.02, max(0.1, 1.15 * tops[a]))
        a.set_ylim(-0.04 * top, top)
        a.axhline(0, color="lightgrey", linewidth=0.8, zorder=0)
        if tops[a] == 0:
            a.text(0.5, 0.5, "every curve is 0 at every N:\nno feature recurs in these runs",
                   transform=a.transAxes, ha="center", va="center", fontsize=10,
                   color="dimgrey")
        a.set_xticks(range(2, int(s["n_runs"]) + 1))
        _legend_below(a)
    fig.tight_layout()
    return fig
