"""Corpus pipeline: text file -> vocabulary -> compact ids on disk -> truncated-BPTT batches.

Design
------
* Characters, not bytes. The file is decoded (UTF-8 by default, any text codec by name) from
  raw bytes with an incremental decoder, so nothing translates newlines (as ``newline=""``)
  or normalises anything: ``\\r\\n``, tabs, CJK, emoji and combining marks round-trip exactly.
  The vocabulary is the sorted set of distinct code points; id ``i`` is the ``i``-th of them.
* Bounded memory. Two streaming passes read ``chunk_size`` bytes at a time (a multi-byte
  character split between two reads is held back by the decoder). Each chunk becomes a uint32
  code-point array (``str.encode("utf-32-le")`` + ``np.frombuffer``) and is processed with
  whole-array numpy operations, never a Python loop per character:
  pass 1 validates (decode errors, NUL bytes), hashes the bytes and marks the code points seen
  in a 0x110000-entry bool table; pass 2 maps code points to ids through a lookup table
  (``np.take``) and appends them to a temp file as uint8 (V <= 256), uint16 (V <= 65536) or
  uint32. Peak memory is O(chunk_size + 0x110000), independent of the corpus size.
* Cache. The ids file and a JSON sidecar (key, vocabulary, length, CRC-32 of the ids) live in a
  caller-given folder: one pair per file for its own vocabulary, shared by training, resuming
  and scoring a split, and one per foreign vocabulary (fine-tuning). The key is the resolved
  path, size, mtime_ns, encoding and out-of-vocabulary mode; the sidecar also holds the SHA-256
  of the bytes. An edited or touched corpus is re-encoded; an unchanged one is reused after one
  hashing pass and one CRC pass over the ids (a damaged ids file, or one holding an id beyond the
  vocabulary, is encoded again). Files are written with ``fileio.atomic_write``; all validation
  happens before anything is written, and a failure (or a signal) midway leaves no file behind.
* Training reads the ids through a read-only ``np.memmap``. Pages read through a file mapping
  count towards the process's RSS, so the iterators drop the mapping's resident pages
  (``madvise(MADV_DONTNEED)``; the OS page cache keeps them) after every 256 KiB they read:
  RSS stays flat over a corpus of any size.
* Splits: contiguous ``train | val | test``, validation and test taken from the end.
* Batches: ``B`` streams, each a contiguous ``1/B`` of the split, read in windows of ``T``
  inputs with targets shifted by one; batch ``k + 1`` continues batch ``k`` in every stream so
  the hidden state carries over. All batches are ``np.intp`` arrays of shape (B, T).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import mmap
import os
import re
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .fileio import atomic_write, text_encoding

CHUNK_SIZE = 1 << 16  # bytes read per step while encoding (small: a 1 MB corpus already streams)
OOV_MODES = ("error", "skip", "grow")
_NUM_CODEPOINTS = 0x110000
_CACHE_FORMAT = 1
_RELEASE_BYTES = 1 << 18  # drop a memory map's resident pages after reading this much
_CHECK_BLOCK = 1 << 20  # bytes of the ids file read at a time to verify it
_MAX_CACHED = 100  # sidecars looked at in a cache folder: one per corpus and vocabulary


class CorpusError(Exception):
    """A problem with the corpus, as one line naming the file and what to do about it."""


def vocab_dtype(size: int) -> np.dtype:
    """Smallest unsigned dtype holding ids 0..size-1: uint8, uint16 or uint32."""
    if size <= 1 << 8:
        return np.dtype(np.uint8)
    if size <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def _codepoints(text: str) -> np.ndarray:
    """(len(text),) uint32 code points; a view of one UTF-32 buffer, no per-character loop."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def _text(codepoints: np.ndarray) -> str:
    return np.asarray(codepoints, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")


def _describe(chars: list[str], limit: int = 10) -> str:
    shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in chars[:limit])
    return shown + (f", ... and {len(chars) - limit} more" if len(chars) > limit else "")


