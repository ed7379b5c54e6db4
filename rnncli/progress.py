"""The training progress a checkpoint's ``meta`` holds: each field with the check its value must
pass when read from a file, and the fields ``--resume`` needs.

The values come from JSON a stranger may have written, so each check looks at exact types
(``True`` is not a step count) and bounds (an integer of 400 digits is not a loss).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from .untrusted import short

# The largest count a file may hold: steps, epochs, positions and sizes stay far below it, and
# every integer under it is exact as a float, so arithmetic on it (rates, charts, +1 at the next
# save into an int64) can neither overflow nor round.
MAX_COUNT = 2**53


def is_count(v: Any) -> bool:
    """A JSON integer in [0, ``MAX_COUNT``) (not a bool)."""
    return type(v) is int and 0 <= v < MAX_COUNT


def is_number(v: Any) -> bool:
    """A finite JSON number (not a bool)."""
    if type(v) not in (int, float):
        return False  # bool is an int subclass, but not a number here
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer beyond the float range
        return False


def fields_check(**spec: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """A check for a JSON object with exactly these keys, each passing its check."""
    return lambda v: (
        isinstance(v, dict)
        and set(v) == set(spec)
        and all(check(v[k]) for k, check in spec.items())
    )


def _below(bound: int) -> Callable[[Any], bool]:
    return lambda v: type(v) is int and 0 <= v < bound


_EVALUATION = fields_check(step=is_count, val_loss=is_number)

# What ``Trainer`` stores in ``meta``, each key with its check and the rule a message states.
# Unknown keys are kept unchecked: rnncli never reads them.
META_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "rnncli_version": (lambda v: isinstance(v, str), "a string"),
    "corpus": (  # a path: no file's name holds a NUL
        lambda v: v is None or (isinstance(v, str) and "\x00" not in v),
        "a path (a string without NUL) or null",
    ),
    "corpus_sha256": (
        lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-fA-F]{64}", v) is not None,
        "64 hexadecimal digits",
    ),
    "step": (is_count, "an integer in [0, 2**53)"),
    "epoch": (lambda v: is_number(v) and v >= 0, "a finite number >= 0"),
    "elapsed": (lambda v: is_number(v) and v >= 0, "a finite number >= 0"),
    "best_val_loss": (lambda v: v is None or is_number(v), "a finite number or null"),
    # optional (older checkpoints lack it): these weights' loss on the whole validation split
    "val_loss_full": (lambda v: v is None or is_number(v), "a finite number or null"),
    "evaluations": (
        lambda v: isinstance(v, list) and all(map(_EVALUATION, v)),
        'a list of {"step": integer >= 0, "val_loss": finite number}',
    ),
    "rng": (
        fields_check(
            bit_generator=lambda v: v == "PCG64",
            state=fields_check(state=_below(2**128), inc=_below(2**128)),
            has_uint32=_below(2),
            uinteger=_below(2**32),
        ),
        "a PCG64 generator state",
    ),
    "data_position": (
        fields_check(
            epoch=is_count,
            index=is_count,
            batch_size=lambda v: is_count(v) and v >= 1,
            seq_length=lambda v: is_count(v) and v >= 1,
            num_chars=is_count,
        ),
        "an object of integers in [0, 2**53) epoch, index, batch_size, seq_length, num_chars",
    ),
}
# What ``--resume`` needs beyond the weights. The schedule's state has the form its schedule
# declares (``schedules.Schedule.state_check``): ``checkpoint`` checks it against the config's.
RESUME_FIELDS = ("step", "elapsed", "best_val_loss", "evaluations", "schedule", "rng",
                 "data_position")  # fmt: skip


def check_meta(meta: dict[str, Any]) -> None:
    """ValueError naming the first field of ``META_FIELDS`` in ``meta`` that fails its check."""
    for key, (check, rule) in META_FIELDS.items():
        if key in meta and not check(meta[key]):
            raise ValueError(f"meta.{key} must be {rule}, got {short(meta[key])}")
