"""Layer functions: finite-difference gradient checks in float64 and equivalences."""

import numpy as np
import pytest

from rnncli import layers
from rnncli.gradcheck import numerical_gradient, numerical_gradient_array, rel_error

TOL = 1e-6  # max relative error of every analytic gradient against centred differences
T, B, D, H = 4, 3, 5, 6

# cell -> (step forward, step backward, sequence forward, sequence backward, G, has c, has bh)
CELLS = {
    "rnn": (layers.rnn_step_forward, layers.rnn_step_backward, layers.rnn_forward,
            layers.rnn_backward, 1, False, False),
    "lstm": (layers.lstm_step_forward, layers.lstm_step_backward, layers.lstm_forward,
             layers.lstm_backward, 4, True, False),
    "gru": (layers.gru_step_forward, layers.gru_step_backward, layers.gru_forward,
            layers.gru_backward, 3, False, True),
}  # fmt: skip


def _random_like(out, rng):
    if isinstance(out, tuple):
        return tuple(_random_like(o, rng) for o in out)
    return rng.standard_normal(out.shape)


def assert_gradients(forward, backward, args, names, dout=None, seed=0):
    """Every gradient of backward(dout, cache) matches centred differences of forward; integer
    (index) arguments get None."""
    rng = np.random.default_rng(seed)
    out, cache = forward(*args)
    dout = _random_like(out, rng) if dout is None else dout
    grads = backward(dout, cache)
    assert len(grads) == len(args)
    for name, arg, grad in zip(names, args, grads, strict=True):
        if np.issubdtype(arg.dtype, np.integer):
            assert grad is None, name
            continue
        assert grad.shape == arg.shape, name
        num = numerical_gradient_array(lambda: forward(*args)[0], arg, dout)
        err = rel_error(grad, num)
        assert err < TOL, f"{name}: relative error {err:.2e}"


def cell_args(cell, rng, x_shape, dense=True):
    """Arguments of a forward function of ``cell`` (float64, non-zero state and biases)."""
    G, has_c, has_bh = CELLS[cell][4:]
    x = rng.standard_normal(x_shape + (D,)) if dense else rng.integers(0, D, x_shape)
    args = [x, rng.uniform(-0.9, 0.9, (B, H))]
    names = ["x", "h0"]
    if has_c:
        args.append(rng.uniform(-2, 2, (B, H)))
        names.append("c0")
    args += [rng.normal(0, 0.5, (D, G * H)), rng.normal(0, 0.5, (H, G * H)),
             rng.normal(0, 0.5, G * H)]  # fmt: skip
    names += ["Wx", "Wh", "b"]
    if has_bh:
        args.append(rng.normal(0, 0.5, H))
        names.append("bh")
    return args, names


@pytest.mark.parametrize("dense", [True, False], ids=["dense", "indices"])
@pytest.mark.parametrize("cell", CELLS)
def test_step_gradients(cell, dense):
    args, names = cell_args(cell, np.random.default_rng(1), (B,), dense)
    assert_gradients(CELLS[cell][0], CELLS[cell][1], args, names)


@pytest.mark.parametrize("dense", [True, False], ids=["dense", "indices"])
@pytest.mark.parametrize("cell", CELLS)
def test_sequence_gradients(cell, dense):
    args, names = cell_args(cell, np.random.default_rng(2), (T, B), dense)
    assert_gradients(CELLS[cell][2], CELLS[cell][3], args, names)


