"""The text ``rnn report`` runs the model on.

In order of preference: a file the user names (characters outside the vocabulary dropped);
the held-out split of the recorded corpus, when that file still holds the recorded bytes; the
same split of the training text the run cached in ``RUN/cache``; a sample the model writes.
"""

from __future__ import annotations

import codecs
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checkpoint import Checkpoint
from .corpus import cached_ids, split_corpus
from .errors import CorpusError
from .evaluate import recorded_ids
from .fileio import decode_error
from .model import Model
from .sample import generate
from .untrusted import UntrustedFileError, open_regular
from .vocab import Vocab

MAX_SCAN = 16 << 20  # bytes of --text read at most while looking for in-vocabulary characters
SAMPLE_TEMPERATURE, SAMPLE_SEED = 0.8, 0
LINE_SEARCH = 200


@dataclass
class Excerpt:
    text: str
    source: str  # what the text is, for the page and stderr
    notes: list[str] = field(default_factory=list)  # what the user should know about it


def from_file(path: str | os.PathLike, vocab: Vocab, chars: int, encoding: str) -> Excerpt:
    """The first ``chars`` characters of the text file ``path`` that are in ``vocab``; the others
    are dropped and counted in a note. CorpusError for an unreadable or undecodable file."""
    path = Path(path)
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
        kept, dropped, read, start = [], {}, 0, 0
        with open_regular(str(path), "text file") as f:  # a FIFO would block, a device not end
            while sum(map(len, kept)) < chars and read < MAX_SCAN:
                block = f.read(1 << 16)
                start = read - len(decoder.getstate()[0])  # the offset of e.start's 0
                read += len(block)
                text = decoder.decode(block, final=not block)
                inside = vocab.drop_unknown(text)
                for ch in vocab.unknown(text):
                    dropped[ch] = dropped.get(ch, 0) + text.count(ch)
                kept.append(inside)
                if not block:
                    break
    except LookupError:
        raise CorpusError(f"unknown encoding {encoding!r}") from None
    except UntrustedFileError:
        raise CorpusError(f"{path}: not a regular file") from None
    except UnicodeError as e:
        raise CorpusError(
            f"{path}: not valid {encoding} {decode_error(e, start, encoding)}"
        ) from None
    except OSError as e:
        raise CorpusError(f"{path}: cannot read ({e.strerror})") from None
    text = "".join(kept)[:chars]
    if len(text) < 2:
        raise CorpusError(f"{path}: fewer than 2 characters in the model's vocabulary")
    notes = []
    if dropped:
        listed = ", ".join(f"{ch!r} x{n}" for ch, n in sorted(dropped.items())[:10])
        more = "" if len(dropped) <= 10 else f" and {len(dropped) - 10} more"
        notes.append(
            f"{path}: dropped {sum(dropped.values()):,} characters outside the vocabulary "
            f"({listed}{more})"
        )
    return Excerpt(text, f"{path.name}, first {len(text):,} characters", notes)


def _held_out(data: np.ndarray, config: dict) -> tuple[np.ndarray, str]:
    """The test split if the run kept one, else the validation split, else the training text."""
    train, val, test = split_corpus(data, config["val_fraction"], config["test_fraction"])
    for part, name in ((test, "test split"), (val, "validation split")):
        if len(part) >= 2:
            return part, name
    return train, "training text"


def _decode(ids: np.ndarray, vocab: Vocab, chars: int) -> str:
    """``chars`` characters of ``ids`` from the start of its first full line (if one starts
    within ``LINE_SEARCH`` characters), so that the excerpt does not open mid-word."""
    text = vocab.decode(np.asarray(ids[: chars + LINE_SEARCH]))
    newline = text.find("\n", 0, LINE_SEARCH)
    return text[newline + 1 :][:chars] if 0 <= newline < len(text) - 2 else text[:chars]


def from_run(ckpt: Checkpoint, model: Model, chars: int) -> Excerpt:
    """``chars`` characters of the run's held-out text, else of a sample (see the module)."""
    vocab, config = Vocab(ckpt.vocab), ckpt.config
    corpus_name = Path(str(ckpt.meta.get("corpus"))).name
    with contextlib.suppress(CorpusError), recorded_ids(ckpt, vocab) as ids:
        if ids is not None:
            part, name = _held_out(ids, config)
            text = _decode(part, vocab, chars)
            del ids, part  # release the memory map before its folder goes
            return Excerpt(text, f"the {name} of {corpus_name}, {len(text):,} characters")
    ids = cached_ids(Path(ckpt.path).parent / "cache", vocab)
    if ids is not None:  # the run's text, but nothing recorded says it is the corpus's
        part, name = _held_out(ids, config)
        text = _decode(part, vocab, chars)
        return Excerpt(
            text,
            f"the {name} of {corpus_name} as the run cached it, {len(text):,} characters",
        )
    rng = np.random.default_rng(SAMPLE_SEED)
    text = "".join(generate(model, vocab, chars, temperature=SAMPLE_TEMPERATURE, rng=rng))
    return Excerpt(
        text,
        f"a sample the model wrote (temperature {SAMPLE_TEMPERATURE}, seed {SAMPLE_SEED}): "
        "neither the corpus with its recorded content nor the run's cache is there",
    )
