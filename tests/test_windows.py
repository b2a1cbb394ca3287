"""Token sources, their slices and the schedule's token orders (saefast.data.windows); the
schedule over a whole training is tested with it (test_trainer.py, test_resume.py)."""

from __future__ import annotations

import torch

from saefast.data.windows import (
    Position,
    TensorSource,
    TokenSource,
    WindowSchedule,
    split,
)


class Counting(TokenSource):
    """A source that is not in memory: row i is [i, i, ...]; counts its reads."""

    random_access = False

    def __init__(self, n: int, d: int = 3):
        self.n_tokens, self.d, self.reads = n, d, []

    def read(self, start: int, end: int) -> torch.Tensor:
        self.reads.append((start, end))
        return torch.arange(start, end, dtype=torch.float32)[:, None].expand(-1, self.d)


def test_split_of_a_tensor_source_is_a_view_in_memory():
    x = torch.randn(100, 4)
    part = split(TensorSource(x), 20, 70)
    assert isinstance(part, TensorSource) and (part.n_tokens, part.d) == (50, 4)
    assert torch.equal(part.read(0, 50), x[20:70]) and torch.equal(split(part, 10, 20).read(0, 10), x[30:40])


def test_split_of_any_other_source_reads_through_it():
    src = Counting(100)
    part = split(split(src, 10, 90), 5, 25)  # tokens [15, 35)
    assert (part.n_tokens, part.d, part.random_access) == (20, 3, False)
    assert torch.equal(part.read(0, 20)[:, 0], torch.arange(15, 35, dtype=torch.float32))
    assert src.reads == [(15, 35)]


def test_a_schedule_visits_every_token_once_an_epoch():
    sched = WindowSchedule(250, 100, 2, 0, [1, 2], per_seed=True)
    src = TensorSource(torch.arange(250, dtype=torch.float32)[:, None])
    seen = {0: [], 1: []}
    for w in sched.windows(src):
        assert len(w.orders) == 2 and not torch.equal(w.orders[0], w.orders[1])
        seen[w.position.epoch] += w.tokens[w.orders[0], 0].tolist()
    assert sorted(seen[0]) == sorted(seen[1]) == list(range(250))
    assert sched.steps(64) == 2 * (2 + 2 + 1) and sched.next_position(Position(0, 2)) == Position(1, 0)


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
