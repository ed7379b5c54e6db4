"""The per-character MLP after each recurrent layer (``mlp_size``): the reference against finite
differences, the engine against the reference, and the model with it (gradients, inference
steps, checkpoints, the command line)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnncli import layers, reference
from rnncli.checkpoint import Checkpoint, load_checkpoint, restore_model, save_checkpoint
from rnncli.config import Config
from rnncli.gradcheck import check_model_gradients, numerical_gradient_array, rel_error
from rnncli.model import Model
from tests.helpers import TINY, assert_stepper_agrees, run


def _mlp_weights(H, M, rng):
    return [rng.normal(0, 0.5, shape) for shape in ((H, M), (M,), (M, H), (H,))]


def test_reference_mlp_against_finite_differences():
    rng = np.random.default_rng(0)
    N, T, H, M = 2, 3, 4, 5
    x, dy = rng.standard_normal((N, T, H)), rng.standard_normal((N, T, H))
    weights = _mlp_weights(H, M, rng)
    _, cache = reference.mlp_forward(x, *weights)
    grads = reference.mlp_backward(dy, cache)
    for arg, grad in zip([x, *weights], grads, strict=True):
        num = numerical_gradient_array(lambda: reference.mlp_forward(x, *weights)[0], arg, dy)
        assert grad.shape == arg.shape and rel_error(grad, num) < 1e-7


@settings(deadline=None, max_examples=25)
@given(N=st.integers(1, 4), T=st.integers(1, 4), H=st.integers(1, 5), M=st.integers(1, 6),
       seed=st.integers(0, 2**32 - 1))  # fmt: skip
def test_engine_mlp_equals_the_reference(N, T, H, M, seed):
    rng = np.random.default_rng(seed)
    x, dy = rng.standard_normal((N, T, H)), rng.standard_normal((N, T, H))
    weights = _mlp_weights(H, M, rng)
    y_ref, cache_ref = reference.mlp_forward(x, *weights)
    dx_ref, *grads_ref = reference.mlp_backward(dy, cache_ref)
    y, cache = layers.mlp_forward(x, *weights, layers.Workspace())
    dx, grads = layers.mlp_backward(dy, cache, layers.Workspace())
    for name, a, b in [
        ("y", y, y_ref),
        ("dx", dx, dx_ref),
        *zip(["W1", "b1", "W2", "b2"], grads, grads_ref, strict=True),
    ]:
        assert a.shape == b.shape and rel_error(a, b) <= 1e-10, name  # fmt: skip


@pytest.mark.parametrize("cell", ["lstm", "mingru", "gru"])
def test_model_with_mlps_passes_the_gradient_check(cell):
    errors = check_model_gradients(cell, num_layers=2, dropout=0.3, mlp_size=7)
    assert {"mlp.0.W1", "mlp.1.b2"} <= set(errors) and max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("cell", ["lstm", "minlstm", "rnn"])
def test_the_stepper_runs_the_mlps_as_the_model_does(cell):
    model = Model(6, cell, 5, 3, dtype="float64", seed=1, mlp_size=9)
    rng = np.random.default_rng(0)
    assert_stepper_agrees(model, rng)


def test_mlp_parameters_survive_a_checkpoint(tmp_path):
    model = Model(4, "mingru", 6, 2, seed=3, mlp_size=10)
    assert model.params["mlp.1.W1"].shape == (6, 10) and model.params["mlp.1.W2"].shape == (10, 6)
    config = Config(model="mingru", hidden_size=6, num_layers=2, mlp_size=10).to_dict()
    save_checkpoint(tmp_path / "m.npz", Checkpoint(params=model.params, vocab="abcd",
                                                   config=config))  # fmt: skip
    restored = restore_model(load_checkpoint(tmp_path / "m.npz"))
    assert restored.mlp_size == 10
    for name, p in model.params.items():
        np.testing.assert_array_equal(restored.params[name], p)
    wrong = Config(model="mingru", hidden_size=6, num_layers=2, mlp_size=8).to_dict()
    save_checkpoint(tmp_path / "w.npz", Checkpoint(params=model.params, vocab="abcd",
                                                   config=wrong))  # fmt: skip
    with pytest.raises(Exception, match="mlp"):
        load_checkpoint(tmp_path / "w.npz")


def test_mlp_size_through_the_command_line(corpus, tmp_path):
    out = tmp_path / "run"
    run("train", corpus, "--out", out, *TINY, "--mlp-size", "12", "--max-steps", "6",
        "--workers", "2")  # fmt: skip
    assert "mlp_size: 12" in run("info", out / "best.npz").stdout
    assert len(run("sample", out, "--length", "30", "--seed", "2").stdout) >= 30
    again = run("train", corpus, "--out", tmp_path / "again", *TINY, "--max-steps", "2",
                "--init-from", out / "best.npz")  # fmt: skip
    assert "Traceback" not in again.output
    assert "passed" in run("gradcheck", "--model", "mingru", "--mlp-size", "5").stdout
