"""Strings and numbers from a stranger's checkpoint: every string reaches the terminal through
``text.for_terminal`` (no control character, escape sequence or lone surrogate gets through),
and every number is range-checked where it is read."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pexpect
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from rnncli.cli import cli
from rnncli.text import for_terminal
from rnncli.untrusted import loads_json
from tests.crafted import crafted, train_tiny
from tests.helpers import one_error_line, run, tiny

ROOT = Path(__file__).resolve().parent.parent

# What a terminal may act on: C0 and C1 controls, DEL; and the bidi and line-separator
# characters that reorder or break what is shown.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

HOSTILE_STRINGS = [
    "\x1b]52;c;ZWNobyBwd25lZA==\x07",  # OSC 52: write the clipboard
    "\x1b]0;fake title\x07",  # set the window title
    "\x1b[2J\x1b[H",  # clear the screen
    "ok\rrnn: error: fake line\n",  # overwrite a line, print another
    "\x9b31m",  # CSI as one C1 character
    "\x00nul",
    "right\u202eleft",  # a bidi override
    "\u2028separator",
    "\x7f\x08\x08",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("strings"))


@given(st.text())
@settings(max_examples=100, deadline=None)
def test_for_terminal_leaves_nothing_a_terminal_acts_on(text):
    shown = for_terminal(text)
    assert not UNSAFE.search(shown)
    assert shown.isprintable()
    shown.encode("utf-8")  # no lone surrogate
    if text.isprintable():
        assert shown == text  # printable text is shown as it is


@given(st.text(alphabet=st.characters(codec="utf-8")))
@settings(max_examples=100, deadline=None)
def test_for_terminal_keeps_what_it_is_told_to(text):
    assert for_terminal(text, keep="\n\t").count("\n") == text.count("\n")


@pytest.mark.parametrize("value", HOSTILE_STRINGS)
@pytest.mark.parametrize("key", ["corpus", "rnncli_version"])
def test_info_escapes_strings_from_meta(trained, tmp_path, key, value):
    folder = crafted(trained, tmp_path, lambda c: c.meta.update({key: value}))
    refused = key == "corpus" and "\x00" in value  # no path holds a NUL: refused, in one line
    result = run("info", folder / "best.npz", code=1 if refused else 0)
    assert not UNSAFE.search(result.output.replace("\n", ""))
    assert "\x1b" not in result.output and "\x9b" not in result.output


def test_report_escapes_the_corpus_name_and_refuses_a_nul_in_it(trained, tmp_path):
    folder = crafted(trained, tmp_path, lambda c: c.meta.update(corpus="a\x1b[2J\u202e.txt"))
    result = run("report", folder, "--chars", "20", "--length", "5",
                 "--out", tmp_path / "r.html")  # fmt: skip
    assert "\x1b" not in result.output
    assert "\x1b" not in (tmp_path / "r.html").read_text()
    folder = crafted(trained, tmp_path / "nul", lambda c: c.meta.update(corpus="a\x00b"))
    for command in ("info", "report", "eval"):
        result = run(command, folder, code=1)
        assert "meta.corpus must be a path" in one_error_line(result, ignore=("rnn: using ",))


def test_an_error_naming_a_hostile_path_is_escaped(tmp_path):
    name = tmp_path / "evil\x1b]52;c;aGk=\x07.npz"
    name.write_bytes(b"not a zip")
    result = run("info", name, code=1)
    line = one_error_line(result)
    assert "\x1b" not in line and "\\x1b" in line


@pytest.mark.parametrize("where", ["corpus", "rnncli_version", "unknown_key"])
def test_a_lone_surrogate_in_meta_is_one_line(trained, tmp_path, where):
    folder = crafted(trained, tmp_path, lambda c: c.meta.update({where: "\ud800x"}))
    for command in ("info", "report"):
        result = (
            run(command, folder / "best.npz", "--out", tmp_path / "r.html", code=1)
            if (command == "report")
            else run(command, folder / "best.npz", code=1)
        )
        assert "lone surrogate" in one_error_line(result)


def test_surrogate_pairs_are_text_and_lone_ones_are_not():
    assert loads_json(r'["\ud83d\ude00"]', 4) == ["\U0001f600"]
    for bad in (r'["\ud800"]', r'["\udc00\ud800"]', r'{"\udfff": 1}'):
        with pytest.raises(ValueError, match="lone surrogate"):
            loads_json(bad, 4)


@pytest.mark.parametrize(
    "change, member",
    [
        (lambda c: c.meta["data_position"].update(epoch=10**30), "data_position"),
        (lambda c: c.meta["data_position"].update(index=2**63), "data_position"),
        (lambda c: c.meta.update(step=2**64), "meta.step"),
        (lambda c: c.meta["evaluations"].append({"step": 10**400, "val_loss": 1.0}), "evaluat"),
        (lambda c: c.meta["schedule"].update(bad_evals=2**70), "schedule"),
        (lambda c: c.optimizer.update(t=np.array(2**63 - 1)), "optim/t"),
        (lambda c: c.optimizer.update(t=np.array(2**64 - 1, dtype=np.uint64)), "optim/t"),
    ],
)
def test_huge_numbers_are_refused_where_they_are_read(trained, tmp_path, change, member):
    folder = crafted(trained, tmp_path, change)
    corpus = trained.parent / "corpus.txt"
    for args in (("info", folder / "last.npz"), ("train", corpus, "--out", folder, "--resume")):
        result = run(*args, code=1)
        assert member in one_error_line(result)


def test_a_meta_that_nests_json_deeply_is_one_line(trained, tmp_path):
    nested = lambda depth: json.loads("[" * depth + "]" * depth)  # noqa: E731
    folder = crafted(trained, tmp_path, lambda c: c.meta.update(extra=nested(10)))
    run("info", folder / "best.npz")  # within the bound: kept, unread
    folder = crafted(trained, tmp_path / "deep", lambda c: c.meta.update(extra=nested(900)))
    assert "nested deeper" in one_error_line(run("info", folder / "best.npz", code=1))


@pytest.fixture(scope="module")
def escaping_model(tmp_path_factory) -> Path:
    """A model whose vocabulary holds ESC and a C1 control: what it writes can hold them."""
    folder = tmp_path_factory.mktemp("esc")
    corpus = folder / "corpus.txt"
    corpus.write_text("ab\x1b]0;t\x07 c\x9bd\n" * 200, encoding="utf-8")
    out = folder / "run"
    run("train", corpus, "--out", out, "--quiet", *tiny(max_steps=2))
    return out


def test_generated_text_is_escaped_on_a_terminal_and_exact_in_a_pipe(escaping_model):
    args = ["-m", "rnncli", "sample", str(escaping_model), "--temperature", "5",
            "--length", "400", "--seed", "3"]  # fmt: skip
    piped = subprocess.run([sys.executable, *args], capture_output=True, timeout=60, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert b"\x1b" in piped.stdout  # a pipe gets the exact text
    child = pexpect.spawn(sys.executable, args, cwd=str(ROOT), timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    shown = child.read()
    child.close()
    assert b"\x1b" not in shown and b"\xc2\x9b" not in shown and b"\\x1b" in shown


def test_numbers_at_the_edge_of_their_range_are_read_and_shown(trained, tmp_path):
    """The largest values each check lets through: every command reads them, none overflows."""
    biggest = 2**53 - 1

    def edge(c):
        c.meta.update(elapsed=1.7e308, epoch=1.7e308, best_val_loss=1.7e308, step=biggest)
        c.meta["evaluations"] = [{"step": biggest, "val_loss": 1.7e308}]
        c.optimizer["t"] = np.array(biggest - 1)

    folder = crafted(trained, tmp_path, edge)
    run("info", folder / "last.npz")
    run("info", folder / "last.npz", "--json")
    run("report", folder, "--chars", "20", "--length", "5", "--out", tmp_path / "r.html")
    corpus = trained.parent / "corpus.txt"
    args = ["train", str(corpus), "--out", str(folder), "--resume", "--max-steps", "1"]
    result = CliRunner().invoke(cli, args)  # nothing left to train, or one line: no traceback
    assert result.exit_code in (0, 1) and isinstance(result.exception, SystemExit | None)
    assert result.exit_code == 0 or one_error_line(result)
