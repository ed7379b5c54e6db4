"""The maths of rnncli's recurrent layers as a learner writes it: read this module first.

Every function is one forward or backward pass in plain numpy, in the API of Stanford's CS231n
assignments: batch-major rows ``(N, D)``, fresh arrays, a plain sigmoid, the weight gradients
inside each step, and one line per partial derivative with its equation beside it. It is the
readable statement of the maths and the oracle that the test suite checks the engine
(``rnncli.layers``, fast and harder to read) against, to 1e-10 in float64; the suite checks it
against finite differences in turn. rnncli never trains with it.

Shapes: N streams (rows), T timesteps, D input features, H hidden units, V characters.
Parameters are laid out exactly as the engine stores them in a checkpoint: ``Wx (D, G*H)``,
``Wh (H, G*H)``, ``b (G*H,)``, the G gates as blocks of H columns in the order each cell names.
The engine keeps its per-step arrays feature-major, ``(G*H, N)``: the transposes of the rows here.

After the cells, two sections state the rest of a training step the same way: the composed
model (embedding, the stack, dropout, output layer, masked loss; ``model_forward`` and
``model_backward``), and the update (clipping, the rate factors, each optimizer's rule).
"""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np


def sigmoid(a):
    """The logistic function ``1 / (1 + exp(-a))``."""
    return 1.0 / (1.0 + np.exp(-a))


# ----------------------------------------------------------------------------------------------
# Vanilla RNN: h_t = tanh(x_t Wx + h_{t-1} Wh + b)


def rnn_step_forward(x, prev_h, Wx, Wh, b):
    """One step: x (N, D), prev_h (N, H), Wx (D, H), Wh (H, H), b (H,) -> next_h (N, H), cache."""
    next_h = np.tanh(x @ Wx + prev_h @ Wh + b)
    return next_h, (x, prev_h, Wx, Wh, next_h)


def rnn_step_backward(dnext_h, cache):
    """Gradients of one step given dL/dnext_h: (dx, dprev_h, dWx, dWh, db)."""
    x, prev_h, Wx, Wh, next_h = cache
    da = dnext_h * (1 - next_h**2)  # a = x Wx + prev_h Wh + b, next_h = tanh(a): tanh' = 1 - tanh^2
    dx = da @ Wx.T  # dL/dx = da Wx^T
    dprev_h = da @ Wh.T  # dL/dprev_h = da Wh^T
    dWx = x.T @ da  # dL/dWx = x^T da
    dWh = prev_h.T @ da  # dL/dWh = prev_h^T da
    db = da.sum(axis=0)  # dL/db = sum over the rows of da
    return dx, dprev_h, dWx, dWh, db


def rnn_forward(x, h0, Wx, Wh, b):
    """T steps from h0: x (N, T, D) -> h (N, T, H), every hidden state, and the cache."""
    N, T, _ = x.shape
    h = np.zeros((N, T, h0.shape[1]))
    caches, prev_h = [], h0
    for t in range(T):
        prev_h, cache = rnn_step_forward(x[:, t], prev_h, Wx, Wh, b)
        h[:, t] = prev_h
        caches.append(cache)
    return h, caches


def rnn_backward(dh, cache):
    """Gradients given dh (N, T, H), the loss's gradient of every h_t from the layers above:
    (dx, dh0, dWx, dWh, db). Each step also receives the gradient its successor sends back."""
    N, T, H = dh.shape
    dx = np.zeros((N, T, cache[0][0].shape[1]))
    dprev_h, dWx, dWh, db = np.zeros((N, H)), 0.0, 0.0, 0.0
    for t in reversed(range(T)):
        dx[:, t], dprev_h, dWx_t, dWh_t, db_t = rnn_step_backward(dh[:, t] + dprev_h, cache[t])
        dWx, dWh, db = dWx + dWx_t, dWh + dWh_t, db + db_t  # the weights serve every step
    return dx, dprev_h, dWx, dWh, db


# ----------------------------------------------------------------------------------------------
# LSTM: a = x Wx + h_{t-1} Wh + b, gate blocks i, f, o, g; c_t = f c_{t-1} + i g; h_t = o tanh(c_t)


def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    """One step: x (N, D), prev_h and prev_c (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,)
    -> next_h (N, H), next_c (N, H), cache."""
    H = prev_h.shape[1]
    a = x @ Wx + prev_h @ Wh + b  # (N, 4H): the pre-activations of the four gates
    i = sigmoid(a[:, :H])  # input gate: how much of the candidate to write
    f = sigmoid(a[:, H : 2 * H])  # forget gate: how much of the old cell to keep
    o = sigmoid(a[:, 2 * H : 3 * H])  # output gate: how much of the cell to show
    g = np.tanh(a[:, 3 * H :])  # the candidate values
    next_c = f * prev_c + i * g
    tanh_c = np.tanh(next_c)
    next_h = o * tanh_c
    return next_h, next_c, (x, prev_h, prev_c, Wx, Wh, i, f, o, g, tanh_c)


