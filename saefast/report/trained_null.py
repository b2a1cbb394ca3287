"""The trained null's runs a report reads (they are trained by `saefast.sweep.null_runs`):
where they are, whether they are all there, and their pairs matched like the real ones.

`resolve(run_dirs, nulls)` is cheap (run.json, meta.json and file stats, like
`report.nulls.resolve`) and decides, per surrogate kind, the null run dirs or the reason
there are none (turned off; runs without a recipe; streamed runs; too few seeds or tokens;
not trained yet); `settings` names them for a stored report's reuse (their weights' sizes
and mtimes). `add_trained` matches every null pair through the matching cache
(`report.matchings.pair_matching`, all features and, in a live-only report, the live ones)
and stores `stats.trained_null`'s entry in summary.nulls.kinds (and the live-only report's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from saefast.config import NullsConfig
from saefast.errors import RunDirError, SaefastError
from saefast.match import parallel
from saefast.match.cache import MatchingCache
from saefast.report import matchings as pair_matchings
from saefast.runs import trained_null as plans
from saefast.runs.artifacts import WEIGHTS, LoadedSAE, is_complete_run, load_sae
from saefast.stats import trained_null as stats
from saefast.stats.null_summary import HIST_EDGES

OFF = "turned off (nulls: {trained: false} in the experiment, or --no-trained-null)"


@dataclass(frozen=True)
class TrainedSource:
    """One surrogate kind's null runs for a report: {seed: run dir}, or the reason none."""

    name: str  # the key in summary.nulls.kinds
    kind: str  # the surrogate
    runs: dict[int, Path] = field(default_factory=dict)
    key: str | None = None
    recipe: str | None = None
    reason: str | None = None


def _paths(run_dirs) -> list[Path] | None:
    out = []
    for r in run_dirs:
        path = r.path if isinstance(r, LoadedSAE) else r
        if path is None:
            return None
        out.append(Path(path))
    return out


def resolve(run_dirs, nulls: NullsConfig | None) -> list[TrainedSource]:
    """The trained null's runs of these real runs, per kind `nulls` asks for; [] for None
    (a caller that asks for no trained null at all)."""
    if nulls is None:
        return []
    if not nulls.trained:
        return [TrainedSource(plans.NAMES["gaussian"], "gaussian", reason=OFF)]
    paths = _paths(run_dirs)
    out = []
    for kind in nulls.kinds():
        name = plans.NAMES[kind]
        try:
            null = plans.plan(paths, kind) if paths is not None else plans.NO_RECIPE
        except SaefastError as e:  # a store that cannot be read: the real report goes on
            null = f"the null runs' store cannot be read ({e})"
        if isinstance(null, str):
            out.append(TrainedSource(name, kind, reason=null))
            continue
        runs = {s: null.run_dir(s) for s in null.seeds if is_complete_run(null.run_dir(s))}
        reason = None
        if len(runs) < plans.MIN_SEEDS:
            reason = (f"{len(runs)} of its {len(null.seeds)} null runs are trained (in "
                      f"{null.folder}); `saefast sweep` trains them, and `saefast analyze`")
        out.append(TrainedSource(name, kind, runs if reason is None else {}, null.key,
                                 null.recipe, reason))
    return out


def settings(sources: list[TrainedSource]) -> list[dict]:
    """What the trained null depends on (a stored report's reuse): per kind its key, recipe,
    reason, and the size and mtime of each null run's weights."""
    out = []
    for s in sources:
        stats_ = {}
        for seed, d in sorted(s.runs.items()):
            st = (d / WEIGHTS).stat()
            stats_[str(seed)] = [st.st_size, st.st_mtime_ns]
        out.append({"name": s.name, "kind": s.kind, "key": s.key, "recipe": s.recipe,
                    "reason": s.reason, "runs": stats_})
    return out


def _seeds(saes: list[LoadedSAE]) -> list[int | None]:
    seeds = []
    for s in saes:
        seed = ((s.info or {}).get("config") or {}).get("train", {}).get("seed")
        seeds.append(int(seed) if isinstance(seed, int) else None)
    return seeds


