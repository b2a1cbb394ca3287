"""Do the views of "the same feature?" rank the matched pairs alike?

Each view gives a value per decoder-matched pair (`stats.equivalence` and `stats.ablation`
put them on the report's pairs): the decoder cosine, the encoder cosine, the Pearson r of the
held-out activations (left out where a feature never fires there: no r) and the correlation
of the ablation effects (left out where the attribution check says the linear estimate does
not hold). `agreement(pairs, n_runs)` is summary.equivalence.agreement, computed
last, once every view is on the pairs. Nothing here reads or writes a file.
"""

from __future__ import annotations

import numpy as np

from saefast.stats import inference as inf


def _defined_r(act: dict | None) -> np.ndarray | None:
    """A pair's r with NaN where a feature never fires (no r there; agreement skips them)."""
    if act is None or act.get("r") is None:
        return None
    r = np.asarray(act["r"], dtype=np.float64)
    r[np.asarray(act.get("never_fire_positions") or [], dtype=np.int64)] = np.nan
    return r


def _trusted_effects(abl: dict | None):
    """A pair's per-token effect correlations, None where the attribution they rest on did
    not hold (`ablation.attribution_check`)."""
    if abl is None or abl.get("trusted") is False:
        return None
    return abl.get("effect_r")


_VIEWS = {  # per-pair values of each view, aligned with the decoder matching's pairs
    "decoder": lambda p: p.get("all_cosines"),
    "encoder": lambda p: (p.get("encoder") or {}).get("cosines"),
    "activation": lambda p: _defined_r(p.get("activation")),
    "effect": lambda p: _trusted_effects(p.get("ablation")),
}


def agreement(pairs: list[dict], n_runs: int) -> dict:
    """Do the views rank the matched pairs alike? For every two views present in every pair:
    Spearman's rho between them over one pair's matched features, averaged over pairs, with
    its delete-one-run jackknife interval ({"decoder~activation": {estimate, ci, ...}})."""
    from scipy.stats import spearmanr

    have = [v for v, get in _VIEWS.items() if pairs and all(get(p) is not None for p in pairs)]
    out = {}
    for n, a in enumerate(have):
        for b in have[n + 1:]:
            rho = {}
            for p in pairs:
                x, y = np.asarray(_VIEWS[a](p), float), np.asarray(_VIEWS[b](p), float)
                both = np.isfinite(x) & np.isfinite(y)  # a view with no value there: left out
                x, y = x[both], y[both]
                ok = len(x) > 2 and np.ptp(x) > 0 and np.ptp(y) > 0
                rho[p["index_a"], p["index_b"]] = [spearmanr(x, y)[0] if ok else np.nan]
            if all(np.isfinite(v[0]) for v in rho.values()):
                data = inf.PairedRuns.from_dict(n_runs, rho)
                out[f"{a}~{b}"] = inf.run_interval(data, inf.mean())
    return {"method": "Spearman's rho between two views' values over one pair's decoder-matched "
                      f"features (those where both views have a value: no activation r for a "
                      f"feature that never fires), mean over pairs, {inf.LEVEL_TEXT} "
                      "delete-one-run jackknife",
            **out}