class Vocab:
    """The sorted distinct characters of a corpus; id ``i`` is ``chars[i]``.

    ``Vocab(chars)`` sorts and de-duplicates ``chars``. It is saved with a model as uint32 code
    points (``to_array``) and restored with ``from_array``, which insists on a strictly
    increasing array so that a corrupted vocabulary cannot silently permute the ids.
    """

    def __init__(self, chars: str):
        cps = np.unique(_codepoints(chars))
        if cps.size == 0:
            raise ValueError("a vocabulary needs at least one character")
        self._cps = cps
        self._cps.flags.writeable = False
        self.chars = _text(cps)
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
        if a.dtype.kind == "u" and a.max() >= _NUM_CODEPOINTS:
            raise ValueError("vocabulary code points must be in 0..0x10FFFF")  # before int64 wraps
        a = a.astype(np.int64)
        if a[0] < 0 or a[-1] >= _NUM_CODEPOINTS or np.any(np.diff(a) <= 0):
            raise ValueError("vocabulary code points must be strictly increasing in 0..0x10FFFF")
        surrogates = (a >= 0xD800) & (a <= 0xDFFF)
        if surrogates.any():  # not characters: no text encodes them, so sampling could not print
            raise ValueError(f"vocabulary holds a surrogate code point U+{a[surrogates][0]:04X}")
        return cls(_text(a))

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
        cps = _codepoints(text)
        return list(_text(np.unique(cps[~self._contains(cps)])))

    def drop_unknown(self, text: str) -> str:
        """``text`` without the characters that are not in the vocabulary."""
        cps = _codepoints(text)
        return _text(cps[self._contains(cps)])

    def encode(self, text: str) -> np.ndarray:
        """(len(text),) np.intp ids; CorpusError listing any characters not in the vocabulary."""
        ids = self._ids(_codepoints(text))
        if np.any(ids < 0):
            missing = self.unknown(text)
            raise CorpusError(
                f"{len(missing)} distinct characters are not in the vocabulary of {len(self)}: "
                f"{_describe(missing)}"
            )
        return ids.astype(np.intp)

    def decode(self, ids: np.ndarray) -> str:
        """The characters of integer ``ids`` (any shape, read in C order)."""
        ids = np.ravel(ids)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise ValueError(f"ids must be in 0..{len(self) - 1}")
        return _text(self._cps[ids])


@dataclass(eq=False)
class Corpus:
    """An encoded text file: ``data`` holds the ids of its characters (read-only memmap).

    ``skipped`` maps each character dropped by ``oov="skip"`` to its count (empty otherwise);
    ``from_cache`` tells whether the ids came from the cache without re-encoding; ``sha256`` is
    the hex SHA-256 of the file's bytes.
    """

    path: Path
    vocab: Vocab
    data: np.memmap
    cache_file: Path
    from_cache: bool
    skipped: dict[str, int] = field(default_factory=dict)
    sha256: str = ""  # of the file's bytes: what checkpoints record as corpus_sha256


def _check_encoding(path: Path, encoding: str) -> str:
    name = text_encoding(encoding)
    if name is None:
        raise CorpusError(
            f"{path}: unknown encoding {encoding!r}: not a text encoding Python knows "
            "(e.g. utf-8, latin-1, utf-16, cp1252)"
        )
    return name


def _open(path: Path):
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise CorpusError(f"{path}: is a directory, not a text file")
        if not stat.S_ISREG(st.st_mode):
            raise CorpusError(f"{path}: not a regular file")
        fh = open(path, "rb")  # noqa: SIM115 - returned to a with-statement
    except FileNotFoundError:
        raise CorpusError(f"{path}: no such file") from None
    except PermissionError:
        raise CorpusError(f"{path}: cannot read the file (permission denied)") from None
    except OSError as e:
        raise CorpusError(f"{path}: cannot read the file ({e.strerror or e})") from None
    if st.st_size == 0:
        fh.close()
        raise CorpusError(f"{path}: the file is empty")
    return fh


