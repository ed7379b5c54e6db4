"""checkpoint.corpus_if_unchanged: the recorded corpus only while it holds the recorded bytes."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from rnncli.checkpoint import Checkpoint, corpus_if_unchanged


def checkpoint(meta: dict) -> Checkpoint:
    return Checkpoint(params={"out.W": np.zeros((1, 1))}, vocab="a", config={}, meta=meta)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"to be or not to be\n")
    return path


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_unchanged_corpus_is_returned(corpus):
    found = corpus_if_unchanged(checkpoint({"corpus": str(corpus), "corpus_sha256": sha(corpus)}))
    assert found == corpus


def test_a_changed_corpus_is_not(corpus):
    ckpt = checkpoint({"corpus": str(corpus), "corpus_sha256": sha(corpus)})
    corpus.write_bytes(b"to be or not to bE\n")  # same size
    assert corpus_if_unchanged(ckpt) is None


@pytest.mark.parametrize("meta", [{}, {"corpus_sha256": 5}, {"corpus_sha256": None}])
def test_without_a_recorded_hash_there_is_no_answer(corpus, meta):
    assert corpus_if_unchanged(checkpoint({"corpus": str(corpus), **meta})) is None


def test_missing_odd_or_unreadable_files_give_none(tmp_path, corpus):
    digest = sha(corpus)
    assert corpus_if_unchanged(checkpoint({"corpus_sha256": digest})) is None
    for odd in (tmp_path / "missing.txt", tmp_path, "\x00nul"):
        assert (
            corpus_if_unchanged(checkpoint({"corpus": str(odd), "corpus_sha256": digest})) is None
        )
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it would block: it must not be opened
    assert corpus_if_unchanged(checkpoint({"corpus": str(fifo), "corpus_sha256": digest})) is None
    corpus.chmod(0)
    if not os.access(corpus, os.R_OK):  # root reads anyway
        assert (
            corpus_if_unchanged(checkpoint({"corpus": str(corpus), "corpus_sha256": digest}))
            is None
        )
