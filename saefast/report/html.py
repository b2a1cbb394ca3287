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

import base64
import html
from typing import Any, Iterable

from saefast.report.cells import (
    NULL_KINDS,
    ci_cell,
    excess_cell,
    fmt,
    fractions_cell,
    share_cell,
    value_cell,
)
from saefast.report.files import (
    HEATMAP_PNG,
    HISTOGRAM_PNG,
    LIVE_ONLY_PREFIX,
    SEED_CURVE_PNG,
)

SHORT = {"isotropic": "iso", "covariance": "cov", "activations": "act"}

# the figures of a report, in the order a reader wants them, with what each shows
FIGURES = [
    (HISTOGRAM_PNG, "Matched decoder cosines, pooled over every pair, against the matched "
                    "cosines of each null of the same shape; dashed lines: the medians; red: "
                    "the threshold."),
    (HEATMAP_PNG, "Median matched cosine of each pair of runs (colours span the off-diagonal "
                  "values only)."),
    (SEED_CURVE_PNG, "Seed-count curve: the share of a run's features found in all (and in at "
                     "least half) of N-1 other runs, at the threshold and beyond chance, "
                     "against the nulls."),
]

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


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    return fmt(value, digits)


def _table(headers: list[str], rows: Iterable[list[str]], caption: str | None = None,
           labels: int = 1) -> str:
    """A table of plain-text cells (escaped here); the first `labels` columns are text, the
    rest are numbers (right-aligned). A cell given as ("html", markup) is inserted as is."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            markup = cell[1] if isinstance(cell, tuple) else _e(cell)
            cells.append(f"<td>{markup}</td>" if i < labels else f'<td class="n">{markup}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _facts(items: Iterable[tuple[str, Any]]) -> str:
    """A definition list of the items whose value is not None / empty."""
    rows = [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items if v not in (None, "", [])]
    return f'<dl class="facts">{"".join(rows)}</dl>' if rows else ""


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _anchor(groups: list[str], group: str) -> str:
    return f"group-{groups.index(group) + 1}"  # ids from positions: names may hold anything


def _group_link(groups: list[str], group: str) -> tuple[str, str]:
    if group in groups:
        return ("html", f'<a href="#{_anchor(groups, group)}">{_e(group)}</a>')
    return ("html", _e(group))


def _kind_order(kind: str) -> int:
    return NULL_KINDS.index(kind) if kind in NULL_KINDS else len(NULL_KINDS)


def _distinct(values: Iterable[Any]) -> list[str]:
    out: list[str] = []
    for v in values:
        if v is not None and str(v) not in out:
            out.append(str(v))
    return out


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
    versions = _distinct(", ".join(f"{k} {v}" for k, v in (i.get("versions") or {}).items())
                         or None for i in run_infos)
    machines = _distinct(", ".join(f"{k} {v}" for k, v in (i.get("machine") or {}).items())
                         or None for i in run_infos)
    created = sorted(c for c in (i.get("created") for i in run_infos) if c)
    return {"groups": groups, "versions": versions, "machines": machines,
            "created": [created[0], created[-1]] if created else None,
            "devices": _distinct(g["device"] for g in groups.values())}


def _study_section(summary: dict, study: dict, title: str, generated: str) -> str:
    exp = summary.get("experiment") or {}
    groups = study.get("groups") or {}
    runs = summary.get("runs") or {}
    created = study.get("created")
    seconds = summary.get("seconds")
    facts = _facts([
        ("experiment", exp.get("name")),
        ("description", exp.get("description")),
        ("experiment file", exp.get("file")),
        ("output folder", title),
        ("groups", len(summary.get("groups") or [])),
        ("runs", f"{runs.get('done', 0)} trained, {runs.get('skipped', 0)} already done, "
                 f"{len(runs.get('failed') or [])} failed" if runs else None),
        ("last sweep took", f"{seconds:.0f} s" if isinstance(seconds, (int, float)) else None),
        ("models", ", ".join(_distinct(g["model"] for g in groups.values()))),
        ("hooks", ", ".join(_distinct(g["hook"] for g in groups.values()))),
        ("corpora", ", ".join(_distinct(g["corpus"] for g in groups.values()))),
        ("devices", ", ".join(study.get("devices") or [])),
        ("machines", "; ".join(study.get("machines") or [])),
        ("versions", "; ".join(study.get("versions") or [])),
        ("runs created", f"{created[0]} to {created[1]}" if created else None),
        ("report written", generated),
    ])
    rows = [[g, str(c.get("model")), str(c.get("hook")), str(c.get("corpus")),
             _num(c.get("tokens_train")), _num(c.get("n_features")), _num(c.get("k")),
             (f"{c['steps']} steps" if c.get("steps") else _num(c.get("epochs")))]
            for g, c in groups.items()]
    table = _table(["group", "model", "hook", "corpus", "training tokens", "features", "k",
                    "epochs"], rows, "From each group's first run.json.", labels=5) if rows else ""
    return f'<section id="study"><h2>The study</h2>{facts}{table}</section>'


# ---------------------------------------------------------------------------- all groups


def _overview(summary: dict, groups: list[str]) -> str:
    rows = summary.get("groups") or []
    if not rows:
        return '<section id="overview"><h2>Groups</h2><p>No group finished.</p></section>'
    stab = _table(
        ["group", "runs", "pairs", "median", "90% CI", ">=.5/.7/.9", "iso null", "live median"],
        [[_group_link(groups, r["group"]), _num(r.get("runs")), _num(r.get("pairs")),
          _num(r.get("global_median")), ci_cell(r.get("global_median_ci")),
          fractions_cell(r.get("fraction_above")), _num(r.get("baseline_median")),
          _num(r.get("live_only_global_median"))] for r in rows],
        "median: pooled over every pair's matched cosines, with its 90% interval over runs "
        "(delete-one-run jackknife, t(S-1); the run is the independent unit). >=.5/.7/.9: "
        "fraction of matched pairs at or above. iso null: the same matching of random "
        "isotropic unit dictionaries of the same shapes. live median: matching live features "
        "only. -: not computed.")
    nulls = _table(
        ["group"] + [f"{SHORT[k]} null median" for k in NULL_KINDS]
        + [f"over {SHORT[k]} [90%]" for k in NULL_KINDS],
        [[_group_link(groups, r["group"])]
         + [_num((r.get("null_medians") or {}).get(k)) for k in NULL_KINDS]
         + [excess_cell((r.get("excess") or {}).get(k)) for k in NULL_KINDS] for r in rows],
        "null medians: isotropic (two untrained SAEs) / covariance (random rows drawn with "
        "the training activations' covariance) / activations (centred activations of distinct "
        "tokens). over: the pooled median minus that null's median [90% interval over runs]. "
        "-: not computed (see the notes).")
    beyond = _table(
        ["group"] + [f"share beyond {SHORT[k]} [90%]" for k in NULL_KINDS]
        + [f"BY vs {SHORT[k]}" for k in NULL_KINDS],
        [[_group_link(groups, r["group"])]
         + [share_cell((r.get("beyond_chance") or {}).get(k)) for k in NULL_KINDS]
         + [_num(((r.get("beyond_chance") or {}).get(k) or {}).get("fraction_significant_by"))
            for k in NULL_KINDS] for r in rows],
        "share: features whose nearest cosine in the other run beats the null's (1 - Storey's "
        "pi0 of their p-values) [90% interval over runs, jackknife]. BY: fraction of matched "
        "pairs significant at FDR 5% (Benjamini-Yekutieli within each pair). Beating the "
        "isotropic null does not yet mean the same features were found; the covariance and "
        "activation nulls are shaped like the data. -: not computed.")
    same = [r for r in rows if r.get("equivalence")]  # summary.equivalence (issue 14 items 1-2)
    sides = _table(
        ["group", "shared [90%]", "r [90%]", "same partner", "both matchings"],
        [[_group_link(groups, r["group"]), _share(r["equivalence"], "shared", "shared_ci"),
          _share(r["equivalence"], "r", "r_ci"), _share(r["equivalence"], "same_partner"),
          _share(r["equivalence"], "agreement")] for r in same],
        "shared: decoder-matched pairs whose encoder rows also match at the threshold [90% "
        "interval over runs]. r: median Pearson correlation of the matched pairs' held-out "
        "activations [90%]. same partner: features whose max-correlation partner is their "
        "decoder partner. both matchings: pairs the correlation matching and the decoder "
        "matching both pick. -: not computed (see the notes).") if same else ""
    health = _table(
        ["group", "runs", "dead", "cos to init", "held-out FVU"],
        [[_group_link(groups, r["group"]), _num(r.get("runs")), _num(r.get("dead_fraction"), 2),
          _num(r.get("decoder_cosine_to_init"), 2), _num(r.get("held_out_fvu"), 2)]
         for r in rows],
        "dead: never fired on the training tokens. cos to init: decoder rows vs their random "
        "init (near 1: barely trained). FVU: held-out fraction of variance unexplained. Means "
        "over the group's runs.")
    return ('<section id="overview"><h2>Groups</h2>'
            f"<h3>Seed stability: matched decoder cosines</h3>{stab}"
            f"<h3>Against the nulls</h3>{nulls}"
            f"<h3>Features recurring beyond chance</h3>{beyond}"
            + (f"<h3>The same feature from every side</h3>{sides}" if sides else "") +
            f"<h3>Training health</h3>{health}</section>")


def _share(row: dict, key: str, ci_key: str | None = None) -> str:
    return value_cell(row.get(key), row.get(ci_key) if ci_key else None)


def _trend_fit(fit: dict | None) -> list[str] | None:
    if not fit or fit.get("slope_per_decade") is None:
        return None
    ci = fit.get("ci")
    interval = f"{ci[0]:+.3f} to {ci[1]:+.3f}" if ci else "none: < 3 seeds"
    values = ", ".join(f"{b:,}: {fmt(v)}" for b, v in zip(fit.get("budgets") or [],
                                                         fit.get("values") or []))
    return [f"{fit['slope_per_decade']:+.3f}", interval, values]


def _trends(summary: dict, groups: list[str]) -> str:
    rows = []
    for t in summary.get("trends") or []:
        excess = t.get("excess_median") or {}
        fits = [("median", t.get("global_median"))] + [
            (f"excess over {k} null", excess[k]) for k in sorted(excess, key=_kind_order)]
        family = " ... ".join(_distinct([t["groups"][0], t["groups"][-1]])) if t.get("groups") else "-"
        for label, fit in fits:
            cells = _trend_fit(fit)
            if cells:
                rows.append([family, label, *cells, _num(len(t.get("seeds") or []))])
    if not rows:
        return ""
    table = _table(["groups", "statistic", "slope per decade", "90% CI", "tokens: value",
                    "seeds"], rows,
                   "Groups that differ only in their token budget: the slope of each statistic "
                   "against log10(tokens), its interval resampling seeds jointly across budgets "
                   "(see the method).", labels=2)
    return f'<section id="trends"><h2>Trends per decade of tokens</h2>{table}</section>'


# ---------------------------------------------------------------------------- one group


def _nulls_table(nulls: dict | None) -> str:
    kinds = (nulls or {}).get("kinds") or {}
    if not kinds:
        return ""
    rows = []
    for kind, n in kinds.items():
        if n.get("skipped"):
            rows.append([kind, ("html", f'<span class="note">{_e(n.get("reason") or "skipped")}</span>'),
                         "", "", "", ""])
            continue
        q = n.get("quantiles") or {}
        rows.append([kind, _num(n.get("median_cosine")), _num(q.get("0.95")), _num(q.get("0.999")),
                     f"{n.get('n_draws', '-')} x {n.get('n_per_draw', '-')}",
                     excess_cell(n.get("excess_median"))])
    shape = nulls.get("shape") or {}
    data = nulls.get("data") or {}
    where = data.get("store") or data.get("file")
    cap = (f"Each null matched like the real dictionaries at shape "
           f"{shape.get('n_a', '-')} x {shape.get('n_b', '-')}, d = {shape.get('d', '-')}"
           + (f"; data: {where}, {data.get('n_rows')} training rows, covariance effective rank "
              f"{_num(data.get('effective_rank'), 1)}, {data.get('distinct_tokens')} distinct "
              "tokens" if where else "") + ". over: observed pooled median minus the null's "
           "median [90% interval over runs].")
    return _table(["null", "median", "95% quantile", "99.9% quantile", "draws x cosines",
                   "over it [90%]"], rows, cap)


def _curve_end(block: dict | None) -> str:
    """The seed-count curve at all S runs: share of a run's features in all S-1 others."""
    curve = (block or {}).get("curve") or []
    if not curve:
        return "-"
    last = curve[-1].get("all") or {}
    jk = last.get("jackknife") or {}
    cell = _num(last.get("mean"))
    return cell + (f" [{ci_cell(jk['ci'])}]" if jk.get("ci") else "")


