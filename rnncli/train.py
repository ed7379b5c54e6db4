"""The training job: truncated BPTT over a corpus, with evaluation, rate halving and checkpoints.

One training step reads a (B, T) window from each of B parallel streams, runs the model forward
from the hidden state the previous window left behind, backpropagates through those T steps only
(truncated BPTT: the carried state is a constant, so gradients stop at the window's edge), clips the
gradients and applies one optimizer update.

Every ``eval_every`` steps the validation split is scored; when it fails to improve for
``lr_patience`` evaluations the learning rate is multiplied by ``lr_decay``, and training stops once
it falls below ``min_lr``. ``RUN/last.npz`` is written every ``checkpoint_every`` steps and when the
run ends, ``RUN/best.npz`` whenever validation improves. A checkpoint holds everything the loop
needs to continue (weights, optimizer moments, RNG, data position, carried hidden state, schedule),
so a resumed run produces bitwise the same parameters as one that never stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import __version__
from .checkpoint import (
    Checkpoint,
    load_checkpoint,
    remove_stale_temporaries,
    require_resumable,
    restore_model,
    save_checkpoint,
)
from .config import Config, dump_yaml
from .data import BatchIterator, CorpusError, Vocab, load_corpus, split_corpus
from .evaluate import bits_per_char, score
from .model import Model
from .optim import LRHalving, make_optimizer
from .parallel import data_parallel, resolve_workers

# Files that mark a folder as holding a run; --force removes exactly these.
RUN_FILES = ("config.yaml", "metrics.jsonl", "last.npz", "best.npz")
# Keys that fix the weights' shapes: on --resume and --init-from they come from the checkpoint.
ARCHITECTURE = ("model", "hidden_size", "num_layers")
MAX_BAD_STEPS = 5


class TrainError(Exception):
    """A training run that cannot start or continue; the message is one line for the user."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; ``last.npz`` was saved before this was raised."""

    def __init__(self, signum: int, run_dir: Path):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.run_dir = run_dir


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    epoch: float
    best_val_loss: float | None
    reason: str
    notes: list[str] = field(default_factory=list)


