"""The reference maths against finite differences, and the engine against the reference.

``rnncli.reference`` is checked by centred differences in float64; the engine (``layers`` through
the ``cells`` registry, and ``Model``) must then equal it to 1e-10 relative (``rel_error``: the
largest deviation over the array's largest entry) on shapes drawn by Hypothesis, every size
including 1, with carried state, masks and dropout.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnncli import cells, layers, reference
from rnncli.gradcheck import numerical_gradient, numerical_gradient_array, rel_error
from rnncli.model import Model

FD_TOL = 1e-7  # the reference against centred differences
EXACT = 1e-10  # the engine against the reference
BUILT_IN = tuple(cells.CELLS)
# the reference's layouts, checked against the registry
GATES = {"rnn": 1, "lstm": 4, "gru": 3, "mingru": 2, "minlstm": 3}
SHAPES = dict(deadline=None, max_examples=25)

# The reference, through one interface per cell (``reference.LAYERS``): x (N, T, D) rows, state
# (S, N, H), weights in the registry's order. Returns (h, final state, cache) and (dx, dstate0,
# weight gradients).
REFERENCE = {name: (layer.forward, layer.backward) for name, layer in reference.LAYERS.items()}


def _weights(cell, D, H, rng):
    """Random float64 parameters of one layer, non-zero biases, in the registry's order."""
    shapes = cells.CELLS[cell].shapes(D, H)
    return [rng.normal(0, 0.5, shape) for shape in shapes.values()]


def assert_close(engine, ref, name):
    assert engine.shape == ref.shape, name
    err = rel_error(engine, ref)
    assert err <= EXACT, f"{name}: relative error {err:.1e}"


def test_every_built_in_cell_has_a_reference_with_its_layout():
    assert set(BUILT_IN) == set(REFERENCE) == set(GATES)
    for name, cell in cells.CELLS.items():
        assert cell.gates == GATES[name]
        assert reference.LAYERS[name].params == cell.param_names
        assert cell.states == (2 if name == "lstm" else 1)


# ----------------------------------------------------------------------------------------------
# The reference against finite differences


@pytest.mark.parametrize("cell", BUILT_IN)
def test_reference_steps_against_finite_differences(cell):
    rng = np.random.default_rng(1)
    N, D, H = 3, 4, 5
    x, (prev_h, prev_c) = rng.standard_normal((N, D)), rng.uniform(-1, 1, (2, N, H))
    weights = _weights(cell, D, H, rng)
    declared = cells.CELLS[cell]
    args = [x, *(prev_h, prev_c)[: declared.states], *weights]
    names = ["x", *("prev_h", "prev_c")[: declared.states], *declared.param_names]
    douts = tuple(rng.standard_normal((N, H)) for _ in range(declared.states))
    forward = getattr(reference, f"{cell}_step_forward")
    *_, cache = forward(*args)
    grads = getattr(reference, f"{cell}_step_backward")(*douts, cache)
    assert len(grads) == len(args)
    for name, arg, grad in zip(names, args, grads, strict=True):
        num = numerical_gradient_array(lambda: tuple(forward(*args)[:-1]), arg, douts)
        assert grad.shape == arg.shape and rel_error(grad, num) < FD_TOL, name


@pytest.mark.parametrize("cell", BUILT_IN)
def test_reference_sequences_against_finite_differences(cell):
    rng = np.random.default_rng(2)
    N, T, D, H = 2, 4, 3, 4
    x = rng.standard_normal((N, T, D))
    state0 = rng.uniform(-1, 1, (cells.CELLS[cell].states, N, H))
    weights = _weights(cell, D, H, rng)
    forward, backward = REFERENCE[cell]
    dh = rng.standard_normal((N, T, H))
    h, _, cache = forward(x, state0, weights)
    dx, dstate0, grads = backward(dh, cache)
    named = zip(cells.CELLS[cell].param_names, weights, grads, strict=True)
    for name, arg, grad in [("x", x, dx), ("state0", state0, dstate0), *named]:
        num = numerical_gradient(lambda: float(np.sum(forward(x, state0, weights)[0] * dh)), arg)
        assert rel_error(grad, num) < FD_TOL, name


