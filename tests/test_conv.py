"""The short causal convolution before every cell (``conv_size``): the reference against finite
differences, the engine against the reference, the inputs it carries between windows, and the
model with it (inference steps, checkpoints, the command line, hostile files and values)."""

import json

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rnncli import layers, reference
from rnncli.checkpoint import Checkpoint, load_checkpoint, restore_model, save_checkpoint
from rnncli.config import Config
from rnncli.errors import CheckpointError
from rnncli.gradcheck import (
    check_model_gradients,
    numerical_gradient,
    numerical_gradient_array,
    rel_error,
)
from rnncli.memory import training_bytes
from rnncli.model import Model
from tests.crafted import write_unchecked
from tests.helpers import (
    TINY,
    assert_model_matches_reference,
    assert_stepper_agrees,
    one_error_line,
    run,
    tiny,
)

SEEDS = st.integers(0, 2**32 - 1)
CELLS = ["rnn", "lstm", "gru", "mingru", "minlstm"]


def conv_model(cell="mingru", H=5, L=2, K=3, seed=0, **keys) -> Model:
    """A float64 model with a width-K convolution (and the embedding of width H it needs), its
    parameters moved off their initial values."""
    model = Model(7, cell, H, L, dtype="float64", seed=seed, embedding_size=H, conv_size=K, **keys)
    rng = np.random.default_rng(seed)
    for p in model.params.values():
        p += rng.normal(0, 0.3, p.shape)
    return model


def test_reference_conv_against_finite_differences():
    rng = np.random.default_rng(0)
    N, T, D, K = 2, 3, 4, 4  # T < K - 1 + 1: the carry reaches past the window's start
    x, carry, w = (
        rng.standard_normal((N, T, D)),
        rng.standard_normal((K - 1, N, D)),
        rng.standard_normal((K, D)),
    )
    du = rng.standard_normal((N, T, D))
    u, next_carry, cache = reference.causal_conv_forward(x, carry, w)
    assert np.allclose(
        u[:, 0], w[0] * x[:, 0] + w[1] * carry[0] + w[2] * carry[1] + w[3] * carry[2]
    )
    assert np.array_equal(next_carry, np.stack([x[:, 2], x[:, 1], x[:, 0]]))
    dx, dcarry, dw = reference.causal_conv_backward(du, cache)
    for arg, grad in ((x, dx), (carry, dcarry), (w, dw)):
        num = numerical_gradient_array(
            lambda: reference.causal_conv_forward(x, carry, w)[0], arg, du
        )
        assert grad.shape == arg.shape and rel_error(grad, num) < 1e-7


@settings(deadline=None, max_examples=30)
@given(
    N=st.integers(1, 3), T=st.integers(1, 6), D=st.integers(1, 5), K=st.integers(2, 5), seed=SEEDS
)
def test_engine_conv_equals_the_reference(N, T, D, K, seed):
    rng = np.random.default_rng(seed)
    x, du = rng.standard_normal((N, T, D)), rng.standard_normal((N, T, D))
    carry, w = rng.standard_normal((K - 1, N, D)), rng.standard_normal((K, D))
    u_ref, carry_ref, cache_ref = reference.causal_conv_forward(x, carry, w)
    dx_ref, dcarry_ref, dw_ref = reference.causal_conv_backward(du, cache_ref)
    time_major = np.ascontiguousarray(x.transpose(1, 0, 2))
    u, next_carry, cache = layers.causal_conv_forward(time_major, carry, w, layers.Workspace())
    dx, dcarry, (dw,) = layers.causal_conv_backward(
        np.ascontiguousarray(du.transpose(1, 0, 2)), cache, layers.Workspace()
    )
    pairs = (("u", u.transpose(1, 0, 2), u_ref), ("carry", next_carry, carry_ref),
             ("dx", dx.transpose(1, 0, 2), dx_ref), ("dcarry", dcarry, dcarry_ref),
             ("dw", dw, dw_ref))  # fmt: skip
    for name, a, b in pairs:
        assert a.shape == b.shape and rel_error(a, b) <= 1e-10, name
    # one step at a time, feature-major, from the same carry: the same outputs and carry
    slots = [np.ascontiguousarray(c.T) for c in carry]
    out, scratch = np.empty((D, N)), np.empty((D, N))
    for t in range(T):
        layers.causal_conv_step(np.ascontiguousarray(x[:, t].T), slots, w[:, :, None], out, scratch)
        assert rel_error(out.T, u_ref[:, t]) <= 1e-10
    assert rel_error(np.stack([s.T for s in slots]), carry_ref) <= 1e-10


