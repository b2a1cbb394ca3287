"""The `saefast` command: sweep, analyze, report, corpora, info.

Errors a user can fix (bad config, missing file, unknown model or hook, wrong shapes) are
`saefast.errors.SaefastError`s: they print one line and exit with status 2, and nothing
already written is touched. So does an OSError about a path (permission denied, a file where
a folder should be, disk full). Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from saefast.cli import export_command, tables
from saefast.config import choices
from saefast.errors import ConfigError, SaefastError

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # one error, one line


def _warn(lines: list[str]) -> None:
    """Each line on stderr as a warning (user text escaped, never read as markup)."""
    for line in lines:
        err_console.print(f"[yellow]warning:[/] {escape(line)}")


DEFAULT_OUT = "saefast-out"


# ---------------------------------------------------------------------------- sweep


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="harvest activations, train a grid of SAEs, match every pair, report",
        description="Train a grid of Top-K SAEs (variants x grid of an experiment YAML, plus "
                    "--axis and shorthand flags), match every pair of seeds, and report "
                    "stability next to a random-dictionary baseline. Re-running the same "
                    "command skips finished runs.",
        epilog='examples:\n  saefast sweep experiments/seed_repro.yaml\n'
               '  saefast sweep --features 16384 --seeds 20 --tokens 200000\n'
               '  saefast sweep exp.yaml --axis "train.seed=1..10" --axis "sae.k=8,32" --dry-run\n'
               '  saefast sweep exp.yaml --executor ray --address auto   (a Ray cluster)',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="experiment YAML (base / variants / grid); "
                   "optional: without it the defaults and flags define one group")
    p.add_argument("--axis", action="append", default=[], metavar="KEY=VALUES",
                   help='add a grid axis, e.g. "train.seed=1..20" or "sae.k=8,16,32" (repeatable)')
    p.add_argument("--model", help="minilm (default), gemma-270m, tiny, a HF name or a local dir")
    p.add_argument("--hook", help="hook point, e.g. blocks.3.hook_resid_pre (default blocks.0...)")
    p.add_argument("--corpus", help="python-docs (default), python-code, math, multilingual, a "
                   ".txt/.jsonl file or folder, or hf:<dataset> (saefast corpora lists them)")
    p.add_argument("--tokens", help="activation vectors to harvest, e.g. 30000 or 30k "
                   "(default 30000; the last 10%% are held out)")
    p.add_argument("--features", type=int, help="dictionary size (default 128)")
    p.add_argument("--k", type=int, help="active features per token (default 8)")
    p.add_argument("--epochs", type=int, help="passes over the training tokens (default 8)")
    p.add_argument("--lr", type=float, help="learning rate (default 0 = auto: 2e-4 / sqrt(F / 16384))")
    p.add_argument("--seeds", type=int, help="train seeds 1..N (default: the config's, else 1..5)")
    p.add_argument("--device", help="cpu (default), cuda, cuda:1 ...")
    p.add_argument("--live-only", action="store_true", help="also report live-only matching")
    p.add_argument("--stream", action="store_true",
                   help="no activation cache: stream activations from the model straight into "
                        "training (data.cache=false)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--cache-dir", help="activation cache (default $SAEFAST_CACHE_DIR, else the "
                   "user cache dir)")
    p.add_argument("--memory-budget", metavar="SIZE",
                   help="memory for training, e.g. 8G (default: 80%% of free memory; on CUDA "
                        "90%% of free GPU memory); seeds that do not fit together are trained "
                        "in several passes")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads to use (default $SAEFAST_THREADS, else all cores); passes of "
                        "small dictionaries train their seeds in min(N, seeds) worker processes, "
                        "larger ones use N threads inside each op; with --executor ray, the "
                        "CPUs (and threads) each Ray task declares (default 1)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the runs, pairs and estimated memory and time; run nothing")
    _add_no_trained_null(p)
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local (default): this machine; ray: each pass and each batch of pair "
                        "matchings is a task on a Ray cluster (pip install 'saefast[ray]'); "
                        "--out and --cache-dir must be on a filesystem every node shares")
    p.add_argument("--address", metavar="auto|HOST:PORT",
                   help="with --executor ray: the cluster (auto: the one `ray start` runs here; "
                        "default $RAY_ADDRESS, else a local Ray instance on this machine)")
    p.add_argument("--retries", type=int, default=2, metavar="N",
                   help="with --executor ray: tries after a task's first that fail (a lost "
                        "worker or node, a transient error); a pass failing them all is reported "
                        "as failed runs and the sweep goes on (default 2)")
    p.set_defaults(func=cmd_sweep)


def _add_no_trained_null(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-trained-null", action="store_true",
                   help="do not train the trained null (each seed group's recipe retrained on "
                        "surrogate activations with the data's mean and covariance; on by "
                        "default, as the experiment YAML's nulls: {trained: false} turns off)")


def _nulls(args: argparse.Namespace, nulls=None):
    """The trained null's settings: the experiment's (default on), off with --no-trained-null."""
    import dataclasses

    from saefast.config import NullsConfig

    nulls = nulls or NullsConfig()
    return dataclasses.replace(nulls, trained=False) if args.no_trained_null else nulls


def _sweep_runs(args: argparse.Namespace):
    from saefast.sweep import experiment

    exp = experiment.load_experiment(args.config) if args.config else experiment.Experiment()
    flags = {"model.name": args.model, "model.hook": args.hook, "data.corpus": args.corpus,
             "data.tokens": args.tokens, "sae.n_features": args.features, "sae.k": args.k,
             "train.epochs": args.epochs, "train.lr": args.lr, "model.device": args.device}
    overrides = {k: v for k, v in flags.items() if v is not None}
    if args.live_only:
        overrides["match.live_only"] = True
    if args.stream:
        overrides["data.cache"] = False
    axes = [experiment.parse_axis(a) for a in args.axis]
    keys = [k for k, _ in axes]
    for key in sorted({k for k in keys if keys.count(k) > 1}):
        raise ConfigError(f"--axis {key} is given twice; list all its values in one --axis")
    if args.seeds is not None:
        if args.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
        if "train.seed" in keys:
            raise ConfigError("--seeds and --axis train.seed=... both set the seeds; use one")
        axes.append(("train.seed", list(range(1, args.seeds + 1))))
    elif not args.config and not any(k == "train.seed" for k, _ in axes):
        axes.append(("train.seed", [1, 2, 3, 4, 5]))
    # shorthand flags set base keys, but a user who types --features means it for every run
    for variant in exp.variants:
        for key in overrides:
            variant.pop(key, None)
    return exp, experiment.expand(exp, axes, overrides)


def _apply_threads(requested: int | None) -> int:
    """The thread budget (--threads, $SAEFAST_THREADS or torch's), also for torch's own ops
    in this process (harvest, reports)."""
    import torch

    from saefast.sweep import threads

    n = threads.configured(requested)
    torch.set_num_threads(n)
    return n


def _executor(args: argparse.Namespace):
    """None for the local executor; a RayExecutor for --executor ray (--threads: the CPUs
    each task declares, default 1)."""
    if args.executor != "ray":
        if args.address is not None:
            raise ConfigError("--address needs --executor ray")
        return None
    if args.dry_run:
        return None  # a dry run plans; it needs no cluster
    from saefast.sweep.ray import executor as ray_executor

    return ray_executor.executor_from_args(args.address, args.retries, args.threads)


def cmd_sweep(args: argparse.Namespace) -> int:
    from saefast.sweep import plan, plan_warnings
    from saefast.train.memory import parse_bytes

    exp, runs = _sweep_runs(args)
    budget = parse_bytes(args.memory_budget)
    # names, corpus sizes, devices and folders before torch or a model loads: a typo fails in
    # a second (run_sweep checks again, for library callers); with --executor ray the devices
    # are the cluster's, not this machine's
    checked = plan.preflight(runs, args.out, args.cache_dir, devices=args.executor == "local")
    n_threads = _apply_threads(args.threads)
    executor = _executor(args)  # before any work: Ray missing is one line now
    _warn(checked + plan_warnings.undertrained_warnings(runs) + plan_warnings.unmatched_warnings(runs))
    if args.dry_run:  # the checks above are all a sweep makes before its work
        todo, done = plan.pending(runs, Path(args.out))
        # the Ray executor does not train the trained null: no cost line for it
        nulls = _nulls(args, exp.nulls) if args.executor == "local" else None
        tables.print_plan(console, runs, plan.estimate(todo, budget, nulls=nulls) if todo else None,
                          Path(args.out), done=len(done))
        return 0
    from saefast.runs.layout import HTML_REPORT
    from saefast.sweep import pipeline

    events = tables.RichEvents(console)
    try:
        study = ({"name": exp.name, "description": exp.description, "file": args.config}
                 if args.config else None)  # without a YAML the page is named after --out
        summary = pipeline.run_sweep(runs, args.out, cache_dir=args.cache_dir, events=events,
                                     memory_budget=budget, experiment=study,
                                     threads=n_threads, executor=executor,
                                     nulls=_nulls(args, exp.nulls))
    finally:
        events.close()
    tables.print_summary(console, summary, Path(args.out))
    console.print(f"HTML report: {escape(str(Path(args.out) / HTML_REPORT))}")
    _warn(summary.get("warnings") or [])  # measured: groups that barely trained
    failed = summary["runs"]["failed"]
    for f in failed:
        err_console.print(f"[red]failed:[/] {escape(f['name'])}: {escape(f['error'])}")
    return 1 if failed else 0


# ---------------------------------------------------------------------------- analyze


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze", help="match SAEs you already trained and report their stability",
        description="Match every pair of the given run directories (saefast, the original "
                    "study's format, SAELens, EleutherAI sparsify or dictionary_learning "
                    "checkpoints) one-to-one by decoder cosine, and write stability.json, "
                    "feature_recurrence.csv and plots into --out. Runs of different corpora "
                    "(cross-domain) are judged against the isotropic and dictionary-covariance "
                    "nulls only (the others describe one training set).")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run dirs, or folders of them (a sweep's OUT or OUT/runs)")
    p.add_argument("--live-only", action="store_true",
                   help="also match only live features (needs feature_analysis.json)")
    p.add_argument("--threshold", type=float, default=0.9,
                   help="cosine that counts as the same feature (default 0.9)")
    p.add_argument("--top-k", type=int, default=20, help="best matches listed per pair (default 20)")
    p.add_argument("--solver", default="auto", choices=choices("match.solver"),
                   help="assignment solver (default auto: native certified if built, else "
                        "lapjv, else scipy)")
    p.add_argument("--out", default="saefast-analysis", help="report folder (default saefast-analysis)")
    p.add_argument("--acts", metavar="STORE_DIR",
                   help="the activation store the runs were trained on (a sweep's cache: "
                        "<cache>/activations/<model>__<hook>__...): adds the covariance and "
                        "activation-sampled nulls and the activation-correlation view on the "
                        "runs' held-out tokens; without it only the isotropic null")
    p.add_argument("--spectrum-null", action="store_true",
                   help="with --acts: also the spectrum-matched null (the other run rotated "
                        "within bands of the activations' eigen-spectrum; per-feature p-values "
                        "conditional on the spectrum); slow, off by default")
    p.add_argument("--ablation-tokens", type=int, default=0, metavar="N",
                   help="also measure ablation equivalence on N tokens of the corpus (causal "
                        "LMs: splice loss per run, per-token feature effects of every matched "
                        "pair, attribution checked by exact removals); runs the model, off by "
                        "default")
    p.add_argument("--model", help="with --ablation-tokens: the model (default: run.json's)")
    p.add_argument("--hook", help="with --ablation-tokens: the hook (default: run.json's)")
    p.add_argument("--corpus", help="with --ablation-tokens: the corpus (default: run.json's)")
    _add_no_trained_null(p)
    p.set_defaults(func=cmd_analyze)


def cmd_analyze(args: argparse.Namespace) -> int:
    from saefast.report import files as reports
    from saefast.report import missing
    from saefast.report.inputs import shared_init_warning
    from saefast.runs.artifacts import find_run_dirs

    out = Path(args.out)
    run_dirs = find_run_dirs(args.run_dirs)
    _warn([w for w in [shared_init_warning(run_dirs)] if w])
    nulls = _nulls(args)
    if nulls.kinds():  # the null runs beside the runs, trained here when they are not yet
        from saefast.sweep import null_runs

        events = tables.RichEvents(console)
        try:
            null_runs.train_for_dirs(run_dirs, nulls, events=events)
        finally:
            events.close()
    events = tables.RichEvents(console)  # the report's steps, as a sweep shows them
    try:
        report = reports.analyze_runs(
            run_dirs, out, threshold=args.threshold, top_k=args.top_k,
            live_only=args.live_only, solver=args.solver, acts=args.acts,
            spectrum_null=args.spectrum_null, trained_null=nulls,
            ablation=({"tokens": args.ablation_tokens, "model": args.model, "hook": args.hook,
                       "corpus": args.corpus} if args.ablation_tokens else None),
            on_step=lambda step, i, n: events.report_step("report", step, i, n),
            progress=lambda i, n, _pair: events.report_pair("report", i, n))
    finally:
        events.close()
    tables.print_report(console, report, title="stability")
    _warn(missing.warnings(report, "report"))  # statistics that could not be computed
    console.print(f"report: {Path(args.out) / 'stability.json'}")
    return 0


# ---------------------------------------------------------------------------- report


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="tables, plots and the HTML page of an existing sweep",
                       description="Print the summary tables of a finished sweep, redraw its "
                                   "plots and write OUT_DIR/report.html, without training "
                                   "anything. report.html is one self-contained page to "
                                   "share: the study, every group's tables against the nulls, "
                                   "training health, trends, plots (embedded), the method "
                                   "and what was skipped.")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--no-html", action="store_true",
                   help="do not write OUT_DIR/report.html (tables and plots only)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from saefast.errors import SweepError
    from saefast.report import files as reports
    from saefast.report import page
    from saefast.runs import layout
    from saefast.runs.artifacts import read_json
    from saefast.runs.layout import SUMMARY_JSON as SUMMARY

    out = Path(args.out_dir)
    summary_path = layout.summary_path(out)
    if not summary_path.is_file():
        hint = ("the sweep has not finished: run it again to resume" if (out / "runs").is_dir()
                else "is this a sweep's --out folder?")
        raise SweepError(f"{out}: no {SUMMARY}; {hint}")
    summary = read_json(summary_path)
    for report_path in sorted(layout.reports_dir(out).glob(f"*/{reports.STABILITY_JSON}")):
        reports.redraw(report_path.parent)
    tables.print_summary(console, summary, out)
    _warn(summary.get("warnings") or [])  # measured: groups that barely trained
    if not args.no_html:
        console.print(f"HTML report: {escape(str(page.write_html(out, summary)))}")
    return 0


# ---------------------------------------------------------------------------- corpora


def _add_corpora(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("corpora", help="list the built-in corpora (and a model's unknown-token rate)",
                       description="List the built-in corpora. With --model, tokenize the first "
                                   "--tokens tokens of each with that model's tokenizer and show "
                                   "the share that is its unknown token ([UNK]).")
    p.add_argument("--model", help="minilm, gemma-270m, tiny, a HF name or a local dir")
    p.add_argument("--tokens", type=int, default=100_000,
                   help="tokens counted per corpus with --model (default 100000)")
    p.set_defaults(func=cmd_corpora)


def cmd_corpora(args: argparse.Namespace) -> int:
    from saefast.data import corpora, coverage
    from saefast.errors import CorpusError

    if args.tokens < 1:
        raise ConfigError(f"--tokens must be >= 1, got {args.tokens}")
    tok = coverage.load_tokenizer(args.model) if args.model else None
    rows = []
    for name in corpora.BUILTIN_CORPORA:
        try:  # a corpus whose optional package is missing is listed with the reason
            what = corpora.describe_corpus(name)
            row = {"name": name, "description": what.removeprefix(f"{name}: ")}
            if tok is not None:
                row["unknown"] = coverage.unknown_token_rate(args.model, name, args.tokens, tokenizer=tok)
        except CorpusError as err:
            row = {"name": name, "description": f"unavailable: {err}"}
        rows.append(row)
    tables.print_corpora(console, rows, args.model, args.tokens)
    return 0


# ---------------------------------------------------------------------------- info


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions, native build, devices",
                       description="Show what saefast was built with and what it can use here, "
                                   "including the threads a sweep would use.")
    p.add_argument("--threads", type=int, metavar="N", help="show the plan for sweep --threads N")
    p.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    import saefast
    from saefast.sweep import threads

    _apply_threads(args.threads)
    info = saefast.build_info()
    info.update(threads.info(args.threads))
    from saefast.sweep.ray.executor import ray_info

    info["ray"] = ray_info()
    tables.print_info(console, info)
    _warn([info["torch_mismatch"]] if info.get("torch_mismatch") else [])
    return 0


# ---------------------------------------------------------------------------- entry


def build_parser() -> argparse.ArgumentParser:
    import saefast

    parser = argparse.ArgumentParser(
        prog="saefast",
        description="Train many Top-K SAEs and measure how reproducible their features are.")
    parser.add_argument("--version", action="version", version=f"saefast {saefast.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_sweep(sub)
    _add_analyze(sub)
    _add_report(sub)
    export_command.add(sub)
    _add_corpora(sub)
    _add_info(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        err_console.print("interrupted; finished runs are kept, re-run the command to resume")
        return 130
    except SaefastError as e:
        err_console.print(f"[red]error:[/] {escape(str(e))}", highlight=False)
        return 2
    except OSError as e:
        if e.filename is None:  # not about a path of the user's: a bug, keep the traceback
            raise
        # a file or folder the system refuses (permissions, a file where a folder should be,
        # a full disk): the user's environment, not a bug
        err_console.print(f"[red]error:[/] {escape(f'{e.filename}: {e.strerror}')}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