def lstm_step_backward(dnext_h, dnext_c, cache):
    """Gradients of one step given dL/dnext_h and dL/dnext_c:
    (dx, dprev_h, dprev_c, dWx, dWh, db)."""
    x, prev_h, prev_c, Wx, Wh, i, f, o, g, tanh_c = cache
    do = dnext_h * tanh_c  # next_h = o tanh(next_c)
    dc = dnext_c + dnext_h * o * (1 - tanh_c**2)  # next_c reaches the loss directly and via h
    di = dc * g  # next_c = f prev_c + i g
    df = dc * prev_c
    dg = dc * i
    dprev_c = dc * f
    da_i = di * i * (1 - i)  # i = sigmoid(a_i): sigmoid' = sigmoid (1 - sigmoid)
    da_f = df * f * (1 - f)  # f = sigmoid(a_f)
    da_o = do * o * (1 - o)  # o = sigmoid(a_o)
    da_g = dg * (1 - g**2)  # g = tanh(a_g)
    da = np.concatenate([da_i, da_f, da_o, da_g], axis=1)  # (N, 4H), blocks as in a
    dx = da @ Wx.T  # a = x Wx + prev_h Wh + b
    dprev_h = da @ Wh.T
    dWx = x.T @ da
    dWh = prev_h.T @ da
    db = da.sum(axis=0)
    return dx, dprev_h, dprev_c, dWx, dWh, db


def lstm_forward(x, h0, Wx, Wh, b, c0=None):
    """T steps from (h0, c0): x (N, T, D) -> h (N, T, H) and the cache. c0 is zero when None
    (CS231n's case); rnncli carries it from one window to the next."""
    N, T, _ = x.shape
    h = np.zeros((N, T, h0.shape[1]))
    caches, prev_h = [], h0
    prev_c = np.zeros_like(h0) if c0 is None else c0
    for t in range(T):
        prev_h, prev_c, cache = lstm_step_forward(x[:, t], prev_h, prev_c, Wx, Wh, b)
        h[:, t] = prev_h
        caches.append(cache)
    return h, caches


def lstm_backward_carry(dh, cache):
    """Gradients given dh (N, T, H), also of the initial cell state:
    (dx, dh0, dc0, dWx, dWh, db). The final cell state gets no gradient from outside."""
    N, T, H = dh.shape
    dx = np.zeros((N, T, cache[0][0].shape[1]))
    dprev_h, dprev_c, dWx, dWh, db = np.zeros((N, H)), np.zeros((N, H)), 0.0, 0.0, 0.0
    for t in reversed(range(T)):
        step = lstm_step_backward(dh[:, t] + dprev_h, dprev_c, cache[t])
        dx[:, t], dprev_h, dprev_c, dWx_t, dWh_t, db_t = step
        dWx, dWh, db = dWx + dWx_t, dWh + dWh_t, db + db_t
    return dx, dprev_h, dprev_c, dWx, dWh, db


def lstm_backward(dh, cache):
    """Gradients given dh (N, T, H): (dx, dh0, dWx, dWh, db), CS231n's API."""
    dx, dh0, _, dWx, dWh, db = lstm_backward_carry(dh, cache)
    return dx, dh0, dWx, dWh, db


# ----------------------------------------------------------------------------------------------
# GRU (the PyTorch/cuDNN variant), gate blocks r, z, n:
# r, z = sigmoid(x Wx_rz + h_{t-1} Wh_rz + b_rz); n = tanh(x Wx_n + b_n + r (h_{t-1} Wh_n + bh));
# h_t = (1 - z) n + z h_{t-1}


def gru_step_forward(x, prev_h, Wx, Wh, b, bh):
    """One step: x (N, D), prev_h (N, H), Wx (D, 3H), Wh (H, 3H), b (3H,), bh (H,)
    -> next_h (N, H), cache."""
    H = prev_h.shape[1]
    ax = x @ Wx + b  # (N, 3H): the input's part of the three pre-activations
    ah = prev_h @ Wh  # (N, 3H): the previous state's part
    r = sigmoid(ax[:, :H] + ah[:, :H])  # reset gate
    z = sigmoid(ax[:, H : 2 * H] + ah[:, H : 2 * H])  # update gate
    hn = ah[:, 2 * H :] + bh  # the previous state's part of the candidate, which r scales
    n = np.tanh(ax[:, 2 * H :] + r * hn)  # the candidate
    next_h = (1 - z) * n + z * prev_h
    return next_h, (x, prev_h, Wx, Wh, r, z, n, hn)


