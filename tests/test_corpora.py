"""Corpora: built-ins, local files, Hugging Face names (parsing and errors only: no network)."""

from __future__ import annotations

import json
import sys

import pytest

from saefast.data.corpora import (CorpusError, corpus_fingerprint, describe_corpus, iter_documents,
                             parse_hf_corpus)


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


def test_hf_load_failure_is_a_corpus_error(monkeypatch):
    import types

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'some/dataset' on the Hub (offline)")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(CorpusError, match="could not load from Hugging Face .*offline"):
        list(iter_documents("hf:some/dataset"))


def test_hf_rows_without_text_field(monkeypatch):
    import types

    rows = [{"content": "x"}]
    monkeypatch.setitem(sys.modules, "datasets",
                        types.SimpleNamespace(load_dataset=lambda *a, **k: iter(rows)))
    with pytest.raises(CorpusError, match="no 'text' field"):
        list(iter_documents("hf:some/dataset"))
    rows[:] = [{"text": "a"}, {"text": " "}, {"text": "b"}]
    assert list(iter_documents("hf:some/dataset")) == ["a", "b"]
