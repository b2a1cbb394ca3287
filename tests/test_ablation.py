"""saefast.stats.ablation on the tiny random causal LM: splice loss against a direct computation,
the attribution estimate against exact removals, and matched-pair effect correlations."""

import numpy as np
import pytest
import torch

from saefast.data.models import load_model
from saefast.runs.artifacts import LoadedSAE
from saefast.stats import ablation as ab

HOOK = "blocks.1.hook_resid_pre"


_SAE = LoadedSAE.in_memory


@pytest.fixture(scope="module")
def lm():
    model, info = load_model("tiny")
    return model, info["d_model"]


@pytest.fixture(scope="module")
def ids():
    g = torch.Generator().manual_seed(0)
    out = torch.randint(3, 259, (4, 24), generator=g)
    out[:, 0] = 1  # BOS
    return out


def signed_basis(d):
    """[2d, d] +e_i and -e_i, k = d: relu keeps each coordinate's sign, so it reconstructs x
    exactly (a lossless 'SAE' whose features are the coordinates)."""
    eye = torch.eye(d)
    return _SAE(torch.cat([eye, -eye]), torch.cat([eye, -eye]), d)


def test_a_lossless_sae_splices_at_the_clean_loss(lm, ids):
    model, d = lm
    got = ab.splice(model, HOOK, signed_basis(d), ids)
    assert got["spliced"] == pytest.approx(got["clean"], abs=1e-4)
    assert got["fraction_recovered"] == pytest.approx(1.0, abs=1e-3)
    # zeroing the residual stream of this random model leaves uniform-ish logits: ln(1000)
    assert got["zero"] == pytest.approx(np.log(1000), abs=0.05)


def test_splice_loss_equals_a_direct_reconstruction(lm, ids):
    model, d = lm
    g = torch.Generator().manual_seed(1)
    dec = torch.randn(48, d, generator=g)
    dec /= dec.norm(dim=1, keepdim=True)
    sae = _SAE(torch.randn(48, d, generator=g), dec, 6, b_dec=0.1 * torch.randn(d, generator=g))

    def direct(act, hook=None):  # dense Top-K, no saefast ops
        pre = torch.relu((act - sae.b_dec) @ sae.encoder.T + sae.b_enc)  # [b, L, F]
        v, i = pre.topk(sae.k, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, i, v)
        return z @ sae.decoder + sae.b_dec

    with torch.no_grad():
        want = model.run_with_hooks(ids, return_type="loss", fwd_hooks=[(HOOK, direct)])
    got = ab.splice(model, HOOK, sae, ids)
    assert got["spliced"] == pytest.approx(float(want), rel=1e-4)
    with torch.no_grad():
        assert got["clean"] == pytest.approx(float(model(ids, return_type="loss")), rel=1e-5)


def test_attribution_agrees_with_exact_removal(lm, ids):
    model, d = lm
    sae = signed_basis(d)
    x, g = ab.hook_gradient(model, HOOK, ids)
    eff, idx = ab.feature_effects(sae, x, g)
    # the attribution of a feature at a token is -a (d . g): check one entry by hand
    t, j = 5, 0
    f = int(idx.reshape(-1, sae.k)[t, j])
    xa = x.reshape(-1, d)[t]
    a = float(xa[f] if f < d else -xa[f - d])
    want = -a * float(sae.decoder[f] @ g.reshape(-1, d)[t])
    assert float(eff[t, j]) == pytest.approx(want, rel=1e-5, abs=1e-7)
    check = ab.attribution_check(model, HOOK, sae, ids, eff, idx, n_sample=12)
    assert len(check["features"]) == 12
    assert check["pearson_r"] > 0.9  # removing one coordinate is a small, near-linear change


def test_the_same_feature_has_the_same_effects(lm, ids):
    model, d = lm
    a = signed_basis(d)
    perm = torch.randperm(2 * d, generator=torch.Generator().manual_seed(3))
    b = _SAE(a.encoder[perm], a.decoder[perm], d)  # B = A with its features renumbered
    x, g = ab.hook_gradient(model, HOOK, ids)
    ea, ia = ab.feature_effects(a, x, g)
    eb, ib = ab.feature_effects(b, x, g)
    inv = torch.argsort(perm).numpy()  # A's feature f is B's inv[f]
    feats = np.arange(2 * d)
    r = ab.pair_effect_correlations(ea, ia, eb, ib, 2 * d, 2 * d, feats, inv[feats])
    active = r != 0
    assert active.sum() > d // 2 and np.allclose(r[active], 1.0, atol=1e-6)
    shuffled = ab.pair_effect_correlations(ea, ia, eb, ib, 2 * d, 2 * d, feats,
                                           np.roll(inv[feats], 1))
    assert np.median(np.abs(shuffled)) < 0.5