def gru_step_backward(dnext_h, cache):
    """Gradients of one step given dL/dnext_h: (dx, dprev_h, dWx, dWh, db, dbh)."""
    x, prev_h, Wx, Wh, r, z, n, hn = cache
    dn = dnext_h * (1 - z)  # next_h = (1 - z) n + z prev_h
    dz = dnext_h * (prev_h - n)
    da_n = dn * (1 - n**2)  # n = tanh(a_n), a_n = ax_n + r hn
    dr = da_n * hn
    dhn = da_n * r  # hn = ah_n + bh
    da_r = dr * r * (1 - r)  # r = sigmoid(ax_r + ah_r)
    da_z = dz * z * (1 - z)  # z = sigmoid(ax_z + ah_z)
    dax = np.concatenate([da_r, da_z, da_n], axis=1)  # ax = x Wx + b
    dah = np.concatenate([da_r, da_z, dhn], axis=1)  # ah = prev_h Wh
    dx = dax @ Wx.T
    dprev_h = dah @ Wh.T + dnext_h * z  # prev_h reaches next_h through ah and directly
    dWx = x.T @ dax
    dWh = prev_h.T @ dah
    db = dax.sum(axis=0)
    dbh = dhn.sum(axis=0)
    return dx, dprev_h, dWx, dWh, db, dbh


def gru_forward(x, h0, Wx, Wh, b, bh):
    """T steps from h0: x (N, T, D) -> h (N, T, H), every hidden state, and the cache."""
    N, T, _ = x.shape
    h = np.zeros((N, T, h0.shape[1]))
    caches, prev_h = [], h0
    for t in range(T):
        prev_h, cache = gru_step_forward(x[:, t], prev_h, Wx, Wh, b, bh)
        h[:, t] = prev_h
        caches.append(cache)
    return h, caches


def gru_backward(dh, cache):
    """Gradients given dh (N, T, H): (dx, dh0, dWx, dWh, db, dbh)."""
    N, T, H = dh.shape
    dx = np.zeros((N, T, cache[0][0].shape[1]))
    dprev_h, dWx, dWh, db, dbh = np.zeros((N, H)), 0.0, 0.0, 0.0, 0.0
    for t in reversed(range(T)):
        step = gru_step_backward(dh[:, t] + dprev_h, cache[t])
        dx[:, t], dprev_h, dWx_t, dWh_t, db_t, dbh_t = step
        dWx, dWh, db, dbh = dWx + dWx_t, dWh + dWh_t, db + db_t, dbh + dbh_t
    return dx, dprev_h, dWx, dWh, db, dbh


# ----------------------------------------------------------------------------------------------
# Character embedding: out[n, t] = W[x[n, t]], the product one_hot(x[n, t]) W written as a lookup


def embedding_forward(x, W):
    """x (N, T) integer indices in [0, V), W (V, D) -> out (N, T, D) and the cache."""
    out = W[x]  # row x[n, t] of W for every (n, t)
    return out, (x, W)


def embedding_backward(dout, cache):
    """Gradient of W given dout (N, T, D): each row receives the dout of every position that
    looked it up (x holds no gradient: it is an integer index)."""
    x, W = cache
    dW = np.zeros_like(W)
    np.add.at(dW, x, dout)  # dL/dW[v] = sum of dout[n, t] over the (n, t) with x[n, t] == v
    return dW


# ----------------------------------------------------------------------------------------------
# The output layer and the loss


def temporal_affine_forward(x, w, b):
    """``out = x w + b`` at every timestep: x (N, T, D), w (D, M), b (M,) -> out (N, T, M)."""
    return x @ w + b, (x, w)


def temporal_affine_backward(dout, cache):
    """Gradients given dout (N, T, M): (dx, dw, db)."""
    x, w = cache
    D, M = w.shape
    dx = dout @ w.T  # dL/dx = dout w^T
    dw = x.reshape(-1, D).T @ dout.reshape(-1, M)  # dL/dw = sum over (n, t) of x^T dout
    db = dout.reshape(-1, M).sum(axis=0)  # dL/db = sum over (n, t) of dout
    return dx, dw, db


def temporal_softmax_loss(x, y, mask):
    """Cross-entropy of softmax(x) against the targets, averaged over the scored positions.

    x (N, T, V) scores; y (N, T) integer targets; mask (N, T) weights (booleans: which targets
    count), not all zero. ``loss = -sum_(n,t) w log p[y]`` with ``w = mask / sum(mask)``, in nats
    per scored character (CS231n divides by N instead). Returns (loss, dx).
    """
    N, T, V = x.shape
    w = np.asarray(mask, dtype=float) / np.sum(mask)  # each position's share of the mean
    shifted = x - x.max(axis=2, keepdims=True)  # the same softmax, without overflow
    log_p = shifted - np.log(np.exp(shifted).sum(axis=2, keepdims=True))  # log softmax
    log_p_y = np.take_along_axis(log_p, y[:, :, None], axis=2)[:, :, 0]
    loss = -np.sum(w * log_p_y)
    dx = np.exp(log_p) * w[:, :, None]  # dL/dx = w (p - one_hot(y))
    dx[np.arange(N)[:, None], np.arange(T)[None, :], y] -= w
    return loss, dx


