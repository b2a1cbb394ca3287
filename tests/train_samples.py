"""What the training tests share: small activations, a short multi-seed config, and how to
compare trained weights bit for bit."""

import torch

from saefast.config import SAEConfig, TrainConfig

SAE = SAEConfig(n_features=32, k=4)


def acts(n=700, d=16, seed=0):
    """Activations [n, d]: each token a random mix of 3 of 48 unit atoms, plus noise."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.nn.functional.normalize(torch.randn(48, d, generator=g), dim=1)
    idx = torch.randint(0, 48, (n, 3), generator=g)
    return (torch.rand(n, 3, generator=g)[..., None] * atoms[idx]).sum(1) + 0.1 * torch.randn(n, d, generator=g)


def cfg(**kw):
    """A short config for several seeds: windows of 200 tokens, a checkpoint every 150."""
    base = dict(epochs=3, batch_size=32, lr=3e-3, shuffle_buffer=200, checkpoint_every=150)
    return TrainConfig(**{**base, **kw})


def weights(result):
    """A result's parameters, copied (compare them with assert_same)."""
    return {k: v.detach().clone() for k, v in result.sae.state_dict().items()}


def assert_same(a, b):
    """Bit for bit."""
    for key in a:
        assert torch.equal(a[key], b[key]), key


def gaussian_acts(n, d=16, seed=0):
    """Correlated Gaussian activations [n, d] (no planted features)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g)
