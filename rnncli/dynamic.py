"""Dynamic evaluation (Krause et al., 2018, "Dynamic Evaluation of Neural Sequence Models"):
the model keeps learning from the text it scores.

The text is read as one stream in segments of N characters. Each segment is first scored with
the current weights (those scores are the result: every character is predicted only from the
characters before it), then the weights take one gradient step on that segment's mean loss,
and the hidden state carries over into the next segment, as in training. The step is SGD with
a decay toward the trained weights:

    theta <- theta - lr * grad + decay * (theta_trained - theta)

the decay keeping the adapted weights near the ones the model was trained to (Krause et al.'s
"global prior"; 0 turns it off). The defaults and the choice of the rule were measured
(docs/dynamic-eval.md). The model passed in is copied: the caller's weights, and the
checkpoint they came from, never change.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .evaluate import progress_bar
from .model import Model

DEFAULT_LR = 0.1
DEFAULT_SEGMENT = 50
DEFAULT_DECAY = 0.0
MAX_SEGMENT = 10_000  # characters per gradient step: its activations are kept for the backward


@dataclass(frozen=True)
class DynamicSettings:
    """How dynamic evaluation adapts: the SGD rate, the segment length, the decay."""

    lr: float = DEFAULT_LR
    segment: int = DEFAULT_SEGMENT
    decay: float = DEFAULT_DECAY

    def __post_init__(self):
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr >= 0):
            raise ValueError(
                f"the dynamic learning rate must be a finite number >= 0, got {self.lr}"
            )
        whole = isinstance(self.segment, int | np.integer) and not isinstance(self.segment, bool)
        if not whole or not 1 <= self.segment <= MAX_SEGMENT:
            raise ValueError(
                f"the dynamic segment must be 1 to {MAX_SEGMENT:,} characters, got {self.segment}"
            )
        if not (isinstance(self.decay, int | float) and 0 <= self.decay < 1):
            raise ValueError(f"the dynamic decay must be in [0, 1), got {self.decay}")

    def to_dict(self) -> dict:
        return {"lr": self.lr, "segment": self.segment, "decay": self.decay}

    def score(self, model: Model, ids: np.ndarray, progress: str | None = None):
        """``dynamic_score`` with these settings (what ``evaluate`` calls)."""
        return dynamic_score(model, ids, self, progress)

    def surprisal(self, model: Model, ids: np.ndarray, progress: str | None = None):
        """``dynamic_surprisal`` with these settings (what ``evaluate`` calls)."""
        return dynamic_surprisal(model, ids, self, progress)


def from_options(
    dynamic: bool, dynamic_lr: float | None, dynamic_segment: int | None
) -> DynamicSettings | None:
    """The settings of ``eval --dynamic [--dynamic-lr R] [--dynamic-segment N]`` (None without
    --dynamic); ConfigError for a rate or segment given without --dynamic, which would be
    ignored."""
    lr, segment = dynamic_lr, dynamic_segment
    if not dynamic:
        given = [name for name, value in (("--dynamic-lr", lr), ("--dynamic-segment", segment))
                 if value is not None]  # fmt: skip
        if given:
            raise ConfigError(f"{' and '.join(given)} set dynamic evaluation; add --dynamic")
        return None
    try:
        return DynamicSettings(DEFAULT_LR if lr is None else lr,
                               DEFAULT_SEGMENT if segment is None else segment)  # fmt: skip
    except ValueError as err:
        raise ConfigError(str(err)) from None


def segment_losses(
    model: Model, ids: np.ndarray, settings: DynamicSettings, progress: str | None = None
) -> Iterator[np.ndarray]:
    """For each segment of ``ids`` in order, the nats of its characters as scored before the
    step on it: -ln p(c_i | c_0 .. c_{i-1}) for i = 1 .. n-1 (the first character is not
    predicted), in float64. Works on a copy of ``model``; ``progress`` labels a bar, or None."""
    n, N = len(ids), settings.segment
    if n < 2:
        return
    copies = {k: p.copy() for k, p in model.params.items()}
    adapted = Model.from_params(copies, model.cell, 0.0, model.residual, model.norm)
    trained = model.params
    state = adapted.zero_state(1)
    with progress_bar(math.ceil((n - 1) / N), progress, unit="segment") as bar:
        for start in range(0, n - 1, N):
            stop = min(start + N, n - 1)
            x = np.asarray(ids[start:stop], dtype=np.intp)[None]
            y = np.asarray(ids[start + 1 : stop + 1], dtype=np.intp)[None]
            # a huge rate can make the scores overflow: they show as a non-finite loss, which
            # callers refuse, not as numpy warnings
            with np.errstate(all="ignore"):
                _, next_state, cache = adapted.forward(x, y, state)
                losses = adapted.position_losses(cache)[0]
            yield losses
            if settings.lr > 0:
                with np.errstate(all="ignore"):
                    grads, _ = adapted.backward(cache)
                _step(adapted.params, grads, trained, settings)
            state = next_state
            bar.update()


def _largest(arrays) -> float:
    # largest |value| of any array, without a temporary array per call
    return max((float(max(a.max(initial=0.0), -a.min(initial=0.0))) for a in arrays), default=0.0)


def _step(params: dict, grads: dict, trained: dict, settings: DynamicSettings) -> None:
    """One SGD step with decay toward the trained weights, in place; skipped whole if any
    gradient is not finite, or if the step could take a weight beyond its dtype's range (a
    huge rate): either would spoil every later score."""
    if not all(np.isfinite(g).all() for g in grads.values()):
        return
    limit = min(float(np.finfo(p.dtype).max) for p in params.values()) / 4
    reach = settings.lr * _largest(grads.values()) + _largest(params.values())
    if settings.decay:
        reach += _largest(trained.values())
    if not reach <= limit:
        return
    for name, p in params.items():
        p -= settings.lr * grads[name]
        if settings.decay:
            p += settings.decay * (trained[name] - p)


def dynamic_score(
    model: Model, ids: np.ndarray, settings: DynamicSettings, progress: str | None = None
) -> tuple[float, int]:
    """Summed nats and the number of characters scored, like ``evaluate.score`` but dynamic."""
    total, count = 0.0, 0
    for nats in segment_losses(model, ids, settings, progress):
        total += float(nats.sum())
        count += nats.size
    return total, count


def dynamic_surprisal(
    model: Model, ids: np.ndarray, settings: DynamicSettings, progress: str | None = None
) -> np.ndarray:
    """Bits of surprisal of every character of ``ids`` under dynamic evaluation (NaN for the
    first), as ``evaluate.char_surprisal`` gives them statically."""
    bits = np.full(len(ids), np.nan)
    position = 1
    for nats in segment_losses(model, ids, settings, progress):
        bits[position : position + nats.size] = nats / math.log(2)
        position += nats.size
    return bits


def dynamic_label(settings: DynamicSettings | None) -> str:
    """What ``eval`` adds to its summary line: how the text was scored dynamically, or ''."""
    if settings is None:
        return ""
    decay = f", decay {settings.decay:g}" if settings.decay else ""
    return f" (dynamic: lr {settings.lr:g}, segment {settings.segment}{decay})"
