"""The on-disk activation store (saefast.data.store): key, layout, and both readers' checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from saefast.data import harvest as H
from saefast.data import store as St
from saefast.data.harvest import harvest
from saefast.data.windows import split
from saefast.errors import SaefastError, StoreError

HOOK = "blocks.0.hook_resid_pre"

pytestmark = pytest.mark.usefixtures("cache")  # a fresh cache root per test (conftest)


@pytest.fixture
def store(corpus, monkeypatch):
    """A tiny-model store of 600 tokens in several shards."""
    monkeypatch.setattr(St, "SHARD_TOKENS", 200)
    monkeypatch.setattr(H, "FORWARD_CHUNKS", 2)  # 62 tokens a forward pass: shards of ~250
    return harvest("tiny", [HOOK], str(corpus), 600, context_length=32)[HOOK]


def open_store_source(store):
    return St.StoreSource(store, 0, St.store_info(store)["n_tokens"])


READERS = {"load_activations": St.load_activations, "StoreSource": open_store_source}


def test_the_store_dir_of_a_key_is_stable():
    """Existing caches are found again only while the folder name of a key stays the same."""
    key = {"format_version": 1, "model": "tiny", "weights_hash": "0123456789abcdef", "hook": HOOK,
           "corpus": "/data/my corpus.txt", "corpus_fingerprint": "fedcba9876543210", "context_length": 64,
           "chunking": "packed-v1", "dtype": "float32", "drop_special_tokens": True}
    assert St.store_dir(key, "/c").as_posix() == \
        "/c/activations/tiny__blocks.0.hook_resid_pre__my-corpus.txt__ctx64__57de2b85edaf"
    assert set(St.store_key("tiny", HOOK, "python-docs")) == set(key)


def test_both_readers_read_the_same_tokens(store):
    meta = St.store_info(store)
    assert len(meta["shards"]) >= 3 and meta["n_tokens"] >= 600
    whole = St.load_activations(store)  # [N, 64]
    assert whole.shape == (meta["n_tokens"], 64)
    src = St.StoreSource(store, 100, 550)
    assert (src.n_tokens, src.d) == (450, 64)
    assert torch.equal(src.read(0, 450), whole[100:550])
    assert torch.equal(src.read(90, 310), whole[190:410])  # across shard boundaries
    part = split(src, 50, 150)
    assert isinstance(part, St.StoreSource) and torch.equal(part.read(0, 100), whole[150:250])
    assert torch.equal(St.load_activations(store, 250), whole[:250])


def test_store_errors(corpus, tmp_path):
    with pytest.raises(StoreError, match="not found"):
        St.load_activations(tmp_path / "nowhere")
    with pytest.raises(StoreError, match="not found"):
        St.StoreSource(tmp_path / "nowhere", 0, 1)
    store = harvest("tiny", [HOOK], str(corpus), 100)[HOOK]
    have = St.store_info(store)["n_tokens"]
    with pytest.raises(StoreError, match=f"has {have:,} tokens; asked for 100,000"):
        St.load_activations(store, 100_000)
    with pytest.raises(StoreError, match=f"has {have:,} tokens; asked for 100,000"):
        St.StoreSource(store, 0, 100_000)
    shard = store / St.store_info(store)["shards"][0]["file"]
    np.save(shard, np.zeros((3, 64), np.float32))
    with pytest.raises(StoreError, match="corrupt .*shard-00000.npy has shape"):
        St.load_activations(store)
    (store / "meta.json").write_text('{"n_tokens": 12')
    with pytest.raises(StoreError, match="corrupt .*meta.json"):
        St.load_activations(store)
    json.dump({"n_tokens": 1}, (store / "meta.json").open("w"))
    with pytest.raises(StoreError, match="corrupt"):
        St.store_info(store)
    assert issubclass(StoreError, SaefastError)


def corrupt(store, how: str) -> str:
    """Break the second shard; returns its file name."""
    meta = St.store_info(store)
    name = meta["shards"][1]["file"]
    path = store / name
    data = path.read_bytes()
    if how == "truncated":  # a torn copy: the header is whole, the rows are not
        path.write_bytes(data[:len(data) - 64 * 4 * 3])
    elif how == "header":  # cut inside the .npy header
        path.write_bytes(data[:40])
    elif how == "shape":
        np.save(path, np.zeros((meta["shards"][1]["n_tokens"], 32), np.float32))
    elif how == "dtype":
        np.save(path, np.zeros((meta["shards"][1]["n_tokens"], 64), np.float64))
    elif how == "missing":
        path.unlink()
    return name


@pytest.mark.parametrize("how", ["truncated", "header", "shape", "dtype", "missing"])
@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_corrupt_shard_is_a_store_error_naming_the_file_from_both_readers(store, how, reader):
    name = corrupt(store, how)
    with pytest.raises(StoreError, match=rf"activation store '.*' is corrupt \({name}"):
        READERS[reader](store)


def test_store_source_checks_every_shard_when_opened_not_when_read(store):
    """A corrupt shard fails before training starts, even one the first windows never read."""
    name = corrupt(store, "truncated")
    with pytest.raises(StoreError, match=name):
        St.StoreSource(store, 0, 10)


def test_meta_json_and_shards_agree(store):
    meta = St.store_info(store)
    meta["n_tokens"] += 1  # the shards do not add up to it
    (store / "meta.json").write_text(json.dumps(meta))
    for read in READERS.values():
        with pytest.raises(StoreError, match="corrupt .*meta.json"):
            read(store)


def test_writes_leave_no_temporary_files(store):
    shards = St.store_info(store)["shards"]  # and the (empty, unlocked) write lock's file
    assert sorted(p.name for p in store.iterdir()) == \
        [St.WRITE_LOCK, "meta.json"] + [s["file"] for s in shards] + [s["token_ids"] for s in shards]


def test_store_and_windows_do_not_import_transformer_lens_or_rich():
    import subprocess
    import sys

    code = ("import sys, saefast.data.store, saefast.data.windows, saefast.data.harvest, saefast.data.stream; "
            "print(sorted(m for m in ('transformer_lens', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_token_ids_sit_beside_the_shards_and_an_old_store_resumes_without_them(store, corpus):
    """Layout 2 keeps each row's token id; a layout-1 store (written before) still reads,
    and a longer harvest into it adds ids for its new shards only."""
    meta = St.store_info(store)
    assert meta["layout"] == St.LAYOUT_VERSION
    ids = St.load_token_ids(store, 600)
    assert ids.shape == (600,) and ids.dtype == np.int64
    assert np.array_equal(St.load_token_ids(store, 250), ids[:250])
    rows = np.array([599, 0, 250, 17])
    np.testing.assert_array_equal(St.gather_rows(store, rows), St.load_activations(store)[rows].numpy())
    for shard in meta["shards"]:  # as a store written before token ids
        (store / shard.pop("token_ids")).unlink()
    del meta["layout"]
    (store / St.META).write_text(json.dumps(meta))
    assert St.load_token_ids(store, 600) is None
    assert St.load_activations(store).shape[0] == meta["n_tokens"]
    harvest("tiny", [HOOK], str(corpus), 900, context_length=32)
    new = St.store_info(store)
    old_shards = len(meta["shards"])
    assert all("token_ids" not in s for s in new["shards"][:old_shards])
    assert all("token_ids" in s for s in new["shards"][old_shards:])
    assert St.load_token_ids(store, 900) is None  # its prefix has none
    (store / new["shards"][-1]["token_ids"]).write_bytes(b"torn")
    meta2 = dict(new, shards=[dict(s, token_ids="x.npy") for s in new["shards"]])
    (store / St.META).write_text(json.dumps(meta2))
    with pytest.raises(StoreError, match="corrupt .*x.npy"):
        St.load_token_ids(store, 10)
