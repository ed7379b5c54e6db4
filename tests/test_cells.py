"""The cell registry: a new cell type is one declaration, here in this test file alone.

Two toy cells, registered after rnncli is imported. ``lru`` is a linear recurrent unit with a
per-unit decay vector ``d``, ``h_t = x_t Wx + b + h_{t-1} Wh + d * h_{t-1}``, run by the
engine's sequence skeleton. ``leaky`` has no recurrent product at all:
``u_t = tanh(x_t Wx + b)``, ``h_t = d * h_{t-1} + u_t``, with its own forward and backward
written here. Registering either is all it takes to train it, check it with ``gradcheck``, save
and restore it through a checkpoint, generate with it, score and report on it, in-process and
through the command line.
"""

import dataclasses
import json
import os
from functools import partial

import numpy as np
import pytest

from rnncli import cells, layers
from rnncli.checkpoint import Checkpoint, load_checkpoint, restore_model, save_checkpoint
from rnncli.config import Config
from rnncli.gradcheck import check_model_gradients
from rnncli.model import Model
from rnncli.optim import make_optimizer
from tests.helpers import TINY, run


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
    state_kinds=(cells.Kind("h", "hidden state h", None, None),),
    gate_kinds=(),
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
    with pytest.raises(ValueError, match="needs the parameter Wx"):
        cells.register(dataclasses.replace(LRU, params=(("Wh", ("H", "GH")), ("b", ("GH",)))))
    with pytest.raises(ValueError, match="symbols"):
        cells.register(dataclasses.replace(LRU, params=cells.BASE_PARAMS + (("M", ("H", "K")),)))
    with pytest.raises(ValueError, match="Wh must have shape"):
        cells.register(dataclasses.replace(LRU, params=(("Wx", ("D", "GH")), ("Wh", ("H", "H")),
                                                        ("b", ("GH",)))))  # fmt: skip
    with pytest.raises(ValueError, match="unique"):
        cells.register(dataclasses.replace(LRU, params=cells.BASE_PARAMS + (("b", ("GH",)),)))
    with pytest.raises(ValueError, match="gate"):
        cells.register(dataclasses.replace(LRU, gates=0))
    with pytest.raises(ValueError, match="none or all"):
        cells.register(dataclasses.replace(LRU, gate_kinds=LEAKY.gate_kinds * 2))
    with pytest.raises(ValueError, match="first state array must be h"):
        cells.register(dataclasses.replace(LRU, state_kinds=(cells.C_STATE,)))
    with pytest.raises(ValueError, match="only a cell with Wh"):
        cells.register(dataclasses.replace(LEAKY, stackable=True))
    assert "lru" not in cells.CELLS and "leaky" not in cells.CELLS


def test_an_unknown_cell_names_the_choices():
    choices = "rnn, lstm, gru, mingru, minlstm"
    with pytest.raises(ValueError, match=f"unknown cell 'cnn'; choose from {choices}"):
        Model(5, "cnn")


def test_a_cell_records_the_module_that_registers_it(leaky):
    assert cells.get(leaky).module == __name__ and cells.get("lstm").module == "rnncli.cells"


def test_the_built_in_cells_declare_their_javascript_step_if_the_package_has_one():
    for name, cell in cells.CELLS.items():
        assert cell.js_step == cells.js_source(name)
    assert cells.js_source("no-such-cell") is None


# ----------------------------------------------------------------------------------------------
# A cell with no recurrent product, its forward and backward written here


def _leaky_forward(x, state0, weights, ws=None):
    """Rows: u = tanh(x Wx + b) for the whole window, then h_t = d h_{t-1} + u_t."""
    Wx, b, d = weights
    u = np.tanh((Wx[x] if np.issubdtype(x.dtype, np.integer) else x @ Wx) + b)
    h = np.empty((x.shape[0] + 1,) + u.shape[1:], u.dtype)
    h[0] = state0[0]
    for t in range(x.shape[0]):
        h[t + 1] = d * h[t] + u[t]
    return h[1:], h[-1:].copy(), (x, weights, u, h)


