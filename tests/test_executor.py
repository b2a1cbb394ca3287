"""sweep/executor.py: the seam between a sweep and what trains its runs. Both executors
implement `Executor`; the steps they share (skipping finished runs, naming a pass) behave
the same for both."""

from pathlib import Path

import pytest

from saefast.sweep.events import Events
from saefast.sweep.executor import Executor, pass_label, skip_finished
from saefast.sweep.experiment import Experiment, expand
from saefast.sweep.local import LocalExecutor
from saefast.sweep.ray.executor import RayExecutor


def test_both_executors_are_executors_and_say_where_devices_are_checked():
    assert issubclass(LocalExecutor, Executor) and issubclass(RayExecutor, Executor)
    assert LocalExecutor.local_devices is True and RayExecutor.local_devices is False
    with pytest.raises(TypeError):  # __call__ is what an executor must offer
        type("NoCall", (Executor,), {})()


class _Finished(Events):
    def __init__(self):
        self.outcomes = []

    def run_finished(self, outcome):
        self.outcomes.append(outcome)


def test_nothing_finished_leaves_every_run_to_train(tmp_path: Path):
    runs = expand(Experiment(), axes=[("train.seed", [1, 2])])
    seen = _Finished()
    todo, skipped = skip_finished(runs, tmp_path / "out", seen)
    assert todo == runs and skipped == [] and seen.outcomes == []


def test_a_pass_is_named_by_its_group_and_seeds():
    runs = expand(Experiment(), axes=[("train.seed", [1, 2, 3])])
    assert pass_label(runs) == f"{runs[0].group} seeds 1,2,3"
    assert pass_label(runs[:1]) == f"{runs[0].group} seed 1"
