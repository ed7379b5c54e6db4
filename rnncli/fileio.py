"""The project's one way to write a file, and its one test of an encoding name.

``atomic_write`` writes beside the target and renames over it, so a reader (or a crash, a kill
-9, a full disk) sees the old file or the new one, never half of one. Its temporaries are named
``.<target name>.<random>.tmp``; ``remove_temporaries`` clears the ones a kill -9 left behind.
"""

from __future__ import annotations

import codecs
import contextlib
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_write(target: str | os.PathLike, text: bool = False) -> Iterator[IO]:
    """A file object (binary, or UTF-8 text) whose content replaces ``target`` only if the block
    ends without an exception; on any exception, a signal's included, the temporary goes."""
    target = Path(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; these are ordinary files
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(target.parent)


def _fsync_folder(folder: Path) -> None:
    # Makes the rename survive a power cut. Best effort: some systems cannot sync a folder.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_temporaries(folder: str | os.PathLike) -> None:
    """Delete the temporaries of ``atomic_write``s into ``folder`` that a kill cut short.

    Call it only while no other process writes into ``folder`` (a training holds its lock).
    """
    for stale in glob.glob(os.path.join(glob.escape(os.fspath(folder)), ".*.tmp")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)


def text_encoding(name: str) -> str | None:
    """The codec's canonical name if ``name`` is a text encoding Python knows, else None.

    Codecs such as base64 or rot13 exist but do not turn bytes into text.
    """
    try:
        info = codecs.lookup(name)
    except (LookupError, TypeError, ValueError):
        return None
    return info.name if getattr(info, "_is_text_encoding", True) else None