# ==============================================================================================
# The composed model: the cells above, stacked into rnncli's language model (``rnncli.model``)
#
#   h^0     = one_hot(x), or with an embedding one_hot(x) embed.W = embed.W[x]
#   h^1     = layer_0(h^0, state0[0])                  the input as it is
#   h^{l+1} = layer_l(dropout(h^l), state0[l])         l = 1..L-1 (inverted dropout, between
#   loss    = temporal_softmax_loss(dropout(h^L) out.W + out.b, y, mask)    layers and on top)
#
# With ``mlp_size`` > 0, each layer's output goes through ``mlp_forward`` (below, with the
# parameters ``mlp.{l}.W1, b1, W2, b2``) before it is the next layer's input.
# With ``residual``, layers l >= 1 add their input before dropout: h^{l+1} = h^l + layer_l(...).
# With RMSNorm (the parameters ``norm.{l}.g``, ``mlpnorm.{l}.g``, ``outnorm.g``; ``rmsnorm_forward``
# below), pre-norm: layer_l(dropout(rms(h^l))) for l >= 1, h + mlp(rms(h)), and
# dropout(rms(h^L)) out.W + out.b.
# With ``conv_size`` K > 0 (the parameters ``conv.{l}.w``, ``causal_conv_forward`` below), each
# cell reads the convolution of its input over the last K steps: layer_l(conv(dropout(...))).
#
# Parameters are the checkpoint's dict: ``embed.W`` (V, E) if the model has one, ``rnn.{l}.Wx``,
# ``rnn.{l}.Wh``, ``rnn.{l}.b`` (and ``rnn.{l}.bh`` for a GRU) for l = 0..L-1, ``out.W`` (H, V)
# and ``out.b`` (V,). The carried state is (L, S, N, H), S = 2 (h, c) for an LSTM, else 1 (h),
# then the K - 1 inputs a convolution carries.


def _rnn_layer_forward(x, state0, weights):
    h, cache = rnn_forward(x, state0[0], *weights)
    return h, h[None, :, -1], cache


def _rnn_layer_backward(dh, cache):
    dx, dh0, *grads = rnn_backward(dh, cache)
    return dx, dh0[None], grads


def _lstm_layer_forward(x, state0, weights):
    h, cache = lstm_forward(x, state0[0], *weights, c0=state0[1])
    _, _, prev_c, _, _, i, f, _, g, _ = cache[-1]
    return h, np.stack([h[:, -1], f * prev_c + i * g]), cache  # c_T by the step's equation


def _lstm_layer_backward(dh, cache):
    dx, dh0, dc0, *grads = lstm_backward_carry(dh, cache)
    return dx, np.stack([dh0, dc0]), grads


def _gru_layer_forward(x, state0, weights):
    h, cache = gru_forward(x, state0[0], *weights)
    return h, h[None, :, -1], cache


def _gru_layer_backward(dh, cache):
    dx, dh0, *grads = gru_backward(dh, cache)
    return dx, dh0[None], grads


class Layer(NamedTuple):
    """One cell as a layer of the stack, with one interface for every cell.

    ``forward(x (N, T, D), state0 (S, N, H), weights)`` -> (h (N, T, H), final state (S, N, H),
    cache); ``backward(dh (N, T, H), cache)`` -> (dx, dstate0 (S, N, H), weight gradients), the
    weights and their gradients in the order of ``params``.
    """

    params: tuple[str, ...]
    forward: Callable
    backward: Callable


LAYERS = {
    "rnn": Layer(("Wx", "Wh", "b"), _rnn_layer_forward, _rnn_layer_backward),
    "lstm": Layer(("Wx", "Wh", "b"), _lstm_layer_forward, _lstm_layer_backward),
    "gru": Layer(("Wx", "Wh", "b", "bh"), _gru_layer_forward, _gru_layer_backward),
}


def one_hot(x, V):
    """x (N, T) integer indices in [0, V) -> (N, T, V) rows of the identity matrix."""
    return np.eye(V)[x]


def dropout_masks(p, rng, num_layers, N, T, H):
    """The inverted-dropout multipliers ``m = [u >= p] / (1 - p)``, ``u ~ U[0, 1)``, that the
    engine draws from ``rng``: one (N, T, H) array per place dropout acts, above each layer but
    the first and then on top of the last, in that order. The engine draws each as float32
    uniforms in its own time-major (T, N, H) layout; this draws them the same way, so that the
    reference can be held to the engine with dropout on. All ones when p == 0 or rng is None
    (evaluation)."""
    if rng is None or p == 0:
        return [np.ones((N, T, H))] * num_layers
    masks = []
    for _ in range(num_layers):
        keep = rng.random((T, N, H), dtype=np.float32) >= np.float32(p)
        masks.append(keep.swapaxes(0, 1) / (1 - p))
    return masks


