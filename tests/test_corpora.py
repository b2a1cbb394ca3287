"""Corpora: built-ins, local files, Hugging Face names (parsing and errors only: no network;
an unreachable or offline Hub refused at once: data/hub.py)."""

from __future__ import annotations

import json
import sys

import pytest

from saefast.data.corpora import (
    CorpusError,
    corpus_fingerprint,
    describe_corpus,
    iter_documents,
    parse_hf_corpus,
)


def test_python_docs_is_prose_shuffled_and_deterministic():
    docs = list(iter_documents("python-docs"))
    assert len(docs) > 50 and all(isinstance(d, str) and d.strip() for d in docs)
    assert sum(len(d.split()) for d in docs) > 30_000
    assert docs == list(iter_documents("python-docs"))
    from pydoc_data.topics import topics

    in_key_order = [topics[k] for k in sorted(topics) if topics[k].strip()]
    assert docs != in_key_order and sorted(docs) == sorted(in_key_order)  # shuffled, nothing lost
    assert corpus_fingerprint("python-docs") == corpus_fingerprint("python-docs")


def test_python_code_is_stdlib_source_without_tests():
    docs = iter_documents("python-code")
    first = [next(docs) for _ in range(5)]
    assert all("import" in d or "def " in d or '"""' in d for d in first)
    assert corpus_fingerprint("python-code") != corpus_fingerprint("python-docs")
    assert "python-code" in describe_corpus("python-code")


def test_txt_documents_are_separated_by_blank_lines(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("first line\nstill first\n\n\nsecond\n   \nthird\n")
    assert list(iter_documents(str(path))) == ["first line\nstill first", "second", "third"]


def test_jsonl_reads_the_text_field(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"text": "one", "id": 1}, {"text": "two"}]))
    assert list(iter_documents(str(path))) == ["one", "two"]


def test_folder_reads_txt_and_jsonl_in_sorted_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "c.jsonl").write_text(json.dumps({"text": "from jsonl"}) + "\n")
    (tmp_path / "a.txt").write_text("from txt\n")
    (tmp_path / "notes.md").write_text("ignored\n")
    assert list(iter_documents(str(tmp_path))) == ["from txt", "from jsonl"]
    assert "2 file(s)" in describe_corpus(str(tmp_path))


def test_fingerprint_follows_content(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("some text\n")
    before = corpus_fingerprint(str(path))
    assert corpus_fingerprint(str(path)) == before
    path.write_text("some other text\n")
    assert corpus_fingerprint(str(path)) != before


@pytest.mark.parametrize("content, suffix, message", [
    ("\n\n  \n", ".txt", "is empty"),
    ("", ".jsonl", "is empty"),
    ("not json\n", ".jsonl", "line 1 is not JSON"),
    ('{"body": "x"}\n', ".jsonl", "no string field 'text'"),
    ("text", ".csv", "unsupported file type"),
])
def test_bad_local_files_raise_one_line_errors(tmp_path, content, suffix, message):
    path = tmp_path / f"corpus{suffix}"
    path.write_text(content)
    with pytest.raises(CorpusError, match=message) as err:
        list(iter_documents(str(path)))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_empty_folder_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(CorpusError, match="no .txt or .jsonl files"):
        list(iter_documents(str(tmp_path)))
    with pytest.raises(CorpusError, match="not found"):
        list(iter_documents(str(tmp_path / "missing.txt")))
    with pytest.raises(CorpusError, match="'python-doc' not found: not a built-in"):
        corpus_fingerprint("python-doc")


def test_hf_names_parse():
    assert parse_hf_corpus("hf:roneneldan/TinyStories") == ("roneneldan/TinyStories", "train")
    assert parse_hf_corpus("hf:wikitext:validation") == ("wikitext", "validation")
    for bad in ["hf:", "hf::train", "hf:a:b:c", "hf:name:"]:
        with pytest.raises(CorpusError, match="expected 'hf:<dataset name>"):
            parse_hf_corpus(bad)


@pytest.fixture
def hub_online(monkeypatch):
    """The Hub as reachable and no offline setting, whatever this machine's network."""
    from saefast.data import hub

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hub, "reachable", lambda timeout=3.0: True)


