"""The engine: the layers of a character-level language model, written for speed.

``rnncli.reference`` states the same maths plainly (read it first); the test suite holds this
module to it. Every ``*_forward`` returns its outputs and a cache, and every ``*_backward`` takes
the output gradients and the cache and returns the gradients of the inputs. Sequences are
time-major: ``x`` is ``(T, B, D)`` for ``T`` timesteps of ``B`` parallel streams.

The recurrent layers take either dense inputs ``x (..., D)`` or integer indices ``x (...)`` that
stand for ``one_hot(x, D)``; ``one_hot(x) @ Wx`` is then the row gather ``Wx[x]`` and its
gradient a scatter-add of rows into ``dWx``, and ``dx`` is ``None``. Each cell is a
``RecurrentCore`` (its per-step maths) that ``sequence_forward`` and ``sequence_backward`` run
over time, plus an inference step (``*_step_inplace``); ``rnncli.cells`` declares the cells.

How it is fast: the input projection of all T steps is one GEMM (or gather), and ``dWx``,
``dWh``, ``db`` and ``dx`` are one GEMM (or scatter-add) each over all T * B rows after the
backward loop; only the recurrent GEMM and the gate arithmetic run per step, feature-major (see
below) on preallocated buffers with ``out=``. Sigmoids are computed as
``sigmoid(a) = (1 + tanh(a / 2)) / 2``, an identity (scaling by 1/2 is exact in floating point)
that needs no ``exp``, division or temporary. Its absolute error is within the rounding of 1
(6e-8 in float32), so tiny sigmoids lose relative precision.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

__all__ = [
    "one_hot",
    "embedding_forward",
    "embedding_backward",
    "output_loss_forward",
    "output_loss_backward",
    "dropout_forward",
    "dropout_backward",
    "RecurrentCore",
    "sequence_forward",
    "sequence_backward",
    "RNN_CORE",
    "LSTM_CORE",
    "GRU_CORE",
    "rnn_step_inplace",
    "lstm_step_inplace",
    "gru_step_inplace",
    "Workspace",
]


# ----------------------------------------------------------------------------------------------
# Reusable buffers


class Workspace:
    """Named arrays that layer functions reuse from one call to the next.

    Large fresh arrays cost page faults on first touch, a large share of a small model's
    training step (docs/benchmarks.md). A function given a workspace overwrites what the
    previous call with that workspace returned and cached: give each layer its own, and run a
    forward's backward before the next forward. Without one, every call allocates afresh.
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

    Equals ``one_hot(idx, num_rows).T @ d``. Sorting the indices and summing each run of equal
    ones is exact and was the fastest of the methods tried (``np.add.at``, the one-hot GEMM,
    ``np.add.reduceat``, a ``np.bincount`` per column; docs/benchmarks.md), and it stays close
    to the cost of writing ``dW`` at large V, where the one-hot GEMM is out of the question.
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


def embedding_forward(x: np.ndarray, W: np.ndarray, ws: Workspace | None = None):
    """Row gather ``out = W[x]``, which equals ``one_hot(x, V) @ W``.

    x: (...) integer indices in [0, V); W: (V, D); ws: the buffer to reuse (see ``Workspace``).
    Returns out (..., D) and the cache.
    """
    if x.size and (x.min() < 0 or x.max() >= W.shape[0]):
        raise IndexError(f"input indices must be in [0, {W.shape[0]})")
    ws = Workspace() if ws is None else ws
    out = ws.empty("embedded", x.shape + W.shape[1:], W.dtype)
    np.take(W, x, axis=0, out=out, mode="clip")  # "raise" would go through a temporary
    return out, (x, W.shape[0])


def embedding_backward(dout: np.ndarray, cache) -> np.ndarray:
    """Scatter-add ``dW[v] = sum of dout[...] where x[...] == v``, i.e. ``one_hot(x).T @ dout``.

    dout: (..., D). Returns dW (V, D).
    """
    x, V = cache
    return _scatter_add_rows(x, dout.reshape(-1, dout.shape[-1]), V)


# ----------------------------------------------------------------------------------------------
# Output layer, loss and dropout


# A softmax over thousands of characters (Chinese verse) on T * B rows is tens of megabytes:
# every whole-array pass would stream it through memory. The forward therefore runs its passes
# block by block on rows that fit in L2 (docs/benchmarks.md).
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
    ones = np.ones(max(rows, V), dtype=W.dtype)  # sums as BLAS products, faster than .sum
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


