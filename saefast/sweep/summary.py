"""summary.json's content: one row per seed group (its stability beside each null, its
evidence and equivalence, its training health, read from the group's report and its runs'
outcomes), the trends across token budgets (computed by `stats.trend.family_trends`), and
the runs done, skipped and failed. Nothing here writes a file (`pipeline.run_sweep` does).
"""

from __future__ import annotations

from typing import Any

from saefast.report import missing
from saefast.sweep.events import RunOutcome

__all__ = ["summarize"]


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _null_medians(report: dict) -> dict[str, float]:
    """Each null's median for a report (isotropic, covariance, activation where computed);
    trends report the excess over each."""
    kinds = ((report.get("summary") or {}).get("nulls") or {}).get("kinds") or {}
    out = {k: v.get("median_cosine") for k, v in kinds.items() if v.get("median_cosine") is not None}
    if not out:
        base = (report.get("summary") or {}).get("baseline") or {}
        if base.get("median_cosine", base.get("median")) is not None:
            out["isotropic"] = base.get("median_cosine", base.get("median"))
    return out


def _estimate_ci(entry: dict | None) -> dict | None:
    return {"estimate": entry["estimate"], "ci": entry["ci"]} if entry else None


def _null_columns(nulls: dict | None) -> dict[str, Any]:
    """null_medians {kind: median or None (skipped)}, excess {kind: {estimate, ci} or None};
    the same for PW-MCC: null_pw_mcc {kind: the null's mean matched cosine or None},
    excess_pw_mcc_by_null {kind: {estimate, ci} or None}."""
    kinds = (nulls or {}).get("kinds") or {}
    return {"null_medians": {k: v.get("median_cosine") for k, v in kinds.items()},
            "excess": {k: _estimate_ci(v.get("excess_median")) for k, v in kinds.items()},
            "null_pw_mcc": {k: v.get("mean_cosine") for k, v in kinds.items()},
            "excess_pw_mcc_by_null": {k: _estimate_ci(v.get("excess_pw_mcc"))
                                      for k, v in kinds.items()}}


def _beyond_chance(summary: dict) -> dict[str, Any]:
    """Per null judged in the evidence: {share, share_ci, fraction_significant_by}, or None
    where that null was skipped (too few distinct tokens)."""
    out = {}
    for kind, block in ((summary.get("evidence") or {}).get("by_null") or {}).items():
        out[kind] = None if block.get("skipped") else {
            "share": block["share_beyond_chance"]["estimate"],
            "share_ci": block["share_beyond_chance"]["ci"],
            "fraction_significant_by": block["fraction_significant_by"]["estimate"]}
    return out


def _headline(summary: dict) -> dict | None:
    """summary.evidence.headline's row: {null, share, share_ci, n_significant_by, n_matched,
    bulk_shift, reason} (`stats.verdict.headline`), None without evidence."""
    h = (summary.get("evidence") or {}).get("headline")
    if not h:
        return None
    share = h.get("share") or {}
    return {"null": h.get("null"), "share": share.get("estimate"), "share_ci": share.get("ci"),
            "n_significant_by": h.get("n_significant_by"), "n_matched": h.get("n_matched"),
            "by_powered": h.get("by_powered"),
            "bulk_shift": (h.get("bulk_shift") or {}).get("estimate"),
            "reason": h.get("reason")}


def _equivalence(summary: dict) -> dict[str, Any] | None:
    """{shared, shared_ci (decoder and encoder >= threshold), shared_floor, shared_excess
    (the mismatched-pairs floor of it, and the excess over it {estimate, ci}),
    encoder_median, encoder_floor, encoder_excess (the decoder-matched pairs' median encoder
    cosine, its mismatched-pairs floor and the excess over it), r, r_ci
    (Pearson r of the decoder-matched pairs' held-out activations, pairs with a feature that
    never fires there left out), r_floor {mean, median, q95, n} (the token-permutation floor),
    r_above_floor {estimate, ci} (the share of matched pairs above its 95 % quantile),
    r_left_out (how many: never_fire.decoder_pairs_left_out), same_partner, agreement}, None
    when absent."""
    e = summary.get("equivalence") or {}
    enc, act = e.get("encoder"), e.get("activation")
    if not enc and not act:
        return None
    t = f"{summary.get('threshold', 0):g}"
    shared = (enc or {}).get("shared_fraction", {}).get(t) or {}
    r = ((act or {}).get("decoder_pairs_r") or {}).get("median") or {}
    null = (enc or {}).get("null") or {}  # `stats.view_nulls`
    mis, cos = null.get("shared") or {}, null.get("cosine") or {}
    floor = (act or {}).get("floor") or {}
    return {"shared": shared.get("estimate"), "shared_ci": shared.get("ci"),
            "shared_floor": mis.get("floor"), "shared_excess": mis.get("excess"),
            "encoder_median": (cos.get("observed") or {}).get("median"),
            "encoder_floor": (cos.get("floor") or {}).get("median"),
            "encoder_excess": cos.get("excess_median"),
            "r_floor": floor.get("floor"), "r_above_floor": floor.get("above_floor_q95"),
            "r": r.get("estimate"), "r_ci": r.get("ci"),
            "r_left_out": ((act or {}).get("never_fire") or {}).get("decoder_pairs_left_out"),
            "same_partner": ((act or {}).get("same_partner") or {}).get("estimate"),
            "agreement": (((act or {}).get("correlation_matching") or {})
                          .get("agreement_with_decoder") or {}).get("estimate"),
            "pairs_used": e.get("pairs_used")}  # {n, of, rule}: a subset above 20 pairs


