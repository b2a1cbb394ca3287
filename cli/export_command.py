"""`saefast export`: runs written as SAELens or sparsify checkpoints (`saefast.runs.export`)."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape

console = Console()


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write runs as SAELens or EleutherAI sparsify checkpoints",
                       description="Write each run (a run folder, or a sweep's OUT / OUT/runs "
                                   "to take all of its runs) as a checkpoint of another tool, one "
                                   "folder per run under --out named after the run: SAELens v6 "
                                   "(cfg.json with the metadata Neuronpedia and SAEBench read, "
                                   "sae_weights.safetensors, sparsity.safetensors; load with "
                                   "sae_lens.SAE.load_from_disk) or sparsify (<hookpoint>/"
                                   "cfg.json + sae.safetensors; load with sparsify.Sae."
                                   "load_from_disk). The SAE computes exactly what the run does.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders, or folders holding runs")
    p.add_argument("--format", required=True, choices=["sae-lens", "sparsify"], dest="fmt")
    p.add_argument("--out", required=True, help="folder to write into (new or empty)")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out")
    p.add_argument("--hookpoint", help="sparsify's module name for the runs' hook (default: "
                                       "mapped from the TransformerLens hook, e.g. "
                                       "blocks.3.hook_resid_pre -> encoder.layer.2 in BERT)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from saefast.runs.artifacts import find_run_dirs
    from saefast.runs.export import export_runs

    runs = find_run_dirs(args.runs, one_group=False)
    written = export_runs(runs, args.out, args.fmt, force=args.force, hookpoint=args.hookpoint)
    for run, path in zip(runs, written):
        console.print(f"{escape(str(run))} -> {escape(str(path))}", highlight=False)
    console.print(f"{len(written)} run(s) exported as {args.fmt} to {escape(str(args.out))}")
    return 0
