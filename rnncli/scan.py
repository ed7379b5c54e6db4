"""The engine for cells whose gates see the input only: minGRU and minLSTM.

Such a cell (Feng et al. 2024, "Were RNNs All We Needed?", arXiv 2410.01201) computes, from
the pre-activations ``P = x Wx + b`` of each step alone, a decay ``a_t`` and an input ``b_t``,
and its hidden state is the elementwise linear recurrence ``h_t = a_t * h_{t-1} + b_t``.
Nothing in the gates depends on ``h_{t-1}``, so a whole window's products are one GEMM over
its T * B rows (or a gather for one-hot input), its gate arithmetic runs once on the whole
(T, B, G*H) array, and only the recurrence, two ufunc calls on (B, H) a step, runs over time.
Backward, ``g_t = dL/dh_t + a_{t+1} * g_{t+1}`` runs the same recurrence in reverse; then
``dL/da_t = g_t * h_{t-1}`` and ``dL/db_t = g_t``. A sequential loop beats a log-space scan
here (docs/cells.md). ``rnncli.reference`` states the maths plainly; the tests hold this module
to it.

A ``ScanCore`` works on lists of G block views of H features, so the same functions serve the
training window's rows (blocks along the last axis) and the Stepper's feature-major columns
(blocks of rows). minGRU's sigmoid uses the engine's tanh identity (see ``rnncli.layers``);
minLSTM's need more (see below).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .layers import Workspace, _project, _project_backward

__all__ = ["ScanCore", "MINGRU", "MINLSTM", "scan_forward", "scan_backward", "scan_step_inplace"]


class ScanCore(NamedTuple):
    """The gate maths of one elementwise-recurrent cell.

    ``coefficients(pre, act, a, b) -> decay``: from the G pre-activation blocks ``pre``, write
    the gate activations into the blocks ``act`` (the report shows them; ``act`` may be ``pre``
    itself) and the recurrence's input into ``b``; return the decay a_t, either ``a`` filled
    in or one of the ``act`` blocks. It may overwrite ``pre`` with what its backward needs.
    ``backward(g, h_prev, pre, act, dpre)``: from g = dL/dh_t and h_{t-1}, write the gradients
    of the pre-activations into the blocks ``dpre``.
    """

    coefficients: Callable
    backward: Callable


def _sigmoid(x: np.ndarray, out: np.ndarray, sign: float = 1.0) -> np.ndarray:
    """``out = sigmoid(sign * x) = (1 + tanh(sign * x / 2)) / 2``; out may be x."""
    np.multiply(x, 0.5 * sign, out=out)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


# minGRU: z = sigmoid(k), h~ = n; h_t = (1 - z) h_{t-1} + z h~, blocks [k; n]


def _mingru_coefficients(pre, act, a, b):
    (k, n), (z, n_act) = pre, act
    _sigmoid(k, z)
    if n_act is not n:
        np.copyto(n_act, n)
    np.subtract(1, z, out=a)
    np.multiply(z, n_act, out=b)
    return a


def _mingru_backward(g, h_prev, pre, act, dpre):
    """dz = g (h~ - h_{t-1}), dk = dz z (1 - z), dh~ = g z."""
    (z, n), (dk, dn) = act, dpre
    np.subtract(n, h_prev, out=dk)
    dk *= g
    np.subtract(1, z, out=dn)
    dn *= z
    dk *= dn
    np.multiply(g, z, out=dn)


MINGRU = ScanCore(_mingru_coefficients, _mingru_backward)


# minLSTM: f' = sigmoid(f) / (sigmoid(f) + sigmoid(i)), i' = 1 - f', h~ = n;
# h_t = f' h_{t-1} + i' h~, blocks [f; i; n]. The ratio of two small sigmoids needs their
# relative precision, which the tanh identity lacks: these are 1 / (1 + exp(-v)), exact to
# rounding down to 1e-38 in float32 (a softplus form costs ten times as much: docs/cells.md).


def _exact_sigmoid(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = 1 / (1 + exp(-x))``, 0 where exp overflows; out may be x."""
    np.negative(x, out=out)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += 1
    np.reciprocal(out, out=out)
    return out


_TINY = {np.dtype(t): np.finfo(t).tiny for t in (np.float32, np.float64)}


