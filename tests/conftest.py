"""Fixtures shared by the test modules: one corpus for every test that needs text, and a
fresh activation/model cache per test for the modules that ask for it (`cache`)."""

import os

import pytest


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A small English corpus file: the first 40 topics of CPython's pydoc_data (offline)."""
    from pydoc_data.topics import topics

    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text("\n\n".join(topics[k] for k in sorted(topics)[:40]))
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """This test's own cache root, also set as $SAEFAST_CACHE_DIR, so nothing it harvests or
    hashes is shared with another test. Modules that want it for every test say
    `pytestmark = pytest.mark.usefixtures("cache")`."""
    monkeypatch.setenv("SAEFAST_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


# a report step that raises fails the test instead of becoming a missing value
# (`saefast.report.missing`); tests of the guard itself unset it
os.environ.setdefault("SAEFAST_STRICT", "1")


def pytest_terminal_summary(terminalreporter):
    """One line saying how many peer tests (tests/test_peers.py: the real SAELens and sparsify)
    ran, so a CI log shows whether they were skipped."""
    counts = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        n = sum(1 for r in terminalreporter.stats.get(outcome, [])
                if "test_peers.py" in getattr(r, "nodeid", ""))
        if n:
            counts[outcome] = n
    if counts:
        terminalreporter.write_line("peer tests (SAELens, sparsify): " + ", ".join(
            f"{n} {k}" for k, n in counts.items()))