def test_reference_lstm_backward_is_cs231n_s():
    rng = np.random.default_rng(3)
    x, h0 = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5))
    weights = _weights("lstm", 4, 5, rng)
    h, cache = reference.lstm_forward(x, h0, *weights)  # c0 = 0
    _, cache_zero = reference.lstm_forward(x, h0, *weights, c0=np.zeros((2, 5)))
    dh = rng.standard_normal(h.shape)
    short = reference.lstm_backward(dh, cache)
    dx, dh0, _, dWx, dWh, db = reference.lstm_backward_carry(dh, cache_zero)
    for a, b in zip(short, (dx, dh0, dWx, dWh, db), strict=True):
        np.testing.assert_array_equal(a, b)


def test_reference_output_layer_against_finite_differences():
    rng = np.random.default_rng(4)
    N, T, D, V = 2, 3, 4, 5
    x, w, b = rng.standard_normal((N, T, D)), rng.standard_normal((D, V)), rng.standard_normal(V)
    dout = rng.standard_normal((N, T, V))
    out, cache = reference.temporal_affine_forward(x, w, b)
    for arg, grad in zip((x, w, b), reference.temporal_affine_backward(dout, cache), strict=True):
        num = numerical_gradient_array(lambda: reference.temporal_affine_forward(x, w, b)[0], arg,
                                       dout)  # fmt: skip
        assert rel_error(grad, num) < FD_TOL
    scores, y = rng.standard_normal((N, T, V)), rng.integers(0, V, (N, T))
    mask = np.array([[1, 0, 1], [0.5, 1, 0]])
    loss, dscores = reference.temporal_softmax_loss(scores, y, mask)
    num = numerical_gradient(lambda: reference.temporal_softmax_loss(scores, y, mask)[0], scores)
    assert rel_error(dscores, num) < FD_TOL
    p = np.exp(scores) / np.exp(scores).sum(axis=2, keepdims=True)
    picked = np.log(p[np.arange(N)[:, None], np.arange(T), y])
    assert loss == pytest.approx(-np.sum(mask * picked) / mask.sum(), rel=1e-12)


def test_reference_embedding_against_finite_differences():
    rng = np.random.default_rng(5)
    N, T, V, D = 3, 4, 6, 2
    x = rng.integers(0, 3, (N, T))  # rows 0-2 repeat, 3-5 are never looked up
    W, dout = rng.standard_normal((V, D)), rng.standard_normal((N, T, D))
    out, cache = reference.embedding_forward(x, W)
    np.testing.assert_array_equal(out, layers.one_hot(x, V, np.float64) @ W)
    dW = reference.embedding_backward(dout, cache)
    num = numerical_gradient_array(lambda: reference.embedding_forward(x, W)[0], W, dout)
    assert dW.shape == W.shape and rel_error(dW, num) < FD_TOL
    assert not dW[3:].any() and np.abs(dW[:3]).min() > 0


@pytest.mark.parametrize("E,M", [(0, 0), (3, 0), (0, 4)], ids=["one-hot", "embedding", "mlp"])
@pytest.mark.parametrize("cell", BUILT_IN)
def test_reference_model_against_finite_differences(cell, E, M):
    """The composed model's backward (two layers, dropout between them and on top, mask weights
    that skip and halve targets, an MLP after each layer when M > 0): every parameter's gradient
    and the initial state's."""
    rng = np.random.default_rng(6)
    N, T, V, H, L = 2, 3, 5, 3, 2
    model = Model(V, cell, H, L, dtype="float64", seed=6, embedding_size=E, mlp_size=M)
    params = {name: p + rng.normal(0, 0.3, p.shape) for name, p in model.params.items()}
    x, y = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))
    state0 = rng.uniform(-1, 1, model.zero_state(N).shape)
    mask = np.array([[1, 0, 0.5], [1, 1, 0]])
    drops = reference.dropout_masks(0.3, rng, L, N, T, H)
    assert len(drops) == L and all((m == 0).any() and (m > 1).any() for m in drops)
    _, final, cache = reference.model_forward(params, cell, x, y, state0, mask, drops)
    grads, dstate0 = reference.model_backward(cache)
    assert set(grads) == set(params) and final.shape == dstate0.shape == state0.shape

    def loss():
        return reference.model_forward(params, cell, x, y, state0, mask, drops)[0]

    checks = [("state0", state0, dstate0)] + [(n, params[n], grads[n]) for n in params]
    for name, arg, grad in checks:
        assert rel_error(grad, numerical_gradient(loss, arg)) < FD_TOL, name


