"""Compare two sweeps' runs of one recipe bit for bit, seed by seed (the kill-and-resume check
of experiments/scale_16k_resume_check.yaml).

    python experiments/compare_runs.py RUNS_A RUNS_B GROUP_A GROUP_B

RUNS_A/B: the sweeps' runs folders; GROUP_A/B: the group names there (run names are
<group>-s<seed>; they differ where one sweep's names carry a key the other's do not). Every
seed of GROUP_B is compared with the same seed of GROUP_A; exits 1 unless all are equal.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def main(runs_a: str, runs_b: str, group_a: str, group_b: str) -> int:
    same_all = True
    found = sorted(Path(runs_b).glob(f"{group_b}-s*"))
    if not found:
        print(f"no runs {group_b}-s* in {runs_b}")
        return 1
    for rb in found:
        ra = Path(runs_a) / f"{group_a}-s{rb.name.rsplit('-s', 1)[1]}"
        x = load_file(str(ra / "sae_weights.safetensors"))
        y = load_file(str(rb / "sae_weights.safetensors"))
        same = x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        same_all &= same
        print(f"{ra.name} vs {rb.name}: {'bitwise equal' if same else 'DIFFERENT'} "
              f"({', '.join(sorted(x))})")
    return 0 if same_all else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
