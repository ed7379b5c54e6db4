"""Beam search: the most likely continuation of a prime, found by keeping the K best prefixes.

Each step extends every kept prefix (hypothesis) by every character, scores the extensions by
total log-probability (nats), and takes the K best; their hidden states ride along as the K
streams of one ``Stepper``. One of those whose text ends with a stop text is finished: it leaves
the beam (which runs on with fewer), and the best finished one is remembered. The search ends after
``length`` characters, or earlier when no hypothesis is left or (without length normalisation)
none can still beat the best finished one, since adding characters only lowers a total.

Ranking the results (finished ones and those that reached the length) uses the total, or with
``length_norm`` the total divided by the number of generated characters, which stops short
endings from winning just for being short. Keeping the K best prefixes can lose the greedy path
and end below it, so the greedy continuation is decoded too and wins if it scores higher: the
result is never less likely than ``--argmax``'s. Ties go to the earlier hypothesis, then the
lower character id: the search is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import Vocab
from .model import Model
from .sample import Sample, Stops, log_softmax, primed, start_text


@dataclass
class _Hypothesis:
    ids: list[int]  # generated character ids
    total: float  # their log-probability
    tail: str  # for stop-text matching

    def score(self, length_norm: bool) -> float:
        return self.total / max(len(self.ids), 1) if length_norm else self.total


def beam_search(
    model: Model,
    vocab: Vocab,
    width: int,
    length: int,
    prime: str = "",
    stops: Stops | None = None,
    length_norm: bool = False,
) -> Sample:
    """The best continuation found with ``width`` hypotheses, never worse than greedy's."""
    stops = stops or Stops()
    best = _search(model, vocab, width, length, prime, stops, length_norm)
    if width > 1:
        greedy = _search(model, vocab, 1, length, prime, stops, False)
        if greedy[0].score(length_norm) > best[0].score(length_norm):
            best = greedy
    hypothesis, stop = best
    text = prime + "".join(vocab.chars[i] for i in hypothesis.ids)
    return Sample(text, len(hypothesis.ids), stop, hypothesis.total)


def _search(
    model: Model,
    vocab: Vocab,
    width: int,
    length: int,
    prime: str,
    stops: Stops,
    length_norm: bool,
) -> tuple[_Hypothesis, str | None]:
    """The best (hypothesis, stop text or None) of a search keeping ``width`` hypotheses."""
    chars, V = vocab.chars, len(vocab)
    stepper, logits = primed(model, vocab, start_text(vocab, prime), width)
    beam = [_Hypothesis([], 0.0, stops.tail(prime))]
    done: tuple[_Hypothesis, str | None] | None = None

    def better(h: _Hypothesis, than: tuple[_Hypothesis, str | None] | None) -> bool:
        return than is None or h.score(length_norm) > than[0].score(length_norm)

    for _ in range(length):
        totals = np.array([h.total for h in beam])[:, None] + log_softmax(logits[: len(beam)])
        kept, rows = [], []
        for j in np.argsort(-totals.ravel(), kind="stable")[:width]:  # the K best extensions
            if not np.isfinite(totals.flat[j]):
                break
            k, v = divmod(int(j), V)
            tail, hit = stops.advance(beam[k].tail, chars[v]) if stops else ("", None)
            h = _Hypothesis(beam[k].ids + [v], float(totals.flat[j]), tail)
            if hit is None:
                kept.append(h)
                rows.append(k)
            elif better(h, done):
                done = (h, hit)
        if not kept:
            return done
        beam = kept
        if done is not None and not length_norm and done[0].total >= beam[0].total:
            return done  # every continuation only loses probability from here
        padded = rows + [rows[0]] * (width - len(rows))  # spare streams copy a live one
        stepper.select(padded)
        logits = stepper.step(
            np.array([h.ids[-1] for h in beam] + [beam[0].ids[-1]] * (width - len(beam)))
        )
    top = max(beam, key=lambda h: h.score(length_norm))  # max keeps the first of equals
    return (top, None) if better(top, done) else done
