"""Residual connections between layers (``residual``) and RMSNorm (``norm: rms``): the reference
against finite differences, the engine against the reference, and the model with them (gradients,
inference steps, checkpoints, the command line, hostile files)."""

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

DEEP = dict(residual=True, norm="rms")
SEEDS = st.integers(0, 2**32 - 1)


def test_reference_rmsnorm_against_finite_differences():
    rng = np.random.default_rng(0)
    x, dy, g = rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 3, 5)), rng.normal(1, 0.5, 5)
    y, cache = reference.rmsnorm_forward(x, g)
    assert np.allclose(np.mean((y / g) ** 2, axis=-1), 1, atol=1e-4)  # unit RMS before the gain
    dx, dg = reference.rmsnorm_backward(dy, cache)
    for arg, grad in ((x, dx), (g, dg)):
        num = numerical_gradient_array(lambda: reference.rmsnorm_forward(x, g)[0], arg, dy)
        assert grad.shape == arg.shape and rel_error(grad, num) < 1e-7


@settings(deadline=None, max_examples=25)
@given(N=st.integers(1, 4), T=st.integers(1, 4), H=st.integers(1, 6), seed=SEEDS)
def test_engine_rmsnorm_equals_the_reference(N, T, H, seed):
    rng = np.random.default_rng(seed)
    x, dy, g = rng.standard_normal((T, N, H)), rng.standard_normal((T, N, H)), rng.normal(1, 1, H)
    y_ref, cache_ref = reference.rmsnorm_forward(x, g)
    dx_ref, dg_ref = reference.rmsnorm_backward(dy, cache_ref)
    y, cache = layers.rmsnorm_forward(x, g, layers.Workspace())
    dx, (dg,) = layers.rmsnorm_backward(dy, cache, layers.Workspace())
    for name, a, b in (("y", y, y_ref), ("dx", dx, dx_ref), ("dg", dg, dg_ref)):
        assert a.shape == b.shape and rel_error(a, b) <= 1e-10, name
    out = np.empty((H, N))
    layers.rmsnorm_step(np.ascontiguousarray(x[0].T), g[:, None], out)
    assert rel_error(out.T, y_ref[0]) <= 1e-10


@pytest.mark.parametrize("M", [0, 4], ids=["plain", "mlp"])
@pytest.mark.parametrize("residual,norm", [(True, "none"), (False, "rms"), (True, "rms")])
@pytest.mark.parametrize("cell", ["lstm", "mingru", "gru"])
def test_reference_model_against_finite_differences(cell, residual, norm, M):
    rng = np.random.default_rng(6)
    N, T, V, H, L = 2, 3, 5, 3, 3
    model = Model(V, cell, H, L, dtype="float64", seed=6, mlp_size=M, residual=residual, norm=norm)
    params = {name: p + rng.normal(0, 0.3, p.shape) for name, p in model.params.items()}
    x, y = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))
    state0 = rng.uniform(-1, 1, model.zero_state(N).shape)
    mask = np.array([[1, 0, 0.5], [1, 1, 0]])
    drops = reference.dropout_masks(0.3, rng, L, N, T, H)

    def forward():
        return reference.model_forward(params, cell, x, y, state0, mask, drops, residual)

    grads, dstate0 = reference.model_backward(forward()[2])
    assert set(grads) == set(params)
    checks = [("state0", state0, dstate0)] + [(n, params[n], grads[n]) for n in params]
    for name, arg, grad in checks:
        assert rel_error(grad, numerical_gradient(lambda: forward()[0], arg)) < 1e-7, name


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru", "mingru", "minlstm"])
@settings(deadline=None, max_examples=10)
# H >= 2: RMSNorm of one feature is its sign times the gain, so its input gradient is pure
# cancellation (1 - x^2 / (x^2 + eps)), rounding the engine and the reference round differently.
@given(B=st.integers(1, 3), T=st.integers(1, 4), H=st.integers(2, 4), L=st.integers(1, 3),
       p=st.sampled_from([0.0, 0.3]), residual=st.booleans(),
       norm=st.sampled_from(["none", "rms"]), E=st.sampled_from([0, 2]), M=st.sampled_from([0, 3]),
       seed=SEEDS)  # fmt: skip
def test_model_equals_the_reference(cell, B, T, H, L, p, residual, norm, E, M, seed):
    model = Model(5, cell, H, L, dropout=p, dtype="float64", seed=seed % 1000, embedding_size=E,
                  mlp_size=M, residual=residual, norm=norm)  # fmt: skip
    assert_model_matches_reference(model, B, T, seed)


@pytest.mark.parametrize("cell", ["lstm", "mingru"])
def test_the_model_passes_the_gradient_check(cell):
    errors = check_model_gradients(cell, num_layers=3, dropout=0.3, mlp_size=5, **DEEP)
    assert {"norm.1.g", "norm.2.g", "mlpnorm.0.g", "outnorm.g"} <= set(errors)
    assert max(errors.values()) < 1e-6, errors


def test_parameters_names_and_initial_gains():
    model = Model(7, "gru", 4, 3, mlp_size=5, **DEEP)
    gains = [name for name in model.params if "norm" in name]
    assert gains == ["mlpnorm.0.g", "norm.1.g", "mlpnorm.1.g", "norm.2.g", "mlpnorm.2.g",
                     "outnorm.g"]  # fmt: skip
    assert all((model.params[name] == 1).all() and model.params[name].shape == (4,)
               for name in gains)  # fmt: skip
    assert Model.param_shapes(7, "gru", 4, 3, 0, 5, "rms") == {
        name: p.shape for name, p in model.params.items()
    }
    assert not any("norm" in name for name in Model(7, "gru", 4, 3, residual=True).params)


