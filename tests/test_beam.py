"""Beam search against the exact answer: on tiny models every string of a short length can be
scored, so the most likely one is known."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnncli.beam import beam_search
from rnncli.model import Model
from rnncli.sample import Stops, generate, log_softmax
from rnncli.vocab import Vocab

VOCAB = Vocab("ab\n")


def peaky_model(seed: int, cell: str = "lstm") -> Model:
    """A random float64 model with sharper distributions than its initialisation gives."""
    model = Model(len(VOCAB), cell, 4, 2, dtype="float64", seed=seed)
    model.params = {name: p * 3.0 for name, p in model.params.items()}
    return model


def exact_log_prob(model: Model, prime: str, text: str) -> float:
    start = prime or "\n"
    stepper = model.stepper(1)
    for ch in start:
        logits = stepper.step(VOCAB.encode(ch))
    total = 0.0
    for ch in text:
        total += float(log_softmax(logits)[0, VOCAB.chars.index(ch)])
        logits = stepper.step(VOCAB.encode(ch))
    return total


def candidates(prime: str, length: int, stops: list[str]) -> list[str]:
    """Every possible continuation of ``prime``: strings that end at their first stop text
    (which may begin in the prime), or reach ``length`` without one."""
    found = set()
    for chars in itertools.product(VOCAB.chars, repeat=length):
        text = "".join(chars)
        ends = [
            i + 1 for i in range(length) if any((prime + text[: i + 1]).endswith(s) for s in stops)
        ]
        found.add(text[: ends[0]] if ends else text)
    return sorted(found)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("stops", [[], ["\n"], ["ab", "ba"]])
@pytest.mark.parametrize("length_norm", [False, True])
def test_a_wide_enough_beam_finds_the_most_likely_string(seed, stops, length_norm):
    model, length = peaky_model(seed), 5
    width = len(VOCAB) ** (length - 1)  # wide enough to keep every prefix: exhaustive

    def score(text):
        total = exact_log_prob(model, "b", text)
        return total / max(len(text), 1) if length_norm else total

    best = max(candidates("b", length, stops), key=score)
    found = beam_search(model, VOCAB, width, length, "b", Stops(stops), length_norm)
    assert found.text == "b" + best
    assert found.log_prob == pytest.approx(exact_log_prob(model, "b", best), abs=1e-9)
    assert found.stop == next((s for s in stops if ("b" + best).endswith(s)), None)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("stops", [[], ["a\n"]])
def test_beam_1_is_argmax(cell, stops):
    for seed in range(4):
        model = Model(len(VOCAB), cell, 6, 2, seed=seed)
        greedy = "".join(generate(model, VOCAB, 25, "ab", argmax=True, stops=Stops(stops)))
        assert beam_search(model, VOCAB, 1, 25, "ab", Stops(stops)).text == "ab" + greedy


@settings(max_examples=40, deadline=None, database=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    width=st.integers(2, 6),
    length=st.integers(0, 12),
    cell=st.sampled_from(["rnn", "lstm", "gru"]),
    stop=st.sampled_from([None, "\n", "ba"]),
    length_norm=st.booleans(),
)
def test_beam_is_never_less_likely_than_greedy(seed, width, length, cell, stop, length_norm):
    model = peaky_model(seed % 1000, cell)
    stops = Stops([stop] if stop else [])
    greedy = "".join(generate(model, VOCAB, length, "a", argmax=True, stops=stops))
    found = beam_search(model, VOCAB, width, length, "a", stops, length_norm)
    if not length_norm:
        assert found.log_prob >= exact_log_prob(model, "a", greedy) - 1e-9
    else:
        per_char = exact_log_prob(model, "a", greedy) / max(len(greedy), 1)
        assert found.log_prob / max(found.characters, 1) >= per_char - 1e-9
    assert found.log_prob == pytest.approx(exact_log_prob(model, "a", found.text[1:]), abs=1e-9)
    assert beam_search(model, VOCAB, width, length, "a", stops, length_norm) == found
    pieces = []
    streamed = beam_search(model, VOCAB, width, length, "a", stops, length_norm, pieces.append)
    assert "".join(pieces) == streamed.text[1:]  # what was written, once settled, stayed


def test_beam_search_can_lose_the_greedy_path_so_greedy_is_kept_as_a_candidate():
    # Search seeds for a case where keeping 2 prefixes alone ends below greedy: the reason the
    # greedy continuation is decoded too. Without one the guarantee above would be untested.
    from rnncli.beam import _search

    for seed in range(300):
        model = peaky_model(seed)
        greedy = _search(model, VOCAB, 1, 8, "a", Stops(), False).total
        narrow = _search(model, VOCAB, 2, 8, "a", Stops(), False).total
        if narrow < greedy - 1e-9:
            assert beam_search(model, VOCAB, 2, 8, "a").log_prob == pytest.approx(greedy)
            return
    pytest.skip("no seed below 300 makes a 2-wide beam lose to greedy")


def test_the_settled_part_of_a_search_streams_before_it_ends():
    model = peaky_model(0)
    pieces = []
    found = beam_search(model, VOCAB, 1, 300, "a", write=pieces.append)
    assert pieces == list(found.text[1:])  # one hypothesis: every character as it comes
    pieces.clear()
    found = beam_search(model, VOCAB, 3, 300, "a", write=pieces.append)
    assert "".join(pieces) == found.text[1:]
    # Greedy's text can win until the end, so only what the beam and greedy share is settled
    # early: here the first characters, written before the search ends.
    assert len(pieces) > 1 and len(pieces[0]) >= 1