# ----------------------------------------------------------------------------------------------
# The engine against the reference

sizes = st.integers(1, 5)
seeds = st.integers(0, 2**32 - 1)


@pytest.mark.parametrize("cell", BUILT_IN)
@settings(**SHAPES)
@given(N=sizes, T=sizes, D=sizes, H=sizes, indices=st.booleans(), seed=seeds)
def test_engine_sequence_equals_the_reference(cell, N, T, D, H, indices, seed):
    """Forward (every h_t, the final state) and every gradient, from a random carried state;
    inputs dense or as indices (the engine gathers rows; the reference multiplies one-hots)."""
    rng = np.random.default_rng(seed)
    declared = cells.CELLS[cell]
    idx = rng.integers(0, D, (N, T))
    x = layers.one_hot(idx, D, np.float64) if indices else rng.standard_normal((N, T, D))
    state0 = rng.uniform(-1, 1, (declared.states, N, H))
    weights = _weights(cell, D, H, rng)
    dh = rng.standard_normal((N, T, H))
    ref_forward, ref_backward = REFERENCE[cell]
    h_ref, final_ref, cache_ref = ref_forward(x, state0, weights)
    dx_ref, dstate_ref, grads_ref = ref_backward(dh, cache_ref)

    x_engine = np.ascontiguousarray(idx.T) if indices else np.ascontiguousarray(x.swapaxes(0, 1))
    h, final, cache = declared.forward(x_engine, state0, weights, layers.Workspace())
    dx, dstate0, grads = declared.backward(np.ascontiguousarray(dh.swapaxes(0, 1)), cache,
                                           layers.Workspace())  # fmt: skip
    assert_close(h.swapaxes(0, 1), h_ref, "h")
    assert_close(final, final_ref, "final state")
    assert_close(dstate0, dstate_ref, "dstate0")
    if indices:
        assert dx is None
    else:
        assert_close(dx.swapaxes(0, 1), dx_ref, "dx")
    for name, grad, grad_ref in zip(declared.param_names, grads, grads_ref, strict=True):
        assert_close(grad, grad_ref, name)


@pytest.mark.parametrize("cell", BUILT_IN)
@settings(**SHAPES)
@given(N=sizes, D=sizes, H=sizes, seed=seeds)
def test_engine_single_step_equals_the_reference_step(cell, N, D, H, seed):
    """One step of the engine (a sequence of T = 1) against the reference's step functions,
    forward and backward, with a gradient arriving for h only (as at a window's edge)."""
    rng = np.random.default_rng(seed)
    declared = cells.CELLS[cell]
    x, dh = rng.standard_normal((N, D)), rng.standard_normal((N, H))
    state0 = rng.uniform(-1, 1, (declared.states, N, H))
    weights = _weights(cell, D, H, rng)
    h, final, cache = declared.forward(x[None], state0, weights, layers.Workspace())
    dx, dstate0, grads = declared.backward(dh[None], cache, layers.Workspace())
    step_forward = getattr(reference, f"{cell}_step_forward")
    step_backward = getattr(reference, f"{cell}_step_backward")
    *out, step_cache = step_forward(x, *state0, *weights)
    dnext = (dh, np.zeros_like(dh)) if declared.states == 2 else (dh,)
    dx_ref, *rest = step_backward(*dnext, step_cache)
    dstate_ref, grads_ref = rest[: declared.states], rest[declared.states :]
    assert_close(h[0], out[0], "next_h")
    assert_close(final, np.stack(out), "next state")
    assert_close(dx[0], dx_ref, "dx")
    assert_close(dstate0, np.stack(dstate_ref), "dstate")
    for name, grad, grad_ref in zip(declared.param_names, grads, grads_ref, strict=True):
        assert_close(grad, grad_ref, name)


