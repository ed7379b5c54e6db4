"""Per-character and per-line surprisal as tab-separated tables or JSON lists, written row by
row so that a large file's table never has to be held in memory as text."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from .evaluate import LineScore, line_surprisal, most_surprising, text_surprisal
from .text import visible

CHAR_COLUMNS = ("index", "char", "bits")
LINE_COLUMNS = ("line", "bits_per_char", "chars", "text")


def char_rows(text: str, bits: np.ndarray) -> Iterator[tuple]:
    """(index in the text, the character, bits) for every scored character."""
    for i in np.flatnonzero(~np.isnan(bits)):
        yield int(i), text[i], float(bits[i])


def line_rows(lines: Iterable[LineScore]) -> Iterator[tuple]:
    """(line number, mean bits per character or None, characters scored, text) per line."""
    for s in lines:
        yield s.number, None if math.isnan(s.bits) else s.bits, s.chars, s.text


def write_table(
    rows: Iterable[tuple], columns: tuple[str, ...], as_json: bool, write: Callable[[str], None]
) -> None:
    """A header and one tab-separated line per row (text cells through ``visible``: a space
    in a character cell as \\s; floats to 4 decimals; None as an empty cell), or a JSON list of
    objects keyed by ``columns``, one per line."""
    if as_json:
        write("[")
        for n, row in enumerate(rows):
            write(("\n" if n == 0 else ",\n") + json.dumps(dict(zip(columns, row, strict=True))))
        write("\n]\n")
        return
    write("\t".join(columns) + "\n")
    for row in rows:
        write("\t".join(_cell(value, name) for value, name in zip(row, columns, strict=True)))
        write("\n")


def _cell(value, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, str):
        return visible(value, space=column == "char")
    return str(value)


def surprisal_table(
    model,
    vocab,
    text: str,
    streams: int,
    per_line: bool,
    top: int | None,
    progress=None,
    dynamic=None,
) -> tuple[Iterator[tuple], tuple]:
    """The rows and columns of ``rnn eval --per-char`` (every character's surprisal) or
    ``--per-line`` (the lines from most to least surprising, the first ``top`` of them);
    ``dynamic``: a ``dynamic.DynamicSettings`` to score by dynamic evaluation, or None."""
    bits = text_surprisal(model, vocab, text, streams, progress, dynamic)
    if per_line:
        ranked = most_surprising(line_surprisal(text, bits))
        return line_rows(ranked if top is None else ranked[:top]), LINE_COLUMNS
    return char_rows(text, bits), CHAR_COLUMNS
