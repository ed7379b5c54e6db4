"""Click parameter types that refuse what the plain ones let through (NaN, infinities, seeds
numpy cannot take, unknown escapes), so that bad values are usage errors at the option."""

from __future__ import annotations

import math

import click

from .text import unescape

MAX_SEED = 2**63 - 1  # the largest seed the command accepts: an unsigned 64-bit range is not
# needed, and a signed one keeps seeds printable and storable everywhere


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that refuses NaN (which passes every comparison) and infinities."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


class StopText(click.ParamType):
    """A non-empty text with backslash escapes (``\\n``, ``\\t``, ``\\r``, ``\\\\``) read."""

    name = "text"

    def convert(self, value, param, ctx):
        try:
            text = unescape(value)
        except ValueError as err:
            self.fail(str(err), param, ctx)
        if not text:
            self.fail("a stop text cannot be empty.", param, ctx)
        return text


SEED = click.IntRange(0, MAX_SEED)


class LiveChoice(click.Choice):
    """A Choice among the keys of a registry as it is when the option is parsed, so that an
    entry registered after the command was built (a cell type, say) is a choice too."""

    def __init__(self, registry, case_sensitive: bool = True):
        self._registry = registry
        super().__init__((), case_sensitive)

    @property
    def choices(self):
        return tuple(self._registry)

    @choices.setter
    def choices(self, value) -> None:  # click's constructor assigns it; the registry rules
        pass
