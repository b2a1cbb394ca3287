"""Training checkpoints (saefast/train/checkpoints.py): a torn checkpoint is skipped for the
previous good one, and a checkpoint written for another setup is never resumed from."""

import pytest

from saefast.train.trainer import train_saes

from train_samples import SAE, acts, assert_same, cfg, weights


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
