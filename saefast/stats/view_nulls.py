"""Chance floors for the encoder and activation views of "the same feature?" (`stats.equivalence`).

A decoder-matched pair whose encoder rows agree, or whose activations correlate, says more
than chance only against what unrelated features reach on the same statistic:

- encoder view, the mismatched-pairs floor: each decoder-matched A feature given a random
  OTHER decoder-matched B feature as partner (uniform over the n - 1 others, D draws), its
  encoder cosine taken like the real pair's. Encoder rows of trained SAEs share directions
  (the activations' mean and top principal directions), so unrelated features have cosines
  above 0; the floor is that level. The shared criterion (decoder and encoder cosine >= t)
  gets the same floor: each feature keeps its own decoder cosine, the encoder cosine is the
  mismatched one;
- activation view, the token-permutation floor: the Pearson r of every decoder-matched pair
  with run B's codes permuted over the held-out tokens in blocks of contiguous tokens (the
  blocks in random order, none in its own place), so each feature keeps its firing rate,
  its values and its within-document bursts, and only the alignment of A's and B's tokens is
  broken: what r two unrelated features with these firing rates reach. Block length
  (`block_length`): the runs' context length (one harvested window), at most T / MIN_BLOCKS
  so there are enough blocks to permute, at least 1.

Each floor is stated beside the observed statistic with the excess and its delete-one-run
jackknife interval (`inference.run_interval`, the run is the unit): observed and floor values
of each pair go into one `PairedRuns` (the floor shifted by OFFSET, so one statistic sees
both), so deleting a run removes both its observed and its floor values. Nothing here reads
or writes a file.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np

from saefast.match import unit_rows
from saefast.stats import correlation as corr
from saefast.stats import inference as inf

SEED = 0
FLOOR_VALUES = 10_000  # floor values per pair wanted: draws = ceil(FLOOR_VALUES / n) ...
MAX_DRAWS = 32  # ... at most this many (small dictionaries)
MIN_BLOCKS = 20  # the token permutation moves at least this many blocks
DEFAULT_CONTEXT = 128  # the block length when the runs do not say their context length
OFFSET = 4.0  # floor values are stored + OFFSET beside the observed ones (both in [-1, 1])
QUANTILE = 0.95

ENCODER_METHOD = (
    "mismatched-pairs floor: each decoder-matched A feature paired with a uniformly random "
    "other decoder-matched B feature (D draws per pair), the encoder cosine of that pair; "
    "shared floor: the feature's own decoder cosine and the mismatched encoder cosine both "
    f">= t. excess: observed minus floor, {inf.LEVEL_TEXT} delete-one-run jackknife "
    "interval, t(S-1), observed and floor values of a run removed together")
ACTIVATION_METHOD = (
    "token-permutation floor: the Pearson r of each decoder-matched pair with run B's codes "
    "permuted over the held-out tokens in blocks of contiguous tokens (blocks in random "
    "order, none in its own place: firing rates, values and within-document bursts kept, the "
    "tokens' alignment broken), D draws per pair; pairs with a feature that never fires left "
    "out as for r. block length: the runs' context length (one harvested window; "
    f"{DEFAULT_CONTEXT} when run.json does not say), at most T / {MIN_BLOCKS}, at least 1. "
    "mean and 95 % quantile of the floor pooled over pairs and draws; above_floor_q95: the "
    "share of matched pairs whose r exceeds the floor's 95 % quantile (0.05 by chance); "
    f"excess_median: observed median r minus the floor's; {inf.LEVEL_TEXT} delete-one-run "
    "jackknife intervals, t(S-1), observed and floor values of a run removed together")


def draws_for(n: int) -> int:
    """Floor draws per pair of n matched features: about FLOOR_VALUES values, <= MAX_DRAWS."""
    return int(min(MAX_DRAWS, max(1, -(-FLOOR_VALUES // max(int(n), 1)))))


# ---------------------------------------------------------------------------- excess over a floor


def _weighted_quantile(v: np.ndarray, w: np.ndarray, q: float) -> float:
    """The q quantile of ascending v with integer weights w (the lower one at a tie)."""
    cw = np.cumsum(w)
    return float(v[min(np.searchsorted(cw, q * cw[-1], side="left"), len(v) - 1)])


def _stacked(name: str, fn) -> inf.Statistic:
    """A statistic of (observed, floor) from one pooled set: the floor's values sit at
    OFFSET + x, the observed ones at x (both in [-1, 1])."""
    def split(v, w):
        cut = np.searchsorted(v, OFFSET / 2)
        if not w[:cut].any() or not w[cut:].any():
            return float("nan")
        return float(fn(v[:cut], w[:cut], v[cut:] - OFFSET, w[cut:]))
    return inf.Statistic(name, split)


def excess(inner: inf.Statistic) -> inf.Statistic:
    """inner(observed) - inner(floor)."""
    return _stacked(f"excess_{inner.name}", lambda v, w, f, u: inner.fn(v, w) - inner.fn(f, u))


def above_floor_quantile(q: float = QUANTILE) -> inf.Statistic:
    """The share of observed values above the floor's q quantile (1 - q by chance)."""
    def fn(v, w, f, u):
        at = _weighted_quantile(f, u, q)
        return w[np.searchsorted(v, at, side="right"):].sum() / w.sum()
    return _stacked(f"above_floor_q{q:g}", fn)


