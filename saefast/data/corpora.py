"""Text corpora: the documents that activations are harvested from.

A corpus is named by one string:

- ``python-docs`` (default): CPython's pydoc help topics (``pydoc_data.topics``), ~65K
  words of English prose in ~80 documents; ships with every Python, so it is always offline.
- ``python-code``: the standard library's ``.py`` files (test folders, site-packages,
  idlelib and ``__pycache__`` left out); ~660 files, ~12 MB, a few million tokens.
- ``math``: generated mathematical text (arithmetic, algebra, proof-like paragraphs), 6,000
  documents, ~7.8 MB, ~3M MiniLM tokens; generated lazily from fixed seeds
  (`saefast.data.math_text`).
- ``multilingual``: conversations in 28 languages from the optional package
  ``chatterbot-corpus`` (`saefast.data.multilingual`; extra ``saefast[multilingual]``),
  languages interleaved; ~660K characters.
- a local ``.txt`` file: documents are separated by one or more blank lines (so a file of
  paragraphs is a corpus of paragraphs; a file with no blank lines is one document).
- a local ``.jsonl`` file: one JSON object a line, its ``"text"`` field is a document.
- a local folder: every ``.txt`` / ``.jsonl`` file below it, in sorted path order.
- ``hf:<name>[:<split>]``: a Hugging Face dataset streamed with
  ``datasets.load_dataset(name, split=split, streaming=True)`` (split defaults to
  ``train``), field ``"text"``; needs the network, or the dataset in the local Hugging Face
  cache: offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, or the Hub unreachable: `hub`) it is
  read from that cache, or refused at once in one line, without the libraries' retries.

The python-* corpora are shuffled at the document level with a fixed seed (``SHUFFLE_SEED``) so
that a small token budget spans several topics instead of the first one alphabetically;
math mixes every kind of statement in each document and multilingual interleaves its
languages instead; local files and Hugging Face datasets keep their own order. `corpus_fingerprint` hashes
the documents in iteration order (seed included), so a changed file or Python version gives
a different fingerprint and so a different activation cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import sysconfig
from pathlib import Path
from typing import Iterator

from saefast.data import hub
from saefast.errors import CorpusError, first_line

DEFAULT_CORPUS = "python-docs"
BUILTIN_CORPORA = ("python-docs", "python-code", "math", "multilingual")
SHUFFLE_SEED = 0
LOCAL_SUFFIXES = (".txt", ".jsonl")

# folders of the standard library that are not "library code" (tests, third-party, caches)
_CODE_EXCLUDED_DIRS = {"test", "tests", "idle_test", "idlelib", "site-packages",
                       "dist-packages", "__pycache__", "lib2to3"}

_fingerprint_memo: dict[tuple, str] = {}

__all__ = ["CorpusError", "DEFAULT_CORPUS", "BUILTIN_CORPORA", "iter_documents", "corpus_fingerprint",
           "describe_corpus", "parse_hf_corpus"]


# ---------------------------------------------------------------------------- public API


def iter_documents(corpus: str) -> Iterator[str]:
    """Yield the corpus's documents (non-empty strings) in a deterministic order."""
    if corpus == "python-docs":
        yield from _shuffled(_python_docs())
    elif corpus == "python-code":
        for path in _shuffled(_python_code_files()):
            text = path.read_text(encoding="utf-8", errors="replace")
            if text.strip():
                yield text
    elif corpus == "math":
        from saefast.data.math_text import iter_math_documents

        yield from iter_math_documents()
    elif corpus == "multilingual":
        from saefast.data.multilingual import multilingual_documents

        yield from multilingual_documents()
    elif corpus.startswith("hf:"):
        yield from _iter_hf(corpus)
    else:
        count = 0
        for path in _local_files(corpus):
            for doc in _iter_local_file(corpus, path):
                count += 1
                yield doc
        if count == 0:
            raise CorpusError(f"corpus '{corpus}' is empty: no non-blank documents found")


def corpus_fingerprint(corpus: str) -> str:
    """A short content hash of the corpus (documents in order + shuffle seed).

    Memoised within a process: local files by (path, mtime, size), built-ins by name (they
    are cheap to hash anyway: python-code, ~11 MB, takes ~0.15 s). A Hugging Face corpus cannot be
    hashed without downloading it, so its fingerprint is a hash of its name and split: a
    dataset that changes on the hub under the same name keeps its (stale) cache.
    """
    if corpus.startswith("hf:"):
        name, split = parse_hf_corpus(corpus)
        return _hash_strings(["hf", name, split])
    key = _memo_key(corpus)
    if key in _fingerprint_memo:
        return _fingerprint_memo[key]
    h = hashlib.sha256(f"saefast-corpus-v1 seed={SHUFFLE_SEED}\n".encode())
    n_docs = 0
    for doc in iter_documents(corpus):
        data = doc.encode("utf-8", errors="replace")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
        n_docs += 1
    if n_docs == 0:
        raise CorpusError(f"corpus '{corpus}' is empty: no non-blank documents found")
    fingerprint = h.hexdigest()[:16]
    _fingerprint_memo[key] = fingerprint
    return fingerprint