def test_lstm_backward_without_final_cell_gradient():
    """dc_T = None (truncated BPTT: no gradient from the next window) means zero."""
    rng = np.random.default_rng(3)
    args, _ = cell_args("lstm", rng, (T, B))
    (h, c_T), cache = layers.lstm_forward(*args)
    dh = rng.standard_normal(h.shape)
    with_none = layers.lstm_backward((dh, None), cache)
    with_zero = layers.lstm_backward((dh, np.zeros_like(c_T)), cache)
    for a, b in zip(with_none, with_zero, strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.abs(with_none[2]).max() > 0  # dc0 still flows back from dh


@pytest.mark.parametrize("cell", CELLS)
def test_sequence_equals_repeated_steps(cell):
    step, _, forward, _, _, has_c, _ = CELLS[cell]
    args, _ = cell_args(cell, np.random.default_rng(4), (T, B))
    x, state, weights = args[0], args[1 : 2 + has_c], args[2 + has_c :]
    out, _ = forward(*args)
    hs = out[0] if has_c else out
    for t in range(T):
        new, _ = step(x[t], *state, *weights)
        state = new if has_c else (new,)
        np.testing.assert_allclose(hs[t], state[0], rtol=1e-12, atol=1e-14)
    if has_c:
        np.testing.assert_allclose(out[1], state[1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("V", [4, 40])  # gathered rows N = T * B = 12 against V table rows
@pytest.mark.parametrize("cell", CELLS)
def test_index_input_equals_one_hot_input(cell, V):
    """x as indices (gather, scatter-add) == x as explicit one-hot vectors (GEMMs)."""
    forward, backward, has_c = CELLS[cell][2], CELLS[cell][3], CELLS[cell][5]
    rng = np.random.default_rng(5)
    args, _ = cell_args(cell, rng, (T, B))
    idx = rng.integers(0, V, (T, B))
    Wx_index = 2 + has_c
    args[Wx_index] = rng.normal(0, 0.5, (V, args[Wx_index].shape[1]))
    out_i, cache_i = forward(idx, *args[1:])
    out_d, cache_d = forward(layers.one_hot(idx, V, np.float64), *args[1:])
    h_i, h_d = (out_i[0], out_d[0]) if has_c else (out_i, out_d)
    np.testing.assert_allclose(h_i, h_d, rtol=1e-12, atol=1e-14)
    dh = rng.standard_normal(h_i.shape)
    dout = (dh, None) if has_c else dh
    grads_i, grads_d = backward(dout, cache_i), backward(dout, cache_d)
    assert grads_i[0] is None
    for g_i, g_d in zip(grads_i[1:], grads_d[1:], strict=True):
        np.testing.assert_allclose(g_i, g_d, rtol=1e-10, atol=1e-13)


def test_one_hot():
    oh = layers.one_hot(np.array([[2, 0], [1, 2]]), 3)
    assert oh.shape == (2, 2, 3) and oh.dtype == np.float32
    np.testing.assert_array_equal(oh.argmax(-1), [[2, 0], [1, 2]])
    np.testing.assert_array_equal(oh.sum(-1), 1)


@pytest.mark.parametrize("V", [7, 3000])
def test_gather_equals_one_hot_product(V):
    rng = np.random.default_rng(6)
    W = rng.standard_normal((V, 9))
    idx = rng.integers(0, V, (5, 4))
    out, _ = layers.embedding_forward(idx, W)
    np.testing.assert_array_equal(out, layers.one_hot(idx, V, np.float64) @ W)


@pytest.mark.parametrize("V", [7, 3000])
def test_scatter_add_equals_one_hot_transpose_product(V):
    rng = np.random.default_rng(7)
    idx = np.concatenate([rng.integers(0, 3, 40), rng.integers(0, V, 20)])  # repeats, singles
    rng.shuffle(idx)
    idx = idx.reshape(6, 10)
    _, cache = layers.embedding_forward(idx, np.zeros((V, 5)))
    one_hot = layers.one_hot(idx, V, np.float64).reshape(-1, V)
    # small integers: every summation order gives the exact same result
    dout = rng.integers(-50, 50, (6, 10, 5)).astype(np.float64)
    dW = layers.embedding_backward(dout, cache)
    np.testing.assert_array_equal(dW, one_hot.T @ dout.reshape(-1, 5))
    dout = rng.standard_normal((6, 10, 5)).astype(np.float32)
    dW = layers.embedding_backward(dout, cache)
    assert dW.dtype == np.float32 and dW.shape == (V, 5)
    np.testing.assert_allclose(dW, one_hot.T @ dout.reshape(-1, 5), rtol=1e-5, atol=1e-5)
    unused = np.setdiff1d(np.arange(V), idx)
    assert not dW[unused].any()


def _naive_loss(logits, y, mask):
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, y[..., None], -1)[..., 0]
    return float((nll * mask).sum() / mask.sum())


def _output_args(rng, V=7):
    h, W, b = rng.standard_normal((T, B, D)), rng.standard_normal((D, V)), rng.standard_normal(V)
    return h, W, b, rng.integers(0, V, (T, B))


@pytest.mark.parametrize("block_bytes", [1 << 19, 7 * 8 * 5], ids=["one-block", "row-blocks"])
def test_output_loss_value_and_gradients(monkeypatch, block_bytes):
    """Checked with the softmax in one block and in blocks of 5 rows (the last one shorter)."""
    monkeypatch.setattr(layers, "_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(9)
    h, W, b, y = _output_args(rng)
    mask = rng.random((T, B)) < 0.6
    mask[0, 0] = True
    logits = h @ W + b
    loss, _ = layers.output_loss_forward(h, W, b, y, mask)
    assert loss == pytest.approx(_naive_loss(logits, y, mask), rel=1e-12)
    loss_all, _ = layers.output_loss_forward(h, W, b, y)
    assert loss_all == pytest.approx(_naive_loss(logits, y, np.ones((T, B))), rel=1e-12)

    def forward(*args):
        return layers.output_loss_forward(*args, y, mask)

    _, cache = forward(h, W, b)
    grads = layers.output_loss_backward(2.0, cache)
    for name, arg, grad in zip("hWb", (h, W, b), grads, strict=True):
        num = numerical_gradient(lambda: 2.0 * forward(h, W, b)[0], arg)
        assert rel_error(grad, num) < TOL, name
    assert not grads[0][~mask].any()  # unscored positions get no gradient


def test_output_loss_cache_serves_one_backward():
    _, cache = layers.output_loss_forward(*_output_args(np.random.default_rng(10)))
    layers.output_loss_backward(1.0, cache)
    with pytest.raises(ValueError, match="backward already"):
        layers.output_loss_backward(1.0, cache)


def test_output_loss_is_stable_for_large_logits():
    *weights, y = _output_args(np.random.default_rng(11))
    h, W, b = (a.astype(np.float32) for a in weights)
    loss, _ = layers.output_loss_forward(h, W, b, y)
    shifted, cache = layers.output_loss_forward(h, W, b + 1e4, y)
    assert np.isfinite(shifted) and shifted == pytest.approx(loss, abs=1e-2)
    assert all(np.isfinite(g).all() for g in layers.output_loss_backward(1.0, cache))


def test_output_loss_with_nothing_scored():
    h, W, b, y = _output_args(np.random.default_rng(12))
    loss, cache = layers.output_loss_forward(h, W, b, y, np.zeros((T, B)))
    assert loss == 0.0
    assert not any(g.any() for g in layers.output_loss_backward(1.0, cache))


def test_output_loss_rejects_bad_targets():
    h, W, b, y = _output_args(np.random.default_rng(13))
    with pytest.raises(IndexError):
        layers.output_loss_forward(h, W, b, y + 7)


def test_dropout():
    x = np.ones((200, 100))
    assert layers.dropout_forward(x, 0.3, None)[0] is x
    assert layers.dropout_forward(x, 0.0, np.random.default_rng(0))[0] is x
    out, cache = layers.dropout_forward(x, 0.3, np.random.default_rng(0))
    assert set(np.unique(out)) == {0.0, 1 / 0.7}
    assert (out == 0).mean() == pytest.approx(0.3, abs=0.01)
    again, _ = layers.dropout_forward(x, 0.3, np.random.default_rng(0))
    np.testing.assert_array_equal(out, again)
    dout = np.random.default_rng(1).standard_normal(x.shape)
    np.testing.assert_array_equal(layers.dropout_backward(dout, cache), dout * out)