def existing_run_files(run_dir: Path, resume: bool, force: bool) -> list[str]:
    """The files of an earlier run in ``run_dir``, refusing to mix two runs in one folder unless
    told to continue (--resume) or to start over (--force)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainError(f"{run_dir} is not a folder")
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if resume and not (run_dir / "last.npz").is_file():
        raise TrainError(f"{run_dir}: no last.npz to resume from")
    if existing and not (resume or force):
        raise TrainError(
            f"{run_dir} already holds a run ({', '.join(existing)}); "
            "pass --resume to continue it or --force to start over"
        )
    return existing


class _SignalFlag:
    """Turn SIGINT/SIGTERM into a flag the loop checks after each step; a second one aborts."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:  # impatient second signal: stop now, last.npz stays intact
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Owns the model, optimizer, data position and schedule of one run, and their checkpoints."""

    def __init__(
        self,
        corpus_path: Path,
        cfg: Config,
        run_dir: Path,
        ckpt: Checkpoint | None,
        weights_only: bool,
        quiet: bool,
    ):
        self.cfg, self.run_dir, self.quiet = cfg, run_dir, quiet
        self.corpus_path = corpus_path
        vocab = None if ckpt is None else Vocab(ckpt.vocab)
        try:
            corpus = load_corpus(
                corpus_path,
                run_dir / "cache",
                encoding=cfg.encoding,
                max_vocab=cfg.max_vocab,
                vocab=vocab,
            )
        except CorpusError as err:
            if ckpt is not None and weights_only:
                raise TrainError(f"cannot --init-from that checkpoint: {err}") from None
            raise
        self.vocab = corpus.vocab
        train, self.val, _ = split_corpus(corpus.data, cfg.val_fraction, cfg.test_fraction)
        self.batches = BatchIterator(
            train, cfg.batch_size, cfg.seq_length, source=f"{corpus_path} (training split)"
        )

        if ckpt is None:
            self.model = Model(
                len(self.vocab),
                cfg.model,
                cfg.hidden_size,
                cfg.num_layers,
                cfg.dropout,
                cfg.dtype,
                cfg.seed,
            )
        else:
            self.model = restore_model(ckpt, cfg.dropout, cfg.dtype)
        self.optimizer = make_optimizer(
            cfg.optimizer,
            self.model.params,
            cfg.learning_rate,
            momentum=cfg.momentum,
            beta1=cfg.beta1,
            beta2=cfg.beta2,
            rmsprop_decay=cfg.rmsprop_decay,
            eps=cfg.eps,
        )
        self.schedule = LRHalving(cfg.learning_rate, cfg.lr_decay, cfg.lr_patience, cfg.min_lr)
        self.rng = np.random.default_rng(cfg.seed)
        self.state = self.model.zero_state(cfg.batch_size)
        self.step = 0
        self.elapsed = 0.0
        self.best_val_loss: float | None = None
        self.evaluations: list[dict] = []
        if ckpt is not None and not weights_only:
            try:
                self._restore(ckpt)
            except ValueError as err:  # optimizer state or data position that does not fit
                raise TrainError(f"cannot resume from {ckpt.path}: {err}") from None
        self._good = self._snapshot()

    # -- checkpoint state ---------------------------------------------------------------------

    def _restore(self, ckpt: Checkpoint) -> None:
        meta = ckpt.meta
        self.optimizer.load_state_dict(ckpt.optimizer)
        self.schedule.load_state_dict(meta["schedule"])
        self.optimizer.lr = self.schedule.lr
        self.rng.bit_generator.state = meta["rng"]
        self.batches.load_state_dict(meta["data_position"])
        self.state = ckpt.state.astype(self.cfg.dtype)
        self.step = meta["step"]
        self.elapsed = meta["elapsed"]
        self.best_val_loss = meta["best_val_loss"]
        self.evaluations = meta["evaluations"]

    def _checkpoint(self) -> Checkpoint:
        return Checkpoint(
            params=self.model.params,
            vocab=self.vocab.chars,
            config=self.cfg.to_dict(),
            optimizer=self.optimizer.state_dict(),
            state=self.state,
            meta={
                "rnncli_version": __version__,
                "corpus": str(self.corpus_path.resolve()),
                "step": self.step,
                "epoch": self.epoch,
                "elapsed": self.elapsed,
                "best_val_loss": self.best_val_loss,
                "evaluations": self.evaluations,
                "schedule": self.schedule.state_dict(),
                "rng": self.rng.bit_generator.state,
                "data_position": self.batches.state_dict(),
            },
        )

    def save(self, name: str) -> None:
        save_checkpoint(self.run_dir / name, self._checkpoint())

    def _snapshot(self) -> tuple[dict, dict]:
        """A copy of the last weights known good, to roll back to after a non-finite update."""
        params = {k: v.copy() for k, v in self.model.params.items()}
        return params, self.optimizer.state_dict()  # state_dict() already copies

    @property
    def epoch(self) -> float:
        return self.batches.epoch + self.batches.index / self.batches.batches_per_epoch

    # -- the loop -----------------------------------------------------------------------------

    def train_step(self) -> float:
        """One truncated-BPTT window: forward, backward, clip, update. Returns the loss."""
        cfg = self.cfg
        if self.batches.index == 0:  # the streams restart: the carried state no longer applies
            self.state = self.model.zero_state(cfg.batch_size)
        x, y = self.batches.next_batch()
        loss, state, cache = self.net.forward(
            x, y, self.state, rng=self.rng if cfg.dropout > 0 else None
        )
        grads, _ = self.net.backward(cache)
        if not math.isfinite(loss):
            return math.nan
        if not math.isfinite(self.net.update(grads, cfg.grad_clip_mode, cfg.grad_clip)):
            return math.nan  # the update was skipped
        self.state = state
        return loss

    def recover(self, bad_steps: int) -> None:
        """After a non-finite loss or gradient: keep or restore good weights, cut the rate."""
        if bad_steps >= MAX_BAD_STEPS:
            raise TrainError(
                f"loss or gradients were not finite {bad_steps} steps in a row (learning rate "
                f"now {self.schedule.lr:.3g}); lower --learning-rate or --grad-clip and start again"
            )
        if not all(np.isfinite(p).all() for p in self.model.params.values()):
            params, optim_state = self._good
            for name, value in params.items():
                self.model.params[name][...] = value
            self.optimizer.load_state_dict(optim_state)
        self.state = self.model.zero_state(self.cfg.batch_size)
        self.schedule.reduce()
        self.optimizer.lr = self.schedule.lr
        self._say(
            f"step {self.step + 1}: non-finite loss or gradient, skipped; "
            f"learning rate cut to {self.schedule.lr:.3g}"
        )

    def validate(self) -> float | None:
        if len(self.val) < 2:
            return None
        cfg = self.cfg
        total, count = score(self.net, self.val, cfg.batch_size, cfg.seq_length, cfg.eval_batches)
        return total / count

    def run(self, signals: _SignalFlag) -> TrainResult:
        """Train until a stop condition, then save last.npz; raise Interrupted after a signal.

        ``self.net`` runs each step's forward, backward and update meanwhile: in this process, or
        with ``workers`` > 1 a ``parallel.ShardedModel`` that splits each batch's streams over
        worker processes.
        """
        cfg = self.cfg
        self._bar = tqdm(
            total=self._total_steps(),
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            disable=self.quiet or not sys.stderr.isatty(),
            file=sys.stderr,
        )
        with (
            data_parallel(
                self.model, self.optimizer, cfg.batch_size, cfg.seq_length, cfg.workers
            ) as self.net,
            self._bar,
            open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as metrics,
        ):
            self._metrics = metrics
            reason = self._loop(signals)
        if reason == "interrupted":
            raise Interrupted(signals.signum, self.run_dir)
        return TrainResult(self.run_dir, self.step, self.epoch, self.best_val_loss, reason)

    def _loop(self, signals: _SignalFlag) -> str:
        cfg = self.cfg
        window = _Window(cfg.batch_size * cfg.seq_length)
        start, elapsed_before = time.perf_counter(), self.elapsed
        bad_steps = 0
        reason = self._stop_reason(signals, start)
        while reason is None:
            loss = self.train_step()
            if math.isfinite(loss):
                bad_steps = 0
                self.step += 1
                self.elapsed = elapsed_before + time.perf_counter() - start
                window.add(loss)
                self._bar.update(1)
                evaluate = self.step % cfg.eval_every == 0
                if evaluate or self.step % cfg.log_every == 0:
                    window.close()
                    self._report(window, self._evaluate(final=False) if evaluate else None)
                if self.step % cfg.checkpoint_every == 0:
                    self._save_last()
            else:
                bad_steps += 1
                self.recover(bad_steps)
            reason = self._stop_reason(signals, start)
        if reason != "interrupted" and self.step % cfg.eval_every:
            window.close()
            self._report(window, self._evaluate(final=True))
        self._save_last()
        return reason

    def _stop_reason(self, signals: _SignalFlag, run_start: float) -> str | None:
        cfg = self.cfg
        if signals.signum is not None:
            return "interrupted"
        if self.schedule.stop:
            return f"learning rate fell below min_lr ({cfg.min_lr:g})"
        if cfg.max_steps and self.step >= cfg.max_steps:
            return f"reached max_steps ({cfg.max_steps})"
        if cfg.max_epochs and self.batches.epoch >= cfg.max_epochs:
            return f"reached max_epochs ({cfg.max_epochs})"
        if cfg.max_time and time.perf_counter() - run_start >= cfg.max_time:
            return f"reached max_time ({cfg.max_time:g} s)"
        return None

    def _total_steps(self) -> int | None:
        limits = [self.cfg.max_steps] if self.cfg.max_steps else []
        if self.cfg.max_epochs:
            limits.append(self.cfg.max_epochs * self.batches.batches_per_epoch)
        return min(limits) if limits else None

    def _evaluate(self, final: bool) -> float | None:
        """Score the validation split; scheduled evaluations also drive the learning-rate halving.

        The closing evaluation of a run that stops between scheduled ones is only reported: feeding
        it to the schedule would make a stopped-and-resumed run diverge from an uninterrupted one.
        """
        val_loss = self.validate()
        if val_loss is None:
            return None
        if not final:
            self.schedule.observe(val_loss)
            self.optimizer.lr = self.schedule.lr
        self.evaluations.append({"step": self.step, "val_loss": val_loss})
        note = ""
        if self.best_val_loss is None or val_loss < self.best_val_loss:
            self.best_val_loss = val_loss
            self.save("best.npz")
            note = " (best, saved best.npz)"
        self._say(
            f"step {self.step} epoch {self.epoch:.2f}: val loss {val_loss:.4f} "
            f"({bits_per_char(val_loss):.3f} bpc), lr {self.schedule.lr:.3g}{note}"
        )
        return val_loss

    def _save_last(self) -> None:
        self.save("last.npz")
        self._good = self._snapshot()

    def _report(self, window: _Window, val_loss: float | None) -> None:
        """One line of metrics.jsonl and the progress bar's figures; then the next window starts."""
        record = {
            "step": self.step,
            "epoch": round(self.epoch, 4),
            "train_loss": window.train_loss,
            "val_loss": val_loss,
            "lr": self.schedule.lr,
            "chars_per_s": round(window.chars_per_s, 1),
            "elapsed": round(self.elapsed, 3),
        }
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        best = "-" if self.best_val_loss is None else f"{self.best_val_loss:.3f}"
        loss = "-" if window.train_loss is None else f"{window.train_loss:.3f}"
        self._bar.set_postfix_str(
            f"epoch {self.epoch:.2f} loss {loss} val {best} lr {self.schedule.lr:.2g} "
            f"{window.chars_per_s:,.0f} char/s"
        )
        window.restart()

    def _say(self, message: str) -> None:
        if not self.quiet:
            self._bar.write(message, file=sys.stderr)


