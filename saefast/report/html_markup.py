"""The pieces every part of the HTML page is made of: the style sheet, escaping, tables,
definition lists, embedded PNGs and the anchors that link a group's row to its section. Every
text from a file or a user goes through `e` (html.escape); numbers through
`saefast.report.cells`, as in the terminal tables."""

from __future__ import annotations

import base64
import html
from typing import Any, Iterable

from saefast.report.cells import NULL_KINDS, fmt

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:72rem;margin:2rem auto;
padding:0 1rem;color:#1b1b1b;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.3rem;border-bottom:1px solid #ccc;margin-top:2.5rem}
h3{font-size:1.05rem;margin-top:1.5rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}
th,td{padding:.2rem .6rem;border-bottom:1px solid #e3e3e3;vertical-align:top}
th{text-align:left;background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums;
white-space:nowrap}caption{caption-side:bottom;text-align:left;font-size:.8rem;color:#555;
padding-top:.3rem;max-width:60rem}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;font-size:.9rem}
dl.facts dt{font-weight:600}dl.facts dd{margin:0;overflow-wrap:anywhere}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.8rem;color:#555;max-width:50rem}
dl.method dt{font-family:ui-monospace,monospace;font-size:.8rem;margin-top:.6rem;color:#444}
dl.method dd{margin:.1rem 0 0 1rem}.note{color:#8a4b00}code{font-size:.85em}
nav ul{columns:2;font-size:.9rem}
"""


def e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def num(value: Any, digits: int = 3) -> str:
    return fmt(value, digits)


def table(headers: list[str], rows: Iterable[list[str]], caption: str | None = None,
           labels: int = 1) -> str:
    """A table of plain-text cells (escaped here); the first `labels` columns are text, the
    rest are numbers (right-aligned). A cell given as ("html", markup) is inserted as is."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            markup = cell[1] if isinstance(cell, tuple) else e(cell)
            cells.append(f"<td>{markup}</td>" if i < labels else f'<td class="n">{markup}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{e(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def facts(items: Iterable[tuple[str, Any]]) -> str:
    """A definition list of the items whose value is not None / empty."""
    rows = [f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in items if v not in (None, "", [])]
    return f'<dl class="facts">{"".join(rows)}</dl>' if rows else ""


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def anchor(groups: list[str], group: str) -> str:
    return f"group-{groups.index(group) + 1}"  # ids from positions: names may hold anything


def group_link(groups: list[str], group: str) -> tuple[str, str]:
    if group in groups:
        return ("html", f'<a href="#{anchor(groups, group)}">{e(group)}</a>')
    return ("html", e(group))


def kind_order(kind: str) -> int:
    return NULL_KINDS.index(kind) if kind in NULL_KINDS else len(NULL_KINDS)


def distinct(values: Iterable[Any]) -> list[str]:
    out: list[str] = []
    for v in values:
        if v is not None and str(v) not in out:
            out.append(str(v))
    return out
