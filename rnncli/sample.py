"""Generating text: many streams at once, each drawing one character per step.

The prime text (if any) is fed through the model to set its hidden state; then each step turns
the last logits of every stream into a distribution, draws a character per stream, and feeds
them all back in with one matrix product per layer:

    p = softmax(logits / temperature), restricted to the top-k characters and/or the smallest set
    whose probability reaches top-p (nucleus sampling), renormalised; --argmax takes the most
    likely character instead.

Stream i draws its uniform numbers from its own generator, ``SeedSequence(seed).spawn(n)[i]``,
which does not depend on n: sample i of a seed is the same text however many samples are drawn
with it (up to the float rounding of the batched products, which differs from a single
stream's in the last bit and so changes a character only when a draw lands within about 1e-7
of the boundary between two characters).

A sample ends after ``length`` characters or as soon as its text ends with a stop text whose
last character was generated: a stop text may begin inside the prime, but one lying wholly
inside the prime does not end anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import CommandError
from .model import Model, Stepper
from .rules import Rule
from .untrusted import short
from .vocab import Vocab

MAX_SEED = 2**63 - 1  # the largest seed taken: an unsigned 64-bit range is not needed, and a
# signed one keeps seeds printable and storable everywhere
MAX_HELD_CHARS = 10_000_000  # characters held when samples are kept whole (several, --json, API)


# -- the settings of generation, checked in one place for the command line and the Python API ----


# setting -> rule: ``rnn sample``'s options and ``CharModel.sample`` check with these (a seed may
# also be None: drawn afresh)
SAMPLING_RULES = {
    "length": Rule(whole=True, low=0),
    "temperature": Rule(whole=False, low=0, low_open=True),
    "top_k": Rule(whole=True, low=0),
    "top_p": Rule(whole=False, low=0, high=1, low_open=True),
    "seed": Rule(whole=True, low=0, high=MAX_SEED),
}


def checked_stops(texts: Sequence[str]) -> Stops:
    """``Stops`` of ``texts``; CommandError for an empty one or one that is not a string."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list | tuple) or any(not isinstance(t, str) for t in texts):
        raise CommandError(f"stop: expected a text or a list of texts, got {short(texts)}")
    try:
        return Stops(texts)
    except ValueError as err:
        raise CommandError(f"stop: {err}") from None


def check_held(length: int, samples: int = 1) -> None:
    """Refuse samples kept whole in memory beyond ``MAX_HELD_CHARS`` characters in all."""
    if samples * length > MAX_HELD_CHARS:
        raise CommandError(
            f"--num-samples x --length is at most {MAX_HELD_CHARS:,} characters with several "
            f"samples, --json or --beam (texts are held in memory), got {samples * length:,}"
        )


def prime_text(
    vocab: Vocab, prime: str, drop_unknown: bool = False, offers_drop: bool = True
) -> str:
    """``prime`` with the characters outside the vocabulary dropped if ``drop_unknown``, else
    CommandError naming them (and --drop-unknown, where the command ``offers_drop``)."""
    if not isinstance(prime, str):
        raise CommandError(f"--prime must be a text, got {prime!r}")
    unknown = vocab.unknown(prime)
    if unknown and not drop_unknown:
        hint = " (pass --drop-unknown to leave them out)" if offers_drop else ""
        raise CommandError(
            f"--prime has characters outside the model's vocabulary: {''.join(unknown)!r}{hint}"
        )
    return vocab.drop_unknown(prime)


