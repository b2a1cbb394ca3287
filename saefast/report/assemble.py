"""A stability report, assembled in one place: what it contains and in which order.

    compute_analysis(run_dirs, *, threshold, top_k, live_only, solver, baseline, progress,
                     nulls, matchings, ablation) -> report    what `report.files` writes

and the original study's four functions (names, signatures and JSON keys unchanged; keys are
only ever added):

    compute_sae_pair_alignment(run_a, run_b, threshold=0.9, top_k=20)          -> pair dict
    compute_stability_report(run_dirs, threshold=0.9, top_k=20)                -> report
    compute_live_only_alignment(run_a, run_b, threshold=0.9, top_k=20)         -> pair dict
    compute_live_only_stability_report(run_dirs, threshold=0.9, top_k=20)      -> report

A report, step by step (each statistic a pure function of `saefast.stats` on what the steps
before made; the keys are documented where they are computed):

1. the runs, loaded and checked (`report.inputs`), every argument checked before anything is
   matched; the data of the nulls and the held-out tokens (`report.nulls`) read;
2. each pair of runs matched by decoder (`report.matchings`, through the matching cache when
   given) and summarised (`stats.stability.pair_alignment`, `summarise`: summary.baseline is
   the isotropic null, `stats.null_summary`);
3. summary.evidence (`stats.evidence`) under the isotropic null, the data-shaped ones and the
   dictionary-covariance null of the runs' own decoders (`stats.dictionary_null`; every
   report with baseline=True: it needs no activations), and its headline (`stats.verdict`);
   with spectrum_null and the data's moments, also evidence.by_null.spectrum, the
   per-feature p-values conditional on each feature's place in the spectrum
   (`stats.spectrum_evidence`, after step 5 for both modes), the headline taken again;
4. full report: summary.equivalence (`stats.equivalence`) from the encoder matchings and the
   activation-correlation matchings of the held-out codes (`report.matchings` again), with
   each view's chance floor (`stats.view_nulls`);
5. live_only=True: steps 2-3 on each run's live features, under the key "live_only"; when no
   run has a dead feature that report would repeat the full one, so "live_only" is None and
   summary.live_only_note says why (half a report's cost, and half the page, saved);
6. with a null source: summary.nulls of both (`stats.null_summary.add_nulls`), the
   dictionary-covariance (and, asked for, spectrum-matched) nulls' kinds included, then
   the trained null's kinds (`report.trained_null`: its null runs' pairs matched like the
   real ones, the excess pair by pair, `stats.trained_null`);
7. baseline=True: summary.subspace of both (`stats.subspace`: the runs' firing-weighted
   decoder subspaces against the same nulls, and the verdict: same features, same subspace,
   or nothing beyond chance);
8. when asked, summary.ablation (`stats.ablation`); last, summary.equivalence.agreement over
   every view the pairs now carry.

Every step after 3 is guarded (`report.missing`): an error in one is recorded under
summary.missing with its reason, and the steps after it still run.

Nothing here writes a file but the matching cache; `report.files` writes the report.
"""

from __future__ import annotations

from typing import Any, Callable

from saefast.errors import ConfigError
from saefast.match import parallel, resolve_solver
from saefast.match.cache import MatchingCache
from saefast.report import inputs, missing
from saefast.report import matchings as pair_matchings
from saefast.report import nulls as report_nulls
from saefast.report import trained_null as report_trained
from saefast.runs.artifacts import LoadedSAE, read_fire_rates
from saefast.stats import dictionary_null, null_summary, spectrum_evidence, stability, verdict
from saefast.stats.stability import DEFAULT_THRESHOLD, DEFAULT_TOP_K, Progress

# why compute_stability_report has no activation view: it reads no activation store
NO_HELD_OUT = "no held-out activations given (reports.analyze_runs passes the store's)"


# ---------------------------------------------------------------------------- pairs


def _pair(sa: LoadedSAE, sb: LoadedSAE, *, threshold, top_k, solver, live_only, baseline,
          matchings: MatchingCache | None = None) -> tuple[dict[str, Any], tuple | None]:
    """(the pair dict, its matching's nearest neighbours `Matching.nearest` or None)."""
    idx_a, idx_b, m = pair_matchings.pair_matching(sa, sb, live_only=live_only, solver=solver,
                                                   matchings=matchings)
    return stability.pair_alignment(sa, sb, idx_a, idx_b, m, threshold=threshold, top_k=top_k,
                                    live_only=live_only, baseline=baseline,
                                    solver=solver), m.nearest


