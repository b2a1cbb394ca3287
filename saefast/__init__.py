"""saefast: measure how reproducible sparse-autoencoder features are, fast.

Importing `saefast` is light: heavy modules (transformer_lens, matplotlib, scipy) load only
when the function that needs them is first used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it; resolved on first access (PEP 562)
_LAZY = {
    "build_info": "saefast.ops.native",
    "ops": "saefast.ops",
    "TopKSAE": "saefast.train.sae",
    "RunConfig": "saefast.config",
    "train_sae": "saefast.train.trainer",
    "match_decoders": "saefast.match",
    "Matching": "saefast.match",
    "linear_assignment": "saefast.match",
    "analyze_runs": "saefast.report.files",
    "matched_statistics": "saefast.stats.matched",
    "load_sae": "saefast.runs.artifacts",
    "compute_sae_pair_alignment": "saefast.report.assemble",
    "compute_stability_report": "saefast.report.assemble",
    "compute_live_only_alignment": "saefast.report.assemble",
    "compute_live_only_stability_report": "saefast.report.assemble",
    "random_baseline": "saefast.stats.matched",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        value = module if name == "ops" else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'saefast' has no attribute {name!r}")
