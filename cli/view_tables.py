"""The terminal's tables of the views beyond decoder cosine (summary.equivalence), each beside
its chance floor (`saefast.stats.view_nulls`); a report's lines of every view, the ablation
included, are `saefast.report.view_text.view_lines` (the HTML page prints the same). Within
80 columns: the floors have a table of their own."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from saefast.cli.null_tables import group_table
from saefast.report import captions
from saefast.report.cells import excess_cell, floor_cell, interval_cell, value_cell


def print_equivalence(console: Console, rows: list[dict]) -> None:
    """Per group: is it the same feature when the encoder and the activations are asked too,
    and how far above chance is each view?"""
    rows = [r for r in rows if r.get("equivalence")]
    if not rows:
        return
    table = group_table("the same feature from every side (summary.equivalence)",
                        captions.EQUIVALENCE, captions.EQUIVALENCE_COLUMNS)
    for row in rows:
        e = row["equivalence"]
        table.add_row(escape(row["group"]), value_cell(e["shared"], e["shared_ci"]),
                      value_cell(e["r"], e["r_ci"]), value_cell(e["same_partner"]),
                      value_cell(e["agreement"]))
    console.print(table)
    for row in rows:  # more than 20 pairs: the views on a stated subset
        used = row["equivalence"].get("pairs_used") or {}
        if used.get("rule"):
            console.print(f"{escape(row['group'])}: these views on {used['n']} of "
                          f"{used['of']} pairs: {escape(used['rule'])}")
    floors = group_table("each view against chance (summary.equivalence floors)",
                         captions.FLOORS, captions.FLOORS_COLUMNS)
    for row in rows:
        e = row["equivalence"]
        floors.add_row(escape(row["group"]), value_cell(e.get("encoder_median")),
                       value_cell(e.get("encoder_floor")), excess_cell(e.get("encoder_excess")),
                       floor_cell(e.get("r_floor")), interval_cell(e.get("r_above_floor")))
    console.print(floors)
