"""How a trained SAE is judged (saefast/train/evaluation.py): firing counts, dead latents,
feature records, decoder drift, the held-out FVU trace and its convergence flag."""

import pytest
import torch

from saefast.config import SAEConfig, TrainConfig
from saefast.train.sae import TopKSAE
from saefast.train.trainer import convergence, decoder_drift, evaluate, feature_records, train_saes

from train_samples import gaussian_acts


def test_evaluate_counts_fires_and_dead():
    sae = TopKSAE(4, 6, 1, seed=0)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_enc[2, 0] = 1.0  # only feature 2 can be positive
        sae.b_dec.zero_()
    acts = torch.zeros(10, 4)
    acts[:, 0] = 1.0
    out = evaluate(sae, acts)
    assert out["fire_counts"].tolist() == [0, 0, 10, 0, 0, 0]
    assert out["dead_fraction"] == pytest.approx(5 / 6)
    recs = feature_records(out["fire_counts"], 10)
    assert recs[2] == {"feature_index": 2, "dead": False, "fire_count": 10, "fire_rate": 1.0}
    assert recs[0]["dead"]


def test_decoder_drift_of_identical_is_one():
    W = torch.randn(5, 3)
    assert decoder_drift(W, 2 * W)["mean_cosine_to_init"] == pytest.approx(1.0)
    assert decoder_drift(W, -W)["mean_cosine_to_init"] == pytest.approx(-1.0)


def test_convergence_traces_held_out_fvu_and_flags_a_plateau():
    x = gaussian_acts(4000)
    (r,) = train_saes(x[:3600], x[3600:], SAEConfig(32, 4), TrainConfig(batch_size=64, epochs=4), [1])
    conv = r.metrics["convergence"]
    assert [t["step"] for t in conv["held_out_fvu"]] == [114, 171, 228]
    assert conv["held_out_fvu"][-1]["fvu"] == pytest.approx(r.metrics["held_out"]["fvu"])
    assert isinstance(conv["converged"], bool)
    flat = convergence([{"step": 1, "fvu": 0.5}, {"step": 2, "fvu": 0.3}, {"step": 3, "fvu": 0.299}])
    steep = convergence([{"step": 1, "fvu": 0.5}, {"step": 2, "fvu": 0.4}, {"step": 3, "fvu": 0.3}])
    assert flat["converged"] is True and steep["converged"] is False
    assert convergence([{"step": 3, "fvu": 0.3}])["converged"] is None
