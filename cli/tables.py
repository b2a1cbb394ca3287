"""What the `saefast` command draws: progress while a sweep runs, tables at the end."""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from saefast.cli.null_tables import compact_table as _compact_table
from saefast.cli.null_tables import (
    evidence_lines,
    group_table,
    null_lines,
    print_beyond_chance,
    print_nulls,
    print_verdict,
)
from saefast.cli.plain_events import PlainEvents
from saefast.cli.progress_text import duration as _duration
from saefast.cli.progress_text import plural as _plural
from saefast.cli.progress_text import step_info
from saefast.cli.view_tables import print_equivalence
from saefast.report import captions
from saefast.report.cells import (
    ci_cell,
    fractions_cell,
    pw_mcc_line,
)
from saefast.report.cells import fmt as _fmt
from saefast.report.view_text import view_lines
from saefast.sweep.events import ClusterProgress, Events, RunOutcome
from saefast.sweep.experiment import RunSpec
from saefast.sweep.plan import HarvestJob


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB" if n_bytes >= 2**28 else f"{n_bytes / 2**20:.0f} MiB"


class _Remaining(TimeRemainingColumn):
    """The remaining time, left blank for tasks added with eta=False."""

    def render(self, task):
        if task.fields.get("eta", True) is False:
            return Text("")
        return super().render(task)


