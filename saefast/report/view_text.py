"""A report's lines of the views beyond decoder cosine, each beside its chance floor or its
check: the encoder view and the activation view against their floors (`stats.view_nulls`),
the ablation view with its attribution check and, where that fails, its exact removals
(`stats.ablation`). Plain strings, one text for the terminal (cli/tables.print_report) and
the page (report/html_groups.group_section)."""

from __future__ import annotations

from saefast.report.cells import excess_cell, interval_cell, value_cell


def _ci(entry: dict | None) -> str:
    ci = (entry or {}).get("ci")
    return f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and all(c == c for c in ci) else ""


def view_lines(summary: dict) -> list[str]:
    """One line per view of a report against its floor, then the ablation's."""
    e = summary.get("equivalence") or {}
    lines = []
    null = (e.get("encoder") or {}).get("null")
    if null:
        c, sh = null["cosine"], null["shared"]
        lines.append(
            f"encoder: median cosine of matched pairs {value_cell(c['observed']['median'])}, "
            f"mismatched-pairs floor {value_cell(c['floor']['median'])}, over it "
            f"{excess_cell(c['excess_median'])}; shared at {null['threshold']:g} "
            f"{value_cell(sh['observed'])} vs floor {value_cell(sh['floor'])}, over it "
            f"{excess_cell(sh['excess'])} (90% over runs)")
    floor = (e.get("activation") or {}).get("floor")
    if floor and floor["floor"]["mean"] is not None:
        f, ex, up = floor["floor"], floor["excess_median"], floor["above_floor_q95"]
        lines.append(
            f"activation r: median {value_cell(floor['observed']['median'])}; "
            f"token-permutation floor (blocks of {floor['block_length']} tokens) mean "
            f"{value_cell(f['mean'])}, 95% {value_cell(f['q95'])}; median over it "
            f"{excess_cell(ex)}; matched pairs above its 95% {interval_cell(up)} (90% over "
            "runs; .05 by chance)")
    return lines + ablation_lines(summary.get("ablation"))


def ablation_lines(abl: dict | None) -> list[str]:
    """summary.ablation: the splice, the effect correlation, the attribution check with its
    interval, and, where the check fails, the exact removals of matched features."""
    if not abl:
        return []
    if "splice_output" in abl:
        moves = ", ".join(f"{x['relative_change']:.3f}" for x in abl["splice_output"])
        return [f"ablation on {abl['tokens']:,} tokens of {abl['corpus']} ({abl['model']} has "
                f"no loss): the pooled output moves by {moves} of its norm when spliced; "
                "per-feature effects skipped"]
    splices = ", ".join(f"{x['increase']:+.3f}" for x in abl["splice"])
    med, chk = abl["effect_r_median"], abl["attribution_check"]
    r = "-" if chk["pearson_r"] is None else f"{chk['pearson_r']:.2f}"
    out = [f"ablation on {abl['tokens']:,} tokens of {abl['corpus']}: splice loss increase per "
           f"run {splices}; matched pairs' per-token effect correlation, median "
           f"{med['estimate']:.2f}{_ci(med)}; attribution vs exact removal of "
           f"{len(chk['features'])} features: r = {r}{_ci(chk)}"
           + (" (90%, Fisher z)" if chk.get("ci") else "")]
    if abl.get("effects_trusted") is False:
        out.append(f"  per-token effects not trustworthy: {abl['untrusted_reason']}")
        ex = abl.get("exact_pairs")
        if ex:
            er = "-" if ex["pearson_r"] is None else f"{ex['pearson_r']:.2f}"
            out.append(f"  exact removals of {ex['n']} matched feature pairs: their loss "
                       f"changes agree at r = {er}{_ci(ex)}")
    return out
