"""Scoring text with a trained model: loss in nats per character, bits per character, perplexity.

The text is cut into B contiguous streams and read T characters at a time, the hidden state
carried from one window to the next, so every character after the first is predicted exactly
once from everything before it in its stream. Forward only: no dropout, no gradients.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checkpoint import Checkpoint, recorded_corpus
from .data import Vocab, encode_file, eval_batches, load_corpus, split_corpus
from .model import Model


def bits_per_char(nats: float) -> float:
    """A loss in nats per character as bits per character."""
    return nats / math.log(2)


def score(
    model: Model, data: np.ndarray, batch_size: int, seq_length: int, max_batches: int = 0
) -> tuple[float, int]:
    """Summed cross-entropy (nats) and the number of characters scored over ``data``.

    ``max_batches`` > 0 stops early (a cheaper estimate during training); 0 scores everything.
    """
    state = model.zero_state(batch_size)
    total, count = 0.0, 0
    for i, (x, y, mask) in enumerate(eval_batches(data, batch_size, seq_length)):
        if max_batches and i >= max_batches:
            break
        n = int(mask.sum())
        loss, state, _ = model.forward(x, y, state, mask=mask)
        total += loss * n
        count += n
    return total, count


@dataclass
class Report:
    loss: float  # nats per character
    chars: int  # characters scored
    oov: dict[str, int]  # characters outside the vocabulary, skipped, with their counts

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
        }


def _report(
    model: Model, data: np.ndarray, batch_size: int, seq_length: int, oov: dict[str, int]
) -> Report:
    with np.errstate(all="ignore"):  # an overflow shows as a non-finite loss, which callers check
        total, count = score(model, data, batch_size, seq_length)
    return Report(total / count if count else math.nan, count, oov)


def evaluate_file(
    model: Model,
    vocab: Vocab,
    path: str | Path,
    encoding: str = "utf-8",
    batch_size: int = 50,
    seq_length: int = 100,
) -> Report:
    """Score a text file. Characters outside the vocabulary are dropped before scoring and counted.

    The file is encoded in a streaming pass to a temporary memory map, so it may be larger than
    memory.
    """
    with tempfile.TemporaryDirectory(prefix="rnncli-eval-") as folder:
        data, oov = encode_file(Path(path), vocab, Path(folder), encoding=encoding, oov="skip")
        report = _report(model, data, batch_size, seq_length, oov)
        del data  # release the memory map before its folder goes
    return report


def evaluate_split(
    model: Model,
    vocab: Vocab,
    ckpt: Checkpoint,
    split: str,
    batch_size: int = 50,
    seq_length: int = 100,
) -> Report:
    """Score the validation or test split of ``ckpt``'s training corpus, cut as training cut it.

    The corpus is the file the checkpoint records, read only if it still has the recorded
    SHA-256 (``checkpoint.recorded_corpus``; CheckpointError otherwise): a checkpoint from
    someone else must not make rnncli read, echo or cache any other file. Its cache is the run
    folder's, beside the checkpoint.
    """
    config = ckpt.config
    loaded = load_corpus(
        recorded_corpus(ckpt),
        Path(ckpt.path).parent / "cache",
        encoding=config["encoding"],
        max_vocab=config["max_vocab"],
        vocab=vocab,
    )
    _, val, test = split_corpus(loaded.data, config["val_fraction"], config["test_fraction"])
    return _report(model, val if split == "val" else test, batch_size, seq_length, {})