def output_position_nll(cache) -> np.ndarray:
    """-ln softmax(z_n)[y_n] at every position of an ``output_loss_forward``, flat in its order
    (float64), read off its cache (``q_n[y_n] / w_n``) before a backward reuses the buffer; a
    probability below float32's smallest is read as that smallest. NaN where w_n = 0."""
    _, _, y, w, q, _, used = cache
    if used[0]:
        raise ValueError("this cache served a backward already (it holds dz now)")
    p = q[np.arange(y.size), y].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.maximum(p, np.finfo(np.float32).smallest_subnormal) / w.astype(np.float64)
        return np.where(w > 0, -np.log(p), np.nan)


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
# Recurrent layers: the sequence skeleton, written once for every cell
#
# The per-step work runs feature-major: each step's arrays are (features, B), so that every gate
# is a contiguous block of rows, on which numpy's ufuncs run much faster than on the strided
# column blocks of the (B, G*H) row layout (docs/benchmarks.md has the measurements). The
# batched GEMMs before and after the time loop run on (T * B, features) rows; a transposing copy
# (``_swap``) at each boundary joins the two. ``rnncli.reference`` states the same maths in rows.


class RecurrentCore(NamedTuple):
    """One cell's per-step maths for ``sequence_forward`` and ``sequence_backward``.

    Feature-major, in place, one step; S state arrays (h first), G gate blocks of H rows.

    ``forward(a, prev, Wh_T, nxt, kept, scratch, *columns)``: ``a`` (G*H, B) holds ``x Wx + b``
    and may be overwritten with what the backward needs (the LSTM and GRU keep their gate
    activations there); ``prev`` and ``nxt`` are tuples of S (H, B) arrays, the state before and
    after the step; ``kept`` (``kept_rows``, B) is more for the backward; ``scratch`` is
    (G*H, B); ``columns`` are the layer's parameters after Wx, Wh and b, as (n, 1) columns.

    ``backward(dh, dstate, a, prev, nxt, kept, Wh, da, dg, scratch, *columns)``: ``dh`` (H, B)
    is the loss gradient of h_t; ``dstate`` the S (H, B) gradients of the state after the step
    from the steps after it (its h is already in dh), overwritten with those of the state before
    it; writes ``da`` (G*H, B), the gradient of ``x Wx + b``, and ``dg``, that of
    ``h_{t-1} Wh``, which is ``da`` itself unless ``own_dg``.

    ``extra_grads(dg_rows, h_prev_rows)``: the gradients of the parameters after Wx, Wh and b,
    from dg and h_{t-1} of every step as (T, B, G*H) and (T, B, H) rows.
    """

    forward: Callable
    backward: Callable
    kept_rows: Callable[[int], int]  # H -> rows of ``kept`` per step
    own_dg: bool = False
    extra_grads: Callable = lambda dg_rows, h_prev_rows: ()


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


def sequence_forward(core: RecurrentCore, x, state0, weights, ws: Workspace | None = None):
    """A recurrent layer over T steps, the engine's fast path.

    core: the cell's per-step maths; x: (T, B, D) inputs or (T, B) indices (one-hot rows);
    state0: (S, B, H) the state before step 1; weights: the layer's parameters in the cell's
    order, Wx (D, G*H), Wh (H, G*H), b (G*H,) first; ws: buffers to reuse (see ``Workspace``).
    Returns h (T, B, H) every hidden state, final (S, B, H) the state after step T (a new array),
    and the cache. h is a view of a buffer the cache keeps: do not modify it.

    The input projections of all steps are one GEMM (or gather) before the loop; only the
    recurrent product and the gate arithmetic run per step, on buffers reused from call to call.
    """
    ws = Workspace() if ws is None else ws
    Wx, Wh, b, *extra = weights
    (T, B), (S, _, H), dtype = x.shape[:2], state0.shape, Wx.dtype
    rows = _project(x, Wx, b, ws.empty("a_rows", (T, B, Wx.shape[1]), dtype))
    A = _swap(rows, ws.empty("a", (T, Wx.shape[1], B), dtype))  # becomes the gate activations
    states = [ws.empty(f"state{i}", (T + 1, H, B), dtype) for i in range(S)]  # t: after step t
    for s, s0 in zip(states, state0, strict=True):
        _swap(s0, s[0])
    steps = list(zip(*states, strict=True))  # steps[t]: the S (H, B) views at t, made once
    kept = ws.empty("kept", (T, core.kept_rows(H), B), dtype)
    scratch = ws.empty("scratch", A.shape[1:], dtype)
    Wh_T = _swap(Wh, ws.empty("Wh_T", Wh.shape[::-1], dtype))  # a contiguous copy: faster GEMMs
    columns = [p.reshape(-1, 1) for p in extra]
    for a, prev, nxt, kept_t in zip(A, steps[:-1], steps[1:], kept, strict=True):
        core.forward(a, prev, Wh_T, nxt, kept_t, scratch, *columns)
    h_rows = _swap(states[0], ws.empty("h_rows", (T + 1, B, H), dtype))  # h_0 .. h_T
    final = np.stack([s[-1].T for s in states])
    return h_rows[1:], final, (x, weights, A, steps, kept, h_rows)


