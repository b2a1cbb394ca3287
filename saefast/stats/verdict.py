"""The headline of a report: the share of features beyond chance, against the null that explains
the most, and which null that is.

Every null a report judges (`evidence.by_null`) gives a share beyond chance matched to the
observed bulk (`saefast.stats.share`) and a bulk check. The headline is the SMALLEST share over
the data-shaped nulls that pass the bulk check, and names that null:

- data-shaped: the nulls that know something of the data or of the dictionaries
  (DATA_SHAPED: covariance, activations, the dictionaries' own covariance, the spectrum-matched
  and the trained null). The isotropic null (two untrained SAEs) is stated beside it but
  never carries the headline: rows concentrated where the activations vary beat it with
  nothing shared;
- passing the bulk check (`share.bulk_check`): the observed bulk is not below the null (a null
  the bulk sits below is too strict for these dictionaries: its shares would be too small for
  a reason that is not chance) and is about as wide as the null (a null of another shape does
  not say where the unshared features would be); the report names a null that fails and why;
- the smallest: a feature counts as recurring only if no null that fits explains it. The
  minimum of noisy estimates is biased down, so the headline is a conservative statement.

The BY count and the seed-count curve ("in all N-1 other runs") given with the headline are
those under the same null, each beside the same count on null dictionaries (`null_*`): the
count the procedure gives with nothing shared.
"""

from __future__ import annotations

DATA_SHAPED = ("covariance", "activations", "dictionary", "spectrum", "trained",
               "trained_elliptical")

RULE = ("the smallest share beyond chance over the data-shaped nulls (covariance, activations, "
        "dictionary, spectrum, trained: those computed) that pass the bulk check (the observed "
        "bulk not below the null, and as wide within a factor 2); each share matched to the observed bulk "
        "(stats.share.METHOD); the isotropic null never carries it")


def _curve_end(curve: dict | None) -> float | None:
    """The last point (N = S runs) of a seed-count curve (`recurrence.seed_count_curve`): the
    mean share of a run's features matched in all S-1 others."""
    points = (curve or {}).get("curve") or []
    return points[-1]["all"]["mean"] if points else None


def candidate(name: str, block: dict) -> dict:
    """One null's entry in the headline's list: its share, bulk shift and whether it is used."""
    if block.get("skipped"):
        return {"null": name, "used": False, "reason": block.get("reason") or "skipped"}
    share = block["share_beyond_chance"]
    bulk = share.get("bulk") or {}
    shift = bulk.get("shift") or {}
    out = {"null": name, "share": share["estimate"], "share_ci": share.get("ci"),
           "bulk_shift_sd": shift.get("estimate"), "bulk_shift_ci": shift.get("ci"),
           "used": not bulk.get("fails"), "reason": None}
    if not out["used"]:
        out["reason"] = f"fails the bulk check: {bulk['fails']}"
    return out


def headline(by_null: dict) -> dict:
    """The headline block (module doc) from `evidence.by_null`: {null (None where no null
    qualifies), share {estimate, ci, se, level, over_lambda, lambda_range} (the chosen null's
    bulk-matched share), bulk_shift {estimate, ci} (null SDs), n_significant_by, n_matched,
    by_powered (False: the null's pool is too small for BY at this size, so its count says
    nothing), fraction_significant_by {estimate, ci}, null_by {n_significant_by, n_matched} (the same
    BY count on the null's own dictionaries, matched pairwise: what it is with nothing shared), in_all_others / null_in_all_others (seed-count
    curve, BY-significant, at N = S), candidates [...], rule, reason}."""
    cands = [candidate(k, b) for k, b in by_null.items() if k in DATA_SHAPED]
    used = [c for c in cands if c["used"]]
    out = {"rule": RULE, "candidates": cands, "null": None, "share": None, "bulk_shift": None,
           "n_significant_by": None, "n_matched": None, "by_powered": None,
           "fraction_significant_by": None,
           "null_by": None,
           "in_all_others": None, "null_in_all_others": None, "reason": None}
    if not used:
        out["reason"] = ("no data-shaped null was computed" if not cands else
                         "no data-shaped null passes the bulk check (each null's reason: "
                         "candidates)")
        return out
    best = min(used, key=lambda c: c["share"])
    block = by_null[best["null"]]
    share = block["share_beyond_chance"]
    curves = block.get("seed_count_curve") or {}
    out.update(
        null=best["null"],
        share={k: share.get(k) for k in ("estimate", "ci", "se", "level", "over_lambda",
                                         "lambda_range")},
        bulk_shift=(None if share["bulk"]["shift"] is None else
                    {k: share["bulk"]["shift"].get(k) for k in ("estimate", "ci")}),
        n_significant_by=block["significance"]["n_significant_by"],
        # False where the null's pool cannot reach BY's first threshold at this many features
        # (the trained null's few pairs): its 0 is no evidence of absence
        by_powered=block["significance"].get("null_large_enough"),
        n_matched=block["significance"]["n_matched"],
        fraction_significant_by={k: block["fraction_significant_by"].get(k)
                                 for k in ("estimate", "ci")},
        null_by=curves.get("null_by"),
        in_all_others=_curve_end(curves.get("beyond_chance")),
        null_in_all_others=_curve_end(curves.get("null_beyond_chance")))
    return out
