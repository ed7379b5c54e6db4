"""Optimizers and gradient clipping (the learning-rate schedules are in ``schedules``).

Every optimizer updates parameters in place, chunk by chunk. Its per-parameter state (moments,
caches) and one chunk-sized scratch buffer are allocated once, and each update is written with
``out=`` ufuncs, so a training step allocates no parameter-sized temporaries.

Notation for the update rules: ``p`` a parameter, ``g`` its gradient, ``lr`` the learning rate,
``t`` the number of steps taken so far including this one. A parameter may have a rate factor
(``rate_factors``): its ``lr`` is the optimizer's times that factor.
"""

import math
from collections.abc import Mapping

import numpy as np

from .model import input_table_name

CLIP_MODES = ("value", "norm")


class Optimizer:
    """Base class: holds ``lr``, the step count ``t``, the hyper-parameters and named
    per-parameter state buffers, and the per-parameter rate factors.

    An optimizer is one subclass declaring ``name``, its state buffers ``slots`` and its
    ``hyper``-parameters (attribute -> (config key, default)), with ``_update``, which takes the
    rate for the parameter at hand (``lr`` times its factor); ``register``
    adds it to ``OPTIMIZERS``, which ``make_optimizer`` and ``from_config`` read. State is keyed
    ``"<slot>.<param name>"`` (e.g. ``"m.rnn.0.Wx"``) plus ``"t"``; each buffer has its
    parameter's shape and dtype and starts at zero.
    """

    name = ""
    slots: tuple[str, ...] = ()
    hyper: dict[str, tuple[str, float]] = {}
    CHUNK = 1 << 15

    def __init__(
        self,
        params: dict[str, np.ndarray],
        lr: float,
        rate_factors: Mapping[str, float] | None = None,
        **hyper: float,
    ):
        unknown = sorted(set(hyper) - set(self.hyper))
        if unknown:
            raise TypeError(f"{self.name} takes no hyper-parameter {', '.join(unknown)}")
        for attr, (_, default) in self.hyper.items():
            setattr(self, attr, float(hyper.get(attr, default)))
        for name, p in params.items():
            if not p.flags.c_contiguous:  # step updates flat views, which need contiguous arrays
                raise ValueError(f"parameter {name!r} is not a C-contiguous array")
        self.lr = float(lr)
        self.rate_factors = check_rate_factors(rate_factors or {}, params)
        self.t = 0
        self.slots = self.active_slots()  # this instance's, of the declared ones
        self._slots = {
            slot: {name: np.zeros_like(p) for name, p in params.items()} for slot in self.slots
        }
        self._scratch: dict[np.dtype, np.ndarray] = {}

    def active_slots(self) -> tuple[str, ...]:
        """The slots this instance keeps: all the declared ones unless a subclass says otherwise."""
        return type(self).slots

    @property
    def recipe(self) -> dict:
        """``make_optimizer``'s arguments but params and lr, by config key: to build a twin."""
        return {"name": self.name} | {key: getattr(self, attr)
                                      for attr, (key, _) in self.hyper.items()}  # fmt: skip

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Apply one update to every array in ``params`` (contiguous; in place) using ``grads``."""
        self.t += 1
        factors = self.rate_factors
        for name, p in params.items():
            state = {slot: buffers[name].reshape(-1) for slot, buffers in self._slots.items()}
            factor = factors.get(name, 1.0)
            self.update(p.reshape(-1), grads[name].reshape(-1), state, factor)  # views: contiguous

    def update(
        self, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray], factor: float = 1.0
    ) -> None:
        """Step ``t``'s update of the 1-D ``p`` from ``g`` and ``state`` (slot -> 1-D array),
        in place, at ``factor`` times the optimizer's rate; ``step`` applies it to every
        parameter, a worker process to its slice (split where the factors change).

        The update runs in chunks of ``CHUNK`` elements with one chunk-sized scratch buffer, so
        that its several passes run on data in L2 and only the parameter, gradient and state
        stream through memory, once (docs/benchmarks.md).
        """
        scratch = self._scratch.get(p.dtype)
        if scratch is None:
            scratch = self._scratch[p.dtype] = np.empty(self.CHUNK, p.dtype)
        lr = self.lr * factor
        for start in range(0, p.size, self.CHUNK):
            chunk = slice(start, start + self.CHUNK)
            n = min(self.CHUNK, p.size - start)
            chunks = {k: a[chunk] for k, a in state.items()}
            self._update(p[chunk], g[chunk], scratch[:n], lr, **chunks)

    def adopt_state(self, buffers: dict[str, dict[str, np.ndarray]]) -> None:
        """Keep the state in ``buffers`` (slot -> parameter name -> array shaped like now) from
        here on, e.g. shared memory that worker processes update; the values are copied over."""
        for slot, arrays in self._slots.items():
            for name, a in arrays.items():
                np.copyto(buffers[slot][name], a)
        self._slots = {slot: dict(buffers[slot]) for slot in self._slots}

    def _update(
        self, p: np.ndarray, g: np.ndarray, s: np.ndarray, lr: float, **state: np.ndarray
    ) -> None:
        """Update ``p`` in place (1-D chunks) at rate ``lr``; ``s`` is scratch space of ``p``'s
        shape and dtype."""
        raise NotImplementedError

    def _buffers(self) -> dict[str, np.ndarray]:
        """The live state buffers keyed ``"<slot>.<param name>"``."""
        return {
            f"{slot}.{name}": buf
            for slot, buffers in self._slots.items()
            for name, buf in buffers.items()
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copy of the optimizer state as a flat dict of arrays (``"t"`` is a 0-d int64)."""
        d = {key: buf.copy() for key, buf in self._buffers().items()}
        d["t"] = np.array(self.t, dtype=np.int64)
        return d

    def load_state_dict(self, d: dict[str, np.ndarray]) -> None:
        """Restore state saved by ``state_dict`` exactly; mismatches raise ``ValueError``.

        Nothing is modified unless every key, shape and dtype matches.
        """
        name = type(self).__name__
        expected = self._buffers()
        keys = set(expected) | {"t"}
        missing, unexpected = sorted(keys - set(d)), sorted(set(d) - keys)
        if missing or unexpected:
            raise ValueError(
                f"{name} state does not match this optimizer and model: "
                f"missing {missing}, unexpected {unexpected}"
            )
        for key, buf in expected.items():
            value = np.asarray(d[key])
            if value.shape != buf.shape or value.dtype != buf.dtype:
                raise ValueError(
                    f"{name} state {key!r}: expected {buf.dtype} {buf.shape}, "
                    f"got {value.dtype} {value.shape}"
                )
        t = np.asarray(d["t"])
        if t.shape != () or t.dtype.kind not in "iu" or t < 0:
            raise ValueError(f"{name} state 't' must be a 0-d integer >= 0, got {t!r}")
        for key, buf in expected.items():
            np.copyto(buf, d[key])
        self.t = int(t)


