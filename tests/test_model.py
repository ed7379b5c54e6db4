"""Model: parameters, whole-model gradient checks, state carrying, precision, learning."""

import numpy as np
import pytest

from rnncli import cells
from rnncli.config import load_config
from rnncli.gradcheck import check_model_gradients, numerical_gradient, rel_error
from rnncli.model import Model
from rnncli.optim import OPTIMIZERS, make_optimizer

CELLS = tuple(cells.CELLS)
# The checkpoint format of each built-in cell: its gate count G and parameters after Wx, Wh, b.
# The checkpoint format: gate blocks, whether there is a recurrent Wh, the (H,) vectors after b.
FORMAT = {"rnn": (1, True, ()), "lstm": (4, True, ()), "gru": (3, True, ("bh",)),
          "mingru": (2, False, ()), "minlstm": (3, False, ())}  # fmt: skip


def batch(V, B, T, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))


@pytest.mark.parametrize("cell", CELLS)
def test_parameter_names_shapes_and_dtype(cell):
    model = Model(11, cell, hidden_size=8, num_layers=3)
    G, recurrent, vectors = FORMAT[cell]
    expected = {}
    for layer, D in enumerate((11, 8, 8)):
        expected[f"rnn.{layer}.Wx"] = (D, G * 8)
        expected |= {f"rnn.{layer}.Wh": (8, G * 8)} if recurrent else {}
        expected[f"rnn.{layer}.b"] = (G * 8,)
        expected |= {f"rnn.{layer}.{name}": (8,) for name in vectors}
    expected |= {"out.W": (8, 11), "out.b": (11,)}
    assert list(model.params) == list(expected)  # layer 0 .. L-1, then the output layer
    assert {k: p.shape for k, p in model.params.items()} == expected
    assert all(p.dtype == np.float32 for p in model.params.values())
    assert model.num_params == sum(int(np.prod(s)) for s in expected.values())
    assert model.zero_state(5).shape == (3, 2 if cell == "lstm" else 1, 5, 8)
    assert Model(11, cell, 8, 1, dtype="float64").params["out.W"].dtype == np.float64


def test_from_config_builds_the_configured_model():
    cfg = load_config(overrides={"model": "gru", "hidden_size": 7, "num_layers": 3,
                                 "dropout": 0.25, "dtype": "float64", "seed": 9})  # fmt: skip
    model = Model.from_config(cfg, 13)
    expected = Model(13, "gru", 7, 3, dropout=0.25, dtype="float64", seed=9)
    assert (model.cell, model.hidden_size, model.num_layers, model.dropout, model.dtype) == (
        "gru", 7, 3, 0.25, np.float64)  # fmt: skip
    for name, p in expected.params.items():
        np.testing.assert_array_equal(model.params[name], p)
    drawn = Model.from_config(cfg, 13, np.random.default_rng(9))  # a generator instead
    np.testing.assert_array_equal(drawn.params["rnn.2.Wh"], expected.params["rnn.2.Wh"])


def test_initialisation_is_seeded_and_documented_scale():
    a, b, c = (Model(9, "lstm", 16, 2, seed=s) for s in (3, 3, 4))
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert not np.array_equal(a.params["rnn.0.Wh"], c.params["rnn.0.Wh"])
    assert np.abs(a.params["rnn.1.Wx"]).max() <= 1 / np.sqrt(16)
    assert not a.params["rnn.0.b"].any()  # forget_bias 0 by default
    assert np.abs(a.params["rnn.0.Wx"]).max() > 0.9  # one-hot rows: ±1