def sequence_backward(core: RecurrentCore, dh, cache, ws: Workspace | None = None):
    """Gradients of ``sequence_forward`` given dh (T, B, H), the loss gradient of every h_t;
    the final state gets none (truncated backpropagation through time).

    Returns (dx or None for indices, dstate0 (S, B, H), the parameters' gradients in the order
    of ``weights``). The weight gradients are one GEMM (or scatter-add) each over all T * B rows,
    after the loop.
    """
    ws = Workspace() if ws is None else ws
    x, weights, A, steps, kept, h_rows = cache
    Wx, Wh, _, *extra = weights
    T, H = dh.shape[0], Wh.shape[0]
    columns = [p.reshape(-1, 1) for p in extra]
    dhs = _swap(dh, ws.empty("dh", (T, H, dh.shape[1]), dh.dtype))
    dA = ws.empty("da", A.shape, dh.dtype)
    dG = ws.empty("dg", A.shape, dh.dtype) if core.own_dg else dA
    dstate = np.zeros((len(steps[0]),) + dhs.shape[1:], dh.dtype)  # of the state after step t
    dsteps = tuple(dstate)  # from step t + 1 on: the gradient carried back through time
    scratch = ws.empty("dscratch", A.shape[1:], dh.dtype)
    # t = T .. 1: each step's arrays, reversed; steps[t - 1] is its state before, steps[t] after
    backwards = zip(dhs[::-1], A[::-1], steps[-2::-1], steps[:0:-1], kept[::-1], dA[::-1],
                    dG[::-1], strict=True)  # fmt: skip
    for dh_t, a, prev, nxt, kept_t, da, dg in backwards:
        dh_t += dsteps[0]
        core.backward(dh_t, dsteps, a, prev, nxt, kept_t, Wh, da, dg, scratch, *columns)
    rows = dh.shape[:2] + A.shape[1:2]
    dA_rows = _swap(dA, ws.empty("da_rows", rows, dh.dtype))
    dG_rows = _swap(dG, ws.empty("dg_rows", rows, dh.dtype)) if core.own_dg else dA_rows
    dx, dWx, db = _project_backward(dA_rows, x, Wx, ws)
    dWh = _recurrent_weight_grad(h_rows[:-1], dG_rows)
    return dx, _swap(dstate), (dWx, dWh, db, *core.extra_grads(dG_rows, h_rows[:-1]))


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


# ----------------------------------------------------------------------------------------------
# Vanilla RNN: h_t = tanh(x_t Wx + h_{t-1} Wh + b)
# The cell cores work on one step, feature-major: a, h (H, B).


def _rnn_cell_forward(a, h_prev, Wh_T, h):
    """``h = tanh(a + Wh^T h_prev)`` where ``a = (x Wx + b)^T`` is given."""
    np.matmul(Wh_T, h_prev, out=h)
    h += a
    np.tanh(h, out=h)


def _rnn_forward_step(a, prev, Wh_T, nxt, kept, scratch):
    _rnn_cell_forward(a, prev[0], Wh_T, nxt[0])


def _rnn_backward_step(dh, dstate, a, prev, nxt, kept, Wh, da, dg, scratch):
    """``da = dh (1 - h^2)``; ``dh_prev = Wh da``."""
    (dh_prev,) = dstate
    np.copyto(da, dh)
    _tanh_backward_(da, nxt[0], dh_prev)  # dh_prev is free scratch until the GEMM below
    np.matmul(Wh, da, out=dh_prev)


RNN_CORE = RecurrentCore(_rnn_forward_step, _rnn_backward_step, kept_rows=lambda H: 0)