def floor_interval(n_runs: int, observed: dict, floor: dict, stat: inf.Statistic,
                   about: str) -> dict | None:
    """stat of the observed and floor values of each pair ({(i, j): [n]}), with its interval
    over runs (`inference.run_interval`); None when a side has no value."""
    if not any(len(v) for v in observed.values()) or not any(len(v) for v in floor.values()):
        return None
    stacked = {k: np.r_[np.asarray(observed[k], float), np.asarray(floor[k], float) + OFFSET]
               for k in observed}
    return inf.run_interval(inf.PairedRuns.from_dict(n_runs, stacked), stat, about=about)


def _pooled(values: dict) -> np.ndarray:
    return np.concatenate([np.asarray(v, float) for v in values.values()]) if values else \
        np.zeros(0)


def _describe(values: np.ndarray) -> dict:
    if not values.size:
        return {"mean": None, "median": None, "q95": None, "n": 0}
    return {"mean": float(values.mean()), "median": float(np.median(values)),
            "q95": float(np.quantile(values, QUANTILE)), "n": int(values.size)}


# ---------------------------------------------------------------------------- encoder view


def mismatched_partners(n: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """[draws, n] for each position t a uniformly random other position (never t)."""
    if n < 2:
        return np.zeros((draws, n), np.int64)
    return (np.arange(n) + rng.integers(1, n, size=(draws, n))) % n


def mismatched_encoder_cosines(enc_a, enc_b, a_idx, b_idx, draws: int,
                               rng: np.random.Generator) -> np.ndarray:
    """[draws, n] encoder cosines of A feature a_idx[t] with B feature b_idx[s], s a random
    other matched position (`mismatched_partners`)."""
    import torch

    ia = torch.as_tensor(np.asarray(a_idx, np.int64))
    ib = torch.as_tensor(np.asarray(b_idx, np.int64))
    ua, ub = unit_rows(enc_a.double())[ia], unit_rows(enc_b.double())[ib]  # [n, d]
    part = mismatched_partners(len(ia), draws, rng)
    return np.stack([(ua * ub[torch.from_numpy(p)]).sum(1).numpy() for p in part])


def encoder_floor(saes: Sequence, pairs: list[dict], *, threshold: float,
                  seed: int = SEED) -> dict | None:
    """summary.equivalence.encoder.null: the mismatched-pairs floor (module doc) of the
    decoder-matched pairs' encoder cosines and of the shared fraction at the threshold, each
    beside the observed value with the excess and its interval; each pair gets
    encoder.floor_median. None when a run has no encoder or no pair has 2 features."""
    if any(s.encoder is None for s in saes) or not pairs:
        return None
    t = float(threshold)
    obs, flo, obs_sh, flo_sh, draws = {}, {}, {}, {}, []
    for p in pairs:
        i, j = p["index_a"], p["index_b"]
        n = len(p["a_indices"])
        if n < 2:
            return None
        rng = np.random.default_rng([seed, i, j])
        D = draws_for(n)
        mis = mismatched_encoder_cosines(saes[i].encoder, saes[j].encoder, p["a_indices"],
                                         p["b_indices"], D, rng)  # [D, n]
        dec = np.asarray(p["all_cosines"], float)
        enc = np.asarray(p["encoder"]["cosines"], float)
        key = (i, j)
        obs[key], flo[key] = enc, mis.ravel()
        obs_sh[key] = ((dec >= t) & (enc >= t)).astype(float)
        flo_sh[key] = ((dec[None] >= t) & (mis >= t)).astype(float).ravel()
        p["encoder"]["floor_median"] = float(np.median(mis))
        draws.append(D)
    S = len(saes)
    return {
        "method": ENCODER_METHOD, "threshold": t, "draws_per_pair": draws, "seed": seed,
        "cosine": {"observed": _describe(_pooled(obs)), "floor": _describe(_pooled(flo)),
                   "excess_median": floor_interval(
                       S, obs, flo, excess(inf.median()),
                       "observed median encoder cosine minus the mismatched floor's")},
        "shared": {"observed": float(_pooled(obs_sh).mean()),
                   "floor": float(_pooled(flo_sh).mean()),
                   "excess": floor_interval(
                       S, obs_sh, flo_sh, excess(inf.mean()),
                       f"shared fraction at {t:g} minus the mismatched floor's")},
    }


# ---------------------------------------------------------------------------- activation view


def block_length(T: int, context_length: int | None) -> int:
    """Tokens per permuted block (module doc): the context length, at most T / MIN_BLOCKS."""
    L = int(context_length or DEFAULT_CONTEXT)
    return max(1, min(L, T // MIN_BLOCKS))


def block_permutation(T: int, L: int, rng: np.random.Generator) -> np.ndarray:
    """[T] token order: blocks of L contiguous tokens (the last one shorter) in random order,
    no block in its own place (fixed points swapped away)."""
    starts = np.arange(0, T, L)
    nb = len(starts)
    order = rng.permutation(nb)
    for b in np.flatnonzero(order == np.arange(nb)) if nb > 1 else []:
        if order[b] == b:  # an earlier swap may have moved it already
            other = (b + rng.integers(1, nb)) % nb
            order[b], order[other] = order[other], order[b]
    ends = np.r_[starts[1:], T]
    return np.concatenate([np.arange(starts[b], ends[b]) for b in order])


def permuted_codes(codes: corr.Codes, order: np.ndarray) -> corr.Codes:
    """The same codes with token t' holding token order[t']'s code: per-feature moments
    unchanged, entries re-addressed (no re-sort)."""
    out = copy.copy(codes)
    out.values, out.indices = codes.values[order], codes.indices[order]
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    out.by_feature_token = inverse[codes.by_feature_token]
    return out


def token_floor(codes: Sequence[corr.Codes], pairs: list[dict], *,
                context_length: int | None = None, seed: int = SEED) -> dict | None:
    """summary.equivalence.activation.floor: the token-permutation floor (module doc) of the
    decoder-matched pairs' r, its mean and 95 % quantile beside the observed r, the excess of
    the median and the share above the floor's 95 % quantile with their intervals; each pair
    gets activation.floor {mean, q95, draws}. Needs the pairs' activation.r (`activation_block`)."""
    if not pairs:
        return None
    T = codes[0].T
    L = block_length(T, context_length)
    obs, flo, draws = {}, {}, []
    for p in pairs:
        i, j = p["index_a"], p["index_b"]
        a, b = codes[i], codes[j]
        ia = np.asarray(p["a_indices"], np.int64)
        ib = np.asarray(p["b_indices"], np.int64)
        active = corr.fires(a, b, ia, ib)  # permuting tokens keeps which features fire
        rng = np.random.default_rng([seed, i, j])
        D = draws_for(int(active.sum()))
        r0 = np.stack([corr.pair_correlations(a, permuted_codes(b, block_permutation(T, L, rng)),
                                            ia, ib)[active] for _ in range(D)])  # [D, n_active]
        key = (i, j)
        obs[key], flo[key] = np.asarray(p["activation"]["r"], float)[active], r0.ravel()
        p["activation"]["floor"] = {**_describe(r0.ravel()), "draws": D}
        draws.append(D)
    S = len(codes)
    return {
        "method": ACTIVATION_METHOD, "block_length": L, "held_out_tokens": int(T),
        "context_length": context_length, "draws_per_pair": draws, "seed": seed,
        "observed": _describe(_pooled(obs)), "floor": _describe(_pooled(flo)),
        "excess_median": floor_interval(S, obs, flo, excess(inf.median()),
                                        "observed median r minus the floor's median r"),
        "above_floor_q95": floor_interval(
            S, obs, flo, above_floor_quantile(),
            "share of matched pairs whose r exceeds the floor's 95 % quantile"),
    }


def add_view_nulls(equivalence: dict, saes: Sequence, pairs: list[dict], *, threshold: float,
                   codes: Sequence[corr.Codes] | None, context_length: int | None) -> None:
    """Put each view's floor into summary.equivalence (encoder.null, activation.floor) and
    its per-pair part on the pairs, for the views the report has."""
    if equivalence.get("encoder"):
        equivalence["encoder"]["null"] = encoder_floor(saes, pairs, threshold=threshold)
    if equivalence.get("activation") and codes is not None:
        equivalence["activation"]["floor"] = token_floor(codes, pairs,
                                                         context_length=context_length)
