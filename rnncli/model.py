"""A stacked character-level RNN/LSTM/GRU language model with a softmax output layer.

For an input window x (B, T) of character indices and targets y (B, T) (the next characters):

    h^0_t = one_hot(x_t)                 (embedding_size E = 0; a row gather, never built)
    h^0_t = one_hot(x_t) embed.W         (E > 0: row x_t of the learnt (V, E) embedding)
    h^l_t = cell(dropout(h^{l-1}_t), h^l_{t-1})                layers l = 1..L (rnn.{l-1}.*)
    p_t   = softmax(dropout(h^L_t) out.W + out.b)
    loss  = mean over scored (b, t) of -log p_t[y_t]

With ``mlp_size`` M > 0, each layer's h^l_t goes through a per-character MLP with a residual
connection, ``h^l_t + relu(h^l_t W1 + b1) W2 + b2`` (mlp.{l-1}.*), and that is what the layer
above (or the output layer) reads; the recurrence carries the cell's own h^l_t.

With ``residual``, every layer above the first adds its input to its output: y^l_t =
x^l_t + cell(...), x^l_t the layer's input before dropout (the MLP, if any, comes after). With a
``norm`` (``layers.NORMS``, e.g. "rms"), a normalisation with its own learnt parameters acts,
pre-norm, on the input of every cell above the first (``norm.{l}``, before dropout), on the
input of every MLP (``mlpnorm.{l}``: y = h + mlp(norm(h))) and on the top layer's output
(``outnorm``), before the output layer. With ``conv_size`` K > 0, every cell reads a short
causal convolution of its input over time, u_t = w_0 x_t + ... + w_{K-1} x_{t-K+1} (conv.{l}.w,
one kernel per feature, after the norm and dropout); its input must then be H wide (an embedding
of width H).

Dropout (inverted, char-rnn's placement) acts on the input of every layer above the first and
on the top layer's output, never on the recurrent connections. The state carried between
windows is ``(L, S, B, H)``, S the cell's state arrays (``cells.Cell.states``: h and c for an
LSTM, h for rnn and gru), then with a convolution the K - 1 inputs before the next window; the
gradient stops at the window's edge (truncated backpropagation through time).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from . import cells, layers

# The parameters of the per-character MLP after each layer (``mlp_size`` > 0), in order.
MLP_PARAMS = ("W1", "b1", "W2", "b2")

NO_NORM = "none"  # the config's ``norm`` without one

# The parameter whose rows a one-hot character selects: a learnt embedding when the model has
# one, else layer 0's input weights.
INPUT_TABLES = ("embed.W", "rnn.0.Wx")


def input_table_name(params) -> str | None:
    """The name of the input table among ``params`` (names, or a dict by name): ``embed.W``
    when present, else ``rnn.0.Wx``; None when neither is (an empty dict)."""
    return next((name for name in INPUT_TABLES if name in params), None)


def norm_places(num_layers: int, mlp_size: int) -> list[str]:
    """Where a model with a ``norm`` normalises, as the prefixes of its parameters' names, in
    model order: ``norm.{l}`` the input of cell l >= 1, ``mlpnorm.{l}`` the input of the MLP
    after layer l (with ``mlp_size`` > 0), ``outnorm`` the output layer's input."""
    places = []
    for layer in range(num_layers):
        places += [f"norm.{layer}"] if layer else []
        places += [f"mlpnorm.{layer}"] if mlp_size else []
    return places + ["outnorm"]


def norm_type(norm: str) -> layers.Norm | None:
    """The ``layers.Norm`` called ``norm``, None for "none"; ValueError for an unknown name."""
    if norm != NO_NORM and norm not in layers.NORMS:
        choices = ", ".join([NO_NORM, *layers.NORMS])
        raise ValueError(f"norm must be one of {choices}, got {norm!r}")
    return layers.NORMS.get(norm)


