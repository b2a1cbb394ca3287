"""`saefast export` (saefast.runs.export): runs written as SAELens and sparsify checkpoints.
Here: the files, the names, the hookpoint mapping and the refusals, read back through
saefast's own readers of those formats. With the real packages: tests/test_peers.py."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from saefast.errors import ConfigError, OutputError
from saefast.runs.artifacts import load_sae, write_run_dir
from saefast.runs.export import export_run, export_runs, sparsify_hookpoint


def _run(root, name, *, seed=0, model="minilm", hook="blocks.3.hook_resid_pre", F=48, d=16):
    g = torch.Generator().manual_seed(seed)
    feats = [{"feature_index": i, "dead": False, "fire_count": 1 + i, "fire_rate": (1 + i) / 1e3}
             for i in range(F)]
    info = {"name": name, "seed": seed, "group": "g",
            "model": {"name": model, "hook": hook, "d_model": d},
            "corpus": {"name": "python-code"},
            "config": {"model": {"name": model, "hook": hook, "context_length": 64,
                                 "drop_special_tokens": True}}}
    return write_run_dir(root / name, W_enc=torch.randn(F, d, generator=g),
                         b_enc=torch.randn(F, generator=g), W_dec=torch.randn(F, d, generator=g),
                         b_dec=torch.randn(d, generator=g), k=4, features=feats, run_info=info)


def test_sae_lens_export_has_the_v6_layout_and_reads_back_equal(tmp_path):
    run = _run(tmp_path, "L3-f48-k4-s1")
    dest = export_run(run, tmp_path / "out", "sae-lens")
    cfg = json.loads((dest / "cfg.json").read_text())
    assert {k: cfg[k] for k in ("architecture", "d_in", "d_sae", "k", "apply_b_dec_to_input",
                                "normalize_activations")} == {
        "architecture": "topk", "d_in": 16, "d_sae": 48, "k": 4, "apply_b_dec_to_input": True,
        "normalize_activations": "none"}
    meta = cfg["metadata"]
    assert meta["model_name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["hook_name"] == "blocks.3.hook_resid_pre" and meta["context_size"] == 64
    assert meta["dataset_path"] == "python-code" and meta["prepend_bos"] is False
    w = load_file(str(dest / "sae_weights.safetensors"))
    src, back = load_sae(run), load_sae(dest)
    assert w["W_enc"].shape == (16, 48) and torch.equal(w["W_enc"], src.encoder.T)
    assert back.format == "saelens"
    for name in ("decoder", "encoder", "b_enc", "b_dec"):
        assert torch.equal(getattr(back, name), getattr(src, name)), name
    sparsity = load_file(str(dest / "sparsity.safetensors"))["sparsity"]
    assert np.allclose(sparsity.numpy(), np.log10((1 + np.arange(48)) / 1e3), atol=1e-6)


def test_sparsify_export_sits_under_the_hookpoint_and_reads_back_equal(tmp_path):
    run = _run(tmp_path, "L3-f48-k4-s1")
    folder = export_run(run, tmp_path / "out", "sparsify")
    assert folder == tmp_path / "out" / "encoder.layer.2"  # BERT: layer 2's output
    cfg = json.loads((folder / "cfg.json").read_text())
    assert (cfg["num_latents"], cfg["k"], cfg["d_in"], cfg["activation"]) == (48, 4, 16, "topk")
    assert cfg["skip_connection"] is False and cfg["normalize_decoder"] is False
    src, back = load_sae(run), load_sae(folder)
    assert back.format == "sparsify"
    for name in ("decoder", "encoder", "b_enc", "b_dec"):
        assert torch.equal(getattr(back, name), getattr(src, name)), name


@pytest.mark.parametrize("model, hook, want", [
    ("minilm", "blocks.3.hook_resid_pre", "encoder.layer.2"),
    ("minilm", "blocks.3.hook_resid_post", "encoder.layer.3"),
    ("minilm", "blocks.0.hook_resid_pre", "embeddings"),  # BERT's embeddings output it
    ("gemma-270m", "blocks.6.hook_resid_pre", "layers.5"),
])
def test_hookpoints_follow_sparsify_s_module_outputs(model, hook, want):
    assert sparsify_hookpoint(model, hook) == want


@pytest.mark.parametrize("model, hook, match", [
    ("gemma-270m", "blocks.0.hook_resid_pre", "no module"),  # scaled embeddings: no module
    ("minilm", "blocks.3.attn.hook_z", "not a residual"),
    ("tiny", "blocks.1.hook_resid_pre", "not known here"),
])
def test_hookpoints_without_one_module_ask_for_one(model, hook, match):
    with pytest.raises(ConfigError, match=match):
        sparsify_hookpoint(model, hook)


def test_export_refuses_run_dirs_and_non_empty_folders_before_writing(tmp_path):
    runs = [_run(tmp_path / "runs", f"L3-f48-k4-s{s}", seed=s) for s in (1, 2)]
    with pytest.raises(OutputError, match="run directory"):
        export_run(runs[0], runs[1], "sae-lens")
    assert not (runs[1] / "cfg.json").exists()
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        export_runs(runs, out, "sae-lens")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    written = export_runs(runs, out, "sae-lens", force=True)
    assert [p.name for p in written] == ["L3-f48-k4-s1", "L3-f48-k4-s2"]
    bad = _run(tmp_path / "runs", "L0-f48-k4-s3", model="tiny", hook="blocks.0.hook_resid_pre")
    with pytest.raises(ConfigError, match="pass --hookpoint"):  # checked before any is written
        export_runs([runs[0], bad], tmp_path / "sp", "sparsify")
    assert not (tmp_path / "sp").exists()
    assert export_runs([bad], tmp_path / "sp2", "sparsify", hookpoint="embed")[0].name == "embed"


def test_the_cli_exports_a_sweep_s_runs_and_says_no_in_one_line(tmp_path):
    for s in (1, 2):
        _run(tmp_path / "sweep" / "runs", f"L3-f48-k4-s{s}", seed=s)
    cmd = [sys.executable, "-m", "saefast.cli.main", "export"]
    ok = subprocess.run(cmd + [str(tmp_path / "sweep"), "--format", "sae-lens", "--out",
                               str(tmp_path / "x")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["L3-f48-k4-s1", "L3-f48-k4-s2"]
    again = subprocess.run(cmd + [str(tmp_path / "sweep"), "--format", "sae-lens", "--out",
                                  str(tmp_path / "x")], capture_output=True, text=True)
    assert again.returncode != 0 and again.stderr.strip().count("\n") == 0
    assert "not empty" in again.stderr