@pytest.mark.parametrize("cell", ["lstm", "mingru", "gru"])
def test_reference_model_with_conv_against_finite_differences(cell):
    rng = np.random.default_rng(6)
    N, T, V, H, L = 2, 3, 5, 3, 2
    model = Model(V, cell, H, L, dtype="float64", seed=6, embedding_size=H, conv_size=3,
                  mlp_size=2, residual=True, norm="rms")  # fmt: skip
    params = {name: p + rng.normal(0, 0.3, p.shape) for name, p in model.params.items()}
    x, y = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))
    state0 = rng.uniform(-1, 1, model.zero_state(N).shape)
    drops = reference.dropout_masks(0.3, rng, L, N, T, H)

    def forward():
        return reference.model_forward(params, cell, x, y, state0, None, drops, True)

    grads, dstate0 = reference.model_backward(forward()[2])
    assert set(grads) == set(params) and dstate0.shape == state0.shape
    checks = [("state0", state0, dstate0)] + [(n, params[n], grads[n]) for n in params]
    for name, arg, grad in checks:
        assert rel_error(grad, numerical_gradient(lambda: forward()[0], arg)) < 1e-7, name


@pytest.mark.parametrize("cell", CELLS)
@settings(deadline=None, max_examples=10)
# H >= 2: RMSNorm of one feature is its sign times the gain, so its input gradient is pure
# cancellation (1 - x^2 / (x^2 + eps)), rounding the engine and the reference round differently.
@given(B=st.integers(1, 3), T=st.integers(1, 5), H=st.integers(2, 4), L=st.integers(1, 3),
       K=st.integers(2, 4), p=st.sampled_from([0.0, 0.3]), residual=st.booleans(),
       norm=st.sampled_from(["none", "rms"]), M=st.sampled_from([0, 3]), seed=SEEDS)  # fmt: skip
def test_model_with_conv_equals_the_reference(cell, B, T, H, L, K, p, residual, norm, M, seed):
    model = Model(5, cell, H, L, dropout=p, dtype="float64", seed=seed % 1000, embedding_size=H,
                  mlp_size=M, residual=residual, norm=norm, conv_size=K)  # fmt: skip
    assert_model_matches_reference(model, B, T, seed)


@pytest.mark.parametrize("cell", ["lstm", "mingru"])
def test_the_model_with_conv_passes_the_gradient_check(cell):
    errors = check_model_gradients(cell, num_layers=3, hidden_size=4, embedding_size=4,
                                   conv_size=3, dropout=0.3, residual=True, norm="rms")  # fmt: skip
    assert {"conv.0.w", "conv.1.w", "conv.2.w", "state0"} <= set(errors)
    assert max(errors.values()) < 1e-6, errors


def test_the_convolution_starts_as_the_identity():
    """A model with the convolution starts where the same model without it starts: the kernels
    pass x_t through, and no other parameter is drawn differently."""
    with_conv = Model(9, "lstm", 6, 2, seed=4, embedding_size=6, conv_size=4)
    without = Model(9, "lstm", 6, 2, seed=4, embedding_size=6)
    kernels = [name for name in with_conv.params if name.startswith("conv.")]
    assert kernels == ["conv.0.w", "conv.1.w"]
    for name in kernels:
        assert with_conv.params[name].shape == (4, 6)
        assert (with_conv.params[name][0] == 1).all() and (with_conv.params[name][1:] == 0).all()
    for name, p in without.params.items():
        np.testing.assert_array_equal(with_conv.params[name], p)
    x = np.random.default_rng(0).integers(0, 9, (3, 10))
    assert with_conv.forward(x, x, with_conv.zero_state(3))[0] == pytest.approx(
        without.forward(x, x, without.zero_state(3))[0], rel=1e-6
    )
    assert with_conv.zero_state(3).shape == (2, 2 + 3, 3, 6)  # h, c and three earlier inputs


@pytest.mark.parametrize("cell", CELLS)
def test_the_carried_inputs_make_two_windows_one(cell):
    """Truncated BPTT over two windows computes what one window of both computes: the
    convolution reads the previous window's last inputs from the state."""
    model = conv_model(cell, K=4, L=2, residual=True)
    x = np.random.default_rng(1).integers(0, 7, (2, 9))
    state = np.random.default_rng(2).uniform(-1, 1, model.zero_state(2).shape)
    whole_loss, whole_final, _ = model.forward(x, x, state)
    first_loss, carried, _ = model.forward(x[:, :2], x[:, :2], state)  # shorter than K - 1
    second_loss, final, _ = model.forward(x[:, 2:], x[:, 2:], carried)
    assert (2 * first_loss + 7 * second_loss) / 9 == pytest.approx(whole_loss, rel=1e-12)
    np.testing.assert_allclose(final, whole_final, rtol=1e-12)
    # and the carried inputs are what the cells read: zeroing them changes the next loss
    forgot = carried.copy()
    forgot[:, model.cell_type.states :] = 0
    assert model.forward(x[:, 2:], x[:, 2:], forgot)[0] != pytest.approx(second_loss, rel=1e-6)


