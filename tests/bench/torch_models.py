"""The PyTorch side of the benchmarks: the model a PyTorch user would write, and an exact twin of
an rnncli model for the parity check.

Both are ``[input] -> nn.RNN / nn.LSTM / nn.GRU / MinStack -> nn.Linear``, batch-first, with logits
scored by ``F.cross_entropy`` (mean nats per character, as rnncli's loss):

* the user's model feeds ``nn.Embedding(V, H)`` vectors into the stack;
* the twin feeds one-hot float vectors straight into a stack with ``input_size = V``, which is
  rnncli's maths exactly: layer 0 of rnncli gathers rows of ``Wx``, i.e. ``one_hot(x) @ Wx``;
  the twin of a model with ``embedding_size`` E > 0 feeds ``nn.Embedding(V, E)``, loaded with
  ``embed.W``, into a stack with ``input_size = E``, which is rnncli's ``one_hot(x) @ embed.W``.

Weight mapping for layer l (rnncli stores ``x @ Wx`` with gate blocks side by side in columns,
PyTorch stores ``W @ x`` with gate blocks stacked in rows):

* ``weight_ih_l = blocks(Wx)^T``, ``weight_hh_l = blocks(Wh)^T``, ``bias_ih_l = blocks(b)``,
  where ``blocks`` puts rnncli's gate blocks in PyTorch's order: the LSTM's ``i, f, o, g``
  become ``i, f, g, o``; GRU ``r, z, n`` and the single RNN block are already in order;
* ``bias_hh_l = 0`` for rnn and lstm (rnncli has one bias; b_ih + b_hh is what counts), and
  ``[0, 0, bh]`` for the GRU: PyTorch's ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`` has
  ``b_hn`` inside the reset gate exactly where rnncli puts ``bh``, and ``b_hr``, ``b_hz`` add
  to ``b_ir``, ``b_iz`` just as rnncli's single ``b[:2H]``;
* ``out.weight = out.W^T``, ``out.bias = out.b``; ``embed.weight = embed.W`` (both (V, E)).

``parity_errors`` holds an rnncli model to its twin, and ``twin_optimizer`` builds the PyTorch
optimizer that updates as an rnncli one does: ``make bench``'s parity check and the test suite's
``tests/test_torch_parity.py`` (skipped without torch) both use them; nothing in rnncli imports
this module.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rnncli.model import Model
from rnncli.optim import Optimizer


class MinStack(nn.Module):
    """A stack of minGRU or minLSTM layers (Feng et al. 2024, arXiv 2410.01201) as a PyTorch
    user writes their sequential form, with ``nn.RNN``'s interface (batch-first): one
    ``nn.Linear`` per layer (``weight_ih_l{k}``, ``bias_ih_l{k}``) makes every step's gates at
    once, then a loop over time runs ``h_t = a_t h_{t-1} + b_t``. The state is h (L, B, H).
    minGRU: blocks [z; h~], ``h_t = (1 - z) h_{t-1} + z h~``; minLSTM: blocks [f; i; h~],
    ``h_t = f/(f + i) h_{t-1} + i/(f + i) h~`` with f, i sigmoids.
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int,
                 batch_first: bool = True):  # fmt: skip
        super().__init__()
        self.cell, self.hidden_size, self.num_layers = cell, hidden_size, num_layers
        blocks = {"mingru": 2, "minlstm": 3}[cell]
        bound = 1 / hidden_size**0.5
        for k in range(num_layers):
            width = input_size if k == 0 else hidden_size
            w = torch.empty(blocks * hidden_size, width).uniform_(-bound, bound)
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(w))
            b = torch.empty(blocks * hidden_size).uniform_(-bound, bound)
            self.register_parameter(f"bias_ih_l{k}", nn.Parameter(b))

    def forward(self, inputs: torch.Tensor, state=None):
        B, H = inputs.shape[0], self.hidden_size
        if state is None:
            state = inputs.new_zeros(self.num_layers, B, H)
        x, finals = inputs, []
        for k in range(self.num_layers):
            a = F.linear(x, getattr(self, f"weight_ih_l{k}"), getattr(self, f"bias_ih_l{k}"))
            if self.cell == "mingru":
                z, h_tilde = torch.sigmoid(a[..., :H]), a[..., H:]
                decay, inp = 1 - z, z * h_tilde
            else:
                f, i = torch.sigmoid(a[..., :H]), torch.sigmoid(a[..., H : 2 * H])
                decay, inp = f / (f + i), i / (f + i) * a[..., 2 * H :]
            h, out = state[k], []
            for t in range(x.shape[1]):
                h = decay[:, t] * h + inp[:, t]
                out.append(h)
            x = torch.stack(out, dim=1)
            finals.append(h)
        return x, torch.stack(finals)


