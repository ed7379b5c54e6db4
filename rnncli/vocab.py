"""The vocabulary: the sorted distinct characters of a corpus, and the code-point helpers.

Characters, not bytes: id ``i`` is the ``i``-th distinct code point of the corpus. Conversions
go through one UTF-32 buffer and whole-array numpy operations, never a Python loop per character.
"""

from __future__ import annotations

import numpy as np

from .errors import CorpusError

NUM_CODEPOINTS = 0x110000


def vocab_dtype(size: int) -> np.dtype:
    """Smallest unsigned dtype holding ids 0..size-1: uint8, uint16 or uint32."""
    if size <= 1 << 8:
        return np.dtype(np.uint8)
    if size <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def codepoints(text: str) -> np.ndarray:
    """(len(text),) uint32 code points; a view of one UTF-32 buffer, no per-character loop."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def text_of(codepoints: np.ndarray) -> str:
    return np.asarray(codepoints, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")


def describe_chars(chars: list[str], limit: int = 10) -> str:
    shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in chars[:limit])
    return shown + (f", ... and {len(chars) - limit} more" if len(chars) > limit else "")


class Vocab:
    """The sorted distinct characters of a corpus; id ``i`` is ``chars[i]``.

    ``Vocab(chars)`` sorts and de-duplicates ``chars``. It is saved with a model as uint32 code
    points (``to_array``) and restored with ``from_array``, which insists on a strictly
    increasing array so that a corrupted vocabulary cannot silently permute the ids.
    """

    def __init__(self, chars: str):
        cps = np.unique(codepoints(chars))
        if cps.size == 0:
            raise ValueError("a vocabulary needs at least one character")
        self._cps = cps
        self._cps.flags.writeable = False
        self.chars = text_of(cps)
        self.dtype = vocab_dtype(cps.size)
        # id of every code point up to the largest one, -1 elsewhere; the extra last entry is
        # where np.take(mode="clip") sends larger code points. At most 0x110001 int32 (4.4 MB).
        self._lut = np.full(int(cps[-1]) + 2, -1, dtype=np.int32)
        self._lut[cps] = np.arange(cps.size, dtype=np.int32)

    @classmethod
    def from_array(cls, codepoints: np.ndarray) -> Vocab:
        """Inverse of ``to_array``; ValueError unless 1-D strictly increasing code points, none a
        surrogate."""
        a = np.asarray(codepoints)
        if a.ndim != 1 or a.size == 0 or a.dtype.kind not in "iu":
            raise ValueError(f"a vocabulary must be a non-empty 1-D integer array, got {a.dtype}")
        if a.dtype.kind == "u" and a.max() >= NUM_CODEPOINTS:
            raise ValueError("vocabulary code points must be in 0..0x10FFFF")  # before int64 wraps
        a = a.astype(np.int64)
        if a[0] < 0 or a[-1] >= NUM_CODEPOINTS or np.any(np.diff(a) <= 0):
            raise ValueError("vocabulary code points must be strictly increasing in 0..0x10FFFF")
        surrogates = (a >= 0xD800) & (a <= 0xDFFF)
        if surrogates.any():  # not characters: no text encodes them, so sampling could not print
            raise ValueError(f"vocabulary holds a surrogate code point U+{a[surrogates][0]:04X}")
        return cls(text_of(a))

    def to_array(self) -> np.ndarray:
        """(V,) uint32 code points, the form saved in checkpoints."""
        return self._cps.astype(np.uint32)

    def __len__(self) -> int:
        return int(self._cps.size)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and np.array_equal(self._cps, other._cps)

    def __repr__(self) -> str:
        return f"Vocab({len(self)} characters, {self.dtype})"

    def _ids(self, cps: np.ndarray) -> np.ndarray:
        """int32 id per code point, -1 for code points outside the vocabulary."""
        return np.take(self._lut, cps, mode="clip")

    def _contains(self, cps: np.ndarray) -> np.ndarray:
        return self._ids(cps) >= 0

    def unknown(self, text: str) -> list[str]:
        """Sorted distinct characters of ``text`` that are not in the vocabulary."""
        cps = codepoints(text)
        return list(text_of(np.unique(cps[~self._contains(cps)])))

    def drop_unknown(self, text: str) -> str:
        """``text`` without the characters that are not in the vocabulary."""
        cps = codepoints(text)
        return text_of(cps[self._contains(cps)])

    def encode(self, text: str) -> np.ndarray:
        """(len(text),) np.intp ids; CorpusError listing any characters not in the vocabulary."""
        ids = self._ids(codepoints(text))
        if np.any(ids < 0):
            missing = self.unknown(text)
            raise CorpusError(
                f"{len(missing)} distinct characters are not in the vocabulary of {len(self)}: "
                f"{describe_chars(missing)}"
            )
        return ids.astype(np.intp)

    def decode(self, ids: np.ndarray) -> str:
        """The characters of integer ``ids`` (any shape, read in C order)."""
        ids = np.ravel(ids)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise ValueError(f"ids must be in 0..{len(self) - 1}")
        return text_of(self._cps[ids])
