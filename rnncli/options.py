"""Click parameter types that refuse what the plain ones let through (NaN, infinities, seeds
numpy cannot take, unknown escapes), so that bad values are usage errors at the option."""

from __future__ import annotations

import functools
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


def dynamic_options(command):
    """``eval``'s dynamic evaluation options (``dynamic.from_options`` reads them)."""
    from .dynamic import DEFAULT_LR, DEFAULT_SEGMENT, MAX_SEGMENT

    options = [
        click.option(
            "--dynamic",
            is_flag=True,
            help="Dynamic evaluation: score the text as one stream in segments, the model taking "
            "a gradient step on each segment after scoring it (the checkpoint is not changed).",
        ),
        click.option(
            "--dynamic-lr",
            type=FiniteFloatRange(min=0),
            help=f"With --dynamic: the SGD rate of those steps [default: {DEFAULT_LR:g}].",
        ),
        click.option(
            "--dynamic-segment",
            type=click.IntRange(1, MAX_SEGMENT),
            help=f"With --dynamic: characters per segment [default: {DEFAULT_SEGMENT}].",
        ),
    ]

    @functools.wraps(command)
    def refusing_stream_options(**kwargs):
        # one stream of segments: the static windows' --batch-size and --seq-length do not apply
        source = click.get_current_context().get_parameter_source
        given = [f"--{name.replace('_', '-')}" for name in ("batch_size", "seq_length")
                 if source(name) is click.core.ParameterSource.COMMANDLINE]  # fmt: skip
        if kwargs["dynamic"] and given:
            raise click.UsageError(
                f"--dynamic reads the text as one stream of --dynamic-segment characters; "
                f"drop {' and '.join(given)}"
            )
        return command(**kwargs)

    for option in reversed(options):
        refusing_stream_options = option(refusing_stream_options)
    return refusing_stream_options
