"""Truncated-BPTT batches over a split's ids, for training and for scoring.

Training batches: ``B`` streams, each a contiguous ``1/B`` of the split, read in windows of ``T``
inputs with targets shifted by one; batch ``k + 1`` continues batch ``k`` in every stream so the
hidden state carries over. All batches are ``np.intp`` arrays of shape (B, T).

The ids are usually a read-only ``np.memmap``. Pages read through a file mapping count towards the
process's RSS, so the iterators drop the mapping's resident pages (``madvise(MADV_DONTNEED)``; the
OS page cache keeps them) after every 256 KiB they read: RSS stays flat over a corpus of any size.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator

import numpy as np

from .errors import CorpusError

_RELEASE_BYTES = 1 << 18  # drop a memory map's resident pages after reading this much


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
