"""Is it the same feature? Views beyond decoder cosine, from a report's own matchings.

Decoder cosine says two features write the same direction. A reviewer also asks whether
they read the same direction and fire on the same tokens:

- encoder matching: encoder rows (W_enc [F, d]) matched one-to-one exactly like decoders;
  and per decoder-matched pair, the cosine of the two features' encoder rows. A pair is
  *shared* at t when both its decoder and its encoder cosine are >= t (Paulo & Belrose 2025
  call a latent shared only then);
- activation correlation on held-out tokens: each feature's activation over T tokens (its
  value in the k-sparse code, 0 where it is not kept). Per decoder-matched pair, Pearson r;
  per feature, its max-correlation partner in the other run (does it agree with the decoder
  partner?); and the one-to-one assignment maximising total correlation, compared with the
  decoder matching (how many pairs do both pick?). A feature that never fires on the
  held-out tokens has zero variance there and no r (not r = 0): pairs with one are left
  out of every r statistic and counted (`fires`, summary never_fire).

The correlations come from the k-sparse codes only, exactly, and so does the assignment on
them (`stats.correlation`: co-activation sums, top-K per row and column, the certified sparse
solver); the [T, F] activations and the [F_a, F_b] matrix never exist at once.

Pure computation: the views take the report's pairs and, where a report has them, the
encoder and correlation matchings computed before (`saefast.report.matchings` reads and keeps
them in the matching cache); without them each pair is matched here. Nothing here reads or
writes a file.

Intervals: the run is the unit (delete-one-run jackknife over the stored per-pair values,
`inference`), as everywhere in a report. No null DICTIONARY is drawn for these views: a
random dictionary's codes are not "random features of this model" in any single agreed
sense. Each view's chance floor comes from the runs themselves instead (`stats.view_nulls`:
mismatched partners for the encoder cosines, a block permutation of the held-out tokens for
r), added to the blocks by the report (`report.assemble`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from saefast.match import Matching, match_decoders, unit_rows
from saefast.stats import inference as inf
from saefast.stats.correlation import (
    Codes,
    correlation_matching,
    fires,
    firing_partners,
    pair_correlations,
)

THRESHOLDS = (0.5, 0.7, 0.9)
ENCODE_ROWS = 8192  # tokens per encode call

METHOD = {
    "encoder": "encoder rows matched one-to-one by maximum total cosine like decoders "
               "(matching.median, fraction_above); per decoder-matched pair, the cosine of "
               "the two features' encoder rows (decoder_pairs); shared at t: decoder and "
               f"encoder cosine both >= t; {inf.LEVEL_TEXT} delete-one-run jackknife "
               "intervals, t(S-1)",
    "activation": "each feature's activation on the runs' held-out tokens (its value in the "
                  "k-sparse code, 0 elsewhere); Pearson r of every decoder-matched pair; "
                  "same_partner: the share of features whose max-correlation partner among the "
                  "other run's firing features is their decoder partner; correlation_matching: one-to-one "
                  "assignment maximising total r (exact) among the features that fire on the "
                  "held-out tokens, and the share of decoder-matched pairs it also picks; "
                  "r computed exactly from the sparse codes "
                  "(co-activation sums, no dense [tokens, F] matrix). A feature that never "
                  "fires on the held-out tokens has zero variance, so no r: pairs with one "
                  "are left out of every r statistic, same_partner and the agreement, and "
                  "counted (never_fire; per pair n_never_fire, never_fire_positions; the "
                  "per-pair r lists keep 0 there, aligned with all_cosines)",
}


# ---------------------------------------------------------------------------- encoders


def _interval(per_pair: dict, n_runs: int, stat: inf.Statistic) -> dict | None:
    """stat's interval over runs; None when no pair has a value left."""
    if not any(len(v) for v in per_pair.values()):
        return None
    return inf.run_interval(inf.PairedRuns.from_dict(n_runs, per_pair), stat)


def pair_encoder_cosines(enc_a: torch.Tensor, enc_b: torch.Tensor, a_idx, b_idx) -> np.ndarray:
    """[n] cosine of encoder rows enc_a[a_idx[t]] and enc_b[b_idx[t]] (float64)."""
    ua = unit_rows(enc_a.double())[torch.as_tensor(np.asarray(a_idx, dtype=np.int64))]
    ub = unit_rows(enc_b.double())[torch.as_tensor(np.asarray(b_idx, dtype=np.int64))]
    return (ua * ub).sum(1).numpy()