def check_conv(conv_size, embedding_size: int, hidden_size: int) -> None:
    """ValueError unless ``conv_size`` is 0 (none) or 2 to ``layers.MAX_CONV`` and, when it is
    not 0, the first layer's input is as wide as the others (``embedding_size`` =
    ``hidden_size``): the inputs it carries between windows are slots of the (L, S, B, H) state."""
    if int(conv_size) != conv_size or not (conv_size == 0 or 2 <= conv_size <= layers.MAX_CONV):
        raise ValueError(f"conv_size must be 0 (none) or 2 to {layers.MAX_CONV}, got {conv_size!r}")
    if conv_size and embedding_size != hidden_size:
        raise ValueError(
            f"conv_size: {conv_size} needs embedding_size equal to hidden_size ({hidden_size}), "
            f"got {embedding_size}: the convolution before every cell reads inputs as wide as "
            "the hidden state, which it carries between windows"
        )


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
    (``cells.Cell.params``) named ``rnn.{l}.<name>``: for every cell ``rnn.{l}.Wx`` (D_l, G*H)
    and ``rnn.{l}.b`` (G*H,), for rnn, lstm and gru also ``rnn.{l}.Wh`` (H, G*H), for a GRU
    ``rnn.{l}.bh`` (H,); with ``mlp_size`` M > 0 then ``mlp.{l}.W1`` (H, M), ``mlp.{l}.b1``
    (M,), ``mlp.{l}.W2`` (M, H), ``mlp.{l}.b2`` (H,), the MLP after layer l; with ``conv_size``
    K > 0, ``conv.{l}.w`` (K, H) before each layer's cell parameters; with a ``norm``,
    its parameters (H,) at each of ``norm_places``, e.g. ``norm.{l}.g``, ``mlpnorm.{l}.g``,
    ``outnorm.g`` for "rms"; ``out.W`` (H, V), ``out.b`` (V,). G = 1, 4, 3, 2, 3 for rnn,
    lstm, gru, mingru, minlstm.

    Initialisation (seeded): ``embed.W`` N(0, 1), like PyTorch's ``nn.Embedding``; weight
    matrices uniform in ±1/sqrt(H), PyTorch's default for recurrent layers, which keeps
    pre-activations O(1) at any width; except layer 0's input weights when E = 0, uniform in
    ±1: a one-hot input selects a single row of rnn.0.Wx, so its entries are the whole input
    signal (at ±1/sqrt(H) it would be 1/sqrt(H) as strong as the recurrent one; ±1 matches the
    scale an N(0, 1) embedding gives through ±1/sqrt(H) weights, and learns faster on tiny
    shakespeare: docs/benchmarks.md). Vectors (biases) zero, but the forget gate's block of
    ``b`` (``cells.Cell.forget_gate``), which is ``forget_bias``; then the cell's ``init``.
    The MLPs' weights as PyTorch's ``nn.Linear``: uniform in ±1/sqrt(fan-in), biases zero.
    A norm's parameters start at their ``layers.Norm`` constant (RMSNorm's gain: 1); the
    convolution's kernels at the identity (w_0 = 1, the others 0), drawing nothing.
    """

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
        mlp_size: int = 0,
        residual: bool = False,
        norm: str = NO_NORM,
        conv_size: int = 0,
    ):
        self.cell_type = cells.get(cell)
        self.norm_type, self.norm = norm_type(norm), norm
        if not isinstance(residual, bool | np.bool_):
            raise ValueError(f"residual must be true or false, got {residual!r}")
        self.residual = bool(residual)
        for name, value in (("vocab_size", vocab_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):  # fmt: skip
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if int(embedding_size) != embedding_size or embedding_size < 0:
            raise ValueError(f"embedding_size must be an integer >= 0, got {embedding_size!r}")
        if int(mlp_size) != mlp_size or mlp_size < 0:
            raise ValueError(f"mlp_size must be an integer >= 0, got {mlp_size!r}")
        check_conv(conv_size, embedding_size, hidden_size)
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
        self.embedding_size, self.mlp_size = int(embedding_size), int(mlp_size)
        self.conv_size = int(conv_size)
        rng = np.random.default_rng(seed)
        self.params: dict[str, np.ndarray] = self._init_params(rng, float(forget_bias))
        # Each layer's buffers are reused from one window to the next (see layers.Workspace),
        # so only the cache of the latest forward is valid; _generation tells which that is.
        self._workspaces = [layers.Workspace() for _ in range(self.num_layers + 1)]  # + output
        self._embed_ws = layers.Workspace()
        self._mlp_workspaces = [layers.Workspace() for _ in range(self.num_layers)]
        self._conv_workspaces = [layers.Workspace() for _ in range(self.num_layers)]
        places = norm_places(self.num_layers, self.mlp_size) if self.norm_type else []
        self._norm_workspaces = {place: layers.Workspace() for place in places}
        self._generation = 0

    @classmethod
    def from_config(cls, cfg, vocab_size: int, rng: np.random.Generator | None = None) -> Model:
        """The model that a ``config.Config`` describes, initialised from ``rng`` (by default
        a generator seeded with ``cfg.seed``)."""
        seed = cfg.seed if rng is None else rng
        return cls(vocab_size, cfg.model, cfg.hidden_size, cfg.num_layers, cfg.dropout,
                   cfg.dtype, seed, cfg.embedding_size, cfg.forget_bias,
                   cfg.mlp_size, cfg.residual, cfg.norm, cfg.conv_size)  # fmt: skip

    @staticmethod
    def config_shapes(cfg, vocab_size: int) -> dict[str, tuple[int, ...]]:
        """``param_shapes`` of the model that a ``config.Config`` describes."""
        return Model.param_shapes(vocab_size, cfg.model, cfg.hidden_size, cfg.num_layers,
                                  cfg.embedding_size, cfg.mlp_size, cfg.norm,
                                  cfg.conv_size)  # fmt: skip

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
            if self.conv_size:  # the identity: the convolution starts by passing x_t through
                params[f"conv.{layer}.w"] = np.zeros((self.conv_size, H))
                params[f"conv.{layer}.w"][0] = 1.0
            if self.mlp_size:  # PyTorch's nn.Linear initialisation: ±1/sqrt(fan-in)
                M, km = self.mlp_size, 1.0 / np.sqrt(self.mlp_size)
                params[f"mlp.{layer}.W1"] = rng.uniform(-k, k, (H, M))
                params[f"mlp.{layer}.b1"] = np.zeros(M)
                params[f"mlp.{layer}.W2"] = rng.uniform(-km, km, (M, H))
                params[f"mlp.{layer}.b2"] = np.zeros(H)
        params["out.W"] = rng.uniform(-k, k, (H, V))
        params["out.b"] = np.zeros(V)
        fills = self._norm_fills()
        shapes = self.param_shapes(V, self.cell, H, self.num_layers, E, self.mlp_size, self.norm,
                                   self.conv_size)  # fmt: skip
        # in model order, each norm parameter in its place at its initial constant
        params = {
            name: params[name] if name in params else np.full(shape, fills[name])
            for name, shape in shapes.items()
        }
        return {name: p.astype(self.dtype) for name, p in params.items()}

    def _norm_fills(self) -> dict[str, float]:
        """Every norm parameter's name -> its initial constant."""
        if self.norm_type is None:
            return {}
        return {f"{place}.{name}": value for place in norm_places(self.num_layers, self.mlp_size)
                for name, value in self.norm_type.params.items()}  # fmt: skip

    @classmethod
    def from_params(
        cls,
        params: dict[str, np.ndarray],
        cell: str,
        dropout: float = 0.0,
        residual: bool = False,
        norm: str = NO_NORM,
    ) -> Model:
        """The model whose parameters are ``params`` (used as given, not copied, when contiguous
        and all of out.W's dtype); V, H, the number of layers, the embedding size (0 without
        ``embed.W``) and the dtype are read off them. Raises ValueError if they do not fit
        ``cell`` and ``norm``.
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
        M = np.shape(params["mlp.0.W1"])[-1] if np.ndim(params.get("mlp.0.W1")) == 2 else 0
        K = np.shape(params["conv.0.w"])[0] if np.ndim(params.get("conv.0.w")) == 2 else 0
        model = cls(V, cell, H, max(num_layers, 1), dropout, params["out.W"].dtype.name,
                    embedding_size=E, mlp_size=M, residual=residual, norm=norm,
                    conv_size=K)  # fmt: skip
        if set(params) != set(model.params):
            diff = sorted(set(params) ^ set(model.params))
            kind = cell if norm == NO_NORM else f"{cell}, norm {norm}"
            raise ValueError(f"parameter names do not fit a {kind} model: {', '.join(diff)}")
        for name, p in model.params.items():
            if params[name].shape != p.shape:
                raise ValueError(f"{name} has shape {params[name].shape}, expected {p.shape}")
        model.params = {
            name: np.ascontiguousarray(params[name], model.dtype) for name in model.params
        }
        return model

    @staticmethod
    def param_shapes(
        vocab_size: int,
        cell: str,
        hidden_size: int,
        num_layers: int,
        embedding_size: int = 0,
        mlp_size: int = 0,
        norm: str = NO_NORM,
        conv_size: int = 0,
    ) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every parameter of such a model, in model order, allocating none
        (what a checkpoint reader checks a file against before reading its arrays)."""
        kind, H, V, E = cells.get(cell), hidden_size, vocab_size, embedding_size
        normalise = norm_type(norm)
        gains = {f"{place}.{name}": (H,) for place in norm_places(num_layers, mlp_size)
                 for name in (normalise.params if normalise else ())}  # fmt: skip
        shapes = {"embed.W": (V, E)} if E else {}
        for layer in range(num_layers):
            shapes |= {n: s for n, s in gains.items() if n.startswith(f"norm.{layer}.")}
            shapes |= {f"conv.{layer}.w": (conv_size, H)} if conv_size else {}
            layer_shapes = kind.shapes((E or V) if layer == 0 else H, H)
            shapes |= {f"rnn.{layer}.{name}": shape for name, shape in layer_shapes.items()}
            shapes |= {n: s for n, s in gains.items() if n.startswith(f"mlpnorm.{layer}.")}
            if mlp_size:
                shapes |= {f"mlp.{layer}.W1": (H, mlp_size), f"mlp.{layer}.b1": (mlp_size,),
                           f"mlp.{layer}.W2": (mlp_size, H), f"mlp.{layer}.b2": (H,)}  # fmt: skip
        shapes |= {n: s for n, s in gains.items() if n.startswith("outnorm.")}
        shapes["out.W"], shapes["out.b"] = (H, V), (V,)
        return shapes

    @staticmethod
    def state_shape(
        cell: str, hidden_size: int, num_layers: int, batch_size: int, conv_size: int = 0
    ) -> tuple[int, ...]:
        """Shape (L, S, B, H) of the carried state of such a model: S is the cell's states,
        then the K - 1 inputs a ``conv_size`` K convolution carries."""
        slots = cells.get(cell).states + max(conv_size - 1, 0)
        return (num_layers, slots, batch_size, hidden_size)

    @property
    def num_params(self) -> int:
        """Number of scalar parameters."""
        return sum(p.size for p in self.params.values())

    @property
    def state_slots(self) -> int:
        """S of the state (L, S, B, H) (``state_shape``)."""
        return self.state_shape(self.cell, self.hidden_size, self.num_layers, 0, self.conv_size)[1]

    def zero_state(self, batch_size: int) -> np.ndarray:
        """All-zero state (L, S, B, H) to start B streams (``state_slots``)."""
        shape = (self.num_layers, self.state_slots, batch_size, self.hidden_size)
        return np.zeros(shape, dtype=self.dtype)

    def layer_params(self, layer: int) -> list[np.ndarray]:
        """The parameters of recurrent layer ``layer``, in the cell's order."""
        return [self.params[f"rnn.{layer}.{name}"] for name in self.cell_type.param_names]

    def mlp_params(self, layer: int) -> list[np.ndarray]:
        """The parameters of the MLP after layer ``layer`` (W1, b1, W2, b2); [] without one."""
        names = MLP_PARAMS if self.mlp_size else ()
        return [self.params[f"mlp.{layer}.{name}"] for name in names]

    def check_state(self, state, batch_size: int) -> np.ndarray:
        """``state`` as an array of the model's dtype; ValueError unless it is (L, S, B, H)."""
        state = np.asarray(state, dtype=self.dtype)
        expected = (self.num_layers, self.state_slots, batch_size, self.hidden_size)
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
        S = self.cell_type.states  # the cell's slots of the state; the convolution's follow
        layer_caches, dropout_caches, mlp_caches, norm_caches, conv_caches = [], [], [], {}, []
        h = np.ascontiguousarray(x.T)  # time-major (T, B) indices: layer 0's one-hot input
        embed_cache = None
        if self.embedding_size:
            h, embed_cache = layers.embedding_forward(h, self.params["embed.W"], self._embed_ws)
        for layer in range(self.num_layers):
            x_in = h
            if layer > 0:
                h = self._norm_forward(f"norm.{layer}", h, norm_caches)
                h, drop = layers.dropout_forward(h, self.dropout, rng)
                dropout_caches.append(drop)
            if self.conv_size:
                h, final[layer, S:], conv_cache = layers.causal_conv_forward(
                    h, state[layer, S:], self.params[f"conv.{layer}.w"],
                    self._conv_workspaces[layer],
                )  # fmt: skip
                conv_caches.append(conv_cache)
            weights, ws = self.layer_params(layer), self._workspaces[layer]
            h, final[layer, :S], layer_cache = self.cell_type.forward(h, state[layer, :S],
                                                                      weights, ws)  # fmt: skip
            layer_caches.append(layer_cache)
            if self.residual and layer > 0:
                h = np.add(h, x_in, out=ws.empty("residual", h.shape, h.dtype))
            if self.mlp_size:
                n = self._norm_forward(f"mlpnorm.{layer}", h, norm_caches)
                h, mlp_cache = layers.mlp_forward(n, *self.mlp_params(layer),
                                                  self._mlp_workspaces[layer],
                                                  skip=None if n is h else h)  # fmt: skip
                mlp_caches.append(mlp_cache)
        h = self._norm_forward("outnorm", h, norm_caches)
        h, drop = layers.dropout_forward(h, self.dropout, rng)
        dropout_caches.append(drop)
        loss, out_cache = layers.output_loss_forward(
            h, self.params["out.W"], self.params["out.b"], y.T,
            None if mask is None else mask.T, self._workspaces[-1],
        )  # fmt: skip
        caches = (embed_cache, layer_caches, dropout_caches, mlp_caches, norm_caches,
                  conv_caches, out_cache)  # fmt: skip
        return loss, final, (self._generation, caches)

    def _norm_names(self, place: str) -> list[str]:
        return [f"{place}.{name}" for name in self.norm_type.params]

    def _norm_forward(self, place: str, x, caches: dict):
        """The norm at ``place`` applied to x (x itself without a norm); its cache into
        ``caches``."""
        if self.norm_type is None:
            return x
        weights = [self.params[name] for name in self._norm_names(place)]
        y, caches[place] = self.norm_type.forward(x, *weights, self._norm_workspaces[place])
        return y

    def _norm_backward(self, place: str, dy, caches: dict, grads: dict):
        """The gradient of the norm at ``place``'s input (dy itself without a norm); its
        parameters' gradients into ``grads``."""
        if self.norm_type is None:
            return dy
        dx, norm_grads = self.norm_type.backward(dy, caches[place], self._norm_workspaces[place])
        grads |= dict(zip(self._norm_names(place), norm_grads, strict=True))
        return dx

    def position_losses(self, cache) -> np.ndarray:
        """The nats, -ln p_t[y_t], of every position (B, T) of the latest ``forward``, given
        its cache; call it before ``backward``, which reuses the buffer they are read from."""
        generation, (*_, out_cache) = cache
        check_fresh(generation, self._generation)
        T, B = out_cache[0].shape[:2]  # the top layer's output, time-major
        return layers.output_position_nll(out_cache).reshape(T, B).T

    def backward(self, cache):
        """Gradients of the loss of the latest ``forward``, given its cache: (grads by parameter
        name, dstate0 (L, S, B, H)); the grads are new arrays. The final state gets no gradient:
        it stops at the window's edge (truncated backpropagation through time)."""
        generation, caches = cache
        (
            embed_cache,
            layer_caches,
            dropout_caches,
            mlp_caches,
            norm_caches,
            conv_caches,
            out_cache,
        ) = caches
        check_fresh(generation, self._generation)
        cell = self.cell_type
        grads = {}
        dh, grads["out.W"], grads["out.b"] = layers.output_loss_backward(
            1.0, out_cache, self._workspaces[-1]
        )
        dh = layers.dropout_backward(dh, dropout_caches[-1])
        dh = self._norm_backward("outnorm", dh, norm_caches, grads)
        dstate0 = np.empty((self.num_layers, self.state_slots) + dh.shape[1:], dtype=self.dtype)
        S = cell.states
        for layer in reversed(range(self.num_layers)):
            ws = self._workspaces[layer]
            if self.mlp_size:
                dn, mlp_grads = layers.mlp_backward(dh, mlp_caches[layer],
                                                    self._mlp_workspaces[layer])  # fmt: skip
                grads |= {f"mlp.{layer}.{n}": g for n, g in zip(MLP_PARAMS, mlp_grads, strict=True)}
                dh = dn if self.norm_type is None else dh + self._norm_backward(
                    f"mlpnorm.{layer}", dn, norm_caches, grads)  # fmt: skip
            dx, dstate0[layer, :S], layer_grads = cell.backward(dh, layer_caches[layer], ws)
            for name, grad in zip(cell.param_names, layer_grads, strict=True):
                grads[f"rnn.{layer}.{name}"] = grad
            if self.conv_size:
                dx, dstate0[layer, S:], (grads[f"conv.{layer}.w"],) = layers.causal_conv_backward(
                    dx, conv_caches[layer], self._conv_workspaces[layer]
                )
            if layer > 0:
                dx = layers.dropout_backward(dx, dropout_caches[layer - 1])
                dx = self._norm_backward(f"norm.{layer}", dx, norm_caches, grads)
                dh = dx + dh if self.residual else dx  # dh: the layer's output gradient
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
        cell, S = model.cell_type, model.cell_type.states
        self._state = np.zeros((model.state_slots, L, H, B), dtype)
        if state is not None:
            self._state[...] = model.check_state(state, B).transpose(1, 0, 3, 2)
        hs = self._state[0]
        self._mlp_u = np.empty((model.mlp_size, B), dtype)  # the MLPs' hidden units, shared
        self._a = np.empty((cell.gates * H, B), dtype)  # pre-activations, of one layer at a time
        # Layer 0's input is one-hot, so its x Wx + b is a row of this (V, G*H) table; with an
        # embedding, x = one_hot embed.W, and the table folds it in: a step costs the same. With
        # a convolution, x is the convolution of the embedding's rows, and Wx a product.
        self._vocab_size, self._bottom_conv = model.vocab_size, None
        Wx0 = model.params["rnn.0.Wx"]
        if model.conv_size:
            self._table = model.params["embed.W"].copy()  # rows gathered into x0, convolved
            x0 = np.empty((H, B), dtype)
            u0, conv = self._conv_step(model, 0, x0)
            self._bottom_conv = (x0.T, conv, _transposed(Wx0), _column(model.params["rnn.0.b"]),
                                 u0)  # fmt: skip
        else:
            if model.embedding_size:
                Wx0 = model.params["embed.W"] @ Wx0
            self._table = Wx0 + model.params["rnn.0.b"]
        self._a_rows = self._a.T  # (B, G*H) view, for the gather
        scratch = np.empty(((cell.gates + 1) * H, B), dtype)
        # Every product is W^T u with W^T made contiguous, which BLAS's gemv reads row by row
        # and shares between threads once it is large enough. Above layer 0, x Wx therefore
        # joins the recurrent product where the cell allows it: one larger product [Wx; Wh]^T
        # runs faster than two (docs/benchmarks.md); the other cells compute a = x Wx + b first.
        # A layer's output is its h, or a step's own buffer when ops follow the cell (the
        # residual sum, the MLP): ``self._posts[l]`` computes it; ``pre`` normalises the input.
        self._upper = []  # for layers > 0: (pre, Wx^T or None if stacked, b (G*H, 1), input, step)
        self._posts, below = [], None
        for layer in range(L):
            p = dict(zip(cell.param_names, model.layer_params(layer), strict=True))
            extra = [_column(w) if w.ndim == 1 else w for name, w in p.items()
                     if name not in ("Wx", "Wh", "b")]  # fmt: skip
            pre, cell_in = (), below
            if layer > 0 and model.norm_type is not None:
                cell_in, norm = self._norm_step(model, f"norm.{layer}", below)
                pre = (norm,)
            if layer > 0 and model.conv_size:
                cell_in, conv = self._conv_step(model, layer, cell_in)
                pre += (conv,)
            # the stacked product reads [h^{l-1}; h^l] in place: only where h^{l-1} is the input
            stacked = cell.stackable and layer > 0 and not pre and not self._posts[layer - 1]
            if stacked:
                W_T = _transposed(np.concatenate([p["Wx"], p["Wh"]]))
                u = hs[layer - 1 : layer + 1].reshape(2 * H, B)
            elif cell.recurrent:
                W_T, u = _transposed(p["Wh"]), hs[layer]
            else:  # the gates see the input only: no product but x Wx
                W_T = u = None
            step = partial(cell.step, u=u, W_T=W_T, state=tuple(self._state[:S, layer]),
                           scratch=scratch, columns=tuple(extra))  # fmt: skip
            if layer == 0:
                self._bottom = step  # its a comes from the table
            else:
                self._upper.append((pre, None if stacked else _transposed(p["Wx"]),
                                    _column(p["b"]), cell_in, step))  # fmt: skip
            below, posts = self._layer_output(model, layer, hs[layer], below)
            self._posts.append(posts)
        self._top, self._final = below, ()
        if model.norm_type is not None:
            self._top, norm = self._norm_step(model, "outnorm", below)
            self._final = (norm,)
        self._out_W_T = _transposed(model.params["out.W"])
        self._out_b = _column(model.params["out.b"])
        self._logits = np.empty((model.vocab_size, B), dtype)

    @staticmethod
    def _norm_step(model: Model, place: str, x: np.ndarray):
        """(a buffer, the step that writes the norm at ``place`` of x (H, B) into it)."""
        out = np.empty_like(x)
        weights = [_column(model.params[name]) for name in model._norm_names(place)]
        return out, partial(model.norm_type.step, x, *weights, out=out)

    def _conv_step(self, model: Model, layer: int, x: np.ndarray):
        """(a buffer, the step that writes layer ``layer``'s convolution of x (H, B) into it and
        carries x on in the state's slots after the cell's)."""
        out = np.empty_like(x)
        carry = tuple(self._state[model.cell_type.states :, layer])
        w = model.params[f"conv.{layer}.w"][:, :, None].copy()  # (K, H, 1)
        return out, partial(layers.causal_conv_step, x, carry, w, out, np.empty_like(x))

    def _layer_output(self, model: Model, layer: int, h: np.ndarray, x_in: np.ndarray | None):
        """(layer ``layer``'s output, the steps that compute it from its h and input x_in):
        h itself and no steps, or the residual sum h + x_in (layers > 0, ``residual``) and then
        the MLP's output (``mlp_size`` > 0, its input normalised with a ``norm``)."""
        posts, out = [], h
        if model.residual and layer > 0:
            out = np.empty_like(h)
            posts.append(partial(np.add, h, x_in, out=out))
        if model.mlp_size:
            mlp_in = out
            if model.norm_type is not None:
                mlp_in, norm = self._norm_step(model, f"mlpnorm.{layer}", out)
                posts.append(norm)
            W1, b1, W2, b2 = model.mlp_params(layer)
            weights = (_transposed(W1), _column(b1), _transposed(W2), _column(b2))
            y = np.empty_like(h)
            posts.append(partial(layers.mlp_step, mlp_in, *weights, self._mlp_u, y,
                                 skip=None if mlp_in is out else out))  # fmt: skip
            out = y
        return out, tuple(posts)

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
        activations of this step (``cells.Cell.gate_kinds``: LSTM [i; f; o; g], GRU [r; z; n];
        for the analysis page).
        """
        idx = np.asarray(idx)
        if idx.min() < 0:  # np.take would count these from the end; it rejects those >= V
            raise IndexError(f"input indices must be in [0, {self._vocab_size})")
        a = self._a
        if self._bottom_conv is None:
            np.take(self._table, idx, axis=0, out=self._a_rows)  # a = (x Wx + b)^T
        else:
            x0_rows, conv, Wx_T, b, u = self._bottom_conv
            np.take(self._table, idx, axis=0, out=x0_rows)
            conv()
            np.matmul(Wx_T, u, out=a)
            a += b
        self._bottom(a)
        if gates is not None:
            gates[0] = a  # the cell overwrote its pre-activations with the gates
        for post in self._posts[0]:
            post()
        for layer, (pre, Wx_T, b, below, cell) in enumerate(self._upper, 1):
            for norm in pre:
                norm()
            if Wx_T is None:
                np.copyto(a, b)  # x Wx is in the cell's product
            else:
                np.matmul(Wx_T, below, out=a)
                a += b
            cell(a)
            if gates is not None:
                gates[layer] = a
            for post in self._posts[layer]:
                post()
        for norm in self._final:
            norm()
        np.matmul(self._out_W_T, self._top, out=self._logits)
        self._logits += self._out_b
        return self._logits.T


def _transposed(W: np.ndarray) -> np.ndarray:
    """W^T as a contiguous copy (see ``Stepper``)."""
    return np.ascontiguousarray(W.T)


def _column(b: np.ndarray) -> np.ndarray:
    """A copy of the vector b (N,) as a column (N, 1), which broadcasts over the B streams."""
    return b.reshape(-1, 1).copy()
