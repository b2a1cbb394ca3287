"""Experiments: an experiment YAML (+ --axis, + shorthand flags) -> a grid of named runs.

    base:      {model: ..., data: ..., sae: ..., train: ..., match: ...}   # one RunConfig
    variants:  [{model: {hook: ...}, sae: {n_features: 512, k: 32}}, ...] # partial overrides
    grid:      {train.seed: 1..5, data.tokens: [1000, 30000]}              # key -> values
    nulls:     {trained: false}          # the trained null (config.NullsConfig); on by default

runs = variants x grid. A run's name is built from its config (`L3-f128-k8-t30000-s2`, plus
a label for every other key the experiment varies, taken from the field's `setting` in
config.py), so names are stable when a grid grows. Runs that differ only by seed form a
group, whose pairs are matched. Pure Python: no torch.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from saefast.config import (
    CORE,
    ConfigError,
    NullsConfig,
    RunConfig,
    apply_overrides,
    flatten,
    name_label,
    nulls_from_dict,
)

__all__ = ["Experiment", "RunSpec", "load_experiment", "parse_values", "parse_axis", "expand",
           "varied_keys", "run_name", "group_name", "groups"]


@dataclass
class Experiment:
    base: dict[str, Any] = field(default_factory=dict)  # dotted key -> value
    variants: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    grid: dict[str, list] = field(default_factory=dict)
    name: str = "sweep"
    description: str = ""  # the YAML's own words on what the study is (the HTML report shows them)
    nulls: NullsConfig = field(default_factory=NullsConfig)  # the trained null: not a run's config


@dataclass
class RunSpec:
    name: str
    group: str
    config: RunConfig


def parse_values(text: Any) -> list:
    """`1..5` -> [1, 2, 3, 4, 5]; `1,2,3` -> [1, 2, 3]; a YAML list as is; a scalar -> [it]."""
    if isinstance(text, list):
        out: list = []
        for item in text:
            out.extend(parse_values(item) if isinstance(item, str) and ".." in item else [item])
        return out
    if not isinstance(text, str):
        return [text]
    m = re.fullmatch(r"\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*", text)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        if hi < lo:
            raise ConfigError(f"empty range {text!r}")
        return list(range(lo, hi + 1))
    return [_scalar(v.strip()) for v in text.split(",") if v.strip()]


def _scalar(text: str) -> Any:
    """YAML scalar, but `1e-3` is a number (YAML 1.1 would keep it a string)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"cannot read a value from {text!r}") from None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def parse_axis(text: str) -> tuple[str, list]:
    """`train.seed=1..20` -> ("train.seed", [1, ..., 20])."""
    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise ConfigError(f"--axis expects KEY=VALUES (e.g. train.seed=1..5), got {text!r}")
    return key.strip(), parse_values(values)


def load_experiment(path: str | Path) -> Experiment:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such experiment file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the experiment file ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with base/variants/grid")
    unknown = set(raw) - {"base", "variants", "grid", "name", "description", "nulls"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(unknown)} "
                          "(expected base, variants, grid, name, description, nulls)")
    variants = raw.get("variants") or [{}]
    if not isinstance(variants, list):
        raise ConfigError(f"{path}: 'variants' must be a list of partial configs")
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict):
        raise ConfigError(f"{path}: 'grid' must map keys like train.seed to value lists")
    exp = Experiment(
        base=flatten(raw.get("base") or {}),
        variants=[flatten(v or {}) for v in variants],
        grid={k: parse_values(v) for k, v in grid.items()},
        name=str(raw.get("name") or path.stem),
        description=str(raw.get("description") or ""),
    )
    try:
        exp.nulls = nulls_from_dict(raw.get("nulls"))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    expand(exp)  # validate every key and value now, with the file's name in the error
    return exp


def expand(exp: Experiment, axes: list[tuple[str, list]] = (),
           overrides: dict[str, Any] | None = None) -> list[RunSpec]:
    """variants x grid -> RunSpecs. `overrides` set base keys; `axes` add to (or replace in)
    the grid. Names are unique; duplicates (same config twice) are dropped."""
    base = apply_overrides(RunConfig(), {**exp.base, **(overrides or {})})
    grid = dict(exp.grid)
    for key, values in axes:
        grid[key] = values
    keys = list(grid)
    labeled = varied_keys(exp, axes)
    runs: dict[str, RunSpec] = {}
    for variant in exp.variants:
        vcfg = apply_overrides(base, variant)
        for combo in itertools.product(*(grid[k] for k in keys)):
            cfg = apply_overrides(vcfg, dict(zip(keys, combo)))
            name = run_name(cfg, labeled)
            runs.setdefault(name, RunSpec(name=name, group=group_name(cfg, labeled), config=cfg))
    if not runs:
        empty = [k for k in keys if not grid[k]]
        raise ConfigError(f"the grid has no runs: {', '.join(empty) or 'an axis'} has no values")
    return list(runs.values())


# ---------------------------------------------------------------------------- naming

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_")[:40]


def _hook_label(hook: str) -> str:
    m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_pre", hook)
    if m:
        return f"L{m.group(1)}"
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", hook)
    if m:
        return f"L{m.group(1)}{_slug(m.group(2).replace('hook_', ''))}"
    return _slug(hook)


def varied_keys(exp: Experiment, axes: list[tuple[str, list]] = ()) -> list[str]:
    """Keys the experiment varies (variants, grid, --axis) that get a label in run names:
    not the core keys every name has, not the keys that never change weights."""
    keys = {k for v in exp.variants for k in v} | set(exp.grid) | {k for k, _ in axes}
    return sorted(k for k in keys if name_label(k) not in (None, CORE))


def run_name(cfg: RunConfig, labeled: list[str] = ()) -> str:
    """`L3-f128-k8-t30000-s2`, plus a label for each varied key (`e10`, `lr0.0003`), so a name
    is stable when a grid grows. Two runs with one name but different configs in one output
    folder are refused (plan.pending), never silently mixed."""
    parts = []
    for key in ("model.name", "data.corpus"):
        if key in labeled:
            value = str(getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1]))
            parts.append(_slug(Path(value).name or value))
    parts += [_hook_label(cfg.model.hook), f"f{cfg.sae.n_features}", f"k{cfg.sae.k}",
              f"t{cfg.data.tokens}"]
    for key in labeled:
        if key in ("model.name", "data.corpus"):
            continue
        section, attr = key.split(".")
        value = getattr(getattr(cfg, section), attr)
        parts.append(f"{name_label(key)}{_slug(str(value))}")
    return "-".join(parts + [f"s{cfg.train.seed}"])


def group_name(cfg: RunConfig, labeled: list[str] = ()) -> str:
    """Runs that differ only by seed form a group; their pairs are matched."""
    return run_name(cfg, labeled).rsplit("-s", 1)[0]


def groups(runs: list[RunSpec]) -> dict[str, list[RunSpec]]:
    out: dict[str, list[RunSpec]] = {}
    for r in runs:
        out.setdefault(r.group, []).append(r)
    return out
