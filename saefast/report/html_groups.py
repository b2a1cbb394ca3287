"""The HTML page's tables of results: the overview of all groups (the same columns and
captions as the terminal tables, `saefast.report.captions`), the trends per decade of tokens,
and one section per group (its facts, nulls, per-feature evidence and figures)."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from saefast.report import captions
from saefast.report import html_markup as markup
from saefast.report.cells import (
    NULL_KINDS,
    SHORT,
    TRAINED_KINDS,
    ci_cell,
    excess_cell,
    floor_cell,
    fmt,
    fractions_cell,
    interval_cell,
    share_cell,
    value_cell,
)
from saefast.report.files import (
    HEATMAP_PNG,
    HISTOGRAM_PNG,
    LIVE_ONLY_PREFIX,
    SEED_CURVE_PNG,
)
from saefast.report.view_text import view_lines

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


# ---------------------------------------------------------------------------- all groups


# the subspace verdict's labels, as the text of `stats.subspace` starts
# (verdict prefix, what one group does, what several do)
FINDINGS = (("the same features", "shows the same features", "show the same features"),
            ("the same subspace", "shares a subspace but not the same features",
             "share a subspace but not the same features"),
            ("nothing beyond chance", "shows nothing beyond chance", "show nothing beyond chance"),
            ("not judged", "is not judged (too few runs, or no null)",
             "are not judged (too few runs, or no null)"))


def verdict(summary: dict, groups: list[str]) -> str:
    """What the study found, first on the page: one sentence over the groups, then per group
    the headline share against the strictest data-shaped null that fits (named), its BY
    count and bulk shift, and the subspace verdict in words (`stats.verdict`, `stats.subspace`)."""
    rows = [r for r in summary.get("groups") or [] if r.get("headline") or r.get("subspace")]
    if not rows:
        return ""
    counts = []
    for prefix, one, several in FINDINGS:
        n = sum(1 for r in rows if (r.get("subspace") or "").startswith(prefix))
        if n:
            counts.append(f"{n} {one if n == 1 else several}")
    lead = (f"Of {len(rows)} group{'s' if len(rows) != 1 else ''}: {'; '.join(counts)}."
            if counts else "")

    def by(h: dict) -> str:
        if h.get("by_powered") is False:
            return "n/a (null too small for BY)"
        return f"{h.get('n_significant_by')} of {h.get('n_matched')}"

    table = markup.table(
        ["group", "in words", "beyond chance [90%]", "against", "BY-significant",
         "bulk shift (null SDs)"],
        [[markup.group_link(groups, r["group"]),
          r.get("subspace") or (r.get("headline") or {}).get("reason") or "-"]
         + ([value_cell(h["share"], h.get("share_ci")), h["null"], by(h),
             "-" if h.get("bulk_shift") is None else f"{h['bulk_shift']:+.1f}"]
            if (h := r.get("headline") or {}).get("null") else
            ["-", "none", "-", "-"]) for r in rows],
        "in words: the subspace verdict (the same features, the same subspace but not the "
        "same features, or nothing beyond chance). " + captions.VERDICT, labels=2)
    how = "".join(f"<li>{markup.e(item)}</li>" for item in captions.HOW_TO_READ)
    return (f'<section id="verdict"><h2>What the study found</h2><p>{markup.e(lead)}</p>'
            f"{table}<h3>How to read this page</h3><ul>{how}</ul></section>")


def overview(summary: dict, groups: list[str]) -> str:
    rows = summary.get("groups") or []
    if not rows:
        return '<section id="overview"><h2>Groups</h2><p>No group finished.</p></section>'
    stab = markup.table(
        ["group", *captions.STABILITY_COLUMNS],
        [[markup.group_link(groups, r["group"]), markup.num(r.get("pairs")),
          markup.num(r.get("global_median")), ci_cell(r.get("global_median_ci")),
          fractions_cell(r.get("fraction_above")),
          markup.num(r.get("baseline_median")), markup.num(r.get("live_only_global_median"))]
         for r in rows],
        captions.STABILITY)
    kinds = NULL_KINDS + tuple(k for k in TRAINED_KINDS  # the trained null where a group has it
                               if any((r.get("null_medians") or {}).get(k) is not None for r in rows))
    nulls = markup.table(
        ["group"] + [f"{SHORT[k]} null median" for k in kinds]
        + [f"over {SHORT[k]} [90%]" for k in kinds] + ["PW-MCC [90%]"]
        + [f"PW-MCC over {SHORT[k]} [90%]" for k in kinds],
        [[markup.group_link(groups, r["group"])]
         + [markup.num((r.get("null_medians") or {}).get(k)) for k in kinds]
         + [excess_cell((r.get("excess") or {}).get(k)) for k in kinds]
         + [_with_ci(r.get("pw_mcc"), r.get("pw_mcc_ci"))]
         + [excess_cell((r.get("excess_pw_mcc_by_null") or {}).get(k)) for k in kinds]
         for r in rows],
        f"{captions.NULLS} {captions.DICTIONARY_COLUMN} {captions.SPECTRUM_COLUMN}"
        + (f" {captions.TRAINED}" if kinds != NULL_KINDS else ""))
    beyond = markup.table(
        ["group"] + [SHORT[k] for k in NULL_KINDS]
        + [f"BY vs {SHORT[k]}" for k in NULL_KINDS],
        [[markup.group_link(groups, r["group"])]
         + [share_cell((r.get("beyond_chance") or {}).get(k)) for k in NULL_KINDS]
         + [markup.num(((r.get("beyond_chance") or {}).get(k) or {}).get("fraction_significant_by"))
            for k in NULL_KINDS] for r in rows],
        f"{captions.BEYOND_CHANCE} {captions.DICTIONARY_COLUMN} {captions.SPECTRUM_COLUMN} "
        f"{captions.BY_COLUMNS}")
    same = [r for r in rows if r.get("equivalence")]  # summary.equivalence
    sides = markup.table(
        ["group", *captions.EQUIVALENCE_COLUMNS],
        [[markup.group_link(groups, r["group"]), _share(r["equivalence"], "shared", "shared_ci"),
          _share(r["equivalence"], "r", "r_ci"), _share(r["equivalence"], "same_partner"),
          _share(r["equivalence"], "agreement")] for r in same],
        captions.EQUIVALENCE) if same else ""
    floors = markup.table(
        ["group", *captions.FLOORS_COLUMNS],
        [[markup.group_link(groups, r["group"]), _share(r["equivalence"], "encoder_median"),
          _share(r["equivalence"], "encoder_floor"),
          excess_cell(r["equivalence"].get("encoder_excess")),
          floor_cell(r["equivalence"].get("r_floor")),
          interval_cell(r["equivalence"].get("r_above_floor"))] for r in same],
        captions.FLOORS) if same else ""
    health = markup.table(
        ["group", *captions.TRAINING_COLUMNS],
        [[markup.group_link(groups, r["group"]), markup.num(r.get("runs")),
          markup.num(r.get("dead_fraction"), 2), markup.num(r.get("decoder_cosine_to_init"), 2),
          markup.num(r.get("held_out_fvu"), 2)] for r in rows],
        captions.TRAINING)
    return ('<section id="overview"><h2>Groups</h2>'
            f"<h3>Seed stability: matched decoder cosines</h3>{stab}"
            f"<h3>Against the nulls</h3>{nulls}"
            f"<h3>Features recurring beyond chance</h3>{beyond}"
            + (f"<h3>The same feature from every side</h3>{sides}" if sides else "")
            + (f"<h3>Each view against chance</h3>{floors}" if floors else "") +
            f"<h3>Training health</h3>{health}</section>")


def _with_ci(value: float | None, ci) -> str:
    """".301 [.295-.307]": a cosine statistic with its interval (3 digits, like the median)."""
    return markup.num(value) + (f" [{ci_cell(ci)}]" if ci and value is not None else "")



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


def trends(summary: dict, groups: list[str]) -> str:
    rows = []
    for t in summary.get("trends") or []:
        excess = t.get("excess_median") or {}
        share = t.get("share_beyond_chance") or {}
        fits = [("median", t.get("global_median"))] + [
            (f"excess over {k} null", excess[k]) for k in sorted(excess, key=markup.kind_order)
        ] + [(f"share beyond {k} null", share[k]) for k in sorted(share, key=markup.kind_order)]
        family = " ... ".join(markup.distinct([t["groups"][0], t["groups"][-1]])) if t.get("groups") else "-"
        for label, fit in fits:
            cells = _trend_fit(fit)
            if cells:
                rows.append([family, label, *cells, markup.num(len(t.get("seeds") or []))])
    if not rows:
        return ""
    table = markup.table(["groups", "statistic", "slope per decade", "90% CI", "tokens: value",
                    "seeds"], rows,
                   "Groups that differ only in their token budget: the slope of each statistic "
                   "against log10(tokens), its interval resampling seeds jointly across budgets "
                   "(the share beyond chance: each budget's own interval, budgets as "
                   "independent groups of runs; see the method).", labels=2)
    return f'<section id="trends"><h2>Trends per decade of tokens</h2>{table}</section>'


# ---------------------------------------------------------------------------- one group


def _skipped_row(kind: str, entry: dict, *, columns: int) -> list:
    """A null's row when it was not computed: its name, the reason, empty cells."""
    note = f'<span class="note">{markup.e(entry.get("reason") or "skipped")}</span>'
    return [kind, ("html", note), *[""] * (columns - 2)]


