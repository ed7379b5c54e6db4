"""The bench-only model and optimizer variants of issue 17's investigation
(tests/bench/variants.py): gradients against finite differences, update rules against their
formulas. No PyTorch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnncli.gradcheck import numerical_gradient, rel_error
from rnncli.model import Model
from rnncli.optim import Adam
from tests.bench import variants


def test_embedded_lstm_backward_matches_finite_differences():
    V, E, H, L, B, T = 5, 3, 4, 2, 3, 4
    model = variants.EmbeddedLSTM(V, E, H, L, dtype="float64", seed=1)
    rng = np.random.default_rng(0)
    model.params["rnn.0.b"] += rng.uniform(-0.5, 0.5, 4 * H)
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    mask = rng.random((B, T)) < 0.7
    mask[0, 0] = True
    state0 = rng.uniform(-0.9, 0.9, model.zero_state(B).shape)

    def loss() -> float:
        return model.forward(x, y, state0, mask)[0]

    grads, dstate0 = model.backward(model.forward(x, y, state0, mask)[2])
    assert set(grads) == set(model.params)
    for name, p in model.params.items():
        assert rel_error(grads[name], numerical_gradient(loss, p)) < 1e-7, name
    assert rel_error(dstate0, numerical_gradient(loss, state0)) < 1e-7


def test_embedded_lstm_shapes_and_initial_scales():
    model = variants.EmbeddedLSTM(65, 16, 32, 2, seed=0)
    p = model.params
    assert p["embed.W"].shape == (65, 16) and p["rnn.0.Wx"].shape == (16, 128)
    assert p["rnn.1.Wx"].shape == (32, 128) and p["out.W"].shape == (32, 65)
    assert all(a.dtype == np.float32 for a in p.values())
    assert 0.8 < p["embed.W"].std() < 1.2  # N(0, 1)
    assert np.abs(p["rnn.0.Wx"]).max() <= 1 / math.sqrt(32)
    loss, final, _ = model.forward(np.zeros((2, 3), int), np.ones((2, 3), int), model.zero_state(2))
    assert final.shape == (2, 2, 2, 32) and abs(loss - math.log(65)) < 0.5


def test_layer0_scale_redraws_only_layer0_input_weights():
    model = Model(10, "lstm", 8, 2, seed=0)
    before = {name: p.copy() for name, p in model.params.items()}
    variants.init_layer0_scale(model, 0.25, seed=0)
    Wx = model.params["rnn.0.Wx"]
    assert np.abs(Wx).max() <= 0.25 and np.abs(Wx).max() > 0.2
    assert all(np.array_equal(before[n], p) for n, p in model.params.items() if n != "rnn.0.Wx")


def test_orthogonal_recurrent_blocks_are_orthogonal():
    model = Model(10, "lstm", 8, 2, seed=0)
    variants.init_orthogonal_recurrent(model, seed=0)
    for layer in range(2):
        Wh = model.params[f"rnn.{layer}.Wh"].astype(np.float64)
        for k in range(4):
            block = Wh[:, 8 * k : 8 * (k + 1)]
            np.testing.assert_allclose(block.T @ block, np.eye(8), atol=1e-6)


def reference_adam(p, grads, lr, b1=0.9, b2=0.999, eps=1e-8, correct=True):
    """PyTorch's Adam, written out in float64, one gradient per step."""
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        c1, c2 = (1 - b1**t, 1 - b2**t) if correct else (1.0, 1.0)
        p = p - lr * (m / c1) / (np.sqrt(v / c2) + eps)
    return p


@pytest.mark.parametrize("correct", [True, False])
def test_torch_adam_follows_pytorchs_formula(correct):
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(50)
    grads = [rng.standard_normal(50) * 10.0 ** rng.integers(-9, 1) for _ in range(6)]
    p = {"w": p0.copy()}
    opt = variants.TorchAdam(p, 0.01, eps=1e-6, bias_correction=correct)
    for g in grads:
        opt.step(p, {"w": g.copy()})
    np.testing.assert_allclose(
        p["w"], reference_adam(p0, grads, 0.01, eps=1e-6, correct=correct), rtol=1e-12, atol=1e-14
    )


def test_torch_adam_equals_rnncli_adam_when_eps_is_scaled_alike():
    """rnncli's Adam is PyTorch's with eps scaled by sqrt(1 - b2**t): equal at eps = 0."""
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal(20)
    a, b = {"w": p0.copy()}, {"w": p0.copy()}
    ours, theirs = Adam(a, 0.01, eps=0.0), variants.TorchAdam(b, 0.01, eps=0.0)
    for _ in range(4):
        g = rng.standard_normal(20)
        ours.step(a, {"w": g.copy()})
        theirs.step(b, {"w": g.copy()})
    np.testing.assert_allclose(a["w"], b["w"], rtol=1e-12)


def test_torch_biases_are_two_uniform_draws_and_no_forget_gate_one():
    model = Model(10, "lstm", 16, 2, seed=0)
    variants.init_torch_biases(model, seed=0)
    k = 1 / math.sqrt(16)
    for layer in range(2):
        b = model.params[f"rnn.{layer}.b"]
        assert np.abs(b).max() <= 2 * k and np.abs(b).max() > k  # a sum of two draws
        assert abs(b[16:32].mean()) < 0.2  # the forget block is not set to 1
    assert not np.array_equal(model.params["rnn.0.b"], model.params["rnn.1.b"])


def test_no_forget_bias_zeroes_every_bias():
    model = Model(10, "lstm", 8, 2, seed=0, forget_bias=1.0)  # rnncli's bias before forget_bias
    assert model.params["rnn.0.b"][8:16].min() == 1.0
    variants.init_no_forget_bias(model, seed=0)
    assert all(not model.params[f"rnn.{layer}.b"].any() for layer in range(2))
