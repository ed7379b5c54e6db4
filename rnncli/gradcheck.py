"""Finite-difference gradient checks: backpropagation against centred differences in float64."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .errors import CommandError
from .model import Model


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Centred differences ``df/dx_i ~ (f(x + h e_i) - f(x - h e_i)) / (2h)`` for every i.

    ``f`` takes no arguments and reads ``x``, which is perturbed in place and restored; the
    error is O(h^2), so in float64 h = 1e-5 balances truncation against rounding.
    """
    flat = x.reshape(-1)
    if not np.shares_memory(flat, x):
        raise ValueError("x must be contiguous so that it can be perturbed in place")
    grad = np.empty(x.size)
    for i in range(x.size):
        old = flat[i]
        flat[i] = old + h
        f_plus = f()
        flat[i] = old - h
        f_minus = f()
        flat[i] = old
        grad[i] = (f_plus - f_minus) / (2 * h)
    return grad.reshape(x.shape)


def numerical_gradient_array(f: Callable[[], object], x: np.ndarray, dout, h: float = 1e-5):
    """Centred-difference gradient with respect to x of ``sum(f() * dout)``, what a backward
    pass returns for the upstream gradient ``dout``; f() may return an array or a tuple of
    arrays (e.g. an LSTM's (h, c)), with dout alike."""
    return numerical_gradient(lambda: _dot(f(), dout), x, h)


def _dot(out, dout) -> float:
    if isinstance(out, tuple):
        return sum(_dot(o, d) for o, d in zip(out, dout, strict=True))
    return float(np.sum(out * dout))


def rel_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """Relative error of a gradient: ``max_i |a_i - n_i| / max_i max(|a_i|, |n_i|)``.

    The largest deviation relative to the gradient's own scale (an infinity-norm relative
    error), 0 when both are zero. Not elementwise: finite differences in float64 carry an
    absolute noise of about 1e-11 (rounding of f over 2h), so an element whose true gradient is
    1e-7 of the largest can never match to a relative 1e-6, however right the backward pass.
    """
    a, n = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    if a.shape != n.shape:
        raise ValueError(f"gradient shapes differ: {a.shape} and {n.shape}")
    scale = max(np.abs(a).max(initial=0.0), np.abs(n).max(initial=0.0))
    err = np.abs(a - n).max(initial=0.0)
    return float(err / scale) if scale > 0 else 0.0


# Finite differences take two forward passes per parameter, each over every parameter: the
# work grows as the square of the count. This many take a minute or two (docs/trust.md).
MAX_PARAMETERS = 20_000


def check_size(cell: str, num_layers: int, hidden_size: int, vocab_size: int, embedding: int,
               mlp_size: int = 0, norm: str = "none", conv_size: int = 0):  # fmt: skip
    """CommandError (one line) for a model too large to check, from its shape alone: nothing is
    allocated, and the count bounds both the time and the memory the check takes."""

    def parameters(layers: int) -> int:
        shapes = Model.param_shapes(vocab_size, cell, hidden_size, layers, embedding, mlp_size,
                                    norm, conv_size)  # fmt: skip
        return sum(math.prod(shape) for shape in shapes.values())

    one = parameters(1)  # layers past the first are alike: no list of a million layers is built
    count = one + (num_layers - 1) * (parameters(2) - one)
    if count > MAX_PARAMETERS:
        raise CommandError(
            f"gradcheck: {cell} {num_layers:,}x{hidden_size:,} has {count:,} parameters; finite "
            f"differences check at most {MAX_PARAMETERS:,} (two forward passes each): lower "
            "--hidden-size or --num-layers (the maths is the same at any size)"
        )


def check_model_gradients(
    cell: str = "lstm",
    num_layers: int = 2,
    hidden_size: int = 6,
    vocab_size: int = 5,
    batch_size: int = 3,
    seq_length: int = 5,
    dropout: float = 0.0,
    mask: bool = True,
    seed: int = 0,
    h: float = 1e-5,
    embedding_size: int = 0,
    mlp_size: int = 0,
    residual: bool = False,
    norm: str = "none",
    conv_size: int = 0,
) -> dict[str, float]:
    """Max relative error between ``Model.backward`` and centred differences, per parameter
    and for the initial state (key "state0"), for any cell in ``cells.CELLS``.

    A float64 model (with an ``embedding_size`` embedding ``embed.W`` when > 0, and an MLP of
    ``mlp_size`` units after each layer when > 0, a ``conv_size`` convolution before each cell,
    ``residual`` connections and a ``norm`` when asked) with random
    biases, a random non-zero initial state, random inputs and
    targets, and (with ``mask``) some targets unscored; with dropout every evaluation draws the
    same masks from a fresh generator seeded alike. Errors around 1e-8 or below mean correct.
    """
    check_size(cell, num_layers, hidden_size, vocab_size, embedding_size, mlp_size, norm,
               conv_size)  # fmt: skip
    try:
        model = Model(vocab_size, cell, hidden_size, num_layers, dropout, "float64", seed,
                      embedding_size, mlp_size=mlp_size, residual=residual, norm=norm,
                      conv_size=conv_size)  # fmt: skip
    except ValueError as e:  # settings that do not go together, e.g. conv_size's embedding
        raise CommandError(f"gradcheck: {e}") from None
    rng = np.random.default_rng(seed)
    for p in model.params.values():
        if p.ndim == 1:  # the biases (and gains): off their init, so that every term shows
            p += rng.uniform(-0.5, 0.5, p.shape)
    shape = (batch_size, seq_length)
    x, y = rng.integers(0, vocab_size, shape), rng.integers(0, vocab_size, shape)
    weights = None
    if mask:
        weights = rng.random(shape) < 0.7
        weights[0, 0] = True
    state0 = rng.uniform(-0.9, 0.9, model.zero_state(batch_size).shape)

    def loss() -> float:
        return model.forward(x, y, state0, weights, np.random.default_rng(seed + 1))[0]

    _, _, cache = model.forward(x, y, state0, weights, np.random.default_rng(seed + 1))
    grads, dstate0 = model.backward(cache)
    errors = {name: rel_error(grads[name], numerical_gradient(loss, p, h))
              for name, p in model.params.items()}  # fmt: skip
    errors["state0"] = rel_error(dstate0, numerical_gradient(loss, state0, h))
    return errors