def model_forward(params, cell, x, y, state0, mask=None, drops=None, residual=False):
    """Loss of one window of the composed model, and the state to carry into the next.

    params: the model's parameters (see above); cell: a key of ``LAYERS``; x, y (N, T) integer
    inputs and targets; state0 (L, S, N, H); mask (N, T) weights of the scored targets (None:
    all 1; at least one must be non-zero); drops: ``dropout_masks`` (None: no dropout).
    residual: add every layer's input to its output above the first. A model with RMSNorm is
    one whose params hold ``outnorm.g``. Returns (loss, final state (L, S, N, H), cache).
    """
    layer, norm = LAYERS[cell], _norm_of(params)
    L, V = len(state0), params["out.W"].shape[1]
    drops = drops or [np.ones(x.shape + (params["out.W"].shape[0],))] * L
    mask = np.ones(x.shape) if mask is None else mask
    if "embed.W" in params:
        h, embed_cache = embedding_forward(x, params["embed.W"])
    else:
        h, embed_cache = one_hot(x, V), None  # the engine gathers rows of Wx instead
    final, layer_caches = np.empty(state0.shape), []
    for l in range(L):  # noqa: E741 (l as in the equations)
        x_in, norm_cache = h, None
        if l > 0:
            h, norm_cache = norm(h, params, f"norm.{l}")
            h = h * drops[l - 1]  # dropout between layers, never on the recurrent connections
        S, conv_cache = state0.shape[1], None  # S: the cell's slots of the state
        if f"conv.{l}.w" in params:  # with conv_size K > 0: the convolution before the cell
            w = params[f"conv.{l}.w"]
            S -= len(w) - 1  # the K - 1 carried inputs follow the cell's slots
            h, final[l, S:], conv_cache = causal_conv_forward(h, state0[l, S:], w)
        weights = [params[f"rnn.{l}.{name}"] for name in layer.params]
        h, final[l, :S], cache = layer.forward(h, state0[l, :S], weights)
        if residual and l > 0:
            h = x_in + h
        mlp_cache = None
        if f"mlp.{l}.W1" in params:  # with mlp_size > 0: the per-character MLP after the layer
            h, mlp_cache = _normed_mlp_forward(h, params, l, norm)
        layer_caches.append((norm_cache, conv_cache, cache, mlp_cache))
    h, out_norm_cache = norm(h, params, "outnorm")
    scores, out_cache = temporal_affine_forward(h * drops[-1], params["out.W"], params["out.b"])
    loss, dscores = temporal_softmax_loss(scores, y, mask)
    caches = (embed_cache, layer_caches, drops, out_norm_cache, out_cache, dscores)
    return loss, final, (cell, residual, caches)


def model_backward(cache):
    """Gradients of ``model_forward``'s loss: (grads by parameter name, dstate0 (L, S, N, H)).
    The final state gets no gradient: it is cut at the window's edge (truncated BPTT)."""
    cell, residual, (embed_cache, layer_caches, drops, out_norm_cache, out_cache, dscores) = cache
    layer, L = LAYERS[cell], len(layer_caches)
    grads = {}
    dh, grads["out.W"], grads["out.b"] = temporal_affine_backward(dscores, out_cache)
    dh = _norm_backward(dh * drops[-1], out_norm_cache, grads, "outnorm")
    dstate0 = []
    for l in reversed(range(L)):  # noqa: E741
        norm_cache, conv_cache, cache, mlp_cache = layer_caches[l]
        if mlp_cache is not None:
            dh = _normed_mlp_backward(dh, mlp_cache, grads, l)
        dy = dh  # the gradient of the layer's output
        dh, dstate, layer_grads = layer.backward(dh, cache)
        grads |= {f"rnn.{l}.{name}": g for name, g in zip(layer.params, layer_grads, strict=True)}
        if conv_cache is not None:
            dh, dcarry, grads[f"conv.{l}.w"] = causal_conv_backward(dh, conv_cache)
            dstate = np.concatenate([dstate, dcarry])
        dstate0.insert(0, dstate)
        if l > 0:
            dh = dh * drops[l - 1]
            dh = _norm_backward(dh, norm_cache, grads, f"norm.{l}")
            if residual:
                dh = dh + dy  # the input reaches the output directly too
            # dh is now the gradient of the layer's input
    if embed_cache is not None:
        grads["embed.W"] = embedding_backward(dh, embed_cache)
    return grads, np.stack(dstate0)


# ==============================================================================================
# The optimizers (``rnncli.optim``), as one training step applies them (``rnncli.parallel``)
#
# A step: compute the global norm of all the gradients and clip them; skip the update when the
# norm is not finite; else update every parameter p with its gradient g at the rate lr times
# the parameter's factor (``input_lr_scale`` for the input table, 1 for the rest). Each
# optimizer below takes p, g, its state (a dict of arrays, empty before the first step) and t,
# the number of steps taken including this one, and returns the new p and the new state.


def sgd(p, g, state, lr, t, momentum=0.0):
    """``p -= lr g``; with momentum mu > 0 (PyTorch's form): ``v = mu v + g``, ``p -= lr v``."""
    if momentum == 0:
        return p - lr * g, {}
    v = momentum * state.get("v", 0.0) + g
    return p - lr * v, {"v": v}


def adagrad(p, g, state, lr, t, eps=1e-8):
    """min-char-rnn's: ``cache += g^2``, ``p -= lr g / sqrt(cache + eps)`` (eps inside the root,
    where PyTorch puts it outside)."""
    cache = state.get("cache", 0.0) + g**2
    return p - lr * g / np.sqrt(cache + eps), {"cache": cache}


