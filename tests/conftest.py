"""Fixtures shared by the test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import write_corpus


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A small corpus of repeated words (``helpers.write_corpus``) in the test's folder."""
    return write_corpus(tmp_path / "corpus.txt")
