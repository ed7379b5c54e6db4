"""Scoring text with a trained model: loss in nats per character, bits per character, perplexity.

The text is cut into B contiguous streams and read T characters at a time, the hidden state
carried from one window to the next, so every character after the first is predicted exactly
once from everything before it in its stream. Forward only: no dropout, no gradients.
"""

from __future__ import annotations

import codecs
import contextlib
import itertools
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .batches import eval_batch_count, eval_batches
from .checkpoint import Checkpoint, CheckpointError, corpus_if_unchanged, recorded_corpus
from .corpus import cached_ids, encode_file, load_corpus, split_corpus
from .errors import CommandError, CorpusError
from .fileio import decode_error
from .filekind import HEAD_BYTES, binary_kind
from .memory import available_bytes, format_bytes
from .model import Model
from .rules import Rule
from .untrusted import UntrustedFileError, open_regular
from .vocab import Vocab

MAX_EVAL_STREAMS = 10_000  # beyond this many streams scoring is no faster, only bigger
MAX_EVAL_SEQ_LENGTH = 10_000
# setting -> rule: ``rnn eval``'s options and ``CharModel.score`` check with these
EVAL_RULES = {
    "batch_size": Rule(whole=True, low=1, high=MAX_EVAL_STREAMS),
    "seq_length": Rule(whole=True, low=1, high=MAX_EVAL_SEQ_LENGTH),
}


def bits_per_char(nats: float) -> float:
    """A loss in nats per character as bits per character."""
    return nats / math.log(2)


PROGRESS_DELAY = 0.5  # seconds an evaluation runs before its bar appears: a quick one shows none


def progress_bar(total: int, label: str | None, unit: str = "batch") -> tqdm:
    """A tqdm bar on stderr over ``total`` units, labelled ``label``; None draws nothing (callers
    pass a label only when stderr is a terminal). It appears after ``PROGRESS_DELAY`` seconds and
    is erased when closed."""
    return tqdm(
        total=total,
        desc=label,
        unit=unit,
        leave=False,
        delay=PROGRESS_DELAY,
        disable=label is None,
        file=sys.stderr,
        dynamic_ncols=True,
    )


def score(
    model: Model,
    data: np.ndarray,
    batch_size: int,
    seq_length: int,
    max_batches: int = 0,
    progress: str | None = None,
) -> tuple[float, int]:
    """Summed cross-entropy (nats) and the number of characters scored over ``data``.

    ``max_batches`` > 0 stops after that many batches: the first windows of B streams spread over
    the whole of ``data``, the same ones every time (a fixed sample); 0, or more batches than
    ``data`` makes, scores everything. ``progress``: the label of a progress bar, or None.
    """
    batches = eval_batches(data, batch_size, seq_length)  # checks the geometry first
    count = eval_batch_count(len(data), batch_size, seq_length)
    if max_batches:
        count = min(count, max_batches)
    state = model.zero_state(batch_size)
    total, scored = 0.0, 0
    with contextlib.closing(batches), progress_bar(count, progress) as bar:
        for x, y, mask in itertools.islice(batches, count):
            n = int(mask.sum())
            loss, state, _ = model.forward(x, y, state, mask=mask)
            total += loss * n
            scored += n
            bar.update()
    return total, scored


@dataclass
class Report:
    loss: float  # nats per character
    chars: int  # characters scored
    oov: dict[str, int]  # characters outside the vocabulary, skipped, with their counts
    dynamic: dict | None = None  # dynamic evaluation's settings (``dynamic.DynamicSettings``)

    @property
    def bpc(self) -> float:
        return bits_per_char(self.loss)

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    def to_dict(self) -> dict:
        return {
            "loss": self.loss,
            "bpc": self.bpc,
            "perplexity": self.perplexity,
            "chars": self.chars,
            "oov": sum(self.oov.values()),
            "oov_chars": self.oov,
        } | ({} if self.dynamic is None else {"dynamic": self.dynamic})


def _report(
    model: Model,
    data: np.ndarray,
    batch_size: int,
    seq_length: int,
    oov: dict[str, int],
    progress: str | None,
    dynamic=None,
) -> Report:
    with np.errstate(all="ignore"):  # an overflow shows as a non-finite loss, which callers check
        if dynamic is None:
            total, count = score(model, data, batch_size, seq_length, progress=progress)
        else:
            total, count = dynamic.score(model, data, progress)
    settings = None if dynamic is None else dynamic.to_dict()
    return Report(total / count if count else math.nan, count, oov, settings)