@pytest.mark.parametrize("cell", CELLS)
def test_forget_bias_sets_the_declared_forget_gate_block_only(cell):
    declared = cells.get(cell)
    if declared.forget_gate is None:
        with pytest.raises(ValueError, match="no forget gate"):
            Model(9, cell, 4, 2, forget_bias=1.0)
        model = Model(9, cell, 4, 2, forget_bias=0.0)
        assert not any(model.params[f"rnn.{layer}.b"].any() for layer in range(2))
        return
    # f in the blocks [i; f; o; g] of an LSTM, [f; i; h~] of a minLSTM
    assert (cell, declared.forget_gate) in (("lstm", 1), ("minlstm", 0))
    plain, opened = Model(9, cell, 4, 2, seed=5), Model(9, cell, 4, 2, seed=5, forget_bias=1.5)
    for name, p in plain.params.items():
        if not name.endswith(".b"):
            np.testing.assert_array_equal(opened.params[name], p)  # the same draws
    for layer in range(2):
        bias = opened.params[f"rnn.{layer}.b"]
        block = slice(4 * declared.forget_gate, 4 * declared.forget_gate + 4)
        np.testing.assert_array_equal(bias[block], 1.5)
        bias[block] = 0
        assert not bias.any()
    with pytest.raises(ValueError, match="finite"):
        Model(9, cell, 4, 2, forget_bias=float("nan"))


def test_embedding_parameters_and_initialisation():
    model = Model(40, "gru", 16, 2, seed=2, embedding_size=6)
    shapes = {k: p.shape for k, p in model.params.items()}
    assert list(shapes)[0] == "embed.W" and shapes["embed.W"] == (40, 6)
    assert shapes["rnn.0.Wx"] == (6, 48) and shapes["rnn.1.Wx"] == (16, 48)
    assert shapes == Model.param_shapes(40, "gru", 16, 2, embedding_size=6)
    assert 0.8 < model.params["embed.W"].std() < 1.2  # N(0, 1) rows
    assert np.abs(model.params["rnn.0.Wx"]).max() <= 1 / np.sqrt(16)  # like the other layers
    assert model.embedding_size == 6 and Model(40, "gru", 16, 2).embedding_size == 0
    assert "embed.W" not in Model.param_shapes(40, "gru", 16, 2)
    with pytest.raises(ValueError, match="embedding_size"):
        Model(40, "gru", 16, 2, embedding_size=-1)


@pytest.mark.parametrize("kwargs", [dict(cell="cnn"), dict(dropout=1.0), dict(dtype="int32"),
                                    dict(hidden_size=0), dict(num_layers=1.5)])  # fmt: skip
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        Model(5, **kwargs)


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dropout, mask", [(0.0, False), (0.3, True)], ids=["plain", "drop-mask"])
@pytest.mark.parametrize("embedding_size", [0, 3])
def test_model_gradients(cell, num_layers, dropout, mask, embedding_size):
    """Every parameter's and the initial state's gradient against centred differences, with a
    non-zero carried state, and with a mask and dropout (a fixed mask) on; with and without a
    learnt embedding (whose embed.W is then checked too)."""
    errors = check_model_gradients(cell, num_layers, dropout=dropout, mask=mask, seed=1,
                                   embedding_size=embedding_size)  # fmt: skip
    model = Model(5, cell, 6, num_layers, embedding_size=embedding_size)
    assert list(errors) == list(model.params) + ["state0"]
    assert ("embed.W" in errors) == bool(embedding_size)
    assert max(errors.values()) < 1e-6, errors


def test_gradient_check_catches_a_wrong_gradient(monkeypatch):
    backward = Model.backward

    def slightly_wrong(self, cache):
        grads, dstate0 = backward(self, cache)
        grads["rnn.0.Wh"][0, 0] *= 1.001
        return grads, dstate0

    monkeypatch.setattr(Model, "backward", slightly_wrong)
    errors = check_model_gradients("gru", 1)
    assert errors["rnn.0.Wh"] > 1e-6
    assert errors["rnn.0.Wx"] < 1e-6


def test_numerical_gradient_and_rel_error():
    x = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(numerical_gradient(lambda: float(np.sum(x**3)), x), 3 * x**2,
                               rtol=1e-9)  # fmt: skip
    np.testing.assert_array_equal(x, [0.5, -1.0, 2.0])  # restored
    assert rel_error(np.array([1.0, 0.0]), np.array([1.0, 1e-7])) == pytest.approx(1e-7)
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0


