"""Other tools' SAE checkpoints (EleutherAI sparsify, dictionary_learning), written here the
way those tools write them, read by load_sae and matched by analyze like our run dirs."""

import json

import pytest
import torch
from safetensors.torch import save_file

from saefast import errors
from saefast.cli.main import main
from saefast.report.assemble import compute_sae_pair_alignment, compute_stability_report
from saefast.runs.artifacts import find_run_dirs, load_sae

from planted_runs import N_SHARED, make_run


def _planted(tmp_path, seed):
    """A decoder [F, d] with the planted shared features (from planted_runs)."""
    run, _ = make_run(tmp_path / f"src{seed}", "r", seed)
    return load_sae(run).decoder


def write_sparsify(folder, W_dec, *, k=4, cfg=None, skip=False):
    """What sparsify's save_to_disk writes: safetensors of the module's state + cfg.json."""
    folder.mkdir(parents=True)
    F, d = W_dec.shape
    tensors = {"encoder.weight": W_dec.clone(), "encoder.bias": torch.zeros(F),
               "W_dec": W_dec.clone(), "b_dec": torch.zeros(d)}
    if skip:
        tensors["W_skip"] = torch.zeros(d, d)
    save_file(tensors, str(folder / "sae.safetensors"))
    base = {"expansion_factor": 32, "normalize_decoder": True, "num_latents": F, "k": k,
            "multi_topk": False, "skip_connection": skip, "d_in": d}
    (folder / "cfg.json").write_text(json.dumps(cfg if cfg is not None else base))
    return folder


def write_dictionary_learning(folder, W_dec, *, k=4, plain=False, config=True):
    """What dictionary_learning's trainSAE writes: torch.save(ae.state_dict()) + config.json."""
    folder.mkdir(parents=True)
    F, d = W_dec.shape
    state = {"encoder.weight": W_dec.clone(), "encoder.bias": torch.zeros(F),
             "decoder.weight": W_dec.t().contiguous()}  # nn.Linear(F, d).weight: [d, F]
    if plain:
        state["bias"] = torch.zeros(d)
    else:
        state.update({"b_dec": torch.zeros(d), "k": torch.tensor(k, dtype=torch.int),
                      "threshold": torch.tensor(-1.0)})
    torch.save(state, folder / "ae.pt")
    if config:
        trainer = {"trainer_class": "StandardTrainer" if plain else "TopKTrainer",
                   "dict_class": "AutoEncoder" if plain else "AutoEncoderTopK",
                   "activation_dim": d, "dict_size": F, "lr": 1e-3, "layer": 3, "lm_name": "x"}
        if not plain:
            trainer["k"] = k
        (folder / "config.json").write_text(json.dumps({"trainer": trainer, "buffer": {"d_submodule": d}}))
    return folder


def test_sparsify_and_dictionary_learning_read_rows_as_features(tmp_path):
    W = _planted(tmp_path, 1)
    sp = load_sae(write_sparsify(tmp_path / "sp", W, k=6, skip=True))
    dl = load_sae(write_dictionary_learning(tmp_path / "dl", W, k=5))
    plain = load_sae(write_dictionary_learning(tmp_path / "plain", W, plain=True, config=False))
    assert (sp.format, dl.format, plain.format) == ("sparsify", "dictionary_learning", "dictionary_learning")
    for sae in (sp, dl, plain):
        assert torch.equal(sae.decoder, W) and sae.dead is None
        # the encoder too, rows are features (for encoder matching and codes)
        assert torch.equal(sae.encoder, W) and sae.b_enc.shape == (W.shape[0],)
        assert sae.b_dec.shape == (W.shape[1],)
    assert (sp.k, dl.k, plain.k) == (6, 5, None)
    # dictionary_learning's JumpReluAutoEncoder keeps W_dec [F, d] and W_enc [d, F]
    (tmp_path / "jr").mkdir()
    torch.save({"W_enc": W.t().contiguous(), "b_enc": torch.zeros(W.shape[0]), "W_dec": W.clone(),
                "b_dec": torch.zeros(W.shape[1]), "threshold": torch.zeros(W.shape[0])},
               tmp_path / "jr" / "ae.pt")
    jr = load_sae(tmp_path / "jr")
    assert torch.equal(jr.decoder, W) and torch.equal(jr.encoder, W)
    # num_latents 0: sparsify sizes the SAE as d_in * expansion_factor
    F, d = W.shape
    W2 = torch.randn(2 * d, d)
    cfg = {"num_latents": 0, "expansion_factor": 2, "k": 3, "d_in": d}
    assert load_sae(write_sparsify(tmp_path / "ef", W2, cfg=cfg)).n_features == 2 * d


