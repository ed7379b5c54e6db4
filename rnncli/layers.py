"""Layers of a character-level language model, each a forward/backward pair.

Every ``*_forward`` returns ``(out, cache)`` and every ``*_backward`` takes ``(dout, cache)`` and
returns the gradients of its inputs, in the order of the forward's arguments. Sequences are
time-major: ``x`` is ``(T, B, D)`` for ``T`` timesteps of ``B`` parallel streams.

The recurrent layers take either dense inputs ``x (..., D)`` or integer indices ``x (...)`` that
stand for ``one_hot(x, D)``; ``one_hot(x) @ Wx`` is then the row gather ``Wx[x]`` and its
gradient a scatter-add of rows into ``dWx``, and ``dx`` is ``None``.

Speed (B = T = 50 windows): the input projection ``x Wx + b`` of all T steps is one GEMM (or
one gather), and ``dWx``, ``dWh``, ``db`` and ``dx`` are one GEMM (or scatter-add) each over all
T * B rows after the backward loop; only the recurrent GEMM and the gate arithmetic run per step,
feature-major (see below) on preallocated buffers with ``out=``. The per-step maths of each cell
lives in one private ``_*_cell_forward/backward`` pair that the step and the sequence functions
share. Sigmoids are computed as ``sigmoid(a) = (1 + tanh(a / 2)) / 2``, an identity (scaling by
1/2 is exact in floating point) that needs no ``exp``, division or temporary. Its absolute
error is within the rounding of 1 (6e-8 in float32), so tiny sigmoids lose relative precision.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "one_hot",
    "embedding_forward",
    "embedding_backward",
    "output_loss_forward",
    "output_loss_backward",
    "dropout_forward",
    "dropout_backward",
    "rnn_step_forward",
    "rnn_step_backward",
    "rnn_step_inplace",
    "rnn_forward",
    "rnn_backward",
    "lstm_step_forward",
    "lstm_step_backward",
    "lstm_step_inplace",
    "lstm_forward",
    "lstm_backward",
    "gru_step_forward",
    "gru_step_backward",
    "gru_step_inplace",
    "gru_forward",
    "gru_backward",
    "Workspace",
]


# ----------------------------------------------------------------------------------------------
# Reusable buffers


class Workspace:
    """Named arrays that layer functions reuse from one call to the next.

    Large fresh arrays cost page faults on first touch (measured: over a quarter of the time
    of a 1x128 RNN training step, 3-10% for the other models and at V = 6000). A function given a
    workspace overwrites what the previous call with that workspace returned and cached: give
    each layer its own, and run a forward's backward before the next forward. Without one,
    every call allocates afresh.
    """

    def __init__(self):
        self._arrays: dict[str, np.ndarray] = {}

    def empty(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """The array called ``name``, (re)allocated if it has another shape or dtype."""
        a = self._arrays.get(name)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = self._arrays[name] = np.empty(shape, dtype=dtype)
        return a


# ----------------------------------------------------------------------------------------------
# One-hot inputs: gather and scatter-add


def one_hot(idx, V: int, dtype=np.float32) -> np.ndarray:
    """One-hot encoding: ``out[..., v] = 1 if idx[...] == v else 0``; ``idx (...)`` -> ``(..., V)``.

    For inspection, teaching and tests; the layers never build it (see ``embedding_forward``).
    """
    idx = np.asarray(idx)
    out = np.zeros(idx.shape + (V,), dtype=dtype)
    np.put_along_axis(out, idx[..., None].astype(np.intp), 1, axis=-1)
    return out


def _is_indices(x: np.ndarray) -> bool:
    return np.issubdtype(x.dtype, np.integer)


def _scatter_add_rows(idx: np.ndarray, d: np.ndarray, num_rows: int) -> np.ndarray:
    """``dW (num_rows, G)`` with ``dW[v] = sum of d[n] over n with idx[n] == v``.

    Equals ``one_hot(idx, num_rows).T @ d``. Measured on 2,500 rows (B = T = 50) this sort-and-sum
    is the fastest exact method: 0.7 ms for G = 512 and 1.9 ms for G = 2048 at V = 65, against
    9 / 34 ms for ``np.add.at``, 1.0 / 3.8 ms for the one-hot GEMM, 9 / 35 ms for sort plus
    ``np.add.reduceat`` and 10 ms for a ``np.bincount`` per column (G = 512); it stays close to
    the cost of writing ``dW`` at V = 6000, where the one-hot GEMM is out of the question.
    """
    idx = idx.reshape(-1).astype(np.intp, copy=False)
    order = np.argsort(idx, kind="stable")
    sorted_idx = idx[order]
    starts = np.flatnonzero(np.diff(sorted_idx, prepend=-1))
    counts = np.diff(starts, append=idx.size)
    rows = sorted_idx[starts]
    dW = np.zeros((num_rows, d.shape[1]), dtype=d.dtype)
    single = counts == 1
    dW[rows[single]] = d[order[starts[single]]]  # rows used once: one vectorised copy
    repeated = zip(
        rows[~single].tolist(), starts[~single].tolist(), counts[~single].tolist(), strict=True
    )
    for row, start, count in repeated:
        np.add.reduce(d[order[start : start + count]], axis=0, out=dW[row])
    return dW


def embedding_forward(x: np.ndarray, W: np.ndarray):
    """Row gather ``out = W[x]``, which equals ``one_hot(x, V) @ W``.

    x: (...) integer indices in [0, V); W: (V, D). Returns out (..., D) and the cache.
    """
    return np.take(W, x, axis=0), (x, W.shape[0])


def embedding_backward(dout: np.ndarray, cache) -> np.ndarray:
    """Scatter-add ``dW[v] = sum of dout[...] where x[...] == v``, i.e. ``one_hot(x).T @ dout``.

    dout: (..., D). Returns dW (V, D).
    """
    x, V = cache
    return _scatter_add_rows(x, dout.reshape(-1, dout.shape[-1]), V)


# ----------------------------------------------------------------------------------------------
# Output layer, loss and dropout


# A softmax over V = 6,000 characters (Chinese verse) on T * B = 2,500 rows is a 60 MB array of
# float32: every whole-array pass streams it through memory. The forward therefore runs its
# passes block by block on rows that fit in L2 (measured at V = 6,000, H = 256: forward and
# backward 135 -> 98 ms, of which the three GEMMs take about 77 ms).
_BLOCK_BYTES = 1 << 19


def output_loss_forward(h, W, b, y, mask=None, ws: Workspace | None = None):
    """The output layer and the loss: logits ``z = h W + b``, then the mean cross-entropy of
    ``softmax(z)`` against the targets over the scored positions.

    h (..., H); W (H, V); b (V,); y (...) integer targets; mask (...) bool/float weights or None
    (all 1); ws: buffers to reuse (see ``Workspace``).
    ``loss = sum_n w_n (log sum_v exp(s_nv) - s_n[y_n])`` in nats per scored character, with
    ``w_n = m_n / sum(m)`` and the max-subtracted logits ``s_n = z_n - max_v z_nv``; 0 when
    nothing is scored. Returns (loss: float, cache). The cache keeps ``q_n = w_n softmax(z_n)``,
    the loss gradient but for its target term, which the backward turns into dz in place.
    """
    ws = Workspace() if ws is None else ws
    h2, y = h.reshape(-1, h.shape[-1]), np.asarray(y).reshape(-1)
    N, V = h2.shape[0], W.shape[1]
    if y.size != N:
        raise ValueError(f"{y.size} targets for {N} positions")
    if N and (y.min() < 0 or y.max() >= V):
        raise IndexError(f"targets must be in [0, {V})")
    if mask is None:
        w = np.full(N, 1.0 / max(N, 1))
    else:
        w = np.asarray(mask, dtype=np.float64).reshape(-1)
        w = w / max(w.sum(), np.finfo(np.float64).tiny)
    q = ws.empty("logits", (N, V), W.dtype)
    np.matmul(h2, W, out=q)  # one GEMM; the passes below then run on cache-sized row blocks
    nll = np.empty(N, dtype=W.dtype)
    qsum = np.zeros(V, dtype=W.dtype)  # sum_n q_n, half of db
    rows = max(1, _BLOCK_BYTES // (V * q.itemsize))
    ones = np.ones(max(rows, V), dtype=W.dtype)  # sums as BLAS products: 2-3x faster than .sum
    for start in range(0, N, rows):
        z, n = q[start : start + rows], slice(start, start + rows)
        z += b
        z -= z.max(axis=1, keepdims=True)
        target = z[np.arange(z.shape[0]), y[n]]
        np.exp(z, out=z)
        total = z @ ones[:V]
        np.subtract(np.log(total), target, out=nll[n])
        z *= (w[n] / total).astype(z.dtype)[:, None]  # q = w * e / total
        qsum += ones[: z.shape[0]] @ z
    loss = float(np.dot(nll.astype(np.float64), w))
    return loss, (h, W, y, w.astype(W.dtype), q, qsum, [False])


def output_loss_backward(dloss: float, cache, ws: Workspace | None = None):
    """Gradients of ``output_loss_forward``: returns (dh (..., H), dW (H, V), db (V,)).

    ``dz_n = dloss w_n (softmax(z_n) - one_hot(y_n)) = dloss (q_n - w_n one_hot(y_n))``, formed in
    the cache's buffer, so a cache serves one backward; then ``dh = dz W^T``, ``dW = h^T dz``
    (one GEMM each) and ``db = sum_n dz_n``.
    """
    ws = Workspace() if ws is None else ws
    h, W, y, w, dz, qsum, used = cache
    if used[0]:
        raise ValueError("this cache served a backward already (it holds dz now)")
    used[0] = True
    dz[np.arange(y.size), y] -= w
    db = qsum - np.bincount(y, weights=w, minlength=W.shape[1]).astype(W.dtype)
    if dloss != 1.0:
        dz *= dz.dtype.type(dloss)
        db *= dz.dtype.type(dloss)
    h2 = h.reshape(-1, h.shape[-1])
    dh = ws.empty("output_dh", h2.shape, dz.dtype)
    np.matmul(dz, W.T, out=dh)
    return dh.reshape(h.shape), np.matmul(h2.T, dz), db


def dropout_forward(x: np.ndarray, p: float, rng):
    """Inverted dropout: ``out = x * m`` with ``m = [u >= p] / (1 - p)``, ``u ~ U[0, 1)``.

    Dropping with probability p and scaling the kept units by 1/(1 - p) keeps E[out] = x, so
    evaluation needs no rescaling. Identity (cache None) when ``rng`` is None or p == 0.
    """
    if rng is None or p == 0.0:
        return x, None
    keep = rng.random(x.shape, dtype=np.float32) >= np.float32(p)
    m = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
    return x * m, m


def dropout_backward(dout: np.ndarray, cache) -> np.ndarray:
    """``dx = dout * m`` (the same mask as the forward)."""
    return dout if cache is None else dout * cache


# ----------------------------------------------------------------------------------------------
# Recurrent layers: shared machinery
#
# The per-step work runs feature-major: each step's arrays are (features, B), so that every gate
# is a contiguous block of rows. In the (B, G*H) row layout each gate is a strided block of
# columns, on which numpy's ufuncs run about 3x slower per element. That outweighs the per-step
# GEMMs, which OpenBLAS runs up to 15% faster on rows at 25 streams and H <= 256 (and slower at
# H = 512). A vanilla RNN layer, which has no gates, runs 2-14% faster on rows (forward and
# backward, 25 streams, H = 128 to 512): too little to keep two layouts. The batched GEMMs
# before and after the loop run on (T * B, features) rows; a transposing copy (``_swap``) at each
# boundary joins the two.


def _swap(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Copy with the last two axes swapped, (..., B, F) <-> (..., F, B), contiguous or in out."""
    if out is None:
        return np.ascontiguousarray(np.swapaxes(x, -1, -2))
    np.copyto(out, np.swapaxes(x, -1, -2))
    return out


