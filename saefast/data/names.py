"""A sweep's model, hook and corpus names, checked before anything loads.

A typo in a name used to surface only after the imports, the model load or the harvest; here
it is one `SaefastError` line with the closest valid name, and it costs no torch, no
transformer_lens and no network, so `saefast sweep --dry-run` can make the same checks.

Hooks are known without loading only for the built-in models: `BUILTIN_HOOKS` lists what
TransformerLens 4.x's `TransformerBridge` names in each (read from loaded models: tiny and
minilm loaded, gemma-270m booted on the meta device; tests/test_dry_run_checks.py compares
tiny's with a real load, so a TransformerLens that renames hooks fails a test, not a sweep).
Other models' hooks are checked by the harvest once the model has loaded.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from saefast.data import corpora, models
from saefast.errors import CorpusError

__all__ = ["BUILTIN_HOOKS", "builtin_hook_names", "check_corpus", "check_hooks", "check_model"]

_IO = ("hook_in", "hook_out")  # every bridged module
_NORM = ("hook_in", "hook_normalized", "hook_out", "hook_scale")  # a layer or RMS norm


def _parts(prefix: str, hooks: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{prefix}.{h}" for h in hooks)


# per block (blocks.N.<suffix>), in every built-in model
_BLOCK = (
    "hook_in", "hook_out", "hook_resid_pre", "hook_resid_mid", "hook_resid_post",
    "hook_attn_in", "hook_attn_out", "hook_mlp_in", "hook_mlp_out",
    "hook_q_input", "hook_k_input", "hook_v_input",
    *_parts("attn", ("hook_in", "hook_out", "hook_attn_in", "hook_attn_scores",
                     "hook_hidden_states", "hook_pattern", "hook_result", "hook_q", "hook_k",
                     "hook_v", "hook_z", "hook_q_input", "hook_k_input", "hook_v_input")),
    *(h for m in ("q", "k", "v", "o") for h in _parts(f"attn.{m}", _IO)),
    *_parts("ln1", _NORM), *_parts("ln2", _NORM),
    *_parts("mlp", ("hook_in", "hook_out", "hook_pre", "hook_post")),
    *_parts("mlp.in", _IO), *_parts("mlp.out", _IO),
)
# Gemma 3's extra block parts: rotary q/k, q/k norms, post-norms, the gated MLP's gate
_GEMMA_BLOCK = (
    *_parts("attn", ("hook_cos", "hook_sin", "hook_rot_q", "hook_rot_k", "hook_q_normed",
                     "hook_k_normed")),
    *_parts("attn.q_norm", _NORM), *_parts("attn.k_norm", _NORM),
    *_parts("ln1_post", _NORM), *_parts("ln2_post", _NORM),
    *_parts("mlp.gate", _IO), "mlp.hook_pre_linear",
)
_TOP = ("hook_embed", "hook_pos_embed", "hook_unembed", *_parts("embed", _IO),
        *_parts("unembed", _IO), *_parts("ln_final", _NORM))

# model -> (layers, per-block suffixes, names outside the blocks)
BUILTIN_HOOKS: dict[str, tuple[int, tuple[str, ...], tuple[str, ...]]] = {
    "tiny": (models.TINY_CONFIG["n_layers"], _BLOCK, (*_TOP, *_parts("pos_embed", _IO))),
    "minilm": (6, _BLOCK, (*_TOP, *_parts("pos_embed", _IO), *_parts("token_type_embed", _IO),
                           *_parts("embed_ln", _NORM), *_parts("mlm_head", _IO))),
    "gemma-270m": (18, _BLOCK + _GEMMA_BLOCK,
                   (*_TOP, *_parts("rotary_emb", ("hook_in", "hook_out", "hook_cos", "hook_sin")))),
}


def builtin_hook_names(model: str) -> list[str] | None:
    """Every hook name of a built-in model, sorted; None for other models (unknown until loaded)."""
    if model not in BUILTIN_HOOKS:
        return None
    n_layers, block, top = BUILTIN_HOOKS[model]
    return sorted([*top, *(f"blocks.{i}.{s}" for i in range(n_layers) for s in block)])


def check_model(name: str) -> None:
    """ModelError with the closest built-in unless the name can name a model (`models.check_model_name`)."""
    models.check_model_name(name)


def check_hooks(model: str, hooks: list[str]) -> None:
    """HookError with close names when a built-in model has no such hook (a layer out of
    range says how many blocks it has); other models' hooks wait for the harvest."""
    names = builtin_hook_names(model)
    if names is not None:
        models.check_hooks(hooks, names, model=model, n_layers=BUILTIN_HOOKS[model][0])


def check_corpus(corpus: str) -> None:
    """CorpusError with the closest built-in unless the corpus is a built-in, `hf:<name>`, or
    an existing .txt/.jsonl file or a folder holding some (`corpora.describe_corpus` checks
    those: type and emptiness). The multilingual corpus's optional package is checked too."""
    if corpus in corpora.BUILTIN_CORPORA:
        if corpus == "multilingual":
            from saefast.data import multilingual

            multilingual.data_dir()  # its package: the one-line error that names the extra
        return
    if corpus.startswith("hf:"):
        corpora.parse_hf_corpus(corpus)
        return
    if Path(corpus).expanduser().exists():
        corpora.describe_corpus(corpus)
        return
    close = difflib.get_close_matches(corpus, corpora.BUILTIN_CORPORA, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    if not close and re.fullmatch(r"[\w.-]+/[\w.-]+", corpus):
        hint = f" (a Hugging Face dataset? use 'hf:{corpus}')"
    raise CorpusError(f"unknown corpus '{corpus}'{hint}: not a built-in "
                      f"({', '.join(corpora.BUILTIN_CORPORA)}), not an existing .txt/.jsonl "
                      "file or folder, and not hf:<dataset>")