def _alignment(run_a, run_b, threshold, top_k, *, solver, baseline, live_only) -> dict:
    stability.check_args(threshold, top_k)
    sa, sb = inputs.as_sae(run_a), inputs.as_sae(run_b)
    inputs.check_distinct([sa, sb])
    stability.check_same_d([sa, sb])
    return _pair(sa, sb, threshold=threshold, top_k=top_k, solver=solver, live_only=live_only,
                 baseline=baseline)[0]


def compute_sae_pair_alignment(run_a, run_b, threshold=DEFAULT_THRESHOLD, top_k=DEFAULT_TOP_K, *,
                               solver: str = "auto", baseline: bool = True) -> dict[str, Any]:
    """Match all features of run_a and run_b (run directories) one-to-one by decoder cosine."""
    return _alignment(run_a, run_b, threshold, top_k, solver=solver, baseline=baseline,
                      live_only=False)


def compute_live_only_alignment(run_a, run_b, threshold=DEFAULT_THRESHOLD, top_k=DEFAULT_TOP_K, *,
                                solver: str = "auto", baseline: bool = True) -> dict[str, Any]:
    """Like compute_sae_pair_alignment, on each run's live features only (original indices)."""
    return _alignment(run_a, run_b, threshold, top_k, solver=solver, baseline=baseline,
                      live_only=True)


# ---------------------------------------------------------------------------- reports


def compute_stability_report(run_dirs, threshold=DEFAULT_THRESHOLD, top_k=DEFAULT_TOP_K, *,
                             solver: str = "auto", baseline: bool = True,
                             progress: Progress | None = None) -> dict:
    """Match every pair of runs (all features) and summarise (`stats.stability`), with the
    evidence and the encoder view. `progress(i, n_pairs, pair_dict)` is called after each
    pair when given."""
    saes = _checked(run_dirs, threshold, top_k, solver)
    report = _report(saes, threshold=threshold, top_k=top_k, solver=solver, live_only=False,
                     baseline=baseline, progress=progress)
    _equivalence(saes, report, threshold=threshold, solver=solver,
                 held_out=(None, NO_HELD_OUT, None))
    _agreement(report)
    return report


def compute_live_only_stability_report(run_dirs, threshold=DEFAULT_THRESHOLD, top_k=DEFAULT_TOP_K,
                                       *, solver: str = "auto", baseline: bool = True,
                                       progress: Progress | None = None) -> dict:
    """compute_stability_report on each run's live features only (no equivalence views)."""
    return _report(_checked(run_dirs, threshold, top_k, solver), threshold=threshold,
                   top_k=top_k, solver=solver, live_only=True, baseline=baseline,
                   progress=progress)


