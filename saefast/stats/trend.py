"""How stability changes with the token budget: a slope per decade of tokens, with an interval
that resamples seeds jointly across budgets.

The groups of a sweep that differ only in `data.tokens` form a family (a scale study). Each
budget's statistic (the pooled median of the matched cosines, or its excess over a null) is
computed from the stored pairwise matchings; the slope is the least-squares fit of it against
log10(tokens). Budgets share seeds (seed s is the same init, and the same data order, at every
budget) and data (a smaller budget's tokens are a prefix of a larger one's), so budgets are
not independent: the interval deletes one seed from EVERY budget at once (a delete-one-seed
jackknife over the fitted slope, t(S-1) interval), never one budget's run alone.

The share of features beyond chance (`share_beyond_chance`, one slope per null every budget
judged) needs each pair's p-values under that null, which a report keeps for its primary null
only; its slope is formed from each budget's reported estimate and SE instead
(`slope_of_estimates`): budgets taken as independent groups of runs, the slope's SE
sqrt(sum_b c_b^2 SE_b^2) (c_b: the least-squares weights, SE_b: the budget's delete-one-run
jackknife SE, the run being the unit), a t quantile with Welch-Satterthwaite degrees of
freedom over the budgets' S_b - 1. Where budgets reuse seeds (the same inits) their estimates
correlate positively, which a slope (a contrast) cancels in part, so this interval is then
conservative.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from saefast.stats.inference import (
    DEFAULT_LEVEL,
    PairedRuns,
    Statistic,
    jackknife_interval,
    t_quantile,
)

METHOD = ("least-squares slope of the statistic against log10(tokens); "
          f"{100 * DEFAULT_LEVEL:g}% interval: "
          "delete-one-seed jackknife, the seed removed from every budget at once (budgets "
          "share seeds and data), t(S-1)")


INDEPENDENT_METHOD = (
    "least-squares slope of each budget's estimate against log10(tokens); "
    f"{100 * DEFAULT_LEVEL:g}% interval: budgets as independent groups of runs, SE = "
    "sqrt(sum_b c_b^2 SE_b^2) from each budget's delete-one-run jackknife SE (c_b the "
    "least-squares weights), t with Welch-Satterthwaite df over the budgets' S_b - 1 "
    "(conservative where budgets reuse seeds)")


def seed_aligned(report: dict, seeds: Sequence[int], key: str = "all_cosines") -> PairedRuns:
    """A report's pairs as PairedRuns indexed by position in `seeds` (each report run's seed
    is in its summary's `runs`); pairs of runs whose seed is not in `seeds` are left out."""
    run_seeds = report_seeds(report)
    pos = {s: i for i, s in enumerate(seeds)}
    by_pair = {}
    for p in report["pairs"]:
        a, b = run_seeds[p["index_a"]], run_seeds[p["index_b"]]
        if a in pos and b in pos:
            i, j = sorted((pos[a], pos[b]))
            by_pair[(i, j)] = p[key]
    return PairedRuns.from_dict(len(seeds), by_pair)


def report_seeds(report: dict) -> list:
    """The seed of each run of a report (None for runs from other tools)."""
    return [r.get("seed") for r in report["summary"]["runs"]]