def test_an_encoder_model_without_a_loss_is_refused_in_one_line():
    class NoLoss:
        def run_with_hooks(self, *a, **k):
            raise TypeError("return_type 'loss' needs an unembedding")
    with pytest.raises(ab.ModelError, match="causal language model"):
        ab.splice(NoLoss(), HOOK, signed_basis(4), torch.ones(1, 3, dtype=torch.long))


def test_analyze_measures_ablation_on_the_runs_model(tmp_path, capsys):
    """`saefast analyze --ablation-tokens` on a tiny-model sweep: a splice per run, an effect
    correlation per matched pair, the attribution check, and one line in the output."""
    import json
    from pydoc_data.topics import topics

    from saefast.cli.main import main

    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n\n".join(topics[k] for k in sorted(topics)[:40]))
    assert main(["sweep", "--model", "tiny", "--hook", HOOK, "--corpus", str(corpus),
                 "--tokens", "800", "--features", "16", "--k", "2", "--epochs", "2",
                 "--seeds", "3", "--out", str(tmp_path / "out"), "--cache-dir",
                 str(tmp_path / "cache")]) == 0
    runs = sorted(p for p in (tmp_path / "out" / "runs").iterdir() if not p.name.startswith("."))
    capsys.readouterr()
    assert main(["analyze", *map(str, runs), "--out", str(tmp_path / "a"),
                 "--ablation-tokens", "200"]) == 0
    out = capsys.readouterr().out
    assert "ablation on" in out and "(90%, Fisher z)" in out  # the check's r with its interval
    rep = json.loads((tmp_path / "a" / "stability.json").read_text())
    abl = rep["summary"]["ablation"]
    assert abl["model"] == "tiny" and abl["hook"] == HOOK and abl["tokens"] >= 200
    assert len(abl["splice"]) == 3 and all(x["spliced"] > 0 for x in abl["splice"])
    for p in rep["pairs"]:
        r = p["ablation"]["effect_r"]
        assert len(r) == p["n_matched_pairs"] and all(-1 <= x <= 1 for x in r)
    chk = abl["attribution_check"]  # 71 asked, every one of the 16 features that fire used
    assert chk["n_asked"] == ab.check_size() and chk["n"] == len(chk["features"]) == 16
    assert chk["ci"][0] < chk["pearson_r"] < chk["ci"][1]
    agree = rep["summary"]["equivalence"]["agreement"]
    assert {"decoder~encoder"} <= set(agree)  # no --acts: no activation view
    if chk["holds"]:
        assert {"decoder~effect", "encoder~effect"} <= set(agree) and abl["exact_pairs"] is None
        from scipy.stats import spearmanr
        want = np.mean([spearmanr(p["all_cosines"], p["ablation"]["effect_r"])[0]
                        for p in rep["pairs"]])
        assert agree["decoder~effect"]["estimate"] == pytest.approx(want)
    else:  # the effects are not trusted: measured exactly, out of the agreement
        assert abl["exact_pairs"]["n"] > 0 and "decoder~effect" not in agree
    rc = main(["analyze", *map(str, runs), "--out", str(tmp_path / "b"), "--ablation-tokens",
               "100", "--hook", "blocks.9.hook_resid_pre"])
    assert rc == 2 and "hook" in capsys.readouterr().err


def test_a_bidirectional_model_is_refused_before_anything_runs():
    """MiniLM loads as a masked LM with logits: its next-token loss would be computed, and
    would mean nothing. The model's attention direction decides."""
    class Masked:
        cfg = type("Cfg", (), {"attention_dir": "bidirectional"})()
    with pytest.raises(ab.ModelError, match="bidirectional"):
        ab.require_causal(Masked(), "minilm")
    ab.require_causal(load_model("tiny")[0], "tiny")  # causal: accepted


def test_a_bidirectional_model_gets_the_output_splice_instead(lm, ids, monkeypatch):
    """An encoder model has no loss: the block reports how far the pooled last-layer output
    moves when spliced (0 for a lossless SAE) and skips the per-feature effects, saying why."""
    model, d = lm
    exact = ab.splice_output(model, HOOK, signed_basis(d), ids)
    assert exact["relative_change"] == pytest.approx(0, abs=1e-4)
    assert exact["fraction_recovered"] == pytest.approx(1, abs=1e-4)
    assert exact["zero_relative_change"] > 0.1
    import saefast.data.models as M

    monkeypatch.setattr(model.cfg, "attention_dir", "bidirectional")
    monkeypatch.setattr(M, "load_model", lambda name, **k: (model, {
        "hook_names": sorted(model.hook_dict), "n_ctx": 128, "name": "tiny"}))
    sae = signed_basis(d)
    sae.name = "lossless"
    block = ab.ablation_block([sae], [], model="tiny", hook=HOOK, corpus="python-docs",
                              n_tokens=64, context_length=32)
    assert block["splice_output"][0]["relative_change"] == pytest.approx(0, abs=1e-4)
    assert "bidirectional" in block["skipped"][0]