def _nulls_table(nulls: dict | None) -> str:
    kinds = (nulls or {}).get("kinds") or {}
    if not kinds:
        return ""
    rows = []
    for kind, n in kinds.items():
        if n.get("skipped"):
            rows.append(_skipped_row(kind, n, columns=8))
            continue
        q = n.get("quantiles") or {}
        rows.append([kind, markup.num(n.get("median_cosine")), markup.num(q.get("0.95")), markup.num(q.get("0.999")),
                     f"{n.get('n_draws', '-')} x {n.get('n_per_draw', '-')}",
                     excess_cell(n.get("excess_median")), markup.num(n.get("mean_cosine")),
                     excess_cell(n.get("excess_pw_mcc"))])
    shape = nulls.get("shape") or {}
    data = nulls.get("data") or {}
    # the store's or file's name, not its path: a page is shared, a cache path is local
    where = data.get("store") or data.get("file")
    where = where and ("activation store " if data.get("store") else "") + PurePath(where).name
    cap = (f"Each null matched like the real dictionaries at shape "
           f"{shape.get('n_a', '-')} x {shape.get('n_b', '-')}, d = {shape.get('d', '-')}"
           + (f"; data: {where}, {data.get('n_rows')} training rows, covariance effective rank "
              f"{markup.num(data.get('effective_rank'), 1)}, {data.get('distinct_tokens')} distinct "
              "tokens" if where else "") + ". over: observed pooled median minus the null's "
           "median [90% interval over runs]. PW-MCC: the null's mean matched cosine; PW-MCC "
           "over it: the observed PW-MCC minus it [90%]."
           + (f" {captions.TRAINED}" if set(kinds) & set(TRAINED_KINDS) else ""))
    return markup.table(["null", "median", "95% quantile", "99.9% quantile", "draws x cosines",
                   "over it [90%]", "PW-MCC", "PW-MCC over it [90%]"], rows, cap)


