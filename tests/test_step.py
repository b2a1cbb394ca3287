"""One step of all seeds (saefast/train/step.py): AuxK revives dead latents, and a seed whose
loss goes NaN stops at its step while the others train on unchanged (the host path; the
sync-free path's twin is in test_sync_free.py)."""

import torch

from saefast.config import SAEConfig, TrainConfig
from saefast.train.trainer import TrainingDiverged, train_sae, train_saes

from train_samples import SAE, acts, assert_same, cfg, weights


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