def test_the_attribution_checks_interval_exists_and_narrows_with_more_features(lm, ids):
    """The check's r has a Fisher-z interval; more features, a narrower one; the default size
    gives a half-width <= 0.15 at r = 0.5 (90 %); a spent budget stops at MIN_CHECK."""
    from saefast.stats import fisher

    model, d = lm
    g = torch.Generator().manual_seed(1)  # a random SAE: r ~ 0.7, where n matters
    dec = torch.randn(48, d, generator=g)
    sae = _SAE(torch.randn(48, d, generator=g), dec / dec.norm(dim=1, keepdim=True), 6)
    x, g = ab.hook_gradient(model, HOOK, ids)
    eff, idx = ab.feature_effects(sae, x, g)
    few = ab.attribution_check(model, HOOK, sae, ids, eff, idx, n_sample=12)
    many = ab.attribution_check(model, HOOK, sae, ids, eff, idx, n_sample=44)
    assert few["n"] == 12 and many["n"] == 44
    assert many["ci"][1] - many["ci"][0] < 0.75 * (few["ci"][1] - few["ci"][0])
    z = np.arctanh(many["pearson_r"])  # the interval is Fisher's, by hand
    h = 1.6448536269514722 / np.sqrt(44 - 3)
    assert many["ci"] == pytest.approx([np.tanh(z - h), np.tanh(z + h)])
    assert many["pearson_r"] == pytest.approx(np.corrcoef(many["attribution"], many["exact"])[0, 1])
    n = ab.check_size()
    assert n == 71
    at = fisher.fisher_interval(*np.random.default_rng(0).multivariate_normal(
        [0, 0], [[1, .5], [.5, 1]], 20000).T[:, :n])  # ~r = 0.5 at the default size
    assert (at["ci"][1] - at["ci"][0]) / 2 <= 0.15 + 0.02
    spent = ab.attribution_check(model, HOOK, sae, ids, eff, idx, n_sample=40, budget_s=0)
    assert spent["n"] == ab.MIN_CHECK and spent["n_asked"] == 40


def test_where_the_attribution_fails_matched_effects_come_from_exact_removals(lm, monkeypatch):
    """An attribution that is noise (the linear estimate replaced by random numbers): the
    check's r is low, so the per-token effects are marked untrusted (out of the agreement)
    and matched features are removed exactly: B is A renumbered, so their exact effects
    agree (r = 1)."""
    import saefast.data.models as M
    from saefast.stats.agreement import agreement

    model, d = lm
    monkeypatch.setattr(M, "load_model", lambda name, **k: (model, {
        "hook_names": sorted(model.hook_dict), "n_ctx": 128, "name": "tiny"}))
    g = torch.Generator().manual_seed(1)
    dec = torch.randn(48, d, generator=g)
    a = _SAE(torch.randn(48, d, generator=g), dec / dec.norm(dim=1, keepdim=True), 6)
    real = ab.feature_effects
    noise = torch.Generator().manual_seed(5)
    monkeypatch.setattr(ab, "feature_effects", lambda *args: (
        lambda e, i: (torch.randn(e.shape, generator=noise), i))(*real(*args)))
    perm = torch.randperm(48, generator=torch.Generator().manual_seed(2))
    b = _SAE(a.encoder[perm], a.decoder[perm], 6)
    inv = torch.argsort(perm).numpy()
    pairs = [{"index_a": 0, "index_b": 1, "a_indices": list(range(48)),
              "b_indices": inv.tolist(), "all_cosines": [1.0] * 48}]
    block = ab.ablation_block([a, b], pairs, model="tiny", hook=HOOK, corpus="python-docs",
                              n_tokens=64, context_length=32, n_check=30)
    chk = block["attribution_check"]
    assert not chk["holds"] and not block["effects_trusted"]
    assert chk["reason"] in block["untrusted_reason"]
    ex = block["exact_pairs"]
    assert ex["n"] == 30 and ex["pearson_r"] == pytest.approx(1.0)
    (p,) = ex["pairs"]
    assert p["exact_a"] == pytest.approx(p["exact_b"], rel=1e-5, abs=1e-6)
    assert pairs[0]["ablation"]["trusted"] is False
    assert not any("effect" in k for k in agreement(pairs, 2))