def evaluate_file(
    model: Model,
    vocab: Vocab,
    path: str | Path,
    encoding: str = "utf-8",
    batch_size: int = 50,
    seq_length: int = 100,
    progress: str | None = None,
    dynamic=None,
) -> Report:
    """Score a text file. Characters outside the vocabulary are dropped before scoring and counted.

    The file is encoded in a streaming pass to a temporary memory map, so it may be larger than
    memory. ``progress``: the label of a progress bar while scoring, or None. ``dynamic``: a
    ``dynamic.DynamicSettings`` to score it by dynamic evaluation instead, or None.
    """
    with tempfile.TemporaryDirectory(prefix="rnncli-eval-") as folder:
        data, oov = encode_file(Path(path), vocab, Path(folder), encoding=encoding, oov="skip")
        report = _report(model, data, batch_size, seq_length, oov, progress, dynamic)
        del data  # release the memory map before its folder goes
    return report


def evaluate_text(
    model: Model,
    vocab: Vocab,
    text: str,
    batch_size: int = 50,
    seq_length: int = 100,
    progress: str | None = None,
    dynamic=None,
) -> Report:
    """Score ``text`` exactly as ``evaluate_file`` scores a UTF-8 file holding it (it is written
    to one, in a temporary folder, and read back by the same path); errors name "the text".
    ``dynamic``: ``dynamic.DynamicSettings`` for dynamic evaluation, or None."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise CorpusError(f"the text is not valid Unicode at character {err.start:,}") from None
    with tempfile.TemporaryDirectory(prefix="rnncli-score-") as folder:
        path = Path(folder) / "text.txt"
        path.write_bytes(data)
        try:
            return evaluate_file(
                model, vocab, path, "utf-8", batch_size, seq_length, progress, dynamic
            )
        except CorpusError as err:  # its line names the temporary file
            raise CorpusError(str(err).replace(str(path), "the text")) from None


def checked_report(report: Report, what: str) -> Report:
    """``report`` if it scored something to a finite loss; else CorpusError naming ``what``."""
    if report.chars == 0:
        raise CorpusError(f"{what}: no characters to score")
    if not math.isfinite(report.loss):
        raise CorpusError(
            f"{what}: the loss is not finite ({report.loss}); the model overflows on this text"
        )
    return report


def evaluate_split(
    model: Model,
    vocab: Vocab,
    ckpt: Checkpoint,
    split: str,
    batch_size: int = 50,
    seq_length: int = 100,
    progress: str | None = None,
    dynamic=None,
) -> Report:
    """Score the validation or test split of ``ckpt``'s training corpus, cut as training cut it.

    The ids come from ``recorded_ids``: the run's verified cache beside the checkpoint when it
    holds the text of the recorded SHA-256 (read, never written; the corpus file may have changed
    or gone since), else the recorded file while it still has that hash. Neither: CheckpointError
    (``checkpoint.recorded_corpus``), for a checkpoint from someone else must not make rnncli
    read, echo or cache any other file.
    """
    with recorded_ids(ckpt, vocab) as ids:
        if ids is None:
            recorded_corpus(ckpt)  # raises: no verified cache, and the file is missing or changed
            raise CheckpointError(f"{ckpt.path}: its corpus changed while being read; try again")
        config = ckpt.config
        _, val, test = split_corpus(ids, config["val_fraction"], config["test_fraction"])
        data = val if split == "val" else test
        return _report(model, data, batch_size, seq_length, {}, progress, dynamic)


@contextlib.contextmanager
def recorded_ids(ckpt: Checkpoint, vocab: Vocab) -> Iterator[np.ndarray | None]:
    """The ids of the corpus ``ckpt`` records, as training encoded them, or None.

    From the run's cache beside the checkpoint when it holds the text of the recorded SHA-256,
    else from the recorded file if it still has that hash, encoded into a temporary folder that
    goes when the block ends: never into the run's ``cache/``, which a training starting there
    may be writing. CorpusError if that file cannot be encoded with ``vocab``.
    """
    digest = ckpt.meta.get("corpus_sha256")
    if not isinstance(digest, str):
        yield None
        return
    ids = cached_ids(Path(ckpt.path).parent / "cache", vocab, sha256=digest)
    corpus = None if ids is not None else corpus_if_unchanged(ckpt)
    if corpus is None:
        yield ids
        return
    encoding, max_vocab = ckpt.config["encoding"], ckpt.config["max_vocab"]
    with tempfile.TemporaryDirectory(prefix="rnncli-") as tmp:
        yield load_corpus(corpus, Path(tmp), encoding, max_vocab, vocab=vocab).data


# -- per-character and per-line surprisal ----------------------------------------------------

SCORED_FILE_LIMIT = 64 * 2**20  # bytes: per-character scoring holds the text and 8 bytes a char
CONTEXT = 1_000  # characters each stream reads, unscored, before the part it scores
SEGMENT = 10_000  # the fewest characters a stream scores: shorter texts are one stream


def eval_memory_bytes(model: Model, batch_size: int, seq_length: int) -> int:
    """About the memory of one scoring window: per position, each layer keeps its G gate
    pre-activations and three more H-vectors (states and their tanh), the output its logits and
    probabilities, and the embedded input when there is an embedding."""
    H, V = model.hidden_size, model.vocab_size
    gates = model.cell_type.gates
    per_char = model.num_layers * (gates + 3) * H + 2 * V + model.embedding_size
    return batch_size * seq_length * per_char * model.dtype.itemsize


def check_eval_memory(model: Model, batch_size: int, seq_length: int) -> None:
    """Refuse a window too large for this machine before allocating it (CommandError)."""
    need, have = eval_memory_bytes(model, batch_size, seq_length), available_bytes()
    if have and need > have // 2:
        raise CommandError(
            f"--batch-size {batch_size} x --seq-length {seq_length} needs about "
            f"{need / 2**30:.1f} GiB for this model, over half of the "
            f"{have / 2**30:.1f} GiB available; use smaller values"
        )


def read_scored_text(path: str | Path, encoding: str) -> str:
    """The text of a regular file of at most ``SCORED_FILE_LIMIT`` bytes; CorpusError (one line)
    for anything else."""
    path = Path(path)
    try:
        with open_regular(str(path), "text file") as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(SCORED_FILE_LIMIT + 1) if size <= SCORED_FILE_LIMIT else b""
    except UntrustedFileError:
        raise CorpusError(f"{path}: not a regular file") from None
    except OSError as err:
        raise CorpusError(f"{path}: {err.strerror.lower()}") from None
    if size > SCORED_FILE_LIMIT or len(data) > SCORED_FILE_LIMIT:  # or it grew meanwhile
        raise CorpusError(
            f"{path}: {max(size, len(data)):,} bytes; per-character scoring reads at most "
            f"{SCORED_FILE_LIMIT:,} (cut the file, or score it whole without --per-char/--per-line)"
        )
    need, have = surprisal_bytes(data), available_bytes()
    if have is not None and need > have // 2:
        raise CorpusError(
            f"{path}: per-character scoring needs about {format_bytes(need)} for its "
            f"{len(data):,} bytes, over half of the {format_bytes(have)} available; cut the file, "
            "or score it whole without --per-char/--per-line"
        )
    try:  # the incremental decoder, as every other reader uses: UTF-16 needs its BOM alike
        return codecs.getincrementaldecoder(encoding)("strict").decode(data, final=True)
    except LookupError:
        raise CorpusError(f"unknown encoding {encoding!r}") from None
    except UnicodeError as err:  # UTF-16 without a byte-order mark raises the base class
        kind = binary_kind(data[:HEAD_BYTES])
        if kind is not None and isinstance(err, UnicodeDecodeError):  # not a missing BOM
            raise CorpusError(f"{path}: binary, not text: it looks like {kind}") from None
        raise CorpusError(
            f"{path}: not valid {encoding} {decode_error(err, 0, encoding)}"
        ) from None


# What per-character scoring holds per byte of the file (its text, code points, ids, bits,
# index arrays and temporaries) and per line (a LineScore and its text): upper bounds.
SURPRISAL_BYTES_PER_BYTE = 64
SURPRISAL_BYTES_PER_LINE = 320


def surprisal_bytes(data: bytes) -> int:
    """Estimated peak memory of ``rnn eval --per-char/--per-line`` on a file holding ``data``
    (newline bytes overcount lines in a wide encoding: an upper bound)."""
    lines = data.count(b"\n") + 1
    return SURPRISAL_BYTES_PER_BYTE * len(data) + SURPRISAL_BYTES_PER_LINE * lines


def char_surprisal(
    model: Model, ids: np.ndarray, streams: int = 50, progress: str | None = None
) -> np.ndarray:
    """Bits of surprisal, -log2 p(c_i | c_0 .. c_{i-1}), of every character of ``ids`` (n,);
    NaN for the first, which nothing predicts.

    The text is cut into at most ``streams`` contiguous parts of at least ``SEGMENT``
    characters, scored side by side as the streams of one ``Stepper``. Each stream first reads
    the ``CONTEXT`` characters before its part, unscored, so every character is predicted from
    at least that much context (the whole text before it in the first part, and in any text
    shorter than 2 x ``SEGMENT``). ``progress``: the label of a progress bar, or None.
    """
    n = len(ids)
    bits = np.full(n, np.nan)
    if n < 2:
        return bits
    targets = n - 1
    B = max(1, min(streams, targets // SEGMENT))
    first = 1 + (targets * np.arange(B)) // B  # first scored position of each part
    stop = 1 + (targets * np.arange(1, B + 1)) // B  # one past its last
    start = np.maximum(first - 1 - CONTEXT, 0)  # first input each stream reads
    stepper = model.stepper(B)
    rows = np.arange(B)
    steps = int((stop - 1 - start).max())
    with progress_bar(steps, progress, unit="step") as bar:
        for step in range(steps):
            position = start + step  # the input; it predicts position + 1
            logits = stepper.step(ids[np.minimum(position, n - 1)])
            bar.update()
            scored = (position + 1 >= first) & (position + 1 < stop)
            if not scored.any():
                continue
            r, target = rows[scored], position[scored] + 1
            z = logits[r].astype(np.float64)
            z -= z.max(axis=1, keepdims=True)
            log_p = z[np.arange(r.size), ids[target]] - np.log(np.exp(z).sum(axis=1))
            bits[target] = -log_p / math.log(2)
    return bits


def text_surprisal(
    model: Model,
    vocab: Vocab,
    text: str,
    streams: int = 50,
    progress: str | None = None,
    dynamic=None,
) -> np.ndarray:
    """``char_surprisal`` of ``text`` with its characters outside the vocabulary left out of the
    model's input, aligned to ``text``: NaN at those characters and at the first scored one.
    With ``dynamic`` (a ``dynamic.DynamicSettings``), scored by dynamic evaluation instead."""
    codepoints = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    known = np.flatnonzero(np.isin(codepoints, vocab.to_array()))
    bits = np.full(len(text), np.nan)
    ids = vocab.encode(vocab.drop_unknown(text))
    if dynamic is None:
        bits[known] = char_surprisal(model, ids, streams, progress)
    else:
        bits[known] = dynamic.surprisal(model, ids, progress)
    return bits


@dataclass
class LineScore:
    number: int  # from 1
    bits: float  # mean bits per scored character, NaN if none was scored
    chars: int  # characters scored: those of the line bar its newline and unscored ones
    text: str  # without its newline


def line_surprisal(text: str, bits: np.ndarray) -> list[LineScore]:
    """Per line of ``text``, the mean of ``bits`` (aligned to ``text``, NaN where unscored)
    over its characters. Newlines are left out: the one after an odd line is as surprising as
    the line, and would make the blank line that follows look odd too."""
    lines = [line + "\n" for line in text.split("\n")]  # lines as sed and editors count them
    lines[-1] = lines[-1][:-1]
    if not lines[-1]:
        lines.pop()
    if not lines:
        return []
    starts = np.cumsum([0] + [len(line) for line in lines[:-1]], dtype=np.intp)
    codepoints = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    scored = ~np.isnan(bits) & (codepoints != ord("\n"))
    totals = np.add.reduceat(np.where(scored, bits, 0.0), starts)
    counts = np.add.reduceat(scored.astype(np.intp), starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = totals / counts
    return [
        LineScore(i + 1, float(means[i]), int(counts[i]), line.removesuffix("\n"))
        for i, line in enumerate(lines)
    ]


def most_surprising(lines: list[LineScore]) -> list[LineScore]:
    """Lines from the highest mean bits per character down; unscored lines last, ties in order."""
    return sorted(lines, key=lambda s: (math.isnan(s.bits), 0.0 if math.isnan(s.bits) else -s.bits))
