"""The runs a report compares, loaded once and checked before anything is matched.

`load_runs` reads each run directory (`artifacts.load_sae`; a `LoadedSAE` is taken as it is)
and refuses, with a RunDirError, fewer than two runs (naming a folder of runs when that is
what was given), runs of different d_model, and one run given twice: the same directory, or
two directories holding identical decoder weights, which would only report a median of 1.0.
`shared_init_warning` is what `saefast analyze` warns about runs that started from the same
decoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from saefast.errors import RunDirError
from saefast.runs.artifacts import RUN, WEIGHTS, LoadedSAE, load_sae, read_run_json
from saefast.stats.stability import check_same_d


def as_sae(run: str | Path | LoadedSAE) -> LoadedSAE:
    """A run directory loaded, or a LoadedSAE as it is."""
    return run if isinstance(run, LoadedSAE) else load_sae(run)


def as_list(run_dirs) -> list:
    """One run (a directory or a LoadedSAE) or several, as a list."""
    return [run_dirs] if isinstance(run_dirs, (str, Path, LoadedSAE)) else list(run_dirs)


def load_runs(run_dirs) -> list[LoadedSAE]:
    """Load a set of runs to compare (run directories or LoadedSAEs). RunDirError when there
    are fewer than two, when their d_model differ, or when one run is given twice."""
    run_dirs = as_list(run_dirs)
    if len(run_dirs) < 2:
        raise RunDirError(f"need at least two runs to compare, got {len(run_dirs)}"
                          + _folder_hint(run_dirs))
    saes = [as_sae(r) for r in run_dirs]
    check_same_d(saes)
    check_distinct(saes)
    return saes


def _folder_hint(run_dirs: list) -> str:
    """When the one path given is a folder of run directories, say so."""
    if len(run_dirs) != 1 or isinstance(run_dirs[0], LoadedSAE):
        return ""
    folder = Path(run_dirs[0])
    if not folder.is_dir() or (folder / WEIGHTS).is_file():
        return ""
    inside = sorted(p.name for p in folder.iterdir() if (p / WEIGHTS).is_file())
    if not inside:
        return ""
    return (f": {folder} is a folder of {len(inside)} run directories, not a run; pass the "
            f"runs themselves (e.g. {folder / '*'})")


def check_distinct(saes: Sequence[LoadedSAE]) -> None:
    """RunDirError when two entries are the same directory or hold identical decoders."""
    by_path: dict[Path, LoadedSAE] = {}
    by_key: dict[tuple, list[LoadedSAE]] = {}
    for s in saes:
        where = Path(s.path).resolve()
        if where in by_path:
            raise RunDirError(
                f"the same run was given twice: {by_path[where].path} and {s.path}; matching a "
                f"run with itself only reports a median cosine of 1.0")
        by_path[where] = s
        dec = s.decoder  # [F, d]
        key = (tuple(dec.shape), dec[:1].numpy().tobytes(), dec[-1:].numpy().tobytes())
        for other in by_key.get(key, []):  # cheap key first, the full comparison on a hit
            if torch.equal(other.decoder, dec):
                raise RunDirError(
                    f"{other.path} and {s.path} hold identical decoder weights (the same SAE "
                    f"twice?); matching a run with itself only reports a median cosine of 1.0")
        by_key.setdefault(key, []).append(s)


def shared_init_warning(run_dirs) -> str | None:
    """A warning when two runs that are not seeds of one group share a seed and d_model:
    saefast draws the initial decoder row by row from the seed (`train.sae`), so such runs
    start from the same first min(F_a, F_b) rows, whatever their sizes (a seed-1 128-feature
    run against a seed-1 512-feature run matched at median 0.885, at 0.163 with seed 2), and
    their matched cosines are inflated. None otherwise, and for formats without run.json."""
    first: dict[tuple, tuple[str, str, int]] = {}
    for run in run_dirs:
        path = Path(run.path if isinstance(run, LoadedSAE) else run) / RUN
        try:
            info = read_run_json(path.parent, missing_ok=True)
        except RunDirError:
            continue  # load_sae reports it, with the same message
        cfg = info.get("config")
        if not isinstance(cfg, dict):
            continue
        key = (cfg.get("train", {}).get("seed"), (info.get("model") or {}).get("d_model"))
        n = cfg.get("sae", {}).get("n_features")
        name, group = str(info.get("name", path.parent.name)), str(info.get("group"))
        if None in key or n is None:
            continue
        if key in first and (first[key][1] != group or first[key][2] != n):
            other, _, n_other = first[key]
            shared = min(int(n), int(n_other))
            return (f"{other} and {name} are not seeds of one group but share seed {key[0]} "
                    f"(d_model {key[1]}), so they started from the same decoder: their first "
                    f"{shared} initial rows are the same and their match is inflated; compare "
                    "runs of different seeds")
        first.setdefault(key, (name, group, int(n)))
    return None
