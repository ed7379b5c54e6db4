"""Sampling: the draws follow next_char_distribution, one uniform number per character and
stream; batches, stop texts, log-probabilities and the ordered, streamed output."""

import itertools
import json

import numpy as np
import pytest

from rnncli.model import Model
from rnncli.sample import (
    BatchSampler,
    Stops,
    drawer,
    generate,
    header,
    next_char_distribution,
    stream_generators,
    write_samples,
)
from rnncli.text import unescape, visible
from rnncli.vocab import Vocab

VOCAB = Vocab("abcdefgh \n")


def reference_distribution(logits, temperature=1.0, top_k=0, top_p=1.0):
    """Top-k then top-p, written plainly one character at a time."""
    z = logits.astype(np.float64) / temperature
    ranked = sorted(range(z.size), key=lambda i: (-z[i], i))
    allowed = set(ranked[:top_k]) if top_k else set(ranked)
    allowed |= {i for i in range(z.size) if z[i] == z[ranked[(top_k or z.size) - 1]]}  # ties in
    p = np.array([np.exp(z[i] - z.max()) if i in allowed else 0.0 for i in range(z.size)])
    p /= p.sum()
    if top_p < 1.0:
        total, kept = 0.0, set()
        for i in sorted(range(z.size), key=lambda i: (-p[i], i)):
            kept.add(i)
            total += p[i]
            if total >= top_p:
                break
        p = np.where([i in kept for i in range(z.size)], p, 0.0)
        p /= p.sum()
    return p


@pytest.mark.parametrize("options", [
    dict(), dict(temperature=0.5), dict(top_k=3), dict(top_p=0.8), dict(top_k=5, top_p=0.6),
])  # fmt: skip
def test_next_char_distribution_is_top_k_then_top_p(options):
    rng = np.random.default_rng(0)
    for _ in range(50):
        logits = rng.normal(0, 2, 12)
        expected = reference_distribution(logits, **options)
        assert np.allclose(next_char_distribution(logits, **options), expected, atol=1e-12)


def reference_draw(logits, u, **options):
    """The inverse-CDF draw from next_char_distribution, for the uniform number u."""
    p = next_char_distribution(logits, **options)
    return min(int(np.searchsorted(np.cumsum(p), u * p.sum())), p.size - 1)


@pytest.mark.parametrize("options", [
    dict(temperature=1.0), dict(temperature=0.7), dict(temperature=3.0), dict(top_k=4),
    dict(top_p=0.7, temperature=1.5),
])  # fmt: skip
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batched_draws_are_the_inverse_cdf_of_each_row(options, dtype):
    rng = np.random.default_rng(0)
    draw = drawer(options.get("temperature", 1.0), options.get("top_k", 0),
                   options.get("top_p", 1.0), False, 40)  # fmt: skip
    for _ in range(50):
        logits = rng.normal(0, 3, (7, 40)).astype(dtype)
        u = rng.random(7)
        expected = [reference_draw(row, x, **options) for row, x in zip(logits, u, strict=True)]
        picked, log_prob = draw(logits, u)
        assert picked.tolist() == expected
        model_p = [next_char_distribution(row)[i] for row, i in zip(logits, picked, strict=True)]
        assert log_prob == pytest.approx(np.log(model_p), abs=1e-9)


def test_whole_softmax_draw_survives_huge_logits():
    logits = np.array([[1e30, 2e30, -3e38, 2e30]], dtype=np.float32)
    draw = drawer(0.01, 0, 1.0, False, 4)
    rng = np.random.default_rng(2)
    assert {int(draw(logits, rng.random(1))[0][0]) for _ in range(50)} == {1, 3}  # no overflow


@pytest.mark.parametrize("options, uniforms", [
    (dict(), 1), (dict(temperature=0.5), 1), (dict(top_k=3), 1), (dict(top_p=0.8), 1),
    (dict(argmax=True), 0),
])  # fmt: skip
def test_generate_takes_one_uniform_number_per_character(options, uniforms):
    model = Model(len(VOCAB), "gru", 8, 2, seed=3)
    rng, expected = np.random.default_rng(4), np.random.default_rng(4)
    text = "".join(generate(model, VOCAB, 30, prime="ab", rng=rng, **options))
    assert len(text) == 30 and set(text) <= set(VOCAB.chars)
    expected.random(30 * uniforms)
    assert rng.random() == expected.random()