def check_rate_factors(factors: Mapping[str, float], params: Mapping) -> dict[str, float]:
    """``factors`` (parameter name -> rate factor) without the factors of 1, which change
    nothing; ValueError for a name not in ``params`` or a factor that is not finite and > 0."""
    unknown = sorted(set(factors) - set(params))
    if unknown:
        raise ValueError(f"rate factors for parameters the optimizer lacks: {', '.join(unknown)}")
    for name, factor in factors.items():
        if not (isinstance(factor, int | float) and math.isfinite(factor) and factor > 0):
            raise ValueError(f"rate factor of {name!r} must be a finite number > 0, got {factor!r}")
    return {name: float(factor) for name, factor in factors.items() if factor != 1}


OPTIMIZERS: dict[str, type[Optimizer]] = {}


def register(cls: type[Optimizer]) -> type[Optimizer]:
    """Class decorator: add the optimizer ``cls`` to ``OPTIMIZERS`` under ``cls.name``."""
    if clash := sorted(set(cls.hyper) & set(dir(Optimizer))):
        raise ValueError(f"optimizer {cls.name!r}: hyper-parameter names {clash} are taken")
    OPTIMIZERS[cls.name] = cls
    return cls


@register
class SGD(Optimizer):
    """Stochastic gradient descent, with optional (PyTorch-style) momentum ``mu``.

    ``mu == 0``: ``p -= lr * g``.  ``mu > 0``: ``v = mu * v + g``; ``p -= lr * v``.
    """

    name, slots = "sgd", ("v",)
    hyper = {"momentum": ("momentum", 0.0)}

    def active_slots(self):
        return type(self).slots if self.momentum > 0 else ()  # no velocity without momentum

    def _update(self, p, g, s, lr, v=None):
        if v is None:
            np.multiply(g, lr, out=s)
        else:
            v *= self.momentum
            v += g
            np.multiply(v, lr, out=s)
        p -= s


@register
class Adagrad(Optimizer):
    """Adagrad as in min-char-rnn: ``cache += g**2``; ``p -= lr * g / sqrt(cache + eps)``."""

    name, slots = "adagrad", ("cache",)
    hyper = {"eps": ("eps", 1e-8)}

    def _update(self, p, g, s, lr, cache):
        np.multiply(g, g, out=s)
        cache += s
        np.add(cache, self.eps, out=s)
        np.sqrt(s, out=s)
        np.divide(g, s, out=s)
        s *= lr
        p -= s


@register
class RMSprop(Optimizer):
    """RMSprop as in char-rnn, with ``d`` the decay rate:

    ``cache = d * cache + (1 - d) * g**2``; ``p -= lr * g / (sqrt(cache) + eps)``.
    """

    name, slots = "rmsprop", ("cache",)
    hyper = {"decay": ("rmsprop_decay", 0.95), "eps": ("eps", 1e-8)}

    def _update(self, p, g, s, lr, cache):
        cache *= self.decay
        np.multiply(g, g, out=s)
        s *= 1.0 - self.decay
        cache += s
        np.sqrt(cache, out=s)
        s += self.eps
        np.divide(g, s, out=s)
        s *= lr
        p -= s


