"""The activations a report reads besides its runs: the data of its nulls and its held-out tokens.

A report's matched cosines are compared with three nulls (`saefast.stats.nulls`; the report's
`nulls` block is `saefast.stats.null_summary`), each matched exactly like the real
dictionaries, for the report's pair shape (n_a, n_b, d) and hook:

- isotropic: random Gaussian dictionaries (two untrained SAEs); always there;
- covariance: rows ~ N(0, Σ), Σ the centred covariance of rows of the activation store the
  runs trained on (`store.range_moments`, cached beside the store);
- activations: rows are centred activation vectors of distinct tokens of the same rows (the
  store's token ids; a store written before token ids existed has none: skipped with the
  reason). The pool keeps at most ROWS_PER_TOKEN random rows of each token id, so its memory
  is bounded by the vocabulary seen, not by the budget.

Which rows (`null_rows`, stated in summary.nulls.data: start, n_rows, rows, why): the store's
shared held-out block (data.held_out_tokens, the store's first N tokens, never trained on and
the same for every budget of a scale study) when it has >= MIN_MOMENT_TOKENS (20,000) tokens,
so every budget's nulls draw from ONE Σ and token pool and a margin that rises with tokens is
not the null drifting; otherwise the larger of the runs' training rows and their held-out
block (a Σ from a few hundred tokens would be noise). Runs that record no token ranges (other
tools') read the whole store.

The data-shaped nulls need the store: a sweep passes the one its runs name in run.json
(`store_of_runs`); `saefast analyze` passes `--acts STORE_DIR`. Runs that streamed their
activations name in run.json the null data their pass gathered (`data.stream_nulls`: the
training rows' covariance and one row per distinct token id). Without either only the
isotropic null is computed, and the report says why. A fourth null needs none of this data:
the dictionary-covariance null (`saefast.stats.dictionary_null`) is drawn from the runs' own
decoders, so every report has it.

`resolve` (cheap: JSON and file stats only) decides where the data comes from before
anything is matched, so its `settings` can decide whether a stored report is reused;
`null_data` reads that data (`stats.null_summary.NullData`), and `held_out` the runs' held-out
tokens from the same store (the activation-correlation view of `summary.equivalence`).
Nothing here computes a statistic or writes a report file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from saefast.data.moments import TokenPool
from saefast.data.surrogate import MIN_MOMENT_TOKENS
from saefast.errors import ConfigError, StoreError
from saefast.runs.artifacts import LoadedSAE, read_run_json
from saefast.stats import nulls as _nulls
from saefast.stats.null_summary import NULL_SEED, NullData

NULLS_VERSION = 3  # bump when what the nulls compute changes: stored reports are recomputed
ROWS_PER_TOKEN = 8  # activation null: rows kept per distinct token id (module doc)
MAX_HELD_OUT = 100_000  # held-out tokens encoded per run, at most

NEED_ACTS = ("the covariance and activation nulls need the runs' training activations: pass "
             "--acts STORE_DIR (the activation store the sweep harvested into)")
STREAMED = ("the runs streamed their activations (data.cache false) and their null data (the "
            "training rows' covariance and token pool, saved by the sweep under "
            "runs/.null_data/) is not there")


@dataclass(frozen=True)
class NullSource:
    """Where a report's data-shaped nulls come from: rows [start, start + n_rows) of `store`
    (`rows`: "held_out", "training" or "store", and `why`), the null data `file` streamed
    runs saved, or nothing for the `reason` given."""

    store: Path | None
    n_rows: int | None = None
    rows_key: str | None = None  # store.rows_key of the first start + n_rows rows
    hook: str | None = None
    reason: str | None = None
    file: Path | None = None  # streamed runs: their saved null data (`data.stream_nulls`)
    start: int = 0
    rows: str | None = None
    why: str | None = None
    cross_domain: str | None = None  # why the runs trained on different data (`mixed_data`)

    @property
    def key(self) -> str | None:
        """The nulls' memo key for this data (store folder and the rows' key, or the file)."""
        if self.file is not None:
            return f"{self.file}:{self.rows_key}"
        if self.store is None:
            return None
        return f"{self.store}:{self.start}:{self.n_rows}:{self.rows_key}"

    @property
    def has_data(self) -> bool:
        return self.store is not None or self.file is not None


def run_info(run) -> dict:
    """run.json of a run dir (or a LoadedSAE's info); {} for formats without one. A corrupt
    one is the same RunDirError load_sae gives (`runs.artifacts.read_run_json`)."""
    if isinstance(run, LoadedSAE):
        return run.info or {}
    return read_run_json(run, missing_ok=True)


def store_of_runs(run_dirs) -> Path | None:
    """The activation store the runs' run.json names, when they all name one and it exists
    (what a sweep passes to its reports); None otherwise (streamed runs, other formats)."""
    where = {run_info(r).get("activation_store") for r in run_dirs}
    if len(where) != 1:
        return None
    (path,) = where
    return Path(path) if isinstance(path, str) and Path(path).is_dir() else None


def resolve(run_dirs, acts: str | Path | None) -> NullSource:
    """The data of the runs' data-shaped nulls: `acts` (a store folder) checked against the
    runs' run.json (hook, d_model, model weights, corpus), and the rows they trained on (the
    smallest `tokens.train` of the runs; the whole store for runs that record none). ConfigError
    when the store holds other activations than the runs trained on. Runs that trained on
    different data (cross-domain: other corpora; other hooks or models) get no data-shaped
    nulls, with that reason (`mixed_data`, also in `cross_domain`): their decoders are judged
    against the isotropic and dictionary-covariance nulls, which need no training set; with
    `acts` that is a ConfigError."""
    from saefast.data import store as _store

    infos = [run_info(r) for r in run_dirs]
    mixed = mixed_data(infos)
    if mixed is not None:  # cross-domain (or cross-layer) runs: no one training set to draw from
        if acts is not None:
            raise ConfigError(f"--acts {acts}: {mixed}, so no one store is theirs; leave out "
                              "--acts (the report then has the nulls that need no "
                              "activations: isotropic and dictionary-covariance)")
        return NullSource(None, reason=f"{mixed}: the covariance and activation nulls are drawn "
                                       "from one training set, so these runs are judged against "
                                       "the isotropic and dictionary-covariance nulls only (neither "
                                       "needs one)", cross_domain=mixed)
    if acts is None:
        named = [str(i.get("activation_store", "")) for i in infos]
        if streamed(infos):
            return _streamed(infos)
        gone = sorted({n for n in named if n and not Path(n).is_dir()})
        if gone:
            return NullSource(None, reason=f"the activation store the runs were trained on "
                                           f"({gone[0]}) is not there any more; {NEED_ACTS}")
        return NullSource(None, reason=NEED_ACTS)
    acts = Path(acts)
    meta = _store.store_info(acts)  # StoreError when it is not a store
    for info in infos:
        model, corpus = info.get("model") or {}, info.get("corpus") or {}
        for what, ours, theirs in (
                ("hook", model.get("hook"), meta.get("hook")),
                ("d_model", model.get("d_model"), meta.get("d_model")),
                ("model weights", model.get("weights_hash"), meta.get("weights_hash")),
                ("corpus", corpus.get("fingerprint"), meta.get("corpus_fingerprint"))):
            if ours is not None and theirs is not None and ours != theirs:
                raise ConfigError(f"--acts {acts}: the store's {what} is {theirs}, but run "
                                  f"{info.get('name', '?')} was trained with {ours}; pass the "
                                  "store the runs were trained on")
    span = null_rows(infos, int(meta["n_tokens"]))
    if isinstance(span, str):
        return NullSource(None, reason=span)
    start, end, rows, why = span
    if end > meta["n_tokens"]:
        raise StoreError(f"--acts {acts}: the store has {meta['n_tokens']:,} tokens, the runs "
                         f"trained on rows up to {end:,}; pass the store the runs were trained on")
    return NullSource(acts.resolve(), end - start, _store.rows_key(acts, end), meta.get("hook"),
                      start=start, rows=rows, why=why)


def null_rows(infos: Sequence[dict], n_store: int) -> tuple[int, int, str, str] | str:
    """(start, end, rows, why): the store rows the data-shaped nulls draw from (module doc),
    from the runs' run.json `tokens`, or the reason there are none. Training rows: the
    smallest budget's (after the shared held-out block when there is one)."""
    toks = [i.get("tokens") for i in infos]
    if not all(isinstance(t, dict) and isinstance(t.get("train"), int) for t in toks):
        return 0, n_store, "store", "the runs record no token ranges: the whole store"
    held = held_out_rows(infos)  # the same block for every run, or why not
    held = None if isinstance(held, str) else (held[0], held[0] + int(toks[0]["held_out"]))
    shared = held is not None and all(t.get("held_out_shared") for t in toks)
    first = held[1] if shared else 0  # a shared block comes first; training reads after it
    trained = (first, first + min(int(t["train"]) for t in toks))
    rule = f"a shared held-out block of >= {MIN_MOMENT_TOKENS:,} tokens is every budget's"
    if shared and held[1] - held[0] >= MIN_MOMENT_TOKENS:
        return (*held, "held_out", f"the store's shared held-out block ({held[1] - held[0]:,} "
                                   "tokens): one Σ for every token budget")
    if held is not None and held[1] - held[0] > trained[1] - trained[0]:
        return (*held, "held_out", f"the runs' held-out block, larger than their training "
                                   f"rows ({rule})")
    if trained[1] - trained[0] < 2:
        return f"the runs trained on {trained[1] - trained[0]} token(s): no covariance"
    return (*trained, "training", f"the runs' training rows, larger than their held-out "
                                  f"block ({rule})")


