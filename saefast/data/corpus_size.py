"""How many tokens a built-in corpus holds for a model, estimated without tokenizing it.

A harvest does not cycle: when the corpus runs out it keeps what it has and fails
(`harvest.corpus_too_small`), after the whole forward pass. So a sweep asking for more
tokens than the corpus holds is refused before any work (`check_budget`, called by
`sweep.plan.preflight`). Tokenizing a corpus to count it would cost what the check saves
(python-code: ~13 s for 3 MB with MiniLM's tokenizer here), so the count is the corpus's
characters divided by a measured characters-per-token ratio: an estimate, said so in every
message, within a few per cent for the built-in models (their ratios vary that much between
samples of one corpus); other models get a bound of one token per UTF-8 byte (no byte-level
or WordPiece tokenizer makes more), so they are refused only when certainly too large.

Characters: python-docs and python-code are counted (0.01 s, 0.07 s: the text is read, not
tokenized); math and multilingual take 1.5 s and 3 s to build, so their counts are stored
for the versions measured (math_text.VERSION, the installed chatterbot-corpus) and counted
only for another version. Local files and Hugging Face datasets are not estimated.
"""

from __future__ import annotations

import functools
import math

from saefast.data import corpora
from saefast.errors import CorpusError

__all__ = ["CHARS_PER_TOKEN", "capacity", "check_budget"]

# characters per token of each built-in model's tokenizer on each built-in corpus, measured
# 2026-12-07 (python-docs and multilingual whole; python-code and math on their first 3M
# characters): tiny's is characters per UTF-8 byte (its tokens are bytes)
CHARS_PER_TOKEN = {
    "minilm": {"python-docs": 3.63, "python-code": 3.51, "math": 2.55, "multilingual": 1.99},
    "gemma-270m": {"python-docs": 4.13, "python-code": 3.34, "math": 1.95, "multilingual": 2.98},
    "tiny": {"python-docs": 0.998, "python-code": 1.0, "math": 1.0, "multilingual": 0.70},
}
TOLERANCE = 0.10  # refused above capacity x (1 + TOLERANCE), warned above x (1 - TOLERANCE)
SPECIAL_TOKENS = {"minilm": 2, "gemma-270m": 1, "tiny": 1}  # per chunk: [CLS] [SEP]; <bos>
MATH_CHARS = {1: 7_847_459}  # math_text.VERSION -> characters of the generated corpus
MULTILINGUAL_CHARS = {"1.3.3": 665_295}  # chatterbot-corpus version -> characters


@functools.cache
def characters(corpus: str) -> int:
    """The built-in corpus's characters (stored for math and multilingual when known)."""
    if corpus == "math":
        from saefast.data import math_text

        if math_text.VERSION in MATH_CHARS:
            return MATH_CHARS[math_text.VERSION]
    if corpus == "multilingual":
        from importlib import metadata

        from saefast.data import multilingual

        multilingual.data_dir()  # the package is there, or its one-line error
        try:
            version = metadata.version("chatterbot-corpus")
        except metadata.PackageNotFoundError:
            version = None
        if version in MULTILINGUAL_CHARS:
            return MULTILINGUAL_CHARS[version]
    return sum(len(doc) for doc in corpora.iter_documents(corpus))


def capacity(model: str, corpus: str, *, context_length: int = 128,
             drop_special_tokens: bool = True) -> tuple[int, str] | None:
    """(estimated tokens, how it was estimated) of a built-in corpus for `model`; None for
    other corpora. For a model that is not built in, the bound of one token per byte."""
    if corpus not in corpora.BUILTIN_CORPORA:
        return None
    chars = characters(corpus)
    ratios = CHARS_PER_TOKEN.get(model)
    if ratios is None:
        tokens = int(chars / CHARS_PER_TOKEN["tiny"][corpus])
        return tokens, f"at most one token per UTF-8 byte of its {chars:,} characters"
    ratio = ratios[corpus]
    tokens = chars / ratio
    if not drop_special_tokens:  # the special tokens of every chunk are harvested too
        special = SPECIAL_TOKENS[model]
        tokens *= context_length / max(context_length - special, 1)
    return int(tokens), f"{chars:,} characters at ~{ratio:g} per token, +/- {TOLERANCE:.0%}"


def check_budget(model: str, corpus: str, tokens: int, *, context_length: int = 128,
                 drop_special_tokens: bool = True, what: str = "") -> str | None:
    """CorpusError when `tokens` is clearly more than a built-in corpus holds for `model`;
    a warning line when it is within the estimate's error; None otherwise."""
    cap = capacity(model, corpus, context_length=context_length,
                   drop_special_tokens=drop_special_tokens)
    if cap is None:
        return None
    have, how = cap
    bound = model not in CHARS_PER_TOKEN  # one token per byte: exceeding it is certain
    limit = have if bound else have * (1 + TOLERANCE)
    asked = f"{tokens:,} tokens{what}"
    if tokens > limit:
        raise _too_small(corpus, model, have, how, asked, bound)
    if not bound and tokens > have * (1 - TOLERANCE):
        return (f"corpus '{corpus}' holds ~{_short(have)} tokens for model '{model}' (an "
                f"estimate: {how}); {asked} may be more than it has, and the harvest fails "
                "when the corpus runs out")
    return None


def _too_small(corpus: str, model: str, have: int, how: str, asked: str, bound: bool) -> CorpusError:
    holds = "at most " if bound else "~"
    larger = ", ".join([c for c in ("python-code", "math") if c != corpus]
                       + ["a .txt/.jsonl file", "hf:<dataset>"])
    return CorpusError(f"corpus '{corpus}' holds {holds}{_short(have)} tokens for model "
                       f"'{model}' ({'a bound' if bound else 'an estimate'}: {how}), not "
                       f"{asked}; a harvest does not repeat a corpus: lower --tokens or use a "
                       f"larger corpus ({larger})")


def _short(n: int) -> str:
    """12,345 -> 12K, 3,456,789 -> 3.5M (an estimate needs no more digits)."""
    if n >= 10_000_000:
        return f"{n / 1e6:.0f}M"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    return f"{math.floor(n / 1000):,}K" if n >= 10_000 else f"{n:,}"
