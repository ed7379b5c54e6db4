"""The smaller edges: encodings that need a byte-order mark, a closed stdin, temperatures that
underflow, a long beam search, and the byte offset named for invalid text."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnncli.cli
from rnncli.errors import CorpusError
from rnncli.excerpt import from_file
from rnncli.sample import drawer, next_char_distribution
from rnncli.vocab import Vocab
from tests.crafted import train_tiny
from tests.helpers import one_error_line, run, tiny, write_corpus

ROOT = Path(__file__).resolve().parent.parent
USING = ("rnn: using ",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("edges"))


@pytest.fixture(scope="module")
def trained_utf16(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("utf16")
    corpus = write_corpus(folder / "plain.txt")
    (folder / "corpus.txt").write_text(corpus.read_text(), encoding="utf-16")  # with a BOM
    out = folder / "run"
    run("train", folder / "corpus.txt", "--out", out, "--quiet", "--encoding", "utf-16",
        *tiny(max_steps=4))  # fmt: skip
    return out


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_training_on_text_without_a_byte_order_mark_is_one_line(tmp_path, encoding):
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(("the cat sat on the mat\n" * 50).encode(encoding)[4:])  # BOM cut off
    result = run("train", corpus, "--out", tmp_path / "run", "--encoding", encoding,
                 *tiny(max_steps=2), code=1)  # fmt: skip
    assert f"not valid {encoding}" in one_error_line(result)


@pytest.mark.parametrize("command", ["eval", "per-char", "report"])
def test_reading_text_without_a_byte_order_mark_is_one_line(trained_utf16, tmp_path, command):
    text = tmp_path / "t.txt"
    text.write_bytes("the cat sat on the mat\n".encode("utf-16-le"))
    args = {
        "eval": ("eval", trained_utf16, text),
        "per-char": ("eval", trained_utf16, text, "--per-char"),
        "report": ("report", trained_utf16, "--text", text, "--out", tmp_path / "r.html"),
    }[command]
    result = run(*args, code=1)
    assert "not valid utf-16" in one_error_line(result, ignore=USING)


@given(
    prefix=st.text(alphabet="ab \né", min_size=0, max_size=40),
    pad=st.sampled_from([0, (1 << 16) - 3, (1 << 16) + 5]),
)
@settings(max_examples=30, deadline=None)
def test_report_text_names_the_byte_offset_of_the_first_invalid_byte(tmp_path_factory, prefix, pad):
    folder = tmp_path_factory.mktemp("offset")
    good = ("a" * pad + prefix).encode("utf-8")
    path = folder / "t.txt"
    path.write_bytes(good + b"\xff rest")
    with pytest.raises(CorpusError, match=f"at byte offset {len(good)} "):
        from_file(path, Vocab("ab \né"), 10**9, "utf-8")


def test_write_with_stdin_closed_ends_quietly(trained):
    done = subprocess.run(
        f'"{sys.executable}" -m rnncli write "{trained}" <&-',
        shell=True, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("extra", [(), ("--top-k", "5"), ("--top-p", "0.5"), ("--top-k", "1")])
@pytest.mark.parametrize("temperature", ["1e-320", "5e-324", "1e-300"])
def test_a_vanishing_temperature_draws_the_likeliest_characters(trained, temperature, extra):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning may leak
        low = run("sample", trained, "--temperature", temperature, "--length", "30", *extra)
    greedy = run("sample", trained, "--argmax", "--length", "30")
    assert low.stdout == greedy.stdout and low.stdout.strip()


@given(
    logits=st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=12),
    temperature=st.floats(5e-324, 1e3, exclude_min=False),
    top_k=st.integers(0, 12),
    top_p=st.floats(0.01, 1.0),
)
@settings(max_examples=150, deadline=None)
def test_sampling_distributions_stay_finite_at_any_temperature(logits, temperature, top_k, top_p):
    z = np.array(logits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = next_char_distribution(z, temperature, top_k, top_p)
        full = next_char_distribution(z, temperature)
        picked, _ = drawer(temperature, 0, 1.0, False, len(z), False)(z[None, :], np.array([0.5]))
    assert np.isfinite(p).all() and abs(p.sum() - 1) < 1e-9
    assert p[full == full.max()].sum() > 0  # a likeliest character can always be drawn
    assert 0 <= picked[0] < len(z)


def test_a_long_beam_search_says_what_it_is_doing(trained, monkeypatch):
    monkeypatch.setattr(rnncli.cli, "LONG_BEAM", 10)
    result = run("sample", trained, "--beam", "2", "--length", "10")
    assert "written as it becomes certain" in result.stderr
    quiet = run("sample", trained, "--beam", "2", "--length", "4")
    assert "beam search of" not in quiet.stderr
