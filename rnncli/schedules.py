"""Learning-rate schedules: the rate of every training step, and the state a checkpoint keeps.

A schedule is one class registered in ``SCHEDULES`` under its name (the config's
``lr_schedule``). The trainer asks it for the rate before every step (``rate``), tells it each
scheduled validation loss (``observe``) and each non-finite step (``penalize``), and saves its
``state_dict`` in the checkpoint's meta. docs/schedules.md describes both for users.

- ``plateau``: the rate starts at ``learning_rate`` and is multiplied by ``lr_decay`` after
  ``lr_patience`` evaluations without a new best validation loss (char-rnn's rule).
- ``cosine``: an optional linear warm-up over ``warmup_steps`` steps, then a half cosine from
  ``learning_rate`` down to ``learning_rate * lr_floor`` at the end of the run, which the trainer
  gives as the run's progress (0 at the start, 1 at the end).

A non-finite step cuts the rate by ``lr_decay`` under both. Both stop the run (``stop``) once
their rate falls below ``min_lr``: plateau's current rate, cosine's peak times its cuts (the decay
itself never stops a run). Whatever ``min_lr`` (0 included), a rate that falls below the smallest
normal float stops the run too, and no cut takes a rate to 0: what a schedule saves, the
checkpoint reader accepts.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

from .progress import fields_check, is_count, is_number
from .untrusted import short

# A plateau schedule that will see fewer evaluations than this is worth a note: its rule may
# never act in so short a run.
FEW_EVALUATIONS = 5

# Below this a rate moves no weight of either precision; a run whose rate falls below it stops.
SMALLEST_RATE = sys.float_info.min


def cut(value: float, decay: float) -> float:
    """``value * decay``, kept above 0 (a product can underflow to 0.0, which no state allows)."""
    return max(value * decay, math.ulp(0.0))


def spent(rate: float, min_lr: float) -> bool:
    """Whether ``rate`` is too small to go on: below ``min_lr``, or below ``SMALLEST_RATE``."""
    return rate < min_lr or rate < SMALLEST_RATE


class Schedule:
    """Base class: ``lr`` is the rate of the latest step (or the first one's, before any)."""

    name = ""
    needs_end = False  # whether its rates depend on the run's progress, so on a known end
    stepwise = True  # whether it changes the rate in a few steps (the report marks each one)
    state_check: Callable[[Any], bool] = staticmethod(lambda v: False)
    state_rule = ""

    lr: float
    stop: bool = False

    @classmethod
    def from_config(cls, cfg) -> Schedule:
        raise NotImplementedError

    def rate(self, step: int, progress: float | None) -> float:
        """The rate of step ``step`` (counted from 1), ``progress`` the fraction of the run
        done once it is taken (None when the run has no known end, and for a schedule whose
        ``needs_end`` is False, which the trainer does not compute it for); also kept as ``lr``."""
        return self.lr

    def observe(self, val_loss: float) -> None:
        """A scheduled evaluation's validation loss."""

    def penalize(self) -> None:
        """After a non-finite step: every rate from here on is ``lr_decay`` times smaller."""
        raise NotImplementedError

    def budget_note(self, evaluations: int, eval_every: int) -> str | None:
        """One line for the user when ``evaluations`` (the scheduled evaluations left before the
        run's end, one every ``eval_every`` steps) are too few for this schedule; else None."""
        return None

    def resumed(self, cfg, changed: dict) -> None:
        """On ``--resume``, after ``load_state_dict`` (skipped when the schedule itself
        changed): apply the ``changed`` settings (setting -> [saved, new])."""

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, d: dict) -> None:
        """Restore ``state_dict``'s output; ValueError when ``d`` is not one of this schedule."""
        if not self.state_check(d):
            raise ValueError(
                f"invalid learning-rate schedule state for {self.name}: expected "
                f"{self.state_rule}, got {short(d)}"
            )
        self._load(d)

    def _load(self, d: dict) -> None:
        raise NotImplementedError


SCHEDULES: dict[str, type[Schedule]] = {}


def register(cls: type[Schedule]) -> type[Schedule]:
    """Class decorator: add the schedule ``cls`` to ``SCHEDULES`` under ``cls.name``."""
    SCHEDULES[cls.name] = cls
    return cls


def from_config(cfg) -> Schedule:
    """The schedule that a ``config.Config`` names in ``lr_schedule``, built from its keys."""
    return SCHEDULES[cfg.lr_schedule].from_config(cfg)


