"""Harvesting activations into the on-disk store (saefast.data.harvest), on the tiny random
model (and MiniLM once, slow)."""

from __future__ import annotations

import pytest
import torch

from saefast.data import harvest as H
from saefast.data import models as M
from saefast.data import store as St
from saefast.data.harvest import harvest
from saefast.data.store import load_activations, store_dir, store_info, store_key
from saefast.errors import ConfigError, CorpusError, HookError, ModelError

HOOKS = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post"]

pytestmark = pytest.mark.usefixtures("cache")  # a fresh cache root per test (conftest)


def test_harvest_gives_n_by_d_per_hook(corpus, cache):
    stores = harvest("tiny", HOOKS, str(corpus), 1000, context_length=64)
    assert set(stores) == set(HOOKS)
    for hook, store in stores.items():
        assert store.parent == cache / "activations" and hook in store.name
        x = load_activations(store, 1000)  # [1000, 64]
        assert x.shape == (1000, 64) and x.dtype == torch.float32 and torch.isfinite(x).all()
        info = store_info(store)
        assert info["n_tokens"] >= 1000 and info["hook"] == hook and not info["exhausted"]
        assert load_activations(store).shape == (info["n_tokens"], 64)
    a, b = (load_activations(stores[h], 1000) for h in HOOKS)
    assert not torch.equal(a, b)


def test_harvest_matches_a_direct_forward(corpus):
    """The cached rows are the hook's activations of [BOS] + the first 63 bytes of the stream."""
    store = harvest("tiny", HOOKS[1:], str(corpus), 63, context_length=64)[HOOKS[1]]
    model, _ = M.load_model("tiny")
    docs = corpus.read_text().split("\n\n")
    ids = torch.tensor([[1] + M.ByteTokenizer().encode(docs[0] + docs[1])[:63]])
    _, cache = model.run_with_cache(ids, names_filter=lambda n: n == HOOKS[1])
    torch.testing.assert_close(load_activations(store, 63), cache[HOOKS[1]][0, 1:])


def test_smaller_budget_reuses_the_store_without_loading_the_model(corpus, monkeypatch):
    stores = harvest("tiny", HOOKS, str(corpus), 800, context_length=64)
    first = load_activations(stores[HOOKS[0]], 800)

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded again")

    monkeypatch.setattr(M, "load_model", no_load)
    again = harvest("tiny", HOOKS, str(corpus), 300, context_length=64)
    assert again == stores
    assert torch.equal(load_activations(again[HOOKS[0]], 300), first[:300])


