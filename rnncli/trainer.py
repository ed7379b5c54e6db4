"""The Trainer: truncated BPTT over a corpus, with evaluation, rate schedules and checkpoints.

One training step reads a (B, T) window from each of B parallel streams, runs the model forward
from the hidden state the previous window left behind, backpropagates through those T steps only
(truncated BPTT: the carried state is a constant, so gradients stop at the window's edge), clips the
gradients and applies one optimizer update.

Every ``eval_every`` steps a fixed sample of the validation split is scored (its first
``eval_batches`` batches: the same windows every time, so evaluations compare). The learning rate
of every step comes from the schedule (``schedules``): with ``plateau`` it is multiplied by
``lr_decay`` when the sample's loss fails to improve for ``lr_patience`` evaluations, with
``cosine`` it follows the run's progress to its end; training stops once it falls below
``min_lr``. A run that ends by a limit then scores the whole split once with its last weights
(``val_loss_full``). ``RUN/last.npz`` is written every ``checkpoint_every`` steps and when the run
ends, ``RUN/best.npz`` whenever the sample's loss improves. A checkpoint holds everything the loop
needs to continue (weights, optimizer moments, RNG, data position, carried hidden state,
schedule), so a resumed run produces bitwise the same parameters as one that never stopped.

The run is planned before (``plan.plan_run``); ``train.train`` builds a Trainer and runs it.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .batches import BatchIterator, eval_sample_chars
from .checkpoint import (
    Checkpoint,
    restore_model,
    save_checkpoint,
)
from .config import Config, shape_text
from .console import ProgressBar
from .corpus import load_corpus, split_corpus
from .errors import CorpusError, Interrupted, StopTraining, TrainError
from .evaluate import bits_per_char, score
from .growvocab import grow_params, growth_note
from .memory import available_bytes, format_bytes, training_bytes
from .model import Model
from .optim import from_config as optimizer_from_config
from .parallel import data_parallel
from .plan import Plan
from .runfolder import Signals
from .schedules import from_config as schedule_from_config
from .vocab import Vocab

# Settings that cut the training data differently: the data position restarts at the epoch start.
DATA_LAYOUT = ("batch_size", "seq_length", "val_fraction", "test_fraction")
MAX_BAD_STEPS = 5


@dataclass
class Evaluation:
    """One scoring of the validation split."""

    loss: float  # nats per character
    chars: int  # characters scored
    whole: bool  # every character of the split was scored
    seconds: float


# A max_time run's end is estimated from its speed at the first log line after ESTIMATE_STEPS
# steps, or after ESTIMATE_AFTER seconds if that comes first (a slow model's log line is far off).
ESTIMATE_STEPS = 10
ESTIMATE_AFTER = 5.0


def _by_limit(reason: str | None) -> bool:
    """Whether ``reason`` ends the run as planned (a limit, min_lr), not by a signal."""
    return reason is not None and reason != "interrupted"


def _build_model(cfg: Config, vocab: Vocab, ckpt: Checkpoint | None) -> Model:
    """The model to train: the checkpoint's weights (cast to ``cfg.dtype``; for --init-from,
    fitted to ``vocab`` when the corpus grew it: ``growvocab``), or new ones."""
    if ckpt is None:
        return Model.from_config(cfg, len(vocab))
    model = restore_model(ckpt, cfg.dropout, cfg.dtype)
    if vocab.chars != ckpt.vocab:  # --init-from onto a corpus with new characters
        params = grow_params(
            model.params, ckpt.vocab, vocab.chars, rng=np.random.default_rng(cfg.seed)
        )
        model = Model.from_params(params, cfg.model, cfg.dropout, cfg.residual, cfg.norm)
    return model


def check_memory(cfg: Config, vocab_size: int) -> None:
    """Refuse, before allocating, a run whose arrays would not fit in the memory available."""
    need, have = training_bytes(cfg, vocab_size), available_bytes()
    if have is not None and need > have:
        raise TrainError(
            f"training {shape_text(cfg.to_dict())} with batch_size "
            f"{cfg.batch_size} x seq_length {cfg.seq_length} needs about {format_bytes(need)} "
            f"of memory, but {format_bytes(have)} is available; lower --hidden-size, "
            "--num-layers, --batch-size or --seq-length"
        )


class Trainer:
    """Owns the model, optimizer, data position and schedule of one run, and their checkpoints."""

    def __init__(
        self,
        corpus_path: Path,
        plan: Plan,
        run_dir: Path,
        signals: Signals,
        quiet: bool = False,
        on_evaluation: Callable[[int, float], None] | None = None,
    ):
        self.cfg, self.run_dir, self.quiet, self.signals = plan.cfg, run_dir, quiet, signals
        self.on_evaluation = on_evaluation  # (step, val_loss) of each scheduled evaluation
        self._stop_requested: str | None = None  # the reason StopTraining gave
        self.corpus_path = corpus_path
        self.changed = dict(plan.changed)
        self._resumed_changes = dict(plan.changed)  # reported with the first record
        self._config_unsaved = bool(plan.changed)  # last.npz still holds the old settings
        self.notes: list[str] = []
        self.whole_val: tuple[int, float] | None = None  # (step, loss) on the whole split
        self._whole_unsaved = False  # last.npz was saved before the whole split was scored
        self._show_bars = False  # progress bars: only with the training bar, on a terminal
        self._load_corpus(plan)
        check_memory(self.cfg, len(self.vocab))
        self._build(plan.ckpt)
        if plan.resume:
            try:
                self._restore(plan.ckpt)
            except ValueError as err:  # optimizer state or data position that does not fit
                raise TrainError(f"cannot resume from {plan.ckpt.path}: {err}") from None
        self._good = self._snapshot()
        self._saved_step: int | None = None
        self._budget_noted = False  # whether the schedule was asked about the evaluations left

    def _load_corpus(self, plan: Plan) -> None:
        """The corpus (cached under the run), its splits and the training batches."""
        cfg, ckpt = self.cfg, plan.ckpt
        try:
            corpus = load_corpus(
                self.corpus_path,
                self.run_dir / "cache",
                encoding=cfg.encoding,
                max_vocab=cfg.max_vocab,
                vocab=None if ckpt is None else Vocab(ckpt.vocab),
                grow=cfg.grow_vocab and not plan.resume,
            )
        except CorpusError as err:
            if ckpt is not None and not plan.resume:
                raise TrainError(f"cannot --init-from that checkpoint: {err}") from None
            raise
        self.vocab, self.corpus_sha256 = corpus.vocab, corpus.sha256
        if ckpt is not None and self.vocab.chars != ckpt.vocab:
            self.notes.append(growth_note(ckpt.vocab, self.vocab.chars))
        train, self.val, _ = split_corpus(corpus.data, cfg.val_fraction, cfg.test_fraction)
        self.batches = BatchIterator(
            train, cfg.batch_size, cfg.seq_length, source=f"{self.corpus_path} (training split)"
        )

    def _build(self, ckpt: Checkpoint | None) -> None:
        """Model, optimizer, schedule and a fresh start: step 0, zero state, the seed's RNG."""
        cfg = self.cfg
        self.model = _build_model(cfg, self.vocab, ckpt)
        self.optimizer = optimizer_from_config(cfg, self.model.params)
        self.schedule = schedule_from_config(cfg)
        self.rng = np.random.default_rng(cfg.seed)
        self.state = self.model.zero_state(cfg.batch_size)
        self.step = 0
        self.elapsed = 0.0
        self.best_val_loss: float | None = None
        self.evaluations: list[dict] = []

    # -- checkpoint state ---------------------------------------------------------------------

    def _restore(self, ckpt: Checkpoint) -> None:
        """Continue where ``ckpt`` stopped, with the settings the resume changed applied."""
        meta, cfg = ckpt.meta, self.cfg
        self.optimizer.load_state_dict(ckpt.optimizer)
        if "lr_schedule" not in self.changed:  # else the new schedule starts from this step
            self.schedule.load_state_dict(meta["schedule"])
        self.schedule.resumed(cfg, self.changed)
        self.rng.bit_generator.state = meta["rng"]
        self.step = meta["step"]
        self.elapsed = meta["elapsed"]
        if cfg.max_time and self.schedule.needs_end:
            # The curve's clock is the run's training time; max_time stops each invocation.
            left = max(cfg.max_time - self.elapsed, 0.0)
            self.notes.append(
                f"{cfg.lr_schedule} schedule: {self.elapsed:.1f} s of max_time "
                f"({cfg.max_time:g} s) trained before this resume, so its curve ends "
                f"{left:.1f} s into this run, which stops after {cfg.max_time:g} s of its own"
            )
        self.best_val_loss = meta["best_val_loss"]
        self.evaluations = meta["evaluations"]
        if meta.get("val_loss_full") is not None:  # a resume with no step to do keeps it
            self.whole_val = (self.step, meta["val_loss_full"])
        self._restore_position(meta, ckpt.state)

    def _restore_position(self, meta: dict, state: np.ndarray | None) -> None:
        """The data position and carried state, or the start of the epoch when the data is cut
        differently now (other batch or split settings, an edited corpus)."""
        position, now = meta["data_position"], self.batches.state_dict()
        moved = [
            f"{key} {position.get(key)} -> {now[key]}"
            for key in ("batch_size", "seq_length", "num_chars")
            if position.get(key) != now[key]
        ]
        saved_hash = meta.get("corpus_sha256")
        if saved_hash is not None and saved_hash != self.corpus_sha256:
            moved.append("the corpus was edited")
        if not moved:
            self.batches.load_state_dict(position)
            self.state = state.astype(self.cfg.dtype)
            return
        self.batches.epoch, self.batches.index = int(position["epoch"]), 0
        self.notes.append(
            f"the training data is cut differently ({', '.join(moved)}): the data position "
            f"restarts at the start of the current epoch (epoch {self.batches.epoch:.2f})"
        )

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
                "corpus_sha256": self.corpus_sha256,
                "step": self.step,
                "epoch": self.epoch,
                "elapsed": self.elapsed,
                "best_val_loss": self.best_val_loss,
                "evaluations": self.evaluations,
                "schedule": self.schedule.state_dict(),
                "rng": self.rng.bit_generator.state,
                "data_position": self.batches.state_dict(),
                **self._whole_split_meta(),
            },
        )

    def _whole_split_meta(self) -> dict:
        """``val_loss_full`` for a checkpoint of the weights it was measured on (JSON: finite)."""
        if self.whole_val is None or self.whole_val[0] != self.step:
            return {}
        return {"val_loss_full": self.whole_val[1]} if math.isfinite(self.whole_val[1]) else {}

    def save(self, name: str) -> None:
        with self.signals.deferred():
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
        self.schedule.penalize()
        self._say(
            f"step {self.step + 1}: non-finite loss or gradient, skipped; "
            f"learning rate cut to {self.schedule.lr:.3g}"
        )

    def validate(self, max_batches: int | None = None, label: str = "") -> Evaluation | None:
        """The current weights on the validation split: its first ``max_batches`` batches
        (default ``eval_batches``, the fixed sample; 0 the whole split); None without a split.
        ``label`` names the progress bar shown on a terminal."""
        if len(self.val) < 2:
            return None
        cfg = self.cfg
        batches = cfg.eval_batches if max_batches is None else max_batches
        bar = label if self._show_bars else None
        start = time.perf_counter()
        total, count = score(self.net, self.val, cfg.batch_size, cfg.seq_length, batches, bar)
        seconds = time.perf_counter() - start
        return Evaluation(total / count, count, count == len(self.val) - 1, seconds)

    def _evaluation_plan(self) -> str | None:
        """What the periodic evaluations score, for the first lines of a run."""
        cfg, n = self.cfg, len(self.val) - 1  # characters scored: all but the first
        if n < 1:
            return None
        sample = eval_sample_chars(len(self.val), cfg.batch_size, cfg.seq_length, cfg.eval_batches)
        if sample == n:
            return f"validation: the whole split ({n:,} characters) every {cfg.eval_every} steps"
        return (
            f"validation: every {cfg.eval_every} steps a fixed sample of {sample:,} of its "
            f"{n:,} characters (eval_batches {cfg.eval_batches}); the whole split when the run ends"
        )

    def run(self) -> str:
        """Train until a stop condition, then save last.npz and return the reason; raise
        Interrupted after a signal.

        ``self.net`` runs each step's forward, backward and update meanwhile: in this process, or
        with ``workers`` > 1 a ``parallel.ShardedModel`` that splits each batch's streams over
        worker processes.
        """
        cfg = self.cfg
        metrics_path = self.run_dir / "metrics.jsonl"
        self._show_bars = not self.quiet and sys.stderr.isatty()
        self._bar = ProgressBar(self, disable=not self._show_bars)
        for note in self.notes:  # shown even with --quiet: they say what the run does
            self._bar.write(f"note: {note}")
        self._say(f"metrics: {metrics_path} (a line every {cfg.log_every} steps and evaluation)")
        plan = self._evaluation_plan()
        if plan is not None:
            self._say(plan)
        self._budget_note(0)
        with (
            self.signals.deferred(),
            data_parallel(
                self.model, self.optimizer, cfg.batch_size, cfg.seq_length, cfg.workers
            ) as self.net,
            self._bar,
            open(metrics_path, "a", encoding="utf-8") as metrics,
            np.errstate(all="ignore"),  # a non-finite step is reported once, by recover()
        ):
            self._metrics = metrics
            reason = self._loop()
        if reason == "interrupted":
            raise Interrupted(self.signals.signum, saved=True)
        return reason

    @property
    def val_loss_full(self) -> float | None:
        """last.npz's loss on the whole validation split, when it was scored at the last step."""
        return self.whole_val[1] if self.whole_val and self.whole_val[0] == self.step else None

    def _loop(self) -> str:
        cfg = self.cfg
        window = _Window(cfg.batch_size * cfg.seq_length)
        self._run_start, elapsed_before, steps_before = time.perf_counter(), self.elapsed, self.step
        bad_steps = 0
        reason = self._stop_reason()
        while reason is None:
            progress = self._progress() if self.schedule.needs_end else None  # plateau: unused
            self.optimizer.lr = self.schedule.rate(self.step + 1, progress)
            loss = self.train_step()
            if not math.isfinite(loss):
                bad_steps += 1
                self.recover(bad_steps)
                reason = self._stop_reason()
                continue
            bad_steps = 0
            self.step += 1
            self.elapsed = elapsed_before + time.perf_counter() - self._run_start
            window.add(loss)
            self._bar.advance(self.step - steps_before)
            reason = self._stop_reason()
            scheduled = self.step % cfg.eval_every == 0
            closing = _by_limit(reason) and not scheduled
            running = time.perf_counter() - self._run_start
            if reason is None and cfg.max_time and running >= ESTIMATE_AFTER:
                self._budget_note(self.step - steps_before)
            if scheduled or closing or self.step % cfg.log_every == 0:
                if reason is None:
                    self._budget_note(self.step - steps_before)
                window.close()
                evaluation = None
                if scheduled or closing:
                    evaluation = self._evaluate(final=closing)
                    reason = reason or self._stop_reason()  # it may have ended the run (min_lr)
                whole = self._score_whole_split(evaluation) if _by_limit(reason) else None
                self._report(window, evaluation, whole)
            if self.step % cfg.checkpoint_every == 0:
                self._save_last()
            if self.signals.signum is not None:  # during a save, or it stopped an evaluation
                reason = "interrupted"
        if self._saved_step != self.step or self._config_unsaved or self._whole_unsaved:
            self._save_last()
        return reason

    def _stop_reason(self) -> str | None:
        cfg = self.cfg
        if self.signals.signum is not None:
            return "interrupted"
        if self._stop_requested is not None:
            return self._stop_requested
        if self.schedule.stop:
            return f"learning rate fell below min_lr ({cfg.min_lr:g})"
        if cfg.max_steps and self.step >= cfg.max_steps:
            return f"reached max_steps ({cfg.max_steps})"
        if cfg.max_epochs and self.batches.epoch >= cfg.max_epochs:
            return f"reached max_epochs ({cfg.max_epochs})"
        if cfg.max_time and time.perf_counter() - self._run_start >= cfg.max_time:
            return f"reached max_time ({cfg.max_time:g} s)"
        return None

    def _step_end(self) -> int | None:
        """The step at which max_steps or max_epochs ends the run, whichever comes first."""
        cfg, b = self.cfg, self.batches
        ends = [cfg.max_steps] if cfg.max_steps else []
        if cfg.max_epochs:
            done = b.epoch * b.batches_per_epoch + b.index
            ends.append(self.step + max(cfg.max_epochs * b.batches_per_epoch - done, 0))
        return min(ends) if ends else None

    def planned_steps(self, steps_this_run: int) -> int | None:
        """The step at which the first limit to come ends the run: max_steps, max_epochs, or
        max_time at the speed so far."""
        cfg, end = self.cfg, self._step_end()
        limits = [] if end is None else [end]
        if cfg.max_time and steps_this_run:
            spent = time.perf_counter() - self._run_start
            left = max(cfg.max_time - spent, 0.0)
            limits.append(self.step + int(left * steps_this_run / spent))
        return min(limits) if limits else None

    def _progress(self) -> float | None:
        """How far through the run the next step ends, the schedule's clock: the largest
        fraction of a limit, (step + 1) / the step limit's end or the training time so far /
        max_time (the run's, across resumes, as ``elapsed``); None without a limit."""
        cfg, end = self.cfg, self._step_end()
        fractions = [] if end is None else [(self.step + 1) / max(end, 1)]
        if cfg.max_time:
            fractions.append(self.elapsed / cfg.max_time)
        return max(fractions) if fractions else None

    def _budget_note(self, steps_this_run: int) -> None:
        """Once a run, as soon as its end is known (for max_time, at the first log line or after
        ``ESTIMATE_AFTER`` seconds): a note when it ends before its first evaluation, and the
        schedule's note when the evaluations left are too few for it."""
        if self._budget_noted:
            return
        if self.cfg.max_time and (
            not steps_this_run
            or steps_this_run < ESTIMATE_STEPS
            and time.perf_counter() - self._run_start < ESTIMATE_AFTER
        ):
            return  # too few steps yet to tell the speed
        self._budget_noted = True
        end, every = self.planned_steps(steps_this_run), self.cfg.eval_every
        if end is None:
            return
        notes = [
            self._no_evaluation_note(end, steps_this_run),
            self.schedule.budget_note(end // every - self.step // every, every),
        ]
        for note in filter(None, notes):
            self.notes.append(note)
            self._bar.write(f"note: {note}")

    def _no_evaluation_note(self, end: int, steps_this_run: int) -> str | None:
        """One line when max_time, at the speed of the steps so far, ends the run before its
        first scheduled evaluation: nothing would show how it goes until the closing one."""
        cfg, step_end = self.cfg, self._step_end()
        first = (self.step // cfg.eval_every + 1) * cfg.eval_every
        if not cfg.max_time or (step_end is not None and end >= step_end) or end >= first:
            return None  # no time budget, a step limit ends it first, or it evaluates before
        if len(self.val) < 2:
            return None  # no validation split: no evaluation was ever planned
        return (
            f"at the speed of its first {steps_this_run:,} steps, max_time ({cfg.max_time:g} s) "
            f"ends this run near step {end:,}, before its first evaluation (step {first:,}, "
            f"eval_every {cfg.eval_every}): no validation loss until the closing one; a lower "
            "--eval-every shows how it goes"
        )

    def _evaluate(self, final: bool) -> Evaluation | None:
        """Score the validation sample; scheduled evaluations also drive the learning-rate halving.

        The closing evaluation of a run that stops between scheduled ones is only reported: feeding
        it to the schedule would make a stopped-and-resumed run diverge from an uninterrupted one.
        A signal during the evaluation ends it at once (the run then stops after this step).
        """
        try:
            with self.signals.deferred(False):
                evaluation = self.validate(label="validation")
        except Interrupted:
            return None
        if evaluation is None:
            return None
        val_loss = evaluation.loss
        if not final:
            self.schedule.observe(val_loss)
            if self.on_evaluation is not None:
                try:
                    self.on_evaluation(self.step, val_loss)
                except StopTraining as stop:
                    self._stop_requested = str(stop) or "stopped by on_evaluation"
        self.evaluations.append({"step": self.step, "val_loss": val_loss})
        note = ""
        if math.isfinite(val_loss) and (
            self.best_val_loss is None or val_loss < self.best_val_loss
        ):
            self.best_val_loss = val_loss
            self.save("best.npz")
            note = " (best, saved best.npz)"
        self._say(
            f"step {self.step} epoch {self.epoch:.2f}: val loss {val_loss:.4f} "
            f"({bits_per_char(val_loss):.3f} bpc), lr {self.schedule.lr:.3g}{note}"
        )
        return evaluation

    def _score_whole_split(self, evaluation: Evaluation | None) -> Evaluation | None:
        """The last weights on the whole validation split, when the run ends by a limit: this
        step's evaluation if it already scored all of it, else one more pass. last.npz is saved
        first, so a signal can stop the pass at once (None; the run then exits as interrupted)
        and lose nothing."""
        if evaluation is None or not evaluation.whole:
            if len(self.val) < 2:
                return None
            if self._saved_step != self.step or self._config_unsaved:
                self._save_last()
            try:
                with self.signals.deferred(False):
                    evaluation = self.validate(max_batches=0, label="whole validation split")
            except Interrupted:
                return None
            self._say(
                f"step {self.step}: the whole validation split ({evaluation.chars:,} characters), "
                f"val loss {evaluation.loss:.4f} ({bits_per_char(evaluation.loss):.3f} bpc)"
            )
        self.whole_val = (self.step, evaluation.loss)
        self._whole_unsaved = True  # last.npz is saved again with it when the run ends
        return evaluation

    def _save_last(self) -> None:
        self.save("last.npz")
        self._saved_step, self._config_unsaved, self._whole_unsaved = self.step, False, False
        self._good = self._snapshot()

    def _report(
        self, window: _Window, evaluation: Evaluation | None, whole: Evaluation | None = None
    ) -> None:
        """One line of metrics.jsonl and the progress bar's figures; then the next window starts.
        ``evaluation``: this step's (sampled) one; ``whole``: the closing whole-split score."""
        record = {
            "step": self.step,
            "epoch": round(self.epoch, 4),
            "train_loss": window.train_loss,
            "val_loss": None if evaluation is None else evaluation.loss,
            "lr": self.optimizer.lr,  # the rate of the step just taken
            "chars_per_s": round(window.chars_per_s, 1),
            "elapsed": round(self.elapsed, 3),
            "eval_s": None if evaluation is None else round(evaluation.seconds, 3),
        }
        if whole is not None:
            record["val_loss_full"] = whole.loss
            record["val_chars_full"] = whole.chars
            record["eval_full_s"] = 0.0 if whole is evaluation else round(whole.seconds, 3)
        if self._resumed_changes:
            record["changed"] = self._resumed_changes
            self._resumed_changes = {}
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        self._bar.show(window.train_loss, self.best_val_loss, self.optimizer.lr, self.epoch)
        window.restart()

    def _say(self, message: str) -> None:
        if not self.quiet:
            self._bar.write(message)


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
