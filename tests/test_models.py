"""Model loading and tokenization (saefast.data.models), on the tiny random model."""

from __future__ import annotations

import pytest

from saefast.data import models as M
from saefast.errors import HookError, ModelError, SaefastError

pytestmark = pytest.mark.usefixtures("cache")  # a fresh cache root per test (conftest)


def test_tiny_uses_the_byte_tokenizer():
    model, info = M.load_model("tiny")
    assert model.tokenizer is None  # boot_native gives no tokenizer
    framing = M.model_framing(model)
    assert framing.prefix == (1,) and framing.suffix == ()
    assert framing.encode("hé") == [ord("h") + 3, 0xC3 + 3, 0xA9 + 3]
    assert info["d_model"] == 64 and info["n_layers"] == 2 and "blocks.1.hook_resid_pre" in info["hook_names"]


def test_weights_hash_is_stable():
    """The store key hashes this: a changed value would orphan every existing tiny store."""
    assert M.model_weights_hash("tiny") == "39ccf8767a0a92ba"


def test_a_local_directory_is_hashed_by_content_and_memoised(tmp_path, cache):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    first = M.model_weights_hash(str(folder))
    assert (cache / "weights-hashes.json").exists()
    assert M.model_weights_hash(str(folder)) == first
    (folder / "model.safetensors").write_bytes(b"other weights")
    assert M.model_weights_hash(str(folder)) != first
    (cache / "weights-hashes.json").write_text("{not json")  # a broken memo is only a cache
    assert M.model_weights_hash(str(folder)) != first


def test_check_hooks_names_close_hooks():
    with pytest.raises(HookError, match=r"unknown hook 'blocks.0.hook_resid_pr' \(close: blocks.0.hook_resid_pre"):
        M.check_hooks(["blocks.0.hook_resid_pr"], ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"])
    M.check_hooks(["blocks.1.hook_resid_pre"], ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"])


def test_model_errors_are_user_errors(monkeypatch):
    monkeypatch.setattr(M, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ModelError, match="not a valid Hugging Face name"):
        M.load_model("not a model!")
    with pytest.raises(ModelError, match="huggingface.co is unreachable"):
        M.load_model("no-such/model")
    assert issubclass(ModelError, SaefastError) and issubclass(HookError, SaefastError)