class RichEvents(Events):
    """A bar while harvesting; two while training: all passes, and the steps of the current
    pass with its loss. Text from the user (names, paths, errors) is printed literally.

    On a console that is not a terminal (a log file, a pipe) it is a `PlainEvents` instead:
    bars there cannot redraw and end as one frozen frame cut to the width."""

    def __new__(cls, console: Console):
        if cls is RichEvents and not (console.is_interactive or console.is_jupyter):
            return PlainEvents(console)
        return super().__new__(cls)

    def __init__(self, console: Console):
        self.console = console
        self.progress: Progress | None = None
        self.passes_task = self.steps_task = None
        self.harvest: Progress | None = None
        self.harvest_task = None
        self.live: Live | None = None  # the Ray executor's task table
        self.report: Progress | None = None  # the steps of the report being computed
        self.report_task = self.pairs_task = None

    def _bars(self, *, transient: bool) -> Progress:
        """Started bars: name, bar, count, info, elapsed and remaining time (none for a task
        added with eta=False: its units differ too much in cost for a rate to mean a time)."""
        bars = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
            MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
            _Remaining(), console=self.console, transient=transient)
        bars.start()
        return bars

    def _start(self, total: int) -> None:
        if self.progress is None:
            self.progress = self._bars(transient=False)
            self.passes_task = self.progress.add_task("passes", total=total, info="")
            self.steps_task = self.progress.add_task("steps", total=1, info="")

    def harvest_started(self, job: HarvestJob) -> None:
        self._stop_harvest()
        self.console.print(f"harvesting {job.tokens:,} tokens of [bold]{escape(job.corpus)}[/] "
                           f"through [bold]{escape(job.model)}[/] at {escape(', '.join(job.hooks))}")

    def harvest_progress(self, done: int, total: int) -> None:
        if self.harvest is None:
            self.harvest = Progress(
                SpinnerColumn(), TextColumn("harvest"), BarColumn(), MofNCompleteColumn(),
                TextColumn("tokens"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=self.console, transient=True)
            self.harvest.start()
            self.harvest_task = self.harvest.add_task("harvest", total=total)
        self.harvest.update(self.harvest_task, completed=min(done, total), total=total)
        if done >= total:
            self._stop_harvest()

    def _stop_harvest(self) -> None:
        if self.harvest is not None:
            self.harvest.stop()
            self.harvest = None

    def pass_started(self, label: str, n_seeds: int, index: int, total: int) -> None:
        self._stop_harvest()
        self._start(total)
        self.progress.update(self.passes_task, completed=index,
                             info=escape(f"{label} ({n_seeds} SAE{'s' if n_seeds > 1 else ''} together)"))
        self.progress.reset(self.steps_task, total=1, info="", description="steps")

    def run_step(self, step: int, total: int, stats: dict) -> None:
        if self.progress is not None:
            self.progress.update(self.steps_task, completed=step, total=total,
                                 info=step_info(stats))

    def run_evaluation(self, done: int, total: int) -> None:
        """The steps bar, once training ends, counts the training tokens encoded again for
        the firing counts (minutes at 16K features)."""
        if self.progress is None:
            return
        if done == 0:  # a fresh rate and clock: the steps' would promise a wrong time
            self.progress.reset(self.steps_task, total=total, description="firing counts",
                                info="tokens encoded after training")
        self.progress.update(self.steps_task, completed=done, total=total)

    def run_finished(self, outcome: RunOutcome) -> None:
        if outcome.status == "failed":
            self.console.print(f"[red]run {escape(outcome.spec.name)} failed:[/] {escape(str(outcome.error))}")

    def report_started(self, group: str) -> None:
        self.close()
        self.console.print(f"matching pairs of [bold]{escape(group)}[/]")

    def report_step(self, group: str, step: str, index: int, total: int) -> None:
        """A bar over the report's steps (`report.assemble.report_steps`), the step's name
        beside it, and one over the pairs while they are matched."""
        if self.report is None:
            self._stop_harvest()
            self.report = self._bars(transient=True)
            # steps: one is the pairs (minutes at 16K features), others take a second
            self.report_task = self.report.add_task("report steps", total=total, info="",
                                                    eta=False)
            self.pairs_task = self.report.add_task("pairs", total=1, info="", visible=False)
        self.report.update(self.report_task, completed=index, total=total,
                           info=escape(f"{group}: {step.replace('_', ' ')}"))
        self.report.update(self.pairs_task, visible=step == "pairs")
        if index + 1 >= total:  # "files", the last: the bar goes when the next report starts
            self.report.update(self.report_task, completed=index)

    def report_pair(self, group: str, done: int, total: int) -> None:
        if self.report is not None:
            self.report.update(self.pairs_task, completed=done, total=total,
                               info=escape(f"{group}: pairs matched"))

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def cluster_progress(self, progress: ClusterProgress) -> None:
        if self.live is None:
            self.live = Live(console=self.console, refresh_per_second=2, transient=False)
            self.live.start()
        self.live.update(cluster_table(progress))

    def close(self) -> None:
        self._stop_harvest()
        if self.report is not None:
            self.report.stop()
            self.report = None
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if self.live is not None:
            self.live.stop()
            self.live = None


def cluster_table(progress: ClusterProgress) -> Table:
    """Tasks of a remote sweep by state, then each node's finished passes and throughput."""
    table = Table(box=box.SIMPLE, title="Ray cluster", title_justify="left")
    for col in ("tasks", "queued", "running", "done", "failed"):
        table.add_column(col, justify="left" if col == "tasks" else "right")
    for name, counts in (("passes", progress.passes), ("pair batches", progress.pairs)):
        table.add_row(name, *(str(counts.get(k, 0)) for k in ("queued", "running", "done")),
                      f"[red]{counts['failed']}[/]" if counts.get("failed") else "0")
    if progress.nodes:
        table.add_section()
        table.add_row("[bold]node[/]", "", "", "[bold]passes[/]", "[bold]token-steps/s[/]")
        for node, rate in sorted(progress.nodes.items()):
            table.add_row(escape(node), "", "", str(rate.passes), f"{rate.token_steps_per_s:,.0f}")
    if progress.running:
        table.add_section()
        shown = sorted(progress.running.items())[:RUNNING_ROWS]
        for task, (node, step, total) in shown:
            table.add_row(escape(task), "", escape(node), f"{step}/{total}" if total else "", "")
        if len(progress.running) > len(shown):
            table.add_row(f"... {len(progress.running) - len(shown)} more running", "", "", "", "")
    return table


RUNNING_ROWS = 8  # running passes listed under the cluster table


def _seed_list(seeds: list[int]) -> str:
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}..{seeds[-1]}"
    return ",".join(map(str, seeds))


