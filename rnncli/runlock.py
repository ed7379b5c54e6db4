"""One writer per run folder: an exclusive ``flock`` on ``RUN/rnn.lock`` for a training's life.

The kernel releases the lock when the process ends, however it ends, so a killed run never
leaves a stale lock behind; the file itself stays and only says which process held it last.
Readers (``sample``, ``eval``, ``info``) never take it: checkpoints are replaced atomically, so
they always see a complete one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .errors import RunLocked

LOCK_NAME = "rnn.lock"
# Files that hold weights: a folder we created is removed after a failure only without them.
_WEIGHTS = ("last.npz", "best.npz")


def _holder(fd: int) -> str:
    """The PID the lock file records, as the holder wrote it after taking the lock."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 32).decode("ascii", "replace").strip()
    return f"PID {text}" if text.isdigit() else "another process (PID not yet recorded)"


def _open_lock(run_dir: Path) -> int:
    if run_dir.exists() and not run_dir.is_dir():
        raise RunLocked(f"{run_dir} is not a folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    return os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the run folder's lock (creating the folder if needed) or raise ``RunLocked`` at once.

    If the block fails and the folder was created here, the folder goes again unless it holds
    a checkpoint by then, so a run that never saved one can simply be started again.
    """
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    fd = _open_lock(run_dir)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(
                f"{run_dir} is in use by another training ({_holder(fd)}); "
                "wait for it to end, or use another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        try:
            yield run_dir
        except BaseException:
            if created and not any((run_dir / name).exists() for name in _WEIGHTS):
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
    finally:
        os.close(fd)  # releases the lock
