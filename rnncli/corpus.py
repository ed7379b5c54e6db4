"""Corpus encoding and its cache: text file -> vocabulary -> compact ids on disk; the splits.

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
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CorpusError
from .fileio import atomic_write, decode_error, text_encoding
from .filekind import HEAD_BYTES, NUL_BYTES, binary_kind, wide_encoding
from .vocab import NUM_CODEPOINTS, Vocab, codepoints, describe_chars, text_of

CHUNK_SIZE = 1 << 16  # bytes read per step while encoding (small: a 1 MB corpus already streams)
OOV_MODES = ("error", "skip", "grow")
_CACHE_FORMAT = 1
_CHECK_BLOCK = 1 << 20  # bytes of the ids file read at a time to verify it
_MAX_CACHED = 100  # sidecars looked at in a cache folder: one per corpus and vocabulary


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


def _head(fh) -> bytes:
    """The first bytes of the open file ``fh``, for naming what a file that is not text is;
    read without moving its position (empty if it cannot be read)."""
    try:
        return os.pread(fh.fileno(), HEAD_BYTES, 0)
    except (OSError, AttributeError, ValueError):  # not a file with a descriptor (a test's stream)
        return b""


def _chunks(fh, path: Path, encoding: str, chunk_size: int, hasher=None) -> Iterator[str]:
    """Decoded text of ``fh``, ``chunk_size`` bytes at a time; CorpusError on bad bytes or NUL."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    pos = 0  # bytes read before ``block``
    while True:
        block = _read(fh, chunk_size, path)
        state = decoder.getstate()  # (bytes held back from earlier blocks, flags)
        try:
            text = decoder.decode(block, final=not block)
        except UnicodeError as e:  # plain UnicodeError: UTF-16/32 without a byte-order mark
            start = pos - len(state[0])  # e.start counts from the held-back bytes, before block
            invalid = f"not valid {encoding} {decode_error(e, start, encoding)}"
            head = _head(fh)
            kind, wide = binary_kind(head), wide_encoding(head)
            if kind is not None and isinstance(e, UnicodeDecodeError):  # not a missing BOM
                where = (
                    f" at byte offset {start + e.start}"
                    if isinstance(e, UnicodeDecodeError)
                    else ""
                )
                raise CorpusError(
                    f"{path}: binary, not text: it looks like {kind} (invalid {encoding}{where})"
                ) from None
            hint = (
                f"it starts with a {wide} byte-order mark: pass --encoding {wide}"
                if wide is not None and wide != text_encoding(encoding)
                else "if the file uses another encoding, pass it with --encoding (e.g. latin-1)"
            )
            raise CorpusError(f"{path}: {invalid}; {hint}") from None
        if hasher is not None:
            hasher.update(block)
        nul = text.find("\x00")
        if nul >= 0:
            end = pos + _bytes_to_decode(encoding, state, block, nul + 1)
            offset = end - _encoded_width(encoding, "\x00")
            kind = binary_kind(_head(fh))
            if kind is not None and kind != NUL_BYTES:  # a known format: name it
                raise CorpusError(
                    f"{path}: binary, not text: it looks like {kind} (a NUL byte at byte "
                    f"offset {offset})"
                )
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
    seen = np.zeros(NUM_CODEPOINTS, dtype=bool)
    hasher = hashlib.sha256()
    for text in _chunks(fh, path, encoding, chunk_size, hasher):
        seen[codepoints(text)] = True
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
        outside = list(text_of(found[~inside]))
        raise CorpusError(
            f"{path}: {len(outside)} of its {found.size} distinct characters are not in "
            f"the model's vocabulary of {len(vocab)}: {describe_chars(outside)}"
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
        cps = codepoints(text)
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
