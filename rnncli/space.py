"""A sweep's search space: config keys mapped to the values a trial may take, read from YAML.

    hidden_size: [128, 256, 384]                          # a list: one of these
    learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true} # a float range (log: sampled in log)
    num_layers: {low: 1, high: 3}                         # a whole-number key: an int range

Every key is a ``Config`` field, checked as config files are (did-you-mean included), and every
value by that field's own rule: a list's items one by one, a range by its two ends (each rule is
an interval or a set, so the ends being valid makes every value between them valid).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import FIELD_BY_NAME, ConfigError, convert_value, did_you_mean, read_yaml
from .untrusted import short

MAX_CHOICES = 1000  # a list longer than this is a data file, not a search space
MAX_GRID = 100_000  # grid points: the grid sampler lists them all in memory before a trial

# Keys a sweep cannot vary, and why: trials must be scored on the same text to be compared, and
# the sweep shares the machine's cores out itself.
FIXED = {
    "val_fraction": "every trial must be scored on the same validation text",
    "test_fraction": "every trial must be scored on the same validation text",
    "encoding": "every trial must read the corpus the same way",
    "max_vocab": "every trial must read the corpus the same way",
    "workers": "the sweep shares the cores out between its --jobs",
}
# Keys that change which characters a sampled evaluation (eval_batches > 0) scores.
SAMPLE_SHAPE = ("batch_size", "seq_length", "eval_batches")


@dataclass(frozen=True)
class Choice:
    """One of ``values``."""

    values: tuple


@dataclass(frozen=True)
class Range:
    """A number between ``low`` and ``high`` (inclusive); ``integer``: an int range."""

    low: float
    high: float
    log: bool
    integer: bool


Dimension = Choice | Range


def _range(field, spec: Mapping, label: str) -> Range:
    unknown = sorted(str(k) for k in spec if k not in ("low", "high", "log"))
    if unknown:
        hint = did_you_mean(unknown[0], ("low", "high", "log"))
        raise ConfigError(f"{label}: unknown range key {short(unknown[0])}{hint}")
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{label}: a range needs both low and high")
    if field.choices or field.type not in (int, float):  # a switch or a name: list them
        raise ConfigError(f"{label}: {field.name} is not a number; give a list of choices")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{label}.log: expected true or false, got {short(log)}")
    low = convert_value(field, spec["low"], f"{label}.low")
    high = convert_value(field, spec["high"], f"{label}.high")
    if not low < high:
        raise ConfigError(f"{label}: low must be below high, got {low!r} and {high!r}")
    if log and low <= 0:
        raise ConfigError(f"{label}: a log range needs low > 0, got {low!r}")
    # the key's type decides, not how the ends are written: learning_rate {low: 1, high: 3}
    # is a range of reals, not the choice of 1, 2 or 3
    return Range(low, high, log, field.type is int)


def _choice(field, values: list, label: str) -> Choice:
    if not values:
        raise ConfigError(f"{label}: an empty list leaves nothing to choose")
    if len(values) > MAX_CHOICES:
        raise ConfigError(f"{label}: more than {MAX_CHOICES} choices")
    converted = tuple(convert_value(field, v, f"{label}[{i}]") for i, v in enumerate(values))
    if len(set(converted)) < len(converted):
        raise ConfigError(f"{label}: a choice is listed twice")
    return Choice(converted)


def parse_space(raw: Any, source: str) -> dict[str, Dimension]:
    """The dimensions ``raw`` (a YAML mapping read from ``source``) gives, validated."""
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{source}: expected a mapping of config keys to a list or a range")
    space = {}
    for key, spec in raw.items():
        field = FIELD_BY_NAME.get(key) if isinstance(key, str) else None
        if field is None:
            raise ConfigError(
                f"{source}: unknown key {short(key)}{did_you_mean(str(key), FIELD_BY_NAME)}"
            )
        label = f"{source}: {key}"
        if key in FIXED:
            raise ConfigError(f"{label}: cannot be searched: {FIXED[key]}")
        if isinstance(spec, list):
            space[key] = _choice(field, spec, label)
        elif isinstance(spec, Mapping):
            space[key] = _range(field, spec, label)
        else:
            raise ConfigError(
                f"{label}: expected a list of choices or {{low, high, log}}, got {short(spec)}"
            )
    return space


def read_space(path: str | os.PathLike) -> dict[str, Dimension]:
    """The search space in the YAML file at ``path`` (the config reader's limits and checks)."""
    return parse_space(read_yaml(str(path)), str(path))


def check_comparable(space: Mapping[str, Dimension], eval_batches: int) -> None:
    """Refuse a space whose trials' periodic evaluations would score different characters."""
    varied = [k for k in SAMPLE_SHAPE if k in space]
    if varied and eval_batches:
        raise ConfigError(
            f"{varied[0]}: searching it changes which characters the validation sample "
            f"(eval_batches {eval_batches}) scores, so the trials' losses would not compare; "
            "set eval_batches: 0 in --config so each evaluation scores the whole split"
        )


def grid(space: Mapping[str, Dimension]) -> dict[str, list]:
    """The space as a grid of lists, for the grid sampler (every dimension must be a list)."""
    ranges = [k for k, d in space.items() if isinstance(d, Range)]
    if ranges:
        raise ConfigError(f"--sampler grid: {ranges[0]} is a range; give it as a list of values")
    size = grid_size(space)
    if size > MAX_GRID:
        raise ConfigError(
            f"--sampler grid: the space's lists make a grid of {size:,} points, more than the "
            f"{MAX_GRID:,} it can list; give fewer values, or use --sampler tpe or random"
        )
    return {k: list(d.values) for k, d in space.items()}


def grid_size(space: Mapping[str, Dimension]) -> int:
    return math.prod(len(d.values) for d in space.values() if isinstance(d, Choice))