def encoder_block(saes: Sequence, pairs: list[dict], *, threshold: float, solver: str = "auto",
                  matched: Mapping[tuple[int, int], Matching] | None = None) -> dict | None:
    """Add `encoder` {cosines (per decoder-matched pair, in all_cosines' order), matching
    {median, fraction_above}, shared_count} to each pair and return the summary's block
    (None when a run has no encoder: the block's absence says so in `equivalence.skipped`).
    matched[(i, j)]: the encoder matching of runs i and j (every feature), computed before;
    without it each pair's encoders are matched here."""
    if any(s.encoder is None for s in saes):
        return None
    t = float(threshold)
    ts = sorted({*THRESHOLDS, t})
    enc_cos, enc_matched, shared = {}, {}, {t_: {} for t_ in ts}
    for p in pairs:
        i, j = p["index_a"], p["index_b"]
        a, b = saes[i].encoder, saes[j].encoder
        c = pair_encoder_cosines(a, b, p["a_indices"], p["b_indices"])
        m = matched[i, j] if matched is not None else match_decoders(a, b, solver=solver)
        dec = np.asarray(p["all_cosines"], dtype=np.float64)
        key = (i, j)
        enc_cos[key], enc_matched[key] = c, m.cosines
        for t_ in ts:
            shared[t_][key] = ((dec >= t_) & (c >= t_)).astype(float)
        p["encoder"] = {"cosines": c.tolist(), "matching": {
            "median": float(np.median(m.cosines)),
            "fraction_above": float(np.mean(m.cosines >= t)), "certified": bool(m.certified)},
            "shared_count": int(np.count_nonzero((dec >= t) & (c >= t)))}
    S = len(saes)
    return {
        "method": METHOD["encoder"], "threshold": t,
        "matching": {"median": _interval(enc_matched, S, inf.median()),
                     "fraction_above": _interval(enc_matched, S, inf.fraction_at_least(t))},
        "decoder_pairs": {"median": _interval(enc_cos, S, inf.median()),
                          "fraction_above": _interval(enc_cos, S, inf.fraction_at_least(t))},
        "shared_fraction": {f"{t_:g}": inf.fraction_interval(_interval(shared[t_], S, inf.mean()))
                            for t_ in ts},
    }


# ---------------------------------------------------------------------------- codes


