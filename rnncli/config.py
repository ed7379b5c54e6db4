"""The one definition of every training setting, and loading it from YAML and the command line.

``Config`` below lists each key with its type, default, help text and valid range; ``FIELDS``,
the command-line options, validation and the Markdown reference are all derived from it.
Precedence: built-in defaults < YAML config file < command-line options.
"""

import dataclasses
import difflib
import math
import os
from collections.abc import Callable, Collection, Mapping
from typing import Any

import click
import numpy as np
import yaml

from .cells import CELLS
from .errors import ConfigError
from .fileio import atomic_write, text_encoding
from .layers import MAX_CONV, NORMS
from .model import check_conv
from .optim import OPTIMIZERS
from .schedules import SCHEDULES
from .untrusted import UntrustedFileError, clip, open_regular, read_bounded, short

NORM_CHOICES = ("none", *NORMS)  # "none" is model.NO_NORM
CONFIG_LIMIT = 1 << 20  # bytes: a config file is a page of settings, not data
_YAML_DEPTH = 16  # nesting: a config is one flat mapping; the parser recurses once per level


def _is_text_encoding(name: str) -> bool:
    return text_encoding(name) is not None


def _key(
    default: Any,
    help: str,
    *,
    choices: Collection[str] = (),
    ge: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    check: Callable[[Any], bool] | None = None,
    check_rule: str = "",
) -> Any:
    """A ``Config`` field: ``help`` is one sentence; the other arguments say what is valid."""
    rules = dict(choices=choices, ge=ge, gt=gt, lt=lt, check=check, check_rule=check_rule)
    return dataclasses.field(default=default, metadata=dict(help=help, **rules))


