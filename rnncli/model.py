"""A stacked character-level RNN/LSTM/GRU language model with a softmax output layer.

For an input window x (B, T) of character indices and targets y (B, T) (the next characters):

    h^0_t = one_hot(x_t)                                       (a row gather, never built)
    h^l_t = cell(dropout(h^{l-1}_t), h^l_{t-1})                layers l = 1..L (rnn.{l-1}.*)
    p_t   = softmax(dropout(h^L_t) out.W + out.b)
    loss  = mean over scored (b, t) of -log p_t[y_t]

Dropout (inverted, char-rnn's placement) acts on the input of every layer above the first and
on the top layer's output, never on the recurrent connections. The state carried between
windows is ``(L, S, B, H)`` with ``S = 2`` (h, c) for an LSTM and ``S = 1`` (h) otherwise; the
gradient stops at the window's edge (truncated backpropagation through time).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import numpy as np

from . import layers


class _CellType(NamedTuple):
    gates: int  # G: the weights of one layer are (D, G*H), (H, G*H), (G*H,)
    states: int  # S: arrays in the state of one layer
    names: tuple[str, ...]  # parameter names of one layer, in the layer functions' order
    forward: Callable
    backward: Callable


_CELL_TYPES = {
    "rnn": _CellType(1, 1, ("Wx", "Wh", "b"), layers.rnn_forward, layers.rnn_backward),
    "lstm": _CellType(4, 2, ("Wx", "Wh", "b"), layers.lstm_forward, layers.lstm_backward),
    "gru": _CellType(3, 1, ("Wx", "Wh", "b", "bh"), layers.gru_forward, layers.gru_backward),
}  # fmt: skip


class Model:
    """Character-level language model: ``num_layers`` cells of one type and an output layer.

    Parameters (the checkpoint format), for layers l = 0..L-1 with D_0 = V and D_l = H:
    ``rnn.{l}.Wx`` (D_l, G*H), ``rnn.{l}.Wh`` (H, G*H), ``rnn.{l}.b`` (G*H,), for a GRU also
    ``rnn.{l}.bh`` (H,); ``out.W`` (H, V), ``out.b`` (V,); G = 1, 4, 3 for rnn, lstm, gru.

    Initialisation (seeded): weight matrices uniform in ±1/sqrt(H), PyTorch's default for
    recurrent layers, which keeps pre-activations O(1) at any width; except layer 0's input
    weights, uniform in ±1: a one-hot input selects a single row of rnn.0.Wx, so its entries are
    the whole input signal (at ±1/sqrt(H) it would be 1/sqrt(H) as strong as the recurrent
    one; ±1 matches the scale an N(0, 1) embedding gives through PyTorch's initialisation, and
    on tiny shakespeare cut the 2x128 LSTM's mean loss over steps 301-400 from 2.38 to 2.04).
    Biases zero, except the LSTM forget-gate bias b[H:2H] = 1, so that the cell remembers by
    default early in training (Jozefowicz et al., 2015).
    """

    CELLS = tuple(_CELL_TYPES)

    def __init__(
        self,
        vocab_size: int,
        cell: str = "lstm",
        hidden_size: int = 128,
        num_layers: int = 2,
        dropout: float = 0.0,
        dtype: str = "float32",
        seed: int = 0,
    ):
        if cell not in _CELL_TYPES:
            raise ValueError(f"unknown cell {cell!r}; choose from {', '.join(self.CELLS)}")
        for name, value in (("vocab_size", vocab_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):  # fmt: skip
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
        self.vocab_size, self.cell = int(vocab_size), cell
        self.hidden_size, self.num_layers = int(hidden_size), int(num_layers)
        self.dropout, self.dtype = float(dropout), np.dtype(dtype)
        self._type = _CELL_TYPES[cell]
        self.params: dict[str, np.ndarray] = self._init_params(np.random.default_rng(seed))
        # Each layer's buffers are reused from one window to the next (see layers.Workspace),
        # so only the cache of the latest forward is valid; _generation tells which that is.
        self._workspaces = [layers.Workspace() for _ in range(self.num_layers + 1)]  # + output
        self._generation = 0

    def _init_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        V, H, G = self.vocab_size, self.hidden_size, self._type.gates
        k = 1.0 / np.sqrt(H)
        params = {}
        for layer in range(self.num_layers):
            D, scale = (V, 1.0) if layer == 0 else (H, k)
            params[f"rnn.{layer}.Wx"] = rng.uniform(-scale, scale, (D, G * H))
            params[f"rnn.{layer}.Wh"] = rng.uniform(-k, k, (H, G * H))
            params[f"rnn.{layer}.b"] = np.zeros(G * H)
            if self.cell == "lstm":
                params[f"rnn.{layer}.b"][H : 2 * H] = 1.0
            if self.cell == "gru":
                params[f"rnn.{layer}.bh"] = np.zeros(H)
        params["out.W"] = rng.uniform(-k, k, (H, V))
        params["out.b"] = np.zeros(V)
        return {name: p.astype(self.dtype) for name, p in params.items()}

    @classmethod
    def from_params(cls, params: dict[str, np.ndarray], cell: str, dropout: float = 0.0) -> Model:
        """The model whose parameters are ``params`` (used as given, not copied, when contiguous
        and all of out.W's dtype); V, H, the number of layers and the dtype are read off them.
        Raises ValueError if they do not fit ``cell``.
        """
        if "out.W" not in params or np.ndim(params["out.W"]) != 2:
            raise ValueError("missing the 2-D output weight 'out.W'")
        H, V = params["out.W"].shape
        num_layers = 0
        while f"rnn.{num_layers}.Wx" in params:
            num_layers += 1
        model = cls(V, cell, H, max(num_layers, 1), dropout, params["out.W"].dtype.name)
        if set(params) != set(model.params):
            diff = sorted(set(params) ^ set(model.params))
            raise ValueError(f"parameter names do not fit a {cell} model: {', '.join(diff)}")
        for name, p in model.params.items():
            if params[name].shape != p.shape:
                raise ValueError(f"{name} has shape {params[name].shape}, expected {p.shape}")
        model.params = {
            name: np.ascontiguousarray(params[name], model.dtype) for name in model.params
        }
        return model

    @property
    def num_params(self) -> int:
        """Number of scalar parameters."""
        return sum(p.size for p in self.params.values())

    def zero_state(self, batch_size: int) -> np.ndarray:
        """All-zero state (L, S, B, H) to start B streams."""
        shape = (self.num_layers, self._type.states, batch_size, self.hidden_size)
        return np.zeros(shape, dtype=self.dtype)

    def _layer_params(self, layer: int) -> list[np.ndarray]:
        return [self.params[f"rnn.{layer}.{name}"] for name in self._type.names]

    def _check_state(self, state, batch_size: int) -> np.ndarray:
        state = np.asarray(state, dtype=self.dtype)
        expected = self.zero_state(0).shape[:2] + (batch_size, self.hidden_size)
        if state.shape != expected:
            raise ValueError(f"state has shape {state.shape}, expected {expected}")
        return state

    def forward(self, x, y, state, mask=None, rng: np.random.Generator | None = None):
        """Loss of one window and the state to carry into the next.

        x, y: (B, T) integer inputs and targets; state: (L, S, B, H); mask: (B, T) bool/float
        weights of the scored targets, or None for all; rng: draws the dropout masks (training),
        None for no dropout (evaluation). Returns (loss, final_state, cache): loss in mean nats
        per scored character, final_state a new (L, S, B, H) array, cache for ``backward``
        (valid until the next forward, whose buffers it shares).
        """
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim != 2 or y.shape != x.shape:
            raise ValueError(f"x and y must both be (B, T), got {x.shape} and {y.shape}")
        if not (np.issubdtype(x.dtype, np.integer) and np.issubdtype(y.dtype, np.integer)):
            raise ValueError("x and y must be integer character indices")
        state = self._check_state(state, x.shape[0])
        self._generation += 1  # from here on, the buffers of earlier caches get overwritten
        cell = self._type
        final = np.empty_like(state)
        layer_caches, dropout_caches = [], []
        h = np.ascontiguousarray(x.T)  # time-major (T, B) indices: layer 0's one-hot input
        for layer in range(self.num_layers):
            if layer > 0:
                h, drop = layers.dropout_forward(h, self.dropout, rng)
                dropout_caches.append(drop)
            ws = self._workspaces[layer]
            out, layer_cache = cell.forward(h, *state[layer], *self._layer_params(layer), ws=ws)
            h, last = (out[0], out[1:]) if cell.states == 2 else (out, ())
            final[layer] = (h[-1], *last)
            layer_caches.append(layer_cache)
        h, drop = layers.dropout_forward(h, self.dropout, rng)
        dropout_caches.append(drop)
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != x.shape:
                raise ValueError(f"mask must be (B, T) like x, got {mask.shape}")
            mask = mask.T
        loss, out_cache = layers.output_loss_forward(
            h, self.params["out.W"], self.params["out.b"], y.T, mask, self._workspaces[-1]
        )
        caches = (layer_caches, dropout_caches, out_cache)
        return loss, final, (self._generation, caches)

    def backward(self, cache):
        """Gradients of the loss of the latest ``forward``, given its cache: (grads by parameter
        name, dstate0 (L, S, B, H)); the grads are new arrays."""
        generation, (layer_caches, dropout_caches, out_cache) = cache
        if generation != self._generation:
            raise ValueError("stale cache: backward must follow its forward, before the next one")
        cell = self._type
        grads = {}
        dh, grads["out.W"], grads["out.b"] = layers.output_loss_backward(
            1.0, out_cache, self._workspaces[-1]
        )
        dh = layers.dropout_backward(dh, dropout_caches[-1])
        dstate0 = np.empty((self.num_layers, cell.states) + dh.shape[1:], dtype=self.dtype)
        for layer in reversed(range(self.num_layers)):
            dout = (dh, None) if cell.states == 2 else dh  # no gradient from the next window
            dx, *rest = cell.backward(dout, layer_caches[layer], ws=self._workspaces[layer])
            dstate0[layer] = rest[: cell.states]
            for name, grad in zip(cell.names, rest[cell.states :], strict=True):
                grads[f"rnn.{layer}.{name}"] = grad
            if layer > 0:
                dh = layers.dropout_backward(dx, dropout_caches[layer - 1])
        return {name: grads[name] for name in self.params}, dstate0

    def stepper(self, batch_size: int = 1, state=None) -> Stepper:
        """A ``Stepper`` running ``batch_size`` streams from ``state`` (L, S, B, H), zero if
        None, on a snapshot of the current parameters (build another after they change)."""
        return Stepper(self, batch_size, state)


class Stepper:
    """Inference one timestep at a time (no dropout), for text generation; see ``Model.stepper``.

    The parameters are copied and prepared once, so that a step is only a row gather, one
    matrix-vector product (BLAS gemv) and the cell maths of ``layers.*_step_inplace`` per layer,
    and the output product, all into buffers made here. ``step`` agrees with ``Model.forward``
    run one timestep further, up to float rounding.

    The state is kept feature-major like the cell cores, as (S, L, H, B), with the hidden states
    of all layers adjacent: ``[h^{l-1}; h^l]`` (2H, B), the input of layer l's product, is a view.
    """

    def __init__(self, model: Model, batch_size: int, state=None):
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        L, H, B, dtype = model.num_layers, model.hidden_size, int(batch_size), model.dtype
        G, S = model._type.gates, model._type.states
        self._state = np.zeros((S, L, H, B), dtype)
        if state is not None:
            self._state[...] = model._check_state(state, B).transpose(1, 0, 3, 2)
        hs = self._state[0]
        # Layer 0's input is one-hot, so its x Wx + b is a row of this (V, G*H) table.
        self._table = model.params["rnn.0.Wx"] + model.params["rnn.0.b"]
        self._a = np.empty((G * H, B), dtype)  # pre-activations, of one layer at a time
        self._a_rows = self._a.T  # (B, G*H) view, for the gather
        scratch = np.empty(((G + 1) * H, B), dtype)
        # Every product is W^T u with W^T made contiguous: BLAS's gemv then reads W^T row by
        # row, and OpenBLAS shares the rows between two threads (each core keeping its half in
        # its L2) once W^T has more than about 460,000 entries. Above layer 0, x Wx therefore
        # joins the recurrent product: [Wx; Wh]^T (4H, 2H) at H = 256 runs on two threads in 11
        # us, where Wx^T and Wh^T apart take 10 us each on one. A GRU cannot stack them (r
        # scales only the h_prev part of n), so its layers > 0 compute a = x Wx + b first.
        stack = model.cell != "gru"
        self._upper = []  # for layers > 0: (Wx^T or None if stacked, b (G*H, 1), h below, cell)
        for layer in range(L):
            Wx, Wh, b, *bh = model._layer_params(layer)
            if stack and layer > 0:
                W_T = _transposed(np.concatenate([Wx, Wh]))
                u = hs[layer - 1 : layer + 1].reshape(2 * H, B)
            else:
                W_T, u = _transposed(Wh), hs[layer]
            if model.cell == "lstm":
                cell = partial(layers.lstm_step_inplace, u=u, W_T=W_T, h=hs[layer],
                               c=self._state[1, layer], scratch=scratch)  # fmt: skip
            elif model.cell == "gru":
                cell = partial(layers.gru_step_inplace, h=hs[layer], Wh_T=W_T,
                               bh=_column(bh[0]), scratch=scratch)  # fmt: skip
            else:
                cell = partial(layers.rnn_step_inplace, u=u, W_T=W_T, h=hs[layer],
                               scratch=scratch[:H])  # fmt: skip
            if layer == 0:
                self._bottom = cell  # its a comes from the table
            else:
                Wx_T = None if stack else _transposed(Wx)
                self._upper.append((Wx_T, _column(b), hs[layer - 1], cell))
        self._top = hs[-1]
        self._out_W_T = _transposed(model.params["out.W"])
        self._out_b = _column(model.params["out.b"])
        self._logits = np.empty((model.vocab_size, B), dtype)

    @property
    def state(self) -> np.ndarray:
        """The current state as (L, S, B, H), the layout of ``Model.forward`` (a new array)."""
        return np.ascontiguousarray(self._state.transpose(1, 0, 3, 2))

    def select(self, rows) -> None:
        """Give stream b the state of stream ``rows[b]`` (B,), for beam search's survivors."""
        self._state[...] = self._state[..., np.asarray(rows)]

    def step(self, idx) -> np.ndarray:
        """Advance every stream by one character: idx (B,) integer inputs in [0, V).

        Returns the logits (B, V) of the next characters: a view of a buffer that the next
        step overwrites.
        """
        idx = np.asarray(idx)
        if idx.min() < 0:  # np.take would count these from the end; it rejects those >= V
            raise IndexError(f"input indices must be in [0, {self._table.shape[0]})")
        a = self._a
        np.take(self._table, idx, axis=0, out=self._a_rows)  # a = (x Wx + b)^T
        self._bottom(a)
        for Wx_T, b, below, cell in self._upper:
            if Wx_T is None:
                np.copyto(a, b)  # x Wx is in the cell's product
            else:
                np.matmul(Wx_T, below, out=a)
                a += b
            cell(a)
        np.matmul(self._out_W_T, self._top, out=self._logits)
        self._logits += self._out_b
        return self._logits.T


def _transposed(W: np.ndarray) -> np.ndarray:
    """W^T as a contiguous copy (see ``Stepper``)."""
    return np.ascontiguousarray(W.T)


def _column(b: np.ndarray) -> np.ndarray:
    """A copy of the vector b (N,) as a column (N, 1), which broadcasts over the B streams."""
    return b.reshape(-1, 1).copy()