@dataclass
class _Window:
    """Mean training loss and speed over the steps since the last log line."""

    chars_per_step: int
    steps: int = 0
    loss_sum: float = 0.0
    start: float = field(default_factory=time.perf_counter)
    train_loss: float | None = None
    chars_per_s: float = 0.0

    def add(self, loss: float) -> None:
        self.steps += 1
        self.loss_sum += loss

    def close(self) -> None:
        """Fix the window's figures (before an evaluation, whose time is not training time)."""
        if self.steps:
            self.train_loss = self.loss_sum / self.steps
            elapsed = time.perf_counter() - self.start
            self.chars_per_s = self.steps * self.chars_per_step / elapsed

    def restart(self) -> None:
        """Start the next window (after any evaluation)."""
        self.steps, self.loss_sum, self.start = 0, 0.0, time.perf_counter()


def resolve_resume_config(run_dir: Path, overrides: dict) -> tuple[Config, Checkpoint]:
    """On --resume the run's own config applies, with command-line options on top."""
    ckpt = load_checkpoint(run_dir / "last.npz")
    require_resumable(ckpt)
    changed = [
        k
        for k in ARCHITECTURE + ("dtype",)
        if k in overrides and overrides[k] != ckpt.config.get(k)
    ]
    if changed:
        raise TrainError(
            f"--resume cannot change {', '.join(changed)}: the weights in "
            f"{run_dir / 'last.npz'} were built with "
            + ", ".join(f"{k}={ckpt.config[k]}" for k in changed)
        )
    return Config.from_dict(ckpt.config, "--resume", overrides), ckpt