def test_top_k_1_is_argmax_and_a_seed_repeats_the_text():
    model = Model(len(VOCAB), "lstm", 8, 2, seed=5)

    def sample(seed, **options):
        return "".join(generate(model, VOCAB, 40, rng=np.random.default_rng(seed), **options))

    assert sample(1, top_k=1) == sample(2, argmax=True)
    assert sample(3, temperature=2.0) == sample(3, temperature=2.0) != sample(4, temperature=2.0)


def draw_samples(model, n, seed=7, length=40, **options):
    sampler = BatchSampler(model, VOCAB, stream_generators(seed, n), length, **options)
    for _ in sampler.steps():
        pass
    return sampler.samples


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_sample_i_of_a_seed_is_the_same_whatever_the_number_of_samples(cell):
    model = Model(len(VOCAB), cell, 16, 2, dtype="float64", seed=1)
    stops = Stops(["h\n"])
    runs = {n: draw_samples(model, n, prime="ba", stops=stops, temperature=1.5) for n in (1, 4, 9)}
    for n, samples in runs.items():
        assert [s.text for s in samples] == [s.text for s in runs[9][:n]]
        assert [s.log_prob for s in samples] == pytest.approx([s.log_prob for s in runs[9][:n]])
    assert len({s.text for s in runs[9]}) > 5  # and the streams differ from each other


@pytest.mark.parametrize("options", [{}, {"top_p": 0.9}, {"argmax": True}])
def test_an_unscored_sampler_draws_the_same_text_and_says_it_has_no_score(options):
    model = Model(len(VOCAB), "lstm", 8, 2, seed=3)
    scored = draw_samples(model, 3, prime="ab", **options)
    plain = draw_samples(model, 3, prime="ab", score=False, **options)
    assert [s.text for s in plain] == [s.text for s in scored]
    assert all(np.isfinite(s.log_prob) for s in scored)
    assert all(np.isnan(s.log_prob) and s.to_dict()["log_prob"] is None for s in plain)


def test_log_prob_is_the_models_log_probability_of_the_generated_characters():
    model = Model(len(VOCAB), "lstm", 8, 2, dtype="float64", seed=2)
    for sample in draw_samples(model, 3, prime="cab", top_k=4, temperature=0.8):
        ids = VOCAB.encode(sample.text)
        x, y = ids[None, :-1], ids[None, 1:]
        mask = np.arange(y.shape[1])[None, :] >= len("cab") - 1  # the generated targets
        loss, _, _ = model.forward(x, y, model.zero_state(1), mask=mask)
        assert sample.log_prob == pytest.approx(-loss * sample.characters, rel=1e-9)


def forced_sampler(prime, text, stops, n=1):
    """A sampler whose draws are replaced by the characters of ``text`` in turn."""
    vocab = Vocab(prime + text + "\n")
    model = Model(len(vocab), "rnn", 4, 1, dtype="float64")
    sampler = BatchSampler(model, vocab, stream_generators(0, n), len(text), prime, stops=stops)
    script = iter(vocab.encode(text))
    sampler._draw = lambda logits, u: (np.full(len(logits), next(script)), np.zeros(len(logits)))
    return sampler


@pytest.mark.parametrize("prime, text, stops, expected, stop", [
    ("", "abcabc", ["ca"], "abca", "ca"),  # kept in the output
    ("xy", "zabc", ["yz"], "xyz", "yz"),  # began in the prime, completed by a generated char
    ("xyz", "abc", ["yz"], "xyzabc", None),  # wholly inside the prime: not a stop
    ("xyz", "abc", ["xyza"], "xyza", "xyza"),  # spans three prime characters
    ("", "aaab", ["b", "aa"], "aa", "aa"),  # the first stop text completed wins
    ("", "ab\nc", ["\n"], "ab\n", "\n"),
])  # fmt: skip
def test_stop_texts_and_the_prime_boundary(prime, text, stops, expected, stop):
    sampler = forced_sampler(prime, text, Stops(stops))
    for _ in sampler.steps():
        pass
    (sample,) = sampler.samples
    assert (sample.text, sample.stop) == (expected, stop)
    assert sample.characters == len(expected) - len(prime)


