"""Growing a model's vocabulary for fine-tuning: the parameter surgery (properties over random
models and vocabularies) and `rnn train --init-from` onto a corpus with new characters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnncli.checkpoint import load_checkpoint
from rnncli.growvocab import INPUT_INITS, grow_params, growth_note, new_bias, shown_char
from rnncli.model import Model
from tests.helpers import READERS, TINY, run, tiny

ROOT = Path(__file__).resolve().parents[1]
ALPHABET = "abcdefghijklmnopqrstuvwxyz .,\n\u00e9\u00e8\u00fc\u00df\u4e00\u00a0"


def _vocab(chars) -> str:
    return "".join(sorted(set(chars)))


@st.composite
def grown_models(draw):
    """(model over old chars, old chars, new chars, init, text of old chars)."""
    old = _vocab(draw(st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=12)))
    extra = draw(st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=8))
    new = _vocab(old + "".join(extra))
    cell = draw(st.sampled_from(Model.CELLS))
    embedding = draw(st.sampled_from([0, 3]))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    seed = draw(st.integers(0, 2**16))
    model = Model(len(old), cell, hidden_size=5, num_layers=draw(st.integers(1, 2)),
                  dtype=dtype, seed=seed, embedding_size=embedding)  # fmt: skip
    rng = np.random.default_rng(seed)
    model.params["out.b"] = rng.normal(0, 2, len(old)).astype(dtype)  # a trained-looking bias
    text = draw(st.lists(st.sampled_from(old), min_size=1, max_size=10))
    return model, old, new, draw(st.sampled_from(sorted(INPUT_INITS))), "".join(text)


def _logits(model: Model, chars: str, text: str) -> np.ndarray:
    stepper = model.stepper()
    return np.stack([stepper.step([chars.index(ch)])[0].copy() for ch in text])


@settings(max_examples=60, deadline=None)
@given(grown_models())
def test_old_characters_predict_the_same_up_to_the_renormalisation(case):
    model, old, new, init, text = case
    grown = grow_params(model.params, old, new, init, np.random.default_rng(1))
    bigger = Model.from_params(grown, model.cell)
    kept = [new.index(ch) for ch in old]
    before, after = _logits(model, old, text), _logits(bigger, new, text)
    # the same hidden states, so the same logits for the old characters (up to the rounding
    # of a product of another shape)
    tol = 1e-5 if model.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(after[:, kept], before, rtol=tol, atol=tol)
    # their probabilities are the old ones times (1 - the mass on the new characters)
    logp_before = before - np.logaddexp.reduce(before.astype(np.float64), axis=1, keepdims=True)
    after64 = after.astype(np.float64)
    logp_after = after64 - np.logaddexp.reduce(after64, axis=1, keepdims=True)
    added = [i for i in range(len(new)) if new[i] not in old]
    new_mass = np.exp(logp_after[:, added]).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(logp_after[:, kept], logp_before + np.log1p(-new_mass), atol=tol)


@settings(max_examples=60, deadline=None)
@given(grown_models())
def test_shapes_dtypes_and_every_other_weight_are_kept(case):
    model, old, new, init, _ = case
    grown = grow_params(model.params, old, new, init, np.random.default_rng(1))
    expected = Model.param_shapes(len(new), model.cell, model.hidden_size, model.num_layers,
                                  model.embedding_size)  # fmt: skip
    assert {k: v.shape for k, v in grown.items()} == expected
    kept = [new.index(ch) for ch in old]
    added = [i for i in range(len(new)) if new[i] not in old]
    table = "embed.W" if model.embedding_size else "rnn.0.Wx"
    for name, p in model.params.items():
        assert grown[name].dtype == p.dtype, name
        if name == table:
            np.testing.assert_array_equal(grown[name][kept], p)
        elif name == "out.W":
            np.testing.assert_array_equal(grown[name][:, kept], p)
            assert not grown[name][:, added].any()  # a new column starts at zero
        elif name == "out.b":
            np.testing.assert_array_equal(grown[name][kept], p)
        else:
            np.testing.assert_array_equal(grown[name], p)
    if init == "mean":
        mean = model.params[table].astype(np.float64).mean(axis=0)
        tol = 1e-6 if model.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(
            grown[table][added], np.broadcast_to(mean, (len(added), mean.size)), atol=tol
        )


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-30, 30), min_size=1, max_size=50), st.integers(2, 200))
def test_a_new_characters_bias_gives_it_the_prior_at_a_zero_hidden_state(bias, size):
    b = np.array(bias)
    size = max(size, b.size + 1)
    logits = np.append(b, new_bias(b, size))
    p = np.exp(logits - np.logaddexp.reduce(logits))
    # exp(b_new) = sum(exp(b_old)) / size: its share is 1 / (size + 1)
    assert p[-1] == pytest.approx(1 / (size + 1), rel=1e-9)


def test_grow_params_refuses_what_does_not_fit():
    model = Model(3, "lstm", hidden_size=4, num_layers=1)
    with pytest.raises(ValueError, match="lacks"):
        grow_params(model.params, "abc", "abd")
    with pytest.raises(ValueError, match="fit"):
        grow_params(model.params, "ab", "abc")
    with pytest.raises(ValueError, match="init"):
        grow_params(model.params, "abc", "abcd", init="zeros")


def test_the_note_names_the_added_characters_visibly():
    note = growth_note("abc", "\t\n a\u00a0bc\u00e9\u200b\x1b")
    assert note.startswith("the vocabulary grows from 3 to 10 characters, adding 7:")
    assert note.endswith(r"\t \n \x20 \xa0 é \u200b \x1b")
    assert "\x1b" not in note and "\n" not in note
    assert shown_char("\x1b") == r"\x1b" and shown_char("\U000e0001") == r"\U000e0001"
    many = growth_note("a", "a" + "".join(chr(0x4E00 + i) for i in range(100)))
    assert many.endswith("and 60 more") and len(many) < 300


# -- rnn train --init-from ----------------------------------------------------------------------


@pytest.fixture
def base(tmp_path, corpus):
    out = tmp_path / "base"
    run("train", corpus, "--out", out, "--max-steps", "6", "--quiet", *TINY)
    return out


@pytest.fixture
def accented(tmp_path):
    path = tmp_path / "accented.txt"
    rng = np.random.default_rng(3)
    words = ["the ", "caf\u00e9 ", "na\u00efve ", "\u00fcber ", "cat\n", "sat. "]
    path.write_text("".join(rng.choice(words, size=600)), encoding="utf-8")
    return path


def test_init_from_grows_the_vocabulary_and_every_command_reads_the_result(
    tmp_path, base, accented
):
    out = tmp_path / "ft"
    result = run("train", accented, "--out", out, "--init-from", base / "last.npz",
                 "--max-steps", "6", "--quiet", *TINY)  # fmt: skip
    old, new = load_checkpoint(base / "last.npz"), load_checkpoint(out / "last.npz")
    assert set(old.vocab) < set(new.vocab)
    assert set(new.vocab) - set(old.vocab) == set("bfv\u00e9\u00ef\u00fc")
    notes = [line for line in result.stderr.splitlines() if "vocabulary grows" in line]
    assert len(notes) == 1 and notes[0].endswith("adding 6: b f v \u00e9 \u00ef \u00fc")
    info = json.loads(run("info", out, "--json").stdout)
    assert info["vocab_size"] == len(new.vocab)
    run("sample", out, "--length", "20", "--prime", "caf\u00e9", "--seed", "1")
    run("eval", out, accented)
    run("eval", out, "--split", "test")
    run("eval", out, accented, "--per-line", "--top", "2")
    run("report", out, "--out", tmp_path / "report.html")
    run("export", out, "--out", tmp_path / "page.html")
    written = subprocess.run(  # write reads turns from a pipe; é is a character it now knows
        [sys.executable, "-m", "rnncli", "write", str(out / "last.npz"), "--seed", "1",
         "--length", "5"], input="caf\u00e9\n", capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8"},
    )  # fmt: skip
    assert written.returncode == 0 and written.stderr == "", written.stderr
    run("train", accented, "--out", out, "--resume", "--max-steps", "8", "--quiet")
    assert load_checkpoint(out / "last.npz").vocab == new.vocab
    assert {"sample", "eval", "info", "report", "export", "write"} <= set(READERS)


def test_no_grow_vocab_refuses_new_characters_and_writes_nothing(tmp_path, base, accented):
    out = tmp_path / "ft"
    result = run("train", accented, "--out", out, "--init-from", base / "last.npz",
                 "--no-grow-vocab", "--quiet", *TINY, code=1)  # fmt: skip
    assert "not in the model's vocabulary" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
    config = tmp_path / "c.yaml"
    config.write_text("grow_vocab: false\n", encoding="utf-8")
    run("train", accented, "--out", out, "--init-from", base / "last.npz",
        "--config", config, "--quiet", *TINY, code=1)  # fmt: skip
    config.write_text("grow_vocab: 0\n", encoding="utf-8")
    result = run("train", accented, "--out", out, "--config", config, *TINY, code=2)
    assert "grow_vocab: expected true or false" in result.stderr


def test_growing_past_max_vocab_is_refused_before_any_work(tmp_path, base, accented):
    out = tmp_path / "ft"
    size = len(load_checkpoint(base / "last.npz").vocab)
    result = run("train", accented, "--out", out, "--init-from", base / "last.npz",
                 "--max-vocab", size + 1, "--quiet", *TINY, code=1)  # fmt: skip
    assert f"more than max_vocab={size + 1}" in result.stderr
    assert not (out / "last.npz").exists()


@pytest.mark.parametrize("shape", [["--model", "gru"], ["--hidden-size", "12"]])
def test_a_clashing_shape_is_refused_with_a_grown_vocabulary_too(tmp_path, base, accented, shape):
    out = tmp_path / "ft"
    result = run("train", accented, "--out", out, "--init-from", base / "last.npz",
                 *tiny(drop=("model", "hidden_size")), *shape, "--quiet", code=1)  # fmt: skip
    assert "holds a model of shape lstm 2x8" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("extra", [["--embedding-size", "4"], ["--model", "gru"]])
def test_other_cells_and_embeddings_grow_too(tmp_path, corpus, accented, extra):
    tiny_ = tiny(drop=("model",))  # all but the cell
    run("train", corpus, "--out", tmp_path / "b", "--max-steps", "4", "--quiet", *tiny_, *extra)
    run("train", accented, "--out", tmp_path / "ft", "--init-from", tmp_path / "b/last.npz",
        "--max-steps", "4", "--quiet", *tiny_)  # fmt: skip
    ckpt = load_checkpoint(tmp_path / "ft/last.npz")
    table = "embed.W" if "--embedding-size" in extra else "rnn.0.Wx"
    assert ckpt.params[table].shape[0] == len(ckpt.vocab) == ckpt.params["out.W"].shape[1]