@pytest.mark.parametrize("cell", CELLS)
def test_float32_and_float64_give_the_same_loss(cell):
    m64 = Model(20, cell, 32, 2, dtype="float64", seed=2)
    m32 = Model.from_params({k: p.astype(np.float32) for k, p in m64.params.items()}, cell)
    assert m32.dtype == np.float32
    x, y = batch(20, 4, 30, seed=3)
    state = np.random.default_rng(4).uniform(-1, 1, m64.zero_state(4).shape)
    loss64, final64, _ = m64.forward(x, y, state)
    loss32, final32, cache = m32.forward(x, y, state)
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    assert final32.dtype == np.float32
    np.testing.assert_allclose(final32, final64, atol=1e-5)
    grads, dstate0 = m32.backward(cache)
    assert all(g.dtype == np.float32 for g in grads.values()) and dstate0.dtype == np.float32


@pytest.mark.parametrize("cell", CELLS)
def test_truncated_bptt_state_carries_across_windows(cell):
    """Window 1's final state fed to window 2 == the 2T sequence in one go."""
    model = Model(7, cell, 10, 2, dtype="float64", seed=5)
    x, y = batch(7, 3, 16, seed=6)
    state0 = np.random.default_rng(7).uniform(-1, 1, model.zero_state(3).shape)
    loss_all, final_all, _ = model.forward(x, y, state0)
    loss1, state1, _ = model.forward(x[:, :8], y[:, :8], state0)
    loss2, state2, cache2 = model.forward(x[:, 8:], y[:, 8:], state1)
    assert (loss1 + loss2) / 2 == pytest.approx(loss_all, rel=1e-12)
    np.testing.assert_allclose(state2, final_all, rtol=1e-12, atol=1e-14)
    assert state1 is not state0 and not np.shares_memory(state1, state0)


@pytest.mark.parametrize("cell", CELLS)
def test_the_gradient_stops_at_the_window_s_edge(cell):
    """Window 2's backward gives the gradient of its loss with the carried state held fixed,
    and dstate, the gradient with respect to that carried state: nothing flows into window 1.

    Checked by the chain rule across the edge: the full gradient of window 2's loss over both
    windows (the 2T sequence, only window 2 scored) is window 2's truncated gradient plus what
    dstate sends back through window 1, the gradient of <state1(params), dstate> (centred
    differences). The two parts differ, so a backward that leaked past the edge would fail."""
    model = Model(5, cell, 4, 2, dtype="float64", seed=14)
    x, y = batch(5, 2, 8, seed=15)
    state0 = np.random.default_rng(16).uniform(-1, 1, model.zero_state(2).shape)
    _, state1, _ = model.forward(x[:, :4], y[:, :4], state0)
    _, _, cache2 = model.forward(x[:, 4:], y[:, 4:], state1)
    truncated, dstate = model.backward(cache2)
    assert rel_error(dstate, numerical_gradient(
        lambda: model.forward(x[:, 4:], y[:, 4:], state1)[0], state1)) < 1e-6  # fmt: skip
    window2 = np.zeros((2, 8), bool)
    window2[:, 4:] = True
    full, _ = model.backward(model.forward(x, y, state0, mask=window2)[2])

    def carried() -> float:
        return float(np.sum(model.forward(x[:, :4], y[:, :4], state0)[1] * dstate))

    for name, p in model.params.items():
        through_window1 = numerical_gradient(carried, p)
        assert rel_error(truncated[name] + through_window1, full[name]) < 1e-6, name
        if name.startswith("rnn."):  # out.W and out.b do not shape window 1's state
            assert np.abs(through_window1).max() > 1e-3 * np.abs(full[name]).max(), name