def describe_corpus(corpus: str) -> str:
    """One line saying what the corpus is, for docs and the CLI."""
    if corpus == "python-docs":
        docs = _python_docs()
        words = sum(len(d.split()) for d in docs)
        return (f"python-docs: CPython's pydoc help topics, {len(docs)} documents, "
                f"~{words // 1000}K words of English prose (built-in, offline)")
    if corpus == "python-code":
        files = _python_code_files()
        size = sum(p.stat().st_size for p in files)
        return (f"python-code: the standard library's .py files, {len(files)} files, "
                f"{size / 1e6:.1f} MB of Python source (built-in, offline)")
    if corpus == "math":
        from saefast.data import math_text

        return (f"math: generated arithmetic, algebra and proof-like text, {math_text.N_DOCS} "
                "documents, ~3M MiniLM tokens (built-in, offline)")
    if corpus == "multilingual":
        from saefast.data import multilingual

        docs = multilingual.multilingual_documents()
        chars = sum(len(d) for d in docs)
        return (f"multilingual: chatterbot-corpus conversations in {len(multilingual.languages())} "
                f"languages, {len(docs)} documents, {chars / 1e3:.0f}K characters (offline, "
                f"extra [{multilingual.EXTRA}])")
    if corpus.startswith("hf:"):
        name, split = parse_hf_corpus(corpus)
        return f"{corpus}: Hugging Face dataset '{name}', split '{split}', field 'text' (streamed, online)"
    files = _local_files(corpus)
    size = sum(p.stat().st_size for p in files)
    kind = "folder" if Path(corpus).is_dir() else "file"
    return f"{corpus}: local {kind}, {len(files)} file(s), {size / 1e6:.2f} MB"


def parse_hf_corpus(corpus: str) -> tuple[str, str]:
    """'hf:<name>[:<split>]' -> (name, split); split defaults to 'train'."""
    parts = corpus[len("hf:"):].split(":") if corpus.startswith("hf:") else []
    if not parts or not parts[0] or len(parts) > 2 or (len(parts) == 2 and not parts[1]):
        raise CorpusError(f"corpus '{corpus}': expected 'hf:<dataset name>[:<split>]', "
                          "e.g. 'hf:roneneldan/TinyStories:validation'")
    return parts[0], parts[1] if len(parts) == 2 else "train"


# ---------------------------------------------------------------------------- built-ins


def _shuffled(items: list) -> list:
    items = list(items)
    random.Random(SHUFFLE_SEED).shuffle(items)
    return items


def _python_docs() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics) if topics[key].strip()]


def _python_code_files() -> list[Path]:
    """Sorted .py files of the standard library (walk prunes excluded folders early)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _CODE_EXCLUDED_DIRS)
        files += [Path(folder) / n for n in names if n.endswith(".py")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


# ---------------------------------------------------------------------------- local files


def _local_files(corpus: str) -> list[Path]:
    path = Path(corpus).expanduser()
    if not path.exists():
        builtins = ", ".join(BUILTIN_CORPORA)
        raise CorpusError(f"corpus '{corpus}' not found: not a built-in ({builtins}), "
                          "not an existing file or folder, and not 'hf:<name>'")
    if path.is_file():
        if path.suffix not in LOCAL_SUFFIXES:
            raise CorpusError(f"corpus '{corpus}': unsupported file type '{path.suffix}' "
                              "(use .txt or .jsonl)")
        return [path]
    files = sorted((p for p in path.rglob("*") if p.is_file() and p.suffix in LOCAL_SUFFIXES),
                   key=lambda p: p.relative_to(path).as_posix())
    if not files:
        raise CorpusError(f"corpus '{corpus}' is empty: the folder has no .txt or .jsonl files")
    return files


def _iter_local_file(corpus: str, path: Path) -> Iterator[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".txt":
        doc: list[str] = []
        for line in text.splitlines():
            if line.strip():
                doc.append(line)
            elif doc:
                yield "\n".join(doc)
                doc = []
        if doc:
            yield "\n".join(doc)
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CorpusError(f"corpus '{corpus}': {path.name} line {lineno} is not JSON ({err.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise CorpusError(f"corpus '{corpus}': {path.name} line {lineno} has no string field 'text'")
        if record["text"].strip():
            yield record["text"]


def _memo_key(corpus: str) -> tuple:
    """(corpus, stats of its files) for local corpora; the name for built-ins (fixed per process)."""
    if corpus in BUILTIN_CORPORA:
        return (corpus,)
    files = _local_files(corpus)
    return (str(Path(corpus).resolve()),
            tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files))


def _hash_strings(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- Hugging Face


def _iter_hf(corpus: str) -> Iterator[str]:
    name, split = parse_hf_corpus(corpus)
    why_offline = hub.unavailable()
    try:
        import datasets

        with hub.offline() if why_offline else contextlib.nullcontext():
            stream = datasets.load_dataset(name, split=split, streaming=True)
            rows = iter(stream)
            first = next(rows, None)
    except Exception as err:  # offline, unknown dataset, bad split: all one line for people
        raise _hf_error(corpus, name, why_offline, err) from None
    if first is None:
        raise CorpusError(f"corpus '{corpus}' is empty: split '{split}' has no rows")
    if "text" not in first:
        raise CorpusError(f"corpus '{corpus}': rows have no 'text' field (fields: {', '.join(first)})")
    for row in _chain(first, rows):
        text = row.get("text")
        if isinstance(text, str) and text.strip():
            yield text


def _hf_error(corpus: str, name: str, why_offline: str | None, err: Exception) -> CorpusError:
    if why_offline is None:
        return CorpusError(f"corpus '{corpus}': could not load from Hugging Face "
                           f"({first_line(err)})")
    if isinstance(err, (ConnectionError, FileNotFoundError)):  # what datasets offline says
        return CorpusError(f"corpus '{corpus}': {why_offline} and the dataset '{name}' is not in "
                           "the local Hugging Face cache (a local .txt or .jsonl corpus needs "
                           "no network)")
    return CorpusError(f"corpus '{corpus}': {why_offline}, and the local Hugging Face cache "
                       f"could not give '{name}' ({first_line(err)})")


def _chain(first: dict, rows: Iterator[dict]) -> Iterator[dict]:
    yield first
    yield from rows

