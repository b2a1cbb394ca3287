"""The HTML report of a sweep: one self-contained page to share (OUT/report.html).

    render(summary, reports, *, images, study, title, generated) -> str    reads and writes nothing
    study_facts(run_infos) -> dict                                          what run.json files say

summary: OUT/summary.json; reports: {group: its stability.json}; images: {group: {PNG file
name: bytes}}, embedded as base64 data URIs, so the page needs no other file, no network, no
script, no font; study: `study_facts` of the runs' run.json. `page.write_html` gathers these
and writes the file.

Every text that comes from a file or a user (names, paths, notes, method strings) goes through
`html.escape`; numbers are written by `saefast.report.cells`, as in the terminal tables. The method
section quotes the `method` strings the reports store beside their numbers, so it says what
the code that computed them did, not what this module believes it did.
"""

from __future__ import annotations

from typing import Any

from saefast.report import html_markup as markup
from saefast.report.html_groups import group_section, overview, trends, verdict

# ---------------------------------------------------------------------------- the study


def study_facts(run_infos: list[dict]) -> dict[str, Any]:
    """What the runs' run.json say about the study: per group its model, hook, corpus, token
    budget, SAE and device (from its first run), and over all runs the versions, machines and
    creation times."""
    groups: dict[str, dict] = {}
    for info in run_infos:
        cfg = info.get("config") or {}
        g = info.get("group")
        if g is None or g in groups:
            continue
        sae, train, data = cfg.get("sae") or {}, cfg.get("train") or {}, cfg.get("data") or {}
        groups[g] = {
            "model": (info.get("model") or {}).get("name"),
            "hook": (info.get("model") or {}).get("hook"),
            "d_model": (info.get("model") or {}).get("d_model"),
            "corpus": (info.get("corpus") or {}).get("name"),
            "tokens_train": (info.get("tokens") or {}).get("train"),
            "n_features": sae.get("n_features"), "k": sae.get("k"),
            "epochs": train.get("epochs"), "steps": train.get("steps"),
            "cache": data.get("cache"),
            "device": (cfg.get("model") or {}).get("device"),
        }
    versions = markup.distinct(", ".join(f"{k} {v}" for k, v in (i.get("versions") or {}).items())
                         or None for i in run_infos)
    machines = markup.distinct(", ".join(f"{k} {v}" for k, v in (i.get("machine") or {}).items())
                         or None for i in run_infos)
    created = sorted(c for c in (i.get("created") for i in run_infos) if c)
    return {"groups": groups, "versions": versions, "machines": machines,
            "created": [created[0], created[-1]] if created else None,
            "devices": markup.distinct(g["device"] for g in groups.values())}


def _study_section(summary: dict, study: dict, title: str, generated: str) -> str:
    exp = summary.get("experiment") or {}
    groups = study.get("groups") or {}
    runs = summary.get("runs") or {}
    created = study.get("created")
    seconds = summary.get("seconds")
    facts = markup.facts([
        ("experiment", exp.get("name")),
        ("description", exp.get("description")),
        ("experiment file", exp.get("file")),
        ("output folder", title),
        ("groups", len(summary.get("groups") or [])),
        ("runs", f"{runs.get('done', 0)} trained, {runs.get('skipped', 0)} already done, "
                 f"{len(runs.get('failed') or [])} failed" if runs else None),
        ("last sweep took", f"{seconds:.0f} s" if isinstance(seconds, (int, float)) else None),
        ("models", ", ".join(markup.distinct(g["model"] for g in groups.values()))),
        ("hooks", ", ".join(markup.distinct(g["hook"] for g in groups.values()))),
        ("corpora", ", ".join(markup.distinct(g["corpus"] for g in groups.values()))),
        ("devices", ", ".join(study.get("devices") or [])),
        ("machines", "; ".join(study.get("machines") or [])),
        ("versions", "; ".join(study.get("versions") or [])),
        ("runs created", f"{created[0]} to {created[1]}" if created else None),
        ("report written", generated),
    ])
    rows = [[g, str(c.get("model")), str(c.get("hook")), str(c.get("corpus")),
             markup.num(c.get("tokens_train")), markup.num(c.get("n_features")), markup.num(c.get("k")),
             (f"{c['steps']} steps" if c.get("steps") else markup.num(c.get("epochs")))]
            for g, c in groups.items()]
    table = markup.table(["group", "model", "hook", "corpus", "training tokens", "features", "k",
                    "epochs"], rows, "From each group's first run.json.", labels=5) if rows else ""
    return f'<section id="study"><h2>The study</h2>{facts}{table}</section>'


# ---------------------------------------------------------------------------- method, notes


