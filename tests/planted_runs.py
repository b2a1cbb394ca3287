"""Run directories with planted shared features, so the right matching is known (shared by
the stability, report and plot tests)."""

import numpy as np
import torch
from safetensors.torch import save_file

from saefast.fsio import write_json_atomic
from saefast.runs.artifacts import write_run_dir

D, N_SHARED, N_EXTRA = 32, 40, 8
F = N_SHARED + N_EXTRA
SHARED = np.random.default_rng(123).standard_normal((N_SHARED, D))


def make_run(root, name, seed, *, n_extra=N_EXTRA, d=D, dead=(), fmt="saefast"):
    """A run whose features perm[s] (s < 40) hold shared direction s (+5% noise, rescaled);
    the rest are random. Returns (run_dir, perm)."""
    g = np.random.default_rng(seed)
    shared = SHARED if d == D else g.standard_normal((N_SHARED, d))
    rows = np.vstack([shared + 0.05 * g.standard_normal((N_SHARED, d)),
                      g.standard_normal((n_extra, d))]) * g.uniform(0.5, 2.0, (N_SHARED + n_extra, 1))
    perm = g.permutation(len(rows))
    W_dec = np.empty_like(rows)
    W_dec[perm] = rows  # feature perm[i] holds row i
    W_dec = torch.tensor(W_dec, dtype=torch.float32)
    n = W_dec.shape[0]
    run_dir = root / name
    if fmt == "saelens":
        run_dir.mkdir(parents=True)
        save_file({"W_dec": W_dec, "W_enc": W_dec.T.contiguous(), "b_enc": torch.zeros(n),
                   "b_dec": torch.zeros(d)}, str(run_dir / "sae_weights.safetensors"))
        write_json_atomic(run_dir / "cfg.json", {"d_in": d, "d_sae": n, "k": 4})
        return run_dir, perm
    write_rows(root, name, W_dec, seed, dead=dead)
    if fmt == "original":
        (run_dir / "run.json").unlink()
    return run_dir, perm


def write_rows(root, name, rows, seed, *, dead=()):
    """A saefast run dir whose decoder rows are `rows` [F, d] (the encoder the same rows;
    features in `dead` never fired). Returns the run dir."""
    W_dec = torch.as_tensor(np.asarray(rows), dtype=torch.float32)
    n, d = W_dec.shape
    feats = [{"feature_index": i, "dead": i in dead, "fire_count": 0 if i in dead else 10}
             for i in range(n)]
    return write_run_dir(root / name, W_enc=W_dec.clone(), b_enc=torch.zeros(n), W_dec=W_dec,
                         b_dec=torch.zeros(d), k=4, features=feats,
                         run_info={"name": name, "seed": seed})


def plain_report(obj):
    """A report as its stability.json reads: arrays (`report.arrays`) as lists, NaN as null
    (what the writer scrubbed them to), for comparing a loaded report with a computed one."""
    if isinstance(obj, dict):
        return {k: plain_report(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [plain_report(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, float) and np.isnan(obj):
        return None
    return obj
