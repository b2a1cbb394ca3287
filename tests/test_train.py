import pytest
import torch

from saefast.config import SAEConfig, TrainConfig
from saefast.train.sae import TopKSAE
from saefast.train.trainer import (
    TrainingDiverged,
    decoder_drift,
    evaluate,
    feature_records,
    train_sae,
)


def planted_activations(n=2048, d=16, n_atoms=12, active=2, seed=0):
    """Sparse combinations of a few unit directions: an SAE can recover them."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.nn.functional.normalize(torch.randn(n_atoms, d, generator=g), dim=1)
    idx = torch.stack([torch.randperm(n_atoms, generator=g)[:active] for _ in range(n)])
    coef = torch.rand(n, active, generator=g) * 3 + 1
    return (coef.unsqueeze(-1) * atoms[idx]).sum(1) + 0.5, atoms  # [n, d]


def test_sae_forward_shapes_and_unit_decoder():
    sae = TopKSAE(16, 32, 4, seed=0)
    x_hat, values, indices = sae(torch.randn(5, 16))
    assert x_hat.shape == (5, 16) and values.shape == indices.shape == (5, 4)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(32))
    assert (values >= 0).all() and (values[:, :-1] >= values[:, 1:]).all()


def test_k_larger_than_features_is_rejected():
    with pytest.raises(ValueError, match="k must be between 1 and n_features=8"):
        TopKSAE(4, 8, 9)


def test_same_seed_same_weights_and_different_seed_differs():
    acts, _ = planted_activations(n=512)
    cfg = TrainConfig(seed=3, epochs=2, batch_size=64)
    a = train_sae(acts, None, SAEConfig(24, 2), cfg)
    b = train_sae(acts, None, SAEConfig(24, 2), cfg)
    c = train_sae(acts, None, SAEConfig(24, 2), TrainConfig(seed=4, epochs=2, batch_size=64))
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(a.sae, name), getattr(b.sae, name))
    assert not torch.equal(a.sae.W_dec, c.sae.W_dec)


def test_training_reduces_error_and_recovers_planted_directions():
    acts, atoms = planted_activations(n=2048 + 256)
    acts, held = acts[:2048], acts[2048:]
    res = train_sae(acts, held, SAEConfig(24, 2), TrainConfig(seed=1, epochs=30, batch_size=128, lr=3e-3))
    m = res.metrics
    assert m["held_out"]["fvu"] < 0.2 and m["train"]["fvu"] < 0.2
    assert 0 < m["train"]["l0"] <= 2
    assert torch.allclose(res.sae.W_dec.norm(dim=1), torch.ones(24), atol=1e-5)
    # every planted direction has a decoder row close to it
    cos = atoms @ torch.nn.functional.normalize(res.sae.W_dec.detach(), dim=1).T
    assert (cos.max(dim=1).values > 0.9).float().mean() >= 0.8
    # and training moved the decoder away from its random init
    assert m["decoder_drift"]["mean_cosine_to_init"] < 0.9
    assert res.fire_counts.sum() == pytest.approx(m["train"]["l0"] * len(acts))


def test_barely_trained_sae_stays_at_init():
    acts, _ = planted_activations(n=64)
    res = train_sae(acts, None, SAEConfig(64, 2), TrainConfig(seed=1, epochs=1, batch_size=64, lr=1e-4))
    assert res.metrics["decoder_drift"]["mean_cosine_to_init"] > 0.99


def test_nan_loss_stops_with_the_step():
    acts, _ = planted_activations(n=256)
    with pytest.raises(TrainingDiverged, match="at step"):
        train_sae(acts, None, SAEConfig(24, 2), TrainConfig(epochs=50, batch_size=64, lr=1e30, optimizer="sgd"))


def test_nan_inputs_are_rejected():
    acts, _ = planted_activations(n=64)
    acts[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        train_sae(acts, None, SAEConfig(8, 2), TrainConfig(epochs=1))


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
