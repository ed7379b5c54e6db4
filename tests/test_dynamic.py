"""Dynamic evaluation: each segment scored before the step on it, the rule as documented, the
caller's weights untouched, and `rnn eval --dynamic` with every output form."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnncli.dynamic import (
    DEFAULT_LR,
    DEFAULT_SEGMENT,
    DynamicSettings,
    dynamic_score,
    dynamic_surprisal,
    segment_losses,
)
from rnncli.evaluate import score
from rnncli.model import Model
from tests.helpers import TINY, run


def _model(cell="lstm", dtype="float64", seed=0, embedding=0) -> Model:
    return Model(7, cell, hidden_size=6, num_layers=2, dtype=dtype, seed=seed,
                 embedding_size=embedding)  # fmt: skip


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(Model.CELLS), st.integers(1, 4), st.integers(1, 9), st.integers(0, 99))
def test_position_losses_are_the_terms_of_the_mean_loss(cell, B, T, seed):
    model = _model(cell, seed=seed)
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 7, (B, T)), rng.integers(0, 7, (B, T))
    loss, _, cache = model.forward(x, y, model.zero_state(B))
    nats = model.position_losses(cache)
    assert nats.shape == (B, T)
    assert nats.mean() == pytest.approx(loss, rel=1e-12)
    # each term is -ln of the softmax at that position, as the step-by-step inference gives it
    stepper = model.stepper(B)
    for t in range(T):
        z = stepper.step(x[:, t]).astype(np.float64)
        log_p = z - np.logaddexp.reduce(z, axis=1, keepdims=True)
        np.testing.assert_allclose(nats[:, t], -log_p[np.arange(B), y[:, t]], rtol=1e-10)


def test_position_losses_refuse_a_used_or_stale_cache():
    model = _model()
    x = np.zeros((1, 3), dtype=int)
    _, _, cache = model.forward(x, x, model.zero_state(1))
    model.backward(cache)
    with pytest.raises(ValueError, match="backward"):
        model.position_losses(cache)
    _, _, old = model.forward(x, x, model.zero_state(1))
    model.forward(x, x, model.zero_state(1))
    with pytest.raises(ValueError, match="stale"):
        model.position_losses(old)


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(Model.CELLS), st.integers(1, 12), st.integers(2, 60))
def test_without_steps_it_is_static_scoring_of_one_stream(cell, segment, n):
    model = _model(cell)
    ids = np.random.default_rng(n).integers(0, 7, n)
    total, count = dynamic_score(model, ids, DynamicSettings(lr=0.0, segment=segment))
    static_total, static_count = score(model, ids, 1, segment)
    assert count == static_count == n - 1
    assert total == pytest.approx(static_total, rel=1e-10)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(Model.CELLS), st.integers(1, 8), st.integers(3, 40), st.data())
def test_a_character_is_scored_only_from_the_characters_before_it(cell, segment, n, data):
    model = _model(cell, embedding=data.draw(st.sampled_from([0, 3])))
    ids = np.array(data.draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)))
    cut = data.draw(st.integers(1, n - 1))
    other = ids.copy()
    other[cut:] = (other[cut:] + 1) % 7  # a different continuation after position cut - 1
    rule = DynamicSettings(lr=0.5, segment=segment, decay=0.1)
    a, b = dynamic_surprisal(model, ids, rule), dynamic_surprisal(model, other, rule)
    # predictions of positions 1 .. cut - 1 read only ids[:cut], which the two texts share
    np.testing.assert_array_equal(a[1:cut], b[1:cut])
    assert np.isnan(a[0]) and np.isfinite(a[1:]).all()


@pytest.mark.parametrize("decay", [0.0, 0.2])
def test_the_step_is_sgd_with_decay_toward_the_trained_weights(decay):
    model = _model("gru")
    ids = np.random.default_rng(1).integers(0, 7, 13)
    rule = DynamicSettings(lr=0.3, segment=4, decay=decay)
    got = list(segment_losses(model, ids, rule))
    # by hand: the same segments, the same carried state, the update written out
    params = {k: p.copy() for k, p in model.params.items()}
    state = model.zero_state(1)
    for k, start in enumerate(range(0, 12, 4)):
        adapted = Model.from_params({k: p.copy() for k, p in params.items()}, "gru")
        x, y = ids[None, start : start + 4], ids[None, start + 1 : start + 5]
        _, state, cache = adapted.forward(x, y, state)
        np.testing.assert_allclose(got[k], adapted.position_losses(cache)[0], rtol=1e-12)
        grads, _ = adapted.backward(cache)
        for name in params:
            stepped = params[name] - 0.3 * grads[name]
            params[name] = stepped + decay * (model.params[name] - stepped)
    assert len(got) == 3


def test_the_callers_weights_never_change_and_adapting_helps_on_repeated_text():
    model = Model(7, "lstm", hidden_size=16, num_layers=2, dtype="float32")
    before = {k: p.copy() for k, p in model.params.items()}
    ids = np.tile(np.arange(5), 100)
    static, n = dynamic_score(model, ids, DynamicSettings(lr=0.0, segment=20))
    adapted, _ = dynamic_score(model, ids, DynamicSettings(lr=3.0, segment=20))
    for name, p in model.params.items():
        np.testing.assert_array_equal(p, before[name])
    assert adapted / n < static / n - 0.3  # a text repeating itself is learnt as it is read


def test_bad_settings_are_refused():
    for bad in (dict(lr=-1.0), dict(lr=math.nan), dict(segment=0), dict(segment=2.5),
                dict(decay=1.0)):  # fmt: skip
        with pytest.raises(ValueError):
            DynamicSettings(**bad)


# -- rnn eval --dynamic ---------------------------------------------------------------------------


@pytest.fixture
def trained(tmp_path, corpus):
    out = tmp_path / "run"
    run("train", corpus, "--out", out, "--max-steps", "6", "--quiet", *TINY)
    return out


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_eval_dynamic_scores_a_file_and_a_split_and_leaves_the_checkpoint(
    tmp_path, trained, corpus
):
    ckpt = trained / "last.npz"
    digest = _digest(ckpt)
    static = json.loads(run("eval", ckpt, corpus, "--json").stdout)
    dynamic = json.loads(run("eval", ckpt, corpus, "--json", "--dynamic").stdout)
    assert dynamic["dynamic"] == {"lr": DEFAULT_LR, "segment": DEFAULT_SEGMENT, "decay": 0.0}
    assert "dynamic" not in static
    assert dynamic["chars"] == len(corpus.read_text()) - 1  # one stream: all but the first
    assert math.isfinite(dynamic["loss"]) and dynamic["loss"] != static["loss"]
    zero = json.loads(run("eval", ckpt, corpus, "--json", "--dynamic", "--dynamic-lr", "0",
                          "--dynamic-segment", "100").stdout)  # fmt: skip
    assert zero["loss"] == pytest.approx(
        json.loads(run("eval", ckpt, corpus, "--json", "--batch-size", "1").stdout)["loss"],
        rel=1e-5,
    )
    text = run("eval", ckpt, corpus, "--dynamic", "--dynamic-lr", "0.01").stdout
    assert "(dynamic: lr 0.01, segment 50)" in text.splitlines()[0]
    split = run("eval", ckpt, "--split", "test", "--dynamic").stdout
    assert "test split" in split and "dynamic" in split
    assert _digest(ckpt) == digest


def test_eval_dynamic_per_char_and_per_line(tmp_path, trained, corpus):
    ckpt = trained / "last.npz"
    rows = json.loads(run("eval", ckpt, corpus, "--per-char", "--json", "--dynamic").stdout)
    static = json.loads(run("eval", ckpt, corpus, "--per-char", "--json").stdout)
    assert [r["index"] for r in rows] == [r["index"] for r in static]
    assert len(rows) == len(corpus.read_text()) - 1  # every character but the first
    assert all(r["bits"] is not None for r in rows)
    assert [r["bits"] for r in rows] != [r["bits"] for r in static]
    lines = run("eval", ckpt, corpus, "--per-line", "--top", "3", "--dynamic").stdout
    assert len(lines.strip().splitlines()) == 4  # header and three lines


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--dynamic-lr", "0.1"], "add --dynamic"),
        (["--dynamic-segment", "10"], "add --dynamic"),
        (["--dynamic", "--batch-size", "5"], "drop --batch-size"),
        (["--dynamic", "--seq-length", "5"], "drop --seq-length"),
        (["--dynamic", "--dynamic-lr", "nan"], "finite"),
        (["--dynamic", "--dynamic-lr", "-1"], "dynamic-lr"),
        (["--dynamic", "--dynamic-segment", "0"], "dynamic-segment"),
        (["--dynamic", "--dynamic-segment", "10001"], "dynamic-segment"),
    ],
)
def test_eval_dynamic_refuses_options_it_would_ignore_or_cannot_take(trained, corpus, args, needle):
    result = run("eval", trained / "last.npz", corpus, *args, code=2)
    assert needle in result.output
