"""The training job: ``train`` carries out a planned run in its folder and returns its result.

A run is planned first (``plan.plan_run``: the one place the configuration is resolved,
``--resume``'s and ``--init-from``'s rules included), then ``train`` checks everything (corpus,
cache, configuration, memory) before it touches the folder, and runs the ``trainer.Trainer``. The
caller holds the run folder's lock (``runlock.run_lock``) around both. How a step works is told in
``trainer``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .config import dump_yaml
from .fileio import remove_temporaries
from .plan import Plan
from .runfolder import Signals, existing_run_files, keep_metrics_until
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
