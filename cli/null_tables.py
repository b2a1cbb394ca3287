"""The null and evidence tables and lines of the `saefast` command (cli/tables.py prints the
rest): per group, each null's median and the excess over it, the share beyond each null; per
report, one line per null and per null the evidence judged. Within 80 columns: a column
that does not fit goes to a table of its own and its caption says so."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from saefast.report import captions
from saefast.report.cells import (
    DATA_KINDS,
    SHORT,
    TRAINED_KINDS,
    bare,
    excess_cell,
    null_medians_cell,
    share_cell,
    value_cell,
)


def compact_table(title: str, caption: str | None = None) -> Table:
    return Table(title=title, caption=caption, box=box.SIMPLE_HEAD, pad_edge=False,
                 collapse_padding=True,
                 title_justify="left", caption_justify="left")


def group_table(title: str, caption: str, columns) -> Table:
    """A summary table: one row per group (names fold only when they must), then the columns,
    numbers right-aligned and never wrapped."""
    table = compact_table(title, caption)
    table.add_column("group", overflow="fold", min_width=12)
    for col in columns:
        table.add_column(col, justify="right", no_wrap=True)
    return table


def null_lines(nulls: dict | None) -> list[str]:
    """One line per null of summary["nulls"] (median, 99.9 % quantile, excess and its 90 %
    interval), then the reason any null is missing."""
    if not nulls:
        return []
    lines = []
    for kind, n in nulls.get("kinds", {}).items():
        if n.get("skipped"):
            continue
        ex, pw = n.get("excess_median"), n.get("excess_pw_mcc")
        paired = " pair by pair" if kind in TRAINED_KINDS else ""
        lines.append(f"{kind} null: median {n['median_cosine']:.3f}, 99.9% quantile "
                     f"{n['quantiles']['0.999']:.3f}; observed median over it{paired} "
                     f"{excess_cell(ex)}" + (" (90% over runs)" if ex else "")
                     + (f"; PW-MCC {n['mean_cosine']:.3f}, observed over it {excess_cell(pw)}"
                        if pw else "")
                     + _pair_deviation_text(n.get("pair_deviation")))
    if nulls.get("computed"):  # which nulls judge the decoders (cross-domain: those of no data)
        cross = (nulls.get("data") or {}).get("cross_domain")
        lines.append(f"nulls computed: {', '.join(nulls['computed'])}"
                     + (f" (cross-domain: {cross})" if cross else ""))
    if nulls.get("note"):
        lines.append(f"not computed: {nulls['note']}")
    return lines


def _pair_deviation_text(dev: dict | None) -> str:
    """The dictionary-covariance null's one Σ for all pairs, and how far a pair's own is."""
    if not dev:
        return ""
    return (f"; one covariance for all pairs, each pair's own within {100 * dev['max']:.0f}% "
            f"of it (Frobenius, median {100 * dev['median']:.0f}%)")


def print_beyond_chance(console: Console, rows: list[dict]) -> None:
    """Per group and null: the share of features recurring beyond that null with its interval
    (details, BY lists and seed-count curves: stability.json, summary.evidence.by_null)."""
    if not any(r.get("beyond_chance") for r in rows):
        return
    shown = list(DATA_KINDS)  # 80 columns: dict has its own table, spec the evidence lines
    table = group_table("features recurring beyond chance (summary.evidence.by_null)",
                        captions.BEYOND_CHANCE, [SHORT[k] for k in shown])
    for row in rows:
        by = row.get("beyond_chance") or {}
        table.add_row(escape(row["group"]), *(share_cell(by.get(k)) for k in shown))
    console.print(table)


def print_verdict(console: Console, rows: list[dict]) -> None:
    """Per group: the headline share beyond chance, the null it rests on, its BY count and
    how far the bulk sits above that null (summary.evidence.headline)."""
    rows = [r for r in rows if r.get("headline")]
    if not rows:
        return
    table = group_table("the verdict: features recurring beyond chance", captions.VERDICT,
                        captions.VERDICT_COLUMNS)
    for row in rows:
        h = row["headline"]
        if h["null"] is None:
            table.add_row(escape(row["group"]), "-", "none", "-", "-")
            continue
        table.add_row(escape(row["group"]), value_cell(h["share"], h["share_ci"]),
                      SHORT.get(h["null"], h["null"]),
                      _by_cell(h),
                      "-" if h["bulk_shift"] is None else f"{h['bulk_shift']:+.1f}")
    console.print(table)
    for row in rows:
        if row["headline"]["null"] is None:
            console.print(escape(f"{row['group']}: no headline: {row['headline']['reason']}"))
        elif row["headline"].get("by_powered") is False:
            console.print(escape(f"{row['group']}: BY n/a: {UNDERPOWERED}"), soft_wrap=True)


UNDERPOWERED = ("the null's pool of matched cosines is too small for any p-value to reach "
                "BY's first threshold at this many features, so no count is given (not 0)")


def _by_cell(h: dict) -> str:
    """BY-significant of matched, or n/a where the null cannot make any significant."""
    if h.get("by_powered") is False:
        return f"n/a/{h['n_matched']}"
    return f"{h['n_significant_by']}/{h['n_matched']}"


def print_nulls(console: Console, rows: list[dict]) -> None:
    """The median against each null, with its interval over runs (groups with nulls only)."""
    rows = [r for r in rows if r.get("null_medians")]
    if not rows:
        return
    table = group_table("against the nulls", captions.NULLS,
                        ("null medians", "over cov", "over act"))
    for row in rows:
        ex = row.get("excess") or {}
        table.add_row(escape(row["group"]), null_medians_cell(row["null_medians"]), excess_cell(ex.get("covariance")),
                      excess_cell(ex.get("activations")))
    console.print(table)
    _print_dictionary_excess(console, rows)
    _print_trained(console, rows)


def _print_dictionary_excess(console: Console, rows: list[dict]) -> None:
    """The excess over the dictionary-covariance null: its own table, since a fourth excess
    column would take the nulls table past 80 columns."""
    rows = [r for r in rows if (r.get("excess") or {}).get("dictionary")
            or (r.get("beyond_chance") or {}).get("dictionary")]
    if not rows:
        return
    table = group_table("against the dictionary null", captions.DICTIONARY_TABLE,
                        ("dict null median", "over dict", "share beyond dict"))
    for row in rows:
        table.add_row(escape(row["group"]), bare((row.get("null_medians") or {}).get("dictionary")),
                      excess_cell((row.get("excess") or {}).get("dictionary")),
                      share_cell((row.get("beyond_chance") or {}).get("dictionary")))
    console.print(table)


def _print_trained(console: Console, rows: list[dict]) -> None:
    """The trained null: its median and the real pairs' excess over its pairs, pair by pair."""
    for kind in TRAINED_KINDS:
        shown = [r for r in rows if (r.get("null_medians") or {}).get(kind) is not None]
        if not shown:
            continue
        table = group_table(f"against the {kind.replace('_', ' ')} null", captions.TRAINED,
                            ("null median", "over it", "PW-MCC over it"))
        for row in shown:
            table.add_row(escape(row["group"]), bare(row["null_medians"][kind]),
                          excess_cell((row.get("excess") or {}).get(kind)),
                          excess_cell((row.get("excess_pw_mcc_by_null") or {}).get(kind)))
        console.print(table)


