"""The cell registry: a new cell type is one declaration, here in this test file alone.

The toy cell is a linear recurrent unit with a per-unit decay vector ``d``,
``h_t = x_t Wx + b + h_{t-1} Wh + d * h_{t-1}``, run by the engine's sequence skeleton;
registering it is all it takes to train it through ``Model``, check it with
``gradcheck``, save and restore it through a checkpoint and generate with it.
"""

import dataclasses
from functools import partial

import numpy as np
import pytest

from rnncli import cells, layers
from rnncli.checkpoint import Checkpoint, load_checkpoint, restore_model, save_checkpoint
from rnncli.config import Config
from rnncli.gradcheck import check_model_gradients
from rnncli.model import Model
from rnncli.optim import make_optimizer


def _lru_forward_step(a, prev, Wh_T, nxt, kept, scratch, d):
    """``h = a + Wh^T h_prev + d * h_prev``, feature-major, a = (x Wx + b)^T."""
    (h,) = nxt
    np.matmul(Wh_T, prev[0], out=h)
    h += a
    h += np.multiply(d, prev[0], out=scratch)


def _lru_backward_step(dh, dstate, a, prev, nxt, kept, Wh, da, dg, scratch, d):
    """``da = dh``; ``dh_prev = Wh da + d * da``."""
    (dh_prev,) = dstate
    np.copyto(da, dh)
    np.matmul(Wh, da, out=dh_prev)
    dh_prev += np.multiply(d, da, out=scratch)


def _lru_extra_grads(dg_rows, h_prev_rows):
    """``dd = sum over steps and streams of da * h_prev``."""
    H = h_prev_rows.shape[-1]
    return ((dg_rows * h_prev_rows).reshape(-1, H).sum(axis=0),)


def _lru_step(a, u, W_T, state, scratch, columns):
    (h,), (d,) = state, columns
    out = scratch[: h.shape[0]]
    np.matmul(W_T, u, out=out)
    out += a
    out += d * h
    np.copyto(h, out)


_LRU_CORE = layers.RecurrentCore(_lru_forward_step, _lru_backward_step, kept_rows=lambda H: 0,
                                 extra_grads=_lru_extra_grads)  # fmt: skip


def _small_decay(params, H):
    params["d"][:] = 0.5


LRU = cells.Cell(
    "lru",
    gates=1,
    states=1,
    forward=partial(layers.sequence_forward, _LRU_CORE),
    backward=partial(layers.sequence_backward, _LRU_CORE),
    step=_lru_step,
    stackable=True,  # x Wx can join h Wh in one product; the step adds d * h apart
    params=cells.BASE_PARAMS + (("d", ("H",)),),
    init=_small_decay,
)


@pytest.fixture
def lru():
    """The toy cell, registered for one test (the config's choices see the registry live)."""
    cells.register(LRU)
    yield "lru"
    del cells.CELLS["lru"]


def test_a_registered_cell_is_a_model(lru):
    model = Model(7, lru, 5, 2, seed=1)
    assert model.params["rnn.1.d"].shape == (5,) and (model.params["rnn.0.d"] == 0.5).all()
    assert model.zero_state(3).shape == (2, 1, 3, 5)
    assert lru not in Model.CELLS  # the built-ins only; the registry has it for this test


def test_a_registered_cell_passes_the_gradient_check(lru):
    errors = check_model_gradients(lru, num_layers=2, dropout=0.3)
    assert set(errors) == set(Model(5, lru, 6, 2).params) | {"state0"}
    assert max(errors.values()) < 1e-6, errors


def test_a_registered_cell_trains_saves_restores_and_generates(lru, tmp_path):
    model = Model(3, lru, 8, 2, seed=4)
    optimizer = make_optimizer("adam", model.params, 0.02)
    seq = np.array([0, 1, 2, 1] * 20)
    x, y = seq[None, :-1].repeat(2, 0), seq[None, 1:].repeat(2, 0)
    losses = []
    for _ in range(150):
        loss, _, cache = model.forward(x, y, model.zero_state(2))
        optimizer.step(model.params, model.backward(cache)[0])
        losses.append(loss)
    assert losses[-1] < 0.5 * losses[0]

    path = tmp_path / "lru.npz"
    config = Config(model=lru, hidden_size=8, num_layers=2).to_dict()
    save_checkpoint(path, Checkpoint(params=model.params, vocab="abc", config=config))
    restored = restore_model(load_checkpoint(path))
    assert restored.cell == lru
    state = np.random.default_rng(0).uniform(-1, 1, model.zero_state(2).shape)
    loss, final, _ = model.forward(x, y, state)
    again, final_again, _ = restored.forward(x, y, state)
    assert again == loss
    np.testing.assert_array_equal(final_again, final)
    stepper = restored.stepper(2, state)  # layer 1 with stacked weights
    for t in range(3):
        logits = stepper.step(x[:, t]).astype(np.float64)
        only_t = np.zeros(x.shape, bool)
        only_t[:, t] = True
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        expected = model.forward(x, y, state, mask=only_t)[0]
        assert -logp[np.arange(2), y[:, t]].mean() == pytest.approx(expected, rel=1e-5)


def test_registering_checks_the_declaration(monkeypatch):
    monkeypatch.setattr(cells, "CELLS", dict(cells.CELLS))
    with pytest.raises(ValueError, match="must start with"):
        cells.register(dataclasses.replace(LRU, params=(("Wh", ("H", "GH")),)))
    with pytest.raises(ValueError, match="vectors"):
        cells.register(dataclasses.replace(LRU, params=cells.BASE_PARAMS + (("M", ("H", "H")),)))
    with pytest.raises(ValueError, match="gate"):
        cells.register(dataclasses.replace(LRU, gates=0))
    assert "lru" not in cells.CELLS


def test_an_unknown_cell_names_the_choices():
    with pytest.raises(ValueError, match="unknown cell 'cnn'; choose from rnn, lstm, gru"):
        Model(5, "cnn")
