"""The sync-free training path (saefast/train/sync_free.py, the GPU's), run on the CPU: it
must train the same SAEs as the host path and stop a diverged seed at its exact step."""

import pytest
import torch

from saefast.config import SAEConfig, TrainConfig
from saefast.train import sync_free
from saefast.train.trainer import TrainingDiverged, train_saes


def activations(n=2400, d=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g)


CFG = dict(epochs=2, batch_size=64, dead_window=150)


@pytest.mark.parametrize("matmul", ["float32", "bfloat16"])
def test_same_training_as_the_host_path(matmul):
    """With a read-out every step, AuxK switches on exactly when the host path's does: the
    two differ only by float rounding of the masked AuxK GEMM."""
    x = activations()
    cfg = TrainConfig(matmul=matmul, **CFG)
    host = train_saes(x[:2000], x[2000:], SAEConfig(96, 6), cfg, [1, 2], log_every=1)
    free = train_saes(x[:2000], x[2000:], SAEConfig(96, 6), cfg, [1, 2], log_every=1,
                      sync_free=True)
    sparse_reads = train_saes(x[:2000], x[2000:], SAEConfig(96, 6), cfg, [1, 2], log_every=7,
                              sync_free=True)
    for h, f, s in zip(host, free, sparse_reads):
        assert h.metrics["train"]["dead_fraction"] < 1
        assert h.metrics["held_out"]["fvu"] == pytest.approx(f.metrics["held_out"]["fvu"], rel=2e-3)
        assert h.metrics["held_out"]["fvu"] == pytest.approx(s.metrics["held_out"]["fvu"], rel=2e-2)
        torch.testing.assert_close(f.sae.W_dec, h.sae.W_dec, atol=2e-2, rtol=0)
        assert [e["step"] for e in f.history] == [e["step"] for e in h.history]
        host_loss = {e["step"]: e["loss"] for e in h.history}
        assert [e["step"] for e in s.history] == [t for t in host_loss if t % 7 == 0 or t == max(host_loss)]
        for a, b in zip(h.history, f.history):
            assert a["loss"] == pytest.approx(b["loss"], rel=2e-3)


def test_auxk_on_reaches_dead_latents_only():
    """The masked AuxK (a -inf bias on live latents) gives gradient to dead latents only."""
    x = activations(n=64)
    from saefast.train.sae import TopKSAE
    sae = TopKSAE(24, 40, 4, seed=0)
    since = torch.zeros(40, dtype=torch.int64)
    since[[3, 7, 11]] = 10**6  # three dead latents
    loss, _ = sync_free.seed_loss_sync_free(sae, x, since.clone(), 1000, 8, 1.0, True)
    base, _ = sync_free.seed_loss_sync_free(sae, x, since.clone(), 1000, 8, 0.0, True)
    (loss - base).backward()  # the AuxK term alone
    touched = sae.b_enc.grad.nonzero().flatten().tolist()
    assert touched and set(touched) <= {3, 7, 11}


def test_a_diverged_seed_stops_at_its_step_and_spares_the_others(monkeypatch):
    x = activations()
    cfg = TrainConfig(**CFG)
    clean = train_saes(x[:2000], None, SAEConfig(64, 4), cfg, [1, 2], log_every=5, sync_free=True)
    real = sync_free.seed_loss_sync_free
    seen = []  # the SAEs in call order: seed 1's is first

    def poisoned(sae, *args):
        loss, n_dead = real(sae, *args)
        seen.append(sae)
        if sae is seen[0] and seen.count(sae) > 12:  # seed 1's loss is NaN from step 12 on
            loss = loss * float("nan")
        return loss, n_dead

    # sync_free.seed_step, the step train_saes runs, calls it through the module
    monkeypatch.setattr(sync_free, "seed_loss_sync_free", poisoned)
    got = train_saes(x[:2000], None, SAEConfig(64, 4), cfg, [1, 2], log_every=5, sync_free=True)
    assert isinstance(got[0], TrainingDiverged) and got[0].step == 12
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(got[1].sae, name), getattr(clean[1].sae, name))


def test_device_log_reads_every_n_steps():
    log = sync_free.DeviceLog(2, 3, "cpu")
    reads = []
    for step in range(7):
        for i in range(2):
            log.record(i, torch.tensor(float(10 * i + step)), torch.tensor(step))
        if log.advance(step):
            reads.append(log.read())
    assert [r[0] for r in reads] == [[1, 2, 3], [4, 5, 6]]
    assert reads[1][1] == [[3.0, 4.0, 5.0], [13.0, 14.0, 15.0]]
    assert log.count == 1 and log.read()[0] == [7]
