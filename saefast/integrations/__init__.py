"""Other codebases' SAEs run on saefast's fused ops (`torch.ops.saefast`), with autograd:

    from saefast.integrations import sae_lens, sparsify
    x_hat, top = sparsify.forward(coder, x)     # an EleutherAI sparsify SparseCoder
    x_hat, top = sae_lens.forward(sae, x)       # a SAELens TopKSAE / TopKTrainingSAE

Each computes what the package's own encode and decode compute (tests/test_peers.py checks
outputs and gradients against the real packages), SAELens's decoder-norm rescaling
included, and refuses, in one line, the options whose math differs (skip connections,
transcoding, activation normalisation). Neither
package is imported here: the functions read the module's parameters by name.
"""