def print_plan(console: Console, runs: list[RunSpec], est: dict | None, out: Path, done: int = 0) -> None:
    """--dry-run: the runs left to train (est: plan.estimate of them; None when none are)."""
    already = f" ({done} already done)" if done else ""
    if est is None:
        console.print(escape(f"{_plural(len(runs), 'run')}{already} -> {out}: nothing to train; "
                             "a sweep would only redo reports whose runs changed"))
        return
    table = _compact_table(escape(f"{_plural(len(runs), 'run')}{already} -> {out}; to train: "
                                  f"{_plural(est['runs'], 'run')} in {_plural(est['groups'], 'group')}"))
    table.add_column("group", overflow="fold", min_width=12)
    for col in ("seeds", "model", "corpus", "epochs", "passes", "memory"):
        table.add_column(col, justify="right")
    for row in est["rows"]:
        c = row["config"]
        table.add_row(escape(row["group"]), _seed_list(row["seeds"]), escape(c.model.name), escape(c.data.corpus),
                      str(c.train.epochs), str(row["passes"] or "too big"),
                      _gib(row["memory_bytes"]))
    console.print(table)
    console.print(
        f"{_plural(est['pairs'], 'pair')} to match; {est['token_steps']:,} token-steps of "
        f"training; harvest {est['harvest_tokens']:,} tokens (~"
        f"{_duration(est['harvest_seconds'])}), training ~{_duration(est['train_seconds'])}, "
        f"matching ~{_duration(est['match_seconds'])}, peak memory ~"
        f"{_gib(est['peak_memory_bytes'])} (rough estimates from 2-core CPU rates, an H100's "
        "for training on cuda, on one device: a cluster shares it out; the harvest is skipped "
        "where the activation cache already holds it)")
    if est.get("null_runs"):
        console.print(
            f"trained null: {_plural(est['null_runs'], 'null run')} (each group's recipe and "
            f"first seeds on a surrogate sample), training ~"
            f"{_duration(est['null_train_seconds'])}, matching ~"
            f"{_duration(est['null_match_seconds'])} (--no-trained-null to skip)")
    for note in est.get("notes", []):
        console.print(escape(f"note: {note}"))


def print_summary(console: Console, summary: dict, out: Path) -> None:
    """Two narrow tables (they fit 80 columns): stability against the null, training health."""
    rows = summary.get("groups", [])
    stab = group_table("seed stability: matched decoder cosines", captions.STABILITY,
                       captions.STABILITY_COLUMNS)
    for row in rows:
        stab.add_row(escape(row["group"]), str(row["pairs"]), _fmt(row["global_median"]),
                     ci_cell(row.get("global_median_ci")),
                     fractions_cell(row.get("fraction_above")), _fmt(row["baseline_median"]),
                     _fmt(row.get("live_only_global_median")))
    console.print(stab)
    for row in (r for r in rows if pw_mcc_line(r)):  # too wide for the table: a line each
        console.print(escape(f"{row['group']}: {pw_mcc_line(row)} (90% over runs)"))
    print_verdict(console, rows)
    print_nulls(console, rows)
    print_beyond_chance(console, rows)
    print_equivalence(console, rows)
    health = group_table("training", captions.TRAINING, captions.TRAINING_COLUMNS)
    for row in rows:
        health.add_row(escape(row["group"]), str(row["runs"]), _fmt(row["dead_fraction"], 2),
                       _fmt(row["decoder_cosine_to_init"], 2), _fmt(row["held_out_fvu"], 2))
    console.print(health)
    print_trends(console, summary.get("trends") or [])
    for row in (r for r in rows if r.get("subspace")):  # summary.subspace's verdict
        console.print(escape(f"{row['group']}: subspace: {row['subspace']}"))
    runs = summary.get("runs", {})
    console.print(
        f"{runs.get('done', 0)} trained, {runs.get('skipped', 0)} already done, "
        f"{len(runs.get('failed', []))} failed; took {_duration(summary.get('seconds', 0))}. "
        f"Runs in {escape(str(out / 'runs'))}, reports and plots in {escape(str(out / 'reports'))}.")
    phases, mem = summary.get("phases") or {}, summary.get("memory") or {}
    if phases:  # where the time went, and the memory against the dry run's estimate
        parts = [f"{name} {_duration(phases[key])}" for name, key in (
            ("harvest and training", "runs_s"), ("trained null", "trained_null_s"),
            ("reports", "reports_s"), ("page", "page_s")) if phases.get(key) is not None]
        peak = (f"; peak memory {_gib(mem['peak_bytes'])} (estimate ~{_gib(mem['estimate_bytes'])})"
                if mem.get("peak_bytes") else "")
        console.print(f"time: {', '.join(parts)}{peak}")


def print_trends(console: Console, trends: list[dict]) -> None:
    """One line per family of groups that differ only in tokens: the slope per decade."""
    for t in trends:
        parts = []
        fits = [("median", t.get("global_median"))] + [
            (f"excess over {kind} null", fit) for kind, fit in (t.get("excess_median") or {}).items()
        ] + [(f"share beyond {kind} null*", fit)
             for kind, fit in (t.get("share_beyond_chance") or {}).items()]
        for label, fit in fits:
            if not fit or fit.get("slope_per_decade") is None:
                continue
            ci = fit.get("ci")
            interval = f" (90% CI {ci[0]:+.3f} to {ci[1]:+.3f})" if ci else " (no interval: < 3 seeds)"
            parts.append(f"{label} {fit['slope_per_decade']:+.3f}{interval}")
        if parts:
            budgets = t["global_median"]["budgets"]
            console.print(f"trend per decade of tokens, {escape(t['groups'][0])} ... "
                          f"{escape(t['groups'][-1])}, {budgets[0]:,}-{budgets[-1]:,} "
                          f"({len(t['seeds'])} seeds, resampled jointly; *budgets as "
                          "independent groups of runs): " + "; ".join(parts))