def compute_analysis(run_dirs, *, threshold=DEFAULT_THRESHOLD, top_k=DEFAULT_TOP_K,
                     live_only: bool = False, solver: str = "auto", baseline: bool = True,
                     progress: Progress | None = None,
                     nulls: report_nulls.NullSource | None = None,
                     matchings: MatchingCache | None = None,
                     ablation: dict | None = None, spectrum_null: bool = False,
                     trained: list[report_trained.TrainedSource] | None = None,
                     on_step: StepCallback | None = None) -> dict:
    """The report `report.files` stores: the full report, plus (live_only=True) the live-only
    one under the key "live_only", built in the steps of the module docstring. Each run is
    loaded once; every argument is checked before any matching starts.

    nulls: where the runs' activations are (`report.nulls.resolve`): the data-shaped nulls
    (judged in the evidence beside the isotropic one, and summary.nulls; baseline=True only;
    the dictionary-covariance null is judged in the evidence of every baseline=True report
    and enters summary.nulls with the others)
    and the held-out tokens of the activation-correlation view; None: neither, with the
    reason. matchings: where pair matchings computed before are read and new ones kept
    (`match.cache`). ablation: {tokens, and optionally model, hook, corpus (default: what the
    runs' run.json names)} for summary.ablation. spectrum_null: also the spectrum-matched null
    (off by default: its draws cost several times the rest of a report, ~64 s for a 128-feature
    group of 5 runs in d = 384 on 2 loaded cores, and on smooth spectra its >= 8-direction
    bands make it too loose: docs/findings.md). trained: the trained null's runs
    (`report.trained_null.resolve`), entered in summary.nulls.kinds beside the others.
    on_step(name, index, total): called as each step starts (`report_steps` names them;
    `report.files` adds its "files" step last), for a progress bar."""
    run_dirs = inputs.as_list(run_dirs)
    saes = _checked(run_dirs, threshold, top_k, solver)
    target = _ablation_target(saes, ablation) if ablation is not None else None
    d = int(saes[0].decoder.shape[1])
    data = report_nulls.null_data(nulls, d) if baseline and nulls is not None else None
    others = null_summary.null_models(data, solver=solver) if baseline else []
    held_out = report_nulls.held_out(run_dirs, nulls)
    kw = dict(threshold=threshold, top_k=top_k, solver=solver, baseline=baseline,
              progress=progress, matchings=matchings)
    live_mode = live_only and _any_dead(saes)
    modes = (False, True) if live_mode else (False,)
    names = report_steps(live=live_mode, spectrum=spectrum_null and data is not None
                         and data.has_data, nulls=data is not None, baseline=baseline,
                         ablation=target is not None)
    tell = (lambda name: on_step(name, names.index(name), len(names))) if on_step else \
        (lambda name: None)
    tell("pairs")
    dicts = {live: _dictionary(saes, live) if baseline else None for live in modes}
    partners: dict[bool, dict] = {False: {}, True: {}}  # per mode: `_report`'s
    report = _report(saes, live_only=False, other_nulls=others + _model(dicts[False], solver),
                     partners=partners[False], **kw)

    def guard(name: str, fn):
        """A step after the core, announced, and guarded (`report.missing`): what fails is
        recorded as missing with its reason, and the rest is still computed and written."""
        tell(name.removesuffix("_live_only"))
        return missing.guarded(report, name, fn)

    guard("equivalence", lambda: _equivalence(saes, report, threshold=threshold, solver=solver,
                                              held_out=held_out, matchings=matchings))
    if live_mode:
        report["live_only"] = guard("live_only", lambda: _report(
            saes, live_only=True, other_nulls=others + _model(dicts[True], solver),
            partners=partners[True], **kw))
    elif live_only:
        report["live_only"] = None
        report["summary"]["live_only_note"] = NO_DEAD_NOTE
    modes = tuple(live for live in modes if not live or report.get("live_only") is not None)
    rows = {live: [stability.features(s, live)[1] for s in saes] for live in modes}
    if spectrum_null and data is not None and data.has_data:  # its per-feature evidence
        guard("spectrum_null", lambda: _spectrum(report, modes, rows, data))
    if data is not None:
        guard("nulls", lambda: null_summary.add_nulls(
            report, data, solver=solver,
            dictionary={"full": dicts[False], "live_only": dicts.get(True)},
            spectrum_rows=({"full": rows[False], "live_only": rows.get(True)}
                           if spectrum_null else None)))
        guard("trained_null", lambda: report_trained.add_trained(
            report, saes, trained or [], solver=solver, matchings=matchings,
            partners=partners))
    if baseline:
        for live, rep in ((False, report), (True, report.get("live_only"))):
            if rep is not None:  # one step, both modes
                guard("subspace" + ("_live_only" if live else ""), lambda: _subspace(
                    saes, rep, live, others + _model(dicts[live], solver), solver))
    if target is not None:
        from saefast.stats import ablation as _ablation

        report["summary"]["ablation"] = guard("ablation", lambda: _ablation.ablation_block(
            saes, report["pairs"], **target))
    if "equivalence" in report["summary"]:  # last: with every view the pairs carry
        guard("agreement", lambda: _agreement(report))
    return report


StepCallback = Callable[[str, int, int], None]


def report_steps(*, live: bool, spectrum: bool, nulls: bool, baseline: bool,
                 ablation: bool) -> list[str]:
    """The steps `compute_analysis` runs, in order, as its on_step names them, then "files"
    (`report.files` writing the CSVs, figures and stability.json)."""
    return (["pairs", "equivalence"] + ["live_only"] * live + ["spectrum_null"] * spectrum
            + ["nulls", "trained_null"] * nulls + ["subspace"] * baseline
            + ["ablation"] * ablation + ["agreement", "files"])


