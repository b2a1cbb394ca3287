"""The Top-K SAE itself (saefast/train/sae.py): shapes, unit decoder rows, k's bounds."""

import pytest
import torch

from saefast.train.sae import TopKSAE


def test_sae_forward_shapes_and_unit_decoder():
    sae = TopKSAE(16, 32, 4, seed=0)
    x_hat, values, indices = sae(torch.randn(5, 16))
    assert x_hat.shape == (5, 16) and values.shape == indices.shape == (5, 4)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(32))
    assert (values >= 0).all() and (values[:, :-1] >= values[:, 1:]).all()


def test_k_larger_than_features_is_rejected():
    with pytest.raises(ValueError, match="k must be between 1 and n_features=8"):
        TopKSAE(4, 8, 9)
