"""The project's ways to write a file, and its one test of an encoding name.

``atomic_write`` writes beside the target and renames over it, so a reader (or a crash, a kill
-9, a full disk) sees the old file or the new one, never half of one. Its temporaries are named
``.<target name>.<pid>.<random>.tmp``; ``remove_temporaries`` clears the ones a kill -9 left
behind, and only those: a temporary whose process still runs (a report being written into a run
folder while a training starts there) is left to it.
It is for the files rnncli owns (a run folder's checkpoints, config, cache).

``write_user_output`` is for a path the user names (``--out``): a regular file is still
replaced atomically, but a symlink is written through, a terminal, ``/dev/null`` or a FIFO is
written to and never replaced, and the command's own inputs are refused.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import glob
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from .errors import OutputError


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
    prefix = f".{target.name}.{os.getpid()}."
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=".tmp")
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


def write_user_output(
    path: str | os.PathLike, data: bytes | str, inputs: Iterable[str | os.PathLike] = ()
) -> None:
    """Write ``data`` (str as UTF-8) to ``path``, a file the user named; OutputError (one line)
    when it is refused, OSError when the system fails.

    - a regular file, or a new path: replaced atomically (``atomic_write``);
    - a symlink: its final target gets the same treatment, the link stays;
    - a character device (a terminal, ``/dev/null``) or a FIFO: written to in place, never
      replaced by a regular file; a FIFO that no process reads is refused, not waited on;
    - a block device, a socket or a folder: refused;
    - one of ``inputs`` (the files the command read or a run folder rnncli owns), however it
      is named (a link, ``..``, another hard link): refused, so nothing read is lost.
    """
    data = data.encode("utf-8") if isinstance(data, str) else data
    shown, target = os.fspath(path), os.path.realpath(path)
    mode = check_user_output(path, inputs)
    if mode is None or stat.S_ISREG(mode):
        with atomic_write(target) as f:
            f.write(data)
    else:  # a character device or a FIFO: check_user_output refused the rest
        _write_in_place(shown, data)


def check_user_output(
    path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()
) -> int | None:
    """OutputError now for what ``write_user_output(path, ..., inputs)`` would refuse, so that a
    command can refuse before its long part; the mode of what ``path`` names (None: nothing)."""
    shown = os.fspath(path)
    target = os.path.realpath(path)  # through every symlink; a new path stays as given
    try:
        found = os.stat(path)  # through links too; /dev/stdout may be a pipe realpath cannot name
    except FileNotFoundError:
        found = None
    _refuse_inputs(shown, target, found, inputs)
    mode = found.st_mode if found is not None else None
    if mode is None or stat.S_ISREG(mode):
        if not os.path.isdir(os.path.dirname(target) or "."):
            raise OutputError(f"{shown}: no such folder to write into")
    elif not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        kind = "a folder" if stat.S_ISDIR(mode) else "a disk device or socket"
        raise OutputError(f"{shown}: is {kind}; name a file to write")
    return mode


def _refuse_inputs(
    shown: str, target: str, target_stat: os.stat_result | None, inputs: Iterable
) -> None:
    for given in inputs:
        same = os.path.realpath(given) == target
        if not same and target_stat is not None:
            with contextlib.suppress(OSError):
                same = os.path.samestat(os.stat(given), target_stat)
        if same:
            raise OutputError(
                f"{shown}: is {os.fspath(given)}, which this command reads; "
                "name another file to write"
            )


def _write_in_place(shown: str, data: bytes) -> None:
    """Write ``data`` to the device or FIFO ``shown`` as it is: opened without creating or
    truncating, and without blocking on a FIFO that has no reader."""
    try:
        fd = os.open(shown, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as err:
        if err.errno == errno.ENXIO:
            raise OutputError(f"{shown}: a FIFO that no process reads") from None
        raise
    with os.fdopen(fd, "wb") as f:
        os.set_blocking(fd, True)
        f.write(data)


def remove_temporaries(folder: str | os.PathLike) -> None:
    """Delete the temporaries of ``atomic_write``s into ``folder`` that a kill cut short.

    Call it only while no other process writes into ``folder`` (a training holds its lock).
    """
    for stale in glob.glob(os.path.join(glob.escape(os.fspath(folder)), ".*.tmp")):
        if _writer_alive(os.path.basename(stale)):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)


def _writer_alive(name: str) -> bool:
    """Whether the process that named the temporary ``name`` still runs (mkstemp's random part
    holds no dot, so the PID is the third field from the end)."""
    parts = name.split(".")
    if len(parts) < 4 or not parts[-3].isdigit() or int(parts[-3]) == os.getpid():
        return False
    try:
        os.kill(int(parts[-3]), 0)
    except (ProcessLookupError, OverflowError):  # gone, or a PID no process can have
        return False
    except PermissionError:  # alive, under another user
        return True
    return True


def text_encoding(name: str) -> str | None:
    """The codec's canonical name if ``name`` is a text encoding Python knows, else None.

    Codecs such as base64 or rot13 exist but do not turn bytes into text.
    """
    try:
        info = codecs.lookup(name)
    except (LookupError, TypeError, ValueError):
        return None
    return info.name if getattr(info, "_is_text_encoding", True) else None


def decode_error(err: UnicodeError, start: int = 0, encoding: str = "utf-16") -> str:
    """Where and why decoding ``encoding`` failed, for a message: ``err`` raised on bytes that
    begin at byte offset ``start`` of the file. A codec may raise plain UnicodeError (UTF-16 or
    UTF-32 with no byte-order mark), which names no byte."""
    if not isinstance(err, UnicodeDecodeError):
        return f"({err}; give the byte order, e.g. --encoding {encoding}-le)"
    bad = f"byte 0x{err.object[err.start]:02x}, " if err.start < len(err.object) else ""
    return f"at byte offset {start + err.start} ({bad}{err.reason})"