def rnn_step_inplace(a, u, W_T, state, scratch, columns=()):
    """Vanilla RNN step for inference, in place and feature-major: ``h <- tanh(a + W_T u)``.

    The inference step every cell has, with this signature: a (G*H, B): the pre-activations'
    part computed beforehand, ``(x Wx + b)^T``, or only b when x Wx is in the product; W_T
    (G*H, K) and u (K, B): the rest as one product, either ``Wh^T`` and ``prev_h^T``, or
    ``[Wx; Wh]^T`` and ``[x; prev_h]^T`` stacked (cells that can stack); state: the S (H, B)
    state arrays, overwritten (h may lie in u); scratch ((G + 1) * H, B); columns: the layer's
    parameters after Wx, Wh and b as (n, 1) columns.
    """
    (h,) = state
    out = scratch[: h.shape[0]]
    _rnn_cell_forward(a, u, W_T, out)  # not into h: the product still reads u
    np.copyto(h, out)


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


def _lstm_forward_step(a, prev, Wh_T, nxt, kept, scratch):
    _lstm_cell_forward(a, prev[0], prev[1], Wh_T, nxt[0], nxt[1], kept, scratch)


def _lstm_backward_step(dh, dstate, gates, prev, nxt, tanh_c, Wh, da, dg, scratch):
    """dh (H, B): loss gradient of h_t; dc = dstate[1]: in dL/dc_t from step t + 1, out
    dL/dc_{t-1}. Writes da (4H, B), the gradient of the pre-activations, and
    ``dh_prev = Wh da`` into dstate[0]; scratch is (4H, B).
    """
    dh_prev, dc = dstate
    c_prev, H = prev[1], dh.shape[0]
    i, f, o, g = gates[:H], gates[H : 2 * H], gates[2 * H : 3 * H], gates[3 * H :]
    di, df, do, dg_ = da[:H], da[H : 2 * H], da[2 * H : 3 * H], da[3 * H :]
    np.multiply(dh, tanh_c, out=do)
    np.multiply(dh, o, out=di)  # di is scratch here: dc += dh o (1 - tanh(c)^2)
    _tanh_backward_(di, tanh_c, scratch[:H])
    dc += di
    np.multiply(dc, g, out=di)
    np.multiply(dc, c_prev, out=df)
    np.multiply(dc, i, out=dg_)
    dc *= f
    _sigmoid_backward_(da[: 3 * H], gates[: 3 * H], scratch[: 3 * H])
    _tanh_backward_(dg_, g, scratch[3 * H :])
    np.matmul(Wh, da, out=dh_prev)


LSTM_CORE = RecurrentCore(_lstm_forward_step, _lstm_backward_step, kept_rows=lambda H: H)


def lstm_step_inplace(a, u, W_T, state, scratch, columns=()):
    """LSTM step for inference, in place: the signature of ``rnn_step_inplace``; a is
    overwritten with the gates [i; f; o; g], state (h, c) with (next_h, next_c)."""
    h, c = state
    H = h.shape[0]
    _lstm_cell_forward(a, u, c, W_T, h, c, scratch[4 * H :], scratch[: 4 * H])


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


def _gru_forward_step(a, prev, Wh_T, nxt, hn, scratch, bh):
    _gru_cell_forward(a, prev[0], Wh_T, bh, hn, nxt[0], scratch)


def _gru_backward_step(dh, dstate, gates, prev, nxt, hn, Wh, da, dg, scratch, bh):
    """dh (H, B): loss gradient of h_t. Writes da (3H, B), the gradient of ``(x Wx + b)^T``;
    dg (3H, B), that of ``(h_prev Wh)^T`` (equal to da in the r, z rows); and
    ``dh_prev = Wh dg + dh z`` into dstate[0].
    """
    (dh_prev,) = dstate
    h_prev, H = prev[0], dh.shape[0]
    scratch = scratch[:H]
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


def _gru_extra_grads(dg_rows, h_prev_rows):
    """``dbh``: bh enters n as part of the recurrent product's block n."""
    H = h_prev_rows.shape[-1]
    return (dg_rows[..., 2 * H :].reshape(-1, H).sum(axis=0),)


GRU_CORE = RecurrentCore(_gru_forward_step, _gru_backward_step, kept_rows=lambda H: H,
                         own_dg=True, extra_grads=_gru_extra_grads)  # fmt: skip


def gru_step_inplace(a, u, W_T, state, scratch, columns):
    """GRU step for inference, in place: the signature of ``rnn_step_inplace``, with columns
    (bh,), bh (H, 1); a is overwritten with [r; z; n], state (h,) with (next_h,). A GRU cannot
    stack x Wx into the product (r scales only the h_prev part of n): u is h."""
    (h,), (bh,) = state, columns
    H = h.shape[0]
    _gru_cell_forward(a, u, W_T, bh, scratch[3 * H :], h, scratch[: 3 * H])


