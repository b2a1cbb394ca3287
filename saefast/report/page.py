"""OUT/report.html, the page to share: a sweep's summary, each group's stored report and
figures (OUT/reports/<group>/) and what the runs' run.json say, rendered by the pure
`saefast.report.html.render` and written atomically."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from saefast.fsio import atomic_open
from saefast.report import html
from saefast.report.files import STABILITY_JSON, load_report
from saefast.runs import layout
from saefast.runs.artifacts import RUN, read_run_json


def write_html(out_dir: str | Path, summary: dict) -> Path:
    """Write OUT/report.html: the sweep's groups (summary: OUT/summary.json), each group's
    stored report and figures (OUT/reports/<group>/) and what the runs' run.json say, as one
    self-contained page (`html.render`). Reads the PNGs as they are on disk: call it
    after the plots are drawn. Returns the path."""
    out_dir = Path(out_dir)
    names = [row["group"] for row in summary.get("groups") or []]
    stored, images = {}, {}
    for g in names:
        report_dir = layout.report_dir(out_dir, g)
        if not (report_dir / STABILITY_JSON).is_file():
            continue  # fewer than two finished runs: the page says so
        stored[g] = load_report(report_dir)
        images[g] = {name: (report_dir / name).read_bytes() for name in stored[g].get("files") or []
                     if name.endswith(".png") and (report_dir / name).is_file()}
    infos = [read_run_json(d) for d in sorted(layout.runs_dir(out_dir).glob("*"))
             if not d.name.startswith(".") and (d / RUN).is_file()]
    page = html.render(
        summary, stored, images=images,
        study=html.study_facts([i for i in infos if i.get("group") in names]),
        title=out_dir.resolve().name,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    path = layout.html_path(out_dir)
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