def slope(budgets: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of values against log10(budgets)."""
    x, y = np.log10(np.asarray(budgets, float)), np.asarray(values, float)
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    x, y = x[ok], y[ok]
    return float(np.polyfit(x, y, 1)[0])


def slope_per_decade(budgets: Sequence[int], data: Sequence[PairedRuns],
                     stats: Sequence[Statistic], *, level: float = DEFAULT_LEVEL) -> dict:
    """The slope per decade of tokens of stats[b] evaluated on data[b] (one PairedRuns per
    budget, runs indexed by the same seeds), with its delete-one-seed jackknife interval.
    `stats` may differ per budget (e.g. each budget's own null median subtracted)."""
    if len(budgets) != len(data) or len(data) != len(stats):
        raise ValueError("slope_per_decade: budgets, data and stats must have one entry a budget")
    S = data[0].n_runs
    values = [d.evaluate(s) for d, s in zip(data, stats)]
    est = slope(budgets, values)
    out = {"budgets": list(map(int, budgets)), "values": values, "slope_per_decade": est,
           "method": METHOD, "level": level, "n_seeds": S}
    if S < 3 or len(budgets) < 2:
        return {**out, "se": None, "ci": None}
    reps = []
    for r in range(S):
        vals = []
        for d, s in zip(data, stats):
            pairs = np.asarray(d.pairs)
            keep = ((pairs[:, 0] != r) & (pairs[:, 1] != r)).astype(float)
            vals.append(d.evaluate(s, keep))
        reps.append(slope(budgets, vals))
    interval = jackknife_interval(np.array(reps), est, S, level)
    return {**out, "se": interval["se"], "ci": interval["ci"], "replicates": reps}


def slope_of_estimates(budgets: Sequence[int], estimates: Sequence[float],
                       ses: Sequence[float | None], n_runs: Sequence[int], *,
                       level: float = DEFAULT_LEVEL) -> dict:
    """The slope per decade of tokens of per-budget estimates with their SEs (module doc:
    budgets as independent groups of runs); no interval when a budget has none."""
    x = np.log10(np.asarray(budgets, float))
    c = (x - x.mean()) / np.sum((x - x.mean()) ** 2)  # [B] slope = c @ estimates
    est = float(c @ np.asarray(estimates, float))
    out = {"budgets": list(map(int, budgets)), "values": [float(v) for v in estimates],
           "ses": list(ses), "n_runs": list(map(int, n_runs)), "slope_per_decade": est,
           "method": INDEPENDENT_METHOD, "level": level}
    if any(s is None or not math.isfinite(s) for s in ses) or min(n_runs) < 3:
        return {**out, "se": None, "ci": None, "df": None}
    parts = c ** 2 * np.asarray(ses, float) ** 2  # [B] each budget's share of the variance
    var = float(parts.sum())
    df = (var ** 2 / float(np.sum(parts ** 2 / (np.asarray(n_runs) - 1))) if var > 0
          else float(min(n_runs) - 1))
    q = t_quantile(level, df)
    se = math.sqrt(var)
    return {**out, "se": se, "ci": [est - q * se, est + q * se], "df": df}


def _shares(report: dict) -> dict[str, dict]:
    """{null kind: share_beyond_chance {estimate, se, ...}} the report's evidence judged."""
    by_null = ((report.get("summary") or {}).get("evidence") or {}).get("by_null") or {}
    return {k: b["share_beyond_chance"] for k, b in by_null.items()
            if not b.get("skipped") and b.get("share_beyond_chance")}


def families(group_configs: dict[str, dict], min_budgets: int = 2) -> list[list[str]]:
    """Groups (name -> config dict) that differ only in data.tokens, as lists sorted by
    tokens; families with fewer than `min_budgets` budgets are left out."""
    found: dict[str, list[tuple[int, str]]] = {}
    for name, cfg in group_configs.items():
        rest = {s: dict(v) for s, v in cfg.items()}
        tokens = rest["data"].pop("tokens")
        rest["train"].pop("seed", None)
        key = repr(sorted((s, sorted(v.items())) for s, v in rest.items()))
        found.setdefault(key, []).append((int(tokens), name))
    return [[n for _, n in sorted(members)] for members in found.values()
            if len(members) >= min_budgets]


def family_trends(reports: dict[str, dict], group_configs: dict[str, dict],
                  null_medians: Callable[[dict], dict[str, float]] | None = None) -> list[dict]:
    """For every family of groups that differ only in tokens: the slope per decade of the
    pooled median, and of its excess over each null every budget has (`null_medians(report)`
    -> {kind: median}), over the seeds every budget of the family has; and of the share
    beyond chance under each null every budget judged (`share_beyond_chance`, from each
    budget's estimate and SE: `slope_of_estimates`)."""
    from saefast.stats.inference import excess_median, median

    out = []
    for names in families(group_configs):
        names = [n for n in names if reports.get(n, {}).get("pairs")]
        reps = [reports[n] for n in names]
        if len(reps) < 2:
            continue
        seeds = sorted(set.intersection(*(set(report_seeds(r)) - {None} for r in reps)))
        if len(seeds) < 2:
            continue
        budgets = [int(group_configs[n]["data"]["tokens"]) for n in names]
        data = [seed_aligned(r, seeds) for r in reps]
        row = {"groups": names, "seeds": seeds,
               "global_median": slope_per_decade(budgets, data, [median()] * len(data)),
               "excess_median": {}}
        nulls = [null_medians(r) if null_medians else {} for r in reps]
        for kind in sorted(set.intersection(*(set(n) for n in nulls))) if nulls else []:
            meds = [n[kind] for n in nulls]
            if all(m is not None and math.isfinite(m) for m in meds):
                row["excess_median"][kind] = slope_per_decade(
                    budgets, data, [excess_median(m) for m in meds])
        shares = [_shares(r) for r in reps]
        row["share_beyond_chance"] = {
            kind: slope_of_estimates(budgets, [s[kind]["estimate"] for s in shares],
                                     [s[kind].get("se") for s in shares],
                                     [len(r["summary"]["runs"]) for r in reps])
            for kind in sorted(set.intersection(*(set(s) for s in shares)))}
        out.append(row)
    return out
