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
from typing import NamedTuple

import numpy as np

from . import layers


class _CellType(NamedTuple):
    gates: int  # G: the weights of one layer are (D, G*H), (H, G*H), (G*H,)
    states: int  # S: arrays in the state of one layer
    names: tuple[str, ...]  # parameter names of one layer, in the layer functions' order
    forward: Callable
    backward: Callable
    step: Callable


_CELL_TYPES = {
    "rnn": _CellType(1, 1, ("Wx", "Wh", "b"), layers.rnn_forward, layers.rnn_backward,
                     layers.rnn_step_forward),
    "lstm": _CellType(4, 2, ("Wx", "Wh", "b"), layers.lstm_forward, layers.lstm_backward,
                      layers.lstm_step_forward),
    "gru": _CellType(3, 1, ("Wx", "Wh", "b", "bh"), layers.gru_forward, layers.gru_backward,
                     layers.gru_step_forward),
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
        out_ws = self._workspaces[-1]
        logits, out_cache = layers.temporal_affine_forward(
            h, self.params["out.W"], self.params["out.b"], out_ws
        )
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != x.shape:
                raise ValueError(f"mask must be (B, T) like x, got {mask.shape}")
            mask = mask.T
        loss, loss_cache = layers.softmax_cross_entropy_forward(logits, y.T, mask, out_ws)
        caches = (layer_caches, dropout_caches, out_cache, loss_cache)
        return loss, final, (self._generation, caches)

    def backward(self, cache):
        """Gradients of the loss of the latest ``forward``, given its cache: (grads by parameter
        name, dstate0 (L, S, B, H)); the grads are new arrays."""
        generation, (layer_caches, dropout_caches, out_cache, loss_cache) = cache
        if generation != self._generation:
            raise ValueError("stale cache: backward must follow its forward, before the next one")
        cell = self._type
        grads = {}
        out_ws = self._workspaces[-1]
        dlogits = layers.softmax_cross_entropy_backward(1.0, loss_cache, out_ws)
        dh, grads["out.W"], grads["out.b"] = layers.temporal_affine_backward(
            dlogits, out_cache, out_ws
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

    def step(self, idx, state):
        """One timestep of inference (no dropout): idx (B,) integer inputs, state (L, S, B, H).

        Returns logits (B, V) of the next character and the new state (a new array).
        """
        x = np.asarray(idx)
        state = self._check_state(state, x.shape[0])
        new = np.empty_like(state)
        for layer in range(self.num_layers):
            out, _ = self._type.step(x, *state[layer], *self._layer_params(layer))
            new[layer] = out if self._type.states == 2 else (out,)
            x = new[layer, 0]
        logits, _ = layers.temporal_affine_forward(x, self.params["out.W"], self.params["out.b"])
        return logits, new