def rmsprop(p, g, state, lr, t, decay=0.95, eps=1e-8):
    """char-rnn's: ``cache = d cache + (1 - d) g^2``, ``p -= lr g / (sqrt(cache) + eps)``."""
    cache = decay * state.get("cache", 0.0) + (1 - decay) * g**2
    return p - lr * g / (np.sqrt(cache) + eps), {"cache": cache}


def adam(p, g, state, lr, t, beta1=0.9, beta2=0.999, eps=1e-8):
    """torch-rnn's Adam: moments ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``, and the
    bias corrections folded into the step size, outside eps (PyTorch divides v's inside):
    ``p -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)``."""
    m = beta1 * state.get("m", 0.0) + (1 - beta1) * g
    v = beta2 * state.get("v", 0.0) + (1 - beta2) * g**2
    step_size = lr * np.sqrt(1 - beta2**t) / (1 - beta1**t)
    return p - step_size * m / (np.sqrt(v) + eps), {"m": m, "v": v}


OPTIMIZERS = {"sgd": sgd, "adagrad": adagrad, "rmsprop": rmsprop, "adam": adam}


def clip_gradients(grads, mode, threshold):
    """(clipped copies of ``grads``, their global L2 norm before clipping).

    ``norm = sqrt(sum of g^2 over every element of every gradient)``. ``mode`` "value" clips each
    element to [-threshold, threshold] (char-rnn); "norm" scales every gradient by
    ``threshold / norm`` when ``norm > threshold``. threshold <= 0 turns clipping off, and
    gradients with a non-finite norm are returned as they are (the step is then skipped).
    """
    norm = float(np.sqrt(sum(np.sum(g**2) for g in grads.values())))
    if threshold <= 0 or not np.isfinite(norm):
        return dict(grads), norm
    if mode == "value":
        return {name: np.clip(g, -threshold, threshold) for name, g in grads.items()}, norm
    scale = threshold / norm if norm > threshold else 1.0
    return {name: g * scale for name, g in grads.items()}, norm


def input_rate_factors(params, input_lr_scale):
    """The per-parameter rate factors: ``input_lr_scale`` on the input table that a one-hot
    character selects rows of (``embed.W`` with an embedding, else ``rnn.0.Wx``), 1 elsewhere."""
    table = "embed.W" if "embed.W" in params else "rnn.0.Wx"
    return {name: input_lr_scale if name == table else 1.0 for name in params}


def training_update(params, grads, states, t, optimizer, lr, factors, clip_mode, clip, **hyper):
    """One training step's update: clip, then (if the norm is finite) step ``t`` of
    ``optimizer`` (a key of ``OPTIMIZERS``, with its ``hyper``-parameters) on every parameter at
    rate ``lr * factors[name]``. states: parameter name -> that optimizer's state dict.
    Returns (new params, new states, the norm before clipping)."""
    grads, norm = clip_gradients(grads, clip_mode, clip)
    if not np.isfinite(norm):
        return params, states, norm
    update = OPTIMIZERS[optimizer]
    new_params, new_states = {}, {}
    for name, p in params.items():
        rate = lr * factors.get(name, 1.0)
        new_params[name], new_states[name] = update(p, grads[name], states.get(name, {}), rate,
                                                    t, **hyper)  # fmt: skip
    return new_params, new_states, norm


# ----------------------------------------------------------------------------------------------
# minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?", arXiv 2410.01201): gates
# that see the input only, in the paper's sequential form. Parameters Wx (D, G*H), b (G*H,),
# no Wh.
# minGRU, blocks k, n:  z = sigmoid(x Wx_k + b_k), h~ = x Wx_n + b_n, h_t = (1 - z) h_{t-1} + z h~
# minLSTM, blocks f, i, n: f = sigmoid(x Wx_f + b_f), i = sigmoid(x Wx_i + b_i),
# h~ = x Wx_n + b_n; f' = f / (f + i), i' = i / (f + i); h_t = f' h_{t-1} + i' h~


def mingru_step_forward(x, prev_h, Wx, b):
    """One step: x (N, D), prev_h (N, H), Wx (D, 2H), b (2H,) -> next_h (N, H), cache."""
    H = prev_h.shape[1]
    a = x @ Wx + b  # (N, 2H): both pre-activations come from the input alone
    z = sigmoid(a[:, :H])  # update gate
    h_tilde = a[:, H:]  # the candidate, linear
    next_h = (1 - z) * prev_h + z * h_tilde
    return next_h, (x, prev_h, Wx, z, h_tilde)


def mingru_step_backward(dnext_h, cache):
    """Gradients of one step given dL/dnext_h: (dx, dprev_h, dWx, db)."""
    x, prev_h, Wx, z, h_tilde = cache
    dz = dnext_h * (h_tilde - prev_h)  # next_h = prev_h + z (h~ - prev_h)
    dh_tilde = dnext_h * z
    da = np.concatenate([dz * z * (1 - z), dh_tilde], axis=1)  # z = sigmoid(a_k), h~ = a_n
    dprev_h = dnext_h * (1 - z)  # prev_h reaches next_h only through (1 - z) prev_h
    return da @ Wx.T, dprev_h, x.T @ da, da.sum(axis=0)