def _evidence_table(ev: dict | None) -> str:
    by_null = (ev or {}).get("by_null") or {}
    if not by_null:
        return ""
    rows = []
    for kind, b in by_null.items():
        if b.get("skipped"):
            rows.append([kind, ("html", f'<span class="note">{_e(b.get("reason") or "skipped")}</span>'),
                         "", "", "", ""])
            continue
        sig = b.get("significance") or {}
        share = b.get("share_beyond_chance") or {}
        matched = b.get("share_beyond_chance_matched") or {}
        rows.append([
            kind,
            f"{sig.get('n_significant_by', '-')} of {sig.get('n_matched', '-')}",
            value_cell(share.get("estimate"), share.get("ci")),
            value_cell(matched.get("estimate"), matched.get("ci")),
            _curve_end((b.get("seed_count_curve") or {}).get("beyond_chance")),
            _num((b.get("nearest_null") or {}).get("nearest_median")),
        ])
    nearest = ((ev or {}).get("nearest") or {}).get("median") or {}
    maxc = (ev or {}).get("max_cardinality") or {}
    cap = ("BY: matched pairs significant at FDR 5% (Benjamini-Yekutieli within each pair), "
           "summed over pairs. share: 1 - Storey's pi0 of the nearest-neighbour p-values "
           "(matched: of the matched p-values, a lower estimate) [90% over runs]. in all others: "
           "the share of a run's features BY-significant in all other runs [90%]. null nearest: "
           "the null's median nearest-neighbour cosine; observed: "
           f"{_num(nearest.get('estimate'))}. At the threshold at most "
           f"{_num((maxc.get('fraction') or {}).get('estimate'))} of features can be paired at "
           "once (maximum-cardinality matching), one-to-one "
           f"{_num((maxc.get('one_to_one_fraction') or {}).get('estimate'))}.")
    return _table(["null", "BY significant", "share beyond [90%]", "share, matched p [90%]",
                   "in all others [90%]", "null nearest"], rows, cap)


