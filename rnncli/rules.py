"""Numeric rules for the settings of using a model (sampling, scoring), checked in one place.

A command-line option built on a rule (``options.ruled``), ``rnn write``'s commands and the
Python API (``rnncli.api``) check with the same ``Rule``, so all refuse the same values in the
same words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .errors import CommandError


@dataclass(frozen=True)
class Rule:
    """Whole (``whole``) or finite numbers from ``low`` (excluded when ``low_open``) to ``high``."""

    whole: bool
    low: float
    high: float = math.inf
    low_open: bool = False

    def check(self, value):
        """``value`` as an int or a float if it follows the rule, else CommandError saying what
        the rule is."""
        kinds = (int, np.integer) if self.whole else (int, float, np.integer, np.floating)
        if (
            isinstance(value, bool)  # an int to Python, but True is no length
            or not isinstance(value, kinds)
            or not math.isfinite(value)
            or not self.low <= value <= self.high
            or (self.low_open and value == self.low)
        ):
            kind = "whole number" if self.whole else "finite number"
            raise CommandError(f"must be a {kind}{self._bounds()}, got {value!r}")
        return int(value) if self.whole else float(value)

    def _bounds(self) -> str:
        low = f" {'above' if self.low_open else 'at least'} {self.low:,g}"
        return low + (f" and at most {self.high:,}" if math.isfinite(self.high) else "")


def check_settings(rules: Mapping[str, Rule], **settings) -> dict:
    """``settings`` checked by the rules of their names (None passes: not given); CommandError
    naming the first bad one."""
    checked = {}
    for name, value in settings.items():
        try:
            checked[name] = None if value is None else rules[name].check(value)
        except CommandError as err:
            raise CommandError(f"{name}: {err}") from None
    return checked
