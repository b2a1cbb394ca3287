"""Fixtures shared by the test modules."""

import pytest


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A small English corpus file: the first 40 topics of CPython's pydoc_data (offline)."""
    from pydoc_data.topics import topics

    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text("\n\n".join(topics[k] for k in sorted(topics)[:40]))
    return path