def _read(fh, size: int, path: Path) -> bytes:
    try:
        return fh.read(size)
    except OSError as e:
        raise CorpusError(f"{path}: cannot read the file ({e.strerror or e})") from None


def _hash(fh, path: Path, chunk_size: int) -> str:
    hasher = hashlib.sha256()
    while block := _read(fh, chunk_size, path):
        hasher.update(block)
    return hasher.hexdigest()


def _bytes_to_decode(encoding: str, state: tuple, block: bytes, nchars: int) -> int:
    """Fewest bytes of ``block`` that yield ``nchars`` characters from decoder ``state``.

    Binary search over prefixes: used only to report an error's byte offset.
    """
    lo, hi = 0, len(block)
    while lo < hi:
        mid = (lo + hi) // 2
        decoder = codecs.getincrementaldecoder(encoding)()
        decoder.setstate(state)
        if len(decoder.decode(block[:mid])) >= nchars:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _encoded_width(encoding: str, char: str) -> int:
    encoder = codecs.getincrementalencoder(encoding)()
    encoder.encode("")  # emits any byte-order mark, which must not be counted
    return len(encoder.encode(char))


def _chunks(fh, path: Path, encoding: str, chunk_size: int, hasher=None) -> Iterator[str]:
    """Decoded text of ``fh``, ``chunk_size`` bytes at a time; CorpusError on bad bytes or NUL."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    pos = 0  # bytes read before ``block``
    while True:
        block = _read(fh, chunk_size, path)
        state = decoder.getstate()  # (bytes held back from earlier blocks, flags)
        try:
            text = decoder.decode(block, final=not block)
        except UnicodeDecodeError as e:
            # e.start counts from the held-back bytes, which precede ``block``
            offset = pos - len(state[0]) + e.start
            bad = f"byte 0x{e.object[e.start]:02x}, " if e.start < len(e.object) else ""
            raise CorpusError(
                f"{path}: not valid {encoding} at byte offset {offset} ({bad}{e.reason}); "
                "if the file uses another encoding, pass it with --encoding (e.g. latin-1)"
            ) from None
        if hasher is not None:
            hasher.update(block)
        nul = text.find("\x00")
        if nul >= 0:
            end = pos + _bytes_to_decode(encoding, state, block, nul + 1)
            offset = end - _encoded_width(encoding, "\x00")
            raise CorpusError(
                f"{path}: NUL byte at byte offset {offset}: binary data, not text "
                "(for UTF-16/UTF-32 text pass --encoding utf-16 or utf-32)"
            )
        if text:
            yield text
        if not block:
            return
        pos += len(block)


def _cache_key(path: Path, st: os.stat_result, encoding: str, oov: str) -> dict:
    """What the cached ids depend on besides the vocabulary: an edited or touched file, another
    encoding or out-of-vocabulary mode never matches."""
    return {
        "format": _CACHE_FORMAT,
        "source": str(path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "encoding": encoding,
        "oov": oov,
    }


def _cache_files(cache_dir: Path, key: dict, vocab: Vocab | None) -> tuple[Path, Path]:
    """(ids file, JSON sidecar) for the file's own vocabulary (``vocab`` None), which training,
    resuming and evaluating a split all share, or for a model's different one (fine-tuning)."""
    setting = [key["source"], key["encoding"], key["oov"]]
    if vocab is not None:
        setting.append(hashlib.sha256(vocab.to_array()).hexdigest())
    tag = hashlib.sha256(json.dumps(setting).encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(key["source"]).name)[:40]
    return cache_dir / f"{stem}.{tag}.ids", cache_dir / f"{stem}.{tag}.json"