def _null_pairs(nulls: dict[int, LoadedSAE], *, live: bool, solver: str,
                matchings: MatchingCache | None) -> tuple[dict, dict]:
    """({(s, t): matched cosines}, {(s, t): nearest neighbours, `Matching.nearest`}) of every
    pair of null runs, matched like the real pairs."""
    order = sorted(nulls)
    keys = [(a, b) for i, a in enumerate(order) for b in order[i + 1:]]
    found = parallel.map_ordered(lambda ab: pair_matchings.pair_matching(
        nulls[ab[0]], nulls[ab[1]], live_only=live, solver=solver, matchings=matchings)[2], keys)
    return ({k: m.cosines for k, m in zip(keys, found)},
            {k: m.nearest for k, m in zip(keys, found)})


def add_trained(report: dict, saes: list[LoadedSAE], sources: list[TrainedSource], *,
                solver: str, matchings: MatchingCache | None = None,
                partners: dict[bool, dict] | None = None) -> None:
    """summary.nulls.kinds[<name>] of the report (and of its live-only report) for each
    source: `stats.trained_null` from the null pairs' matchings, or {kind, skipped, reason}.
    Reports without summary.nulls (baseline=False) get nothing. partners: {live_only: {(i,
    j): the real pair's nearest neighbours by its matching}} where the report kept them."""
    modes = [(report, False)]
    if report.get("live_only") is not None:
        modes.append((report["live_only"], True))
    seeds = _seeds(saes)
    for source in sources:
        nulls = {seed: load_sae(d) for seed, d in source.runs.items()}
        for rep, live in modes:
            kinds = ((rep.get("summary") or {}).get("nulls") or {}).get("kinds")
            if kinds is None:
                continue
            if source.reason is not None:
                kinds[source.name] = stats.skipped(source.name, source.reason)
                continue
            try:
                cosines, null_partners = _null_pairs(nulls, live=live, solver=solver,
                                                     matchings=matchings)
            except RunDirError as e:  # live-only: a null run with every feature dead
                kinds[source.name] = stats.skipped(source.name, str(e))
                continue
            kinds[source.name] = stats.trained_null(
                rep["pairs"], seeds, cosines, name=source.name, surrogate=source.kind,
                recipe=source.recipe, hist_edges=HIST_EDGES)
            _add_evidence(rep, saes, nulls, cosines, live=live, name=source.name,
                          partners=(partners or {}).get(live, {}), null_partners=null_partners)


def _add_evidence(report: dict, saes: list[LoadedSAE], nulls: dict[int, LoadedSAE],
                  cosines: dict[tuple[int, int], object], *, live: bool, name: str,
                  partners: dict, null_partners: dict) -> None:
    """evidence.by_null[name] of the report (`stats.trained_null.evidence_block`: the
    real pairs' nearest and matched cosines against the null pairs' pooled ones), and the
    headline taken again over it. partners, null_partners: the real and the null pairs'
    nearest neighbours by their matchings (each may be missing: computed then)."""
    from saefast.stats import recurrence as rec
    from saefast.stats import verdict
    from saefast.stats.stability import features

    ev = (report.get("summary") or {}).get("evidence")
    if not ev or ev.get("by_null") is None:
        return
    order = sorted(nulls)
    null_rows = {s: features(nulls[s], live)[1] for s in order}
    null = []
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            best_a, best_b = rec.nearest_cosines(null_rows[a], null_rows[b],
                                                 null_partners.get((a, b)))
            null.append((best_a, best_b, np.asarray(cosines[(a, b)], dtype=np.float64)))
    rows = [features(s, live)[1] for s in saes]
    real = {}
    for p in report["pairs"]:
        i, j = p["index_a"], p["index_b"]
        best_a, best_b = rec.nearest_cosines(rows[i], rows[j], partners.get((i, j)))
        real[(i, j)] = (best_a, best_b, np.asarray(p["all_cosines"], dtype=np.float64))
    ev["by_null"][name] = stats.evidence_block(real, null, len(saes), name=name)
    ev["headline"] = verdict.headline(ev["by_null"])
