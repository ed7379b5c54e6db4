"""The Python API, for notebooks: ``load`` a trained model, ``train`` one.

Each method calls the library function its command calls, so the results are the commands':
``CharModel.sample`` returns the text ``rnn sample`` prints, ``score`` the figures of ``rnn eval
--json``, ``info`` those of ``rnn info --json``, ``activations`` the numbers behind ``rnn
report``'s heat maps. Bad values are refused by the commands' own checks, raising the classes of
``rnncli.errors`` with the line the command would print; nothing here depends on Click.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .analysis import MAX_CHARS, run_model
from .checkpoint import Checkpoint, load_model
from .config import shape_text, validate_settings
from .dynamic import from_options as dynamic_from_options
from .errors import CommandError
from .evaluate import (
    EVAL_RULES,
    check_eval_memory,
    checked_report,
    evaluate_text,
)
from .facts import checkpoint_facts
from .model import Model
from .report.job import write_report
from .rules import check_settings
from .sample import SAMPLING_RULES, checked_stops, prime_text, sample_text
from .train import TrainResult, default_run_dir, run_training
from .untrusted import short
from .vocab import Vocab

__all__ = ["CharModel", "load", "train"]


class CharModel:
    """A trained character model read from a checkpoint: ``rnncli.load(path)`` makes one.

    ``path`` is the checkpoint file it was read from; ``vocabulary`` its characters in id order;
    ``model``, ``vocab`` and ``checkpoint`` the library's own objects. After ``rnncli.train``,
    ``training`` holds the run's ``TrainResult`` (else None).
    """

    def __init__(self, model: Model, vocab: Vocab, checkpoint: Checkpoint):
        self.model, self.vocab, self.checkpoint = model, vocab, checkpoint
        self.training: TrainResult | None = None

    @property
    def path(self) -> str:
        return str(self.checkpoint.path)

    @property
    def vocabulary(self) -> str:
        return "".join(self.vocab.chars)

    def __repr__(self) -> str:
        meta = self.checkpoint.meta
        parts = [shape_text(self.checkpoint.config), f"V={len(self.vocab)}"]
        if meta.get("step") is not None:
            parts.append(f"step {meta['step']}")
        if meta.get("best_val_loss") is not None:
            parts.append(f"val {meta['best_val_loss']:.4f}")
        return f"<rnncli model {', '.join(parts)}>"

    def sample(
        self,
        prime: str = "",
        length: int = 500,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        stop: str | Sequence[str] | None = (),
        seed: int | None = None,
        argmax: bool = False,
        drop_unknown: bool = False,
    ) -> str:
        """One sample, the prime and what the model writes after it: the text ``rnn sample``
        prints with the same options (without the newline that ends its output). ``stop``: a
        text or several, real characters (no backslash escapes to read); the sample ends once
        it ends with one (None: none). ``seed`` None draws a fresh one."""
        _required(length=length, temperature=temperature, top_k=top_k, top_p=top_p)
        checked = check_settings(
            SAMPLING_RULES,
            length=length,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
        )
        return sample_text(
            self.model,
            self.vocab,
            prime=prime_text(self.vocab, prime, _flag("drop_unknown", drop_unknown)),
            stops=checked_stops(() if stop is None else stop),
            argmax=_flag("argmax", argmax),
            **checked,
        )

    def score(
        self,
        text: str,
        batch_size: int = 50,
        seq_length: int = 100,
        dynamic: bool = False,
        dynamic_lr: float | None = None,
        dynamic_segment: int | None = None,
    ) -> dict:
        """``text`` scored as ``rnn eval CKPT FILE --json`` scores a file holding it: loss (nats
        per character), bpc, perplexity, characters scored and those skipped outside the
        vocabulary; ``batch_size`` and ``seq_length`` as eval's options. ``dynamic`` (with
        ``dynamic_lr`` and ``dynamic_segment``): as ``--dynamic``, the model taking a gradient
        step on each segment after scoring it (this object's weights are not changed)."""
        if not isinstance(text, str):
            raise CommandError(f"text: expected a string, got {type(text).__name__}")
        _required(batch_size=batch_size, seq_length=seq_length)
        window = check_settings(EVAL_RULES, batch_size=batch_size, seq_length=seq_length)
        settings = dynamic_from_options(dynamic, dynamic_lr, dynamic_segment)
        if settings is not None and (batch_size, seq_length) != (50, 100):
            raise CommandError(
                "dynamic evaluation reads the text as one stream of dynamic_segment characters; "
                "leave batch_size and seq_length out"
            )
        check_eval_memory(self.model, window["batch_size"], window["seq_length"])
        report = evaluate_text(self.model, self.vocab, text, **window, dynamic=settings)
        return checked_report(report, "the text").to_dict()

    def activations(self, text: str) -> dict[tuple[int, str], np.ndarray]:
        """What every unit does while the model reads ``text``, as ``rnn report`` records it:
        {(layer, kind): (len(text), hidden_size) float32}, row i after reading character i.
        Kinds: ``h`` (every cell), ``c`` (LSTM), and the gates (LSTM i, f, o, g; GRU r, z, n).
        At most ``analysis.MAX_CHARS`` characters, all in the model's vocabulary."""
        if not isinstance(text, str):
            raise CommandError(f"text: expected a string, got {type(text).__name__}")
        if len(text) > MAX_CHARS:
            raise CommandError(f"text: at most {MAX_CHARS:,} characters, got {len(text):,}")
        unknown = self.vocab.unknown(text)
        if unknown:
            raise CommandError(
                f"text has characters outside the model's vocabulary: {''.join(unknown)!r}"
            )
        acts, *_ = run_model(self.model, self.vocab.encode(text))
        return acts

    def report(
        self,
        out: str | os.PathLike | None = None,
        *,
        text_file: str | os.PathLike | None = None,
        chars: int = 2000,
        length: int = 300,
        seed: int = 1,
        prime: str = "",
    ) -> Path:
        """Write the page ``rnn report`` writes for this model and return its path: ``out``
        [default: report.html beside the checkpoint], the network shown on ``chars`` characters
        of ``text_file`` [default: the run's held-out text], samples of ``length`` characters
        after ``prime`` drawn with ``seed``. Notes and warnings go to stderr, as the command's."""
        path, _ = write_report(
            self.checkpoint, self.model, self.vocab,
            out=None if out is None else _path("out", out),
            text_file=None if text_file is None else _path("text_file", text_file),
            chars=chars, length=length, seed=seed, prime=prime,
            tell=lambda line: print(f"rnncli: {line}", file=sys.stderr),
        )  # fmt: skip
        return path

    def info(self) -> dict:
        """The checkpoint's facts, as ``rnn info --json`` prints them."""
        return checkpoint_facts(self.checkpoint, self.model)


def _required(**values) -> None:
    """CommandError naming the first of ``values`` that is None (the rules let None through
    as "not given", but these have no default to fall back on)."""
    for name, value in values.items():
        if value is None:
            raise CommandError(f"{name}: must be given, got None")


def _flag(name: str, value) -> bool:
    """``value`` if it is True or False; CommandError otherwise ("false" is not False)."""
    if not isinstance(value, bool | np.bool_):
        raise CommandError(f"{name}: expected True or False, got {short(value)}")
    return bool(value)


def _path(name: str, value) -> Path:
    """``value`` as a path; CommandError for anything that cannot name a file."""
    if not isinstance(value, str | os.PathLike):
        raise CommandError(f"{name}: expected a path, got {short(value)}")
    text = os.fspath(value)
    if not isinstance(text, str) or not text or "\0" in text:
        raise CommandError(f"{name}: not a path a file can have: {short(text)}")
    return Path(text)


def load(path: str | os.PathLike) -> CharModel:
    """The model in ``path``: a checkpoint file, or a run folder (its best.npz, else last.npz),
    read as every command reads it; CheckpointError (one line) for anything else, CommandError
    for a ``path`` that is not one."""
    return CharModel(*load_model(_path("path", path)))


def train(
    corpus: str | os.PathLike,
    config: str | os.PathLike | Mapping | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    init_from: str | os.PathLike | None = None,
    force: bool = False,
    quiet: bool = False,
    **settings,
) -> CharModel:
    """Train on ``corpus`` as ``rnn train`` does and return the trained model (loaded from the
    run folder as ``load`` would), with the run's ``TrainResult`` as ``.training``.

    ``config``: a YAML file or a mapping of settings; ``settings``: configuration keys
    (``hidden_size=256``), over it. ``out``: the run folder [default: runs/<corpus name>];
    ``resume``, ``init_from``, ``force`` and ``quiet`` as the options of the same names.
    ConfigError for a bad key or value, TrainError or CorpusError when the run cannot start;
    a signal during training raises ``Interrupted`` after last.npz is saved.
    """
    overrides = validate_settings(settings, "rnncli.train")
    corpus = _path("corpus", corpus)
    if config is not None and not isinstance(config, Mapping):
        config = _path("config", config)
    run_dir = _path("out", out) if out is not None else default_run_dir(corpus)
    init = None if init_from is None else _path("init_from", init_from)
    resume, force, quiet = (_flag("resume", resume), _flag("force", force),
                            _flag("quiet", quiet))  # fmt: skip
    result = run_training(corpus, run_dir, overrides, config, resume, init, force, quiet)
    trained = load(run_dir)
    trained.training = result
    return trained