# ----------------------------------------------------------------------------------------------
# Per-character MLP with a residual connection, after a recurrent layer:
# y = x + relu(x W1 + b1) W2 + b2, on every (t, b) row at once (two GEMMs over T * B rows)


def mlp_forward(x, W1, b1, W2, b2, ws: Workspace | None = None, skip=None):
    """x (..., H); W1 (H, M), b1 (M,), W2 (M, H), b2 (H,); ws: buffers to reuse; skip (..., H)
    what the residual path adds, x when None (a pre-norm MLP reads norm(h) and adds h).
    Returns y (..., H) and the cache."""
    ws = Workspace() if ws is None else ws
    x2 = x.reshape(-1, x.shape[-1])
    u = ws.empty("mlp_u", (x2.shape[0], W1.shape[1]), W1.dtype)
    np.matmul(x2, W1, out=u)
    u += b1
    np.maximum(u, 0, out=u)
    y = ws.empty("mlp_y", x2.shape, W1.dtype)
    np.matmul(u, W2, out=y)
    y += b2
    y += x2 if skip is None else skip.reshape(x2.shape)
    return y.reshape(x.shape), (x2, u, W1, W2, skip is None)


def mlp_backward(dy, cache, ws: Workspace | None = None):
    """Gradients of ``mlp_forward`` given dy (..., H): (dx (..., H), (dW1, db1, dW2, db2));
    with a separate ``skip``, dx is the MLP path's alone (skip's gradient is dy)."""
    ws = Workspace() if ws is None else ws
    x2, u, W1, W2, skip_is_x = cache
    dy2 = dy.reshape(-1, dy.shape[-1])
    du = ws.empty("mlp_du", u.shape, dy.dtype)
    np.matmul(dy2, W2.T, out=du)
    du *= u > 0  # relu: the gradient passes where the unit was active
    dx = ws.empty("mlp_dx", x2.shape, dy.dtype)
    np.matmul(du, W1.T, out=dx)
    if skip_is_x:
        dx += dy2  # the residual path
    grads = (np.matmul(x2.T, du), du.sum(axis=0), np.matmul(u.T, dy2), dy2.sum(axis=0))
    return dx.reshape(dy.shape), grads


def mlp_step(x, W1_T, b1, W2_T, b2, u, y, skip=None):
    """The MLP on one step, feature-major for the Stepper: x (H, B) -> y (H, B); W1_T (M, H)
    and W2_T (H, M) contiguous, b1 (M, 1), b2 (H, 1), u (M, B) a buffer; skip as in
    ``mlp_forward``."""
    np.matmul(W1_T, x, out=u)
    u += b1
    np.maximum(u, 0, out=u)
    np.matmul(W2_T, u, out=y)
    y += b2
    y += x if skip is None else skip


# ----------------------------------------------------------------------------------------------
# RMSNorm (Zhang & Sennrich 2019, arXiv 1910.07467) over the last axis: y = x r g with
# r = 1 / sqrt(mean(x^2) + eps), a learnt gain g (H,).

RMS_EPS = 1e-5


def rmsnorm_forward(x, g, ws: Workspace | None = None):
    """x (..., H), g (H,); ws: buffers to reuse. Returns y (..., H) and the cache."""
    ws = Workspace() if ws is None else ws
    x2 = x.reshape(-1, x.shape[-1])
    r = np.einsum("nh,nh->n", x2, x2)[:, None]  # sums of squares, no (N, H) temporary
    r /= x2.shape[1]
    r += RMS_EPS
    np.sqrt(r, out=r)
    np.reciprocal(r, out=r)
    n = np.multiply(x2, r, out=ws.empty("rms_n", x2.shape, g.dtype))
    y = np.multiply(n, g, out=ws.empty("rms_y", x2.shape, g.dtype))
    return y.reshape(x.shape), (n, r, g)


def rmsnorm_backward(dy, cache, ws: Workspace | None = None):
    """Gradients of ``rmsnorm_forward`` given dy (..., H): (dx (..., H), (dg,))."""
    ws = Workspace() if ws is None else ws
    n, r, g = cache
    dy2 = dy.reshape(n.shape)
    dg = np.einsum("nh,nh->h", dy2, n)
    dn = np.multiply(dy2, g, out=ws.empty("rms_dn", n.shape, dy.dtype))
    dot = np.einsum("nh,nh->n", dn, n)[:, None]  # dx = r (dn - n mean(dn n))
    dot /= n.shape[1]
    dx = np.multiply(n, dot, out=ws.empty("rms_dx", n.shape, dy.dtype))
    np.subtract(dn, dx, out=dx)
    dx *= r
    return dx.reshape(dy.shape), (dg,)


