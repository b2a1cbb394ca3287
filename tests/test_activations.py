"""Activation harvesting into the on-disk cache, on the tiny random model (and MiniLM once, slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from saefast.data import activations as A
from saefast.data.corpora import CorpusError

HOOKS = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post"]
TEXT = "\n\n".join(f"Paragraph {i}: the cache keeps every token of the corpus, {i * 7} times."
                   for i in range(60))  # ~4K bytes = ~4K tiny tokens


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return str(path)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test gets its own cache root (also via the environment variable)."""
    monkeypatch.setenv("SAEFAST_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_harvest_gives_n_by_d_per_hook(corpus, cache):
    stores = A.harvest("tiny", HOOKS, corpus, 1000, context_length=64, progress=False)
    assert set(stores) == set(HOOKS)
    for hook, store in stores.items():
        assert store.parent == cache / "activations" and hook in store.name
        x = A.load_activations(store, 1000)  # [1000, 64]
        assert x.shape == (1000, 64) and x.dtype == torch.float32 and torch.isfinite(x).all()
        info = A.store_info(store)
        assert info["n_tokens"] >= 1000 and info["hook"] == hook and not info["exhausted"]
        assert A.load_activations(store).shape == (info["n_tokens"], 64)
    a, b = (A.load_activations(stores[h], 1000) for h in HOOKS)
    assert not torch.equal(a, b)


def test_harvest_matches_a_direct_forward(corpus):
    """The cached rows are the hook's activations of [BOS] + the first 63 bytes of the stream."""
    store = A.harvest("tiny", HOOKS[1:], corpus, 63, context_length=64, progress=False)[HOOKS[1]]
    model, _ = A.load_model("tiny")
    ids = torch.tensor([[1] + A.ByteTokenizer().encode(TEXT.split("\n\n")[0] + TEXT.split("\n\n")[1])[:63]])
    _, cache = model.run_with_cache(ids, names_filter=lambda n: n == HOOKS[1])
    torch.testing.assert_close(A.load_activations(store, 63), cache[HOOKS[1]][0, 1:])


def test_smaller_budget_reuses_the_store_without_loading_the_model(corpus, monkeypatch):
    stores = A.harvest("tiny", HOOKS, corpus, 800, context_length=64, progress=False)
    first = A.load_activations(stores[HOOKS[0]], 800)

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded again")

    monkeypatch.setattr(A, "load_model", no_load)
    again = A.harvest("tiny", HOOKS, corpus, 300, context_length=64, progress=False)
    assert again == stores
    assert torch.equal(A.load_activations(again[HOOKS[0]], 300), first[:300])


def test_extending_a_store_equals_a_fresh_harvest(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(A, "SHARD_TOKENS", 200)  # several shards
    small = A.harvest("tiny", HOOKS[:1], corpus, 300, context_length=32, progress=False)
    # a second hook joins later: one forward pass serves both, each from its own chunk
    grown = A.harvest("tiny", HOOKS, corpus, 2000, context_length=32, progress=False)
    assert grown[HOOKS[0]] == small[HOOKS[0]]
    assert len(A.store_info(grown[HOOKS[0]])["shards"]) > 2
    fresh = A.harvest("tiny", HOOKS, corpus, 2000, context_length=32, progress=False,
                      cache_dir=tmp_path / "fresh")
    for hook in HOOKS:
        assert torch.equal(A.load_activations(grown[hook], 2000), A.load_activations(fresh[hook], 2000))


def test_a_killed_harvest_resumes_from_its_last_shard(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(A, "SHARD_TOKENS", 100)
    monkeypatch.setattr(A, "BATCH_CHUNKS", 2)
    real_forward, calls = A.forward_chunks, []

    def dies_on_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(A, "forward_chunks", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        A.harvest("tiny", HOOKS[:1], corpus, 1500, context_length=32, progress=False)
    monkeypatch.setattr(A, "forward_chunks", real_forward)
    store = A.store_dir(A.store_key("tiny", HOOKS[0], corpus, context_length=32))
    partial = A.store_info(store)
    assert 0 < partial["n_tokens"] < 1500 and partial["chunks_consumed"] == 4
    resumed = A.harvest("tiny", HOOKS[:1], corpus, 1500, context_length=32, progress=False)[HOOKS[0]]
    fresh = A.harvest("tiny", HOOKS[:1], corpus, 1500, context_length=32, progress=False,
                      cache_dir=tmp_path / "fresh")[HOOKS[0]]
    assert torch.equal(A.load_activations(resumed, 1500), A.load_activations(fresh, 1500))


def test_drop_special_tokens_removes_the_bos_positions(corpus):
    dropped = A.harvest("tiny", HOOKS[:1], corpus, 31 * 8, context_length=32, progress=False)[HOOKS[0]]
    kept = A.harvest("tiny", HOOKS[:1], corpus, 32 * 8, context_length=32, progress=False,
                     drop_special_tokens=False)[HOOKS[0]]
    assert dropped != kept
    a = A.load_activations(dropped, 31 * 8).view(8, 31, 64)  # [chunks, text tokens, d]
    b = A.load_activations(kept, 32 * 8).view(8, 32, 64)  # [chunks, BOS + text tokens, d]
    torch.testing.assert_close(a, b[:, 1:])
    assert not torch.allclose(b[:, 0], b[:, 1])


def test_unknown_model_and_hook(corpus, monkeypatch):
    monkeypatch.setattr(A, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(A.ModelError, match=r"unknown model 'no-such/model': not a built-in \(minilm, gemma-270m, tiny\)"):
        A.harvest("no-such/model", HOOKS, corpus, 10, progress=False)
    with pytest.raises(A.HookError, match=r"unknown hook 'blocks.0.hook_resid_pr' \(close: blocks.0.hook_resid_pre.*"
                                          r"pattern: blocks.N.hook_resid_pre\)"):
        A.harvest("tiny", ["blocks.0.hook_resid_pr"], corpus, 10, progress=False)
    with pytest.raises(ValueError, match="context_length 512 does not fit"):
        A.harvest("tiny", HOOKS, corpus, 10, context_length=512, progress=False)


def test_corpus_too_small_keeps_a_valid_exhausted_store(tmp_path, monkeypatch):
    path = tmp_path / "small.txt"
    path.write_text("a short corpus\n\nof two documents\n")  # 30 bytes
    with pytest.raises(CorpusError, match=r"corpus '.*small.txt' has only 30 tokens for this model "
                                          r"after dropping special tokens; asked for 1,000"):
        A.harvest("tiny", HOOKS[:1], str(path), 1000, progress=False)
    store = A.store_dir(A.store_key("tiny", HOOKS[0], str(path)))
    assert A.store_info(store)["exhausted"] and A.load_activations(store).shape == (30, 64)
    monkeypatch.setattr(A, "load_model", lambda *a, **k: pytest.fail("loaded the model"))
    with pytest.raises(CorpusError, match="has only 30 tokens"):
        A.harvest("tiny", HOOKS[:1], str(path), 1000, progress=False)
    assert A.harvest("tiny", HOOKS[:1], str(path), 30, progress=False)[HOOKS[0]] == store


def test_store_errors(corpus, tmp_path):
    with pytest.raises(A.CacheError, match="not found"):
        A.load_activations(tmp_path / "nowhere")
    store = A.harvest("tiny", HOOKS[:1], corpus, 100, progress=False)[HOOKS[0]]
    have = A.store_info(store)["n_tokens"]
    with pytest.raises(A.CacheError, match=f"has {have:,} tokens; asked for 100,000"):
        A.load_activations(store, 100_000)
    shard = store / A.store_info(store)["shards"][0]["file"]
    np.save(shard, np.zeros((3, 64), np.float32))
    with pytest.raises(A.CacheError, match="corrupt .*shard-00000.npy has shape"):
        A.load_activations(store)
    (store / "meta.json").write_text('{"n_tokens": 12')
    with pytest.raises(A.CacheError, match="corrupt .*meta.json"):
        A.load_activations(store)
    json.dump({"n_tokens": 1}, (store / "meta.json").open("w"))
    with pytest.raises(A.CacheError, match="corrupt"):
        A.store_info(store)


def test_tiny_uses_the_byte_tokenizer():
    model, info = A.load_model("tiny")
    assert model.tokenizer is None  # boot_native gives no tokenizer
    framing = A.model_framing(model)
    assert framing.prefix == (1,) and framing.suffix == ()
    assert framing.encode("hé") == [ord("h") + 3, 0xC3 + 3, 0xA9 + 3]
    assert info["d_model"] == 64 and info["n_layers"] == 2 and "blocks.1.hook_resid_pre" in info["hook_names"]


@pytest.mark.slow
def test_minilm_harvest_drops_cls_and_sep(tmp_path):
    stores = A.harvest("minilm", ["blocks.3.hook_resid_pre"], "python-docs", 300, progress=False)
    x = A.load_activations(stores["blocks.3.hook_resid_pre"], 300)  # [300, 384]
    assert x.shape == (300, 384) and torch.isfinite(x).all()
    model, info = A.load_model("minilm")
    assert info["d_model"] == 384 and len(info["weights_hash"]) == 16
    framing = A.model_framing(model)
    assert framing.prefix == (model.tokenizer.cls_token_id,) and framing.suffix == (model.tokenizer.sep_token_id,)
    meta = A.store_info(stores["blocks.3.hook_resid_pre"])
    assert meta["chunks_consumed"] * 126 == meta["n_tokens"]  # 128 - [CLS] - [SEP] per chunk