def _curve_end(block: dict | None) -> str:
    """The seed-count curve at all S runs: share of a run's features in all S-1 others."""
    curve = (block or {}).get("curve") or []
    if not curve:
        return "-"
    last = curve[-1].get("all") or {}
    jk = last.get("jackknife") or {}
    cell = markup.num(last.get("mean"))
    return cell + (f" [{ci_cell(jk['ci'])}]" if jk.get("ci") else "")


def _evidence_table(ev: dict | None) -> str:
    by_null = (ev or {}).get("by_null") or {}
    if not by_null:
        return ""
    rows = []
    for kind, b in by_null.items():
        if b.get("skipped"):
            rows.append(_skipped_row(kind, b, columns=6))
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
            markup.num((b.get("nearest_null") or {}).get("nearest_median")),
        ])
    nearest = ((ev or {}).get("nearest") or {}).get("median") or {}
    maxc = (ev or {}).get("max_cardinality") or {}
    cap = ("BY: matched pairs significant at FDR 5% (Benjamini-Yekutieli within each pair), "
           "summed over pairs (spectrum: features, each side of each pair by its nearest cosine "
           "against its own spectrum-conditional null). share: 1 - Storey's pi0 of the "
           "nearest-neighbour p-values "
           "(matched: of the matched p-values, a lower estimate) [90% over runs]. in all others: "
           "the share of a run's features BY-significant in all other runs [90%]. null nearest: "
           "the null's median nearest-neighbour cosine; observed: "
           f"{markup.num(nearest.get('estimate'))}. At the threshold at most "
           f"{markup.num((maxc.get('fraction') or {}).get('estimate'))} of features can be paired at "
           "once (maximum-cardinality matching), one-to-one "
           f"{markup.num((maxc.get('one_to_one_fraction') or {}).get('estimate'))}.")
    return markup.table(["null", "BY significant", "share beyond [90%]", "share, matched p [90%]",
                   "in all others [90%]", "null nearest"], rows, cap)


