"""A stacked character-level RNN/LSTM/GRU language model with a softmax output layer.

For an input window x (B, T) of character indices and targets y (B, T) (the next characters):

    h^0_t = one_hot(x_t)                 (embedding_size E = 0; a row gather, never built)
    h^0_t = one_hot(x_t) embed.W         (E > 0: row x_t of the learnt (V, E) embedding)
    h^l_t = cell(dropout(h^{l-1}_t), h^l_{t-1})                layers l = 1..L (rnn.{l-1}.*)
    p_t   = softmax(dropout(h^L_t) out.W + out.b)
    loss  = mean over scored (b, t) of -log p_t[y_t]

Dropout (inverted, char-rnn's placement) acts on the input of every layer above the first and
on the top layer's output, never on the recurrent connections. The state carried between
windows is ``(L, S, B, H)``, S the cell's state arrays (``cells.Cell.states``: h and c for an
LSTM, h for rnn and gru); the gradient stops at the window's edge (truncated backpropagation
through time).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from . import cells, layers

# The parameter whose rows a one-hot character selects: a learnt embedding when the model has
# one, else layer 0's input weights.
INPUT_TABLES = ("embed.W", "rnn.0.Wx")


def input_table_name(params) -> str | None:
    """The name of the input table among ``params`` (names, or a dict by name): ``embed.W``
    when present, else ``rnn.0.Wx``; None when neither is (an empty dict)."""
    return next((name for name in INPUT_TABLES if name in params), None)


def check_window(x, y, mask=None, shape: tuple[int, int] | None = None):
    """x, y and mask as arrays, checked to be one window: x and y (B, T) integer character
    indices (of ``shape`` when given), mask None or (B, T) weights. ValueError otherwise."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or y.shape != x.shape or (shape is not None and x.shape != shape):
        expected = "(B, T)" if shape is None else str(shape)
        raise ValueError(f"x and y must both be {expected}, got {x.shape} and {y.shape}")
    if not (np.issubdtype(x.dtype, np.integer) and np.issubdtype(y.dtype, np.integer)):
        raise ValueError("x and y must be integer character indices")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != x.shape:
            raise ValueError(f"mask must be (B, T) like x, got {mask.shape}")
    return x, y, mask


def check_fresh(generation: int, latest: int) -> None:
    """Refuse a cache from a forward older than the latest one, whose buffers are reused."""
    if generation != latest:
        raise ValueError("stale cache: backward must follow its forward, before the next one")