def _methods(obj: Any, path: str, out: dict[str, list[str]]) -> None:
    """Every `method` string (or dict of them) and null `description` under obj, by text,
    with the places it was found (list positions dropped: the same key in each row)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            p = f"{path}.{k}" if path else k
            if k == "method" and isinstance(v, dict):
                for mk, mv in v.items():
                    if isinstance(mv, str):
                        out.setdefault(mv, []).append(f"{p}.{mk}")
            elif k in ("method", "description") and isinstance(v, str):
                out.setdefault(v, []).append(p)
            elif isinstance(v, (dict, list)):
                _methods(v, p, out)
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, dict):
                _methods(v, path, out)


def _matching_text(reports: dict[str, dict]) -> str:
    solvers = markup.distinct(x for r in reports.values()
                        for x in ((r.get("summary") or {}).get("solver") or []))
    certified = [(r.get("summary") or {}).get("certified") for r in reports.values()]
    return ("Decoder rows are L2-normalised and every pair of runs in a group is matched "
            "one-to-one (min(n_a, n_b) pairs) by the assignment with the largest total cosine. "
            f"Solvers used: {', '.join(solvers) or '-'}; "
            + ("every matching is certified optimal." if certified and all(certified)
               else "not every matching is certified optimal (see each pair's `certified`).")
            + " The nulls are matched by the same code.")


def _method_section(summary: dict, reports: dict[str, dict]) -> str:
    found: dict[str, list[str]] = {}
    for r in reports.values():
        _methods(r.get("summary") or {}, "summary", found)
        _methods((r.get("live_only") or {}).get("summary") or {}, "live_only.summary", found)
    _methods({"trends": summary.get("trends") or []}, "", found)
    items = []
    for text, places in found.items():
        where = markup.distinct(places)
        shown = ", ".join(where[:3]) + (f" and {len(where) - 3} more" if len(where) > 3 else "")
        items.append(f"<dt>{markup.e(shown)}</dt><dd>{markup.e(text)}</dd>")
    return ('<section id="method"><h2>Method and definitions</h2>'
            f"<h3>Matching</h3><p>{markup.e(_matching_text(reports))}</p>"
            "<h3>As stored with the numbers</h3><p>Each statistic's method, quoted from the "
            "reports (the key it is stored under, then the text).</p>"
            f'<dl class="method">{"".join(items)}</dl></section>')


def _notes(summary: dict, reports: dict[str, dict], images: dict[str, dict[str, bytes]]) -> list[str]:
    """What was skipped and why: failed runs, groups without a report, nulls not computed,
    figures a report lists but that could not be read."""
    notes = [f"run {f.get('name')} failed: {f.get('error')}"
             for f in (summary.get("runs") or {}).get("failed") or []]
    notes += summary.get("warnings") or []  # groups that barely trained
    for row in summary.get("groups") or []:
        if row["group"] not in reports:
            notes.append(f"{row['group']}: no report (fewer than two finished runs)")
    for g, r in reports.items():
        for label, rep in (("", r), ("live-only ", r.get("live_only"))):
            s = (rep or {}).get("summary") or {}
            nulls = s.get("nulls") or {}
            if nulls.get("note"):  # the skipped nulls' reasons, in one sentence
                notes.append(f"{g}, {label}nulls: {nulls['note']}")
            else:
                notes += [f"{g}, {label}{kind} null: {n['reason']}"
                          for kind, n in (nulls.get("kinds") or {}).items()
                          if n.get("skipped") and n.get("reason")]
            for kind, b in ((s.get("evidence") or {}).get("by_null") or {}).items():
                if b.get("skipped") and b.get("reason"):
                    notes.append(f"{g}, {label}per-feature evidence against the {kind} null: "
                                 f"{b['reason']}")
            notes += [f"{g}, {label}equivalence: {why}"
                      for why in (s.get("equivalence") or {}).get("skipped") or []]
            if rep and s and not (s.get("seed_intervals") or {}).get("global_median", {}).get("ci"):
                notes.append(f"{g}, {label}report: no intervals over runs (fewer than 3 runs)")
        for name in r.get("files") or []:
            if name.endswith(".png") and name not in images.get(g, {}):
                notes.append(f"{g}: figure {name} is missing")
    return markup.distinct(notes)


def _notes_section(notes: list[str]) -> str:
    body = ("<ul>" + "".join(f"<li>{markup.e(n)}</li>" for n in notes) + "</ul>") if notes \
        else "<p>Nothing was skipped.</p>"
    return f'<section id="notes"><h2>Notes: what was skipped and why</h2>{body}</section>'


# ---------------------------------------------------------------------------- the page


def render(summary: dict, reports: dict[str, dict], *,
           images: dict[str, dict[str, bytes]] | None = None, study: dict | None = None,
           title: str = "saefast sweep", generated: str = "") -> str:
    """The whole page as one string. summary: OUT/summary.json; reports: {group: its
    stability.json}; images: {group: {PNG file name: bytes}}; study: `study_facts`; title:
    what the page is called (the sweep's folder); generated: when it was written (any text)."""
    images = images or {}
    study = study or {}
    exp = (summary.get("experiment") or {}).get("name")
    heading = f"Seed stability: {exp} ({title})" if exp else f"Seed stability: {title}"
    groups = markup.distinct([r["group"] for r in summary.get("groups") or []] + list(reports))
    configs = study.get("groups") or {}
    nav = "".join(f'<li><a href="#{a}">{markup.e(t)}</a></li>' for a, t in
                  [("verdict", "What the study found"), ("study", "The study"),
                   ("overview", "Groups")]
                  + ([("trends", "Trends per decade of tokens")] if trends(summary, groups) else [])
                  + [(markup.anchor(groups, g), g) for g in groups]
                  + [("method", "Method and definitions"), ("notes", "Notes")])
    body = [
        f"<h1>{markup.e(heading)}</h1>",
        f"<nav><ul>{nav}</ul></nav>",
        verdict(summary, groups),
        _study_section(summary, study, title, generated),
        overview(summary, groups),
        trends(summary, groups),
        *(group_section(g, groups, reports.get(g), configs.get(g), images.get(g, {}))
          for g in groups),
        _method_section(summary, reports),
        _notes_section(_notes(summary, reports, images)),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{markup.e(heading)}</title><style>{markup.CSS}</style></head><body>"
            + "\n".join(b for b in body if b) + "</body></html>\n")