def test_analyze_matches_other_tools_like_our_runs(tmp_path, capsys):
    W1, W2 = _planted(tmp_path, 1), _planted(tmp_path, 2)
    ours, _ = make_run(tmp_path / "ours", "ours", 3)
    sp = write_sparsify(tmp_path / "sp", W1)
    dl = write_dictionary_learning(tmp_path / "dl", W2)
    p_foreign = compute_sae_pair_alignment(sp, dl, baseline=False)
    p_ours = compute_sae_pair_alignment(make_run(tmp_path / "o1", "a", 1)[0],
                                     make_run(tmp_path / "o2", "b", 2)[0], baseline=False)
    assert p_foreign["all_cosines"] == pytest.approx(p_ours["all_cosines"], abs=1e-6)
    assert p_foreign["matched_count_above_threshold"] == N_SHARED
    rep = compute_stability_report([sp, dl, ours], baseline=False)
    assert [r["format"] for r in rep["summary"]["runs"]] == ["sparsify", "dictionary_learning", "saefast"]
    # a folder holding checkpoints stands for them, as for our run dirs
    assert find_run_dirs([tmp_path / "sp"]) == [sp]
    assert main(["analyze", str(sp), str(dl), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "stability.json").is_file()
    assert "sp" in capsys.readouterr().out


def _corrupt(tmp_path, what):
    W = torch.randn(16, 8)
    if what == "sparsify W_dec vs cfg":
        return write_sparsify(tmp_path / "x", W, cfg={"num_latents": 32, "d_in": 8, "k": 4})
    if what == "sparsify encoder shape":
        f = write_sparsify(tmp_path / "x", W)
        save_file({"encoder.weight": torch.zeros(16, 9), "W_dec": W}, str(f / "sae.safetensors"))
        return f
    if what == "sparsify no cfg":
        f = write_sparsify(tmp_path / "x", W)
        (f / "cfg.json").unlink()
        return f
    if what == "sparsify truncated":
        f = write_sparsify(tmp_path / "x", W)
        data = (f / "sae.safetensors").read_bytes()
        (f / "sae.safetensors").write_bytes(data[: len(data) // 2])
        return f
    if what == "ae.pt truncated":
        f = write_dictionary_learning(tmp_path / "x", W)
        data = (f / "ae.pt").read_bytes()
        (f / "ae.pt").write_bytes(data[: len(data) // 3])
        return f
    if what == "ae.pt not torch":
        f = tmp_path / "x"
        f.mkdir()
        (f / "ae.pt").write_text("hello")
        return f
    if what == "ae.pt wrong shape":
        f = write_dictionary_learning(tmp_path / "x", W)
        state = torch.load(f / "ae.pt", weights_only=True)
        state["decoder.weight"] = torch.zeros(8, 20)  # 20 features, config.json says 16
        torch.save(state, f / "ae.pt")
        return f
    if what == "ae.pt no decoder":
        f = tmp_path / "x"
        f.mkdir()
        torch.save({"weight": torch.zeros(3)}, f / "ae.pt")
        return f
    if what == "ae.pt pickled code":
        f = tmp_path / "x"
        f.mkdir()
        torch.save(torch.nn.Linear(2, 2), f / "ae.pt")  # a whole module: weights_only refuses
        return f
    if what == "nothing":
        f = tmp_path / "x"
        f.mkdir()
        (f / "notes.txt").write_text("hi")
        return f
    raise AssertionError(what)


@pytest.mark.parametrize("what, message", [
    ("sparsify W_dec vs cfg", r"W_dec is \[16, 8\], but cfg.json says \[num_latents, d_in\] = \[32, 8\]"),
    ("sparsify encoder shape", r"encoder.weight is \[16, 9\]"),
    ("sparsify no cfg", "sae.safetensors without cfg.json"),
    ("sparsify truncated", "corrupt or unreadable safetensors"),
    ("ae.pt truncated", "ae.pt: corrupt or not a torch state dict"),
    ("ae.pt not torch", "ae.pt: corrupt or not a torch state dict"),
    ("ae.pt wrong shape", "holds 20 features of dimension 8, but config.json says dict_size=16"),
    ("ae.pt no decoder", "no decoder.weight or W_dec"),
    ("ae.pt pickled code", "ae.pt: corrupt or not a torch state dict"),
    ("nothing", r"no other SAE checkpoint; expected sae_weights.safetensors .*sae.safetensors \+ "
                r"cfg.json \(EleutherAI sparsify\) or ae.pt"),
])
def test_broken_checkpoints_give_one_line(tmp_path, capsys, what, message):
    folder = _corrupt(tmp_path, what)
    with pytest.raises(errors.RunDirError, match=message) as err:
        load_sae(folder)
    assert "\n" not in str(err.value) and str(folder) in str(err.value)
    other = write_sparsify(tmp_path / "ok", torch.randn(16, 8))
    assert main(["analyze", str(folder), str(other), "--out", str(tmp_path / "rep")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