class Model:
    """Character-level language model: ``num_layers`` cells of one type and an output layer.

    Parameters (the checkpoint format): ``embed.W`` (V, E) when ``embedding_size`` E > 0; for
    layers l = 0..L-1, with D_0 = E (or V when E = 0) and D_l = H above, the cell's parameters
    (``cells.Cell.params``) named ``rnn.{l}.<name>``, for the built-in cells ``rnn.{l}.Wx``
    (D_l, G*H), ``rnn.{l}.Wh`` (H, G*H), ``rnn.{l}.b`` (G*H,), for a GRU also ``rnn.{l}.bh``
    (H,); ``out.W`` (H, V), ``out.b`` (V,); G = 1, 4, 3 for rnn, lstm, gru.

    Initialisation (seeded): ``embed.W`` N(0, 1), like PyTorch's ``nn.Embedding``; weight
    matrices uniform in ±1/sqrt(H), PyTorch's default for recurrent layers, which keeps
    pre-activations O(1) at any width; except layer 0's input weights when E = 0, uniform in
    ±1: a one-hot input selects a single row of rnn.0.Wx, so its entries are the whole input
    signal (at ±1/sqrt(H) it would be 1/sqrt(H) as strong as the recurrent one; ±1 matches the
    scale an N(0, 1) embedding gives through ±1/sqrt(H) weights, and learns faster on tiny
    shakespeare: docs/benchmarks.md). Vectors (biases) zero, but the forget gate's block of
    ``b`` (``cells.Cell.forget_gate``), which is ``forget_bias``; then the cell's ``init``.
    """

    CELLS = tuple(cells.CELLS)  # the built-in cells; cells.CELLS also has any registered later

    def __init__(
        self,
        vocab_size: int,
        cell: str = "lstm",
        hidden_size: int = 128,
        num_layers: int = 2,
        dropout: float = 0.0,
        dtype: str = "float32",
        seed: int | np.random.Generator = 0,
        embedding_size: int = 0,
        forget_bias: float = 0.0,
    ):
        self.cell_type = cells.get(cell)
        for name, value in (("vocab_size", vocab_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):  # fmt: skip
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if int(embedding_size) != embedding_size or embedding_size < 0:
            raise ValueError(f"embedding_size must be an integer >= 0, got {embedding_size!r}")
        if not np.isfinite(forget_bias):
            raise ValueError(f"forget_bias must be finite, got {forget_bias!r}")
        if forget_bias and self.cell_type.forget_gate is None:
            raise ValueError(f"forget_bias must be 0 for {cell}, which has no forget gate")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
        self.vocab_size, self.cell = int(vocab_size), cell
        self.hidden_size, self.num_layers = int(hidden_size), int(num_layers)
        self.dropout, self.dtype = float(dropout), np.dtype(dtype)
        self.embedding_size = int(embedding_size)
        rng = np.random.default_rng(seed)
        self.params: dict[str, np.ndarray] = self._init_params(rng, float(forget_bias))
        # Each layer's buffers are reused from one window to the next (see layers.Workspace),
        # so only the cache of the latest forward is valid; _generation tells which that is.
        self._workspaces = [layers.Workspace() for _ in range(self.num_layers + 1)]  # + output
        self._embed_ws = layers.Workspace()
        self._generation = 0

    @classmethod
    def from_config(cls, cfg, vocab_size: int, rng: np.random.Generator | None = None) -> Model:
        """The model that a ``config.Config`` describes, initialised from ``rng`` (by default
        a generator seeded with ``cfg.seed``)."""
        seed = cfg.seed if rng is None else rng
        return cls(vocab_size, cfg.model, cfg.hidden_size, cfg.num_layers, cfg.dropout,
                   cfg.dtype, seed, cfg.embedding_size, cfg.forget_bias)  # fmt: skip

    def _init_params(self, rng: np.random.Generator, forget_bias: float) -> dict[str, np.ndarray]:
        V, H, E, cell = self.vocab_size, self.hidden_size, self.embedding_size, self.cell_type
        k = 1.0 / np.sqrt(H)
        params = {"embed.W": rng.standard_normal((V, E))} if E else {}
        one_hot_scale = k if E else 1.0  # layer 0's input weights (see the class doc)
        for layer in range(self.num_layers):
            layer_params = {}
            for name, shape in cell.shapes((E or V) if layer == 0 else H, H).items():
                if len(shape) == 2:
                    scale = one_hot_scale if (layer, name) == (0, "Wx") else k
                    layer_params[name] = rng.uniform(-scale, scale, shape)
                else:
                    layer_params[name] = np.zeros(shape)
            if cell.forget_gate is not None:
                block = cell.forget_gate * H
                layer_params["b"][block : block + H] = forget_bias
            if cell.init is not None:
                cell.init(layer_params, H)
            params |= {f"rnn.{layer}.{name}": p for name, p in layer_params.items()}
        params["out.W"] = rng.uniform(-k, k, (H, V))
        params["out.b"] = np.zeros(V)
        return {name: p.astype(self.dtype) for name, p in params.items()}

    @classmethod
    def from_params(cls, params: dict[str, np.ndarray], cell: str, dropout: float = 0.0) -> Model:
        """The model whose parameters are ``params`` (used as given, not copied, when contiguous
        and all of out.W's dtype); V, H, the number of layers, the embedding size (0 without
        ``embed.W``) and the dtype are read off them. Raises ValueError if they do not fit
        ``cell``.
        """
        if "out.W" not in params or np.ndim(params["out.W"]) != 2:
            raise ValueError("missing the 2-D output weight 'out.W'")
        if "embed.W" in params and np.ndim(params["embed.W"]) != 2:
            raise ValueError("the embedding 'embed.W' must be 2-D")
        H, V = params["out.W"].shape
        E = np.shape(params["embed.W"])[1] if "embed.W" in params else 0
        num_layers = 0
        while f"rnn.{num_layers}.Wx" in params:
            num_layers += 1
        model = cls(V, cell, H, max(num_layers, 1), dropout, params["out.W"].dtype.name,
                    embedding_size=E)  # fmt: skip
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

    @staticmethod
    def param_shapes(
        vocab_size: int, cell: str, hidden_size: int, num_layers: int, embedding_size: int = 0
    ) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every parameter of such a model, in model order, allocating none
        (what a checkpoint reader checks a file against before reading its arrays)."""
        kind, H, V, E = cells.get(cell), hidden_size, vocab_size, embedding_size
        shapes = {"embed.W": (V, E)} if E else {}
        for layer in range(num_layers):
            layer_shapes = kind.shapes((E or V) if layer == 0 else H, H)
            shapes |= {f"rnn.{layer}.{name}": shape for name, shape in layer_shapes.items()}
        shapes["out.W"], shapes["out.b"] = (H, V), (V,)
        return shapes

    @staticmethod
    def state_shape(
        cell: str, hidden_size: int, num_layers: int, batch_size: int
    ) -> tuple[int, ...]:
        """Shape (L, S, B, H) of the carried state of such a model."""
        return (num_layers, cells.get(cell).states, batch_size, hidden_size)

    @property
    def num_params(self) -> int:
        """Number of scalar parameters."""
        return sum(p.size for p in self.params.values())

    def zero_state(self, batch_size: int) -> np.ndarray:
        """All-zero state (L, S, B, H) to start B streams; S is the cell's ``states``."""
        shape = (self.num_layers, self.cell_type.states, batch_size, self.hidden_size)
        return np.zeros(shape, dtype=self.dtype)

    def layer_params(self, layer: int) -> list[np.ndarray]:
        """The parameters of recurrent layer ``layer``, in the cell's order."""
        return [self.params[f"rnn.{layer}.{name}"] for name in self.cell_type.param_names]

    def check_state(self, state, batch_size: int) -> np.ndarray:
        """``state`` as an array of the model's dtype; ValueError unless it is (L, S, B, H)."""
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
        x, y, mask = check_window(x, y, mask)
        state = self.check_state(state, x.shape[0])
        self._generation += 1  # from here on, the buffers of earlier caches get overwritten
        final = np.empty_like(state)
        layer_caches, dropout_caches = [], []
        h = np.ascontiguousarray(x.T)  # time-major (T, B) indices: layer 0's one-hot input
        embed_cache = None
        if self.embedding_size:
            h, embed_cache = layers.embedding_forward(h, self.params["embed.W"], self._embed_ws)
        for layer in range(self.num_layers):
            if layer > 0:
                h, drop = layers.dropout_forward(h, self.dropout, rng)
                dropout_caches.append(drop)
            weights, ws = self.layer_params(layer), self._workspaces[layer]
            h, final[layer], layer_cache = self.cell_type.forward(h, state[layer], weights, ws)
            layer_caches.append(layer_cache)
        h, drop = layers.dropout_forward(h, self.dropout, rng)
        dropout_caches.append(drop)
        loss, out_cache = layers.output_loss_forward(
            h, self.params["out.W"], self.params["out.b"], y.T,
            None if mask is None else mask.T, self._workspaces[-1],
        )  # fmt: skip
        caches = (embed_cache, layer_caches, dropout_caches, out_cache)
        return loss, final, (self._generation, caches)

    def position_losses(self, cache) -> np.ndarray:
        """The nats, -ln p_t[y_t], of every position (B, T) of the latest ``forward``, given
        its cache; call it before ``backward``, which reuses the buffer they are read from."""
        generation, (_, _, _, out_cache) = cache
        check_fresh(generation, self._generation)
        T, B = out_cache[0].shape[:2]  # the top layer's output, time-major
        return layers.output_position_nll(out_cache).reshape(T, B).T

    def backward(self, cache):
        """Gradients of the loss of the latest ``forward``, given its cache: (grads by parameter
        name, dstate0 (L, S, B, H)); the grads are new arrays. The final state gets no gradient:
        it stops at the window's edge (truncated backpropagation through time)."""
        generation, (embed_cache, layer_caches, dropout_caches, out_cache) = cache
        check_fresh(generation, self._generation)
        cell = self.cell_type
        grads = {}
        dh, grads["out.W"], grads["out.b"] = layers.output_loss_backward(
            1.0, out_cache, self._workspaces[-1]
        )
        dh = layers.dropout_backward(dh, dropout_caches[-1])
        dstate0 = np.empty((self.num_layers, cell.states) + dh.shape[1:], dtype=self.dtype)
        for layer in reversed(range(self.num_layers)):
            ws = self._workspaces[layer]
            dx, dstate0[layer], layer_grads = cell.backward(dh, layer_caches[layer], ws)
            for name, grad in zip(cell.param_names, layer_grads, strict=True):
                grads[f"rnn.{layer}.{name}"] = grad
            if layer > 0:
                dh = layers.dropout_backward(dx, dropout_caches[layer - 1])
        if embed_cache is not None:  # dx: layer 0's input gradient, scattered into embed.W's rows
            grads["embed.W"] = layers.embedding_backward(dx, embed_cache)
        return {name: grads[name] for name in self.params}, dstate0

    def stepper(self, batch_size: int = 1, state=None) -> Stepper:
        """A ``Stepper`` running ``batch_size`` streams from ``state`` (L, S, B, H), zero if
        None, on a snapshot of the current parameters (build another after they change)."""
        return Stepper(self, batch_size, state)


class Stepper:
    """Inference one timestep at a time (no dropout), for text generation; see ``Model.stepper``.

    The parameters are copied and prepared once, so that a step is only a row gather, one
    matrix-vector product (BLAS gemv) and the cell's inference step (``cells.Cell.step``) per
    layer, and the output product, all into buffers made here. ``step`` agrees with
    ``Model.forward`` run one timestep further, up to float rounding.

    The state is kept feature-major like the cell cores, as (S, L, H, B), with the hidden states
    of all layers adjacent: ``[h^{l-1}; h^l]`` (2H, B), the input of layer l's product, is a view.
    """

    def __init__(self, model: Model, batch_size: int, state=None):
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        L, H, B, dtype = model.num_layers, model.hidden_size, int(batch_size), model.dtype
        cell = model.cell_type
        self._state = np.zeros((cell.states, L, H, B), dtype)
        if state is not None:
            self._state[...] = model.check_state(state, B).transpose(1, 0, 3, 2)
        hs = self._state[0]
        # Layer 0's input is one-hot, so its x Wx + b is a row of this (V, G*H) table; with an
        # embedding, x = one_hot embed.W, and the table folds it in: a step costs the same.
        Wx0 = model.params["rnn.0.Wx"]
        if model.embedding_size:
            Wx0 = model.params["embed.W"] @ Wx0
        self._table = Wx0 + model.params["rnn.0.b"]
        self._a = np.empty((cell.gates * H, B), dtype)  # pre-activations, of one layer at a time
        self._a_rows = self._a.T  # (B, G*H) view, for the gather
        scratch = np.empty(((cell.gates + 1) * H, B), dtype)
        # Every product is W^T u with W^T made contiguous, which BLAS's gemv reads row by row
        # and shares between threads once it is large enough. Above layer 0, x Wx therefore
        # joins the recurrent product where the cell allows it: one larger product [Wx; Wh]^T
        # runs faster than two (docs/benchmarks.md); the other cells compute a = x Wx + b first.
        self._upper = []  # for layers > 0: (Wx^T or None if stacked, b (G*H, 1), h below, step)
        for layer in range(L):
            Wx, Wh, b, *extra = model.layer_params(layer)
            stacked = cell.stackable and layer > 0
            if stacked:
                W_T = _transposed(np.concatenate([Wx, Wh]))
                u = hs[layer - 1 : layer + 1].reshape(2 * H, B)
            else:
                W_T, u = _transposed(Wh), hs[layer]
            step = partial(cell.step, u=u, W_T=W_T, state=tuple(self._state[:, layer]),
                           scratch=scratch, columns=tuple(map(_column, extra)))  # fmt: skip
            if layer == 0:
                self._bottom = step  # its a comes from the table
            else:
                self._upper.append((None if stacked else _transposed(Wx), _column(b),
                                    hs[layer - 1], step))  # fmt: skip
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

    def step(self, idx, gates: np.ndarray | None = None) -> np.ndarray:
        """Advance every stream by one character: idx (B,) integer inputs in [0, V).

        Returns the logits (B, V) of the next characters: a view of a buffer that the next
        step overwrites. ``gates``, an (L, G*H, B) array, receives each layer's gate
        activations of this step (LSTM [i; f; o; g], GRU [r; z; n]; for the analysis page).
        """
        idx = np.asarray(idx)
        if idx.min() < 0:  # np.take would count these from the end; it rejects those >= V
            raise IndexError(f"input indices must be in [0, {self._table.shape[0]})")
        a = self._a
        np.take(self._table, idx, axis=0, out=self._a_rows)  # a = (x Wx + b)^T
        self._bottom(a)
        if gates is not None:
            gates[0] = a  # the cell overwrote its pre-activations with the gates
        for layer, (Wx_T, b, below, cell) in enumerate(self._upper, 1):
            if Wx_T is None:
                np.copyto(a, b)  # x Wx is in the cell's product
            else:
                np.matmul(Wx_T, below, out=a)
                a += b
            cell(a)
            if gates is not None:
                gates[layer] = a
        np.matmul(self._out_W_T, self._top, out=self._logits)
        self._logits += self._out_b
        return self._logits.T


def _transposed(W: np.ndarray) -> np.ndarray:
    """W^T as a contiguous copy (see ``Stepper``)."""
    return np.ascontiguousarray(W.T)


def _column(b: np.ndarray) -> np.ndarray:
    """A copy of the vector b (N,) as a column (N, 1), which broadcasts over the B streams."""
    return b.reshape(-1, 1).copy()
