"""The bookkeeping of graphed training steps (saefast/cuda_graphs.py), on the CPU with a
stand-in backend whose "graph" re-runs the step and copies into the captured outputs, as a
replayed graph writes into its static tensors. The real capture runs in tests/test_cuda.py."""

import pytest
import torch

from saefast.train.cuda_graphs import SeedStepGraphs


class ReplayingBackend:
    """capture(fn) -> (replay, outputs) like torch.cuda.graph, without a GPU."""

    def __init__(self, fail: bool = False, short: str | None = None):
        self.fail, self.short, self.captures, self.warmups = fail, short, [], 0

    def run_warmup(self, fn):
        self.warmups += 1
        return fn()

    def memory_short(self):
        return self.short

    def capture(self, pool_key, fn):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing\nmore")
        self.captures.append(pool_key)
        out = fn()  # a real capture records without running: undo what this run added
        loss, dead, grads = out
        for g in grads:
            g.zero_()

        def replay():
            fresh_loss, fresh_dead, fresh_grads = fn()
            loss.copy_(fresh_loss)
            dead.copy_(fresh_dead)
            for static, g in zip(grads, fresh_grads):
                static.copy_(g)
        return replay, out


def make_models(n=2):
    gen = torch.Generator().manual_seed(0)
    return [torch.nn.Linear(6, 3).requires_grad_() for _ in range(n)], gen


def toy_step(models):
    def step(i, x, aux_on):
        out = models[i](x)
        loss = out.pow(2).mean() + (out.abs().mean() if aux_on else 0)
        loss.backward()
        return loss, (out > 0).sum()
    return step


def train(models, batches, runner):
    """SGD over (seed, batch, aux_on) steps, zeroing gradients like train_saes does."""
    losses, dead_counts = [], []
    for x, aux in batches:
        for i, m in enumerate(models):
            for p in m.parameters():
                p.grad = None
            loss, dead = runner(i, x, aux)
            losses.append(float(loss.detach()))
            dead_counts.append(int(dead))
            with torch.no_grad():
                for p in m.parameters():
                    p -= 0.1 * p.grad
    return losses, dead_counts


def batches(n_steps=12, switch_at=6, short_at=9):
    gen = torch.Generator().manual_seed(1)
    out = []
    for s in range(n_steps):
        rows = 3 if s == short_at else 8  # a partial batch: eager
        out.append((torch.randn(rows, 6, generator=gen), s >= switch_at))
    return out


def twins():
    torch.manual_seed(0)
    a = [torch.nn.Linear(6, 3) for _ in range(2)]
    b = [torch.nn.Linear(6, 3) for _ in range(2)]
    for ma, mb in zip(a, b):
        mb.load_state_dict(ma.state_dict())
    return a, b


def test_graphed_steps_equal_eager_steps_and_capture_per_seed_and_switch():
    eager_models, graph_models = twins()
    backend = ReplayingBackend()
    graphs = SeedStepGraphs(lambda i: list(graph_models[i].parameters()), toy_step(graph_models),
                            batch=8, backend=backend, warmup=2)
    data = batches()
    (expected, dead), (got, got_dead) = (train(eager_models, data, toy_step(eager_models)),
                                         train(graph_models, data, graphs.run))
    assert got == pytest.approx(expected) and got_dead == dead
    for a, b in zip(eager_models, graph_models):
        torch.testing.assert_close(b.weight, a.weight)
    # each seed: AuxK off captured after 2 warm-ups, AuxK on after 2 more; seed index = pool
    assert sorted(backend.captures) == [0, 0, 1, 1]
    assert graphs.stats.captured == 4 and graphs.stats.reason is None
    # per seed: 2 + 2 warm-ups, 1 partial batch; the other 7 steps replayed
    assert graphs.stats.eager == 2 * 5 and graphs.stats.replays == 2 * 7
    assert backend.warmups == 2 * 4


@pytest.mark.parametrize("backend", [ReplayingBackend(fail=True),
                                     ReplayingBackend(short="only 1.0 of 80.0 GiB free")])
def test_a_capture_that_cannot_happen_leaves_eager_steps_and_says_why(backend):
    eager_models, graph_models = twins()
    graphs = SeedStepGraphs(lambda i: list(graph_models[i].parameters()), toy_step(graph_models),
                            batch=8, backend=backend, warmup=1)
    data = batches()
    assert train(graph_models, data, graphs.run)[0] == pytest.approx(
        train(eager_models, data, toy_step(eager_models))[0])
    assert graphs.stats.captured == 0 and graphs.stats.replays == 0
    reason = graphs.stats.reason
    assert reason == "capture failed: RuntimeError: operation not permitted when stream is capturing" \
        or reason == "only 1.0 of 80.0 GiB free"
