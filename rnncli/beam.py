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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .model import Model
from .sample import Sample, Stops, log_softmax, primed, start_text
from .vocab import Vocab

SETTLE_DEPTH = 256  # steps back to look for the hypotheses' common ancestor (bounds the work)


@dataclass
class _Found:
    ids: list[int]  # generated character ids
    total: float  # their log-probability
    stop: str | None  # the stop text that ended it, None if it reached the length

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
    write: Callable[[str], None] | None = None,
) -> Sample:
    """The best continuation found with ``width`` hypotheses, never worse than greedy's.

    With ``write``, the continuation is written while the search runs, as far as it is
    settled: characters shared by every text that can still be the result (the live
    hypotheses' common ancestry, the best finished text, and greedy's while it could still win).
    """
    stops = stops or Stops()
    greedy = _search(model, vocab, 1, length, prime, stops, False) if width > 1 else None
    written: list[int] = []

    def settle(ids: list[int]) -> None:
        written.extend(ids)
        if write is not None and ids:
            write("".join(vocab.chars[i] for i in ids))

    best = _search(model, vocab, width, length, prime, stops, length_norm, greedy, written, settle)
    if greedy is not None and greedy.score(length_norm) > best.score(length_norm):
        best = greedy
    settle(best.ids[len(written) :])
    text = prime + "".join(vocab.chars[i] for i in best.ids)
    return Sample(text, len(best.ids), best.stop, best.total)


def _common_prefix(a: list[int], b: list[int]) -> list[int]:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _search(
    model: Model,
    vocab: Vocab,
    width: int,
    length: int,
    prime: str,
    stops: Stops,
    length_norm: bool,
    rival: _Found | None = None,
    known: list[int] | None = None,
    settle: Callable[[list[int]], None] = lambda ids: None,
) -> _Found:
    """The best result of a search keeping ``width`` hypotheses. Hypotheses are rows of the
    stepper; each step records every kept row's parent row and character, so a text is traced
    back only when it is needed (memory and time linear in the length). After each step,
    ``settle`` is given the characters that every possible result now starts with beyond the
    ``known`` ones (which it appends to ``known``), counting ``rival`` (greedy's result, which
    wins if it scores higher) among the possible results while it can still win."""
    known = known if known is not None else []
    chars, V = vocab.chars, len(vocab)
    stepper, logits = primed(model, vocab, start_text(vocab, prime), width)
    totals, tails = np.zeros(1), [stops.tail(prime)]
    parents: list[list[int]] = []
    picks: list[list[int]] = []
    done: _Found | None = None

    def trace(step: int, row: int, first: int = 0) -> list[int]:
        """The characters of steps ``first`` to ``step`` on the way to ``row``."""
        ids = []
        for t in range(step, first - 1, -1):
            ids.append(picks[t][row])
            row = parents[t][row]
        return ids[::-1]

    def settled(step: int, live: int) -> list[int]:
        """The characters beyond ``known`` that every possible result now starts with: from
        the live rows' shared ancestry (looked for at most ``SETTLE_DEPTH`` steps back), cut
        to what the best finished text and the rival share with it."""
        have = len(known)
        rows, t = set(range(live)), step
        while len(rows) > 1 and t >= have and step - t < SETTLE_DEPTH:
            rows = {parents[t][r] for r in rows}
            t -= 1
        if len(rows) > 1 or t < have:
            return []
        new = trace(t, rows.pop(), have)
        for other in (done, rival):
            if other is None or (other is rival and not better(rival)):
                continue  # the rival cannot win once a finished text scores at least as high
            new = _common_prefix(new, other.ids[have:])
        return new

    def better(found: _Found) -> bool:
        return done is None or found.score(length_norm) > done.score(length_norm)

    for step in range(length):
        extended = totals[:, None] + log_softmax(logits[: len(totals)])
        rows, picked, kept, kept_tails = [], [], [], []
        for j in np.argsort(-extended.ravel(), kind="stable")[:width]:  # the K best extensions
            total = float(extended.flat[j])
            if not np.isfinite(total):
                break
            k, v = divmod(int(j), V)
            tail, hit = stops.advance(tails[k], chars[v]) if stops else ("", None)
            if hit is None:
                rows.append(k)
                picked.append(v)
                kept.append(total)
                kept_tails.append(tail)
                continue
            score = total / (step + 1) if length_norm else total
            if done is None or score > done.score(length_norm):  # traced only if it is better
                done = _Found((trace(step - 1, k) if step else []) + [v], total, hit)
        if not kept:
            return done
        parents.append(rows)
        picks.append(picked)
        totals, tails = np.array(kept), kept_tails
        if done is not None and not length_norm and done.total >= totals[0]:
            return done  # every continuation only loses probability from here
        new = settled(step, len(rows))
        if new:
            settle(new)
        spare = width - len(rows)  # streams without a hypothesis copy the first
        stepper.select(rows + [rows[0]] * spare)
        logits = stepper.step(np.array(picked + [picked[0]] * spare))
    scores = totals / max(length, 1) if length_norm else totals
    best = int(np.argmax(scores))  # the first of equals
    found = _Found(trace(length - 1, best) if length else [], float(totals[best]), None)
    return found if better(found) else done