@pytest.mark.parametrize("M", [0, 4])
@pytest.mark.parametrize("cell", CELLS)
def test_the_stepper_agrees_with_the_model(cell, M):
    model = conv_model(cell, L=3, K=3, mlp_size=M, residual=True, norm="rms")
    assert_stepper_agrees(model, np.random.default_rng(0))
    plain = conv_model(cell, L=2, K=2)
    assert_stepper_agrees(plain, np.random.default_rng(1))


def test_beam_select_moves_the_carried_inputs_too():
    model = conv_model("lstm", K=3)
    stepper = model.stepper(2)
    for idx in ([1, 2], [3, 4], [5, 6]):
        stepper.step(np.array(idx))
    before = stepper.state
    stepper.select([1, 1])
    np.testing.assert_array_equal(stepper.state[:, :, 0], before[:, :, 1])
    assert (before[:, model.cell_type.states :, 0] != before[:, model.cell_type.states :, 1]).any()


def test_shapes_and_the_memory_estimate_count_the_convolution():
    shapes = Model.param_shapes(7, "gru", 4, 2, 4, 0, "none", 5)
    assert list(shapes)[:3] == ["embed.W", "conv.0.w", "rnn.0.Wx"] and shapes["conv.1.w"] == (5, 4)
    assert Model.state_shape("gru", 4, 2, 3, 5) == (2, 1 + 4, 3, 4)
    base = Config(model="gru", hidden_size=64, embedding_size=64, batch_size=8, seq_length=16)
    conv = Config(**{**base.to_dict(), "conv_size": 4})
    assert training_bytes(conv, 65) > training_bytes(base, 65)


@pytest.mark.parametrize("bad", [1, -1, 17, 2.5, True])
def test_the_model_refuses_a_bad_width(bad):
    with pytest.raises(ValueError, match="conv_size"):
        Model(5, "lstm", 4, 1, embedding_size=4, conv_size=bad)


@pytest.mark.parametrize("E", [0, 3])
def test_the_model_refuses_inputs_narrower_than_the_state(E):
    with pytest.raises(ValueError, match="embedding_size equal to hidden_size"):
        Model(5, "lstm", 4, 1, embedding_size=E, conv_size=2)


def _save(path, model, checked=True, **config):
    cfg = Config(model=model.cell, hidden_size=model.hidden_size, num_layers=model.num_layers,
                 embedding_size=model.embedding_size, **config)  # fmt: skip
    ckpt = Checkpoint(params=model.params, vocab="abcdefg", config=cfg.to_dict())
    (save_checkpoint if checked else write_unchecked)(path, ckpt)
    return path


def test_a_checkpoint_round_trip_keeps_the_kernels(tmp_path):
    model = Model(7, "mingru", 6, 2, seed=3, embedding_size=6, conv_size=3)
    model.params["conv.1.w"][2] = 0.5
    restored = restore_model(load_checkpoint(_save(tmp_path / "m.npz", model, conv_size=3)))
    assert restored.conv_size == 3 and list(restored.params) == list(model.params)
    for name, p in model.params.items():
        np.testing.assert_array_equal(restored.params[name], p)


@pytest.mark.parametrize("change", ["removed", "reshaped", "nan", "config without conv",
                                    "config wider"])  # fmt: skip
def test_a_hostile_checkpoint_is_one_clear_error(tmp_path, change):
    model = Model(7, "mingru", 6, 2, seed=3, embedding_size=6, conv_size=3)
    config = {"conv_size": 3}
    if change == "removed":
        del model.params["conv.1.w"]
    elif change == "reshaped":
        model.params["conv.0.w"] = np.ones((4, 6), np.float32)
    elif change == "nan":
        model.params["conv.1.w"][1, 2] = np.nan
    elif change == "config without conv":
        config["conv_size"] = 0
    else:
        config["conv_size"] = 5
    path = _save(tmp_path / "bad.npz", model, checked=False, **config)
    with pytest.raises(CheckpointError, match="conv|NaN"):
        load_checkpoint(path)
    line = one_error_line(run("info", path, code=1), path)
    assert "conv" in line or "NaN" in line


