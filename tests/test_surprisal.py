"""Per-character and per-line surprisal: exact against one-stream scoring, aligned with the
text, ranked; and on a real model, an inserted line of random characters ranks first."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from rnncli import evaluate
from rnncli.evaluate import (
    char_surprisal,
    line_surprisal,
    most_surprising,
    score,
    text_surprisal,
)
from rnncli.model import Model
from rnncli.sample import log_softmax
from rnncli.vocab import Vocab
from tests.helpers import run

VOCAB = Vocab("abcd \n")
SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare.txt"


def one_stream_bits(model: Model, ids: np.ndarray) -> np.ndarray:
    """Every character's surprisal from everything before it, one step at a time."""
    stepper, bits = model.stepper(1), [math.nan]
    for a, b in zip(ids[:-1], ids[1:], strict=True):
        bits.append(-log_softmax(stepper.step(np.array([a])))[0, b] / math.log(2))
    return np.array(bits)


@pytest.fixture
def model() -> Model:
    return Model(len(VOCAB), "lstm", 8, 2, dtype="float64", seed=3)


def random_ids(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, len(VOCAB), n)


def test_short_texts_are_scored_in_one_stream_exactly(model):
    ids = random_ids(300)
    bits = char_surprisal(model, ids)
    assert np.isnan(bits[0])
    assert bits[1:] == pytest.approx(one_stream_bits(model, ids)[1:], rel=1e-12)
    total, count = score(model, ids, 1, 1000)  # the whole-file scorer, one stream
    assert count == 299 and np.sum(bits[1:]) * math.log(2) == pytest.approx(total, rel=1e-12)


def test_parts_read_their_context_first(model, monkeypatch):
    ids = random_ids(2000, seed=1)
    exact = one_stream_bits(model, ids)
    monkeypatch.setattr(evaluate, "SEGMENT", 100)
    monkeypatch.setattr(evaluate, "CONTEXT", 2000)  # every part reads all that precedes it
    assert char_surprisal(model, ids, streams=7)[1:] == pytest.approx(exact[1:], rel=1e-12)
    monkeypatch.setattr(evaluate, "CONTEXT", 50)
    approx = char_surprisal(model, ids, streams=7)
    assert approx[1:286] == pytest.approx(exact[1:286], rel=1e-12)  # part 1 (of 1999 // 7): exact
    assert not np.isnan(approx[1:]).any()
    assert np.abs(approx - exact)[1:].max() < 0.1  # the others: 50 characters of context


def test_characters_outside_the_vocabulary_are_left_out_and_marked(model):
    text = "ab☃cd\nZa"
    bits = text_surprisal(model, VOCAB, text)
    assert np.isnan(bits[[0, 2, 6]]).all() and not np.isnan(bits[[1, 3, 4, 5, 7]]).any()
    assert bits[[1, 3, 4, 5, 7]] == pytest.approx(
        one_stream_bits(model, VOCAB.encode("abcd\na"))[1:], rel=1e-12
    )


def test_lines_average_their_characters_but_not_their_newline():
    text = "ab\n\ncd e\nlast"
    bits = np.arange(len(text), dtype=float)
    bits[0] = np.nan
    lines = line_surprisal(text, bits)
    assert [(s.number, s.text, s.chars) for s in lines] == [
        (1, "ab", 1), (2, "", 0), (3, "cd e", 4), (4, "last", 4)
    ]  # fmt: skip
    assert [s.bits for s in lines[:1] + lines[2:]] == [1.0, 5.5, 10.5]
    assert math.isnan(lines[1].bits)
    assert [s.number for s in most_surprising(lines)] == [4, 3, 1, 2]  # unscored last
    crlf = line_surprisal("a\r\nb\r\n", np.ones(6))
    assert [(s.text, s.chars) for s in crlf] == [("a\r", 2), ("b\r", 2)]
    tied = line_surprisal("x\nyy\nz\n", np.array([2.0, 9.0, 2.0, 2.0, 9.0, 5.0, 9.0]))
    assert [s.number for s in most_surprising(tied)] == [3, 1, 2]  # equal means keep their order
    assert line_surprisal("", np.array([])) == []


# -- the command ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("surprisal")
    corpus = folder / "corpus.txt"
    corpus.write_text("the cat\tsat on the mat.\\\n" * 200, encoding="utf-8")
    run("train", corpus, "--out", folder / "run", "--max-steps", "5", "--hidden-size", "8",
        "--num-layers", "1", "--batch-size", "4", "--seq-length", "8", "--quiet")  # fmt: skip
    return folder / "run"


def test_per_char_table_and_json(tiny_run, tmp_path):
    held = tmp_path / "held.txt"
    held.write_text("the cat\tsat ☃\\\n", encoding="utf-8")
    result = run("eval", tiny_run, held, "--per-char")
    lines = result.stdout.splitlines()
    assert lines[0] == "index\tchar\tbits"
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[0] for r in rows] == [str(i) for i in (*range(1, 12), 13, 14)]  # 12 is left out
    assert [r[1] for r in rows[2:9]] == ["\\s", "c", "a", "t", "\\t", "s", "a"]
    assert [r[1] for r in rows[-3:]] == ["\\s", "\\\\", "\\n"]
    assert result.stderr.strip().endswith("outside the vocabulary: '☃'")
    records = json.loads(run("eval", tiny_run, held, "--per-char", "--json").stdout)
    assert [(r["index"], r["char"]) for r in records][:3] == [(1, "h"), (2, "e"), (3, " ")]
    assert [f"{r['bits']:.4f}" for r in records] == [r[2] for r in rows]


