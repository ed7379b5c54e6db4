"""`rnn write`: the session's state across turns, its commands, and the program driven through
a real pseudo-terminal (pexpect) and through a pipe."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pexpect
import pytest
from click.testing import CliRunner

from rnncli.checkpoint import load_checkpoint, restore_model
from rnncli.cli import cli
from rnncli.model import Model
from rnncli.vocab import Vocab
from rnncli.write import (
    COMMANDS,
    CommandError,
    Session,
    Settings,
    run_command,
    scripted,
    typed_text,
)
from tests.helpers import write_corpus

VOCAB = Vocab("abcdefgh \n")
ROOT = Path(__file__).resolve().parents[1]


def session(seed=0, **settings) -> tuple[Session, list[str], list[str]]:
    model = Model(len(VOCAB), "lstm", 8, 2, seed=1)
    written, warnings = [], []
    s = Session(model, VOCAB, Settings(**settings), seed, written.append, warnings.append)
    return s, written, warnings


def test_the_state_carries_across_turns():
    s, written, _ = session(length=15)
    first = s.turn("ab")
    second = s.turn("cd")
    assert "".join(written) == first + second and len(first) == len(second) == 15
    replay = s.model.stepper(1)
    for i in VOCAB.encode("\n" + "ab" + first + "cd" + second):
        replay.step(np.array([i]))
    assert np.array_equal(replay.state, s.stepper.state)  # read everything, in order
    s.turn("")  # an empty line: the model just goes on
    s.reset()
    fresh = s.model.stepper(1)
    fresh.step(VOCAB.encode("\n"))
    assert np.array_equal(fresh.state, s.stepper.state)


def test_an_interrupt_stops_between_characters_with_the_state_intact():
    s, written, _ = session(length=100)
    calls = iter(range(1000))
    text = s.turn("ab", interrupted=lambda: next(calls) >= 7)
    assert len(text) == 7 and "".join(written) == text
    replay = s.model.stepper(1)
    for i in VOCAB.encode("\nab" + text):
        replay.step(np.array([i]))
    assert np.array_equal(replay.state, s.stepper.state)


def test_unknown_characters_are_reported_and_dropped():
    s, _, warnings = session(length=3)
    s.turn("aΩbΩ☃")
    assert warnings == ["left out characters outside the vocabulary: 'Ω', '☃'"]
    assert s.context.startswith("\nab")


def test_stop_texts_end_a_continuation_and_may_begin_in_the_typed_text():
    s, _, _ = session(length=500, stops=["\n"])
    for _ in range(5):
        text = s.turn("ab")
        assert text.count("\n") == (1 if text.endswith("\n") else 0)
        assert text.endswith("\n") or len(text) == 500
    s2, _, _ = session(length=1, top_k=1)
    first = s2.turn("h")  # the model's favourite after "h"
    s3, _, _ = session(length=4, stops=["h" + first], top_k=1)
    assert s3.turn("h") == first  # the stop text began in the typed "h"


@pytest.mark.parametrize("line, message", [
    ("/temp 0.5", "temperature 0.5"), ("/top-k 3", "top-k 3"), ("/top-k 0", "top-k off"),
    ("/top-p 0.9", "top-p 0.9"), ("/length 7", "length 7"), ("/stop \\n", "stop texts: \\n"),
    ("/nostop", "stop texts: none"), ("/reset", "state reset"),
])  # fmt: skip
def test_commands(line, message):
    s, _, _ = session()
    assert run_command(s, line).startswith(message)


def test_show_and_help():
    s, _, _ = session()
    run_command(s, "/temp 0.7")
    run_command(s, "/stop ab")
    assert run_command(s, "/show") == (
        "temperature 0.7, top-k off, top-p 1, length 200, stop texts: ab"
    )
    help_text = run_command(s, "/help")
    assert all(f"/{name}" in help_text for name in COMMANDS)
    with pytest.raises(EOFError):
        run_command(s, "/quit")


@pytest.mark.parametrize("line, needle", [
    ("/temp nan", "temperature must be a finite number above 0"), ("/temp -1", "above 0"),
    ("/temp inf", "finite"), ("/temp x", "must be a number"), ("/top-p 0", "above 0"),
    ("/top-p 1.5", "at most 1"), ("/top-k -1", "from 0"), ("/top-k 99", "to 10"),
    ("/length 1e9", "whole number"), ("/length 100001", "to 100,000"), ("/stop", "usage"),
    ("/stop \\q", "unknown escape"), ("/reset now", "usage: /reset"),
    ("/tmp 3", "unknown command /tmp"),
])  # fmt: skip
def test_bad_commands_are_one_line_and_change_nothing(line, needle):
    s, _, _ = session()
    before = Settings().describe()
    with pytest.raises(CommandError, match=needle) as err:
        run_command(s, line)
    assert "\n" not in str(err.value)
    assert s.settings.describe() == before


def test_a_pipe_line_may_be_max_line_long_but_not_longer(monkeypatch):
    from rnncli import write

    monkeypatch.setattr(write, "MAX_LINE", 4)
    s, written, _ = session(length=2)
    scripted(s, io.StringIO("abcd\nab\n"))
    assert s.context.startswith("\nabcd") and len(written) >= 4
    with pytest.raises(CommandError, match="longer than 4"):
        scripted(s, io.StringIO("abcde\n"))


def test_typed_text():
    assert typed_text("ROMEO:\\n") == "ROMEO:\n"
    assert typed_text("//etc") == "/etc"
    with pytest.raises(CommandError):
        typed_text("c:\\path")


# -- the real program --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("write")
    corpus = write_corpus(
        folder / "corpus.txt",
        words=["the ", "cat ", "sat ", "on ", "a ", "mat.", "\n", "dog ", "ran "],
    )
    args = ["train", str(corpus), "--out", str(folder / "run"), "--max-steps", "20",
            "--hidden-size", "16", "--num-layers", "1", "--batch-size", "4", "--seq-length", "8",
            "--quiet"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return folder / "run" / "best.npz"


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "dumb"}


def rnn_write(*args: str, stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rnncli", "write", *args], input=stdin,
                          capture_output=True, text=True, timeout=120, env=ENV)  # fmt: skip


def in_process(ckpt: Path, script: str, seed: int, **settings) -> tuple[list[str], list[str]]:
    """What ``scripted`` writes for ``script``, run here: the pieces written (characters and
    the newlines it adds) and the continuations."""
    found = load_checkpoint(ckpt)
    pieces: list[str] = []
    s = Session(restore_model(found), Vocab(found.vocab), Settings(**settings), seed,
                pieces.append, lambda message: None)  # fmt: skip
    continuations, turn = [], s.turn
    s.turn = lambda text: continuations.append(turn(text)) or continuations[-1]
    scripted(s, io.StringIO(script))
    return pieces, continuations


def test_from_a_pipe_one_turn_per_line(ckpt):
    script = "the cat\n/length 12\n/temp 0.5\nthe dog\n\n"
    done = rnn_write(str(ckpt), "--seed", "4", "--length", "30", stdin=script)
    assert done.returncode == 0 and done.stderr == ""
    pieces, continuations = in_process(ckpt, script, 4, length=30)
    assert done.stdout == "".join(pieces)
    assert [len(c) for c in continuations] == [30, 12, 12]  # /length applies from the next turn
    assert done.stdout == "".join(c if c.endswith("\n") else c + "\n" for c in continuations)
    again = rnn_write(str(ckpt), "--seed", "4", "--length", "30", stdin=script)
    assert again.stdout == done.stdout  # a seed replays the session
    lines = rnn_write(str(ckpt), "--seed", "4", "--stop", "\\n", stdin="the\nthe cat\n\n")
    assert len(lines.stdout.splitlines()) == 3  # with a stop text of \n: a line per turn


def test_a_pipe_ends_at_a_bad_command_with_one_line(ckpt):
    done = rnn_write(str(ckpt), "--seed", "1", stdin="the cat\n/temp nan\nthe dog\n")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "rnn: error: temperature must be a finite number above 0, got nan"
    )
    assert done.stdout == "".join(in_process(ckpt, "the cat\n", 1)[0])  # the first turn only


def test_a_pipe_reports_unknown_characters_and_goes_on(ckpt):
    done = rnn_write(str(ckpt), "--seed", "1", "--length", "5", stdin="the Ωcat\nthe\n")
    assert done.returncode == 0
    assert "rnn: left out characters outside the vocabulary: 'Ω'" in done.stderr
    assert done.stdout == "".join(in_process(ckpt, "the cat\nthe\n", 1, length=5)[0])


def test_bytes_that_do_not_decode_are_reported_and_left_out(ckpt):
    done = subprocess.run(
        [sys.executable, "-m", "rnncli", "write", str(ckpt), "--length", "5"],
        input=b"the \xff cat\n",
        capture_output=True,
        timeout=120,
        env={**ENV, "PYTHONIOENCODING": "utf-8"},
    )  # fmt: skip (strict)
    assert done.returncode == 0, done.stderr
    assert (
        done.stderr.decode().strip() == "rnn: left out characters outside the vocabulary: '\ufffd'"
    )
    out = done.stdout.decode()
    assert len(out) == 5 + (not out[:5].endswith("\n"))  # and a newline unless it ended so


def test_on_a_terminal(ckpt):
    child = pexpect.spawn(sys.executable, ["-m", "rnncli", "write", str(ckpt), "--seed", "2",
                                           "--length", "20"], env=ENV, encoding="utf-8",
                          timeout=60)  # fmt: skip
    try:
        child.expect("Type text and press Enter")
        child.expect("> ")
        child.sendline("the cat")
        child.expect("> ")
        child.sendline("/temp 0.5")
        child.expect("temperature 0.5")
        child.sendline("/temp nan")
        child.expect("rnn: temperature must be a finite number above 0")
        child.sendline("/length 100000")
        child.expect("length 100000")
        child.sendline("the")
        child.expect("the\r\n")  # the terminal's echo of the typed line
        child.expect(r"\w{3}")  # the continuation has begun...
        child.sendintr()  # ...Ctrl-C stops it, and the session goes on
        child.expect("\n> ")
        assert len(child.before) < 50_000  # far short of the 100,000 characters asked for
        child.sendline("/show")
        child.expect("temperature 0.5, top-k off, top-p 1, length 100000")
        child.send("\x1b[A")  # readline's history: the previous line again
        child.sendline("")
        child.expect("temperature 0.5, top-k off, top-p 1, length 100000")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
