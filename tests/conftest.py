"""Fixtures shared by the test modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A small corpus of repeated words, enough for tiny models to train a few steps on."""
    rng = np.random.default_rng(0)
    words = ["the ", "cat ", "sat ", "on ", "a ", "mat. ", "\n", "dog ", "ran "]
    path = tmp_path / "corpus.txt"
    path.write_text("".join(rng.choice(words, size=1500)), encoding="utf-8")
    return path