def _minlstm_coefficients(pre, act, a, b):
    """Leaves sigmoid(f), sigmoid(i) in the blocks f, i of ``pre`` for the backward."""
    (f, i, n), (fp, ip, n_act) = pre, act
    _exact_sigmoid(f, f)
    _exact_sigmoid(i, i)
    total = np.add(f, i, out=b)  # b is scratch until the end
    np.maximum(total, _TINY[total.dtype], out=total)  # both 0 only past exp's overflow
    np.divide(f, total, out=fp)
    np.divide(i, total, out=ip)
    if n_act is not n:
        np.copyto(n_act, n)
    np.multiply(ip, n_act, out=b)
    return fp


def _minlstm_backward(g, h_prev, pre, act, dpre):
    """With s = sigmoid(f) + sigmoid(i): df' = g h_{t-1}, di' = g h~, and through f' and i',
    df = (df' - di') f' i' (1 - sigmoid(f)), di = -(df' - di') f' i' (1 - sigmoid(i));
    dh~ = g i'."""
    (sf, si, _), (fp, ip, n), (df, di, dn) = pre, act, dpre
    np.subtract(h_prev, n, out=df)
    df *= g
    df *= fp
    df *= ip  # (df' - di') f' i'
    np.subtract(1, si, out=di)
    di *= df
    np.negative(di, out=di)
    np.subtract(1, sf, out=dn)  # dn is scratch until its own value below
    df *= dn
    np.multiply(g, ip, out=dn)


MINLSTM = ScanCore(_minlstm_coefficients, _minlstm_backward)


# ----------------------------------------------------------------------------------------------
# The window and the inference step


def _blocks(a: np.ndarray, G: int, axis: int) -> list[np.ndarray]:
    """The G equal blocks of ``a`` along ``axis``, as views."""
    H = a.shape[axis] // G
    index = [slice(None)] * a.ndim
    out = []
    for k in range(G):
        index[axis] = slice(k * H, (k + 1) * H)
        out.append(a[tuple(index)])
    return out


def scan_forward(core: ScanCore, x, state0, weights, ws: Workspace | None = None):
    """The cell over T steps: the signature of ``layers.sequence_forward``, with weights
    (Wx (D, G*H), b (G*H,)) and state0 (1, B, H)."""
    ws = Workspace() if ws is None else ws
    Wx, b = weights
    (T, B), H, dtype = x.shape[:2], state0.shape[-1], Wx.dtype
    G = Wx.shape[1] // H
    pre = _project(x, Wx, b, ws.empty("pre", (T, B, G * H), dtype))
    act = ws.empty("act", pre.shape, dtype)
    b_in = ws.empty("input", (T, B, H), dtype)
    decay = core.coefficients(_blocks(pre, G, -1), _blocks(act, G, -1),
                              ws.empty("decay", (T, B, H), dtype), b_in)  # fmt: skip
    h = ws.empty("h", (T + 1, B, H), dtype)  # h_0 .. h_T
    np.copyto(h[0], state0[0])
    for t in range(T):
        np.multiply(decay[t], h[t], out=h[t + 1])
        h[t + 1] += b_in[t]
    return h[1:], h[-1:].copy(), (x, weights, pre, act, decay, h)


def scan_backward(core: ScanCore, dh, cache, ws: Workspace | None = None):
    """Gradients of ``scan_forward``: the signature of ``layers.sequence_backward``."""
    ws = Workspace() if ws is None else ws
    x, (Wx, _), pre, act, decay, h = cache
    T, G = dh.shape[0], pre.shape[-1] // dh.shape[-1]
    g = ws.empty("g", dh.shape, dh.dtype)
    np.copyto(g, dh)
    carried = ws.empty("carried", dh.shape[1:], dh.dtype)
    for t in range(T - 1, 0, -1):  # g_{t-1} += a_t g_t
        np.multiply(decay[t], g[t], out=carried)
        g[t - 1] += carried
    dstate0 = (decay[0] * g[0])[None]
    dpre = ws.empty("dpre", pre.shape, dh.dtype)
    core.backward(g, h[:-1], _blocks(pre, G, -1), _blocks(act, G, -1), _blocks(dpre, G, -1))
    dx, dWx, db = _project_backward(dpre, x, Wx, ws)
    return dx, dstate0, (dWx, db)


def scan_step_inplace(core: ScanCore, a, u, W_T, state, scratch, columns=()):
    """The inference step, in place and feature-major, with the signature of
    ``layers.rnn_step_inplace`` (u and W_T are None: there is no recurrent product): a
    (G*H, B) holds ``(x Wx + b)^T`` and is overwritten with the gate activations."""
    (h,) = state
    H = h.shape[0]
    blocks = _blocks(a, a.shape[0] // H, 0)
    decay = core.coefficients(blocks, blocks, scratch[:H], scratch[H : 2 * H])
    h *= decay
    h += scratch[H : 2 * H]
