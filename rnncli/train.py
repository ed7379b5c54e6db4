"""The training job: ``train`` carries out a planned run in its folder and returns its result.

A run is planned first (``plan.plan_run``: the one place the configuration is resolved,
``--resume``'s and ``--init-from``'s rules included), then ``train`` checks everything (corpus,
cache, configuration, memory) before it touches the folder, and runs the ``trainer.Trainer``. The
caller holds the run folder's lock (``runlock.run_lock``) around both. How a step works is told in
``trainer``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .config import dump_yaml
from .errors import ConfigError
from .fileio import remove_temporaries
from .plan import Plan, plan_run
from .runfolder import Signals, existing_run_files, keep_metrics_until
from .runlock import run_lock
from .trainer import Trainer


@dataclass
class TrainResult:
    """What a finished run did: where it stopped and why, and its validation losses."""

    run_dir: Path
    step: int
    epoch: float
    best_val_loss: float | None
    reason: str
    val_loss_full: float | None = None  # last.npz's weights on the whole validation split
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The result as JSON-able values (``rnn train --json``): losses in nats per character."""
        last = self.run_dir / "last.npz"
        best = self.run_dir / "best.npz"
        return {
            "run_dir": str(self.run_dir),
            "step": self.step,
            "epoch": self.epoch,
            "reason": self.reason,
            "best_val_loss": self.best_val_loss,
            "val_loss_full": self.val_loss_full,
            "last_checkpoint": str(last),
            "best_checkpoint": None if self.best_val_loss is None else str(best),
            "notes": list(self.notes),
        }


def train(
    corpus_path: str | Path,
    plan: Plan,
    run_dir: str | Path,
    force: bool = False,
    quiet: bool = False,
    on_evaluation: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Carry out ``plan`` in ``run_dir`` (whose lock the caller holds); see the module docstring.

    Everything is checked (corpus, cache, configuration, memory) before anything of an earlier
    run is removed. A signal raises ``Interrupted``: after training started, last.npz is saved
    first; before that nothing of the run folder changed. ``on_evaluation(step, val_loss)`` is
    called after each scheduled evaluation; raising ``errors.StopTraining`` there ends the run
    cleanly, as a limit would.
    """
    corpus_path, run_dir = Path(corpus_path), Path(run_dir)
    existing = existing_run_files(run_dir, plan.resume, force)
    with Signals() as signals:
        trainer = Trainer(corpus_path, plan, run_dir, signals, quiet, on_evaluation)
        with signals.deferred():
            if plan.resume:
                keep_metrics_until(run_dir / "metrics.jsonl", trainer.step)
            else:  # --force, or files of a run that never saved weights
                for name in existing:
                    (run_dir / name).unlink()
            remove_temporaries(run_dir)
            remove_temporaries(run_dir / "cache")
            dump_yaml(plan.cfg, run_dir / "config.yaml")
        reason = trainer.run()
    return TrainResult(
        run_dir,
        trainer.step,
        trainer.epoch,
        trainer.best_val_loss,
        reason,
        trainer.val_loss_full,
        trainer.notes,  # already shown before training
    )


def default_run_dir(corpus_path: str | Path) -> Path:
    """Where a run goes when no folder is named: ``runs/<corpus name without suffix>``."""
    return Path("runs") / Path(corpus_path).stem


def _note_on_stderr(note: str) -> None:
    print(f"note: {note}", file=sys.stderr)


def run_training(
    corpus_path: str | Path,
    run_dir: str | Path,
    overrides: Mapping | None = None,
    config_path: str | Path | Mapping | None = None,
    resume: bool = False,
    init_from: str | Path | None = None,
    force: bool = False,
    quiet: bool = False,
    note: Callable[[str], None] = _note_on_stderr,
) -> TrainResult:
    """A run as ``rnn train`` makes it and ``rnncli.train`` too: take ``run_dir``'s lock, plan
    the run (``plan.plan_run``: defaults < ``config_path``, a YAML file or a mapping of
    settings, < ``overrides``; or ``--resume``'s and ``--init-from``'s rules), tell each of its
    notes to ``note``, then ``train`` it."""
    if resume and (config_path is not None or init_from is not None):
        raise ConfigError(
            "--resume continues a run with its own config and weights; "
            "drop --config/--init-from and override single settings with options"
        )
    run_dir = Path(run_dir)
    with run_lock(run_dir):
        plan = plan_run(
            run_dir,
            overrides or {},
            Path(config_path) if isinstance(config_path, str) else config_path,
            resume,
            None if init_from is None else Path(init_from),
        )
        for line in plan.notes:
            note(line)
        return train(corpus_path, plan, run_dir, force=force, quiet=quiet)