def _project(x: np.ndarray, Wx: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = x Wx + b`` at every leading position at once; out is (..., G).

    Indices gather rows of ``Wx``; dense inputs are flattened to one (N, D) x (D, G) GEMM.
    """
    if _is_indices(x):
        if x.size and (x.min() < 0 or x.max() >= Wx.shape[0]):
            raise IndexError(f"input indices must be in [0, {Wx.shape[0]})")
        if x.size >= Wx.shape[0]:  # cheaper to add the bias to V table rows than to N rows
            return np.take(Wx + b, x, axis=0, out=out, mode="clip")
        np.take(Wx, x, axis=0, out=out, mode="clip")  # "raise" would go through a temporary
    else:
        np.matmul(x.reshape(-1, x.shape[-1]), Wx, out=out.reshape(-1, out.shape[-1]))
    out += b
    return out


def _project_backward(da: np.ndarray, x: np.ndarray, Wx: np.ndarray, ws: Workspace):
    """Gradients of ``a = x Wx + b`` from da (..., G) in rows: (dx or None for indices, dWx, db),
    one GEMM or scatter-add each."""
    da2 = da.reshape(-1, da.shape[-1])
    db = da2.sum(axis=0)
    if _is_indices(x):
        return None, _scatter_add_rows(x, da2, Wx.shape[0]), db
    x2 = x.reshape(-1, x.shape[-1])
    dx = ws.empty("dx", x.shape, da.dtype)
    np.matmul(da2, Wx.T, out=dx.reshape(x2.shape))
    return dx, np.matmul(x2.T, da2), db


def _recurrent_weight_grad(h_prev: np.ndarray, dg: np.ndarray) -> np.ndarray:
    """``dWh = sum_t h_{t-1}^T dg_t`` as a single GEMM over all (T * B) rows."""
    return np.matmul(h_prev.reshape(-1, h_prev.shape[-1]).T, dg.reshape(-1, dg.shape[-1]))


def _sequence_start(x, Wx, Wh, b, ws: Workspace, num_states: int):
    """Buffers of a sequence forward: the input projections of all steps, feature-major
    (T, G*H, B), and one (T + 1, H, B) buffer per state array (index t holds the state after
    step t); plus a contiguous Wh^T, with which the per-step GEMM runs ~10% faster than with a
    view."""
    T, B = x.shape[:2]
    GH, H, dtype = Wx.shape[1], Wh.shape[0], Wx.dtype
    rows = _project(x, Wx, b, ws.empty("a_rows", (T, B, GH), dtype))
    A = _swap(rows, ws.empty("a", (T, GH, B), dtype))
    states = [ws.empty(f"state{i}", (T + 1, H, B), dtype) for i in range(num_states)]
    return A, states, _swap(Wh, ws.empty("Wh_T", Wh.shape[::-1], dtype))


def _activate_(a: np.ndarray, num_sigmoid: int) -> None:
    """In place: ``sigmoid`` on the first ``num_sigmoid`` rows of a, ``tanh`` on the others.

    With ``sigmoid(a) = (1 + tanh(a / 2)) / 2``, one tanh call serves all the rows.
    """
    s = a[:num_sigmoid]
    s *= 0.5
    np.tanh(a, out=a)
    s *= 0.5
    s += 0.5


def _sigmoid_backward_(da: np.ndarray, s: np.ndarray, scratch: np.ndarray) -> None:
    """In place ``da <- da * s (1 - s)``, the chain rule through ``s = sigmoid(a)``."""
    np.subtract(1, s, out=scratch)
    scratch *= s
    da *= scratch


def _tanh_backward_(da: np.ndarray, t: np.ndarray, scratch: np.ndarray) -> None:
    """In place ``da <- da * (1 - t^2)``, the chain rule through ``t = tanh(a)``."""
    np.multiply(t, t, out=scratch)
    np.subtract(1, scratch, out=scratch)
    da *= scratch


def _step_input(x, Wx, b):
    """``(x Wx + b)^T`` (G*H, B) for one step of the step API."""
    return _swap(_project(x, Wx, b, np.empty(x.shape[:1] + Wx.shape[1:], dtype=Wx.dtype)))


# ----------------------------------------------------------------------------------------------
# Vanilla RNN: h_t = tanh(x_t Wx + h_{t-1} Wh + b)
# The cell cores work on one step, feature-major: a, h (H, B).


def _rnn_cell_forward(a, h_prev, Wh_T, h):
    """``h = tanh(a + Wh^T h_prev)`` where ``a = (x Wx + b)^T`` is given."""
    np.matmul(Wh_T, h_prev, out=h)
    h += a
    np.tanh(h, out=h)


def _rnn_cell_backward(dh, h, Wh, da, dh_prev):
    """``da = dh (1 - h^2)``; ``dh_prev = Wh da``."""
    np.copyto(da, dh)
    _tanh_backward_(da, h, dh_prev)  # dh_prev is free scratch until the GEMM below
    np.matmul(Wh, da, out=dh_prev)


def rnn_step_forward(x, prev_h, Wx, Wh, b):
    """Vanilla RNN step ``next_h = tanh(x Wx + prev_h Wh + b)``.

    x: (B, D) inputs or (B,) indices; prev_h: (B, H); Wx: (D, H); Wh: (H, H); b: (H,).
    Returns next_h (B, H) and the cache.
    """
    a = _step_input(x, Wx, b)
    h = np.empty_like(a)
    _rnn_cell_forward(a, _swap(prev_h), Wh.T, h)
    return _swap(h), (x, prev_h, h, Wx, Wh)


def rnn_step_backward(dnext_h, cache):
    """Gradients of ``rnn_step_forward``: returns (dx, dprev_h, dWx, dWh, db)."""
    x, prev_h, h, Wx, Wh = cache
    da, dh_prev = np.empty_like(h), np.empty_like(h)
    _rnn_cell_backward(_swap(dnext_h), h, Wh, da, dh_prev)
    da = _swap(da)
    dx, dWx, db = _project_backward(da, x, Wx, Workspace())
    return dx, _swap(dh_prev), dWx, _recurrent_weight_grad(prev_h, da), db


def rnn_step_inplace(a, u, W_T, h, scratch):
    """Vanilla RNN step for inference, in place and feature-major: ``h <- tanh(a + W_T u)``.

    a (H, B): the pre-activation's part computed beforehand, e.g. ``(x Wx + b)^T``; W_T (H, K)
    and u (K, B): the rest as one product, either ``Wh^T`` and ``prev_h^T`` or ``[Wx; Wh]^T``
    and ``[x; prev_h]^T`` stacked; h (H, B): the hidden state, overwritten (it may lie in u);
    scratch (H, B).
    """
    _rnn_cell_forward(a, u, W_T, scratch)  # not into h: the product still reads u
    np.copyto(h, scratch)


def rnn_forward(x, h0, Wx, Wh, b, ws: Workspace | None = None):
    """Vanilla RNN over T steps: ``h_t = tanh(x_t Wx + h_{t-1} Wh + b)``, t = 1..T.

    x: (T, B, D) inputs or (T, B) indices; h0: (B, H); Wx: (D, H); Wh: (H, H); b: (H,);
    ws: buffers to reuse (see ``Workspace``). Returns h (T, B, H), all hidden states (the final
    state is h[-1]), and the cache. h is a view of a buffer the cache keeps: do not modify it.
    """
    ws = Workspace() if ws is None else ws
    A, (hs,), Wh_T = _sequence_start(x, Wx, Wh, b, ws, 1)
    hs[0] = h0.T
    for t in range(A.shape[0]):
        _rnn_cell_forward(A[t], hs[t], Wh_T, hs[t + 1])
    h_rows = _swap(hs, ws.empty("h_rows", hs.shape[:1] + h0.shape, hs.dtype))  # h_0 .. h_T
    return h_rows[1:], (x, h_rows, hs, Wx, Wh)


def rnn_backward(dh, cache, ws: Workspace | None = None):
    """Gradients of ``rnn_forward`` given dh (T, B, H), the loss gradient of every h_t.

    Returns (dx or None for indices, dh0, dWx, dWh, db).
    """
    ws = Workspace() if ws is None else ws
    x, h_rows, hs, Wx, Wh = cache
    dhs = _swap(dh, ws.empty("dh", hs[1:].shape, dh.dtype))  # + the gradient from step t + 1
    dA = ws.empty("da", dhs.shape, dhs.dtype)
    dh_prev = np.zeros_like(dhs[0])
    for t in reversed(range(dhs.shape[0])):
        dhs[t] += dh_prev
        _rnn_cell_backward(dhs[t], hs[t + 1], Wh, dA[t], dh_prev)
    dA = _swap(dA, ws.empty("da_rows", dh.shape, dh.dtype))
    dx, dWx, db = _project_backward(dA, x, Wx, ws)
    return dx, _swap(dh_prev), dWx, _recurrent_weight_grad(h_rows[:-1], dA), db


# ----------------------------------------------------------------------------------------------
# LSTM: a = x Wx + h_{t-1} Wh + b, gates i, f, o, g = sigmoid, sigmoid, sigmoid, tanh of
# a[:, :H], a[:, H:2H], a[:, 2H:3H], a[:, 3H:]; c_t = f * c_{t-1} + i * g; h_t = o * tanh(c_t)
# The cell cores work on one step, feature-major: a (4H, B) with the gates as blocks of rows;
# h, c (H, B).


def _lstm_cell_forward(a, h_prev, c_prev, Wh_T, h, c, tanh_c, scratch):
    """a (4H, B): in ``(x Wx + b)^T``, out the gates [i; f; o; g]. Writes h, c, tanh_c (H, B);
    scratch is (4H, B).
    """
    H = h.shape[0]
    np.matmul(Wh_T, h_prev, out=scratch)
    a += scratch
    _activate_(a, 3 * H)
    i, f, o, g = a[:H], a[H : 2 * H], a[2 * H : 3 * H], a[3 * H :]
    np.multiply(f, c_prev, out=c)
    c += np.multiply(i, g, out=tanh_c)  # tanh_c is scratch until it receives tanh(c)
    np.tanh(c, out=tanh_c)
    np.multiply(o, tanh_c, out=h)


def _lstm_cell_backward(dh, dc, gates, c_prev, tanh_c, Wh, da, dh_prev, scratch):
    """dh (H, B): loss gradient of h_t; dc (H, B): in dL/dc_t from step t + 1, out dL/dc_{t-1}.
    Writes da (4H, B), the gradient of the pre-activations, and ``dh_prev = Wh da``;
    scratch is (4H, B).
    """
    H = dh.shape[0]
    i, f, o, g = gates[:H], gates[H : 2 * H], gates[2 * H : 3 * H], gates[3 * H :]
    di, df, do, dg = da[:H], da[H : 2 * H], da[2 * H : 3 * H], da[3 * H :]
    np.multiply(dh, tanh_c, out=do)
    np.multiply(dh, o, out=di)  # di is scratch here: dc += dh o (1 - tanh(c)^2)
    _tanh_backward_(di, tanh_c, scratch[:H])
    dc += di
    np.multiply(dc, g, out=di)
    np.multiply(dc, c_prev, out=df)
    np.multiply(dc, i, out=dg)
    dc *= f
    _sigmoid_backward_(da[: 3 * H], gates[: 3 * H], scratch[: 3 * H])
    _tanh_backward_(dg, g, scratch[3 * H :])
    np.matmul(Wh, da, out=dh_prev)


def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    """LSTM step: ``a = x Wx + prev_h Wh + b``; i, f, o = sigmoid(a[:, :H], a[:, H:2H],
    a[:, 2H:3H]); g = tanh(a[:, 3H:]); ``next_c = f * prev_c + i * g``;
    ``next_h = o * tanh(next_c)``.

    x: (B, D) inputs or (B,) indices; prev_h, prev_c: (B, H); Wx: (D, 4H); Wh: (H, 4H);
    b: (4H,). Returns (next_h, next_c) and the cache.
    """
    gates, c_prev = _step_input(x, Wx, b), _swap(prev_c)
    h, c, tanh_c = (np.empty_like(c_prev) for _ in range(3))
    _lstm_cell_forward(gates, _swap(prev_h), c_prev, Wh.T, h, c, tanh_c, np.empty_like(gates))
    return (_swap(h), _swap(c)), (x, prev_h, c_prev, Wx, Wh, gates, tanh_c)


def lstm_step_backward(dout, cache):
    """Gradients of ``lstm_step_forward``; dout = (dnext_h, dnext_c).

    Returns (dx, dprev_h, dprev_c, dWx, dWh, db).
    """
    x, prev_h, c_prev, Wx, Wh, gates, tanh_c = cache
    dh, dc = _swap(dout[0]), _swap(dout[1])
    da, dh_prev = np.empty_like(gates), np.empty_like(dh)
    _lstm_cell_backward(dh, dc, gates, c_prev, tanh_c, Wh, da, dh_prev, np.empty_like(da))
    da = _swap(da)
    dx, dWx, db = _project_backward(da, x, Wx, Workspace())
    return dx, _swap(dh_prev), _swap(dc), dWx, _recurrent_weight_grad(prev_h, da), db


def lstm_step_inplace(a, u, W_T, h, c, scratch):
    """LSTM step for inference, in place and feature-major: the equations of
    ``lstm_step_forward`` with pre-activations ``a + W_T u``; (h, c) <- (next_h, next_c).

    a (4H, B): the pre-activations' part computed beforehand, e.g. ``(x Wx + b)^T``; overwritten
    with the gates [i; f; o; g]. W_T (4H, K) and u (K, B): the rest as one product, either
    ``Wh^T`` and ``prev_h^T`` or ``[Wx; Wh]^T`` and ``[x; prev_h]^T`` stacked. h, c (H, B): the
    state, overwritten (h may lie in u: the core reads u, in its product, before writing h);
    scratch (5H, B).
    """
    H = h.shape[0]
    _lstm_cell_forward(a, u, c, W_T, h, c, scratch[4 * H :], scratch[: 4 * H])


def lstm_forward(x, h0, c0, Wx, Wh, b, ws: Workspace | None = None):
    """LSTM over T steps (equations of ``lstm_step_forward``), from state (h0, c0).

    x: (T, B, D) inputs or (T, B) indices; h0, c0: (B, H); Wx: (D, 4H); Wh: (H, 4H); b: (4H,);
    ws: buffers to reuse (see ``Workspace``). Returns (h (T, B, H) all hidden states, c_T (B, H)
    final cell) and the cache; the final state is (h[-1], c_T). h is a view of a buffer the
    cache keeps: do not modify it.
    """
    ws = Workspace() if ws is None else ws
    gates, (hs, cs), Wh_T = _sequence_start(x, Wx, Wh, b, ws, 2)  # gates: x-projections first
    hs[0], cs[0] = h0.T, c0.T
    tanh_c = ws.empty("tanh_c", hs[1:].shape, hs.dtype)
    scratch = ws.empty("scratch", gates.shape[1:], hs.dtype)
    for t in range(gates.shape[0]):
        _lstm_cell_forward(gates[t], hs[t], cs[t], Wh_T, hs[t + 1], cs[t + 1], tanh_c[t], scratch)
    h_rows = _swap(hs, ws.empty("h_rows", hs.shape[:1] + h0.shape, hs.dtype))  # h_0 .. h_T
    return (h_rows[1:], _swap(cs[-1])), (x, h_rows, hs, cs, Wx, Wh, gates, tanh_c)


def lstm_backward(dout, cache, ws: Workspace | None = None):
    """Gradients of ``lstm_forward``; dout = (dh (T, B, H), dc_T (B, H) or None for zero).

    Returns (dx or None for indices, dh0, dc0, dWx, dWh, db).
    """
    ws = Workspace() if ws is None else ws
    x, h_rows, hs, cs, Wx, Wh, gates, tanh_c = cache
    dh, dc_T = dout
    dhs = _swap(dh, ws.empty("dh", hs[1:].shape, dh.dtype))  # + the gradient from step t + 1
    dc = np.zeros_like(dhs[0]) if dc_T is None else _swap(dc_T).astype(dh.dtype)
    dA = ws.empty("da", gates.shape, dh.dtype)
    scratch = ws.empty("dscratch", gates.shape[1:], dh.dtype)
    dh_prev = np.zeros_like(dhs[0])
    for t in reversed(range(dhs.shape[0])):
        dhs[t] += dh_prev
        _lstm_cell_backward(dhs[t], dc, gates[t], cs[t], tanh_c[t], Wh, dA[t], dh_prev, scratch)
    dA = _swap(dA, ws.empty("da_rows", dh.shape[:2] + gates.shape[1:2], dh.dtype))
    dx, dWx, db = _project_backward(dA, x, Wx, ws)
    return dx, _swap(dh_prev), _swap(dc), dWx, _recurrent_weight_grad(h_rows[:-1], dA), db


# ----------------------------------------------------------------------------------------------
# GRU (PyTorch/cuDNN variant): [r, z] = sigmoid(x Wx[:, :2H] + h_{t-1} Wh[:, :2H] + b[:2H]);
# n = tanh(x Wx[:, 2H:] + b[2H:] + r * (h_{t-1} Wh[:, 2H:] + bh)); h_t = (1 - z) n + z h_{t-1}
# The cell cores work on one step, feature-major: a (3H, B) with r, z, n as blocks of rows;
# h (H, B).


def _gru_cell_forward(a, h_prev, Wh_T, bh, hn, h, scratch):
    """a (3H, B): in ``(x Wx + b)^T``, out the activations [r; z; n]. Writes
    ``hn = (h_prev Wh[:, 2H:] + bh)^T`` (kept for the backward) and h, both (H, B);
    bh is (H, 1); scratch is (3H, B).
    """
    H = h.shape[0]
    np.matmul(Wh_T, h_prev, out=scratch)
    rz, n = a[: 2 * H], a[2 * H :]
    rz += scratch[: 2 * H]
    _activate_(rz, 2 * H)
    r, z = a[:H], a[H : 2 * H]
    np.add(scratch[2 * H :], bh, out=hn)
    n += np.multiply(r, hn, out=scratch[2 * H :])
    np.tanh(n, out=n)
    np.subtract(h_prev, n, out=h)  # h = n + z (h_prev - n)
    h *= z
    h += n


def _gru_cell_backward(dh, gates, hn, h_prev, Wh, da, dg, dh_prev, scratch):
    """dh (H, B): loss gradient of h_t. Writes da (3H, B), the gradient of ``(x Wx + b)^T``;
    dg (3H, B), that of ``(h_prev Wh)^T`` (equal to da in the r, z rows); and
    ``dh_prev = Wh dg + dh z``. scratch is (H, B).
    """
    H = dh.shape[0]
    r, z, n = gates[:H], gates[H : 2 * H], gates[2 * H :]
    dr, dz, dn = da[:H], da[H : 2 * H], da[2 * H :]
    np.subtract(h_prev, n, out=dz)
    dz *= dh
    np.subtract(1, z, out=dn)
    dn *= dh
    _tanh_backward_(dn, n, scratch)
    np.multiply(dn, hn, out=dr)
    np.multiply(dn, r, out=dg[2 * H :])
    _sigmoid_backward_(da[: 2 * H], gates[: 2 * H], dg[: 2 * H])
    np.copyto(dg[: 2 * H], da[: 2 * H])
    np.matmul(Wh, dg, out=dh_prev)
    dh_prev += np.multiply(dh, z, out=scratch)


def gru_step_forward(x, prev_h, Wx, Wh, b, bh):
    """GRU step (PyTorch/cuDNN variant):
    ``[r, z] = sigmoid(x Wx[:, :2H] + prev_h Wh[:, :2H] + b[:2H])``;
    ``n = tanh(x Wx[:, 2H:] + b[2H:] + r * (prev_h Wh[:, 2H:] + bh))``;
    ``next_h = (1 - z) * n + z * prev_h``.

    x: (B, D) inputs or (B,) indices; prev_h: (B, H); Wx: (D, 3H); Wh: (H, 3H); b: (3H,);
    bh: (H,). Returns next_h (B, H) and the cache.
    """
    gates, h_prev = _step_input(x, Wx, b), _swap(prev_h)
    hn, h = np.empty_like(h_prev), np.empty_like(h_prev)
    _gru_cell_forward(gates, h_prev, Wh.T, bh[:, None], hn, h, np.empty_like(gates))
    return _swap(h), (x, prev_h, h_prev, Wx, Wh, gates, hn)


def gru_step_backward(dnext_h, cache):
    """Gradients of ``gru_step_forward``: returns (dx, dprev_h, dWx, dWh, db, dbh)."""
    x, prev_h, h_prev, Wx, Wh, gates, hn = cache
    da, dg, dh_prev = np.empty_like(gates), np.empty_like(gates), np.empty_like(hn)
    _gru_cell_backward(_swap(dnext_h), gates, hn, h_prev, Wh, da, dg, dh_prev, np.empty_like(hn))
    da, dg = _swap(da), _swap(dg)
    dx, dWx, db = _project_backward(da, x, Wx, Workspace())
    dbh = dg[:, 2 * hn.shape[0] :].sum(axis=0)
    return dx, _swap(dh_prev), dWx, _recurrent_weight_grad(prev_h, dg), db, dbh


def gru_step_inplace(a, h, Wh_T, bh, scratch):
    """GRU step for inference, in place and feature-major: h <- next_h of ``gru_step_forward``.

    a (3H, B): ``(x Wx + b)^T``, overwritten with [r; z; n]; h (H, B): the hidden state,
    overwritten; Wh_T (3H, H); bh (H, 1); scratch (4H, B). Unlike the other cells, x Wx cannot
    join the recurrent product: r scales only the h_prev part of n.
    """
    H = h.shape[0]
    _gru_cell_forward(a, h, Wh_T, bh, scratch[3 * H :], h, scratch[: 3 * H])


def gru_forward(x, h0, Wx, Wh, b, bh, ws: Workspace | None = None):
    """GRU over T steps (equations of ``gru_step_forward``) from h0.

    x: (T, B, D) inputs or (T, B) indices; h0: (B, H); Wx: (D, 3H); Wh: (H, 3H); b: (3H,);
    bh: (H,); ws: buffers to reuse (see ``Workspace``). Returns h (T, B, H), all hidden states
    (the final state is h[-1]), and the cache. h is a view of a buffer the cache keeps: do not
    modify it.
    """
    ws = Workspace() if ws is None else ws
    gates, (hs,), Wh_T = _sequence_start(x, Wx, Wh, b, ws, 1)  # gates: x-projections first
    hs[0] = h0.T
    hn = ws.empty("hn", hs[1:].shape, hs.dtype)
    scratch = ws.empty("scratch", gates.shape[1:], hs.dtype)
    for t in range(gates.shape[0]):
        _gru_cell_forward(gates[t], hs[t], Wh_T, bh[:, None], hn[t], hs[t + 1], scratch)
    h_rows = _swap(hs, ws.empty("h_rows", hs.shape[:1] + h0.shape, hs.dtype))  # h_0 .. h_T
    return h_rows[1:], (x, h_rows, hs, Wx, Wh, gates, hn)


def gru_backward(dh, cache, ws: Workspace | None = None):
    """Gradients of ``gru_forward`` given dh (T, B, H), the loss gradient of every h_t.

    Returns (dx or None for indices, dh0, dWx, dWh, db, dbh).
    """
    ws = Workspace() if ws is None else ws
    x, h_rows, hs, Wx, Wh, gates, hn = cache
    dhs = _swap(dh, ws.empty("dh", hs[1:].shape, dh.dtype))  # + the gradient from step t + 1
    dA, dG = ws.empty("da", gates.shape, dh.dtype), ws.empty("dg", gates.shape, dh.dtype)
    dh_prev, scratch = np.zeros_like(dhs[0]), ws.empty("dscratch", dhs.shape[1:], dh.dtype)
    for t in reversed(range(dhs.shape[0])):
        dhs[t] += dh_prev
        _gru_cell_backward(dhs[t], gates[t], hn[t], hs[t], Wh, dA[t], dG[t], dh_prev, scratch)
    rows = dh.shape[:2] + gates.shape[1:2]
    dA, dG = (
        _swap(dA, ws.empty("da_rows", rows, dh.dtype)),
        _swap(dG, ws.empty("dg_rows", rows, dh.dtype)),
    )
    dx, dWx, db = _project_backward(dA, x, Wx, ws)
    H = Wh.shape[0]
    dbh = dG[..., 2 * H :].reshape(-1, H).sum(axis=0)
    return dx, _swap(dh_prev), dWx, _recurrent_weight_grad(h_rows[:-1], dG), db, dbh