@pytest.mark.parametrize("B", [1, 4])
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("num_layers, embedding_size", [(1, 0), (3, 0), (1, 4), (2, 1)])
@pytest.mark.parametrize("cell", CELLS)
def test_stepper_matches_forward(cell, num_layers, embedding_size, dtype, rtol, B):
    """Stepping from a non-zero state == one forward over the window: each step's loss (a
    mask scores step t alone) and the final state; with an embedding, which the Stepper folds
    into layer 0's table."""
    model = Model(6, cell, 9, num_layers, dtype=dtype, seed=8, embedding_size=embedding_size)
    T = 5
    x, y = batch(6, B, T, seed=9)
    state0 = np.random.default_rng(10).uniform(-1, 1, model.zero_state(B).shape)
    stepper = model.stepper(B, state0)
    for t in range(T):
        logits = stepper.step(x[:, t]).astype(np.float64)
        assert logits.shape == (B, 6)
        logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        only_t = np.zeros((B, T), dtype=bool)
        only_t[:, t] = True
        loss_t = model.forward(x, y, state0, mask=only_t)[0]
        assert -logp[np.arange(B), y[:, t]].mean() == pytest.approx(loss_t, rel=rtol)
    final = model.forward(x, y, state0)[1]
    assert stepper.state.shape == final.shape and stepper.state.dtype == model.dtype
    np.testing.assert_allclose(stepper.state, final, rtol=rtol, atol=rtol)


def test_stepper_is_a_snapshot_and_checks_its_inputs():
    model = Model(5, "lstm", 4, 2, seed=1)
    copy = Model.from_params({k: p.copy() for k, p in model.params.items()}, "lstm")
    stepper = model.stepper(2)
    for p in model.params.values():
        p += 1.0  # as an optimizer updates them, in place
    logits = stepper.step([1, 3]).copy()
    np.testing.assert_array_equal(logits, copy.stepper(2).step([1, 3]))
    assert not np.array_equal(logits, model.stepper(2).step([1, 3]))
    with pytest.raises(IndexError):
        stepper.step([0, 5])
    with pytest.raises(IndexError):
        stepper.step([-1, 0])
    with pytest.raises(ValueError, match="state"):
        model.stepper(2, model.zero_state(3))
    with pytest.raises(ValueError, match="batch_size"):
        model.stepper(0)


def test_mask_averages_over_scored_characters():
    model = Model(5, "lstm", 6, 1, dtype="float64")
    x, y = batch(5, 2, 3, seed=10)
    state = model.zero_state(2)
    per_char = np.empty((2, 3))
    for b in range(2):
        for t in range(3):
            only = np.zeros((2, 3))
            only[b, t] = 1
            per_char[b, t] = model.forward(x, y, state, mask=only)[0]
    mask = np.array([[1, 0, 1], [0, 0, 1]], dtype=bool)
    loss = model.forward(x, y, state, mask=mask)[0]
    assert loss == pytest.approx(per_char[mask].mean(), rel=1e-12)
    assert model.forward(x, y, state)[0] == pytest.approx(per_char.mean(), rel=1e-12)


def test_dropout_only_with_rng():
    model = Model(5, "gru", 8, 2, dropout=0.5)
    x, y = batch(5, 3, 6)
    state = model.zero_state(3)
    eval_loss = model.forward(x, y, state)[0]
    assert model.forward(x, y, state)[0] == eval_loss
    train = [model.forward(x, y, state, rng=np.random.default_rng(s))[0] for s in (1, 1, 2)]
    assert train[0] == train[1] != train[2]
    assert train[0] != eval_loss


def test_from_params_round_trip_and_validation():
    model = Model(7, "gru", 5, 3, dtype="float64", seed=11)
    again = Model.from_params(dict(model.params), "gru", dropout=0.2)
    assert (again.vocab_size, again.hidden_size, again.num_layers) == (7, 5, 3)
    assert (again.cell, again.dropout, again.dtype) == ("gru", 0.2, np.float64)
    x, y = batch(7, 2, 4)
    state = model.zero_state(2)
    assert again.forward(x, y, state)[0] == model.forward(x, y, state)[0]
    with pytest.raises(ValueError, match="rnn.0.bh"):
        Model.from_params(dict(model.params), "lstm")
    bad = dict(model.params)
    bad["rnn.1.Wh"] = np.zeros((5, 14))
    with pytest.raises(ValueError, match="rnn.1.Wh"):
        Model.from_params(bad, "gru")
    with pytest.raises(ValueError, match="state"):
        model.forward(x, y, model.zero_state(3))
    embedded = Model(7, "lstm", 5, 2, dtype="float64", seed=3, embedding_size=4)
    again = Model.from_params(dict(embedded.params), "lstm")
    assert again.embedding_size == 4
    zero = embedded.zero_state(2)
    assert again.forward(x, y, zero)[0] == embedded.forward(x, y, zero)[0]
    with pytest.raises(ValueError, match="embed.W"):
        Model.from_params({**embedded.params, "embed.W": np.zeros(7)}, "lstm")
    with pytest.raises(ValueError, match="rnn.0.Wx"):
        Model.from_params({**embedded.params, "embed.W": np.zeros((7, 3))}, "lstm")


