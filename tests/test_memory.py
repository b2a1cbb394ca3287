"""What a pass needs in memory (saefast/train/memory.py): seeds per pass under a budget, the
refusal of one seed too big, and a sweep's group split into passes that fit."""

import pytest

from saefast.train.memory import MemoryBudgetError, parse_bytes, seeds_per_pass


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


def test_a_tiny_budget_is_said_in_units_that_show_it():
    with pytest.raises(MemoryBudgetError, match=r"needs ~\d+\.\d MiB but the budget is 1\.0 KiB"):
        seeds_per_pass(2, 128, 384, 256, 1000, 0, budget=1024)


def test_the_memory_estimate_uses_the_reference_kernels_tile():
    """memory.py stays torch-free, so it names the reference's tile width instead of importing it."""
    from saefast.ops import reference
    from saefast.train import memory

    assert memory.REFERENCE_TILE_F == reference.TILE_F
