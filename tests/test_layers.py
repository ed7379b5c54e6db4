"""Layer functions: finite-difference gradient checks in float64 and equivalences.

The recurrent layers are also held to ``rnncli.reference`` in tests/test_reference.py.
"""

import numpy as np
import pytest

from rnncli import cells, layers
from rnncli.gradcheck import numerical_gradient, rel_error

TOL = 1e-6  # max relative error of every analytic gradient against centred differences
T, B, D, H = 4, 3, 5, 6
CELLS = tuple(cells.CELLS)


def layer_args(cell, rng, x):
    """Arguments of ``cells.CELLS[cell].forward`` after x: a non-zero state (S, B, H) and
    float64 weights with non-zero biases."""
    declared = cells.CELLS[cell]
    D_in = x.shape[-1] if x.dtype.kind == "f" else D
    state0 = rng.uniform(-0.9, 0.9, (declared.states, B, H))
    weights = [rng.normal(0, 0.5, shape) for shape in declared.shapes(D_in, H).values()]
    return state0, weights


@pytest.mark.parametrize("dense", [True, False], ids=["dense", "indices"])
@pytest.mark.parametrize("cell", CELLS)
def test_sequence_gradients(cell, dense):
    """Every gradient of the engine's sequence backward against centred differences of
    ``sum(h * dh)``; index inputs get None for dx."""
    declared = cells.CELLS[cell]
    rng = np.random.default_rng(2)
    x = rng.standard_normal((T, B, D)) if dense else rng.integers(0, D, (T, B))
    state0, weights = layer_args(cell, rng, x)
    h, _, cache = declared.forward(x, state0, weights, layers.Workspace())
    dh = rng.standard_normal(h.shape)
    dx, dstate0, grads = declared.backward(dh, cache, layers.Workspace())

    def loss():
        return float(np.sum(declared.forward(x, state0, weights, layers.Workspace())[0] * dh))

    assert (dx is None) != dense
    named = [("state0", state0, dstate0), *zip(declared.param_names, weights, grads, strict=True)]
    for name, arg, grad in named + ([("x", x, dx)] if dense else []):
        assert grad.shape == arg.shape, name
        err = rel_error(grad, numerical_gradient(loss, arg))
        assert err < TOL, f"{name}: relative error {err:.2e}"


@pytest.mark.parametrize("cell", CELLS)
def test_reused_workspace_gives_the_same_results(cell):
    """A second call with the same workspace overwrites the first call's buffers; the results
    of the second are those of a fresh workspace."""
    declared = cells.CELLS[cell]
    rng = np.random.default_rng(3)
    ws = layers.Workspace()
    x1, x2 = rng.integers(0, D, (T, B)), rng.integers(0, D, (T, B))
    state0, weights = layer_args(cell, rng, x1)
    dh = rng.standard_normal((T, B, H))
    declared.backward(dh, declared.forward(x1, state0, weights, ws)[2], ws)
    h, final, cache = declared.forward(x2, state0, weights, ws)
    h_f, final_f, cache_f = declared.forward(x2, state0, weights, layers.Workspace())
    np.testing.assert_array_equal(h, h_f)
    np.testing.assert_array_equal(final, final_f)
    _, dstate0, grads = declared.backward(dh, cache, ws)
    _, dstate0_f, grads_f = declared.backward(dh, cache_f, layers.Workspace())
    np.testing.assert_array_equal(dstate0, dstate0_f)
    for g, g_f in zip(grads, grads_f, strict=True):
        np.testing.assert_array_equal(g, g_f)


@pytest.mark.parametrize("V", [4, 40])  # gathered rows N = T * B = 12 against V table rows
@pytest.mark.parametrize("cell", CELLS)
def test_index_input_equals_one_hot_input(cell, V):
    """x as indices (gather, scatter-add) == x as explicit one-hot vectors (GEMMs)."""
    declared = cells.CELLS[cell]
    rng = np.random.default_rng(5)
    idx = rng.integers(0, V, (T, B))
    state0, weights = layer_args(cell, rng, layers.one_hot(idx, V, np.float64))
    h_i, final_i, cache_i = declared.forward(idx, state0, weights)
    h_d, final_d, cache_d = declared.forward(layers.one_hot(idx, V, np.float64), state0, weights)
    np.testing.assert_allclose(h_i, h_d, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(final_i, final_d, rtol=1e-12, atol=1e-14)
    dh = rng.standard_normal(h_i.shape)
    (dx_i, *grads_i), (_, *grads_d) = (declared.backward(dh, c) for c in (cache_i, cache_d))
    assert dx_i is None
    for g_i, g_d in zip([grads_i[0], *grads_i[1]], [grads_d[0], *grads_d[1]], strict=True):
        np.testing.assert_allclose(g_i, g_d, rtol=1e-10, atol=1e-13)


def test_out_of_range_indices_are_rejected():
    state0, weights = layer_args("gru", np.random.default_rng(6), np.zeros((T, B), int))
    with pytest.raises(IndexError, match="indices"):
        cells.CELLS["gru"].forward(np.full((T, B), D), state0, weights)
    with pytest.raises(IndexError, match="indices"):
        cells.CELLS["gru"].forward(np.full((T, B), -1), state0, weights)


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