def encode(sae, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TopK(relu(W_enc (x - b_dec) + b_enc)) of rows [N, d] for an SAE with encoder fields
    (`artifacts.LoadedSAE`): (values [N, k] float32 >= 0, indices [N, k])."""
    from saefast import ops

    return ops.topk_encode(rows.float() - sae.b_dec, sae.encoder, sae.b_enc, int(sae.k))


def sparse_codes(sae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The SAE's k-sparse codes of x [T, d]: (values [T, k] float32 >= 0, indices [T, k])."""
    vals, idx = [], []
    for s in range(0, x.shape[0], ENCODE_ROWS):
        v, i = encode(sae, x[s:s + ENCODE_ROWS])
        vals.append(v), idx.append(i)
    return torch.cat(vals), torch.cat(idx)


def held_out_codes(saes: Sequence, x: torch.Tensor | None,
                   reason: str | None = None) -> tuple[list[Codes] | None, str | None]:
    """(every run's `Codes` of the held-out tokens x [T, d], None), or (None, why the
    activation view cannot be computed): `reason` when there are no tokens (x None)."""
    if x is None:
        return None, reason
    if any(s.encoder is None or not s.k for s in saes):
        return None, "a run has no encoder or no k to encode with"
    try:
        return [Codes(*sparse_codes(s, x), s.n_features) for s in saes], None
    except NotImplementedError as e:
        return None, str(e)


def _median(x: np.ndarray) -> float | None:
    return float(np.median(x)) if len(x) else None


def _never_fire(codes: Sequence[Codes], acts: list[dict]) -> dict:
    """What r leaves out: each run's features that never fire on the held-out tokens, and
    the decoder-matched and correlation-matched pairs with one, pooled over pairs."""
    return {"per_run": [int(np.count_nonzero(c.std == 0)) for c in codes],
            "decoder_pairs_left_out": sum(a["n_never_fire"] for a in acts),
            "decoder_pairs": sum(len(a["r"]) for a in acts),
            "correlation_pairs_left_out": sum(a["correlation_matching"]["n_never_fire"]
                                              for a in acts)}


def activation_block(codes: Sequence[Codes], pairs: list[dict], *, source: str,
                     matched: Mapping[tuple[int, int], tuple] | None = None) -> dict:
    """Add `activation` {r (per decoder-matched pair, 0 where a feature never fires),
    median_r, n_never_fire, never_fire_positions, same_partner, correlation_matching} to each
    pair from the runs' codes of the same held-out tokens (`held_out_codes`) and return the
    summary's block (intervals over runs; pairs with a never-firing feature left out of r
    and counted in `never_fire`). matched[(i, j)]: the `correlation_matching` of runs i and
    j computed before; without it each pair's is solved here."""
    S = len(codes)
    r_all, same, agree, corr_r = {}, {}, {}, {}
    for p in pairs:
        i, j = p["index_a"], p["index_b"]
        a, b = codes[i], codes[j]
        ia = np.asarray(p["a_indices"], dtype=np.int64)
        ib = np.asarray(p["b_indices"], dtype=np.int64)
        r = pair_correlations(a, b, ia, ib)
        best_b, best_a = firing_partners(a, b)  # [F_a] max-r partner in B, [F_b] in A
        active = fires(a, b, ia, ib)  # a never-firing feature has no r and no partner
        hits = np.r_[(best_b[ia] == ib)[active], (best_a[ib] == ia)[active]].astype(float)
        ma, mb, mr, info = matched[i, j] if matched is not None else correlation_matching(a, b)
        m_active = fires(a, b, ma, mb)
        both = np.intersect1d(ia * b.F + ib, ma * b.F + mb).size
        key = (i, j)
        r_all[key], same[key], corr_r[key] = r[active], hits, mr[m_active]
        agree[key] = np.r_[np.ones(both), np.zeros(len(ia) - both)]
        p["activation"] = {
            "r": r.tolist(), "median_r": _median(r[active]),
            "n_never_fire": int(np.count_nonzero(~active)),
            "never_fire_positions": np.flatnonzero(~active).tolist(),
            "same_partner": float(hits.mean()) if hits.size else None,
            "correlation_matching": {"median_r": _median(mr[m_active]),
                                     "n_never_fire": int(np.count_nonzero(~m_active)),
                                     "agreement_with_decoder": both / len(ia),
                                     "certified": bool(info["certified"]),
                                     "gap_bound": info["gap_bound"]}}
    return {
        "method": METHOD["activation"], "held_out_tokens": int(codes[0].T), "source": source,
        "decoder_pairs_r": {"median": _interval(r_all, S, inf.median()),
                            "fraction_above_0.5": _interval(r_all, S, inf.fraction_at_least(0.5))},
        "same_partner": _interval(same, S, inf.mean()),
        "correlation_matching": {"median_r": _interval(corr_r, S, inf.median()),
                                 "agreement_with_decoder": _interval(agree, S, inf.mean())},
        "never_fire": _never_fire(codes, [p["activation"] for p in pairs]),
    }


# the views below cost a matching or more per pair (the encoder's, the activations'
# correlation matching, their floors): every pair up to this many, then a stated subset
EQUIVALENCE_MAX_PAIRS = 20
SUBSET_RULE = ("each run with the next, cyclically (S pairs, every run in two): the views "
               "cost a matching per pair, and S (S - 1) / 2 of them at 16,384 features and 20 "
               "seeds would cost more than the training")


def equivalence_pairs(pairs: list[dict], n_runs: int) -> list[dict]:
    """The pairs the equivalence views are computed on: all of them up to
    EQUIVALENCE_MAX_PAIRS, else SUBSET_RULE's (the same pair dicts, in report order)."""
    if len(pairs) <= EQUIVALENCE_MAX_PAIRS:
        return pairs
    ring = {(min(i, (i + 1) % n_runs), max(i, (i + 1) % n_runs)) for i in range(n_runs)}
    return [p for p in pairs if (p["index_a"], p["index_b"]) in ring]


def equivalence(saes: Sequence, pairs: list[dict], *, threshold: float, solver: str = "auto",
                codes: Sequence[Codes] | None, codes_reason: str | None = None,
                source: str | None = None, encoder_matchings=None,
                correlation_matchings=None) -> dict:
    """summary["equivalence"] without its `agreement` (`stats.agreement`, once every view is
    on the pairs): {encoder: block or None, activation: block or None, skipped: [reasons]},
    adding the per-pair keys of each block to `pairs`. codes: the runs' held-out codes
    (`held_out_codes`), or None with codes_reason saying why; encoder_matchings /
    correlation_matchings: the blocks' `matched`."""
    skipped = []
    enc = encoder_block(saes, pairs, threshold=threshold, solver=solver,
                        matched=encoder_matchings)
    if enc is None:
        skipped.append("encoder: a run's weights have no encoder (W_enc, b_enc, b_dec)")
    act = None
    if codes is None:
        skipped.append(f"activation correlation: {codes_reason}")
    else:
        act = activation_block(codes, pairs, source=source or "", matched=correlation_matchings)
    return {"encoder": enc, "activation": act, "skipped": skipped}