def test_a_carried_state_of_the_wrong_shape_is_refused(tmp_path):
    """A resumable checkpoint's state holds the carried inputs: one saved without them does not
    load as if it had them."""
    model = Model(7, "gru", 6, 2, seed=3, embedding_size=6, conv_size=3)
    cfg = Config(model="gru", hidden_size=6, num_layers=2, embedding_size=6, conv_size=3,
                 batch_size=2)  # fmt: skip
    short = np.zeros((2, 1, 2, 6), np.float32)  # the cell's slot alone
    ckpt = Checkpoint(params=model.params, vocab="abcdefg", config=cfg.to_dict(), state=short)
    write_unchecked(tmp_path / "s.npz", ckpt)
    with pytest.raises(CheckpointError, match="state"):
        load_checkpoint(tmp_path / "s.npz")


@pytest.mark.parametrize("settings_", [{"conv_size": 1}, {"conv_size": 17}, {"conv_size": -2},
                                       {"conv_size": "wide"}, {"conv_size": 3},
                                       {"conv_size": 3, "embedding_size": 4}])  # fmt: skip
def test_bad_values_in_yaml_are_one_line(corpus, tmp_path, settings_):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(settings_), encoding="utf-8")
    result = run("train", corpus, "--config", config, "--out", tmp_path / "r", *TINY, code=2)
    assert "conv_size" in one_error_line(result, usage_errors=True)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("cell", CELLS)
def test_every_command_runs_a_model_with_conv(cell, corpus, tmp_path):
    out = tmp_path / "run"
    keys = tiny(model=cell, num_layers=2, embedding_size=8, conv_size=3, residual=True,
                norm="rms", max_steps=6)  # fmt: skip
    run("train", corpus, "--out", out, *keys, "--workers", "2")
    saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    assert saved["conv_size"] == 3
    run("train", corpus, "--out", out, "--resume", "--max-steps", "8", "--quiet")
    assert len(run("sample", out, "--length", "30", "--seed", "2").stdout) >= 30
    run("sample", out, "--length", "10", "--beam", "2")
    scored = json.loads(run("eval", out, "--split", "test", "--json").stdout)["loss"]
    dynamic = json.loads(run("eval", out, "--split", "test", "--dynamic", "--json").stdout)
    assert np.isfinite(scored) and np.isfinite(dynamic["loss"])
    run("report", out, "--out", tmp_path / "page.html", "--chars", "40")
    run("export", out, "--out", tmp_path / "model.html")
    assert '"conv":3' in (tmp_path / "model.html").read_text("utf-8")
    assert "conv_size: 3" in run("info", out).stdout


def test_resume_and_init_from_keep_the_width(corpus, tmp_path):
    out = tmp_path / "run"
    run("train", corpus, "--out", out, *tiny(model="mingru", embedding_size=8, conv_size=3,
                                             max_steps=5))  # fmt: skip
    refused = run("train", corpus, "--out", out, "--resume", "--conv-size", "2", code=1)
    assert "conv_size" in one_error_line(refused)
    clash = run("train", corpus, "--out", tmp_path / "new", "--init-from", out / "best.npz",
                "--conv-size", "4", code=1)  # fmt: skip
    assert "conv_size 3" in one_error_line(clash)
    run("train", corpus, "--out", tmp_path / "tuned", "--init-from", out / "best.npz",
        "--max-steps", "2", "--quiet")  # fmt: skip
    tuned = yaml.safe_load((tmp_path / "tuned" / "config.yaml").read_text(encoding="utf-8"))
    assert tuned["conv_size"] == 3 and tuned["embedding_size"] == 8


def test_gradcheck_command_with_a_convolution():
    printed = run("gradcheck", "--model", "minlstm", "--embedding-size", "6", "--conv-size",
                  "3").stdout  # fmt: skip
    assert "conv.1.w" in printed and "conv_size 3" in printed and "passed" in printed
    refused = run("gradcheck", "--conv-size", "3", code=2)
    assert "embedding_size equal to hidden_size" in one_error_line(refused)


def test_resume_with_a_convolution_is_bitwise(corpus, tmp_path):
    """The carried inputs are saved with the state, so a resumed run continues as if never
    stopped (with two workers, which split the state by rows)."""
    keys = [*tiny(model="mingru", embedding_size=8, conv_size=3, residual=True, workers=2),
            "--quiet"]  # fmt: skip
    run("train", corpus, "--out", tmp_path / "once", "--max-steps", "12", *keys)
    run("train", corpus, "--out", tmp_path / "twice", "--max-steps", "5", *keys)
    run("train", corpus, "--out", tmp_path / "twice", "--resume", "--max-steps", "12", "--quiet")
    once, twice = (load_checkpoint(tmp_path / f"{name}/last.npz") for name in ("once", "twice"))
    assert once.state.shape[1] == 1 + 2  # h and the two earlier inputs
    for name, p in once.params.items():
        assert p.tobytes() == twice.params[name].tobytes(), name
    assert once.state.tobytes() == twice.state.tobytes()
