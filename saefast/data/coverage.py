"""How much of a corpus a model's tokenizer can represent: the share of unknown tokens.

A WordPiece tokenizer (MiniLM's BERT vocabulary) maps characters it does not know to one
[UNK] id; activations at [UNK] positions say nothing about the text, so a corpus full of
them (scripts the vocabulary lacks) trains SAEs on noise. Byte-level tokenizers (Gemma's
byte fallback, the test model's bytes) have no unknown token: their rate is 0 by design.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_SAMPLE_TOKENS = 100_000

__all__ = ["UnknownRate", "load_tokenizer", "unknown_token_rate"]


@dataclass(frozen=True)
class UnknownRate:
    tokens: int  # tokens counted (the first `max_tokens` of the corpus, special tokens left out)
    unknown: int  # of them, the tokenizer's unknown token
    has_unknown: bool  # False: the tokenizer has no unknown token (byte-level)

    @property
    def rate(self) -> float:
        return self.unknown / self.tokens if self.tokens else 0.0


def load_tokenizer(model: str, cache_dir: str | os.PathLike | None = None):
    """The model's tokenizer alone where it ships one (minilm: no model weights loaded);
    other models are loaded whole and give theirs. `tiny` gives its ByteTokenizer."""
    from saefast.data import models

    if model == "tiny":
        return models.ByteTokenizer()
    if model == "minilm":
        from transformers import AutoTokenizer

        with models._hub_offline():
            return AutoTokenizer.from_pretrained(str(models.minilm_dir()))
    lm, _ = models.load_model(model, cache_dir=cache_dir)
    return getattr(lm, "saefast_tokenizer", None) or lm.tokenizer


def unknown_token_rate(model: str, corpus: str, max_tokens: int = DEFAULT_SAMPLE_TOKENS, *,
                       tokenizer=None, cache_dir: str | os.PathLike | None = None) -> UnknownRate:
    """Tokenize the corpus's documents in order until `max_tokens` tokens and count the
    tokenizer's unknown token among them (`tokenizer`: one already loaded, else the model's)."""
    from saefast.data.corpora import iter_documents

    tok = tokenizer if tokenizer is not None else load_tokenizer(model, cache_dir)
    unk = getattr(tok, "unk_token_id", None)
    seen = unknown = 0
    for doc in iter_documents(corpus):
        if callable(tok):  # a Hugging Face tokenizer
            ids = tok(doc, add_special_tokens=False, verbose=False)["input_ids"]
        else:  # ByteTokenizer
            ids = tok.encode(doc)
        ids = ids[: max_tokens - seen]
        seen += len(ids)
        if unk is not None:
            unknown += sum(1 for i in ids if i == unk)
        if seen >= max_tokens:
            break
    return UnknownRate(tokens=seen, unknown=unknown, has_unknown=unk is not None)
