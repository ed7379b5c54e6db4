"""The one atomic writer and the one encoding check."""

from __future__ import annotations

import os

import pytest

from rnncli.fileio import atomic_write, remove_temporaries, text_encoding


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target, text=True) as f:
        f.write("half")
        raise RuntimeError("stop")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]
    with atomic_write(target, text=True) as f:
        f.write("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["f.txt"]


def test_remove_temporaries_only_touches_dot_tmp_files(tmp_path):
    for name in (".last.npz.k2.tmp", ".c.ids.x9.tmp", "notes.tmp", "last.npz", ".hidden"):
        (tmp_path / name).write_bytes(b"x")
    remove_temporaries(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [".hidden", "last.npz", "notes.tmp"]


@pytest.mark.parametrize(
    "name, expected",
    [("utf-8", "utf-8"), ("latin-1", "iso8859-1"), ("hex", None), ("rot13", None), ("x", None)],
)
def test_text_encoding(name, expected):
    assert text_encoding(name) == expected