def _ids_check(ids_file: Path, dtype: np.dtype) -> tuple[int, int]:
    """(CRC-32 of the ids file's bytes, its largest id), read in blocks: the cheap proof that the
    cached ids are the ones written, and that none can index outside the vocabulary."""
    crc, largest = 0, -1
    with open(ids_file, "rb") as fh:
        while block := fh.read(_CHECK_BLOCK):
            crc = zlib.crc32(block, crc)
            largest = max(largest, int(np.frombuffer(block, dtype=dtype).max()))
    return crc, largest


_SIDECAR_LIMIT = 1 << 20  # bytes: a sidecar holds a vocabulary and a few numbers


def _verified_cache(ids_file: Path, meta_file: Path) -> tuple[dict, Vocab, np.memmap] | None:
    """(sidecar, vocabulary, ids) of a cached encoding whose ids still have the written length
    and CRC-32 and stay inside the vocabulary; None for a missing, damaged or foreign pair."""
    try:
        if meta_file.stat().st_size > _SIDECAR_LIMIT:
            return None
        meta = json.loads(meta_file.read_text(encoding="ascii"))
        vocab = Vocab(meta["vocab"])
        length = int(meta["length"])
        if length < 1 or ids_file.stat().st_size != length * vocab.dtype.itemsize:
            return None
        crc, largest = _ids_check(ids_file, vocab.dtype)
        if crc != meta["ids_crc32"] or largest >= len(vocab):
            return None  # damaged, or ids beyond the vocabulary: never trusted
        data = np.memmap(ids_file, dtype=vocab.dtype, mode="r", shape=(length,))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return meta, vocab, data


def _from_cache(cache_dir: Path, key: dict, vocab: Vocab | None, fh, path: Path, chunk_size: int):
    """The cached Corpus if a sidecar matches ``key`` and ``vocab`` (None: the file's own) and
    both the corpus's and the ids' checksums still hold, else None."""
    candidates = [_cache_files(cache_dir, key, None)]
    if vocab is not None:
        candidates.append(_cache_files(cache_dir, key, vocab))
    digest = None
    for ids_file, meta_file in candidates:
        found = _verified_cache(ids_file, meta_file)
        if found is None:
            continue  # no cache yet, or a damaged one: encode again
        meta, found_vocab, data = found
        try:
            if any(meta.get(k) != v for k, v in key.items()):
                continue
            if (found_vocab != vocab) if vocab is not None else not meta["own_vocab"]:
                continue
            if digest is None:
                fh.seek(0)
                digest = _hash(fh, path, chunk_size)
            if digest != meta["sha256"]:
                continue
            skipped = {chr(cp): int(n) for cp, n in meta["skipped"]}
        except (KeyError, TypeError, ValueError):
            continue
        return Corpus(path, found_vocab, data, ids_file, True, skipped, digest)
    return None


def cached_ids(cache_dir: Path, vocab: Vocab, sha256: str | None = None) -> np.memmap | None:
    """Verified ids of a text that a run cached in ``cache_dir`` with ``vocab`` (and, if given,
    from a file whose bytes had that SHA-256), read without the text file; None if none."""
    try:
        sidecars = sorted(Path(cache_dir).glob("*.json"))[:_MAX_CACHED]
    except OSError:
        return None
    for meta_file in sidecars:
        found = _verified_cache(meta_file.with_suffix(".ids"), meta_file)
        if found is None:
            continue
        meta, found_vocab, data = found
        if found_vocab == vocab and (sha256 is None or meta.get("sha256") == sha256):
            return data
    return None


def _scan(fh, path: Path, encoding: str, chunk_size: int) -> tuple[np.ndarray, str]:
    """Pass 1: validate every byte; (sorted distinct code points, SHA-256 of the bytes)."""
    seen = np.zeros(_NUM_CODEPOINTS, dtype=bool)
    hasher = hashlib.sha256()
    for text in _chunks(fh, path, encoding, chunk_size, hasher):
        seen[_codepoints(text)] = True
    found = np.flatnonzero(seen)
    if found.size == 0:
        raise CorpusError(f"{path}: the file contains no characters")
    return found, hasher.hexdigest()


