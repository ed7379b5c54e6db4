"""Generating text one character at a time.

The prime text (if any) is fed through the model to set its hidden state; then each step turns the
last logits into a distribution, draws a character, and feeds it back in:

    p = softmax(logits / temperature), restricted to the top-k characters and/or the smallest set
    whose probability reaches top-p (nucleus sampling), renormalised; --argmax takes the most
    likely character instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from .data import Vocab
from .model import Model


def next_char_distribution(
    logits: np.ndarray, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> np.ndarray:
    """Probabilities (float64, summing to 1) over the vocabulary for one (V,) logit vector."""
    z = logits.astype(np.float64) / temperature
    if 0 < top_k < z.size:
        # everything below the k-th largest logit is excluded
        kth = np.partition(z, z.size - top_k)[z.size - top_k]
        z[z < kth] = -np.inf
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        cumulative = np.cumsum(p[order])
        keep = int(np.searchsorted(cumulative, top_p)) + 1  # smallest prefix reaching top_p
        p[order[keep:]] = 0.0
        p /= p.sum()
    return p


def _chooser(
    size: int, temperature: float, top_k: int, top_p: float, argmax: bool, rng: np.random.Generator
) -> Callable[[np.ndarray], int]:
    """The rule that picks the next character's index from one (size,) logit vector. Random
    draws take one ``rng.random()`` each, for an inverse-CDF lookup (cheaper than
    ``rng.choice``), so that a seed gives the same text whatever the options."""
    if argmax:
        return lambda logits: int(np.argmax(logits))
    if 0 < top_k < size or top_p < 1.0:

        def draw_truncated(logits):
            p = next_char_distribution(logits, temperature, top_k, top_p)
            return min(int(np.searchsorted(np.cumsum(p), rng.random() * p.sum())), p.size - 1)

        return draw_truncated
    # The whole softmax, the common case: cumulative sums of the float64 weights
    # exp((z - max z) / temperature), in buffers made once. They need no normalising, since the
    # uniform number is scaled to their total (and u < 1 keeps the index below size).
    weights, cumulative = np.empty(size), np.empty(size)

    def draw(logits):
        np.subtract(logits, logits.max(), out=weights, dtype=np.float64)
        if temperature != 1.0:
            np.divide(weights, temperature, out=weights)
        np.exp(weights, out=weights)
        np.add.accumulate(weights, out=cumulative)  # np.cumsum's wrappers cost more than the sum
        return int(cumulative.searchsorted(rng.random() * cumulative[-1]))

    return draw


def generate(
    model: Model,
    vocab: Vocab,
    length: int,
    prime: str = "",
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    argmax: bool = False,
    rng: np.random.Generator | None = None,
) -> Iterator[str]:
    """Yield ``length`` generated characters after running ``prime`` through the model.

    Without a prime, generation starts as if just after a newline (the first character of the
    vocabulary if the corpus had no newline).
    """
    rng = rng if rng is not None else np.random.default_rng()
    choose = _chooser(model.vocab_size, temperature, top_k, top_p, argmax, rng)
    start = prime or ("\n" if "\n" in vocab.chars else vocab.chars[0])
    stepper = model.stepper(1)
    idx = np.zeros(1, dtype=np.intp)
    for i in vocab.encode(start):
        idx[0] = i
        logits = stepper.step(idx)
    for _ in range(length):
        nxt = choose(logits[0])
        yield vocab.chars[nxt]
        idx[0] = nxt
        logits = stepper.step(idx)


def write_samples(
    model: Model,
    vocab: Vocab,
    write: Callable[[str], None],
    num_samples: int = 1,
    length: int = 500,
    prime: str = "",
    seed: int | None = None,
    separator: str = "\n\n",
    **options,
) -> None:
    """Write ``num_samples`` samples, each the prime followed by its continuation, as generated."""
    rng = np.random.default_rng(seed)
    for n in range(num_samples):
        if n:
            write(separator)
        write(prime)
        for ch in generate(model, vocab, length, prime, rng=rng, **options):
            write(ch)