@pytest.mark.parametrize("cell", BUILT_IN)
@settings(**SHAPES)
@given(N=sizes, D=sizes, H=sizes, stack=st.booleans(), seed=seeds)
def test_engine_inference_step_equals_the_reference_step(cell, N, D, H, stack, seed):
    """``Cell.step``, feature-major and in place, with x Wx in its product (stacked weights,
    where the cell can) or computed beforehand, against the reference's step forward."""
    rng = np.random.default_rng(seed)
    declared = cells.CELLS[cell]
    stack = stack and declared.stackable
    x = rng.standard_normal((N, D))
    state0 = rng.uniform(-1, 1, (declared.states, N, H))
    weights = _weights(cell, D, H, rng)
    *out, _ = getattr(reference, f"{cell}_step_forward")(x, *state0, *weights)
    p = dict(zip(declared.param_names, weights, strict=True))
    Wx, Wh, b = p["Wx"], p.get("Wh"), p["b"]
    state = np.ascontiguousarray(state0.swapaxes(1, 2))  # (S, H, N)
    if stack:
        a = np.repeat(b[:, None], N, axis=1)
        W_T, u = np.ascontiguousarray(np.concatenate([Wx, Wh]).T), np.concatenate([x.T, state[0]])
    else:
        a = np.ascontiguousarray((x @ Wx + b).T)
        W_T, u = (np.ascontiguousarray(Wh.T), state[0]) if declared.recurrent else (None, None)
    scratch = np.empty(((declared.gates + 1) * H, N))
    columns = tuple(w[:, None] for name, w in p.items() if name not in ("Wx", "Wh", "b"))
    declared.step(a, u, W_T, tuple(state), scratch, columns=columns)
    assert_close(state.swapaxes(1, 2), np.stack(out), "next state")


# ----------------------------------------------------------------------------------------------
# The whole model against the reference: layers, dropout, output layer, masked loss


@pytest.mark.parametrize("cell", BUILT_IN)
@settings(deadline=None, max_examples=15)
@given(B=sizes, T=sizes, V=st.integers(2, 6), H=sizes, L=st.integers(1, 3),
       p=st.sampled_from([0.0, 0.3]), masked=st.booleans(), seed=seeds,
       E=st.sampled_from([0, 0, 1, 2, 4]), M=st.sampled_from([0, 0, 1, 3]))  # fmt: skip
def test_model_equals_the_reference(cell, B, T, V, H, L, p, masked, seed, E, M):
    """The whole model, with a learnt embedding of E > 0 columns or one-hot input (E = 0), and
    a per-character MLP of M units after each layer (none for M = 0)."""
    rng = np.random.default_rng(seed)
    model = Model(V, cell, H, L, dropout=p, dtype="float64", seed=seed % 1000, embedding_size=E,
                  mlp_size=M)  # fmt: skip
    for param in model.params.values():
        param += rng.normal(0, 0.1, param.shape)  # non-zero biases too
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    state0 = rng.uniform(-1, 1, model.zero_state(B).shape)
    mask = rng.random((B, T)) < 0.6 if masked else np.ones((B, T), bool)
    mask[0, 0] = True  # at least one scored target
    loss, final, cache = model.forward(x, y, state0, mask if masked else None,
                                       np.random.default_rng(seed))  # fmt: skip
    grads, dstate0 = model.backward(cache)

    drops = reference.dropout_masks(p, np.random.default_rng(seed), L, B, T, H)  # the model's
    ref_loss, ref_final, ref_cache = reference.model_forward(model.params, cell, x, y, state0,
                                                             mask, drops)  # fmt: skip
    ref_grads, ref_dstate0 = reference.model_backward(ref_cache)
    assert loss == pytest.approx(ref_loss, rel=EXACT)
    assert_close(final, ref_final, "final state")
    assert_close(dstate0, ref_dstate0, "dstate0")
    assert list(grads) == list(model.params)
    for name, grad in grads.items():
        assert_close(grad, ref_grads[name], name)
