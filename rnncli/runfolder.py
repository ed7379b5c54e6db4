"""The run folder and the signals over a training's life.

``existing_run_files`` decides what an earlier run in the folder allows (``--resume``, ``--force``);
``keep_metrics_until`` trims a killed run's records past its last checkpoint; ``Signals`` defers
SIGINT/SIGTERM while a step or a save runs, so no checkpoint is cut in half.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
from collections.abc import Iterator
from pathlib import Path

from .errors import Interrupted, TrainError
from .fileio import atomic_write

# Files of a run; --force removes exactly these. Only the ones holding weights make a folder a
# run that a new one must not replace without --force.
RUN_FILES = ("config.yaml", "metrics.jsonl", "last.npz", "best.npz")
WEIGHT_FILES = ("last.npz", "best.npz")


def owned_files(run_dir: Path) -> list[Path]:
    """The files in ``run_dir`` that rnncli writes and reads back (the run's files, its lock,
    its corpus cache): a user-named output must never replace one of them."""
    owned = [run_dir / name for name in (*RUN_FILES, "rnn.lock")]
    cache = run_dir / "cache"
    if cache.is_dir():
        owned.append(cache)
        owned.extend(sorted(cache.iterdir())[:1000])  # a cache holds a few files per corpus
    return owned


def existing_run_files(run_dir: Path, resume: bool, force: bool) -> list[str]:
    """The files of an earlier run in ``run_dir``, refusing to replace one holding weights unless
    told to continue (--resume) or to start over (--force)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainError(f"{run_dir} is not a folder")
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if resume and not (run_dir / "last.npz").is_file():
        raise TrainError(f"{run_dir}: no last.npz to resume from")
    weights = [name for name in existing if name in WEIGHT_FILES]
    if weights and not (resume or force):
        raise TrainError(
            f"{run_dir} already holds a run ({', '.join(existing)}); "
            "pass --resume to continue it or --force to start over"
        )
    return existing


def keep_metrics_until(path: Path, step: int) -> None:
    """Drop the records a killed run wrote after its last checkpoint: the resumed run writes
    those steps again, and a step has at most one record."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as old, atomic_write(path, text=True) as new:
        for line in old:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                if json.loads(line).get("step", math.inf) <= step:
                    new.write(line if line.endswith("\n") else line + "\n")


class Signals:
    """SIGINT/SIGTERM over a training's whole life.

    While a step or a save runs (``deferred``) the first signal only sets ``signum``, which the
    loop checks after each step, so a checkpoint is never cut in half. Anywhere else (encoding
    the corpus, an evaluation), and for a second signal, it raises ``Interrupted`` at once: the
    unwinding removes every temporary file on its way.
    """

    def __init__(self):
        self.signum: int | None = None
        self._deferred = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        first = self.signum is None
        if first:
            self.signum = signum
        if not (first and self._deferred):
            raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self, deferred: bool = True) -> Iterator[None]:
        before, self._deferred = self._deferred, deferred
        try:
            if not deferred and self.signum is not None:
                raise Interrupted(self.signum)
            yield
        finally:
            self._deferred = before

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
