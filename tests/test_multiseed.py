"""Many SAEs in one pass: stacked equals separate, AuxK, checkpoints and resume, streaming."""


import numpy as np
import pytest
import torch

from saefast.config import SAEConfig, TrainConfig
from saefast.data.store import StoreSource
from saefast.data.windows import TensorSource, WindowSchedule
from saefast.train.memory import MemoryBudgetError, parse_bytes, seeds_per_pass
from saefast.train.trainer import TrainingDiverged, train_sae, train_saes

SAE = SAEConfig(n_features=32, k=4)


def acts(n=700, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    atoms = torch.nn.functional.normalize(torch.randn(48, d, generator=g), dim=1)
    idx = torch.randint(0, 48, (n, 3), generator=g)
    return (torch.rand(n, 3, generator=g)[..., None] * atoms[idx]).sum(1) + 0.1 * torch.randn(n, d, generator=g)


def cfg(**kw):
    base = dict(epochs=3, batch_size=32, lr=3e-3, shuffle_buffer=200, checkpoint_every=150)
    return TrainConfig(**{**base, **kw})


def weights(result):
    return {k: v.detach().clone() for k, v in result.sae.state_dict().items()}


def assert_same(a, b):
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("order", ["per_seed", "shared"])
def test_seeds_trained_together_equal_seeds_trained_alone(order):
    x = acts()
    together = train_saes(x[:600], x[600:], SAE, cfg(data_order=order), [1, 2, 3])
    for seed, result in zip([1, 2, 3], together):
        alone = train_sae(x[:600], x[600:], SAE, cfg(data_order=order, seed=seed))
        assert_same(weights(result), weights(alone))
        assert result.metrics["held_out"] == alone.metrics["held_out"]
    assert not torch.equal(together[0].sae.W_dec, together[1].sae.W_dec)


def test_data_order_per_seed_or_shared():
    per_seed = WindowSchedule(1000, 300, 2, 0, [1, 2], per_seed=True)
    shared = WindowSchedule(1000, 300, 2, 0, [1, 2], per_seed=False)
    a, b = per_seed.token_orders(0, 1, 300)
    assert not torch.equal(a, b)
    c, d = shared.token_orders(0, 1, 300)
    assert torch.equal(c, d)
    # windows are visited in the same (shuffled) order by both: one read feeds all seeds
    assert per_seed.window_order(1) == shared.window_order(1)
    assert sorted(per_seed.window_order(0)) == [0, 1, 2, 3]


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


def test_resume_after_a_kill_gives_identical_weights(tmp_path):
    x = acts()
    uninterrupted = train_saes(x, None, SAE, cfg(), [1, 2])
    ckpt = tmp_path / "ckpt"
    assert train_saes(x, None, SAE, cfg(), [1, 2], checkpoint_dir=ckpt, stop_after_steps=40) == []
    assert len(list(ckpt.glob("ckpt-*.pt"))) >= 1
    resumed = train_saes(x, None, SAE, cfg(), [1, 2], checkpoint_dir=ckpt)
    for a, b in zip(uninterrupted, resumed):
        assert_same(weights(a), weights(b))


def test_a_corrupt_checkpoint_is_skipped_for_the_previous_good_one(tmp_path):
    x = acts()
    uninterrupted = train_saes(x, None, SAE, cfg(), [3])
    ckpt = tmp_path / "ckpt"
    train_saes(x, None, SAE, cfg(), [3], checkpoint_dir=ckpt, stop_after_steps=55)
    saved = sorted(ckpt.glob("ckpt-*.pt"))
    assert len(saved) == 2
    saved[-1].write_bytes(saved[-1].read_bytes()[:100])  # torn by a kill mid-write
    with pytest.warns(UserWarning, match="skipping checkpoint .*torn or corrupt"):
        resumed = train_saes(x, None, SAE, cfg(), [3], checkpoint_dir=ckpt)
    assert_same(weights(uninterrupted[0]), weights(resumed[0]))


def test_a_checkpoint_of_another_setup_is_not_used(tmp_path):
    x = acts()
    ckpt = tmp_path / "ckpt"
    train_saes(x, None, SAE, cfg(), [1], checkpoint_dir=ckpt, stop_after_steps=40)
    with pytest.warns(UserWarning, match="different training setup"):
        other = train_saes(x, None, SAE, cfg(lr=1e-3), [1], checkpoint_dir=ckpt)
    fresh = train_saes(x, None, SAE, cfg(lr=1e-3), [1])
    assert_same(weights(other[0]), weights(fresh[0]))


def test_auxk_revives_dead_latents():
    # 24 planted directions, k=1, 64 latents: from a random init some directions have no
    # latent of their own (their tokens go to a neighbour's latent, which stays busy). AuxK
    # trains dead latents on the residual, so more directions get a latent of their own.
    # Exact trajectories differ across machines (BLAS, threads): compare over three seeds.
    g = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(24, 32, generator=g), dim=1)
    which = torch.randint(0, 24, (4000,), generator=g)
    x = (torch.rand(4000, 1, generator=g) + 1) * dirs[which] + 0.01 * torch.randn(4000, 32, generator=g)
    common = dict(epochs=8, batch_size=100, lr=5e-3, warmup_fraction=0.0, decay_fraction=0.0,
                  dead_window=400, aux_k=1, b_dec_init="zeros")
    sae, seeds = SAEConfig(n_features=64, k=1), [1, 2, 6]
    without = train_saes(x, None, sae, TrainConfig(aux_coef=0.0, **common), seeds)
    with_aux = train_saes(x, None, sae, TrainConfig(aux_coef=1 / 32, **common), seeds)
    live = [[int((r.fire_counts > 0).sum()) for r in rs] for rs in (without, with_aux)]
    fvu = [sum(r.metrics["train"]["fvu"] for r in rs) / 3 for rs in (without, with_aux)]
    assert all(w >= wo for wo, w in zip(*live)), live
    assert sum(live[1]) >= sum(live[0]) + 4, live
    assert max(live[0]) < 24 and fvu[1] < fvu[0] / 2, (live, fvu)