@pytest.mark.parametrize("M", [0, 6])
@pytest.mark.parametrize("cell", ["lstm", "minlstm", "rnn", "gru", "mingru"])
def test_the_stepper_agrees_with_the_model(cell, M):
    model = Model(6, cell, 5, 3, dtype="float64", seed=1, mlp_size=M, **DEEP)
    rng = np.random.default_rng(0)
    for p in model.params.values():
        p += rng.normal(0, 0.2, p.shape)
    assert_stepper_agrees(model, rng)


def _save(path, model, checked=True, **config):
    cfg = Config(model=model.cell, hidden_size=model.hidden_size, num_layers=model.num_layers,
                 **config)  # fmt: skip
    ckpt = Checkpoint(params=model.params, vocab="abcd", config=cfg.to_dict())
    (save_checkpoint if checked else write_unchecked)(path, ckpt)
    return path


def test_a_checkpoint_round_trip_keeps_both_keys(tmp_path):
    model = Model(4, "mingru", 6, 3, seed=3, **DEEP)
    restored = restore_model(load_checkpoint(_save(tmp_path / "m.npz", model, **DEEP)))
    assert restored.residual and restored.norm == "rms"
    assert list(restored.params) == list(model.params)
    for name, p in model.params.items():
        np.testing.assert_array_equal(restored.params[name], p)


@pytest.mark.parametrize("change", ["removed", "reshaped", "nan", "config without norm"])
def test_a_hostile_checkpoint_is_one_clear_error(tmp_path, change):
    model = Model(4, "mingru", 6, 3, seed=3, **DEEP)
    config = dict(DEEP)
    if change == "removed":
        del model.params["norm.2.g"]
    elif change == "reshaped":
        model.params["outnorm.g"] = np.ones(5, np.float32)
    elif change == "nan":
        model.params["norm.1.g"][2] = np.nan
    else:
        config["norm"] = "none"
    path = _save(tmp_path / "bad.npz", model, checked=False, **config)
    with pytest.raises(CheckpointError, match="norm|NaN"):
        load_checkpoint(path)
    line = one_error_line(run("info", path, code=1), path)
    assert "norm" in line or "NaN" in line


@pytest.mark.parametrize("key,value", [("norm", "batch"), ("residual", 2), ("norm", 1),
                                       ("residual", "maybe")])  # fmt: skip
def test_bad_values_in_yaml_are_one_line(corpus, tmp_path, key, value):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({key: value}), encoding="utf-8")
    result = run("train", corpus, "--config", config, "--out", tmp_path / "r", *TINY, code=2)
    assert key in one_error_line(result, usage_errors=True)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "mingru", "minlstm"])
def test_every_command_runs_a_deep_model(cell, corpus, tmp_path):
    out = tmp_path / "run"
    deep = tiny(model=cell, num_layers=3, mlp_size=6, norm="rms", residual=True, max_steps=6)
    run("train", corpus, "--out", out, *deep, "--workers", "2")
    saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    assert saved["residual"] is True and saved["norm"] == "rms"
    run("train", corpus, "--out", out, "--resume", "--max-steps", "8", "--quiet")
    assert len(run("sample", out, "--length", "30", "--seed", "2").stdout) >= 30
    run("sample", out, "--length", "10", "--beam", "2")
    assert np.isfinite(json.loads(run("eval", out, "--split", "test", "--json").stdout)["loss"])
    run("report", out, "--out", tmp_path / "page.html", "--chars", "40")
    run("export", out, "--out", tmp_path / "model.html")
    page = (tmp_path / "model.html").read_text("utf-8")
    assert '"norm_places":["mlpnorm.0","norm.1","mlpnorm.1"' in page


def test_resume_and_init_from_keep_the_architecture(corpus, tmp_path):
    out = tmp_path / "run"
    run("train", corpus, "--out", out, *tiny(model="mingru", norm="rms", residual=True,
                                             max_steps=5))  # fmt: skip
    for option, value in (("--norm", "none"), ("--no-residual", None)):
        args = [option] + ([value] if value else [])
        refused = run("train", corpus, "--out", out, "--resume", *args, code=1)
        assert option.removeprefix("--no-").removeprefix("--") in one_error_line(refused)
        clash = run("train", corpus, "--out", tmp_path / "new", "--init-from", out / "best.npz",
                    *args, code=1)  # fmt: skip
        assert "residual, norm rms" in one_error_line(clash)
    run("train", corpus, "--out", tmp_path / "tuned", "--init-from", out / "best.npz",
        "--max-steps", "2", "--quiet")  # fmt: skip
    tuned = yaml.safe_load((tmp_path / "tuned" / "config.yaml").read_text(encoding="utf-8"))
    assert tuned["residual"] is True and tuned["norm"] == "rms"


def test_gradcheck_command_with_both_keys():
    for cell in ("mingru", "lstm"):
        printed = run("gradcheck", "--model", cell, "--residual", "--norm", "rms", "--num-layers",
                      "3", "--mlp-size", "4").stdout  # fmt: skip
        assert "outnorm.g" in printed and "residual, norm rms" in printed and "passed" in printed