NO_DEAD_NOTE = ("no run has a dead feature, so the live-only report is the full report "
                "(not computed twice)")


def _spectrum(report: dict, modes: tuple, rows: dict, data) -> None:
    """evidence.by_null.spectrum of each mode, and the headline taken again over it."""
    for live in modes:
        rep = report["live_only"] if live else report
        ev = rep["summary"]["evidence"]
        ev["by_null"][spectrum_evidence.NAME] = \
            spectrum_evidence.spectrum_evidence(rep["pairs"], rows[live], data.moments.cov)
        ev["headline"] = verdict.headline(ev["by_null"])


def _any_dead(saes: list[LoadedSAE]) -> bool:
    """Whether a live-only report differs from the full one; unknown liveness (no feature
    file) counts as dead, so the live-only step runs and says what is missing."""
    return any(s.dead is None or bool(s.dead.any()) for s in saes)


def _dictionary(saes: list[LoadedSAE], live_only: bool):
    """Σ_D of the dictionary-covariance null: of the decoder rows each run is matched with."""
    return dictionary_null.dictionary_covariance(
        [stability.features(s, live_only)[1] for s in saes])


def _model(dcov, solver: str) -> list:
    """[the dictionary-covariance null's NullModel], or [] without a Σ_D (baseline=False)."""
    return [] if dcov is None else [dictionary_null.dictionary_null_model(dcov, solver=solver)]


def _subspace(saes: list[LoadedSAE], report: dict, live_only: bool, others: list,
              solver: str) -> None:
    """Step 7: summary.subspace of one mode, against the isotropic null and `others`, judged
    with the headline's feature-level share (`stats.verdict`)."""
    from saefast.stats import subspace
    from saefast.stats.null_model import isotropic_null_model

    feats = [stability.features(s, live_only) for s in saes]  # (indices, rows) per run
    rates = [read_fire_rates(s) for s in saes]
    s = report["summary"]
    s["subspace"] = subspace.subspace_block(
        [rows for _, rows in feats], [None if r is None else r[i] for r, (i, _) in zip(rates, feats)],
        [isotropic_null_model(int(saes[0].decoder.shape[1]), solver=solver), *others],
        labels=stability.labels(saes),
        share=subspace.headline_share(s["evidence"]))


def _checked(run_dirs, threshold, top_k, solver) -> list[LoadedSAE]:
    """Every argument checked (a bad solver name fails before anything is loaded), then the
    runs loaded and checked (distinct, one d): once per public call."""
    stability.check_args(threshold, top_k)
    resolve_solver(solver)
    return inputs.load_runs(run_dirs)


def _report(saes: list[LoadedSAE], *, threshold, top_k, solver, live_only, baseline,
            progress, other_nulls=(), matchings: MatchingCache | None = None,
            partners: dict | None = None) -> dict:
    """Steps 2-3: the pairs, the summary and the evidence of one mode. partners: a dict that
    gets {(i, j): the pair's nearest neighbours by its matching, `Matching.nearest`} (the
    trained null's evidence reuses them)."""
    from saefast.stats import evidence  # scipy.stats: imported only when a report is computed

    labels = stability.labels(saes)
    rows = [stability.features(s, live_only)[1] for s in saes]  # live-only: every run has some
    index_pairs = [(i, j) for i in range(len(saes)) for j in range(i + 1, len(saes))]
    partners = {} if partners is None else partners

    def one(item) -> tuple[dict, tuple | None] | None:
        if callable(item):  # a null draw of the evidence's, ahead (memoised there)
            try:
                item()
            except Exception:  # noqa: BLE001 - the evidence draws it again and reports it
                pass
            return None
        pair, near = _pair(saes[item[0]], saes[item[1]], threshold=threshold, top_k=top_k,
                           solver=solver, live_only=live_only, baseline=baseline,
                           matchings=matchings)
        pair["index_a"], pair["index_b"] = item
        finished.append(pair)
        return pair, near

    finished: list[dict] = []  # in the order the pairs finish, for progress
    shown = [0]

    def done(_n: int, _total: int) -> None:  # progress counts pairs, not the null draws
        while shown[0] < len(finished):
            shown[0] += 1
            progress(shown[0], len(index_pairs), finished[shown[0] - 1])

    # the evidence's null draws depend on the pairs' shapes only: drawn beside the matchings
    # in one queue, the null matchings first (each pair waits for its isotropic baseline),
    # the rest after the pairs, so no core waits for another
    first, rest = evidence.report_prefetch(
        saes[0].decoder.shape[1], [(len(rows[i]), len(rows[j])) for i, j in index_pairs],
        [len(r) for r in rows], threshold=threshold, solver=solver, baseline=baseline,
        other_nulls=other_nulls)
    pairs = []
    got = parallel.map_ordered(one, [*first, *index_pairs, *rest],
                               on_done=done if progress else None)[len(first):]
    for (i, j), (pair, near) in zip(index_pairs, got):
        pairs.append(pair)
        partners[i, j] = near
    summary = stability.summarise(saes, labels, pairs, threshold=threshold, top_k=top_k,
                                  solver=solver, live_only=live_only, baseline=baseline)
    summary["evidence"] = evidence.report_evidence(
        saes, labels, pairs, rows, threshold=threshold, solver=solver, baseline=baseline,
        fire_rates=[read_fire_rates(s) for s in saes], other_nulls=other_nulls,
        partners=partners)
    return {"pairs": pairs, "summary": summary}