def mixed_data(infos: list[dict]) -> str | None:
    """Why the runs did not all train on the same activations (other corpora, hooks or model
    weights, as their run.json records them), or None. Runs without a run.json (other tools'
    formats) record nothing and count as agreeing."""
    for what, path in (("corpora", ("corpus", "fingerprint")), ("hooks", ("model", "hook")),
                       ("models", ("model", "weights_hash"))):
        seen: dict[str, str] = {}  # value -> the first run's label for it
        for info in infos:
            section = info.get(path[0])
            value = section.get(path[1]) if isinstance(section, dict) else None
            if value is not None:
                label = section.get("name") if what == "corpora" else value
                seen.setdefault(str(value), str(label or value))
        if len(seen) > 1:
            names = sorted(seen.values())
            return (f"the runs trained on different {what} ({', '.join(names[:4])}"
                    f"{', ...' if len(names) > 4 else ''})")
    return None


def streamed(infos: list[dict]) -> bool:
    """Whether any of the runs (their run.json) streamed its activations (no store)."""
    return any(str(i.get("activation_store", "")).startswith("stream") for i in infos)


def _streamed(infos: list[dict]) -> NullSource:
    """Streamed runs: the null data file they all name in run.json, when it is there."""
    files = {i.get("null_data") for i in infos}
    if len(files) != 1 or not isinstance(next(iter(files)), str):
        return NullSource(None, reason=STREAMED)
    path = Path(next(iter(files)))
    if not path.is_file():
        return NullSource(None, reason=STREAMED)
    st = path.stat()  # a file written again is other data: its size and mtime name it
    rows = {(i.get("tokens") or {}).get("train") for i in infos}
    return NullSource(None, n_rows=rows.pop() if len(rows) == 1 else None, file=path.resolve(),
                      rows_key=f"{st.st_size}-{st.st_mtime_ns}",
                      hook=((infos[0].get("model") or {}).get("hook")), rows="training",
                      why="streamed runs keep no store: the training rows their pass gathered")