def _evidence(summary: dict, key: str, field: str):
    """summary.evidence[key][field], None where a report has no evidence (or no null)."""
    return ((summary.get("evidence") or {}).get(key) or {}).get(field)


def summarize(outcomes: list[RunOutcome], reports: dict[str, dict]) -> dict[str, Any]:
    """One row per group: stability next to its random baseline and training health.
    `global_median` is the pooled median over every pair's matched cosines;
    `median_of_medians` the median of the per-pair medians; `pw_mcc` the pooled mean matched
    cosine (PW-MCC), beside the median everywhere: its interval, its excess over the
    isotropic null (`excess_pw_mcc`) and over each null (`excess_pw_mcc_by_null`)."""
    by_group: dict[str, list[RunOutcome]] = {}
    for o in outcomes:
        by_group.setdefault(o.spec.group, []).append(o)
    rows = []
    for gname, members in by_group.items():
        ok = [o for o in members if o.metrics]
        report = reports.get(gname, {})
        s = report.get("summary", {})
        base = s.get("baseline") or {}
        pair_medians = [p["median_cosine"] for p in report.get("pairs", [])]
        intervals = s.get("seed_intervals") or {}  # 90 % over runs; None below 3 runs
        rows.append({
            "group": gname,
            "runs": len(ok),
            "pairs": s.get("n_pairs", 0),
            "median_of_medians": s.get("median_of_medians"),
            "pair_median_min": min(pair_medians, default=None),
            "pair_median_max": max(pair_medians, default=None),
            "global_median": s.get("global_median"),
            "global_median_ci": intervals.get("global_median", {}).get("ci"),
            "excess_median": intervals.get("excess_median", {}).get("estimate"),
            "excess_median_ci": intervals.get("excess_median", {}).get("ci"),
            "pw_mcc": s.get("pw_mcc"),  # PW-MCC: the mean matched cosine, pooled
            "pw_mcc_ci": intervals.get("pw_mcc", {}).get("ci"),
            "excess_pw_mcc": intervals.get("excess_pw_mcc", {}).get("estimate"),
            "excess_pw_mcc_ci": intervals.get("excess_pw_mcc", {}).get("ci"),
            "baseline_pw_mcc": base.get("mean_cosine"),
            "fraction_above": s.get("fraction_above"),
            "baseline_median": base.get("median_cosine", base.get("median")),
            **_null_columns(s.get("nulls")),
            "share_beyond_chance": _evidence(s, "share_beyond_chance", "estimate"),
            "share_beyond_chance_ci": _evidence(s, "share_beyond_chance", "ci"),
            "fraction_significant_by": _evidence(s, "fraction_significant_by", "estimate"),
            "beyond_chance": _beyond_chance(s),
            "headline": _headline(s),
            "equivalence": _equivalence(s),
            "subspace": ((s.get("subspace") or {}).get("verdict") or {}).get("text"),
            "live_only_global_median": _live_only_median(report),
            "dead_fraction": _mean([o.metrics["train"]["dead_fraction"] for o in ok]),
            "held_out_fvu": _mean([(o.metrics.get("held_out") or {}).get("fvu") for o in ok]),
            "decoder_cosine_to_init": _mean(
                [o.metrics["decoder_drift"]["mean_cosine_to_init"] for o in ok]),
        })
    from saefast.stats.trend import family_trends

    configs = {o.spec.group: o.spec.config.to_dict() for o in outcomes}
    return {
        "groups": rows,
        # groups that barely trained; statistics a report could not compute (`report.missing`)
        "warnings": trained_warnings(rows) + [w for g in sorted(reports)
                                              for w in missing.warnings(reports[g], g)],
        # groups that differ only in tokens: slope per decade, seeds resampled jointly
        "trends": family_trends(reports, configs, null_medians=_null_medians),
        "runs": {"done": sum(o.status == "done" for o in outcomes),
                 "skipped": sum(o.status == "skipped" for o in outcomes),
                 "failed": [{"name": o.spec.name, "error": o.error}
                            for o in outcomes if o.status == "failed"]},
    }


def _live_only_median(report: dict) -> float | None:
    """The live-only median; the full one where no feature is dead (no live-only report)."""
    if report.get("live_only") is not None:
        return report["live_only"].get("summary", {}).get("global_median")
    if (report.get("summary") or {}).get("live_only_note"):
        return report["summary"].get("global_median")
    return None


# what the runs measured, not what their token count predicts: decoders still this close to
# their random init, or this many features dead, have not learned the data, and their
# agreement is the init's (shared seed rows aside, chance)
UNTRAINED_COSINE = 0.9
DEAD_FRACTION = 0.5


def trained_warnings(rows: list[dict]) -> list[str]:
    """One line per group whose runs barely trained, from what training measured: mean
    decoder cosine to init >= UNTRAINED_COSINE or dead fraction >= DEAD_FRACTION."""
    out = []
    for r in rows:
        cos, dead = r.get("decoder_cosine_to_init"), r.get("dead_fraction")
        why = []
        if cos is not None and cos >= UNTRAINED_COSINE:
            why.append(f"its decoders are still {cos:.2f} cosine to their random init")
        if dead is not None and dead >= DEAD_FRACTION:
            why.append(f"{dead:.0%} of its features never fired in training")
        if why:
            out.append(f"{r['group']}: {' and '.join(why)}: the SAEs barely trained, so their "
                       "agreement says little about the model (more tokens or steps)")
    return out

