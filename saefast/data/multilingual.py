"""The built-in `multilingual` corpus: short conversations in 28 languages from the PyPI
package `chatterbot-corpus` (BSD; `pip install "saefast[multilingual]"`), read from the
installed package's YAML files, never from the network.

Each language folder (data/<language>/<topic>.yml, `conversations:` lists of lines) becomes
documents of CONVERSATIONS_PER_DOC conversations, one line per utterance, in sorted file
order. Languages are interleaved round-robin in sorted order (one document of each language
in turn; languages that run out drop out), so a small token budget spans every language.
~660K characters (~30 % English, ~17 % Persian), a few hundred thousand tokens: big enough
for 30K-token studies, not for 1M-token ones.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from saefast.errors import CorpusError, first_line

PACKAGE = "chatterbot_corpus"
EXTRA = "multilingual"
CONVERSATIONS_PER_DOC = 8

__all__ = ["data_dir", "multilingual_documents", "languages"]


def data_dir() -> Path:
    """The installed package's data folder; CorpusError naming the extra when it is missing."""
    spec = importlib.util.find_spec(PACKAGE)  # found without importing it
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(f"corpus 'multilingual' needs the package chatterbot-corpus: "
                          f"pip install \"saefast[{EXTRA}]\" (or pip install chatterbot-corpus)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not folder.is_dir():
        raise CorpusError(f"corpus 'multilingual': {folder} is missing from the installed "
                          "chatterbot-corpus; reinstall it")
    return folder


def languages() -> list[str]:
    """The language folders, sorted."""
    return sorted(p.name for p in data_dir().iterdir() if p.is_dir())


@functools.lru_cache(maxsize=1)
def _documents(folder: str) -> tuple[tuple[str, ...], ...]:
    """Per language (sorted), its documents in file order. Cached: parsing takes ~0.8 s."""
    root = Path(folder)
    out = []
    for lang in sorted(p for p in root.iterdir() if p.is_dir()):
        convs: list[str] = []
        for path in sorted(lang.glob("*.yml")):
            convs += _conversations(path)
        docs = ["\n".join(convs[i:i + CONVERSATIONS_PER_DOC])
                for i in range(0, len(convs), CONVERSATIONS_PER_DOC)]
        if docs:
            out.append(tuple(docs))
    if not out:
        raise CorpusError(f"corpus 'multilingual' is empty: no conversations under {root}")
    return tuple(out)


def _conversations(path: Path) -> list[str]:
    """Each conversation of one YAML file as its lines joined by newlines."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise CorpusError(f"corpus 'multilingual': cannot read {path} ({first_line(err)})") from None
    convs = data.get("conversations") if isinstance(data, dict) else None
    out = []
    for conv in convs if isinstance(convs, list) else []:
        lines = conv if isinstance(conv, list) else [conv]
        # scalars only: a few files hold numbers or nested lists among the lines
        text = "\n".join(str(x).strip() for x in lines
                         if isinstance(x, (str, int, float)) and str(x).strip())
        if text:
            out.append(text)
    return out


def multilingual_documents() -> list[str]:
    """The documents, languages interleaved round-robin."""
    per_lang = _documents(str(data_dir()))
    out = []
    for i in range(max(len(docs) for docs in per_lang)):
        out += [docs[i] for docs in per_lang if i < len(docs)]
    return out