def _choose_vocab(path: Path, found: np.ndarray, vocab: Vocab | None, max_vocab: int, oov: str):
    """The file's own vocabulary, or ``vocab`` once the file's characters are checked against it."""
    if vocab is None:
        if found.size > max_vocab:
            raise CorpusError(
                f"{path}: {found.size} distinct characters, more than max_vocab={max_vocab} "
                "allows; raise --max-vocab, or check --encoding if the text looks garbled"
            )
        return Vocab.from_array(found)
    inside = vocab._contains(found)
    if not inside.all() and oov == "grow":  # fine-tuning: the model's characters, then the file's
        grown = np.union1d(vocab.to_array(), found)
        if grown.size > max_vocab:
            raise CorpusError(
                f"{path}: adding its {int((~inside).sum())} characters outside the model's "
                f"vocabulary of {len(vocab)} makes {grown.size}, more than max_vocab={max_vocab} "
                "allows; raise --max-vocab, or pass --no-grow-vocab to refuse them"
            )
        return Vocab.from_array(grown)
    if not inside.all() and oov == "error":
        outside = list(_text(found[~inside]))
        raise CorpusError(
            f"{path}: {len(outside)} of its {found.size} distinct characters are not in "
            f"the model's vocabulary of {len(vocab)}: {_describe(outside)}"
        )
    if not inside.any():
        raise CorpusError(
            f"{path}: none of its {found.size} distinct characters are in the model's "
            f"vocabulary of {len(vocab)}; nothing is left to use"
        )
    return vocab


def _encode_pass(fh, out, path, encoding, chunk_size, vocab, skip) -> tuple[int, dict[int, int]]:
    """Pass 2: append the ids of ``fh``'s characters to ``out``; (ids written, skipped counts,
    CRC-32 of the bytes written)."""
    written, skipped, crc = 0, {}, 0
    for text in _chunks(fh, path, encoding, chunk_size):
        cps = _codepoints(text)
        ids = vocab._ids(cps)
        unknown = ids < 0
        if unknown.any():
            if not skip:  # pass 1 saw only known characters
                raise CorpusError(f"{path}: the file changed while being encoded; run again")
            chars, counts = np.unique(cps[unknown], return_counts=True)
            for cp, n in zip(chars.tolist(), counts.tolist(), strict=True):
                skipped[cp] = skipped.get(cp, 0) + n
            ids = ids[~unknown]
        block = ids.astype(vocab.dtype).tobytes()
        out.write(block)
        crc = zlib.crc32(block, crc)
        written += ids.size
    return written, skipped, crc


def _write_cache(
    fh,
    path: Path,
    cache_dir: Path,
    key: dict,
    digest: str,
    vocab: Vocab,
    own_vocab: bool,
    chunk_size: int,
) -> Corpus:
    """Pass 2 into the cache: the ids file, then its sidecar, each written atomically; a failure
    (or a signal) leaves neither behind."""
    ids_file, meta_file = _cache_files(cache_dir, key, None if own_vocab else vocab)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for stale in (meta_file, ids_file):  # an old pair must not outlive a failure here
            stale.unlink(missing_ok=True)
        with atomic_write(ids_file) as out:
            fh.seek(0)
            length, skipped, crc = _encode_pass(
                fh, out, path, key["encoding"], chunk_size, vocab, key["oov"] == "skip"
            )
            now = os.fstat(fh.fileno())
            if (now.st_size, now.st_mtime_ns) != (key["size"], key["mtime_ns"]):
                raise CorpusError(f"{path}: the file changed while being encoded; run again")
        meta = {
            **key,
            "sha256": digest,
            "length": length,
            "vocab": vocab.chars,
            "own_vocab": own_vocab,
            "ids_crc32": crc,
            "skipped": sorted(skipped.items()),
        }
        try:
            with atomic_write(meta_file) as out:
                out.write(json.dumps(meta, ensure_ascii=True).encode("ascii"))
        except BaseException:
            ids_file.unlink(missing_ok=True)
            raise
    except OSError as e:
        raise CorpusError(
            f"{cache_dir}: cannot write the encoded corpus ({e.strerror or e})"
        ) from None
    data = np.memmap(ids_file, dtype=vocab.dtype, mode="r", shape=(length,))
    chars = {chr(cp): n for cp, n in skipped.items()}
    return Corpus(path, vocab, data, ids_file, False, chars, digest)