def print_report(console: Console, report: dict, title: str) -> None:
    """The runs, numbered with their whole names (a cut name loses the seed suffix that tells
    runs apart), then one row per pair by those numbers."""
    runs = report.get("summary", {}).get("runs") or []
    listing = _compact_table(f"{title}: runs")
    listing.add_column("#", justify="right")
    listing.add_column("run", overflow="fold")
    listing.add_column("features", justify="right")
    for i, r in enumerate(runs):
        listing.add_row(str(i + 1), escape(r["name"]), str(r.get("n_features", "-")))
    console.print(listing)
    table = _compact_table(f"{title}: pairs")
    for col in ("a", "b", "matched", ">= threshold", "median", "mean", "null median", "solver"):
        table.add_column(col, justify="right")
    for p in report.get("pairs", []):
        a, b = (p.get(f"index_{x}") for x in "ab")  # positions in summary.runs
        table.add_row(str(a + 1) if a is not None else escape(p["run_a_name"]),
                      str(b + 1) if b is not None else escape(p["run_b_name"]),
                      str(p["n_matched_pairs"]), str(p["matched_count_above_threshold"]),
                      _fmt(p["median_cosine"]), _fmt(p["mean_cosine"]),
                      _fmt(p.get("baseline_median_cosine")), str(p.get("solver", "-")))
    console.print(table)
    s = report.get("summary", {})
    base = s.get("baseline") or {}
    console.print(
        f"{_plural(s.get('n_runs') or 0, 'run')}, {_plural(s.get('n_pairs') or 0, 'pair')}: median of the pair medians "
        f"{_fmt(s.get('median_of_medians'))}, pooled median {_fmt(s.get('global_median'))}, "
        f"PW-MCC (mean matched cosine) {_fmt(s.get('pw_mcc'))}, "
        f"mean stability fraction {_fmt(s.get('mean_stability_fraction'))} at threshold "
        f"{s.get('threshold')}; random baseline median "
        f"{_fmt(base.get('median_cosine', base.get('median')))}")
    bf = s.get("best_feature_pair")
    if bf:
        console.print(escape(f"best matched feature pair: {bf['run_a_name']} #{bf['feature_a']} ~ "
                             f"{bf['run_b_name']} #{bf['feature_b']}, cosine {bf['cosine']:.3f}"),
                      soft_wrap=True)
    for line in null_lines(s.get("nulls")):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    for line in evidence_lines(s.get("evidence")):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if (s.get("subspace") or {}).get("verdict"):  # same features, same subspace, or neither
        console.print(f"subspace: {s['subspace']['verdict']['text']}", markup=False,
                      highlight=False, soft_wrap=True)
    for line in view_lines(s):  # the encoder, activation and ablation views vs chance
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    live = report.get("live_only")
    if live:
        print_report(console, {"pairs": live.get("pairs", []), "summary": live.get("summary", {})},
                     title=f"{title} (live features only)")
    elif s.get("live_only_note"):
        console.print(f"live features only: {s['live_only_note']}", markup=False,
                      highlight=False, soft_wrap=True)


def print_info(console: Console, info: dict) -> None:
    table = Table(title="saefast", show_header=False)
    table.add_column("key")
    table.add_column("value", overflow="fold")
    for key, value in info.items():
        table.add_row(escape(str(key)), escape(", ".join(map(str, value)) if isinstance(value, list) else str(value)))
    console.print(table)


def print_corpora(console: Console, rows: list[dict], model: str | None, tokens: int) -> None:
    """The built-in corpora: what each is and, with a model, its unknown-token rate."""
    table = Table(title="built-in corpora", box=box.SIMPLE)
    table.add_column("corpus")
    table.add_column("what", overflow="fold")
    if model:
        table.add_column(f"{model} [UNK] (first {tokens:,} tokens)", justify="right")
    for row in rows:
        cells = [escape(row["name"]), escape(row["description"])]
        if model:
            rate = row.get("unknown")
            cells.append("-" if rate is None else
                         "none (byte-level)" if not rate.has_unknown else f"{rate.rate:.2%}")
        table.add_row(*cells)
    console.print(table)