_STACKS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU, "mingru": partial(MinStack, "mingru"),
           "minlstm": partial(MinStack, "minlstm")}  # fmt: skip
# rnncli's gate block index for each of PyTorch's gate blocks, in PyTorch's order.
_TORCH_GATE_ORDER = {"rnn": [0], "lstm": [0, 1, 3, 2], "gru": [0, 1, 2], "mingru": [0, 1],
                     "minlstm": [0, 1, 2]}  # fmt: skip


class CharModel(nn.Module):
    """``[embedding or one-hot] -> recurrent stack -> linear``: logits (B, T, V) for x (B, T).

    ``state``: ``h`` (L, B, H), or ``(h, c)`` for an LSTM, or None for zeros.
    """

    def __init__(
        self,
        cell: str,
        vocab_size: int,
        hidden_size: int,
        num_layers: int,
        one_hot_input: bool = False,
        embedding_size: int | None = None,
    ):
        super().__init__()
        self.cell, self.vocab_size = cell, vocab_size
        width = hidden_size if embedding_size is None else embedding_size  # of the embedding
        self.embed = None if one_hot_input else nn.Embedding(vocab_size, width)
        input_size = vocab_size if one_hot_input else width
        self.rnn = _STACKS[cell](input_size, hidden_size, num_layers, batch_first=True)
        self.out = nn.Linear(hidden_size, vocab_size)

    def forward(self, x: torch.Tensor, state=None):
        if self.embed is None:
            inputs = F.one_hot(x, self.vocab_size).to(self.out.weight.dtype)
        else:
            inputs = self.embed(x)
        h, state = self.rnn(inputs, state)
        return self.out(h), state

    def loss(self, x: torch.Tensor, y: torch.Tensor, state=None):
        """(mean cross-entropy in nats per character, final state)."""
        logits, state = self(x, state)
        return F.cross_entropy(logits.reshape(-1, self.vocab_size), y.reshape(-1)), state