def next_char_distribution(
    logits: np.ndarray, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> np.ndarray:
    """Probabilities (float64, summing to 1) over the vocabulary for one (V,) logit vector."""
    return _truncated(logits[None, :], temperature, top_k, top_p)[0]


def _truncated(logits: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """``next_char_distribution`` of every row of (B, V) logits."""
    z = scaled(logits, logits.max(axis=1, keepdims=True), temperature)
    B, V = z.shape
    if 0 < top_k < V:
        # everything below the k-th largest logit of its row is excluded
        kth = np.partition(z, V - top_k, axis=1)[:, V - top_k, None]
        z[z < kth] = -np.inf
    p = np.exp(z)  # each row's largest is exactly 0, so each sum is at least 1
    p /= p.sum(axis=1, keepdims=True)
    if top_p < 1.0:
        order = np.argsort(-p, axis=1, kind="stable")
        cumulative = np.cumsum(np.take_along_axis(p, order, axis=1), axis=1)
        keep = (cumulative < top_p).sum(axis=1, keepdims=True) + 1  # smallest prefix reaching p
        dropped = np.arange(V) >= keep  # by rank
        np.put_along_axis(p, order, np.where(dropped, 0.0, np.take_along_axis(p, order, 1)), 1)
        p /= p.sum(axis=1, keepdims=True)
    return p


def scaled(logits: np.ndarray, top: np.ndarray, temperature: float) -> np.ndarray:
    """``(logits - top) / temperature`` in float64, ``top`` each row's largest logit: taking the
    largest away first keeps it at exactly 0 at any temperature, so a temperature so small that
    the others overflow to -inf (any below about 1e-300) draws the most likely character, as the
    limit does, never NaN."""
    z = np.subtract(logits, top, dtype=np.float64)
    if temperature != 1.0:
        with np.errstate(over="ignore"):  # -inf is the right limit of what overflows
            z /= temperature
    return z


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities (float64) of (B, V) logits, row by row."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    return z


def drawer(
    temperature: float,
    top_k: int,
    top_p: float,
    argmax: bool,
    vocab_size: int,
    score: bool = True,
) -> Callable[[np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray | None]]:
    """The rule that picks each row's next character from (B, V) logits and (B,) uniform
    numbers in [0, 1) (None for ``argmax``, which draws none): an inverse-CDF lookup, so that a
    seed gives the same text whatever the options. It returns the picks and, if ``score``,
    their log-probabilities under the model itself (softmax of the logits at temperature 1),
    else None: plain output needs no scores, and one stream's draw is a good part of its step."""

    rows = np.arange(0)

    def log_prob(logits, picked, top, log_total=None):
        # log softmax(logits)[picked] = logits[picked] - max - log sum exp(logits - max)
        nonlocal rows
        if not score:
            return None
        if log_total is None:
            log_total = np.log(np.exp(np.subtract(logits, top, dtype=np.float64)).sum(axis=1))
        if len(rows) != len(picked):
            rows = np.arange(len(picked))  # made once for a run of steps of one batch size
        return np.subtract(logits[rows, picked], top[:, 0], dtype=np.float64) - log_total

    if argmax:

        def pick_most_likely(logits, u):
            picked = np.argmax(logits, axis=1)
            return picked, log_prob(logits, picked, logits.max(axis=1, keepdims=True))

        return pick_most_likely

    if 0 < top_k < vocab_size or top_p < 1.0:

        def draw_truncated(logits, u):
            p = _truncated(logits, temperature, top_k, top_p)
            cumulative = np.cumsum(p, axis=1)
            picked = (cumulative < (u * p.sum(axis=1))[:, None]).sum(axis=1)
            picked = np.minimum(picked, vocab_size - 1)
            return picked, log_prob(logits, picked, logits.max(axis=1, keepdims=True))

        return draw_truncated

    def draw(logits, u):
        # The whole softmax, the common case: cumulative sums of the float64 weights
        # exp((z - max z) / temperature), unnormalised: u is scaled to their total instead
        # (and u < 1 keeps the index below V). At temperature 1 the total is the softmax's.
        top = logits.max(axis=1, keepdims=True)
        weights = scaled(logits, top, temperature)
        np.exp(weights, out=weights)
        cumulative = np.add.accumulate(weights, axis=1, out=weights)
        picked = (cumulative < (u * cumulative[:, -1])[:, None]).sum(axis=1)
        log_total = np.log(cumulative[:, -1]) if score and temperature == 1.0 else None
        return picked, log_prob(logits, picked, top, log_total)

    return draw


class Stops:
    """Stop texts, matched at the end of the text so far each time a character is generated."""

    def __init__(self, texts: Sequence[str] = ()):
        if any(not text for text in texts):
            raise ValueError("a stop text cannot be empty")
        self.texts = tuple(dict.fromkeys(texts))
        self._keep = max(map(len, self.texts), default=1) - 1  # characters a match reaches back

    def __bool__(self) -> bool:
        return bool(self.texts)

    def tail(self, context: str) -> str:
        """The end of ``context`` that a stop text completed by later characters can reach."""
        return context[len(context) - self._keep :] if self._keep else ""

    def advance(self, tail: str, char: str) -> tuple[str, str | None]:
        """The tail after ``char`` is appended, and the stop text it completes (or None)."""
        tail += char
        for text in self.texts:
            if tail.endswith(text):
                return tail, text
        return (tail[len(tail) - self._keep :] if self._keep else ""), None


@dataclass
class Sample:
    """A finished sample: ``text`` is the prime followed by ``characters`` generated ones (None
    when the sampler was told not to keep it)."""

    text: str | None
    characters: int
    stop: str | None  # the stop text that ended it; None when it reached the length
    log_prob: float  # of the generated characters under the model (temperature 1), in nats;
    # NaN when the sampler was told not to score (to_dict gives null)

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "characters": self.characters,
            "stop_reason": "length" if self.stop is None else "stop",
            "stop": self.stop,
            "log_prob": self.log_prob if np.isfinite(self.log_prob) else None,  # JSON has no inf
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)


def start_text(vocab: Vocab, prime: str) -> str:
    """What generation is conditioned on: the prime, else a newline (else the first character
    of the vocabulary, for a corpus without newlines)."""
    return prime or ("\n" if "\n" in vocab.chars else vocab.chars[0])


def primed(model: Model, vocab: Vocab, text: str, streams: int) -> tuple[Stepper, np.ndarray]:
    """A stepper of ``streams`` streams that have all read ``text`` (non-empty), and the logits
    (streams, V) of their next character. The text is read by one stream and its state copied,
    so every stream starts from the same bits whatever their number."""
    one = model.stepper(1)
    for i in vocab.encode(text):
        logits = one.step(np.array([i]))
    if streams == 1:
        return one, logits
    stepper = model.stepper(streams, np.repeat(one.state, streams, axis=2))
    return stepper, np.repeat(logits, streams, axis=0)


def stream_generators(seed: int | None, n: int) -> list[np.random.Generator]:
    """Stream i's generator: child i of ``SeedSequence(seed)``, the same for every n > i."""
    return [np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(n)]


class BatchSampler:
    """Draws ``len(rngs)`` samples at once. ``steps()`` yields, step by step, the streams that
    generated a character and those characters; afterwards ``samples`` holds the results, with
    their texts if ``keep_text`` (without, memory does not grow with the length)."""

    def __init__(
        self,
        model: Model,
        vocab: Vocab,
        rngs: Sequence[np.random.Generator],
        length: int,
        prime: str = "",
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        argmax: bool = False,
        stops: Stops | None = None,
        keep_text: bool = True,
        score: bool = True,
    ):
        self.model, self.vocab, self.rngs = model, vocab, list(rngs)
        self.keep_text, self.score = keep_text, score
        self.length, self.prime = length, prime
        self.stops = stops or Stops()
        self._draw = drawer(temperature, top_k, top_p, argmax, len(vocab), score)
        self._argmax = argmax
        self.samples: list[Sample | None] = [None] * len(self.rngs)

    def steps(self) -> Iterator[tuple[list[int], list[str]]]:
        n, chars = len(self.rngs), self.vocab.chars
        stepper, logits = primed(self.model, self.vocab, start_text(self.vocab, self.prime), n)
        tails = [self.stops.tail(self.prime)] * n
        texts: list[list[str]] = [[] for _ in range(n)]
        counts = [0] * n
        log_prob = np.zeros(n) if self.score else np.full(n, np.nan)
        active = list(range(n))
        for _ in range(self.length):
            if not active:
                break
            u = None if self._argmax else np.array([rng.random() for rng in self.rngs])
            picked, picked_log_prob = self._draw(logits, u)
            if picked_log_prob is not None:
                log_prob += picked_log_prob
            ids = picked.tolist()  # Python ints index faster than numpy scalars
            new = [chars[ids[i]] for i in active]
            yield active, new
            still = []
            for i, ch in zip(active, new, strict=True):
                counts[i] += 1
                if self.keep_text:
                    texts[i].append(ch)
                if self.stops:
                    tails[i], hit = self.stops.advance(tails[i], ch)
                    if hit is not None:
                        self._finish(i, texts[i], counts[i], hit, log_prob[i])
                        continue
                still.append(i)
            active = still
            if active:
                logits = stepper.step(picked)
        for i in active:
            self._finish(i, texts[i], counts[i], None, log_prob[i])

    def _finish(self, i: int, text: list[str], count: int, stop, log_prob: float) -> None:
        kept = self.prime + "".join(text) if self.keep_text else None
        self.samples[i] = Sample(kept, count, stop, float(log_prob))


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
    stops: Stops | None = None,
) -> Iterator[str]:
    """Yield the characters generated after ``prime`` by one stream (``BatchSampler`` of one)."""
    rng = rng if rng is not None else np.random.default_rng()
    sampler = BatchSampler(
        model, vocab, [rng], length, prime, temperature, top_k, top_p, argmax, stops, False, False
    )
    for _, new in sampler.steps():
        yield new[0]