@pytest.fixture
def hub_unreachable(monkeypatch):
    from saefast.data import hub

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hub, "reachable", lambda timeout=3.0: False)


def test_hf_load_failure_is_a_corpus_error(monkeypatch, hub_online):
    import types

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'some/dataset' on the Hub (offline)")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(CorpusError, match="could not load from Hugging Face .*offline"):
        list(iter_documents("hf:some/dataset"))


def test_hf_rows_without_text_field(monkeypatch, hub_online):
    import types

    rows = [{"content": "x"}]
    monkeypatch.setitem(sys.modules, "datasets",
                        types.SimpleNamespace(load_dataset=lambda *a, **k: iter(rows)))
    with pytest.raises(CorpusError, match="no 'text' field"):
        list(iter_documents("hf:some/dataset"))
    rows[:] = [{"text": "a"}, {"text": " "}, {"text": "b"}]
    assert list(iter_documents("hf:some/dataset")) == ["a", "b"]


@pytest.mark.parametrize("offline", ["unreachable", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_an_offline_hub_is_one_line_at_once_without_retries(monkeypatch, hub_unreachable, offline):
    """Without network the libraries retry for ~25 s before failing: the Hub unreachable (a
    socket refused) or offline by setting, the real datasets library is asked in its offline
    mode, which answers from the local cache at once: here, that it is not there."""
    import socket
    import time

    pytest.importorskip("datasets")
    if offline != "unreachable":
        monkeypatch.setenv(offline, "1")

    def no_network(*args, **kwargs):
        raise AssertionError("the network was asked")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    start = time.monotonic()
    with pytest.raises(CorpusError) as err:
        next(iter_documents("hf:saefast-tests/no-such-dataset"))
    assert time.monotonic() - start < 10  # importing datasets is most of it
    why = "huggingface.co is unreachable" if offline == "unreachable" else f"{offline} is set"
    assert str(err.value) == (
        f"corpus 'hf:saefast-tests/no-such-dataset': {why} and the dataset "
        "'saefast-tests/no-such-dataset' is not in the local Hugging Face cache (a local .txt "
        "or .jsonl corpus needs no network)")


def test_a_sweep_on_an_offline_hub_corpus_fails_in_one_line(monkeypatch, hub_unreachable,
                                                           tmp_path, capsys):
    """`saefast sweep --corpus hf:...` without network: one line, exit 2, in seconds (not
    the ~25 s of retries), and no activation store is left behind."""
    import time

    from saefast.cli.main import main

    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    rc = main(["sweep", "--model", "tiny", "--hook", "blocks.0.hook_resid_pre", "--corpus",
               "hf:saefast-tests/no-such-dataset", "--tokens", "2000", "--features", "16",
               "--seeds", "2", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")])
    seconds = time.monotonic() - start
    out, err = capsys.readouterr()
    assert rc == 2 and "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: corpus 'hf:saefast-tests/no-such-"
                                                  "dataset': HF_HUB_OFFLINE is set and"), err
    assert seconds < 15, seconds  # the tiny model's start on a busy 2-core box is most of it
    assert not list((tmp_path / "c").glob("activations/*/*"))


def test_hf_datasets_offline_0_overrides_hf_hub_offline(monkeypatch):
    """datasets' own reading: HF_DATASETS_OFFLINE, when set at all, decides for datasets."""
    from saefast.data import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    assert hub.offline_setting() is None
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "yes")
    assert hub.offline_setting() == "HF_DATASETS_OFFLINE"


def test_an_unreachable_hub_reads_a_cached_dataset_in_offline_mode(monkeypatch, hub_unreachable):
    """A dataset in the local cache still trains offline: loaded with the libraries' offline
    flags on (no retries), which are put back after."""
    import huggingface_hub.constants as hub_constants

    datasets = pytest.importorskip("datasets")
    seen = []

    def cached(name, split, streaming):
        seen.append((hub_constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE))
        return iter([{"text": "from the cache"}])

    monkeypatch.setattr(datasets, "load_dataset", cached)
    before = (hub_constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE)
    assert list(iter_documents("hf:some/dataset")) == ["from the cache"]
    assert seen == [(True, True)]
    assert (hub_constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE) == before


def test_the_hub_is_checked_where_requests_go(monkeypatch):
    """HF_ENDPOINT (a mirror) and a proxy: the host checked is the one a request reaches."""
    from saefast.data import hub

    for var in ("HF_ENDPOINT", "https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY",
                "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    assert hub.address() == ("huggingface.co", 443)
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.example:8080")
    assert hub.address() == ("mirror.example", 8080)
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example")
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    assert hub.address() == ("proxy.example", 3128)
    monkeypatch.setenv("no_proxy", "hf-mirror.example")
    assert hub.address() == ("hf-mirror.example", 443)


# ---------------------------------------------------------------------------- math


def _evaluate(expr: str, x=None):
    """An arithmetic expression of the math corpus (digits, x, + - * / ^, parentheses,
    implicit products such as 3x or (x + 1)(x - 2)) as an exact Fraction."""
    import ast
    import re
    from fractions import Fraction

    py = expr.replace("^", "**")
    py = re.sub(r"(\d|\))\s*(?=[x(])", r"\1*", py)  # 3x, 2(…), )( -> explicit products
    py = re.sub(r"x\s*(?=\()", "x*", py)

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        if isinstance(node, ast.Name) and node.id == "x" and x is not None:
            return Fraction(x)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                   ast.Div: lambda: a / b, ast.Pow: lambda: a ** int(b)}
            return ops[type(node.op)]()
        raise ValueError(f"cannot evaluate {expr!r}")

    return ev(ast.parse(py, mode="eval"))


# an equation chain: expressions of digits, x, operators and parentheses joined by " = ",
# not glued to a word or an exponent before it, ending at a punctuation mark
_CHAIN = r"(?<![\w^.])-?[\dx(][\dx+\-*/^() ]*(?: = -?[\dx(][\dx+\-*/^() ]*)+(?=[.,:;](?:\s|$))"


def test_math_statements_are_true():
    import re

    from saefast.data.math_text import math_document

    checked = {"numeric": 0, "identity": 0, "solved": 0, "gcd": 0, "percent": 0}
    for i in range(150):
        for para in math_document(i).split("\n\n"):
            solutions = [_evaluate(v) for v in re.findall(r"(?<![\w^])x = (-?\d+)\.", para)]
            for chain in re.findall(_CHAIN, para):
                sides = [s.strip() for s in chain.split(" = ")]
                if sides[0] == "x":
                    continue  # the answer itself
                if "x" not in chain:
                    values = {_evaluate(s) for s in sides}
                    assert len(values) == 1, f"doc {i}: {chain!r} is false"
                    checked["numeric"] += 1
                elif all(len({_evaluate(s, x) for s in sides}) == 1 for x in (-3, 2, 5, 11)):
                    checked["identity"] += 1
                else:  # an equation: true at the solution the paragraph gives
                    assert any(len({_evaluate(s, v) for s in sides}) == 1 for v in solutions), \
                        f"doc {i}: {chain!r} holds for no x the paragraph names ({solutions})"
                    checked["solved"] += 1
            for a, b, d in re.findall(r"greatest common divisor of (\d+) and (\d+) is (\d+)", para):
                from math import gcd

                assert gcd(int(a), int(b)) == int(d)
                checked["gcd"] += 1
            for pct, base, val in re.findall(r"(\d+)(?:%| percent) of (\d+) (?:is|gives) (\d+)", para):
                assert int(pct) * int(base) == 100 * int(val)
                checked["percent"] += 1
    assert min(checked.values()) >= 10, checked  # every kind was found and checked


def test_math_is_deterministic_lazy_and_large(monkeypatch):
    import subprocess

    from saefast.data import math_text

    code = ("import hashlib; from saefast.data.corpora import iter_documents; import itertools;"
            "print(hashlib.sha256('\\x00'.join(itertools.islice(iter_documents('math'), 200))"
            ".encode()).hexdigest())")
    import os

    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(runs) == 1  # the same text whatever the hash seed
    docs = iter_documents("math")
    first = next(docs)
    assert first == next(iter_documents("math")) and first != next(docs)
    calls = []
    real = math_text.math_document
    monkeypatch.setattr(math_text, "math_document", lambda i: calls.append(i) or real(i))
    next(iter_documents("math"))
    assert calls == [0]  # one document generated for one document read
    monkeypatch.undo()
    # big enough for 1M-token budgets: tokens per character on a sample, times all characters
    from saefast.data.coverage import load_tokenizer

    tok = load_tokenizer("minilm")
    sample = [math_text.math_document(i) for i in range(0, math_text.N_DOCS, 300)]
    per_char = sum(len(tok(d, add_special_tokens=False)["input_ids"]) for d in sample) / sum(map(len, sample))
    chars = sum(len(d) for d in iter_documents("math"))
    assert chars * per_char > 1.5e6
    assert corpus_fingerprint("math") != corpus_fingerprint("python-docs")


# ---------------------------------------------------------------------------- multilingual


def _scripts(text: str) -> set[str]:
    import unicodedata

    return {unicodedata.name(c, "?").split()[0] for c in text if c.isalpha()}


def test_multilingual_interleaves_languages():
    pytest.importorskip("chatterbot_corpus")
    from saefast.data import multilingual

    docs = list(iter_documents("multilingual"))
    langs = multilingual.languages()
    assert len(langs) >= 20 and docs == list(iter_documents("multilingual"))
    head = "\n".join(docs[:len(langs)])  # the first round: one document of each language
    assert {"LATIN", "CYRILLIC", "CJK", "ARABIC", "DEVANAGARI", "HANGUL", "HEBREW"} <= _scripts(head)
    assert "multilingual" in describe_corpus("multilingual")


def test_multilingual_without_the_package_names_the_extra(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "chatterbot_corpus" else real(name, *a))
    with pytest.raises(CorpusError, match=r'pip install "saefast\[multilingual\]"') as err:
        list(iter_documents("multilingual"))
    assert "\n" not in str(err.value)
    from saefast.cli.main import (
        main,  # the listing still works, and says why it is missing
    )

    assert main(["corpora"]) == 0
    assert "unavailable" in capsys.readouterr().out


# ---------------------------------------------------------------------------- unknown tokens


def test_unknown_token_rate_counts_the_tokenizers_unknown_id(tmp_path):
    from saefast.data.coverage import unknown_token_rate

    path = tmp_path / "runes.txt"
    path.write_text("hello \u16a0 world \u16a2\n")  # runes: not in MiniLM's vocabulary
    got = unknown_token_rate("minilm", str(path))
    assert (got.tokens, got.unknown, got.rate) == (4, 2, 0.5)
    assert unknown_token_rate("minilm", "python-docs", 5000).unknown == 0
    capped = unknown_token_rate("minilm", "python-docs", 300)
    assert capped.tokens == 300
    byte = unknown_token_rate("tiny", str(path))
    assert not byte.has_unknown and byte.rate == 0.0


def test_corpora_command_lists_every_builtin(capsys):
    from saefast.cli.main import main
    from saefast.data.corpora import BUILTIN_CORPORA

    assert main(["corpora", "--model", "tiny", "--tokens", "200"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in BUILTIN_CORPORA) and "none (byte-level)" in out
