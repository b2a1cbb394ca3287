"""data/stream.py and data/stream_nulls.py, with sweep/passes.py's open_stream: streaming
activations from the model into training, with no disk cache (data.cache: false), in a
sweep too, and the data-shaped nulls gathered from the stream."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from saefast.config import SAEConfig, TrainConfig
from saefast.data import harvest as H
from saefast.data import stream as S
from saefast.data.corpora import CorpusError
from saefast.data.store import load_activations
from saefast.errors import HookError
from saefast.sweep import run_sweep
from saefast.sweep.experiment import Experiment, expand
from saefast.sweep.passes import open_stream
from saefast.train.trainer import train_saes

HOOK = "blocks.1.hook_resid_pre"

pytestmark = pytest.mark.usefixtures("cache")  # a fresh cache root per test (conftest)


@pytest.fixture(autouse=True)
def many_forward_batches(monkeypatch):
    monkeypatch.setattr(H, "FORWARD_CHUNKS", 4)  # many forward batches on a small corpus


def stream(corpus, n=3000):
    return S.StreamSource("tiny", HOOK, str(corpus), n, context_length=32)


def test_a_stream_holds_the_cached_tokens_in_the_same_order(corpus, cache):
    store = H.harvest("tiny", [HOOK], str(corpus), 3000, context_length=32)[HOOK]
    cached = load_activations(store, 3000)  # [3000, 64]
    src = stream(str(corpus))
    assert (src.n_tokens, src.d) == (3000, 64)
    torch.testing.assert_close(src.read(0, 3000), cached, rtol=1e-5, atol=1e-5)
    # backwards (restarts), ahead (skips), across forward batches
    for a, b in [(2500, 2600), (100, 900), (899, 2999), (0, 1), (1500, 1500)]:
        torch.testing.assert_close(src.read(a, b), cached[a:b], rtol=1e-5, atol=1e-5)


def test_reading_ahead_tokenizes_but_runs_the_model_only_where_asked(corpus):
    src = stream(str(corpus))
    first = src.read(2900, 3000)
    per_batch = H.FORWARD_CHUNKS * 31  # tiny: one BOS per chunk of 32 is dropped
    assert src.forward_batches <= -(-100 // per_batch) + 1
    # the same tokens from a fresh stream read from the start are bitwise the same:
    # forward batches are aligned to the corpus, not to where a read began
    assert torch.equal(stream(str(corpus)).read(0, 3000)[2900:], first)


def test_a_short_corpus_is_a_clear_error_before_training(corpus):
    src = S.StreamSource("tiny", HOOK, str(corpus), 10**6, context_length=32)
    with pytest.raises(CorpusError, match="has only .* tokens .* asked for 1,000,000"):
        src.check_length()


def test_unknown_hook_is_refused(corpus):
    with pytest.raises(HookError, match="unknown hook"):
        S.StreamSource("tiny", "blocks.9.hook_resid_pre", str(corpus), 100, context_length=32)


def test_stream_windows_go_in_corpus_order_and_resume_bitwise(corpus, tmp_path):
    """A killed streaming run resumes from its checkpoint (re-tokenizing, not re-running the
    model, up to where it stopped) and ends with the weights of an uninterrupted one."""
    cfg = TrainConfig(epochs=2, batch_size=64, lr=3e-3, shuffle_buffer=700, checkpoint_every=600)
    sae = SAEConfig(n_features=48, k=4)
    src = stream(str(corpus), 2800)
    whole = train_saes(src, None, sae, cfg, [1, 2])
    ckpt = tmp_path / "ckpt"
    assert train_saes(stream(str(corpus), 2800), None, sae, cfg, [1, 2], checkpoint_dir=ckpt,
                      stop_after_steps=60) == []  # 44 steps an epoch: killed in the second
    assert any(ckpt.iterdir())
    src_resumed = stream(str(corpus), 2800)
    resumed = train_saes(src_resumed, None, sae, cfg, [1, 2], checkpoint_dir=ckpt)
    assert src_resumed.forward_batches < src.forward_batches
    for a, b in zip(whole, resumed):
        for key, value in a.sae.state_dict().items():
            assert torch.equal(value, b.sae.state_dict()[key]), key


def test_sweep_with_cache_false_writes_no_activations(corpus, cache, tmp_path):
    exp = Experiment(base={"model.name": "tiny", "model.hook": HOOK, "model.context_length": 32,
                           "data.corpus": str(corpus), "data.tokens": 2000, "data.cache": False,
                           "sae.n_features": 32, "sae.k": 4, "train.epochs": 2},
                     grid={"train.seed": [1, 2]})
    runs = expand(exp)
    summary = run_sweep(runs, tmp_path / "out")
    assert summary["runs"]["done"] == 2 and summary["groups"][0]["pairs"] == 1
    assert not (cache / "activations").exists()
    info = json.loads((tmp_path / "out" / "runs" / runs[0].name / "run.json").read_text())
    assert info["activation_store"].startswith("stream")
    assert info["config"]["data"]["cache"] is False
    assert info["metrics"]["held_out"]["tokens"] == 200


def test_open_stream_checks_the_corpus_length(corpus):
    exp = Experiment(base={"model.name": "tiny", "model.context_length": 32, "data.corpus": str(corpus),
                           "data.tokens": 10**6, "data.cache": False})
    with pytest.raises(CorpusError):
        open_stream(expand(exp)[0].config)


def test_a_stream_is_trained_in_corpus_order():
    from saefast.data.windows import WindowSchedule

    ordered = WindowSchedule(1000, 100, 2, 0, [1], per_seed=True, shuffle_windows=False)
    shuffled = WindowSchedule(1000, 100, 2, 0, [1], per_seed=True)
    assert ordered.window_order(0) == ordered.window_order(1) == list(range(10))
    assert sorted(shuffled.window_order(0)) == list(range(10)) != shuffled.window_order(0)
    assert S.StreamSource.random_access is False


def _sweep(corpus, out, cache_on, seeds=(1, 2, 3)):
    exp = Experiment(base={"model.name": "tiny", "model.hook": HOOK, "model.context_length": 32,
                           "data.corpus": str(corpus), "data.tokens": 2000, "data.cache": cache_on,
                           "sae.n_features": 8, "sae.k": 2, "train.epochs": 2},
                     grid={"train.seed": list(seeds)})
    runs = expand(exp)
    run_sweep(runs, out)
    rep = json.loads((out / "reports" / runs[0].group / "stability.json").read_text())
    return runs, rep


def test_streamed_runs_get_the_data_shaped_nulls_from_the_pass(corpus, cache, tmp_path):
    """The pass gathers the training rows' covariance and token pool as the stream computes
    them (no extra forward pass); the covariance is the one a store of the same rows gives,
    so the covariance null is the cached sweep's."""
    runs, streamed = _sweep(str(corpus), tmp_path / "s", False)
    info = json.loads((tmp_path / "s" / "runs" / runs[0].name / "run.json").read_text())
    assert info["null_data"] and info["null_data"].endswith(".npz")
    n = streamed["summary"]["nulls"]
    assert n["note"] is None and n["data"]["file"] == str(Path(info["null_data"]).resolve())
    assert not n["kinds"]["covariance"]["skipped"] and not n["kinds"]["activations"]["skipped"]
    assert list(streamed["summary"]["evidence"]["by_null"]) == ["isotropic", "covariance",
                                                                "activations", "dictionary"]
    _, cached = _sweep(str(corpus), tmp_path / "c", True)
    cov_s, cov_c = (r["summary"]["nulls"]["kinds"]["covariance"] for r in (streamed, cached))
    assert cov_s["effective_rank"] == pytest.approx(cov_c["effective_rank"], rel=1e-9)
    assert cov_s["median_cosine"] == pytest.approx(cov_c["median_cosine"], abs=1e-5)
    act_s, act_c = (r["summary"]["nulls"]["kinds"]["activations"] for r in (streamed, cached))
    assert act_s["distinct_tokens"] == act_c["distinct_tokens"]  # the same distinct ids


def test_gathering_fills_the_rows_a_resumed_pass_did_not_see(corpus):
    """A pass resumed mid-way sees the stream from its checkpoint on: finish() reads the rows
    before it, and the result equals gathering from the start."""
    from saefast.data.moments import ActivationMoments
    from saefast.data.stream_nulls import StreamNullData

    whole = StreamNullData(stream(str(corpus)), 200, 2800).attach()
    whole.source.read(0, 3000)
    assert whole.complete
    late = StreamNullData(stream(str(corpus)), 200, 2800).attach()
    late.source.read(1500, 3000)  # starts past the training rows' start: nothing taken
    assert late.next == 200
    late.finish()
    ref = ActivationMoments().update(stream(str(corpus)).read(200, 2800))
    for got in (whole, late):
        np.testing.assert_allclose(got.moments.cov, ref.cov, rtol=1e-9, atol=1e-12)
        assert got._first.keys() == whole._first.keys()