def _encode(
    path: str | os.PathLike,
    cache_dir: str | os.PathLike,
    encoding: str,
    max_vocab: int,
    vocab: Vocab | None,
    oov: str,
    chunk_size: int,
) -> Corpus:
    """Encode the text file ``path`` into ``cache_dir`` (streaming) and map it read-only.

    Without ``vocab`` the vocabulary is the file's own characters (at most ``max_vocab``).
    With ``vocab`` (a model's; ``max_vocab`` is then unused), characters outside it are an
    error listing them, or, with ``oov="skip"``, dropped from the text and counted in
    ``Corpus.skipped``. An unchanged file is not encoded again (see the module docstring for
    the cache). Every problem with the file raises CorpusError before anything is written
    to ``cache_dir``; a failure while writing leaves no files there.
    """
    if oov not in OOV_MODES:
        raise ValueError(f"oov must be one of {OOV_MODES}, got {oov!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    path, cache_dir = Path(path), Path(cache_dir)
    encoding = _check_encoding(path, encoding)
    with _open(path) as fh:
        key = _cache_key(path, os.fstat(fh.fileno()), encoding, oov)
        cached = _from_cache(cache_dir, key, vocab, fh, path, chunk_size)
        if cached is not None:
            return cached
        fh.seek(0)
        found, digest = _scan(fh, path, encoding, chunk_size)
        chosen = _choose_vocab(path, found, vocab, max_vocab, oov)
        own = np.array_equal(found, chosen.to_array())
        return _write_cache(fh, path, cache_dir, key, digest, chosen, own, chunk_size)


def load_corpus(
    path: str | os.PathLike,
    cache_dir: str | os.PathLike,
    encoding: str = "utf-8",
    max_vocab: int = 65536,
    vocab: Vocab | None = None,
    *,
    grow: bool = False,
    chunk_size: int = CHUNK_SIZE,
) -> Corpus:
    """The training corpus, encoded into (or reused from) ``cache_dir``.

    Its vocabulary is its own characters (CorpusError beyond ``max_vocab``) or, to resume or
    fine-tune a model, ``vocab``: then a character outside it is a CorpusError listing them,
    unless ``grow``, which makes the vocabulary ``vocab`` and the file's characters together
    (CorpusError beyond ``max_vocab``; ``growvocab`` fits the model to it).
    """
    oov = "grow" if grow and vocab is not None else "error"
    return _encode(path, cache_dir, encoding, max_vocab, vocab, oov, chunk_size)


def encode_file(
    path: str | os.PathLike,
    vocab: Vocab,
    out_dir: str | os.PathLike,
    encoding: str = "utf-8",
    *,
    oov: str = "error",
    chunk_size: int = CHUNK_SIZE,
) -> tuple[np.memmap, dict[str, int]]:
    """Any text file as ids of a model's ``vocab``: (read-only memmap in ``out_dir``, skipped).

    ``oov="error"``: a character outside ``vocab`` is a CorpusError listing them.
    ``oov="skip"``: such characters are dropped from the text before encoding (what ``eval``
    scores) and ``skipped`` maps each of them to its count. ``out_dir`` works as a cache.
    """
    corpus = _encode(path, out_dir, encoding, len(vocab), vocab, oov, chunk_size)
    return corpus.data, corpus.skipped


def split_corpus(
    data: np.ndarray, val_fraction: float = 0.1, test_fraction: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contiguous views ``train | val | test`` of ``data``; validation and test come from the end.

    With N = len(data): n_val = floor(N * val_fraction), n_test = floor(N * test_fraction),
    train gets the rest. Taking held-out text from the end (not shuffled windows) keeps it
    unseen context, as a reader would meet it.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"need 0 <= val_fraction, test_fraction and val_fraction + test_fraction < 1, "
            f"got {val_fraction} and {test_fraction}"
        )
    n = len(data)
    n_val, n_test = int(n * val_fraction), int(n * test_fraction)
    n_train = n - n_val - n_test
    return data[:n_train], data[n_train : n_train + n_val], data[n_train + n_val :]


def _shared_mmap(data: np.ndarray) -> mmap.mmap | None:
    """The shared (not copy-on-write) memory map behind ``data``, if any."""
    if not hasattr(mmap, "MADV_DONTNEED"):
        return None
    base = data
    while isinstance(base, np.ndarray):
        if isinstance(base, np.memmap) and base.mode == "c":
            return None  # dropping private pages would lose writes
        base = base.base
    return base if isinstance(base, mmap.mmap) else None


class _PageReleaser:
    """Keeps RSS flat while reading a memmap by dropping its resident pages.

    Pages are dropped when created (so pages another iterator left mapped do not add up with
    this one's) and after every ``_RELEASE_BYTES`` read. What stays resident in between is
    about B x 64 KiB (the kernel maps 64 KiB around each faulting page) plus the threshold.
    """

    def __init__(self, data: np.ndarray):
        self._mm = _shared_mmap(data)
        self._pending = 0
        self.release()

    def release(self) -> None:
        if self._mm is not None:
            self._mm.madvise(mmap.MADV_DONTNEED)
        self._pending = 0

    def read(self, nbytes: int) -> None:
        self._pending += nbytes
        if self._pending >= _RELEASE_BYTES:
            self.release()


def _check_geometry(batch_size: int, seq_length: int) -> None:
    if batch_size < 1 or seq_length < 1:
        raise ValueError(f"batch_size and seq_length must be >= 1, got {batch_size}, {seq_length}")


class BatchIterator:
    """Training batches for truncated BPTT over ``data`` (1-D ids), epoch after epoch.

    The first B * L ids, L = len(data) // B, are cut into B streams of length L (row b is
    ``data[b*L:(b+1)*L]``). Batch k, k = 0 .. batches_per_epoch - 1 with
    batches_per_epoch = (L - 1) // T, is ``x = rows[:, k*T : k*T+T]`` and
    ``y = rows[:, k*T+1 : k*T+T+1]``, both (B, T) np.intp: y is x shifted by one, and batch
    k + 1 starts where batch k ended in every row, so the final hidden state of one batch is
    the right initial state of the next. ``len(data) % B`` ids at the end and the last
    ``(L - 1) % T`` of each row are not used. The position (``epoch``, ``index``) is a small
    JSON-able ``state_dict`` that restores exactly the same following batches.
    """

    def __init__(
        self,
        data: np.ndarray,
        batch_size: int,
        seq_length: int,
        *,
        source: str = "the training split",
    ):
        _check_geometry(batch_size, seq_length)
        n, need = len(data), batch_size * (seq_length + 1)
        if n < need:
            raise CorpusError(
                f"{source}: {n} characters, too few for one batch of batch_size x "
                f"(seq_length + 1) = {batch_size} x {seq_length + 1} = {need}; lower "
                "--batch-size or --seq-length, or --val-fraction/--test-fraction"
            )
        self.batch_size, self.seq_length, self.num_chars = batch_size, seq_length, n
        row = n // batch_size
        self._rows = data[: batch_size * row].reshape(batch_size, row)
        self.batches_per_epoch = (row - 1) // seq_length
        self.epoch = 0  # completed epochs
        self.index = 0  # batch that next_batch returns
        self._pages = _PageReleaser(data)

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y), each (B, T) np.intp; then advance (index -> 0 and epoch += 1 after the last)."""
        t, start = self.seq_length, self.index * self.seq_length
        window = np.array(self._rows[:, start : start + t + 1], dtype=np.intp)
        self._pages.read(self._rows.itemsize * self.batch_size * t)
        self.index += 1
        if self.index == self.batches_per_epoch:
            self.index, self.epoch = 0, self.epoch + 1
        return np.ascontiguousarray(window[:, :-1]), np.ascontiguousarray(window[:, 1:])

    def state_dict(self) -> dict:
        """The position, with the geometry it is valid for (JSON-able ints)."""
        return {
            "epoch": self.epoch,
            "index": self.index,
            "batch_size": self.batch_size,
            "seq_length": self.seq_length,
            "num_chars": self.num_chars,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a position; ValueError if it was saved for other data or settings."""
        saved = tuple(state.get(k) for k in ("batch_size", "seq_length", "num_chars"))
        now = (self.batch_size, self.seq_length, self.num_chars)
        if saved != now:
            raise ValueError(
                "data position was saved for batch_size, seq_length, characters = "
                f"{saved}, but now they are {now}"
            )
        epoch, index = int(state["epoch"]), int(state["index"])
        if epoch < 0 or not 0 <= index < self.batches_per_epoch:
            raise ValueError(f"invalid data position: epoch {epoch}, index {index}")
        self.epoch, self.index = epoch, index


