"""rnncli against PyTorch: every cell's forward and backward, and every optimizer's update.

The twins are the benchmarks' (``tests.bench.torch_models``): a PyTorch model loaded with an
rnncli model's parameters, and a ``torch.optim`` optimizer with an rnncli optimizer's rule. In
float64 the two frameworks then differ by rounding alone. Skipped when torch is not installed.

torch is imported by the first test that needs it, not when pytest collects this file: importing
it adds some 300 MB to the test process, which the memory-bound tests' children would inherit
as their peak RSS.
"""

import numpy as np
import pytest

from rnncli.model import Model
from rnncli.optim import OPTIMIZERS, clip_gradients, make_optimizer

TWINS = ("rnn", "lstm", "gru", "mingru", "minlstm")  # the cells with a twin in torch_models
MODEL_TOL = 1e-12  # relative error (torch_models.relative_error) of a float64 model: ~1e-15
UPDATE_TOL = 1e-13  # of parameters after three float64 updates


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def torch_models(torch):
    from tests.bench import torch_models

    return torch_models


@pytest.mark.parametrize("embedding_size", [0, 8], ids=["one-hot", "embedding"])
@pytest.mark.parametrize("cell", TWINS)
def test_model_equals_its_torch_twin(cell, embedding_size, torch_models):
    """Loss, final state, every parameter's gradient and the initial state's gradient of a
    two-layer model over a window of 25 from a random state."""
    errors = torch_models.parity_errors(cell, embedding_size=embedding_size, dtype="float64")
    expected = {"loss", "final state", "dstate0", *Model.param_shapes(65, cell, 64, 2,
                                                                      embedding_size)}  # fmt: skip
    assert set(errors) == expected
    worst = max(errors, key=errors.get)
    assert errors[worst] <= MODEL_TOL, f"{worst}: relative error {errors[worst]:.1e}"


def _params(rng):
    """Parameters named as a model's with an embedding, so that embed.W is the input table."""
    shapes = Model.param_shapes(7, "lstm", 4, 1, embedding_size=3)
    return {name: rng.standard_normal(shape) for name, shape in shapes.items()}


# Adagrad's and Adam's eps sit elsewhere in PyTorch's formulas: at eps = 0 they are the same.
SETTINGS = {
    "sgd": {},
    "sgd momentum": {"momentum": 0.9},
    "adagrad": {"eps": 0.0},
    "rmsprop": {"rmsprop_decay": 0.9},
    "adam": {"beta1": 0.8, "beta2": 0.99, "eps": 0.0},
}


@pytest.mark.parametrize("case", SETTINGS)
def test_optimizer_equals_its_torch_twin(case, torch, torch_models):
    """Three steps with gradients clipped by value, the input table at 4 times the rate."""
    name = case.split()[0]
    rng = np.random.default_rng(1)
    params = _params(rng)
    tensors = {k: torch.tensor(p.copy(), requires_grad=True) for k, p in params.items()}
    opt = make_optimizer(name, params, 0.05, {"embed.W": 4.0}, **SETTINGS[case])
    twin = torch_models.twin_optimizer(opt, tensors)
    for _ in range(3):
        grads = {k: rng.normal(0, 1.5, p.shape) for k, p in params.items()}
        for k, t in tensors.items():
            t.grad = torch.tensor(grads[k])
        clip_gradients(grads, "value", 1.0)
        opt.step(params, grads)
        torch.nn.utils.clip_grad_value_(list(tensors.values()), 1.0)
        twin.step()
    for k, p in params.items():
        np.testing.assert_allclose(p, tensors[k].detach().numpy(), rtol=UPDATE_TOL, atol=1e-15,
                                   err_msg=k)  # fmt: skip
        assert not np.allclose(p, _params(np.random.default_rng(1))[k])  # it moved


def test_every_optimizer_has_a_torch_twin():
    assert {case.split()[0] for case in SETTINGS} == set(OPTIMIZERS)


@pytest.mark.parametrize("mode", ["value", "norm"])
def test_clipping_equals_torch_s(mode, torch):
    """By value, exactly torch's ``clip_grad_value_``; by norm, ``clip_grad_norm_`` but for the
    1e-6 that PyTorch adds to the norm it divides by."""
    grads = _params(np.random.default_rng(2))
    tensors = [
        torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads.values()
    ]
    for t, g in zip(tensors, grads.values(), strict=True):
        t.grad = torch.tensor(g)  # PyTorch clips the gradients of parameters
    norm = clip_gradients(grads, mode, 2.0)
    if mode == "value":
        torch.nn.utils.clip_grad_value_(tensors, 2.0)
        expected = [t.grad.numpy() for t in tensors]
    else:
        torch_norm = float(torch.nn.utils.clip_grad_norm_(tensors, 2.0))
        assert norm == pytest.approx(torch_norm, rel=1e-14) and norm > 2.0
        expected = [t.grad.numpy() * (norm + 1e-6) / norm for t in tensors]
    for g, e in zip(grads.values(), expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-14, atol=0)
