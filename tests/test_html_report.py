"""OUT/report.html: one self-contained page per sweep (saefast.report.html, report.page.write_html),
checked on a real tiny sweep whose experiment and corpus names hold HTML's special characters."""

import base64
import copy
import json
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser

import pytest

from saefast.cli.main import main
from saefast.report import captions, cells
from saefast.report import files as reports
from saefast.report import html as html_report
from saefast.report import html_groups
from saefast.report import html_markup as markup
from saefast.runs.layout import HTML_REPORT

NAME = 'tiny <study> & "co"'
DESCRIPTION = "three seeds, <b>not bold</b> & 'quoted'"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Three seeds of a 16-feature SAE on 800 tokens of the tiny model (as tests/test_cli.py),
    live-only reports too, from an experiment YAML and a corpus file named with < & > "."""
    from pydoc_data.topics import topics

    root = tmp_path_factory.mktemp("html")
    corpus = root / 'docs <&> "x".txt'
    corpus.write_text("\n\n".join(topics[k] for k in sorted(topics)[:40]))
    exp = root / "exp.yaml"
    exp.write_text(json.dumps({  # JSON is YAML: the names quoted whatever they hold
        "name": NAME, "description": DESCRIPTION,
        "base": {"model": {"name": "tiny", "hook": "blocks.1.hook_resid_pre"},
                 "data": {"corpus": str(corpus), "tokens": 800},
                 "sae": {"n_features": 16, "k": 2}, "train": {"epochs": 3},
                 "match": {"live_only": True}},
        "grid": {"train.seed": "1..3"}}))
    out = root / "out"
    assert main(["sweep", str(exp), "--out", str(out), "--cache-dir", str(root / "cache")]) == 0
    return out, corpus