def test_each_sample_stops_on_its_own_and_the_output_keeps_their_order():
    model = Model(len(VOCAB), "lstm", 8, 2, seed=4)
    stops = Stops(["a"])
    sampler = BatchSampler(model, VOCAB, stream_generators(3, 6), 30, "h", stops=stops)
    pieces = []
    samples = write_samples(sampler, pieces.append)
    ends = {s.characters for s in samples}
    assert len(ends) > 1  # they stopped at different steps
    expected = "".join(header(i, 6) + s.text + "\n" for i, s in enumerate(samples))
    assert "".join(pieces) == expected
    for s in samples:
        assert s.text.endswith("a") == (s.stop == "a")
        assert s.text.count("a") == (s.stop == "a")


def test_the_first_sample_streams_before_generation_ends():
    model = Model(len(VOCAB), "gru", 8, 1, seed=1)
    sampler = BatchSampler(model, VOCAB, stream_generators(1, 3), 50)
    seen = []

    def write(text):
        seen.append((text, [s is None for s in sampler.samples]))

    write_samples(sampler, write)
    first_chars = [unfinished for text, unfinished in seen[1:51]]
    assert all(all(flags) for flags in first_chars)  # written while all three were running
    assert [text for text, _ in seen[1:51]] == list(sampler.samples[0].text)


def test_json_output_is_a_list_of_sample_objects():
    model = Model(len(VOCAB), "lstm", 8, 1, seed=1)
    sampler = BatchSampler(model, VOCAB, stream_generators(5, 3), 20, "ab", stops=Stops(["e"]))
    pieces = []
    samples = write_samples(sampler, pieces.append, as_json=True)
    records = json.loads("".join(pieces))
    assert records == [s.to_dict() for s in samples]
    assert {r["stop_reason"] for r in records} <= {"stop", "length"}
    for r in records:
        assert r["text"].startswith("ab") and len(r["text"]) == 2 + r["characters"]
        assert (r["stop_reason"] == "stop") == (r["stop"] == "e")
        assert r["log_prob"] < 0


def test_stop_texts_cannot_be_empty():
    with pytest.raises(ValueError, match="empty"):
        Stops(["a", ""])


@pytest.mark.parametrize("typed, meant", [
    ("\\n", "\n"), ("a\\tb", "a\tb"), ("\\\\n", "\\n"), ("x\\r\\n", "x\r\n"), ("plain", "plain"),
])  # fmt: skip
def test_unescape(typed, meant):
    assert unescape(typed) == meant


@pytest.mark.parametrize("typed", ["\\q", "end\\", "\\x41"])
def test_unknown_escapes_are_refused(typed):
    with pytest.raises(ValueError, match="escape"):
        unescape(typed)


def test_visible_shows_every_character_on_one_line():
    chars = ["a", " ", "\n", "\t", "\r", "\\", "\x07", "\u2028", "é", "s"]
    shown = [visible(c, space=True) for c in chars]
    assert shown[:7] == ["a", "\\s", "\\n", "\\t", "\\r", "\\\\", "\\x07"]
    assert len(set(shown)) == len(shown) and all("\n" not in s for s in shown)
    pairs = ["".join(p) for p in itertools.product(chars, repeat=2)]
    assert len({visible(p, space=True) for p in pairs}) == len(pairs)  # no two look the same
    assert visible("a b\\n") == "a b\\\\n"


def test_without_keep_text_only_counts_are_kept():
    model = Model(len(VOCAB), "gru", 8, 1, seed=2)
    kept = draw_samples(model, 3, prime="ab", stops=Stops(["c"]))
    sampler = BatchSampler(model, VOCAB, stream_generators(7, 3), 40, "ab", stops=Stops(["c"]),
                           keep_text=False)  # fmt: skip
    streamed = ["ab"] * 3
    for active, new in sampler.steps():
        for i, ch in zip(active, new, strict=True):
            streamed[i] += ch
    assert streamed == [s.text for s in kept]  # the same draws, only not kept
    assert [s.text for s in sampler.samples] == [None] * 3
    assert [s.characters for s in sampler.samples] == [s.characters for s in kept]
    assert [s.log_prob for s in sampler.samples] == [s.log_prob for s in kept]