def _equivalence(saes, report: dict, *, threshold, solver, held_out: tuple,
                 matchings: MatchingCache | None = None) -> None:
    """Step 4: summary.equivalence (its agreement comes last, `_agreement`). held_out: (x
    [T, d] or None, the reason there is none, where it was read)."""
    from saefast.stats import equivalence, view_nulls

    x, reason, where = held_out
    pairs = equivalence.equivalence_pairs(report["pairs"], len(saes))
    codes, why = equivalence.held_out_codes(saes, x, reason)
    report["summary"]["equivalence"] = block = equivalence.equivalence(
        saes, pairs, threshold=threshold, solver=solver, codes=codes, codes_reason=why,
        source=where,
        encoder_matchings=pair_matchings.encoder_matchings(saes, pairs, solver=solver,
                                                           matchings=matchings),
        correlation_matchings=pair_matchings.correlation_matchings(codes, pairs,
                                                                   matchings=matchings))
    view_nulls.add_view_nulls(report["summary"]["equivalence"], saes, pairs,
                              threshold=threshold, codes=codes,
                              context_length=_context_length(saes))
    block["pairs_used"] = {"n": len(pairs), "of": len(report["pairs"]),
                           "rule": None if len(pairs) == len(report["pairs"])
                           else equivalence.SUBSET_RULE}


def _context_length(saes: list[LoadedSAE]) -> int | None:
    """The runs' context length (run.json config.model), None where it does not say."""
    ctx = ((report_nulls.run_info(saes[0]).get("config") or {}).get("model") or {})
    return ctx.get("context_length")


def _agreement(report: dict) -> None:
    """Step 7's last: do the views the pairs carry rank the matched pairs alike?"""
    from saefast.stats.agreement import agreement

    report["summary"]["equivalence"]["agreement"] = agreement(report["pairs"],
                                                              report["summary"]["n_runs"])


def _ablation_target(saes: list[LoadedSAE], asked: dict) -> dict:
    """The arguments of `ablation.ablation_block` but the runs: the model, hook and corpus
    the runs name in run.json unless `asked` names them, checked before anything is matched."""
    if int(asked.get("tokens") or 0) < 1:
        raise ConfigError(f"--ablation-tokens must be a positive integer, got {asked['tokens']}")
    info = report_nulls.run_info(saes[0])
    model = asked.get("model") or (info.get("model") or {}).get("name")
    hook = asked.get("hook") or (info.get("model") or {}).get("hook")
    corpus = asked.get("corpus") or (info.get("corpus") or {}).get("name")
    if not (model and hook and corpus):
        raise ConfigError("ablation: the runs do not say which model, hook and corpus they "
                          "come from; pass --model, --hook and --corpus")
    if any(s.encoder is None or not s.k for s in saes):
        raise ConfigError("ablation: every run needs its encoder and k (a decoder-only "
                          "checkpoint cannot be spliced)")
    ctx = ((info.get("config") or {}).get("model") or {}).get("context_length", 128)
    return {"model": model, "hook": hook, "corpus": corpus, "n_tokens": int(asked["tokens"]),
            "context_length": int(ctx)}
