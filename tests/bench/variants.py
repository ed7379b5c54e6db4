"""Bench-only variants of rnncli's model and optimizer, for issue 17's per-step investigation.

Each variant changes one thing against what ``rnn train`` does, composed from rnncli's public
pieces (``rnncli.layers``, ``rnncli.model.Model``, ``rnncli.optim.Adam``), so that its effect
can be measured before anything changes in the engine. No PyTorch here: the unit tests check
these pieces (the embedding model's backward against finite differences) without it.
"""

from __future__ import annotations

import math

import numpy as np

from rnncli import cells, layers
from rnncli.model import Model
from rnncli.optim import Adam

LSTM = cells.get("lstm")  # the engine's LSTM layer over a sequence


class EmbeddedLSTM:
    """``embedding (V, E) -> LSTM stack -> linear``: rnncli's LSTM with a learnt E-dimensional
    character embedding before layer 0, the ``embedding_size`` of issue 17 (torch-rnn's
    ``wordvec_size``).

    The same interface as ``Model`` for training and scoring (``params``, ``zero_state``,
    ``forward``, ``backward``), no dropout. Parameters are rnncli's, except that ``rnn.0.Wx``
    is (E, 4H) and ``embed.W`` (V, E) is new. Initialisation as PyTorch's ``nn.Embedding`` then
    ``nn.LSTM`` would give: embedding N(0, 1), rnn.0.Wx uniform in ±1/sqrt(H); everything else
    as ``Model`` (seeded alike).
    """

    cell = "lstm"

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        num_layers: int,
        dtype: str = "float32",
        seed: int = 0,
    ):
        base = Model(vocab_size, "lstm", hidden_size, num_layers, dtype=dtype, seed=seed)
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers
        self.dtype = base.dtype
        rng = np.random.default_rng([seed, embedding_size])
        k = 1.0 / math.sqrt(hidden_size)
        self.params = {
            "embed.W": rng.standard_normal((vocab_size, embedding_size)).astype(self.dtype),
            **base.params,
            "rnn.0.Wx": rng.uniform(-k, k, (embedding_size, 4 * hidden_size)).astype(self.dtype),
        }
        self._zero = base.zero_state

    def zero_state(self, batch_size: int) -> np.ndarray:
        return self._zero(batch_size)

    def _layer(self, layer: int) -> list[np.ndarray]:
        return [self.params[f"rnn.{layer}.{name}"] for name in ("Wx", "Wh", "b")]

    def forward(self, x, y, state, mask=None, rng=None):
        """(mean loss over the scored targets, final state (L, 2, B, H), cache), as
        ``Model.forward``; ``rng`` is accepted for the same signature (no dropout)."""
        h, embed_cache = layers.embedding_forward(np.asarray(x).T, self.params["embed.W"])
        final, caches = np.empty_like(state), []
        for layer in range(self.num_layers):
            h, final[layer], cache = LSTM.forward(h, state[layer], self._layer(layer))
            caches.append(cache)
        mask = None if mask is None else np.asarray(mask).T
        loss, out_cache = layers.output_loss_forward(
            h, self.params["out.W"], self.params["out.b"], np.asarray(y).T, mask
        )
        return loss, final, (embed_cache, caches, out_cache)

    def backward(self, cache):
        """(gradients by parameter name, gradient of the initial state), as ``Model.backward``."""
        embed_cache, caches, out_cache = cache
        grads = {}
        dh, grads["out.W"], grads["out.b"] = layers.output_loss_backward(1.0, out_cache)
        dstate0 = np.empty((self.num_layers, 2) + dh.shape[1:], dtype=self.dtype)
        for layer in reversed(range(self.num_layers)):
            dh, dstate0[layer], (dWx, dWh, db) = LSTM.backward(dh, caches[layer])
            grads.update({f"rnn.{layer}.Wx": dWx, f"rnn.{layer}.Wh": dWh, f"rnn.{layer}.b": db})
        grads["embed.W"] = layers.embedding_backward(dh, embed_cache)
        return {name: grads[name] for name in self.params}, dstate0


# ----------------------------------------------------------------------------------------------
# Initialisations: each rewrites some of a fresh Model's parameters in place


def init_layer0_scale(model: Model, scale: float, seed: int) -> None:
    """Layer 0's one-hot weights uniform in ±scale (rnncli: ±1)."""
    rng = np.random.default_rng([seed, 1])
    p = model.params["rnn.0.Wx"]
    p[...] = rng.uniform(-scale, scale, p.shape)


def init_orthogonal_recurrent(model: Model, seed: int) -> None:
    """Every gate block (H, H) of every ``Wh`` a random orthogonal matrix (Saxe et al., 2014)."""
    rng = np.random.default_rng([seed, 2])
    H = model.hidden_size
    for layer in range(model.num_layers):
        Wh = model.params[f"rnn.{layer}.Wh"]
        for block in range(Wh.shape[1] // H):
            q, r = np.linalg.qr(rng.standard_normal((H, H)))
            Wh[:, block * H : (block + 1) * H] = q * np.sign(np.diag(r))  # uniform over O(H)


def init_torch_biases(model: Model, seed: int) -> None:
    """Every layer's bias as PyTorch's ``b_ih + b_hh`` starts: the sum of two draws uniform in
    ±1/sqrt(H), with no forget-gate bias of 1 (rnncli: zero, and 1 for the forget gate)."""
    rng = np.random.default_rng([seed, 3])
    k = 1.0 / math.sqrt(model.hidden_size)
    for layer in range(model.num_layers):
        b = model.params[f"rnn.{layer}.b"]
        b[...] = rng.uniform(-k, k, b.shape) + rng.uniform(-k, k, b.shape)


def init_no_forget_bias(model: Model, seed: int) -> None:
    """Every LSTM bias zero, the forget gate's too (rnncli: 1 for the forget gate)."""
    for layer in range(model.num_layers):
        model.params[f"rnn.{layer}.b"][...] = 0.0


# ----------------------------------------------------------------------------------------------
# Optimizers


class TorchAdam(Adam):
    """Adam with PyTorch's placement of epsilon, after the bias correction of v:
    ``p -= lr * m_hat / (sqrt(v_hat) + eps)``, ``m_hat = m / (1 - b1**t)``,
    ``v_hat = v / (1 - b2**t)``. rnncli's ``Adam`` folds the correction into the step size, which
    is the same update with eps scaled by sqrt(1 - b2**t); ``bias_correction=False`` drops both
    corrections, which makes step t (1 - b1**t) / sqrt(1 - b2**t) times as large: 3.2 at
    the first, 6.6 at the 12th, 3.2 at the 100th, 1.26 at the 1000th, towards 1 after."""

    def __init__(
        self, params, lr, rate_factors=None, eps: float = 1e-8, bias_correction: bool = True
    ):
        super().__init__(params, lr, rate_factors, eps=eps)
        self.bias_correction = bias_correction

    def _update(self, p, g, s, lr, m, v):
        self._moments(g, s, m, v)
        c1, c2 = 1.0, 1.0
        if self.bias_correction:
            c1, c2 = 1.0 - self.beta1**self.t, 1.0 - self.beta2**self.t
        np.sqrt(v, out=s)
        s *= 1.0 / math.sqrt(c2)
        s += self.eps
        np.divide(m, s, out=s)
        s *= lr / c1
        p -= s
