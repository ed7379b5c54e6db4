"""Sampling: the draws follow next_char_distribution, one uniform number per character."""

import numpy as np
import pytest

from rnncli.data import Vocab
from rnncli.model import Model
from rnncli.sample import _chooser, generate, next_char_distribution

VOCAB = Vocab("abcdefgh \n")


def reference_draw(logits, u, **options):
    """The inverse-CDF draw from next_char_distribution, for the uniform number u."""
    p = next_char_distribution(logits, **options)
    return min(int(np.searchsorted(np.cumsum(p), u * p.sum())), p.size - 1)


@pytest.mark.parametrize("temperature", [1.0, 0.7, 3.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_whole_softmax_draw_is_the_inverse_cdf_of_the_distribution(temperature, dtype):
    logits = np.random.default_rng(0).normal(0, 3, 40).astype(dtype)
    choose = _chooser(40, temperature, 0, 1.0, False, np.random.default_rng(1))
    uniforms = np.random.default_rng(1)
    for _ in range(500):
        expected = reference_draw(logits, uniforms.random(), temperature=temperature)
        assert choose(logits) == expected


def test_whole_softmax_draw_survives_huge_logits():
    logits = np.array([1e30, 2e30, -3e38, 2e30], dtype=np.float32)
    choose = _chooser(4, 0.01, 0, 1.0, False, np.random.default_rng(2))
    assert {choose(logits) for _ in range(50)} == {1, 3}  # the two largest, no overflow


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