def headline_lines(head: dict | None) -> list[str]:
    """The report's verdict (`stats.verdict.headline`), then each data-shaped null it left
    out and why."""
    if not head:
        return []
    if head["null"] is None:
        return [f"features recurring beyond chance: no headline, {head['reason']}"]
    share = head["share"]
    out = [f"features recurring beyond chance: {value_cell(share['estimate'], share['ci'])} "
           f"(90% over runs) against the {head['null']} null, the data-shaped null that "
           f"explains the most; {head['n_significant_by']} of {head['n_matched']} matched pairs "
           "BY-significant under it" + _null_by(head.get("null_by"))]
    out += [f"  the {c['null']} null is not used: {c['reason']}" for c in head["candidates"]
            if not c["used"] and c.get("share") is not None]
    return out


def _null_by(null_by: dict | None) -> str:
    """The same BY count on the null's own dictionaries (what it is with nothing shared)."""
    if not null_by:
        return ""
    return f" (its own null dictionaries: {null_by['n_significant_by']} of {null_by['n_matched']})"


def evidence_lines(ev: dict | None) -> list[str]:
    """One line per null the evidence judged: the BY count and the share beyond chance."""
    lines = headline_lines((ev or {}).get("headline"))
    for kind, block in ((ev or {}).get("by_null") or {}).items():
        if block.get("skipped"):
            lines.append(f"beyond the {kind} null: not computed, {block['reason']}")
            continue
        sig, share = block["significance"], block["share_beyond_chance"]
        shift = (share.get("bulk") or {}).get("shift")
        lines.append(
            f"beyond the {kind} null: {sig['n_significant_by']} of {sig['n_matched']} "
            f"{sig.get('judged', 'matched pairs')} significant at FDR 5% (Benjamini-Yekutieli, "
            f"per pair); share of features recurring beyond chance "
            f"{value_cell(share['estimate'], share['ci'])} (90% over runs; without matching the "
            f"bulk {value_cell((share.get('raw') or {}).get('estimate'))}"
            + ("" if shift is None else f", bulk {shift['estimate']:+.2f} null SDs") + ")")
    if lines:
        lines.append("seed-count curves and diagnostics: stability.json (summary.evidence)")
    return lines