def test_one_diverging_seed_does_not_stop_the_others(monkeypatch):
    from saefast.train import step  # the host path's loss, which train_saes calls from there

    real, seen, calls = step.seed_loss, [], {}

    def second_seed_diverges_at_step_4(sae, x, *args):
        if not any(s is sae for s in seen):
            seen.append(sae)
        i = next(j for j, s in enumerate(seen) if s is sae)
        calls[i] = calls.get(i, 0) + 1
        loss, n_dead = real(sae, x, *args)
        return (loss * float("nan"), n_dead) if i == 1 and calls[i] == 5 else (loss, n_dead)

    x = acts()
    monkeypatch.setattr(step, "seed_loss", second_seed_diverges_at_step_4)
    first, second = train_saes(x, None, SAE, cfg(), [1, 2])
    monkeypatch.setattr(step, "seed_loss", real)
    assert isinstance(second, TrainingDiverged) and second.step == 4
    assert_same(weights(first), weights(train_sae(x, None, SAE, cfg(seed=1))))


def test_lr_schedule_and_auto_lr():
    from saefast.train.trainer import lr_factor, resolve_aux_k, resolve_lr

    assert resolve_lr(TrainConfig(lr=0.0), 16384) == pytest.approx(2e-4)
    assert resolve_lr(TrainConfig(lr=0.0), 4096) == pytest.approx(4e-4)
    assert resolve_aux_k(TrainConfig(), 768, 16384) == 512
    assert resolve_aux_k(TrainConfig(), 384, 100) == 100
    factors = [lr_factor(s, 100, 0.1, 0.2) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == 1.0 and factors[50] == 1.0
    assert factors[-1] == pytest.approx(1 / 20) and factors[80] == 1.0


def test_memory_splits_seeds_into_passes_and_refuses_one_seed_too_big():
    gib = 2**30
    assert seeds_per_pass(20, 16384, 768, 2048, 262144, 0, 64 * gib) == 20
    few = seeds_per_pass(20, 16384, 768, 2048, 262144, 0, 6 * gib)
    assert 1 <= few < 20
    with pytest.raises(MemoryBudgetError, match="one SAE with 131,072 features"):
        seeds_per_pass(20, 131072, 4096, 2048, 262144, 0, 8 * gib)
    assert parse_bytes("8G") == 8 * gib and parse_bytes("512M") == 512 * 2**20


def test_sweep_splits_a_group_that_does_not_fit(monkeypatch):
    from saefast.sweep import experiment, plan
    from saefast.train import memory

    runs = experiment.expand(experiment.Experiment(), axes=[("train.seed", [1, 2, 3, 4, 5])],
                             overrides={"sae.n_features": 4096, "data.tokens": 2000})
    one = memory.per_seed_bytes(4096, 384, 256)
    passes = plan.seed_passes(runs, {runs[0].group: 384}, memory_budget=int(2.5 * one) + 4 * 384 * 8000)
    assert [len(p) for p in passes] == [2, 2, 1]


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


def test_progress_reports_loss_and_dead_fraction_per_seed():
    from saefast.cli.tables import step_info

    x = acts()
    seen = []
    train_saes(x[:600], None, SAE, cfg(epochs=1), [3, 5, 7], on_step=lambda *a: seen.append(a[2]))
    assert len(seen) == 3 * -(-200 // 32)  # three windows of 200 tokens, 7 steps each
    last = seen[-1]
    assert sorted(last["per_seed"]) == [3, 5, 7]
    assert all(0 <= v["dead"] <= 1 and v["loss"] > 0 for v in last["per_seed"].values())
    assert last["loss"] == pytest.approx(sum(v["loss"] for v in last["per_seed"].values()) / 3)
    assert "s3 " in step_info(last) and "s7 " in step_info(last) and "tok/s" in step_info(last)
    many = {**last, "per_seed": {s: {"loss": 1.0 + s, "dead": s / 100} for s in range(1, 9)}}
    assert "(2-9)" in step_info(many) and "(1%-8%) over seeds" in step_info(many)


def test_a_tiny_budget_is_said_in_units_that_show_it():
    with pytest.raises(MemoryBudgetError, match=r"needs ~\d+\.\d MiB but the budget is 1\.0 KiB"):
        seeds_per_pass(2, 128, 384, 256, 1000, 0, budget=1024)


def test_the_memory_estimate_uses_the_reference_kernels_tile():
    """memory.py stays torch-free, so it names the reference's tile width instead of importing it."""
    from saefast.ops import reference
    from saefast.train import memory

    assert memory.REFERENCE_TILE_F == reference.TILE_F