@register
class Plateau(Schedule):
    """Multiply the rate by ``decay`` when validation loss plateaus.

    ``observe`` is called once per scheduled evaluation. After ``patience`` consecutive
    evaluations without a new best loss, ``lr *= decay`` and the count restarts; ``stop`` becomes
    True once ``lr < min_lr``. A NaN loss never counts as an improvement.
    """

    name = "plateau"
    state_check = staticmethod(
        fields_check(
            lr=lambda v: is_number(v) and v > 0,
            best=lambda v: v is None or is_number(v),
            bad_evals=is_count,
            stop=lambda v: type(v) is bool,
        )
    )
    state_rule = ('an object {"lr": number > 0, "best": number or null, '
                  '"bad_evals": integer >= 0, "stop": boolean}')  # fmt: skip

    def __init__(self, lr: float, decay: float = 0.5, patience: int = 1, min_lr: float = 1e-5):
        self.lr = float(lr)
        self.decay = float(decay)
        self.patience = int(patience)
        self.min_lr = float(min_lr)
        self.best = math.inf
        self.bad_evals = 0
        self.stop = False

    @classmethod
    def from_config(cls, cfg) -> Plateau:
        return cls(cfg.learning_rate, cfg.lr_decay, cfg.lr_patience, cfg.min_lr)

    def observe(self, val_loss: float) -> bool:
        """Record one validation loss; return True if it is a new best."""
        if val_loss < self.best:
            self.best = float(val_loss)
            self.bad_evals = 0
            return True
        self.bad_evals += 1
        if self.bad_evals >= self.patience:
            self.reduce()
        return False

    def reduce(self) -> None:
        """Multiply the rate by ``decay`` now."""
        self.lr = cut(self.lr, self.decay)
        self.bad_evals = 0
        self.stop = spent(self.lr, self.min_lr)

    penalize = reduce

    def budget_note(self, evaluations: int, eval_every: int) -> str | None:
        if evaluations >= FEW_EVALUATIONS:
            return None
        return (
            f"plateau schedule: {evaluations} evaluation(s) left before the run ends (one every "
            f"{eval_every} steps); the rate is multiplied by lr_decay only after lr_patience "
            f"({self.patience}) of them without a new best, so it may stay at {self.lr:.3g}: "
            "lower --eval-every, or --lr-schedule cosine decays it by the end"
        )

    def resumed(self, cfg, changed: dict) -> None:
        if "learning_rate" in changed:  # a new rate replaces the one the schedule reached
            self.lr, self.bad_evals = cfg.learning_rate, 0
        self.stop = spent(self.lr, self.min_lr)  # min_lr may have changed

    def state_dict(self) -> dict:
        """JSON-able state (``best`` is None until the first finite loss)."""
        return {
            "lr": self.lr,
            "best": self.best if math.isfinite(self.best) else None,
            "bad_evals": self.bad_evals,
            "stop": self.stop,
        }

    def _load(self, d: dict) -> None:
        self.lr = float(d["lr"])
        self.best = math.inf if d["best"] is None else float(d["best"])
        self.bad_evals = int(d["bad_evals"])
        self.stop = bool(d["stop"])


def cosine_rate(lr: float, floor: float, warmup_steps: int, step: int, progress: float) -> float:
    """Step ``step``'s rate: ``lr * step / warmup_steps`` during the warm-up, then a half cosine
    from ``lr`` to ``lr * floor`` over the rest of the run, ``progress`` (in [0, 1]) through it.

    The warm-up ends at progress ``progress * warmup_steps / step``: exactly
    ``warmup_steps / N`` in a run of N steps, and the time its steps took at the mean speed so
    far in a run limited by time. So with a known N, step ``warmup_steps`` has rate ``lr`` and
    step N ``lr * floor``.
    """
    if step <= warmup_steps:
        return lr * step / warmup_steps
    start = progress * warmup_steps / step
    done = 1.0 if start >= 1.0 else min(max((progress - start) / (1.0 - start), 0.0), 1.0)
    return lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * done)))


@register
class Cosine(Schedule):
    """Warm-up, then cosine decay to a floor at the end of the run (``cosine_rate``).

    Its state is ``penalty``, the product of ``lr_decay`` over the non-finite steps so far,
    which scales every rate, and ``lr``, the latest rate. ``stop`` becomes True once the peak
    rate times the penalty falls below ``min_lr``: only non-finite steps bring that about.
    """

    name = "cosine"
    needs_end = True
    stepwise = False
    state_check = staticmethod(
        fields_check(
            lr=lambda v: is_number(v) and v >= 0,
            penalty=lambda v: is_number(v) and 0 < v <= 1,
        )
    )
    state_rule = 'an object {"lr": number >= 0, "penalty": number in (0, 1]}'

    def __init__(
        self,
        lr: float,
        floor: float = 0.1,
        warmup_steps: int = 0,
        decay: float = 0.5,
        min_lr: float = 1e-5,
    ):
        self.peak, self.floor, self.warmup_steps = float(lr), float(floor), int(warmup_steps)
        self.decay, self.min_lr = float(decay), float(min_lr)
        self.penalty = 1.0
        self.lr = self.peak if warmup_steps == 0 else 0.0
        self.stop = False

    @classmethod
    def from_config(cls, cfg) -> Cosine:
        return cls(cfg.learning_rate, cfg.lr_floor, cfg.warmup_steps, cfg.lr_decay, cfg.min_lr)

    def rate(self, step: int, progress: float | None) -> float:
        if progress is None:  # the configuration refuses cosine without a limit
            raise ValueError("the cosine schedule needs a run with an end")
        peak = self.peak * self.penalty
        self.lr = cosine_rate(peak, self.floor, self.warmup_steps, step, progress)
        return self.lr

    def penalize(self) -> None:
        self.penalty = cut(self.penalty, self.decay)
        self.lr *= self.decay  # the step is retried at its number: this is its new rate
        self.stop = spent(self.peak * self.penalty, self.min_lr)

    def resumed(self, cfg, changed: dict) -> None:
        self.stop = spent(self.peak * self.penalty, self.min_lr)  # peak or min_lr may have changed

    def state_dict(self) -> dict:
        return {"lr": self.lr, "penalty": self.penalty}

    def _load(self, d: dict) -> None:
        self.lr, self.penalty = float(d["lr"]), float(d["penalty"])