def sample_text(
    model: Model,
    vocab: Vocab,
    length: int,
    prime: str = "",
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    argmax: bool = False,
    stops: Stops | None = None,
    seed: int | None = None,
) -> str:
    """One sample whole, the prime and what follows: the text ``rnn sample --seed SEED`` prints
    (its generator is stream 0 of ``stream_generators``)."""
    check_held(length)
    (rng,) = stream_generators(seed, 1)
    drawn = generate(model, vocab, length, prime, temperature, top_k, top_p, argmax, rng, stops)
    return prime + "".join(drawn)


def header(i: int, n: int) -> str:
    """The line before sample i (from 0) of n > 1 in plain output."""
    return f"--- sample {i + 1} of {n} ---\n"


def write_samples(
    sampler: BatchSampler, write: Callable[[str], None], as_json: bool = False
) -> list[Sample]:
    """Write the samples in order while they are generated, and return them.

    Plain output: one sample is its text and a newline; several are each preceded by their
    ``header`` line. The lowest-numbered unfinished sample streams character by character; the
    characters of later ones are held until its turn comes, then written at once. JSON: a list
    with one object (``Sample.to_dict``) per line, each written as soon as it and all before it
    are finished.
    """
    n, prime = len(sampler.rngs), sampler.prime
    held: dict[int, list[str]] = {i: [] for i in range(1, n)}
    live = 0

    def begin(i: int) -> None:
        if not as_json:
            write((header(i, n) if n > 1 else "") + prime + "".join(held.pop(i, [])))

    def end(i: int) -> None:
        if as_json:
            write(("[\n" if i == 0 else ",\n") + sampler.samples[i].to_json())
        else:
            write("\n")

    def catch_up() -> int:
        i = live
        while i < n and sampler.samples[i] is not None:
            end(i)
            i += 1
            if i < n:
                begin(i)
        return i

    begin(0)
    for active, new in sampler.steps():
        for i, ch in zip(active, new, strict=True):
            if as_json:
                break  # JSON takes the finished texts from the sampler
            if i == live:
                write(ch)
            else:
                held[i].append(ch)
        live = catch_up()
    live = catch_up()
    if as_json:
        write("\n]\n")
    return sampler.samples