class Page(HTMLParser):
    """Every tag with its attributes, every table as rows of cell texts, the visible text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.tables: list[list[list[str]]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def row(self, header: str, label: str) -> dict[str, str]:
        """The row of the first table with this column header whose first cell is label."""
        for table in self.tables:
            if header in table[0]:
                for r in table[1:]:
                    if r[0] == label:
                        return dict(zip(table[0], r))
        raise AssertionError(f"no row {label!r} in a table with column {header!r}")


def _page(out) -> tuple[str, Page]:
    text = (out / HTML_REPORT).read_text(encoding="utf-8")
    return text, Page(text)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_the_sweep_and_the_report_command_write_the_page(sweep, capsys):
    out, _ = sweep
    assert (out / HTML_REPORT).is_file()  # the sweep wrote it after summary.json
    (out / HTML_REPORT).unlink()
    assert main(["report", str(out)]) == 0
    assert f"HTML report: {out / HTML_REPORT}" in capsys.readouterr().out.replace("\n", "")
    _, page = _page(out)
    assert not [n for n in out.iterdir() if n.name.startswith(".")]  # written atomically
    (out / HTML_REPORT).unlink()
    assert main(["report", str(out), "--no-html"]) == 0
    assert not (out / HTML_REPORT).exists()
    assert main(["report", str(out)]) == 0


def test_the_terminal_and_the_page_caption_each_table_alike(sweep, capsys):
    """One caption per summary table (report/captions.py), printed by both media."""
    out, _ = sweep
    assert main(["report", str(out), "--no-html"]) == 0
    terminal = " ".join(capsys.readouterr().out.split())
    _, page = _page(out)
    page_text = " ".join(" ".join(page.text).split())
    shown = [captions.STABILITY, captions.NULLS, captions.BEYOND_CHANCE, captions.TRAINING]
    summary = json.loads((out / "summary.json").read_text())
    if any(r.get("equivalence") for r in summary["groups"]):
        shown.append(captions.EQUIVALENCE)
    for caption in shown:
        assert " ".join(caption.split()) in terminal
        assert " ".join(caption.split()) in page_text


def test_report_help_describes_the_page(capsys):
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--no-html" in text and "report.html" in text and "contained page" in text


def test_every_plot_is_an_embedded_png(sweep):
    out, _ = sweep
    _, page = _page(out)
    srcs = [a.get("src", "") for tag, a in page.tags if tag == "img"]
    on_disk = sorted(p.name for p in (out / "reports").glob("*/*.png"))
    assert len(srcs) == len(on_disk) >= 3
    # no seed trained a dead feature: the live-only sections would repeat the page, so they
    # are one line, and no live-only plot is drawn
    assert not any(n.startswith("live_only_") for n in on_disk)
    assert "the live-only report is the full report" in " ".join(page.text)
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        width, height = _png_size(base64.b64decode(src.split(",", 1)[1], validate=True))
        assert width > 0 and height > 0
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in srcs}
    assert embedded == {p.read_bytes() for p in (out / "reports").glob("*/*.png")}


def test_no_network_references(sweep):
    out, _ = sweep
    text, page = _page(out)
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
        for key in ("src", "href", "action", "srcset", "poster", "data"):
            value = (attrs.get(key) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//", "ftp:")), (tag, key, value)
            if tag == "a" and key == "href":
                assert value.startswith("#")  # links stay inside the page
    assert "@import" not in text and "url(" not in text
    # nor local paths: the activation store is named, not located (a page is shared)
    cache = out.parent / "cache"
    assert str(cache) not in text and "activation store " in text


def test_every_group_has_its_numbers(sweep):
    out, _ = sweep
    summary = json.loads((out / "summary.json").read_text())
    _, page = _page(out)
    assert summary["groups"]
    for row in summary["groups"]:
        g = row["group"]
        stab = page.row("90% CI", g)
        assert stab["median"] == cells.fmt(row["global_median"])
        assert stab["90% CI"] == cells.ci_cell(row["global_median_ci"]) != "-"
        assert stab[">=.5/.7/.9"] == cells.fractions_cell(row["fraction_above"])
        assert stab["live"] == cells.fmt(row["live_only_global_median"])
        nulls = page.row("over cov [90%]", g)
        assert nulls["PW-MCC [90%]"].startswith(cells.fmt(row["pw_mcc"])) and row["pw_mcc"]
        for kind in cells.NULL_KINDS:
            short = cells.SHORT[kind]
            assert nulls[f"{short} null median"] == cells.fmt(row["null_medians"].get(kind))
            assert nulls[f"over {short} [90%]"] == cells.excess_cell(row["excess"].get(kind))
            assert nulls[f"PW-MCC over {short} [90%]"] == cells.excess_cell(
                row["excess_pw_mcc_by_null"].get(kind))
        assert nulls["over iso [90%]"] != "-" and nulls["PW-MCC over iso [90%]"] != "-"
        assert nulls["PW-MCC [90%]"] == f"{cells.fmt(row['pw_mcc'])} [{cells.ci_cell(row['pw_mcc_ci'])}]"
        beyond = page.row("BY vs cov", g)
        for kind in cells.NULL_KINDS:
            short = cells.SHORT[kind]
            b = row["beyond_chance"].get(kind)
            assert beyond[short] == cells.share_cell(b)
            assert beyond[f"BY vs {short}"] == cells.fmt((b or {}).get("fraction_significant_by"))
        if row.get("equivalence"):  # summary.equivalence, where the reports compute it
            e = row["equivalence"]
            sides = page.row("same", g)
            assert sides["shared"] == cells.share_cell({"share": e["shared"], "share_ci": e["shared_ci"]})
            assert sides["r"] == cells.share_cell({"share": e["r"], "share_ci": e["r_ci"]})
        health = page.row("cos to init", g)
        assert health["dead"] == cells.fmt(row["dead_fraction"], 2)
        assert health["FVU"] == cells.fmt(row["held_out_fvu"], 2)
        assert health["cos to init"] == cells.fmt(row["decoder_cosine_to_init"], 2)


def _methods(obj, found):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "method":
                found.update(v.values() if isinstance(v, dict) else [v])
            else:
                _methods(v, found)
    elif isinstance(obj, list):
        for v in obj:
            _methods(v, found)
    return found


def _report_dirs(out):
    """The group reports of a sweep (OUT/reports/.matchings holds its pair matchings)."""
    return [d for d in (out / "reports").iterdir() if not d.name.startswith(".")]


def test_the_method_strings_of_the_reports_appear(sweep):
    out, _ = sweep
    _, page = _page(out)
    visible = " ".join(page.text)
    (report_dir,) = _report_dirs(out)
    report = reports.load_report(report_dir)
    s = report["summary"]
    assert report["live_only"] is None  # no dead feature: one report (test above)
    methods = _methods({"s": s}, set())
    assert s["nulls"]["method"] in methods and len(s["evidence"]["method"]) >= 5
    for text in methods:
        assert text in visible, text


def test_the_study_is_named_and_user_text_is_escaped(sweep):
    out, corpus = sweep
    text, page = _page(out)
    visible = " ".join(page.text)
    assert NAME in visible and DESCRIPTION in visible and str(corpus) in visible
    assert {t for t, _ in page.tags}.isdisjoint({"study", "b", "x"})  # none became a tag
    assert "<study>" not in text and "<b>" not in text and "&lt;b&gt;" in text
    infos = [json.loads(p.read_text()) for p in (out / "runs").glob("*/run.json")]
    created = sorted(i["created"] for i in infos)
    assert infos[0]["versions"]["torch"] in visible
    assert f"cpus {infos[0]['machine']['cpus']}" in visible  # run.json's machine
    assert f"{created[0]} to {created[-1]}" in visible


def test_names_with_markup_are_escaped_in_every_section(sweep):
    """A group named like markup, and notes and methods that hold < & >: the page shows them
    as text and its anchors still work."""
    out, _ = sweep
    summary = json.loads((out / "summary.json").read_text())
    (report_dir,) = _report_dirs(out)
    report = reports.load_report(report_dir)
    old = report_dir.name
    evil = '<img src="https://example.com/x.png">&amp;'
    summary["groups"][0]["group"] = evil
    report = copy.deepcopy(report)
    report["summary"]["nulls"]["note"] = "only 3 <tokens> & fewer"
    report["summary"]["evidence"]["method"]["unit"] = "a <method> & more"
    page_text = html_report.render(summary, {evil: report}, title="t<i>")
    page = Page(page_text)
    visible = " ".join(page.text)
    assert not [a for t, a in page.tags if t == "img"]  # no figures given, none made up
    assert evil in visible and "t<i>" in visible and f">{old}<" not in page_text
    assert "only 3 <tokens> & fewer" in visible and "a <method> & more" in visible
    ids = {a["id"] for _, a in page.tags if "id" in a}
    for tag, attrs in page.tags:
        if tag == "a":
            assert attrs["href"][1:] in ids  # every link lands on a section


def test_skipped_nulls_and_missing_reports_are_noted(sweep):
    out, _ = sweep
    summary = json.loads((out / "summary.json").read_text())
    (report_dir,) = _report_dirs(out)
    report = reports.load_report(report_dir)
    g = report_dir.name
    act = report["summary"]["nulls"]["kinds"]["activations"]
    act.update(skipped=True, reason="skipped: only 9 distinct tokens", median_cosine=None)
    report["summary"]["nulls"]["note"] = None
    report["summary"]["evidence"]["by_null"]["activations"] = {
        "skipped": True, "reason": "the activations null has 9 distinct tokens"}
    report["summary"]["equivalence"] = {"encoder": None, "activation": None,
                                        "skipped": ["encoder: a run has no encoder <W_enc>"]}
    summary["groups"][0]["equivalence"] = {"shared": 0.25, "shared_ci": [0.2, 0.3], "r": 0.5,
                                           "r_ci": None, "same_partner": 0.75, "agreement": None}
    summary["groups"].append({"group": "lonely", "runs": 1, "pairs": 0})
    summary["runs"]["failed"] = [{"name": "lonely-s2", "error": "loss became NaN at step 3"}]
    page = Page(html_report.render(summary, {g: report}))
    notes = " ".join(page.text).split("what was skipped and why", 1)[1]
    assert "skipped: only 9 distinct tokens" in notes
    assert "the activations null has 9 distinct tokens" in notes
    assert "lonely: no report" in notes and "loss became NaN at step 3" in notes
    assert "equivalence: encoder: a run has no encoder <W_enc>" in notes
    sides = page.row("same", g)  # the equivalence row as summarize writes it
    assert [sides[c] for c in ("shared", "r", "same", "both")] == [
        ".25 [.20,.30]", ".50", ".75", "-"]


def test_trends_are_shown_with_their_method():
    trend = {"groups": ["a-t1000", "a-t10000"], "seeds": [1, 2, 3],
             "global_median": {"budgets": [1000, 10000], "values": [0.2, 0.3],
                               "slope_per_decade": 0.1, "ci": [0.05, 0.15], "method": "M <1>"},
             "excess_median": {"covariance": {"budgets": [1000, 10000], "values": [-0.1, 0.0],
                                              "slope_per_decade": 0.1, "ci": None,
                                              "method": "M <1>"}}}
    page = Page(html_report.render({"groups": [], "trends": [trend]}, {}))
    median = page.row("slope per decade", "a-t1000 ... a-t10000")
    assert median["slope per decade"] == "+0.100" and median["90% CI"] == "+0.050 to +0.150"
    assert "M <1>" in " ".join(page.text)
    assert ["a-t1000 ... a-t10000", "excess over covariance null", "+0.100", "none: < 3 seeds",
            "1,000: -0.100, 10,000: 0.000", "3"] in page.tables[-1]


def _browser():
    for name in ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_browser() is None, reason="no chromium on PATH (apt-get install chromium-headless-shell)")
def test_a_headless_browser_loads_every_image(sweep, tmp_path):
    """The page in a real browser: every embedded image decodes (naturalWidth > 0), counted
    by a probe script added to a copy (the page itself has no script); a broken image counts
    as broken, so the probe can fail."""
    out, _ = sweep
    text, page = _page(out)
    n = sum(t == "img" for t, _ in page.tags)
    probe = ("<script>window.addEventListener('load',function(){var im=document.images,ok=0;"
             "for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)ok++;}"
             "document.title='images '+ok+' of '+im.length;});</script>")

    def loaded(html_text: str, name: str) -> str:
        path = tmp_path / name
        path.write_text(html_text.replace("</body>", probe + "</body>"), encoding="utf-8")
        dom = subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu",
                              "--dump-dom", path.as_uri()], capture_output=True, text=True,
                             timeout=120).stdout
        title = re.search(r"<title>(.*?)</title>", dom)
        return title.group(1) if title else dom[:200]

    assert loaded(text, "page.html") == f"images {n} of {n}"
    broken = text.replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1)
    assert loaded(broken, "broken.html") == f"images {n - 1} of {n}"
    shot = tmp_path / "shot.png"
    subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu",
                    "--window-size=1200,3000", f"--screenshot={shot}",
                    (out / HTML_REPORT).as_uri()], capture_output=True, timeout=120)
    assert _png_size(shot.read_bytes()) == (1200, 3000)


def test_the_page_opens_with_what_the_study_found(sweep):
    """The verdict comes first, before the study's metadata: each group's headline share
    against the null it rests on, and the subspace verdict in words."""
    out, _ = sweep
    text, page = _page(out)
    assert text.index('id="verdict"') < text.index('id="study"') < text.index('id="overview"')
    summary = json.loads((out / "summary.json").read_text())
    (row,) = summary["groups"]
    table = next(t for t in page.tables if t[0][:3] == ["group", "in words", "beyond chance [90%]"])
    (cells_,) = table[1:]
    h = row["headline"]
    assert cells_[1] == row["subspace"]
    if h["null"] is not None:
        assert cells_[2] == cells.value_cell(h["share"], h["share_ci"]) and cells_[3] == h["null"]
    else:  # 3 runs of 720 tokens: no share with an interval, and the page says so
        assert cells_[2:4] == ["-", "none"] and row["subspace"].startswith("not judged")
    (prefix, one, _), = [f for f in html_groups.FINDINGS if row["subspace"].startswith(f[0])]
    flat = " ".join(" ".join(page.text).split())
    assert f"Of 1 group: 1 {one}." in flat
    # how to read it is on the page, after the verdict and before the study's metadata
    assert text.index("How to read this page") < text.index('id="study"')
    assert all(markup.e(item) in text for item in captions.HOW_TO_READ)


def test_a_sweep_that_barely_trained_says_so_in_the_terminal_and_on_the_page(sweep, capsys):
    """800 tokens, 3 epochs: the tiny model's decoders stay ~0.95 cosine to their init; the
    summary, `saefast report` and the page's notes all say the SAEs barely trained."""
    out, _ = sweep
    summary = json.loads((out / "summary.json").read_text())
    (row,) = summary["groups"]
    assert row["decoder_cosine_to_init"] >= 0.9  # what the warning rests on
    (warning,) = summary["warnings"]
    assert warning.startswith(row["group"]) and "barely trained" in warning
    assert main(["report", str(out)]) == 0
    assert "barely trained" in " ".join(capsys.readouterr().err.split())
    _, page = _page(out)
    assert " ".join(warning.split()) in " ".join(" ".join(page.text).split())
