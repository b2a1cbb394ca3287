"""Training several seeds at once (saefast/train/trainer.py): a seed trained in a group equals
the seed trained alone, in memory or streamed from the store; same seed, same weights;
training recovers planted directions; NaN losses and inputs stop it; CUDA matches the CPU."""

import numpy as np
import pytest
import torch

from saefast.config import SAEConfig, TrainConfig
from saefast.data.store import StoreSource
from saefast.data.windows import TensorSource
from saefast.train.trainer import TrainingDiverged, train_sae, train_saes

from train_samples import SAE, acts, assert_same, cfg, weights


def planted_activations(n=2048, d=16, n_atoms=12, active=2, seed=0):
    """Sparse combinations of a few unit directions: an SAE can recover them."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.nn.functional.normalize(torch.randn(n_atoms, d, generator=g), dim=1)
    idx = torch.stack([torch.randperm(n_atoms, generator=g)[:active] for _ in range(n)])
    coef = torch.rand(n, active, generator=g) * 3 + 1
    return (coef.unsqueeze(-1) * atoms[idx]).sum(1) + 0.5, atoms  # [n, d]


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


@pytest.mark.parametrize("order", ["per_seed", "shared"])
def test_seeds_trained_together_equal_seeds_trained_alone(order):
    x = acts()
    together = train_saes(x[:600], x[600:], SAE, cfg(data_order=order), [1, 2, 3])
    for seed, result in zip([1, 2, 3], together):
        alone = train_sae(x[:600], x[600:], SAE, cfg(data_order=order, seed=seed))
        assert_same(weights(result), weights(alone))
        assert result.metrics["held_out"] == alone.metrics["held_out"]
    assert not torch.equal(together[0].sae.W_dec, together[1].sae.W_dec)


def test_streaming_from_the_memory_mapped_store_gives_the_same_weights(tmp_path):
    x = acts(n=1000)
    store = tmp_path / "store"
    store.mkdir()
    np.save(store / "shard-00000.npy", x[:450].numpy())
    np.save(store / "shard-00001.npy", x[450:].numpy())
    (store / "meta.json").write_text('{"d_model": 16, "n_tokens": 1000, "chunks_consumed": 9, "exhausted": false, "shards": ['
                                     '{"file": "shard-00000.npy", "n_tokens": 450},'
                                     '{"file": "shard-00001.npy", "n_tokens": 550}]}')
    src = StoreSource(store, 0, 1000)
    assert torch.equal(src.read(400, 600), x[400:600])
    from_store = train_saes(src, None, SAE, cfg(), [5])[0]
    in_memory = train_saes(TensorSource(x), None, SAE, cfg(), [5])[0]
    assert_same(weights(from_store), weights(in_memory))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_training_on_cuda_matches_cpu_closely():
    x = acts()
    on_cpu = train_saes(x, x[:100], SAE, cfg(), [1, 2])
    on_gpu = train_saes(x, x[:100], SAE, cfg(), [1, 2], device="cuda")
    for a, b in zip(on_cpu, on_gpu):
        assert b.sae.W_dec.device.type == "cuda"
        assert b.fire_counts.sum() == a.fire_counts.sum()
        # same math, different kernels: close over a short run, not bitwise
        assert torch.allclose(a.sae.W_dec, b.sae.W_dec.cpu(), atol=1e-3)
        assert abs(a.metrics["held_out"]["fvu"] - b.metrics["held_out"]["fvu"]) < 1e-3