def rmsnorm_step(x, g, out):
    """RMSNorm on one step, feature-major for the Stepper: x (H, B) -> out (H, B); g (H, 1)."""
    r = np.einsum("hb,hb->b", x, x)
    r /= x.shape[0]
    r += RMS_EPS
    np.sqrt(r, out=r)
    np.divide(x, r, out=out)
    out *= g


class Norm(NamedTuple):
    """A normalisation over the features: its parameters, each an (H,) vector initialised to
    a constant (name -> value), in order; ``forward(x, *params, ws)`` -> (y, cache);
    ``backward(dy, cache, ws)`` -> (dx, grads in order); ``step(x (H, B), *params as (H, 1)
    columns, out)`` for the Stepper."""

    params: dict[str, float]
    forward: Callable
    backward: Callable
    step: Callable


# model config ``norm``: the normalisations by name; "none" is their absence
NORMS = {"rms": Norm({"g": 1.0}, rmsnorm_forward, rmsnorm_backward, rmsnorm_step)}


# ----------------------------------------------------------------------------------------------
# A short causal convolution over time, depthwise (each feature its own kernel), before a cell:
# u_t = sum_{j<K} w_j * x_{t-j}, w (K, D). The K - 1 inputs before a window are carried in from
# the one before it, like the recurrent state ("carry", most recent first: carry[j-1] = x_{-j}).

MAX_CONV = 16  # the widest kernel: a short convolution, whose K - 1 carried inputs are state


def causal_conv_forward(x, carry, w, ws: Workspace | None = None):
    """x (T, B, D) a window's inputs, carry (K-1, B, D) the inputs before it, w (K, D); ws:
    buffers to reuse. Returns u (T, B, D), the carry for the next window (a new array) and the
    cache."""
    ws = Workspace() if ws is None else ws
    T, K = x.shape[0], w.shape[0]
    seq = ws.empty("conv_seq", (T + K - 1, *x.shape[1:]), w.dtype)  # x_{1-K} .. x_{T-1}
    seq[: K - 1] = carry[::-1]
    seq[K - 1 :] = x
    u = np.multiply(x, w[0], out=ws.empty("conv_u", x.shape, w.dtype))
    term = ws.empty("conv_term", x.shape, w.dtype)
    for j in range(1, K):
        u += np.multiply(seq[K - 1 - j : T + K - 1 - j], w[j], out=term)
    return u, seq[T:][::-1].copy(), (seq, w)


def causal_conv_backward(du, cache, ws: Workspace | None = None):
    """Gradients of ``causal_conv_forward`` given du (T, B, D): (dx (T, B, D), dcarry
    (K-1, B, D), (dw,))."""
    ws = Workspace() if ws is None else ws
    seq, w = cache
    T, K = du.shape[0], w.shape[0]
    dseq = ws.empty("conv_dseq", seq.shape, du.dtype)
    dseq[: K - 1] = 0
    np.multiply(du, w[0], out=dseq[K - 1 :])
    term = ws.empty("conv_term", du.shape, du.dtype)
    du2 = du.reshape(-1, du.shape[-1])
    dw = np.empty_like(w)
    for j in range(K):
        window = seq[K - 1 - j : T + K - 1 - j]
        dw[j] = np.einsum("nd,nd->d", du2, window.reshape(du2.shape))
        if j:
            dseq[K - 1 - j : T + K - 1 - j] += np.multiply(du, w[j], out=term)
    return dseq[K - 1 :], dseq[: K - 1][::-1].copy(), (dw,)


def causal_conv_step(x, carry, w, out, scratch):
    """The convolution on one step, feature-major for the Stepper: x (D, B) -> out (D, B);
    carry the K-1 earlier inputs, each (D, B), most recent first, shifted on by one (x joins
    it); w (K, D, 1); scratch (D, B)."""
    np.multiply(x, w[0], out=out)
    for j, earlier in enumerate(carry, 1):
        out += np.multiply(earlier, w[j], out=scratch)
    for j in range(len(carry) - 1, 0, -1):
        carry[j][...] = carry[j - 1]
    if carry:
        carry[0][...] = x