def _subspace_table(block: dict | None) -> str:
    """summary.subspace: per rank the overlap of the runs' weighted decoder subspaces, each
    null's mean and sd, and whether it is beyond every vetoing null; the verdict as caption."""
    if not block or not block.get("ranks"):
        return ""
    kinds = [k for k, v in block["nulls"].items() if not v.get("skipped")]
    rows = [[markup.num(row["r"]), value_cell(row["overlap"]["estimate"], row["overlap"]["ci"]),
             markup.num(row["random"])]
            + [f"{markup.num(row['nulls'][k]['mean'])} ± {markup.num(row['nulls'][k]['sd'])}"
               for k in kinds]
            + [{True: "yes", False: "no"}.get(row["beyond_all"], "-")] for row in block["ranks"]]
    skipped = "; ".join(f"{k} null {v['reason']}" for k, v in block["nulls"].items()
                        if v.get("skipped"))
    cap = (f"Verdict: {block['verdict']['text']}. overlap: mean squared cosine of the principal "
           "angles between two runs' top-r firing-weighted decoder subspaces, mean over pairs "
           "[90% over runs]; r/d: random subspaces; beyond all: beyond every null but the "
           "dictionary one (built from the decoders, it shares their subspace by construction)."
           + (f" Not computed: {skipped}." if skipped else ""))
    return ("<h3>Subspace: the same span, or the same features?</h3>"
            + markup.table(["rank r", "overlap [90%]", "r/d"] + [f"{k} null" for k in kinds]
                           + ["beyond all"], rows, cap))


def _views(s: dict) -> str:
    """The encoder, activation and ablation views against their floors and checks, in the
    terminal's words (`report.view_text`)."""
    lines = view_lines(s)
    if not lines:
        return ""
    items = "".join(f"<li>{markup.e(line.strip())}</li>" for line in lines)
    return f"<h3>The other views, against chance</h3><ul>{items}</ul>"


def _figures(report_images: dict[str, bytes], prefix: str, group: str) -> str:
    out = []
    for name, caption in FIGURES:
        data = report_images.get(prefix + name)
        if data:
            alt = f"{group}: {name.removesuffix('.png').replace('_', ' ')}"
            out.append(f'<figure><img src="{markup.png_uri(data)}" alt="{markup.e(alt)}">'
                       f"<figcaption>{markup.e(caption)}</figcaption></figure>")
    return "".join(out)


def _pw_mcc_fact(s: dict) -> str | None:
    """The report's PW-MCC with its 90 % interval (None for a report stored without it)."""
    if s.get("pw_mcc") is None:
        return None
    return _with_ci(s["pw_mcc"], ((s.get("seed_intervals") or {}).get("pw_mcc") or {}).get("ci"))


def _summary_facts(s: dict) -> list[tuple[str, Any]]:
    ci = ((s.get("seed_intervals") or {}).get("global_median") or {}).get("ci")
    best = s.get("best_feature_pair") or {}
    return [
        ("pooled median", f"{markup.num(s.get('global_median'))} [{ci_cell(ci)}]" if ci
         else markup.num(s.get("global_median"))),
        ("median of pair medians", markup.num(s.get("median_of_medians"))),
        ("PW-MCC (mean matched cosine)", _pw_mcc_fact(s)),
        (f"at >= {s.get('threshold')}", markup.num(s.get("fraction_at_threshold"))),
        ("best matched feature pair", f"{best['run_a_name']} #{best['feature_a']} ~ "
         f"{best['run_b_name']} #{best['feature_b']}, cosine {best['cosine']:.3f}"
         if best else None),
    ]


def group_section(group: str, groups: list[str], report: dict | None, config: dict | None,
                   images: dict[str, bytes]) -> str:
    head = f'<section id="{markup.anchor(groups, group)}"><h2>{markup.e(group)}</h2>'
    if not report:
        return head + '<p class="note">No report: fewer than two finished runs.</p></section>'
    s = report.get("summary") or {}
    runs = s.get("runs") or []
    solvers = s.get("solver")
    facts = markup.facts([
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
             _subspace_table(s.get("subspace")), _views(s),
             _figures(images, "", group)]
    live = report.get("live_only")
    if live:
        ls = live.get("summary") or {}
        parts += ["<h3>Live features only</h3>", markup.facts(_summary_facts(ls)), _nulls_table(ls.get("nulls")),
                  _evidence_table(ls.get("evidence")), _subspace_table(ls.get("subspace")),
                  _figures(images, LIVE_ONLY_PREFIX, group)]
    elif s.get("live_only_note"):
        parts += [f"<p>Live features only: {markup.e(s['live_only_note'])}.</p>"]
    return "".join(p for p in parts if p) + "</section>"