def settings(source: NullSource) -> dict[str, Any]:
    """What the nulls depend on besides the runs (part of a report's reuse settings)."""
    return {"version": NULLS_VERSION, "seed": NULL_SEED,
            "min_pooled_cosines": _nulls.MIN_POOLED_COSINES,
            "quantiles": list(_nulls.QUANTILES), "rows_per_token": ROWS_PER_TOKEN,
            "store": None if source.store is None else str(source.store),
            "file": None if source.file is None else str(source.file),
            "start": source.start, "n_rows": source.n_rows, "rows_key": source.rows_key,
            "rows": source.rows}


# ---------------------------------------------------------------------------- data


_POOLS: dict[str, Any] = {}  # NullSource.key -> TokenPool or a reason (per process)


def _token_pool(source: NullSource, mean: np.ndarray):
    """The activation null's TokenPool of the source's rows, or the reason there is none."""
    from saefast.data import store as _store

    if source.key in _POOLS:
        return _POOLS[source.key]
    ids = _store.load_token_ids(source.store, source.start + source.n_rows)  # [start + n]
    ids = None if ids is None else ids[source.start:]  # [n] the source's rows
    if ids is None:
        pool = (f"skipped: the store {source.store} was written before token ids were kept "
                "(store layout 1), and the activation null needs distinct tokens; harvest "
                "into a fresh cache (or delete this store) to get it")
    else:
        rng = np.random.default_rng([NULL_SEED, source.n_rows] if source.start == 0 else
                                    [NULL_SEED, source.start, source.n_rows])
        perm = rng.permutation(ids.size)  # [n]: a random order within each token id
        order = perm[np.argsort(ids[perm], kind="stable")]  # [n] rows grouped by id
        sorted_ids = ids[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_ids)) + 1]  # [M] first of each id
        rank = np.arange(ids.size) - np.repeat(starts, np.diff(np.r_[starts, ids.size]))
        rows = np.sort(order[rank < ROWS_PER_TOKEN])  # [<= M * ROWS_PER_TOKEN]
        pool = TokenPool(_store.gather_rows(source.store, rows + source.start), ids[rows],
                         mean=mean)
    _POOLS[source.key] = pool
    return pool


