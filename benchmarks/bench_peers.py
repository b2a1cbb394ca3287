"""One training step of the peers' own Top-K SAEs against the same SAEs on saefast's ops
(`saefast.integrations`), in one run, interleaved (issue 24).

A step: encode, decode, MSE, backward, Adam, on a random batch. Contenders per shape:
  sparsify        sparsify.SparseCoder's own encode/decode (eai-sparsify 1.3)
  sparsify+ops    the same coder through saefast.integrations.sparsify.forward
  sae_lens        sae_lens.TopKTrainingSAE's own encode/decode (sae-lens 6.54)
  sae_lens+ops    the same SAE through saefast.integrations.sae_lens.forward
Ratios are of medians within the run (the machine may be shared).

Needs both packages beside saefast, which they cannot share an environment with (sae-lens
pulls transformer-lens 3.x), so run it with the peer venv's python and this source tree on
PYTHONPATH (its built ops load there: same torch):

    PYTHONPATH=. .peers/bin/python benchmarks/bench_peers.py [--quick] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, time_interleaved  # noqa: E402

SHAPES = [  # (d, F, k, batch)
    (768, 16384, 32, 2048),
    (384, 4096, 32, 512),
]


def _step(module, forward, x):
    opt = torch.optim.Adam(module.parameters(), lr=1e-4)

    def step():
        x_hat = forward(x)
        loss = ((x_hat - x) ** 2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def contenders(d: int, F: int, k: int, batch: int) -> dict:
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sparsify import SparseCoder, SparseCoderConfig

    from saefast.integrations import sae_lens as sl_ops
    from saefast.integrations import sparsify as sp_ops

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, d, generator=g)
    out = {}
    for name, ours in (("sparsify", False), ("sparsify+ops", True)):
        coder = SparseCoder(d, SparseCoderConfig(num_latents=F, k=k), device="cpu")
        fwd = ((lambda c: (lambda v: sp_ops.forward(c, v)[0]))(coder) if ours else
               (lambda c: (lambda v: c.decode(*c.encode(v)[:2])))(coder))
        out[name] = _step(coder, fwd, x)
    for name, ours in (("sae_lens", False), ("sae_lens+ops", True)):
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=F, k=k))
        fwd = ((lambda s: (lambda v: sl_ops.forward(s, v)[0]))(sae) if ours else
               (lambda s: (lambda v: s.decode(s.encode(v))))(sae))
        out[name] = _step(sae, fwd, x)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes, 2 rounds (a smoke run)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args()
    shapes = [(64, 256, 8, 128)] if args.quick else SHAPES
    rounds = 2 if args.quick else args.rounds
    results = {"machine": machine(), "shapes": []}
    for d, F, k, batch in shapes:
        timed = time_interleaved(contenders(d, F, k, batch), rounds=rounds)
        med = {n: t["median_s"] for n, t in timed.items()}
        row = {"d": d, "F": F, "k": k, "batch": batch,
               "tokens_per_s": {n: batch / s for n, s in med.items()},
               "speedup": {"sparsify": med["sparsify"] / med["sparsify+ops"],
                           "sae_lens": med["sae_lens"] / med["sae_lens+ops"]}}
        results["shapes"].append(row)
        print(f"d {d}, F {F}, k {k}, batch {batch}: "
              + ", ".join(f"{n} {v:,.0f} tok/s" for n, v in row["tokens_per_s"].items())
              + f"; on saefast's ops: sparsify x{row['speedup']['sparsify']:.2f}, "
                f"sae_lens x{row['speedup']['sae_lens']:.2f}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