@register
class Adam(Optimizer):
    """Adam as in torch-rnn (torch ``optim.adam``), bias correction folded into the step size:

    ``m = b1 * m + (1 - b1) * g``; ``v = b2 * v + (1 - b2) * g**2``;
    ``p -= lr * sqrt(1 - b2**t) / (1 - b1**t) * m / (sqrt(v) + eps)``.
    """

    name, slots = "adam", ("m", "v")
    hyper = {"beta1": ("beta1", 0.9), "beta2": ("beta2", 0.999), "eps": ("eps", 1e-8)}

    def _moments(self, g, s, m, v) -> None:
        """In place: ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2`` (``s`` scratch)."""
        m *= self.beta1
        np.multiply(g, 1.0 - self.beta1, out=s)
        m += s
        v *= self.beta2
        np.multiply(g, g, out=s)
        s *= 1.0 - self.beta2
        v += s

    def _update(self, p, g, s, lr, m, v):
        self._moments(g, s, m, v)
        step_size = lr * math.sqrt(1.0 - self.beta2**self.t) / (1.0 - self.beta1**self.t)
        np.sqrt(v, out=s)
        s += self.eps
        np.divide(m, s, out=s)
        s *= step_size
        p -= s


def _declared(name: str) -> type[Optimizer]:
    try:
        return OPTIMIZERS[name]
    except KeyError:
        choices = ", ".join(OPTIMIZERS)
        raise ValueError(f"unknown optimizer {name!r}; choose from {choices}") from None


def make_optimizer(
    name: str,
    params: dict[str, np.ndarray],
    lr: float,
    rate_factors: Mapping[str, float] | None = None,
    **settings,
) -> Optimizer:
    """Build the optimizer called ``name`` (one of ``OPTIMIZERS``) for ``params``, with the
    per-parameter ``rate_factors``; ``settings`` are hyper-parameters by config key
    (``momentum``, ``beta1``, ``rmsprop_decay``, ...): each optimizer takes those it declares and
    ignores the other optimizers'."""
    cls = _declared(name)
    known = {key for opt in OPTIMIZERS.values() for key, _ in opt.hyper.values()}
    if unknown := sorted(set(settings) - known):
        raise TypeError(f"no optimizer has the hyper-parameter {', '.join(unknown)}")
    hyper = {attr: settings[key] for attr, (key, _) in cls.hyper.items() if key in settings}
    return cls(params, lr, rate_factors, **hyper)


def from_config(cfg, params: dict[str, np.ndarray]) -> Optimizer:
    """The optimizer a ``config.Config`` describes (``optimizer``, ``learning_rate``,
    ``input_lr_scale`` and the chosen optimizer's own keys), for ``params``."""
    cls = _declared(cfg.optimizer)
    hyper = {attr: getattr(cfg, key) for attr, (key, _) in cls.hyper.items()}
    table = input_table_name(params)
    factors = {} if table is None else {table: cfg.input_lr_scale}
    return cls(params, cfg.learning_rate, factors, **hyper)


def squared_norm(arrays) -> float:
    """``sum of a**2`` over every element of ``arrays``, as a Python float."""
    total = sum(_dot(a) for a in arrays)
    if not math.isfinite(total) and all(np.isfinite(a).all() for a in arrays):
        # float32 squares overflow beyond ~1.8e19; exploding gradients need the float64 sum.
        total = sum(_dot(a.astype(np.float64)) for a in arrays)
    return total


def _dot(a: np.ndarray) -> float:
    flat = a.reshape(-1)
    with np.errstate(over="ignore"):  # squared_norm handles the overflow
        return float(np.dot(flat, flat))


def check_clip_mode(mode: str) -> None:
    if mode not in CLIP_MODES:
        raise ValueError(f"unknown clipping mode {mode!r}; choose from {', '.join(CLIP_MODES)}")


def clip_(arrays, mode: str, threshold: float, norm: float) -> None:
    """Clip ``arrays`` in place given their global L2 ``norm``; see ``clip_gradients``."""
    check_clip_mode(mode)
    if threshold <= 0 or not math.isfinite(norm):
        return
    if mode == "value":
        for g in arrays:
            np.clip(g, -threshold, threshold, out=g)
    elif norm > threshold:
        scale = threshold / norm
        for g in arrays:
            g *= scale


def clip_gradients(grads: dict[str, np.ndarray], mode: str, threshold: float) -> float:
    """Clip ``grads`` in place and return their global L2 norm before clipping.

    ``mode == "value"`` clips each element to ``[-threshold, threshold]`` (char-rnn);
    ``mode == "norm"`` scales every gradient by ``threshold / norm`` when ``norm > threshold``.
    ``threshold <= 0`` disables clipping. Non-finite gradients are left untouched and their
    non-finite norm is returned, so the caller can detect it and skip the step.
    """
    norm = math.sqrt(squared_norm(list(grads.values())))
    clip_(grads.values(), mode, threshold, norm)
    return norm