def test_extending_a_store_equals_a_fresh_harvest(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(St, "SHARD_TOKENS", 200)  # several shards
    small = harvest("tiny", HOOKS[:1], str(corpus), 300, context_length=32)
    # a second hook joins later: one forward pass serves both, each from its own chunk
    grown = harvest("tiny", HOOKS, str(corpus), 2000, context_length=32)
    assert grown[HOOKS[0]] == small[HOOKS[0]]
    assert len(store_info(grown[HOOKS[0]])["shards"]) > 2
    fresh = harvest("tiny", HOOKS, str(corpus), 2000, context_length=32,
                      cache_dir=tmp_path / "fresh")
    for hook in HOOKS:
        assert torch.equal(load_activations(grown[hook], 2000), load_activations(fresh[hook], 2000))


def test_a_killed_harvest_resumes_from_its_last_shard(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(St, "SHARD_TOKENS", 100)
    monkeypatch.setattr(H, "FORWARD_CHUNKS", 2)
    real_forward, calls = H.forward_chunks, []

    def dies_on_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(H, "forward_chunks", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        harvest("tiny", HOOKS[:1], str(corpus), 1500, context_length=32)
    monkeypatch.setattr(H, "forward_chunks", real_forward)
    store = store_dir(store_key("tiny", HOOKS[0], str(corpus), context_length=32))
    partial = store_info(store)
    assert 0 < partial["n_tokens"] < 1500 and partial["chunks_consumed"] == 4
    resumed = harvest("tiny", HOOKS[:1], str(corpus), 1500, context_length=32)[HOOKS[0]]
    fresh = harvest("tiny", HOOKS[:1], str(corpus), 1500, context_length=32,
                      cache_dir=tmp_path / "fresh")[HOOKS[0]]
    assert torch.equal(load_activations(resumed, 1500), load_activations(fresh, 1500))


def test_drop_special_tokens_removes_the_bos_positions(corpus):
    dropped = harvest("tiny", HOOKS[:1], str(corpus), 31 * 8, context_length=32)[HOOKS[0]]
    kept = harvest("tiny", HOOKS[:1], str(corpus), 32 * 8, context_length=32,
                     drop_special_tokens=False)[HOOKS[0]]
    assert dropped != kept
    a = load_activations(dropped, 31 * 8).view(8, 31, 64)  # [chunks, text tokens, d]
    b = load_activations(kept, 32 * 8).view(8, 32, 64)  # [chunks, BOS + text tokens, d]
    torch.testing.assert_close(a, b[:, 1:])
    assert not torch.allclose(b[:, 0], b[:, 1])


def test_unknown_model_and_hook(corpus, monkeypatch):
    monkeypatch.setattr(M, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ModelError, match=r"unknown model 'no-such/model': not a built-in \(minilm, gemma-270m, tiny\)"):
        harvest("no-such/model", HOOKS, str(corpus), 10)
    with pytest.raises(HookError, match=r"unknown hook 'blocks.0.hook_resid_pr' for model 'tiny' "
                                          r"\(it has blocks 0-1; close: blocks.0.hook_resid_pre.*"
                                          r"pattern: blocks.N.hook_resid_pre\)"):
        harvest("tiny", ["blocks.0.hook_resid_pr"], str(corpus), 10)
    with pytest.raises(ConfigError, match="context_length 512 does not fit"):
        harvest("tiny", HOOKS, str(corpus), 10, context_length=512)


def test_corpus_too_small_keeps_a_valid_exhausted_store(tmp_path, monkeypatch):
    path = tmp_path / "small.txt"
    path.write_text("a short corpus\n\nof two documents\n")  # 30 bytes
    with pytest.raises(CorpusError, match=r"corpus '.*small.txt' has only 30 tokens for this model "
                                          r"after dropping special tokens; asked for 1,000"):
        harvest("tiny", HOOKS[:1], str(path), 1000)
    store = store_dir(store_key("tiny", HOOKS[0], str(path)))
    assert store_info(store)["exhausted"] and load_activations(store).shape == (30, 64)
    monkeypatch.setattr(M, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    with pytest.raises(CorpusError, match="has only 30 tokens"):
        harvest("tiny", HOOKS[:1], str(path), 1000)
    assert harvest("tiny", HOOKS[:1], str(path), 30)[HOOKS[0]] == store


@pytest.mark.slow
def test_minilm_harvest_drops_cls_and_sep(tmp_path):
    stores = harvest("minilm", ["blocks.3.hook_resid_pre"], "python-docs", 300)
    x = load_activations(stores["blocks.3.hook_resid_pre"], 300)  # [300, 384]
    assert x.shape == (300, 384) and torch.isfinite(x).all()
    model, info = M.load_model("minilm")
    assert info["d_model"] == 384 and len(info["weights_hash"]) == 16
    framing = M.model_framing(model)
    assert framing.prefix == (model.tokenizer.cls_token_id,) and framing.suffix == (model.tokenizer.sep_token_id,)
    meta = store_info(stores["blocks.3.hook_resid_pre"])
    assert meta["chunks_consumed"] * 126 == meta["n_tokens"]  # 128 - [CLS] - [SEP] per chunk


def test_progress_is_reported_through_a_callback(corpus, capsys, monkeypatch):
    monkeypatch.setattr(H, "FORWARD_CHUNKS", 2)  # several forward passes
    seen = []
    harvest("tiny", HOOKS, str(corpus), 1000, context_length=64, on_progress=lambda done, want: seen.append((done, want)))
    assert seen[0] == (0, 1000) and seen[-1] == (1000, 1000) and len(seen) > 2
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and all(w == 1000 for _, w in seen)
    seen.clear()
    harvest("tiny", HOOKS, str(corpus), 1500, context_length=64, on_progress=lambda done, want: seen.append((done, want)))
    assert seen[0][0] >= 1000 and seen[-1] == (1500, 1500)  # a resumed harvest starts where it stopped
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # a library call never draws on the screen


def test_a_corrupt_store_is_a_store_error_before_the_model_loads(corpus, monkeypatch):
    from saefast.errors import StoreError

    store = harvest("tiny", HOOKS[:1], str(corpus), 100)[HOOKS[0]]
    (store / "meta.json").write_text("{")
    monkeypatch.setattr(M, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    with pytest.raises(StoreError, match="corrupt .*meta.json"):
        harvest("tiny", HOOKS[:1], str(corpus), 200)
