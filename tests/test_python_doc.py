"""docs/python.md runs: its ```python blocks, in order, in one namespace, in a folder holding a
small stand-in for ``data/shakespeare.txt`` (the doc trains a tiny model on it)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import rnncli
from tests.helpers import write_corpus

DOC = Path(__file__).resolve().parents[1] / "docs" / "python.md"
# Words with every character the doc's primes and texts use, so nothing in them is unknown.
WORDS = (
    "ROMEO:\n", "JULIET:\n", "O, ", "she ", "doth ", "teach ", "the ", "torches ", "to ", "burn ",
    "bright! ", "But, ", "soft! ", "what ", "light ", "through ", "yonder ", "window ", "breaks?\n",
    "my ", "love ", "night ", "and ", "thou ", "art ", ".\n",
)  # fmt: skip


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def test_the_python_guide_runs(tmp_path, monkeypatch):
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 7
    (tmp_path / "data").mkdir()
    write_corpus(tmp_path / "data" / "shakespeare.txt", words=WORDS, size=12_000)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for i, block in enumerate(blocks):
            exec(compile(block, f"{DOC.name} block {i + 1}", "exec"), namespace)
    out = printed.getvalue()
    model = namespace["model"]
    assert isinstance(model, rnncli.CharModel)
    assert re.search(r"^<rnncli model lstm 1x64, V=\d+, step \d+, val \d\.\d{4}>$", out, re.M)
    assert namespace["text"].startswith("ROMEO:") and "ROMEO:" in out
    assert namespace["line"].startswith("JULIET:\n")
    assert "CommandError temperature: must be a finite number above 0, got 0" in out
    assert "CheckpointError data/shakespeare.txt:" in out
    assert "ConfigError rnncli.train: unknown key 'hiden_size' (did you mean 'hidden_size'?)" in out
