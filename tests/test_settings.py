"""What a training call derives from its config (saefast/train/settings.py): the auto lr and
aux_k, the lr schedule, and the steps and passes of the window schedule (fixed steps are the
same for every budget; steps=0 keeps the epochs)."""

import pytest

from saefast.config import RunConfig, SAEConfig, TrainConfig, apply_overrides
from saefast.sweep.plan import token_steps
from saefast.train.trainer import train_saes

from train_samples import gaussian_acts


def test_lr_schedule_and_auto_lr():
    from saefast.train.trainer import lr_factor, resolve_aux_k, resolve_lr

    assert resolve_lr(TrainConfig(lr=0.0), 16384) == pytest.approx(2e-4)
    assert resolve_lr(TrainConfig(lr=0.0), 4096) == pytest.approx(4e-4)
    assert resolve_aux_k(TrainConfig(), 768, 16384) == 512
    assert resolve_aux_k(TrainConfig(), 384, 100) == 100
    factors = [lr_factor(s, 100, 0.1, 0.2) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == 1.0 and factors[50] == 1.0
    assert factors[-1] == pytest.approx(1 / 20) and factors[80] == 1.0


@pytest.mark.parametrize("n", [300, 3000])
def test_fixed_steps_are_the_same_for_every_budget(n):
    cfg = TrainConfig(steps=30, batch_size=64, epochs=8)
    (r,) = train_saes(gaussian_acts(n), None, SAEConfig(32, 4), cfg, [1])
    assert r.metrics["steps"] == 30 and r.history[-1]["step"] == 30
    # 300 tokens: 5 steps a pass -> 6 passes; 3000: 47 a pass -> one pass, cut short
    assert r.metrics["epochs"] == (6 if n == 300 else 1)
    cfg8 = apply_overrides(RunConfig(), {"train.steps": 30, "train.batch_size": 64})
    assert token_steps(cfg8) == 30 * 64


def test_steps_zero_keeps_epochs():
    (r,) = train_saes(gaussian_acts(640), None, SAEConfig(32, 4), TrainConfig(batch_size=64, epochs=3), [1])
    assert r.metrics["steps"] == 30 and r.metrics["epochs"] == 3
