"""Training progress (saefast/train/progress.py): what on_step receives per seed and over
seeds, as the terminal shows it, and where a non-finite loss stops a seed."""

import pytest

from saefast.train.progress import Progress, TrainingDiverged
from saefast.train.trainer import train_saes

from train_samples import SAE, acts, cfg


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


def test_a_non_finite_loss_stops_its_seed_at_the_step_it_was_computed_in():
    progress = Progress([7, 9], n_features=4, total=10, log_every=5, on_step=None)
    assert progress.log_loss(0, 5, 1.5) and progress.log_loss(1, 5, 2.0)
    assert not progress.log_loss(1, 6, float("inf"))
    assert isinstance(progress.failed[1], TrainingDiverged) and progress.failed[1].step == 5
    assert progress.live() == [0]
    assert progress.histories == [[{"step": 5, "loss": 1.5}], [{"step": 5, "loss": 2.0}]]
    seen = []
    progress.on_step = lambda *a: seen.append(a)
    progress.report(10, {0: 1.0}, {0: 1})
    assert seen[0][:2] == (10, 10) and seen[0][2]["per_seed"] == {7: {"loss": 1.0, "dead": 0.25}}
    assert seen[0][2]["loss"] == 1.0 and seen[0][2]["dead"] == pytest.approx(0.25)