def minlstm_step_forward(x, prev_h, Wx, b):
    """One step: x (N, D), prev_h (N, H), Wx (D, 3H), b (3H,) -> next_h (N, H), cache."""
    H = prev_h.shape[1]
    a = x @ Wx + b  # (N, 3H)
    f = sigmoid(a[:, :H])  # forget gate
    i = sigmoid(a[:, H : 2 * H])  # input gate
    h_tilde = a[:, 2 * H :]  # the candidate, linear
    f_norm, i_norm = f / (f + i), i / (f + i)  # normalised: they sum to 1
    next_h = f_norm * prev_h + i_norm * h_tilde
    return next_h, (x, prev_h, Wx, f, i, h_tilde)


def minlstm_step_backward(dnext_h, cache):
    """Gradients of one step given dL/dnext_h: (dx, dprev_h, dWx, db)."""
    x, prev_h, Wx, f, i, h_tilde = cache
    s = f + i
    df_norm = dnext_h * prev_h  # next_h = f' prev_h + i' h~
    di_norm = dnext_h * h_tilde
    df = df_norm * i / s**2 - di_norm * i / s**2  # f' = f / s, i' = i / s, s = f + i
    di = di_norm * f / s**2 - df_norm * f / s**2
    da = np.concatenate([df * f * (1 - f), di * i * (1 - i), dnext_h * i / s], axis=1)
    dprev_h = dnext_h * f / s
    return da @ Wx.T, dprev_h, x.T @ da, da.sum(axis=0)


def _min_forward(step_forward, x, h0, Wx, b):
    N, T, _ = x.shape
    h = np.zeros((N, T, h0.shape[1]))
    caches, prev_h = [], h0
    for t in range(T):
        prev_h, cache = step_forward(x[:, t], prev_h, Wx, b)
        h[:, t] = prev_h
        caches.append(cache)
    return h, caches


def _min_backward(step_backward, dh, cache):
    N, T, H = dh.shape
    dx = np.zeros((N, T, cache[0][0].shape[1]))
    dprev_h, dWx, db = np.zeros((N, H)), 0.0, 0.0
    for t in reversed(range(T)):
        dx[:, t], dprev_h, dWx_t, db_t = step_backward(dh[:, t] + dprev_h, cache[t])
        dWx, db = dWx + dWx_t, db + db_t
    return dx, dprev_h, dWx, db


def mingru_forward(x, h0, Wx, b):
    """T steps from h0: x (N, T, D) -> h (N, T, H), every hidden state, and the cache."""
    return _min_forward(mingru_step_forward, x, h0, Wx, b)


def mingru_backward(dh, cache):
    """Gradients given dh (N, T, H): (dx, dh0, dWx, db)."""
    return _min_backward(mingru_step_backward, dh, cache)


def minlstm_forward(x, h0, Wx, b):
    """T steps from h0: x (N, T, D) -> h (N, T, H), every hidden state, and the cache."""
    return _min_forward(minlstm_step_forward, x, h0, Wx, b)


def minlstm_backward(dh, cache):
    """Gradients given dh (N, T, H): (dx, dh0, dWx, db)."""
    return _min_backward(minlstm_step_backward, dh, cache)


def _min_layer(forward, backward) -> Layer:
    """minGRU or minLSTM as a layer of the stack (one state array, h)."""

    def layer_forward(x, state0, weights):
        h, cache = forward(x, state0[0], *weights)
        return h, h[None, :, -1], cache

    def layer_backward(dh, cache):
        dx, dh0, *grads = backward(dh, cache)
        return dx, dh0[None], grads

    return Layer(("Wx", "b"), layer_forward, layer_backward)


LAYERS["mingru"] = _min_layer(mingru_forward, mingru_backward)
LAYERS["minlstm"] = _min_layer(minlstm_forward, minlstm_backward)


# ----------------------------------------------------------------------------------------------
# Per-character MLP with a residual connection, after a recurrent layer:
# y = x + relu(x W1 + b1) W2 + b2 at every timestep


MLP_PARAMS = ("W1", "b1", "W2", "b2")  # mlp.{l}.W1 ... in the checkpoint


def mlp_forward(x, W1, b1, W2, b2):
    """x (N, T, H), W1 (H, M), b1 (M,), W2 (M, H), b2 (H,) -> y (N, T, H) and the cache."""
    a = x @ W1 + b1  # (N, T, M) pre-activations
    u = np.maximum(a, 0)  # relu
    y = x + u @ W2 + b2  # the MLP's output added to its input
    return y, (x, a, u, W1, W2)


def mlp_backward(dy, cache):
    """Gradients given dy (N, T, H): (dx, dW1, db1, dW2, db2)."""
    x, a, u, W1, W2 = cache
    H, M = W1.shape
    du = dy @ W2.T  # y = x + u W2 + b2
    da = du * (a > 0)  # relu' = 1 where a > 0, else 0
    dx = dy + da @ W1.T  # x reaches y directly and through a = x W1 + b1
    dW1 = x.reshape(-1, H).T @ da.reshape(-1, M)
    dW2 = u.reshape(-1, M).T @ dy.reshape(-1, H)
    return dx, dW1, da.reshape(-1, M).sum(axis=0), dW2, dy.reshape(-1, H).sum(axis=0)