def test_per_line_ranks_and_cuts(tiny_run, tmp_path):
    held = tmp_path / "held.txt"
    held.write_text("the cat sat.\nmat sat the cat\ntttt cccc\n", encoding="utf-8")
    table = run("eval", tiny_run, held, "--per-line").stdout.splitlines()
    assert table[0] == "line\tbits_per_char\tchars\ttext"
    rows = [line.split("\t") for line in table[1:]]
    assert sorted(r[0] for r in rows) == ["1", "2", "3"]
    assert [float(r[1]) for r in rows] == sorted((float(r[1]) for r in rows), reverse=True)
    top = json.loads(run("eval", tiny_run, held, "--per-line", "--top", "2", "--json").stdout)
    assert [r["line"] for r in top] == [int(r[0]) for r in rows[:2]]
    assert set(top[0]) == {"line", "bits_per_char", "chars", "text"}


@pytest.mark.parametrize("args, needle", [
    (["FILE", "--split", "val"], "--split"),
    (["FILE", "--per-char", "--per-line"], "one of"),
    (["--per-line"], "TEXTFILE"),
    (["FILE", "--top", "3"], "--per-line"),
    (["FILE", "--batch-size", "1000000000"], "--batch-size"),
    (["FILE", "--seq-length", "0"], "--seq-length"),
    (["FILE", "--per-line", "--top", "0"], "--top"),
])  # fmt: skip
def test_eval_usage_errors(tiny_run, tmp_path, args, needle):
    held = tmp_path / "held.txt"
    held.write_text("the cat\n", encoding="utf-8")
    result = run("eval", tiny_run, *[held if a == "FILE" else a for a in args], code=2)
    assert needle in result.stderr and "Traceback" not in result.output


def test_a_window_too_big_for_the_machine_is_refused_with_both_figures(tiny_run, tmp_path,
                                                                       monkeypatch):  # fmt: skip
    held = tmp_path / "held.txt"
    held.write_text("the cat\n", encoding="utf-8")
    monkeypatch.setattr(evaluate, "available_bytes", lambda: 2**30)
    big = ["--batch-size", "10000", "--seq-length", "10000"]
    result = run("eval", tiny_run / "best.npz", held, *big, code=2)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("rnn: error: --batch-size 10000 x --seq-length 10000 needs about")
    assert line.endswith("over half of the 1.0 GiB available; use smaller values")


def test_files_that_cannot_be_scored_per_character(tiny_run, tmp_path, monkeypatch):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"the cat \xff\xfe sat\n")
    assert "byte offset 8" in run("eval", tiny_run, bad, "--per-char", code=1).stderr
    assert "regular file" in run("eval", tiny_run, tmp_path, "--per-line", code=1).stderr
    assert "no such file" in run("eval", tiny_run, tmp_path / "none", "--per-line", code=1).stderr
    big = tmp_path / "big.txt"
    big.write_text("the cat\n" * 100, encoding="utf-8")
    monkeypatch.setattr(evaluate, "SCORED_FILE_LIMIT", 500)
    assert "at most 500" in run("eval", tiny_run, big, "--per-line", code=1).stderr


# -- a real model finds the odd line --------------------------------------------------------------


@pytest.fixture(scope="session")
def shakespeare_model(tmp_path_factory) -> Path:
    if not SHAKESPEARE.exists():
        pytest.skip(f"needs the tiny shakespeare corpus at {SHAKESPEARE.name} beside the project")
    folder = tmp_path_factory.mktemp("shakespeare")
    corpus = folder / "train.txt"
    corpus.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:200_000], encoding="utf-8")
    run("train", corpus, "--out", folder / "run", "--max-steps", "200", "--model", "gru",
        "--hidden-size", "64", "--num-layers", "1", "--batch-size", "32", "--seq-length", "64",
        "--workers", "1", "--eval-every", "1000", "--val-fraction", "0.05",
        "--test-fraction", "0", "--quiet")  # fmt: skip
    return folder / "run"


def test_an_inserted_line_of_random_characters_ranks_first(shakespeare_model, tmp_path):
    text = SHAKESPEARE.read_text(encoding="utf-8")[300_000:302_000]
    lines = text.split("\n")[1:-1]  # whole lines only
    rng = np.random.default_rng(0)
    letters = sorted(set(text) - {"\n"})
    odd = "".join(rng.choice(letters, 40))
    lines.insert(len(lines) // 2, odd)
    held = tmp_path / "held.txt"
    held.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ranked = json.loads(run("eval", shakespeare_model, held, "--per-line", "--json").stdout)
    assert ranked[0]["text"] == odd and ranked[0]["line"] == len(lines) // 2 + 1
    assert len(ranked) == len(lines)