# ---------------------------------------------------------------------------- reading


def null_data(source: NullSource | None, d: int) -> NullData:
    """The data of the source's data-shaped nulls for runs of dimension d: the training
    moments and token pool (`stats.null_summary.NullData`), None and the reason where missing."""
    from saefast.data import store as _store

    reason = None if source is None else source.reason
    reasons = {"covariance": reason, "activations": reason}
    moments = pool = None
    if source is not None and source.file is not None:
        from saefast.data import stream_nulls

        moments, pool = stream_nulls.load(source.file)
        if moments.d != d:
            raise ConfigError(f"{source.file}: d={moments.d}, the runs d={d}")
    elif source is not None and source.store is not None:
        moments = _store.range_moments(source.store, source.start,
                                       source.start + source.n_rows)
        if moments.d != d:
            raise ConfigError(f"--acts {source.store}: the store has d={moments.d}, the runs "
                              f"d={d}")
        pool = _token_pool(source, moments.mean)
        if isinstance(pool, str):
            reasons["activations"], pool = pool, None
    where = {"store": None, "file": None, "hook": None, "start": None, "n_rows": None,
             "rows_key": None, "rows": None, "why": None, "cross_domain": None}
    if source is not None:
        where = {"store": None if source.store is None else str(source.store),
                 "file": None if source.file is None else str(source.file),
                 "hook": source.hook, "start": source.start if source.has_data else None,
                 "n_rows": source.n_rows, "rows_key": source.rows_key, "rows": source.rows,
                 "why": source.why, "cross_domain": source.cross_domain}
    return NullData(moments, pool, reasons, reason, None if source is None else source.key, where)


def held_out(run_dirs, source: NullSource | None) -> tuple:
    """(x [T, d] or None, reason, where): the runs' held-out activations from the store the
    nulls read (a sweep's store, or --acts), for the activation-correlation view."""
    from saefast.data.store import StoreSource

    infos = [run_info(r) for r in run_dirs]
    if source is None or source.store is None:
        mixed = mixed_data(infos)
        if mixed:
            why = f"{mixed}: there is no one set of held-out tokens to correlate on"
        elif streamed(infos):
            why = "the runs streamed their activations, so no store holds their held-out tokens"
        else:
            why = ("the held-out activations come from the runs' activation store: pass "
                   "--acts STORE_DIR")
        return None, why, None
    span = held_out_rows(infos)
    if isinstance(span, str):
        return None, span, None
    start, end = span
    x = StoreSource(source.store, start, end).read(0, end - start)  # [T, d]
    return x, None, f"{source.store} rows {start}-{end}"


def held_out_rows(infos: Sequence[dict]) -> tuple[int, int] | str:
    """[start, end) of the runs' held-out tokens in their store (from run.json `tokens`),
    capped at MAX_HELD_OUT tokens, or the reason there are none."""
    spans = set()
    for info in infos:
        tok = info.get("tokens") if isinstance(info, dict) else None
        if not isinstance(tok, dict) or not isinstance(tok.get("held_out"), int):
            return "the runs' run.json does not say which tokens were held out"
        start = 0 if tok.get("held_out_shared") else int(tok["train"])
        spans.add((start, start + int(tok["held_out"])))
    if len(spans) != 1:
        return "the runs held out different tokens"
    start, end = spans.pop()
    if end - start < 2:
        return "fewer than 2 held-out tokens"
    return start, min(end, start + MAX_HELD_OUT)