def train(
    corpus_path: str | Path,
    cfg: Config,
    run_dir: str | Path,
    resume: bool = False,
    init_from: str | Path | None = None,
    force: bool = False,
    quiet: bool = False,
    overrides: dict | None = None,
) -> TrainResult:
    """Run (or continue) a training run in ``run_dir``; see the module docstring."""
    corpus_path, run_dir = Path(corpus_path), Path(run_dir)
    existing = existing_run_files(run_dir, resume, force)
    ckpt, notes = None, []
    if resume:
        cfg, ckpt = resolve_resume_config(run_dir, overrides or {})
    elif init_from is not None:
        ckpt = load_checkpoint(Path(init_from))
        taken = {k: ckpt.config[k] for k in ARCHITECTURE}
        if any(getattr(cfg, k) != v for k, v in taken.items()):
            notes.append(
                "model shape taken from "
                + str(init_from)
                + ": "
                + ", ".join(f"{k}={v}" for k, v in taken.items())
            )
        cfg = Config.from_dict({**cfg.to_dict(), **taken}, source=str(init_from))
    # The resolved count is what config.yaml and the checkpoints record: a resumed run uses the same
    # shards, hence the same order of float additions, and continues bitwise as if never stopped.
    cfg = dataclasses.replace(cfg, workers=resolve_workers(cfg.workers, cfg.batch_size))
    created = not run_dir.exists()
    try:  # the corpus is checked (and cached under run_dir) before anything of the old run goes
        trainer = Trainer(corpus_path, cfg, run_dir, ckpt, weights_only=not resume, quiet=quiet)
    except BaseException:
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if not resume:
        for name in existing:
            (run_dir / name).unlink()
    remove_stale_temporaries(run_dir)
    dump_yaml(cfg, run_dir / "config.yaml")
    with _SignalFlag() as signals:
        result = trainer.run(signals)
    result.notes = notes
    return result
