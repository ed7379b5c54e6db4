"""The errors a user can meet: each carries one line for stderr, naming the file or option.

They live here, apart from the modules that raise them, so that any module can raise or catch
one without importing the machinery behind it (``runlock`` needs ``TrainError``, not the trainer).
"""

from __future__ import annotations

import signal


class ConfigError(ValueError):
    """An invalid configuration; ``str(err)`` is one line naming the file or option and the key."""


class CorpusError(Exception):
    """A problem with the corpus, as one line naming the file and what to do about it."""


class CheckpointError(Exception):
    """A checkpoint that cannot be written or read; ``str(err)`` is one line naming the file."""


class ArchiveError(ValueError):
    """A file that is not a well-formed stored ``.npz``; one line, naming the member if any."""


class CommandError(ValueError):
    """A bad command or value: one line for the user."""


class TrainError(Exception):
    """A training run that cannot start or continue; the message is one line for the user."""


class StopTraining(Exception):
    """Raised by an ``on_evaluation`` callback to end the run cleanly after this evaluation, as
    a limit would (last.npz saved, the whole split scored); ``str(err)`` is the stop reason."""


class RunLocked(TrainError):
    """Another process is writing into the run folder; the message is one line."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; ``saved`` tells whether ``last.npz`` was saved on the way out."""

    def __init__(self, signum: int, saved: bool = False):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.saved = saved


class OutputError(Exception):
    """A user-named output that rnncli refuses to write (one of the command's own inputs, a
    disk device, a FIFO nobody reads); ``str(err)`` is one line naming the path."""