@pytest.mark.parametrize("embedding_size", [0, 3])
def test_reused_buffers_give_the_same_results_as_fresh_ones(embedding_size):
    """Each window overwrites the previous window's buffers; the results must not notice."""
    model = Model(9, "lstm", 12, 2, dtype="float64", seed=13, embedding_size=embedding_size)
    fresh = Model.from_params({k: p.copy() for k, p in model.params.items()}, "lstm")
    (x1, y1), (x2, y2) = batch(9, 3, 7, seed=14), batch(9, 3, 7, seed=15)
    _, state1, cache = model.forward(x1, y1, model.zero_state(3))
    model.backward(cache)
    loss, _, cache = model.forward(x2, y2, state1)
    grads, dstate = model.backward(cache)
    loss_f, _, cache_f = fresh.forward(x2, y2, state1)
    grads_f, dstate_f = fresh.backward(cache_f)
    assert loss == loss_f
    for name in grads:
        np.testing.assert_array_equal(grads[name], grads_f[name])
    np.testing.assert_array_equal(dstate, dstate_f)


def test_backward_needs_the_latest_forward():
    model = Model(5, "rnn", 4, 2)
    x, y = batch(5, 2, 3)
    _, _, old = model.forward(x, y, model.zero_state(2))
    model.forward(x, y, model.zero_state(2))
    with pytest.raises(ValueError, match="stale"):
        model.backward(old)


def test_invalid_indices_are_rejected():
    model = Model(5, "gru", 4, 1)
    x, y = batch(5, 2, 3)
    with pytest.raises(IndexError):
        model.forward(x + 5, y, model.zero_state(2))
    with pytest.raises(IndexError):
        model.forward(x, y - 5, model.zero_state(2))
    with pytest.raises(ValueError, match="integer"):
        model.forward(x.astype(float), y, model.zero_state(2))
    embedded = Model(5, "gru", 4, 1, embedding_size=2)
    for bad in (x + 5, x - 5):
        with pytest.raises(IndexError):
            embedded.forward(bad, y, embedded.zero_state(2))


def _pattern_batches(period, B, T):
    """Endless windows of B streams of a repeating sequence, each stream at another phase."""
    seq = np.array(period)
    pos = np.arange(B) * 3
    while True:
        idx = (pos[:, None] + np.arange(T + 1)) % len(seq)
        yield seq[idx[:, :-1]], seq[idx[:, 1:]]
        pos += T


OPTIMIZER_SETTINGS = {
    "sgd": {"lr": 0.5, "momentum": 0.9},
    "adagrad": {"lr": 0.3},
    "rmsprop": {"lr": 0.01},
    "adam": {"lr": 0.02},
}


def test_every_optimizer_has_learning_settings():
    assert set(OPTIMIZER_SETTINGS) == set(OPTIMIZERS)


@pytest.mark.parametrize("name", OPTIMIZER_SETTINGS)
@pytest.mark.parametrize("cell", CELLS)
def test_tiny_model_learns_a_deterministic_pattern(cell, name):
    """The next character of 0 1 2 0 2 1 ... depends on the two before: it needs memory."""
    model = Model(3, cell, 16, 1, seed=12)
    optimizer = make_optimizer(name, model.params, **OPTIMIZER_SETTINGS[name])
    batches = _pattern_batches([0, 1, 2, 0, 2, 1], B=4, T=12)
    state = model.zero_state(4)
    losses = []
    for _ in range(300):
        x, y = next(batches)
        loss, state, cache = model.forward(x, y, state)
        grads, _ = model.backward(cache)
        optimizer.step(model.params, grads)
        losses.append(loss)
    assert losses[0] > 1.0  # about ln 3 at the start
    assert losses[-1] < 0.01