def _figures(report_images: dict[str, bytes], prefix: str, group: str) -> str:
    out = []
    for name, caption in FIGURES:
        data = report_images.get(prefix + name)
        if data:
            alt = f"{group}: {name.removesuffix('.png').replace('_', ' ')}"
            out.append(f'<figure><img src="{_png_uri(data)}" alt="{_e(alt)}">'
                       f"<figcaption>{_e(caption)}</figcaption></figure>")
    return "".join(out)


def _summary_facts(s: dict) -> list[tuple[str, Any]]:
    ci = ((s.get("seed_intervals") or {}).get("global_median") or {}).get("ci")
    best = s.get("best_feature_pair") or {}
    return [
        ("pooled median", f"{_num(s.get('global_median'))} [{ci_cell(ci)}]" if ci
         else _num(s.get("global_median"))),
        ("median of pair medians", _num(s.get("median_of_medians"))),
        (f"at >= {s.get('threshold')}", _num(s.get("fraction_at_threshold"))),
        ("best matched feature pair", f"{best['run_a_name']} #{best['feature_a']} ~ "
         f"{best['run_b_name']} #{best['feature_b']}, cosine {best['cosine']:.3f}"
         if best else None),
    ]


def _group_section(group: str, groups: list[str], report: dict | None, config: dict | None,
                   images: dict[str, bytes]) -> str:
    head = f'<section id="{_anchor(groups, group)}"><h2>{_e(group)}</h2>'
    if not report:
        return head + '<p class="note">No report: fewer than two finished runs.</p></section>'
    s = report.get("summary") or {}
    runs = s.get("runs") or []
    solvers = s.get("solver")
    facts = _facts([
        ("runs", ", ".join(str(r.get("name")) for r in runs) or s.get("n_runs")),
        ("pairs", s.get("n_pairs")),
        ("threshold", s.get("threshold")),
        ("solver", ", ".join(solvers) if isinstance(solvers, list) else solvers),
        ("certified optimal", {True: "every pair", False: "not every pair"}.get(s.get("certified"))),
        ("model", config and f"{config.get('model')} at {config.get('hook')} (d = {config.get('d_model')})"),
        ("corpus", config and config.get("corpus")),
        *_summary_facts(s),
    ])
    parts = [head, facts, "<h3>Against each null</h3>", _nulls_table(s.get("nulls")),
             "<h3>Per feature, against each null</h3>", _evidence_table(s.get("evidence")),
             _figures(images, "", group)]
    live = report.get("live_only")
    if live:
        ls = live.get("summary") or {}
        parts += ["<h3>Live features only</h3>", _facts(_summary_facts(ls)), _nulls_table(ls.get("nulls")),
                  _evidence_table(ls.get("evidence")), _figures(images, LIVE_ONLY_PREFIX, group)]
    return "".join(p for p in parts if p) + "</section>"


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
    solvers = _distinct(x for r in reports.values()
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
        where = _distinct(places)
        shown = ", ".join(where[:3]) + (f" and {len(where) - 3} more" if len(where) > 3 else "")
        items.append(f"<dt>{_e(shown)}</dt><dd>{_e(text)}</dd>")
    return ('<section id="method"><h2>Method and definitions</h2>'
            f"<h3>Matching</h3><p>{_e(_matching_text(reports))}</p>"
            "<h3>As stored with the numbers</h3><p>Each statistic's method, quoted from the "
            "reports (the key it is stored under, then the text).</p>"
            f'<dl class="method">{"".join(items)}</dl></section>')


def _notes(summary: dict, reports: dict[str, dict], images: dict[str, dict[str, bytes]]) -> list[str]:
    """What was skipped and why: failed runs, groups without a report, nulls not computed,
    figures a report lists but that could not be read."""
    notes = [f"run {f.get('name')} failed: {f.get('error')}"
             for f in (summary.get("runs") or {}).get("failed") or []]
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
    return _distinct(notes)


def _notes_section(notes: list[str]) -> str:
    body = ("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>") if notes \
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
    groups = _distinct([r["group"] for r in summary.get("groups") or []] + list(reports))
    configs = study.get("groups") or {}
    nav = "".join(f'<li><a href="#{a}">{_e(t)}</a></li>' for a, t in
                  [("study", "The study"), ("overview", "Groups")]
                  + ([("trends", "Trends per decade of tokens")] if _trends(summary, groups) else [])
                  + [(_anchor(groups, g), g) for g in groups]
                  + [("method", "Method and definitions"), ("notes", "Notes")])
    body = [
        f"<h1>{_e(heading)}</h1>",
        f"<nav><ul>{nav}</ul></nav>",
        _study_section(summary, study, title, generated),
        _overview(summary, groups),
        _trends(summary, groups),
        *(_group_section(g, groups, reports.get(g), configs.get(g), images.get(g, {}))
          for g in groups),
        _method_section(summary, reports),
        _notes_section(_notes(summary, reports, images)),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(heading)}</title><style>{CSS}</style></head><body>"
            + "\n".join(b for b in body if b) + "</body></html>\n")