def detach(state):
    """The state cut from the graph that produced it (truncated BPTT)."""
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def train_step_fn(model: CharModel, batches, lr: float, clip: float):
    """A PyTorch user's training step over ``batches`` (an rnncli ``BatchIterator``).

    Each call: forward from the carried state, backward, clip each gradient element to
    [-clip, clip], Adam update, carry the detached final state. The state restarts at zero
    whenever the streams restart, as in rnncli's trainer. Returns the callable; it returns
    the loss.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    state = None

    def step() -> float:
        nonlocal state
        if batches.index == 0:
            state = None
        x, y = (torch.from_numpy(a) for a in batches.next_batch())
        loss, final = model.loss(x, y, state)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_value_(model.parameters(), clip)
        optimizer.step()
        state = detach(final)
        return loss.item()

    return step


def _gate_blocks(a: np.ndarray, order, hidden_size: int) -> np.ndarray:
    """``a`` (..., G*H) with its H-wide gate blocks taken in ``order``."""
    blocks = [a[..., k * hidden_size : (k + 1) * hidden_size] for k in order]
    return np.ascontiguousarray(np.concatenate(blocks, axis=-1))


def twin_of(model: Model) -> CharModel:
    """The PyTorch model computing exactly what ``model`` computes: one-hot input, or for
    ``embedding_size`` E > 0 an ``nn.Embedding(V, E)`` holding ``embed.W``."""
    cell, H, E = model.cell, model.hidden_size, model.embedding_size
    twin = CharModel(cell, model.vocab_size, H, model.num_layers, one_hot_input=not E,
                     embedding_size=E or None)  # fmt: skip
    # In the model's dtype before loading: float32 tensors would round float64 weights.
    twin = twin.to(torch.float64 if model.dtype == np.float64 else torch.float32)
    order, p = _TORCH_GATE_ORDER[cell], model.params
    weights = {"out.weight": p["out.W"].T, "out.bias": p["out.b"]}
    if E:
        weights["embed.weight"] = p["embed.W"]
    for layer in range(model.num_layers):
        bias_hh = np.zeros(len(order) * H, dtype=model.dtype)
        if cell == "gru":
            bias_hh[2 * H :] = p[f"rnn.{layer}.bh"]
        weights[f"rnn.weight_ih_l{layer}"] = _gate_blocks(p[f"rnn.{layer}.Wx"], order, H).T
        weights[f"rnn.bias_ih_l{layer}"] = _gate_blocks(p[f"rnn.{layer}.b"], order, H)
        if model.cell_type.recurrent:  # minGRU and minLSTM have no recurrent weights
            weights[f"rnn.weight_hh_l{layer}"] = _gate_blocks(p[f"rnn.{layer}.Wh"], order, H).T
            weights[f"rnn.bias_hh_l{layer}"] = bias_hh
    twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()})
    return twin


def twin_gradients(twin: CharModel, num_layers: int, hidden_size: int) -> dict[str, np.ndarray]:
    """The twin's parameter gradients under rnncli's names and layouts (inverse of ``twin_of``).

    rnncli's ``b`` is PyTorch's ``bias_ih`` (the loss sees b_ih + b_hh, so both have the same
    gradient); the GRU's ``bh`` is the n block of ``bias_hh``.
    """
    H, cell = hidden_size, twin.cell
    inverse = np.argsort(_TORCH_GATE_ORDER[cell])
    g = {name: p.grad.numpy() for name, p in twin.named_parameters()}
    grads = {}
    for layer in range(num_layers):
        grads[f"rnn.{layer}.Wx"] = _gate_blocks(g[f"rnn.weight_ih_l{layer}"].T, inverse, H)
        if f"rnn.weight_hh_l{layer}" in g:
            grads[f"rnn.{layer}.Wh"] = _gate_blocks(g[f"rnn.weight_hh_l{layer}"].T, inverse, H)
        grads[f"rnn.{layer}.b"] = _gate_blocks(g[f"rnn.bias_ih_l{layer}"], inverse, H)
        if cell == "gru":
            grads[f"rnn.{layer}.bh"] = g[f"rnn.bias_hh_l{layer}"][2 * H :]
    grads["out.W"], grads["out.b"] = g["out.weight"].T, g["out.bias"]
    if "embed.weight" in g:  # a twin of an embedded model (see ``twin_of``)
        grads = {"embed.W": g["embed.weight"], **grads}
    return grads


def state_to_torch(state: np.ndarray, cell: str):
    """rnncli state (L, S, B, H) -> PyTorch's h (L, B, H) or (h, c), as leaves with gradients."""
    parts = tuple(torch.tensor(state[:, s], requires_grad=True) for s in range(state.shape[1]))
    return parts if cell == "lstm" else parts[0]


def state_to_numpy(state) -> np.ndarray:
    """PyTorch's h or (h, c) (or their gradients) -> rnncli layout (L, S, B, H)."""
    parts = state if isinstance(state, tuple) else (state,)
    return np.stack([p.detach().numpy() for p in parts], axis=1)