def _leaky_backward(dh, cache, ws=None):
    x, (Wx, _, d), u, h = cache
    g = dh.copy()
    for t in range(len(g) - 1, 0, -1):
        g[t - 1] += d * g[t]
    da = (g * (1 - u**2)).reshape(-1, u.shape[-1])
    if np.issubdtype(x.dtype, np.integer):
        dx, dWx = None, np.zeros_like(Wx)
        np.add.at(dWx, x.reshape(-1), da)
    else:
        dx = (da @ Wx.T).reshape(x.shape)
        dWx = x.reshape(-1, x.shape[-1]).T @ da
    dd = (g * h[:-1]).reshape(-1, d.size).sum(axis=0)
    return dx, (d * g[0])[None], (dWx, da.sum(axis=0), dd)


def _leaky_step(a, u, W_T, state, scratch, columns):
    (h,), (d,) = state, columns
    assert u is None and W_T is None  # the Stepper knows the cell has no Wh
    np.tanh(a, out=a)
    h *= d
    h += a


LEAKY = cells.Cell(
    "leaky",
    gates=1,
    state_kinds=(cells.Kind("h", "hidden state h", None, None),),
    gate_kinds=(cells.Kind("u", "input tanh(x Wx + b)", -1.0, 1.0),),
    forward=_leaky_forward,
    backward=_leaky_backward,
    step=_leaky_step,
    params=(("Wx", ("D", "GH")), ("b", ("GH",)), ("d", ("H",))),
    init=_small_decay,
)


@pytest.fixture
def leaky():
    cells.register(LEAKY)
    yield "leaky"
    del cells.CELLS["leaky"]


# A parallel worker lacking a cell imports the module that registered it, which is expected to
# register it at import, as a user's own module would. Here the tests register the toy cells
# for one test at a time, and the workers of the test that sets this variable at import.
if os.environ.get("RNNCLI_TEST_TOY_CELLS") == "1":
    cells.register(LRU)
    cells.register(LEAKY)


def test_a_cell_without_wh_passes_the_gradient_check(leaky):
    errors = check_model_gradients(leaky, num_layers=2, dropout=0.3, embedding_size=3)
    assert "rnn.0.Wh" not in errors and max(errors.values()) < 1e-6, errors


def test_a_cell_without_wh_steps_as_it_trains(leaky):
    model = Model(4, leaky, 6, 2, dtype="float64", seed=2)
    x = np.random.default_rng(0).integers(0, 4, (3, 5))
    stepper = model.stepper(3)
    for t in range(x.shape[1]):
        stepper.step(x[:, t])
    _, final, _ = model.forward(x, x, model.zero_state(3))
    np.testing.assert_allclose(stepper.state, final, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", ["leaky", "lru"])
def test_a_registered_cell_works_in_every_command(cell, leaky, lru, corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("RNNCLI_TEST_TOY_CELLS", "1")  # for the parallel workers
    out = tmp_path / "run"
    tiny = [a if a != "lstm" else cell for a in TINY]
    run("train", corpus, "--out", out, *tiny, "--max-steps", "12", "--workers", "2")
    assert f"model: {cell}" in (out / "config.yaml").read_text(encoding="utf-8")
    text = run("sample", out, "--length", "40", "--seed", "1").stdout
    assert len(text) >= 40
    run("sample", out, "--length", "20", "--beam", "3")
    scores = json.loads(run("eval", out, "--split", "test", "--json").stdout)
    assert scores["chars"] > 0 and np.isfinite(scores["loss"])
    page = tmp_path / "page.html"
    run("report", out, "--out", page, "--chars", "60")
    labels = [k.label for k in cells.get(cell).kinds.values()]
    assert all(label in page.read_text(encoding="utf-8") for label in labels)
    assert "passed" in run("gradcheck", "--model", cell).stdout
    run(
        "train",
        corpus,
        "--out",
        tmp_path / "again",
        *tiny,
        "--max-steps",
        "2",
        "--init-from",
        out / "best.npz",
    )
