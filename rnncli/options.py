"""Click parameter types and shared option groups.

The types refuse what the plain ones let through (NaN, infinities, seeds numpy cannot take,
unknown escapes), so that bad values are usage errors at the option. The groups are decorators:
``sampling_options`` for ``sample`` and ``write``, ``config_option`` for a command that takes a
setting of the training configuration with the config's own rule and help.
"""

from __future__ import annotations

import functools
import math

import click

from .config import FIELD_BY_NAME, Field
from .errors import CommandError
from .rules import Rule
from .sample import MAX_SEED, SAMPLING_RULES
from .text import unescape


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


class _Ruled:
    """A number checked by a ``rules.Rule`` that the Python API checks with too: one rule, one
    message. A click range type only for ``--help``, which shows the range."""

    base: click.ParamType

    def __init__(self, rule: Rule):
        high = None if math.isinf(rule.high) else rule.high
        super().__init__(min=rule.low, max=high, min_open=rule.low_open)
        self.rule = rule

    def convert(self, value, param, ctx):
        try:
            return self.rule.check(self.base.convert(value, param, ctx))
        except CommandError as err:
            self.fail(str(err), param, ctx)


class _RuledInt(_Ruled, click.IntRange):
    base = click.INT


class _RuledFloat(_Ruled, click.FloatRange):
    base = click.FLOAT


def ruled(rule: Rule) -> click.ParamType:
    """The option type of values that ``rule`` checks."""
    return _RuledInt(rule) if rule.whole else _RuledFloat(rule)


SEED = ruled(SAMPLING_RULES["seed"])


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


def config_type(field: Field) -> click.ParamType:
    """The click type of a configuration key: its choices, or its range (a seed's up to
    ``MAX_SEED``)."""
    if field.choices:  # live: a cell or schedule registered after import is a choice too
        return LiveChoice(field.choices)
    if field.type is int:
        low = field.ge if field.ge is not None else field.gt + 1 if field.gt is not None else None
        high = MAX_SEED if field.name == "seed" else None
        return click.IntRange(None if low is None else int(low), high)
    if field.type is float:
        low = field.ge if field.ge is not None else field.gt
        return FiniteFloatRange(
            low, field.lt, min_open=field.gt is not None, max_open=field.lt is not None
        )
    return click.STRING


def config_option(name: str, default, dest: str | None = None):
    """An option for the configuration key ``name`` with its rule and help, and ``default``."""
    field = FIELD_BY_NAME[name]
    if field.type is bool:  # a switch: --key-name/--no-key-name
        switch = f"{field.option}/--no-{field.option[2:]}"
        names = (switch,) if dest is None else (switch, dest)
        return click.option(*names, default=default, show_default=True, help=field.help)
    names = (field.option,) if dest is None else (field.option, dest)
    return click.option(
        *names, type=config_type(field), default=default, show_default=True, help=field.help
    )


def sampling_options(live: bool = False):
    """--temperature, --top-k, --top-p, --stop and --seed: how characters are drawn. ``live``:
    the command also changes them while it runs (``rnn write``'s /commands), said in the help."""

    def also(command: str, what: str = "changes it") -> str:
        return f" ({command} {what})" if live else ""

    options = [
        click.option(
            "-t",
            "--temperature",
            default=1.0,
            show_default=True,
            type=ruled(SAMPLING_RULES["temperature"]),
            help="Below 1 is more conservative, above 1 more surprising" + also("/temp") + ".",
        ),
        click.option(
            "--top-k",
            default=0,
            show_default=True,
            type=ruled(SAMPLING_RULES["top_k"]),
            help="Draw only from the k most likely characters (0: all)" + also("/top-k") + ".",
        ),
        click.option(
            "--top-p",
            default=1.0,
            show_default=True,
            type=ruled(SAMPLING_RULES["top_p"]),
            help="Draw only from the smallest set of characters whose probability reaches p"
            + also("/top-p")
            + ".",
        ),
        click.option(
            "--stop",
            "stop_texts",
            multiple=True,
            type=StopText(),
            help="End a sample once it ends with TEXT (kept); repeatable; \\n, \\t, \\r, \\\\ "
            "understood" + also("/stop", "adds one") + ".",
        ),
        click.option(
            "--seed",
            type=SEED,
            help=f"Random seed, 0 to {MAX_SEED}: the same seed gives the same text.",
        ),
    ]

    def decorate(command):
        for option in reversed(options):  # click lists options in reverse decoration order
            command = option(command)
        return command

    return decorate


class Group(click.Group):
    """A command group whose list of commands shows each one's first sentence whole."""

    def format_commands(self, ctx, formatter):
        rows = [
            (name, command.get_short_help_str(limit=1000))
            for name in self.list_commands(ctx)
            if (command := self.get_command(ctx, name)) is not None and not command.hidden
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class SectionedCommand(click.Command):
    """A command whose options are listed under headings: ``sections`` maps each heading to
    the names of its parameters (``--help`` joins the first); the ones no heading names come
    last, under ``rest``."""

    def __init__(self, *args, sections: dict[str, tuple[str, ...]], rest: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.sections, self.rest = sections, rest

    def format_options(self, ctx, formatter):
        records = {
            p.name: p.get_help_record(ctx)
            for p in self.get_params(ctx)
            if isinstance(p, click.Option)
        }
        groups = [(title, names) for title, names in self.sections.items()]
        help_option = self.get_help_option(ctx)
        if help_option is not None:  # --help goes with the first heading's options
            groups[0] = (groups[0][0], (*groups[0][1], help_option.name))
        placed = {name for _, names in groups for name in names}
        groups.append((self.rest, tuple(n for n in records if n not in placed)))
        for title, names in groups:
            rows = [records[n] for n in names if records.get(n) is not None]
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


# The headings of `rnn train --help`; a configuration key missing here is listed under "Other".
TRAIN_SECTIONS = {
    "Run": ("config_path", "run_dir", "resume", "init_from", "force", "quiet", "as_json"),
    "Model": (
        "model", "hidden_size", "num_layers", "embedding_size", "conv_size", "mlp_size",
        "residual", "norm",
        "forget_bias", "dropout", "dtype",
    ),
    "Data": (
        "seq_length", "batch_size", "val_fraction", "test_fraction", "encoding", "max_vocab",
        "grow_vocab",
    ),
    "Optimizer": (
        "optimizer", "learning_rate", "input_lr_scale", "momentum", "beta1", "beta2",
        "rmsprop_decay", "eps", "grad_clip", "grad_clip_mode",
    ),
    "Learning-rate schedule": (
        "lr_schedule", "warmup_steps", "lr_floor", "lr_decay", "lr_patience", "min_lr",
    ),
    "When to stop, evaluate and save": (
        "max_epochs", "max_steps", "max_time", "eval_every", "eval_batches", "checkpoint_every",
        "log_every",
    ),
    "Machine and randomness": ("workers", "seed"),
}  # fmt: skip


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