# ----------------------------------------------------------------------------------------------
# RMSNorm (Zhang & Sennrich 2019, "Root Mean Square Layer Normalization", arXiv 1910.07467):
# y = x / sqrt(mean(x^2) + eps) * g over the features, with a learnt gain g (H,)

RMS_EPS = 1e-5


def rmsnorm_forward(x, g, eps=RMS_EPS):
    """x (N, T, H), g (H,) -> y (N, T, H) and the cache."""
    r = 1 / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + eps)  # (N, T, 1)
    n = x * r  # normalised
    return n * g, (x, n, r, g)


def rmsnorm_backward(dy, cache):
    """Gradients given dy (N, T, H): (dx, dg)."""
    x, n, r, g = cache
    H = x.shape[-1]
    dg = (dy * n).reshape(-1, H).sum(axis=0)  # y = n g
    dn = dy * g
    dr = (dn * x).sum(axis=-1, keepdims=True)  # n = x r
    dms = dr * -0.5 * r**3  # r = (ms + eps)^(-1/2)
    dx = dn * r + dms * 2 * x / H  # ms = mean(x^2) over the H features
    return dx, dg


def _norm_of(params):
    """The model's norm as ``norm(h, params, place)`` -> (h', cache): RMSNorm with the gain
    ``{place}.g`` when params hold ``outnorm.g``, else the identity (cache None)."""
    if "outnorm.g" not in params:
        return lambda h, params, place: (h, None)
    return lambda h, params, place: rmsnorm_forward(h, params[f"{place}.g"])


def _norm_backward(dy, cache, grads, place):
    """The gradient of a norm's input (dy itself without a norm); its gain's into grads."""
    if cache is None:
        return dy
    dx, grads[f"{place}.g"] = rmsnorm_backward(dy, cache)
    return dx


def _normed_mlp_forward(h, params, l, norm):  # noqa: E741
    """h + mlp(norm(h)) after layer l: the MLP reads the normalised h, the residual adds h."""
    n, norm_cache = norm(h, params, f"mlpnorm.{l}")
    y, mlp_cache = mlp_forward(n, *(params[f"mlp.{l}.{name}"] for name in MLP_PARAMS))
    return y - n + h, (norm_cache, mlp_cache)  # mlp_forward's y = n + mlp(n): swap n for h


def _normed_mlp_backward(dy, cache, grads, l):  # noqa: E741
    """Gradient of ``_normed_mlp_forward``'s h given dy; the parameters' into grads."""
    norm_cache, mlp_cache = cache
    dn, *mlp_grads = mlp_backward(dy, mlp_cache)  # dn = dy + the MLP path's share
    grads |= {f"mlp.{l}.{name}": g for name, g in zip(MLP_PARAMS, mlp_grads, strict=True)}
    if norm_cache is None:
        return dn  # n is h
    return dy + _norm_backward(dn - dy, norm_cache, grads, f"mlpnorm.{l}")


# ----------------------------------------------------------------------------------------------
# A short causal convolution over time, before a cell (``conv_size`` K > 0), one kernel per
# feature: u_t = w_0 x_t + w_1 x_{t-1} + ... + w_{K-1} x_{t-K+1}, w (K, D). The K - 1 inputs
# before the window are the carry (K-1, N, D) from the window before, most recent first
# (carry[0] = x_{-1}), carried in the state like h and c; zero at the start of a stream.


def causal_conv_forward(x, carry, w):
    """x (N, T, D), carry (K-1, N, D), w (K, D) -> u (N, T, D), the next carry, the cache."""
    K, T = w.shape[0], x.shape[1]
    seq = np.concatenate([carry[::-1].transpose(1, 0, 2), x], axis=1)  # x_{1-K} .. x_{T-1}
    u = np.zeros_like(x)
    for t in range(T):  # x_{t-j} is seq[:, t + K - 1 - j]
        for j in range(K):
            u[:, t] += w[j] * seq[:, t + K - 1 - j]
    next_carry = np.stack([seq[:, T + K - 1 - j] for j in range(1, K)])  # x_{T-1}, x_{T-2}, ...
    return u, next_carry, (seq, w)


def causal_conv_backward(du, cache):
    """Gradients given du (N, T, D): (dx (N, T, D), dcarry (K-1, N, D), dw (K, D))."""
    seq, w = cache
    K, T = w.shape[0], du.shape[1]
    dseq, dw = np.zeros_like(seq), np.zeros_like(w)
    for t in range(T):
        for j in range(K):
            dseq[:, t + K - 1 - j] += w[j] * du[:, t]
            dw[j] += (du[:, t] * seq[:, t + K - 1 - j]).sum(axis=0)
    dcarry = np.stack([dseq[:, K - 1 - j] for j in range(1, K)])
    return dseq[:, K - 1 :], dcarry, dw