def state_gradient(state) -> np.ndarray:
    """Gradient of the leaves made by ``state_to_torch``, in rnncli layout (L, S, B, H)."""
    parts = state if isinstance(state, tuple) else (state,)
    return state_to_numpy(tuple(p.grad for p in parts))


def relative_error(a, b) -> float:
    """``max|a - b| / max|b|``: error relative to the reference tensor's scale."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), np.finfo(np.float64).tiny))


def parity_errors(
    cell: str, vocab_size=65, hidden_size=64, num_layers=2, batch=10, seq=25, embedding_size=0,
    dtype="float32",
):  # fmt: skip
    """Relative error (``relative_error``) of rnncli against its PyTorch twin for the loss, the
    final state, each parameter gradient and the initial state's gradient ("dstate0")."""
    rng = np.random.default_rng(0)
    model = Model(vocab_size, cell, hidden_size, num_layers, dtype=dtype, seed=0,
                  embedding_size=embedding_size)  # fmt: skip
    # Every parameter, biases too (their mapping is checked), uniform in +-1/sqrt(H) like the
    # weights of both frameworks' initialisation: larger recurrent weights make a vanilla RNN
    # chaotic, and then float32 rounding differences grow over the window instead of fading.
    scale = 1 / np.sqrt(hidden_size)
    for p in model.params.values():
        p[...] = rng.uniform(-scale, scale, p.shape)
    ids = rng.integers(0, vocab_size, (batch, seq + 1))
    x, y = ids[:, :-1], ids[:, 1:]
    state0 = rng.uniform(-1, 1, model.zero_state(batch).shape).astype(model.dtype)
    loss, final, cache = model.forward(x, y, state0)
    grads, dstate0 = model.backward(cache)

    twin = twin_of(model)
    twin_state0 = state_to_torch(state0, cell)
    twin_loss, twin_final = twin.loss(torch.from_numpy(x), torch.from_numpy(y), twin_state0)
    twin_loss.backward()
    reference = {
        "loss": twin_loss.item(),
        "final state": state_to_numpy(twin_final),
        **twin_gradients(twin, num_layers, hidden_size),
        "dstate0": state_gradient(twin_state0),
    }
    ours = {"loss": loss, "final state": final, **grads, "dstate0": dstate0}
    return {name: relative_error(ours[name], reference[name]) for name in reference}


# rnncli optimizer -> (its torch.optim twin, the twin's keyword for each rnncli hyper-parameter).
# Adagrad's and Adam's eps sit elsewhere in PyTorch's formulas (``rnncli.reference``), so their
# updates agree exactly only at eps = 0.
_TORCH_OPTIMIZERS = {
    "sgd": (torch.optim.SGD, {"momentum": "momentum"}),
    "adagrad": (torch.optim.Adagrad, {"eps": "eps"}),
    "rmsprop": (torch.optim.RMSprop, {"decay": "alpha", "eps": "eps"}),
    "adam": (torch.optim.Adam, {"beta1": None, "beta2": None, "eps": "eps"}),
}


def twin_optimizer(optimizer: Optimizer, tensors: dict[str, torch.Tensor]) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer updating ``tensors`` (by rnncli parameter name) as
    ``optimizer`` updates its parameters: the same rule and hyper-parameters, one parameter group
    per tensor at the optimizer's ``lr`` times that parameter's rate factor."""
    cls, keywords = _TORCH_OPTIMIZERS[optimizer.name]
    hyper = {key: getattr(optimizer, attr) for attr, key in keywords.items() if key}
    if optimizer.name == "adam":
        hyper["betas"] = (optimizer.beta1, optimizer.beta2)
    groups = [{"params": [t], "lr": optimizer.lr * optimizer.rate_factors.get(name, 1.0)}
              for name, t in tensors.items()]  # fmt: skip
    return cls(groups, lr=optimizer.lr, **hyper)