def eval_batch_count(num_chars: int, batch_size: int, seq_length: int) -> int:
    """Number of batches ``eval_batches`` yields for ``num_chars`` ids."""
    targets = max(num_chars - 1, 0)
    row = -(-targets // batch_size)
    return -(-row // seq_length)


def _stream_lengths(num_chars: int, batch_size: int) -> np.ndarray:
    """Targets in each of ``eval_batches``'s B streams: the N - 1 of ``num_chars`` ids, cut into
    B contiguous parts whose lengths differ by at most one."""
    targets = max(num_chars - 1, 0)
    lengths = np.full(batch_size, targets // batch_size)
    lengths[: targets % batch_size] += 1
    return lengths


def eval_sample_chars(num_chars: int, batch_size: int, seq_length: int, max_batches: int) -> int:
    """Characters the first ``max_batches`` batches of ``eval_batches`` score (0: all of them)."""
    lengths = _stream_lengths(num_chars, batch_size)
    if not max_batches:
        return int(lengths.sum())
    per_stream = min(max_batches * seq_length, int(lengths.max()))  # no int64 overflow
    return int(np.minimum(lengths, per_stream).sum())


def eval_batches(
    data: np.ndarray, batch_size: int, seq_length: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(x, y, mask) batches, each (B, T), that score every id of ``data`` but the first once.

    The N - 1 targets ``data[1:]`` are cut into B contiguous streams whose lengths differ by
    at most one; batch k holds steps k*T .. k*T+T-1 of every stream, so (as in training) the
    caller carries the hidden state from one batch to the next. ``mask`` (bool) is False past
    the end of a stream (the ragged tail); x and y hold valid ids there. Yields nothing when
    ``data`` has fewer than two ids.
    """
    _check_geometry(batch_size, seq_length)
    lengths = _stream_lengths(len(data), batch_size)
    first = np.concatenate(([1], 1 + np.cumsum(lengths)[:-1]))  # data index of first target
    count = eval_batch_count(len(data), batch_size, seq_length)
    return _eval_batches(data, lengths, first, count, seq_length)


def _eval_batches(data, lengths, first, count, seq_length):
    ids = np.asarray(data)  # plain view: fancy indexing then gives plain arrays
    pages = _PageReleaser(data)
    steps = np.arange(seq_length)
    try:
        for k in range(count):
            t = k * seq_length + steps
            mask = t[None, :] < lengths[:, None]
            pos = np.where(mask, first[:, None] + t[None, :], 1)
            x, y = ids[pos - 1].astype(np.intp), ids[pos].astype(np.intp)
            pages.read(ids.itemsize * mask.size)
            yield x, y, mask
    finally:  # also when the caller stops early: leave no evaluation pages mapped
        pages.release()
