"""Ablation equivalence at the hook: what each SAE, and each of its features, does to the loss.

Two features are "the same" in the circuit sense when removing either changes the model's
next-token loss the same way. Through TransformerLens hooks on a causal LM:

- splice: the hook's activations replaced by the SAE's reconstruction; the loss increase over
  the clean model, and the share of the zero-ablation damage it avoids (`fraction_recovered`
  = (L_zero - L_splice) / (L_zero - L_clean), L_zero with the hook's activations at 0);
- per-feature effects, per token: removing feature f at token t changes the summed loss by
  about e_f(t) = -a_f(t) (d_f . g_t), d_f the decoder row, a_f(t) its activation and g_t the
  gradient of the summed loss with respect to the hook's activation at t (one backward pass
  for every feature: the linear, attribution estimate). For a decoder-matched pair (i, j),
  the Pearson correlation of e_i and e_j over the tokens says whether they do the same job;
- the attribution is checked against exact ablations on a sample of features: each sampled
  feature removed at every token at once (x - sum_t a_f(t) d_f), the loss change measured,
  and compared with sum_t e_f(t): Pearson r with its Fisher-z interval, on enough features
  for a half-width of CHECK_HALF at a moderate r (71 at 90 %) within a time budget of
  exact removals (CHECK_BUDGET_S), and the median relative error. Where it does not hold
  (r < TRUST_R, or its interval reaches 0), the per-token effect correlations rest on a
  linear estimate that is wrong here: they are marked untrusted (and left out of the
  views' agreement), and matched features' effects are measured by exact removal instead
  (`exact_pair_effects`: do the two features of a matched pair change the loss alike?).

Effects are on the clean model (the hook's true activations minus the feature's part), not
on the spliced one. Bidirectional models (MiniLM, which loads as a masked LM) are refused with the reason: their
"next-token loss" sees the next token. Their final output has no scalar loss whose gradient
is not zero at the clean point, so there is no ablation measure for them here.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from saefast.errors import ModelError
from saefast.stats import correlation as corr
from saefast.stats import equivalence as eq
from saefast.stats import fisher
from saefast.stats import inference as inf

# the attribution check: enough features for a Fisher-z interval of half-width <= CHECK_HALF
# at a moderate r (CHECK_AT_R), 71 at the 90 % level, within CHECK_BUDGET_S seconds of exact
# removals (one forward pass each; at least MIN_CHECK); it holds at r >= TRUST_R with the
# interval above 0
CHECK_HALF, CHECK_AT_R = 0.15, 0.5
CHECK_BUDGET_S = 180.0
MIN_CHECK = 10
TRUST_R = 0.5
CHECK_METHOD = (
    "exact removal (each feature removed at every kept token at once, one forward pass) of "
    "active features of the first run drawn at random, against their summed linear "
    f"estimate; Pearson r with its {inf.LEVEL_TEXT} Fisher-z interval; n sized for a "
    f"half-width <= {CHECK_HALF} at r = {CHECK_AT_R} (stats.fisher.fisher_size), fewer when "
    f"{CHECK_BUDGET_S:g} s of removals run out first (at least {MIN_CHECK}); the attribution "
    f"holds when r >= {TRUST_R} and the interval lies above 0")
EXACT_PAIRS_METHOD = (
    "the attribution did not hold, so matched features' effects are measured exactly: "
    "decoder-matched positions where both features fire, drawn round-robin over the pairs, "
    "each feature removed at every kept token in its own run; Pearson r over the positions "
    f"of the two exact loss changes, {inf.LEVEL_TEXT} Fisher-z interval")


def check_size() -> int:
    """Features the attribution check asks for (`fisher.fisher_size` of CHECK_HALF at
    CHECK_AT_R, the reports' level)."""
    return fisher.fisher_size(CHECK_HALF, CHECK_AT_R)


def _direction(lm) -> str:
    return getattr(getattr(lm, "cfg", None), "attention_dir", "causal")


def require_causal(lm, name: str) -> None:
    """ModelError unless lm is a causal LM: a bidirectional model (MiniLM loads as a masked LM)
    has logits, but its "next-token loss" sees the next token and measures nothing."""
    direction = _direction(lm)
    if direction != "causal":
        raise ModelError(f"ablation needs a causal language model; '{name}' is {direction} (a "
                         "masked or encoder model), so its next-token loss means nothing: use "
                         "gemma-270m offline, or gpt2 / pythia with a network")


def _loss(lm, ids: torch.Tensor, hook: str, fn=None) -> torch.Tensor:
    """Summed next-token loss of ids [b, L] with `fn` (act -> act) at the hook, or clean."""
    hooks = [] if fn is None else [(hook, lambda act, hook=None: fn(act))]
    try:
        per_token = lm.run_with_hooks(ids, return_type="loss", loss_per_token=True,
                                      fwd_hooks=hooks)  # [b, L - 1]
    except Exception as e:  # an encoder without an LM head, or a bridge without losses
        raise ModelError(f"ablation needs a causal language model with a loss ({e})") from None
    return per_token.sum()


def _at(act: torch.Tensor, keep: torch.Tensor | None, fn) -> torch.Tensor:
    """act [b, L, d] with fn applied to the kept positions' rows [N, d] (all when keep is
    None): special tokens (BOS, CLS) the SAEs never trained on keep their activations."""
    if keep is None:
        return fn(act.reshape(-1, act.shape[-1])).reshape(act.shape).to(act.dtype)
    out = act.clone()
    out[keep] = fn(act[keep]).to(act.dtype)
    return out


def _reconstruct(sae, rows: torch.Tensor) -> torch.Tensor:
    from saefast import ops

    return ops.sparse_decode(*eq.encode(sae, rows), sae.decoder, sae.b_dec)


def splice(lm, hook: str, sae, ids: torch.Tensor, keep: torch.Tensor | None = None) -> dict:
    """{clean, spliced, zero (mean loss per predicted token), increase, fraction_recovered};
    the SAE (and the zero ablation) act on the `keep` [b, L] positions only."""
    n = ids.shape[0] * (ids.shape[1] - 1)
    with torch.no_grad():
        clean = float(_loss(lm, ids, hook)) / n
        spliced = float(_loss(lm, ids, hook,
                              lambda act: _at(act, keep, lambda r: _reconstruct(sae, r)))) / n
        zero = float(_loss(lm, ids, hook, lambda act: _at(act, keep, torch.zeros_like))) / n
    return {"clean": clean, "spliced": spliced, "zero": zero, "increase": spliced - clean,
            "fraction_recovered": (zero - spliced) / (zero - clean) if zero != clean else None}


def _final_output(lm, ids: torch.Tensor, hook: str, fn=None) -> torch.Tensor:
    """[b, d] the mean over positions of the last block's residual output (a sentence
    embedding, as MiniLM's is pooled), with `fn` at the hook or clean."""
    last = f"blocks.{int(lm.cfg.n_layers) - 1}.hook_resid_post"
    seen = {}

    def grab(act, hook=None):
        seen["h"] = act.detach().float()
        return act

    hooks = ([] if fn is None else [(hook, lambda act, hook=None: fn(act))]) + [(last, grab)]
    with torch.no_grad():
        lm.run_with_hooks(ids, fwd_hooks=hooks)
    return seen["h"].mean(1)


def splice_output(lm, hook: str, sae, ids: torch.Tensor, keep: torch.Tensor | None = None) -> dict:
    """For a bidirectional (encoder) model, which has no loss to compare: how far the spliced
    final output moves from the clean one. {relative_change: mean over sequences of
    |h_spliced - h| / |h| of the pooled last-layer output, cosine: of h_spliced with h,
    zero_relative_change: the same with the hook's activations at 0, fraction_recovered: 1 -
    relative_change / zero_relative_change}."""
    clean = _final_output(lm, ids, hook)
    spliced = _final_output(lm, ids, hook, lambda act: _at(act, keep, lambda r: _reconstruct(sae, r)))
    zero = _final_output(lm, ids, hook, lambda act: _at(act, keep, torch.zeros_like))

    def rel(x):
        return float(((x - clean).norm(dim=1) / clean.norm(dim=1)).mean())

    r, rz = rel(spliced), rel(zero)
    return {"relative_change": r, "zero_relative_change": rz,
            "cosine": float(torch.nn.functional.cosine_similarity(spliced, clean).mean()),
            "fraction_recovered": 1 - r / rz if rz > 0 else None}


def hook_gradient(lm, hook: str, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x [b, L, d], g [b, L, d]): the hook's clean activations and the gradient of the
    summed loss with respect to them."""
    require_causal(lm, getattr(getattr(lm, "cfg", None), "model_name", "the model"))
    seen = {}

    def grab(act):
        seen["x"] = act.detach().clone().requires_grad_(True)
        return seen["x"]

    loss = _loss(lm, ids, hook, grab)
    (g,) = torch.autograd.grad(loss, seen["x"])
    return seen["x"].detach(), g


def feature_effects(sae, x: torch.Tensor, g: torch.Tensor, keep: torch.Tensor | None = None):
    """Attribution of every kept latent at every token: (effects [N, k], indices [N, k])
    with effects = -a (d . g), for the N `keep` positions (all b * L when None) of x and g
    [b, L, d]."""
    if keep is None:
        flat, gf = x.reshape(-1, x.shape[-1]).float(), g.reshape(-1, g.shape[-1]).float()
    else:
        flat, gf = x[keep].float(), g[keep].float()
    v, i = eq.encode(sae, flat)  # [N, k]
    dots = torch.einsum("nkd,nd->nk", sae.decoder[i], gf)  # [N, k] d_f . g_t
    return (-v * dots).detach(), i


def exact_removal(lm, hook: str, sae, ids: torch.Tensor, features: Sequence[int],
                  keep: torch.Tensor | None = None) -> np.ndarray:
    """[len(features)] summed-loss change when each feature is removed at every (kept)
    token at once (x - sum_t a_f(t) d_f), on the clean model."""
    def without(rows, f):
        flat = rows.float()
        v, i = eq.encode(sae, flat)
        a = (v * (i == f)).sum(1, keepdim=True)  # [N, 1] feature f's activation
        return flat - a * sae.decoder[f]

    with torch.no_grad():
        base = float(_loss(lm, ids, hook))
        out = [float(_loss(lm, ids, hook, lambda act, f=int(f): _at(
            act, keep, lambda r: without(r, f)))) - base for f in features]
    return np.asarray(out)


def _removals(lm, hook: str, sae, ids, features, keep, budget_s: float, at_least: int):
    """exact_removal of features in order until budget_s seconds have passed (at least
    `at_least` of them): (the features done, their loss changes [n], seconds taken)."""
    start, done, out = time.perf_counter(), [], []
    for f in features:
        if len(done) >= at_least and time.perf_counter() - start > budget_s:
            break
        out.append(float(exact_removal(lm, hook, sae, ids, [int(f)], keep)[0]))
        done.append(int(f))
    return np.asarray(done, np.int64), np.asarray(out), time.perf_counter() - start


def _summed(effects: torch.Tensor, indices: torch.Tensor, n_features: int) -> np.ndarray:
    """[F] each feature's attribution summed over the tokens."""
    return np.bincount(indices.reshape(-1).numpy(), weights=effects.reshape(-1).double().numpy(),
                       minlength=int(n_features))


def attribution_check(lm, hook: str, sae, ids: torch.Tensor, effects: torch.Tensor,
                      indices: torch.Tensor, n_sample: int | None = None, seed: int = 0,
                      keep: torch.Tensor | None = None, budget_s: float = CHECK_BUDGET_S) -> dict:
    """Exact removal of n_sample active features (chosen at random; default `check_size()`,
    fewer when the budget runs out first) against the summed attribution of the same
    features: {features, exact, attribution, pearson_r, ci (Fisher z), n, n_asked, holds,
    reason, seconds, budget_s, median_relative_error, method}. The attribution holds when r
    >= TRUST_R and its interval lies above 0."""
    total = _summed(effects, indices, sae.n_features)  # [F] summed attribution
    active = np.flatnonzero(total != 0)
    rng = np.random.default_rng(seed)
    asked = check_size() if n_sample is None else int(n_sample)
    order = rng.choice(active, min(asked, len(active)), replace=False)  # random order
    pick, exact, secs = _removals(lm, hook, sae, ids, order, keep, budget_s, MIN_CHECK)
    lin = total[pick]
    rel = np.abs(lin - exact) / np.maximum(np.abs(exact), 1e-12)
    fz = fisher.fisher_interval(lin, exact)
    holds, why = _holds(fz)
    return {"features": pick.tolist(), "exact": exact.tolist(), "attribution": lin.tolist(),
            "pearson_r": fz["estimate"], "ci": fz["ci"], "level": fz["level"], "n": len(pick),
            "n_asked": asked, "holds": holds, "reason": why, "seconds": secs,
            "budget_s": budget_s,
            "median_relative_error": float(np.median(rel)) if len(pick) else None,
            "method": CHECK_METHOD}


def _holds(fz: dict) -> tuple[bool, str | None]:
    """Whether an attribution check's r says the linear estimate holds, and why not."""
    r, ci = fz["estimate"], fz["ci"]
    if r is None or ci is None:
        return False, f"no r with an interval from {fz['n']} features"
    if ci[0] <= 0:
        return False, f"r = {r:.2f} with its interval [{ci[0]:.2f}, {ci[1]:.2f}] reaching 0"
    if r < TRUST_R:
        return False, f"r = {r:.2f} < {TRUST_R:g}"
    return True, None


def exact_pair_effects(lm, hook: str, saes: Sequence, pairs: list[dict], ids: torch.Tensor,
                       effects: list, keep: torch.Tensor | None = None, n: int | None = None,
                       seed: int = 0, budget_s: float = CHECK_BUDGET_S) -> dict:
    """Where the attribution does not hold: exact removals of decoder-matched features, n
    positions (default `check_size()`) drawn round-robin over the pairs among those where
    both features fire, each feature removed at every token in its own run. {pairs [{index_a,
    index_b, positions, exact_a, exact_b}], pearson_r, ci (Fisher z over the pooled
    positions), n, seconds, method}: do matched features change the loss alike?"""
    rng = np.random.default_rng(seed)
    want = check_size() if n is None else int(n)
    totals = [_summed(e, i, s.n_features) for s, (e, i) in zip(saes, effects)]
    queues = []
    for p in pairs:
        ia, ib = np.asarray(p["a_indices"]), np.asarray(p["b_indices"])
        both = np.flatnonzero((totals[p["index_a"]][ia] != 0) & (totals[p["index_b"]][ib] != 0))
        queues.append(list(rng.permutation(both)))
    done = {}  # (run, feature) -> exact loss change
    got = [[] for _ in pairs]
    start = time.perf_counter()
    while sum(map(len, got)) < want and any(queues):
        for q, p, g in zip(queues, pairs, got):
            if not q or sum(map(len, got)) >= want:
                continue
            if time.perf_counter() - start > budget_s and sum(map(len, got)) >= MIN_CHECK:
                queues = [[] for _ in queues]
                break
            t = int(q.pop())
            for run, f in ((p["index_a"], p["a_indices"][t]), (p["index_b"], p["b_indices"][t])):
                if (run, int(f)) not in done:
                    done[run, int(f)] = float(exact_removal(lm, hook, saes[run], ids, [int(f)],
                                                            keep)[0])
            g.append(t)
    out = [{"index_a": p["index_a"], "index_b": p["index_b"], "positions": g,
            "exact_a": [done[p["index_a"], int(p["a_indices"][t])] for t in g],
            "exact_b": [done[p["index_b"], int(p["b_indices"][t])] for t in g]}
           for p, g in zip(pairs, got)]
    xa = np.concatenate([x["exact_a"] for x in out]) if out else np.zeros(0)
    xb = np.concatenate([x["exact_b"] for x in out]) if out else np.zeros(0)
    fz = fisher.fisher_interval(xa, xb)
    return {"pairs": out, "pearson_r": fz["estimate"], "ci": fz["ci"], "level": fz["level"],
            "n": int(xa.size), "n_asked": want, "seconds": time.perf_counter() - start,
            "budget_s": budget_s, "method": EXACT_PAIRS_METHOD}


def pair_effect_correlations(effects_a, idx_a, effects_b, idx_b, n_a: int, n_b: int,
                             a_feats, b_feats) -> np.ndarray:
    """[n] Pearson r over tokens between the per-token effects of A's feature a_feats[t] and
    B's b_feats[t] (0 where a feature is not kept), from the sparse effects."""
    ca = corr.Codes(effects_a, idx_a, n_a)
    cb = corr.Codes(effects_b, idx_b, n_b)
    return corr.pair_correlations(ca, cb, a_feats, b_feats)


# ---------------------------------------------------------------------------- a report's block


def eval_tokens(lm, corpus: str, n_tokens: int, context_length: int, info: dict,
                drop_special: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [b, L], keep [b, L]): the corpus's first chunks, framed like the harvest's, until
    n_tokens kept positions; keep marks the positions whose activations an SAE saw."""
    from saefast.data import harvest as H
    from saefast.data.models import model_framing

    framing = model_framing(lm)
    size = H.content_length(framing, info, context_length)
    rows, have = [], 0
    for chunk in H.iter_chunks(corpus, framing.encode, size):
        if len(chunk) != size:
            break  # one length: one batch
        rows.append(list(framing.prefix) + chunk + list(framing.suffix))
        have += H.kept_tokens(chunk, framing, drop_special)
        if have >= n_tokens:
            break
    if not rows:
        raise ModelError(f"corpus '{corpus}' has no full chunk of {size} tokens to ablate on")
    ids = torch.tensor(rows)
    return ids, H._keep_mask(ids, framing, drop_special)


def ablation_block(saes: Sequence, pairs: list[dict], *, model: str, hook: str, corpus: str,
                   n_tokens: int, context_length: int = 128, n_check: int | None = None,
                   budget_s: float = CHECK_BUDGET_S, cache_dir=None) -> dict:
    """summary["ablation"]: each run's splice, the per-token effect correlation of every
    decoder-matched pair (added to each pair as `ablation`), with its interval over runs, and
    the attribution check on the first run (n_check features, default `check_size()`).
    Where the attribution does not hold, the per-token effects are marked untrusted (each
    pair's ablation.trusted, `effects_trusted`, `untrusted_reason`) and `exact_pairs`
    measures matched features' effects by exact removal instead. Loads the model
    (TransformerLens)."""
    from saefast.data.models import check_hooks, load_model

    lm, info = load_model(model, cache_dir=cache_dir)
    check_hooks([hook], info["hook_names"])
    ids, keep = eval_tokens(lm, corpus, n_tokens, context_length, info)
    if _direction(lm) != "causal":
        return {"method": "a bidirectional model has no loss: splice_output is how far the "
                          "pooled last-layer output moves when the hook's activations are "
                          "replaced by the SAE's reconstruction (non-special positions)",
                "model": model, "hook": hook, "corpus": corpus, "tokens": int(keep.sum()),
                "splice_output": [dict(run=s.name, **splice_output(lm, hook, s, ids, keep))
                                  for s in saes],
                "skipped": ["per-feature effects and their attribution check: "
                            f"'{model}' is {_direction(lm)}, with no loss to attribute"]}
    x, g = hook_gradient(lm, hook, ids)
    effects = [feature_effects(s, x, g, keep) for s in saes]
    per_pair = {}
    for p in pairs:
        i, j = p["index_a"], p["index_b"]
        r = pair_effect_correlations(*effects[i], *effects[j], saes[i].n_features,
                                     saes[j].n_features, p["a_indices"], p["b_indices"])
        per_pair[i, j] = r
        p["ablation"] = {"effect_r": r.tolist(), "median_effect_r": float(np.median(r))}
    med = inf.run_interval(inf.PairedRuns.from_dict(len(saes), per_pair), inf.median())
    check = attribution_check(lm, hook, saes[0], ids, *effects[0], n_check, keep=keep,
                              budget_s=budget_s)
    for p in pairs:
        p["ablation"]["trusted"] = check["holds"]
    exact = None if check["holds"] or not pairs else exact_pair_effects(
        lm, hook, saes, pairs, ids, effects, keep, n=n_check, budget_s=budget_s)
    return {
        "method": "on the first tokens of the corpus (special tokens untouched): splice = "
                  "the hook's activations replaced by the SAE's reconstruction; effect of "
                  "removing feature f at token t on the summed next-token loss, linear "
                  "estimate -a_f(t) (d_f . dL/dx_t) from one backward pass of the clean model; "
                  "effect_r: Pearson r over tokens of a decoder-matched pair's effects; "
                  "attribution_check: exact removal of sampled features of the first run "
                  "against their summed linear estimate",
        "model": model, "hook": hook, "corpus": corpus, "tokens": int(keep.sum()),
        "splice": [dict(run=s.name, **splice(lm, hook, s, ids, keep)) for s in saes],
        "effect_r_median": {k: med[k] for k in ("estimate", "ci")},
        "attribution_check": check, "effects_trusted": check["holds"],
        "untrusted_reason": None if check["holds"] else
        f"the linear attribution does not hold: {check['reason']}",
        "exact_pairs": exact,
    }
