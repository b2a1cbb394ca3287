"""What --dry-run and a sweep warn about before training, from the plan alone: groups whose
features would barely be trained (too few selections each to leave their random init) and
groups of one run (nothing to match)."""

from __future__ import annotations

import math

from saefast.config import RunConfig
from saefast.sweep.experiment import RunSpec, groups
from saefast.sweep.plan import token_steps


def expected_fires_per_feature(cfg: RunConfig) -> float:
    """Training tokens seen x k / F: how often an average feature is selected in training."""
    return token_steps(cfg) * cfg.sae.k / cfg.sae.n_features


def undertrained_warnings(runs: list[RunSpec], min_fires: float = 10.0) -> list[str]:
    """A dictionary whose average feature is selected fewer than ~10 times in training
    stays at its random init: its matching measures seeds, not the model."""
    out = []
    for gname, members in groups(runs).items():
        fires = expected_fires_per_feature(members[0].config)
        if fires < min_fires:
            c = members[0].config
            if c.train.steps:
                hint = f"train.steps {math.ceil(c.train.steps * min_fires / max(fires, 1e-9))} or more"
            else:
                need = math.ceil(min_fires * c.sae.n_features / (c.sae.k * c.train.epochs)
                                 / (1 if c.data.held_out_tokens else 1 - c.data.held_out))
                hint = f"--tokens {need} or more"
            out.append(f"{gname}: each feature is selected ~{fires:.1f} times in training; "
                       f"the SAE will barely leave its random init (try {hint})")
    return out


def unmatched_warnings(runs: list[RunSpec]) -> list[str]:
    """A group of one run has no pair to match: its report would be empty."""
    return [f"{g}: one run only, nothing to match (add seeds: --seeds N)"
            for g, members in groups(runs).items() if len(members) < 2]
