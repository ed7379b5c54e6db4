"""Opening and parsing files that strangers hand us, with bounds fixed before anything is read.

A shared checkpoint or config must not make rnncli block (a FIFO), read without end (a device)
or recurse without end (deeply nested JSON), whatever the file says about itself.
"""

from __future__ import annotations

import json
import os
import re
import reprlib
import stat
from typing import Any, BinaryIO


class UntrustedFileError(ValueError):
    """A file refused before or while parsing; ``str(err)`` is one line without the path."""


def open_regular(path: str, what: str) -> BinaryIO:
    """``path`` opened for binary reading if it is a regular file; ``what`` names it in errors.

    Opening without blocking and checking the opened file (not the name) means a FIFO or
    device is refused at once, and no rename between check and open can slip one in.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise UntrustedFileError(f"is a directory, not a {what}")
        if not stat.S_ISREG(mode):
            raise UntrustedFileError(f"not a regular file (a FIFO, socket or device): not a {what}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(f: BinaryIO, limit: int, what: str) -> bytes:
    """All of ``f`` if it holds at most ``limit`` bytes; reads at most ``limit + 1``."""
    data = f.read(limit + 1)
    if len(data) > limit:
        raise UntrustedFileError(f"{what} is larger than {limit:,} bytes")
    return data


# A JSON string (escapes included) or one bracket; text between them cannot change the depth.
_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


# A JSON escape of a UTF-16 surrogate: only a pair of them is a character.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def loads_json(text: str, max_depth: int) -> Any:
    """``json.loads`` of ``text`` once a linear scan has shown it nests at most ``max_depth``
    levels (the parser recurses once per level); NaN and Infinity are refused, and so are
    strings holding a lone surrogate (not text: it cannot be printed or written as UTF-8).

    Raises ValueError (json.JSONDecodeError is one) for anything else.
    """
    depth = 0
    for token in _JSON_TOKENS.finditer(text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            if depth > max_depth:
                raise ValueError(f"nested deeper than {max_depth} levels")
        elif bracket in "]}":
            depth -= 1
    value = json.loads(text, parse_constant=_refuse_constant)
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a string holds a lone surrogate, which is not text") from None
    return value


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to about ``limit`` characters, built without expanding big values."""
    bounded = reprlib.Repr()  # it stops after a few levels and items: a big value costs nothing
    bounded.maxlevel, bounded.maxstring, bounded.maxother = 3, limit, limit
    shown = bounded.repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def clip(text: str, limit: int = 120) -> str:
    """``text`` (a message, not a value) on one line, cut to at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