@dataclasses.dataclass
class Config:
    """Resolved training configuration; build it with ``load_config`` or ``Config.from_dict``."""

    model: str = _key(
        "lstm", "Recurrent cell type.", choices=CELLS.keys()
    )  # live: registered cells too
    hidden_size: int = _key(128, "Hidden units per layer.", ge=1)
    num_layers: int = _key(2, "Number of stacked recurrent layers.", ge=1)
    embedding_size: int = _key(
        0,
        "Width of a learnt character embedding before the first layer (0 = none: each "
        "character's one-hot vector goes straight into it).",
        ge=0,
    )
    conv_size: int = _key(
        0,
        "Width K of a short causal convolution over time before every cell, u_t = w_0 x_t + ... "
        "+ w_{K-1} x_{t-K+1}, one kernel per feature (0 = none; needs embedding_size equal to "
        "hidden_size).",
        check=lambda k: k == 0 or 2 <= k <= MAX_CONV,
        check_rule=f"must be 0 or 2 to {MAX_CONV}",
    )
    mlp_size: int = _key(
        0,
        "Width of a per-character MLP after each recurrent layer, y = h + relu(h W1 + b1) W2 + "
        "b2 (0 = none).",
        ge=0,
    )
    residual: bool = _key(
        False,
        "Add every layer's input to its output, y = x + cell(x), in all layers but the first "
        "(whose input is one-hot or an embedding).",
    )
    norm: str = _key(
        "none",
        "Normalisation (pre-norm) of the input of every cell above the first, of every MLP and "
        "of the output layer: 'none', or 'rms' for RMSNorm with a learnt gain.",
        choices=NORM_CHOICES,
    )
    forget_bias: float = _key(
        0.0,
        "Initial bias of the LSTM's forget gate (must be 0 for cells without one).",
        check=math.isfinite,
        check_rule="must be a finite number",
    )
    dropout: float = _key(
        0.0, "Dropout probability between layers and before the output layer.", ge=0, lt=1
    )
    seq_length: int = _key(50, "Characters per training sequence (truncated BPTT length).", ge=1)
    batch_size: int = _key(50, "Sequences per minibatch.", ge=1)
    optimizer: str = _key("adam", "Optimization algorithm.", choices=OPTIMIZERS.keys())
    learning_rate: float = _key(2e-3, "Initial learning rate.", gt=0)
    input_lr_scale: float = _key(
        16.0,
        "Factor on the learning rate of the input table that one-hot characters index "
        "(rnn.0.Wx, or embed.W with an embedding); 16 learns faster.",
        gt=0,
    )
    momentum: float = _key(0.0, "Momentum for sgd (0 = plain SGD).", ge=0, lt=1)
    beta1: float = _key(0.9, "Adam decay rate of the gradient mean.", ge=0, lt=1)
    beta2: float = _key(0.999, "Adam decay rate of the squared-gradient mean.", ge=0, lt=1)
    rmsprop_decay: float = _key(
        0.95, "RMSprop decay rate of the squared-gradient mean.", ge=0, lt=1
    )
    eps: float = _key(1e-8, "Denominator stabilizer for adagrad, rmsprop and adam.", gt=0)
    lr_schedule: str = _key(
        "plateau",
        "Learning-rate schedule: 'plateau' decays on a validation plateau, 'cosine' warms up "
        "then decays to lr_floor by the end of the run.",
        choices=SCHEDULES.keys(),
    )  # live: registered schedules too
    warmup_steps: int = _key(
        0, "Steps of linear warm-up at the start of the cosine schedule.", ge=0
    )
    lr_floor: float = _key(
        0.1, "The cosine schedule's final rate, as a fraction of learning_rate.", ge=0, lt=1
    )
    lr_decay: float = _key(
        0.5,
        "Factor applied to the learning rate when validation loss stops improving (plateau) "
        "and after a non-finite step.",
        gt=0,
        lt=1,
    )
    lr_patience: int = _key(
        1, "Evaluations without improvement before the learning rate decays.", ge=1
    )
    min_lr: float = _key(
        1e-5,
        "Stop training once the learning rate falls below this (0 = only once it underflows "
        "below 2.2e-308).",
        ge=0,
    )
    grad_clip: float = _key(5.0, "Gradient clipping threshold (0 = off).", ge=0)
    grad_clip_mode: str = _key(
        "value",
        "Clip each gradient element ('value') or the global gradient norm ('norm').",
        choices=("value", "norm"),
    )
    max_epochs: int = _key(50, "Stop after this many epochs (0 = no limit).", ge=0)
    max_steps: int = _key(0, "Stop after this many optimizer steps (0 = no limit).", ge=0)
    max_time: float = _key(0.0, "Stop after this many seconds of training (0 = no limit).", ge=0)
    eval_every: int = _key(500, "Evaluate on the validation split every this many steps.", ge=1)
    eval_batches: int = _key(
        40,
        "Validation batches per periodic evaluation, the same fixed sample each time "
        "(0 = the whole validation split); a run that ends by a limit scores the whole split.",
        ge=0,
    )
    checkpoint_every: int = _key(500, "Save a checkpoint every this many steps.", ge=1)
    log_every: int = _key(50, "Report the training loss every this many steps.", ge=1)
    val_fraction: float = _key(
        0.1, "Fraction of the corpus held out for validation (val + test < 1).", ge=0, lt=1
    )
    test_fraction: float = _key(
        0.0, "Fraction of the corpus held out for testing (val + test < 1).", ge=0, lt=1
    )
    seed: int = _key(42, "Random seed for weight initialization and dropout masks.", ge=0)
    dtype: str = _key(
        "float32", "Floating-point precision of the model.", choices=("float32", "float64")
    )
    encoding: str = _key(
        "utf-8",
        "Text encoding of the corpus.",
        check=_is_text_encoding,
        check_rule="must be a text encoding known to Python",
    )
    max_vocab: int = _key(65536, "Refuse corpora with more distinct characters than this.", ge=2)
    grow_vocab: bool = _key(
        True,
        "With --init-from: add the corpus's characters that the checkpoint lacks to its "
        "vocabulary (false: refuse such a corpus).",
    )
    workers: int = _key(
        0,
        "Processes that share each batch's streams (0 = one per CPU core, at most batch_size).",
        ge=0,
    )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every key in definition order (what checkpoints and YAML store)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(
        cls,
        d: Mapping[str, Any],
        source: str = "config",
        overrides: Mapping[str, Any] | None = None,
    ) -> "Config":
        """Validate ``d`` (e.g. from ``to_dict``) over the defaults, then ``overrides`` over it.

        Missing keys take their defaults. Errors in ``d`` are prefixed with ``source``; errors in
        ``overrides`` (command-line values) name the option, e.g. ``--learning-rate``.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"{source}: expected a mapping of keys to values, got {short(d)}")
        values = {**_defaults(), **_parse(d, source, cli=False)}
        if overrides:
            values.update(_parse(overrides, None, cli=True))
        return _build(values)


@dataclasses.dataclass(frozen=True)
class Field:
    """One configuration key as defined in ``Config``."""

    name: str
    type: type
    default: Any
    help: str
    choices: Collection[str]
    ge: float | None
    gt: float | None
    lt: float | None
    check: Callable[[Any], bool] | None
    check_rule: str

    @property
    def option(self) -> str:
        """The command-line option, e.g. ``--hidden-size``."""
        return "--" + self.name.replace("_", "-")

    @property
    def rule(self) -> str:
        """What a valid value is, phrased to follow the key in a message ("must be > 0")."""
        if self.choices:
            return "must be one of " + ", ".join(self.choices)
        if self.type is bool:
            return "must be true or false"
        if self.check is not None:
            return self.check_rule
        low = self.ge if self.ge is not None else self.gt
        if self.lt is not None:
            bracket = "[" if self.ge is not None else "("
            return f"must be in {bracket}{low:g}, {self.lt:g})"
        if low is not None:
            return f"must be {'>=' if self.ge is not None else '>'} {low:g}"
        return ""

    @property
    def description(self) -> str:
        """Help text followed by the rule, for ``--help`` and the README."""
        rule = self.rule
        return f"{self.help} {rule[0].upper()}{rule[1:]}." if rule else self.help

    def is_valid(self, value: Any) -> bool:
        """Whether an already correctly typed ``value`` satisfies the rule."""
        if self.choices:
            return value in self.choices
        if self.check is not None:
            return self.check(value)
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.lt is None or value < self.lt)
        )


FIELDS: tuple[Field, ...] = tuple(
    Field(name=f.name, type=f.type, default=f.default, **f.metadata)
    for f in dataclasses.fields(Config)
)
FIELD_BY_NAME = {f.name: f for f in FIELDS}
_TYPE_NAMES = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}


def _defaults() -> dict[str, Any]:
    return {f.name: f.default for f in FIELDS}


def did_you_mean(word: str, candidates) -> str:
    if len(word) > 64:  # no key is that long; comparing a huge value would only cost time
        return ""
    match = difflib.get_close_matches(word.lower(), list(candidates), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _coerce(field: Field, value: Any) -> Any:
    """``value`` as ``field.type``, or None if it is not one."""
    if field.type is bool or isinstance(value, bool):
        # bool is an int subclass, but `hidden_size: yes` is a mistake, not 1; and a switch
        # takes only true/false, not 0/1 or "no"
        return value if isinstance(value, bool) and field.type is bool else None
    if field.type is not float:
        return value if isinstance(value, field.type) else None
    # YAML 1.1 reads "1e-3" (no dot) as a string, so numeric strings are accepted.
    if not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def convert_value(field: Field, value: Any, label: str) -> Any:
    """``value`` type-checked (and coerced) for ``field`` and validated; errors name ``label``."""
    converted = _coerce(field, value)
    if converted is None:
        raise ConfigError(f"{label}: expected {_TYPE_NAMES[field.type]}, got {short(value)}")
    if not field.is_valid(converted):
        hint = did_you_mean(converted, field.choices) if field.choices else ""
        raise ConfigError(f"{label}: {field.rule}, got {short(converted)}{hint}")
    return converted


def _parse(raw: Mapping, source: str | None, cli: bool) -> dict[str, Any]:
    """Validate one layer of settings; ``cli`` names keys as options (``--hidden-size``)."""
    prefix = f"{source}: " if source else ""
    values = {}
    for key, value in raw.items():
        field = FIELD_BY_NAME.get(key) if isinstance(key, str) else None
        if field is None:
            hint = did_you_mean(str(key), FIELD_BY_NAME)
            raise ConfigError(f"{prefix}unknown key {short(key)}{hint}")
        label = field.option if cli else field.name
        values[key] = convert_value(field, value, prefix + label)
    return values


def _build(values: dict[str, Any]) -> Config:
    """Check the constraints between keys, then build the ``Config``."""
    val, test = values["val_fraction"], values["test_fraction"]
    if val + test >= 1:
        raise ConfigError(f"val_fraction + test_fraction: must be < 1, got {val!r} + {test!r}")
    limits = ("max_steps", "max_epochs", "max_time")
    schedule = values["lr_schedule"]
    if SCHEDULES[schedule].needs_end and not any(values[k] for k in limits):
        raise ConfigError(
            f"lr_schedule: {schedule} decays to the end of the run, which needs a limit: set "
            "max_steps, max_epochs or max_time"
        )
    cell, forget_bias = CELLS[values["model"]], values["forget_bias"]
    if forget_bias != 0 and cell.forget_gate is None:  # applied or refused, never ignored
        raise ConfigError(
            f"forget_bias: must be 0 for {cell.name}, which has no forget gate, got {forget_bias!r}"
        )
    try:  # the model's own rule, so that config and model cannot disagree
        check_conv(values["conv_size"], values["embedding_size"], values["hidden_size"])
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _check_precision(values)
    return Config(**values)


# Settings that reach the weights' arithmetic in the model's precision: a value that float32
# turns into infinity (or a positive one it turns into 0) would make weights the reader refuses.
IN_MODEL_ARITHMETIC = ("forget_bias", "learning_rate", "input_lr_scale", "eps", "grad_clip")


def _check_precision(values: dict[str, Any]) -> None:
    """Refuse a setting that the model's dtype cannot hold, before anything is trained."""
    finfo = np.finfo(values["dtype"])
    low, high = float(finfo.smallest_subnormal), float(finfo.max)
    for name in IN_MODEL_ARITHMETIC:
        size = abs(values[name])
        if size > high or 0 < size < low:
            raise ConfigError(
                f"{name}: must be 0 or between {low:.3g} and {high:.3g} in size for "
                f"{values['dtype']}, got {values[name]!r}"
            )
    if values["learning_rate"] * values["input_lr_scale"] > high:
        raise ConfigError(
            f"learning_rate x input_lr_scale: must be at most {high:.3g} for {values['dtype']}, "
            f"got {values['learning_rate']!r} x {values['input_lr_scale']!r}"
        )


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (so no "billion laughs" expansion), nesting
    deeper than ``_YAML_DEPTH`` and duplicate keys (YAML would keep the last one silently)."""

    _depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed", self.peek_event().start_mark
            )
        self._depth += 1
        try:
            if self._depth > _YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {_YAML_DEPTH} levels", mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {short(key)}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def _yaml_error(path: str, e: yaml.YAMLError) -> ConfigError:
    mark = getattr(e, "problem_mark", None)
    where = f"{path}: line {mark.line + 1}" if mark is not None else path
    problem = clip(getattr(e, "problem", None) or str(e).splitlines()[0])
    if isinstance(e, yaml.constructor.ConstructorError) and problem.startswith("duplicate key"):
        return ConfigError(f"{where}: {problem}")
    if isinstance(e, yaml.constructor.ConstructorError):
        # Raised for tags such as !!python/object: nothing was constructed.
        return ConfigError(f"{where}: unsupported YAML ({problem}); only plain values are allowed")
    return ConfigError(f"{where}: invalid YAML ({problem})")


def _read_text(path: str) -> str:
    """The text of the config file at ``path``: a regular file of at most ``CONFIG_LIMIT``
    bytes of UTF-8 (a FIFO or device is refused before anything is read from it)."""
    try:
        with open_regular(path, "config file") as f:
            return read_bounded(f, CONFIG_LIMIT, "config file").decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config file is not UTF-8 text") from None
    except UntrustedFileError as e:
        raise ConfigError(f"{path}: {e}") from None


def read_yaml(path: str) -> Mapping:
    """The mapping in the YAML file at ``path`` (empty for an empty file)."""
    text = _read_text(path)
    try:
        data = yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader: plain values only
    except yaml.YAMLError as e:
        raise _yaml_error(path, e) from None
    except (ValueError, OverflowError) as e:  # a value PyYAML parses but Python cannot hold
        raise ConfigError(f"{path}: invalid YAML value ({clip(str(e))})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{path}: expected a mapping of key: value pairs, got a {kind}")
    return data


def read_settings(path: str | os.PathLike) -> dict[str, Any]:
    """The settings the YAML file at ``path`` gives, validated (keys it leaves out are absent)."""
    return _parse(read_yaml(str(path)), str(path), cli=False)


def validate_settings(settings: Mapping, source: str) -> dict[str, Any]:
    """``settings`` validated key by key as a config file's are (unknown keys with a did-you-mean
    hint), errors prefixed with ``source``; what ``rnncli.train(**settings)`` is given."""
    return _parse(settings, source, cli=False)


def load_config(
    path: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None
) -> Config:
    """Resolve defaults < the YAML file at ``path`` < ``overrides`` (command-line values).

    Errors in ``overrides`` name the command-line option (``--learning-rate``).
    """
    if path is None:
        return Config.from_dict({}, overrides=overrides)
    return Config.from_dict(read_yaml(str(path)), str(path), overrides)


def dump_yaml(cfg: Config, path: str | os.PathLike) -> None:
    """Write ``cfg`` to ``path`` as YAML, keys in definition order, that ``load_config`` reads."""
    header = "# Resolved rnncli configuration (defaults < config file < command-line options).\n"
    body = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)
    with atomic_write(path, text=True) as f:
        f.write(header + body)


def click_options(func: Callable) -> Callable:
    """Decorator adding one ``--key-name`` option per config key (default None = not given).

    Choice keys take plain strings so that validation (with did-you-mean) happens in one place.
    """
    click_types = {int: click.INT, float: click.FLOAT, str: click.STRING, bool: click.BOOL}
    for field in reversed(FIELDS):  # click lists options in reverse decoration order
        flag = field.type is bool  # --key-name/--no-key-name
        func = click.option(
            f"{field.option}/--no-{field.option[2:]}" if flag else field.option,
            field.name,
            type=click_types[field.type],
            default=None,
            metavar="[" + "|".join(field.choices) + "]" if field.choices else None,
            help=f"{field.description} [default: {field.default}]",
        )(func)
    return func


def overrides_from_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The config keys among a click command's ``kwargs`` that were given (not None)."""
    return {f.name: kwargs[f.name] for f in FIELDS if kwargs.get(f.name) is not None}


def shape_text(config: Mapping) -> str:
    """A model's shape in words, e.g. ``lstm 2x128`` or ``lstm 2x128, embedding_size 16``."""
    text = f"{config['model']} {config['num_layers']}x{config['hidden_size']}"
    extras = [f"{key} {config[key]}" for key in ("embedding_size", "conv_size", "mlp_size")
              if config.get(key)]  # fmt: skip
    extras += ["residual"] if config.get("residual") else []
    extras += [f"norm {config['norm']}"] if config.get("norm", "none") != "none" else []
    return ", ".join([text, *extras])


def config_reference_markdown() -> str:
    """Markdown table ``key | default | meaning`` of every key, for the README."""
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    for f in FIELDS:
        meaning = f.description.replace("|", "\\|")
        lines.append(f"| `{f.name}` | `{f.default}` | {meaning} |")
    return "\n".join(lines) + "\n"
