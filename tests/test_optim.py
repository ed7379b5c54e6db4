"""Optimizer updates against textbook formulas, rate factors, state round trips and clipping."""

import dataclasses
import inspect
import math
import tracemalloc

import numpy as np
import pytest

from rnncli import optim, reference
from rnncli.config import load_config
from rnncli.model import Model
from rnncli.optim import OPTIMIZERS, Optimizer, clip_gradients, make_optimizer
from rnncli.parallel import SingleProcess

LR = 0.1


def _params():
    rng = np.random.default_rng(0)
    return {"rnn.0.Wx": rng.standard_normal((2, 3)), "out.b": rng.standard_normal(3)}


def _grads(seed):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(p.shape) for name, p in _params().items()}


def _reference(name, p0, g1, g2):
    """Parameter after two steps of ``rnncli.reference``'s update for one array (float64)."""
    optimizer, hyper = (name, {}) if name != "sgd_momentum" else ("sgd", {"momentum": 0.9})
    update = reference.OPTIMIZERS[optimizer]
    p1, state = update(p0, g1, {}, LR, 1, **hyper)
    p2, _ = update(p1, g2, state, LR, 2, **hyper)
    return p2


def _make(name, params):
    if name == "sgd_momentum":
        return make_optimizer("sgd", params, LR, momentum=0.9)
    return make_optimizer(name, params, LR)


CASES = ["sgd", "sgd_momentum", "adagrad", "rmsprop", "adam"]


def test_every_optimizer_has_a_reference_with_its_defaults():
    assert {case.removesuffix("_momentum") for case in CASES} == set(OPTIMIZERS)
    assert set(reference.OPTIMIZERS) == set(OPTIMIZERS)
    for name, cls in OPTIMIZERS.items():
        declared = inspect.signature(reference.OPTIMIZERS[name]).parameters
        hyper = [key for key in declared if key not in ("p", "g", "state", "lr", "t")]
        assert hyper == list(cls.hyper), name
        assert {attr: declared[attr].default for attr in hyper} == {
            attr: default for attr, (_, default) in cls.hyper.items()
        }, name


@pytest.mark.parametrize("chunk", [1 << 15, 4], ids=["whole", "chunks"])
@pytest.mark.parametrize("name", CASES)
def test_two_steps_match_reference(name, chunk, monkeypatch):
    """Also updated in chunks of 4 elements: rnn.0.Wx (6 elements) then takes two, the second
    shorter."""
    monkeypatch.setattr(Optimizer, "CHUNK", chunk)
    params = _params()
    arrays = dict(params)  # the same array objects: updates must be in place
    opt = _make(name, params)
    g1, g2 = _grads(1), _grads(2)
    opt.step(params, g1)
    opt.step(params, g2)
    for key, p0 in _params().items():
        assert params[key] is arrays[key]
        expected = _reference(name, p0, g1[key], g2[key])
        np.testing.assert_allclose(params[key], expected, rtol=1e-13, atol=1e-15)
        assert not np.allclose(params[key], p0)


def test_adam_first_step_moves_each_element_by_lr():
    # With bias correction the first Adam step is lr * sign(g), whatever the gradient's scale.
    params = {"w": np.zeros(4)}
    opt = make_optimizer("adam", params, 0.01)
    opt.step(params, {"w": np.array([3.0, -0.5, 200.0, -0.1])})
    np.testing.assert_allclose(params["w"], [-0.01, 0.01, -0.01, 0.01], rtol=1e-4)


def test_adagrad_by_hand():
    params = {"w": np.array([1.0])}
    opt = make_optimizer("adagrad", params, 0.5, eps=0.0)
    opt.step(params, {"w": np.array([3.0])})  # cache 9: 1 - 0.5 * 3 / 3
    assert params["w"][0] == 0.5
    opt.step(params, {"w": np.array([4.0])})  # cache 25: 0.5 - 0.5 * 4 / 5
    assert params["w"][0] == pytest.approx(0.1, abs=1e-15)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_float32_stays_float32(name):
    params = {k: v.astype(np.float32) for k, v in _params().items()}
    opt = make_optimizer(name, params, LR, momentum=0.5)
    opt.step(params, {k: v.astype(np.float32) for k, v in _grads(1).items()})
    assert all(p.dtype == np.float32 for p in params.values())
    assert all(a.dtype == np.float32 for k, a in opt.state_dict().items() if k != "t")


@pytest.mark.parametrize("name", CASES)
def test_state_round_trip_gives_identical_updates(name):
    params_a = _params()
    opt_a = _make(name, params_a)
    for seed in (1, 2):
        opt_a.step(params_a, _grads(seed))
    saved = opt_a.state_dict()
    assert saved["t"].shape == () and saved["t"] == 2
    params_b = {k: v.copy() for k, v in params_a.items()}
    opt_b = _make(name, params_b)
    opt_b.load_state_dict(saved)
    for seed in (3, 4):
        opt_a.step(params_a, _grads(seed))
        opt_b.step(params_b, _grads(seed))
    for key in params_a:
        assert params_a[key].tobytes() == params_b[key].tobytes()


def test_state_dict_is_a_copy():
    params = _params()
    opt = make_optimizer("adam", params, LR)
    opt.step(params, _grads(1))
    saved = opt.state_dict()
    before = saved["m.out.b"].copy()
    opt.step(params, _grads(2))
    np.testing.assert_array_equal(saved["m.out.b"], before)
    assert sorted(saved) == ["m.out.b", "m.rnn.0.Wx", "t", "v.out.b", "v.rnn.0.Wx"]


def test_plain_sgd_has_only_a_step_count():
    params = _params()
    assert list(make_optimizer("sgd", params, LR).state_dict()) == ["t"]


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d.pop("v.out.b"), r"missing \['v.out.b'\]"),
        (lambda d: d.update(extra=np.zeros(1)), r"unexpected \['extra'\]"),
        (lambda d: d.pop("t"), r"missing \['t'\]"),
        (lambda d: d.update({"m.out.b": np.zeros(4)}), r"'m.out.b': expected float64 \(3,\)"),
        (lambda d: d.update({"m.out.b": np.zeros(3, np.float32)}), "got float32"),
        (lambda d: d.update(t=np.array(1.5)), "'t' must be a 0-d integer"),
    ],
)
def test_load_state_dict_rejects_mismatches(change, match):
    params = _params()
    opt = make_optimizer("adam", params, LR)
    opt.step(params, _grads(1))
    before = opt.state_dict()
    d = opt.state_dict()
    change(d)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(d)
    after = opt.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


# -- per-parameter rate factors ---------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_rate_factor_scales_that_parameter_s_steps_alone(name):
    """With factor s on rnn.0.Wx, every step of rnn.0.Wx is s times as long as with factor 1
    (moments and caches do not depend on the rate), and out.b moves exactly as before. From
    zero and with s a power of two, "s times" holds to the last bit."""
    s = 4.0
    plain = {name: np.zeros_like(p) for name, p in _params().items()}
    scaled = {name: np.zeros_like(p) for name, p in _params().items()}
    opt_plain = make_optimizer(name, plain, LR, momentum=0.9)
    opt_scaled = make_optimizer(name, scaled, LR, {"rnn.0.Wx": s}, momentum=0.9)
    assert opt_scaled.rate_factors == {"rnn.0.Wx": s}
    for seed in (1, 2, 3):
        opt_plain.step(plain, _grads(seed))
        opt_scaled.step(scaled, _grads(seed))
        assert np.abs(plain["rnn.0.Wx"]).min() > 0
        np.testing.assert_array_equal(scaled["rnn.0.Wx"], s * plain["rnn.0.Wx"])
        np.testing.assert_array_equal(scaled["out.b"], plain["out.b"])


def test_adam_first_step_moves_a_scaled_parameter_by_its_factor_times_lr():
    params = {"rnn.0.Wx": np.zeros(4), "out.b": np.zeros(2)}
    opt = make_optimizer("adam", params, 0.01, {"rnn.0.Wx": 16})
    opt.step(params, {"rnn.0.Wx": np.array([3.0, -0.5, 200.0, -0.1]), "out.b": np.ones(2)})
    np.testing.assert_allclose(params["rnn.0.Wx"], [-0.16, 0.16, -0.16, 0.16], rtol=1e-4)
    np.testing.assert_allclose(params["out.b"], [-0.01, -0.01], rtol=1e-4)


def test_the_factor_applies_in_every_chunk(monkeypatch):
    monkeypatch.setattr(Optimizer, "CHUNK", 4)  # rnn.0.Wx's 6 elements take two chunks
    plain = {name: np.zeros_like(p) for name, p in _params().items()}
    scaled = {name: np.zeros_like(p) for name, p in _params().items()}
    make_optimizer("adam", plain, LR).step(plain, _grads(1))
    make_optimizer("adam", scaled, LR, {"rnn.0.Wx": 0.5}).step(scaled, _grads(1))
    np.testing.assert_array_equal(scaled["rnn.0.Wx"], 0.5 * plain["rnn.0.Wx"])


def test_factors_of_one_are_dropped_and_bad_factors_refused():
    assert make_optimizer("adam", _params(), LR, {"rnn.0.Wx": 1.0}).rate_factors == {}
    for factors, match in [
        ({"embed.W": 2.0}, "lacks: embed.W"),
        ({"rnn.0.Wx": 0.0}, "'rnn.0.Wx' must be a finite number > 0, got 0.0"),
        ({"rnn.0.Wx": -2.0}, "must be a finite number > 0"),
        ({"out.b": math.nan}, "must be a finite number > 0"),
        ({"out.b": "2"}, "must be a finite number > 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            make_optimizer("adam", _params(), LR, factors)


def test_from_config_gives_the_input_table_the_input_lr_scale():
    cfg = load_config(overrides={"input_lr_scale": 8.0})
    assert optim.from_config(cfg, _params()).rate_factors == {"rnn.0.Wx": 8.0}
    with_embedding = {"embed.W": np.zeros((5, 3)), **_params()}
    assert optim.from_config(cfg, with_embedding).rate_factors == {"embed.W": 8.0}
    assert optim.from_config(cfg, {}).rate_factors == {}  # checkpoint and memory ask for slots
    assert optim.from_config(load_config(), _params()).rate_factors == {"rnn.0.Wx": 16.0}
    plain = load_config(overrides={"input_lr_scale": 1.0})
    assert optim.from_config(plain, _params()).rate_factors == {}  # a factor of 1 costs nothing


def test_lr_is_read_at_every_step():
    params = {"w": np.zeros(2)}
    opt = make_optimizer("sgd", params, 1.0)
    opt.lr = 0.25
    opt.step(params, {"w": np.array([1.0, -2.0])})
    np.testing.assert_array_equal(params["w"], [-0.25, 0.5])


def test_parameters_must_be_contiguous():
    params = {"W": np.zeros((4, 6))[:, ::2]}
    with pytest.raises(ValueError, match="contiguous"):
        make_optimizer("adam", params, LR)


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'; choose from sgd, "):
        make_optimizer("adamw", _params(), LR)


def test_unknown_hyper_parameter():
    with pytest.raises(TypeError, match="betta1"):
        make_optimizer("adam", _params(), LR, betta1=0.5)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_from_config_takes_the_optimizer_s_own_keys(name):
    """Every declared hyper-parameter is read from its config key (rmsprop's decay from
    rmsprop_decay); the recipe builds a twin that updates identically."""
    cls = OPTIMIZERS[name]
    keys = {key: 0.5 + 0.1 * i for i, (key, _) in enumerate(cls.hyper.values())}
    cfg = load_config(overrides={"optimizer": name, "learning_rate": 0.03, **keys})
    params = _params()
    opt = optim.from_config(cfg, params)
    assert type(opt) is cls and opt.lr == 0.03
    assert {key: getattr(opt, attr) for attr, (key, _) in cls.hyper.items()} == keys
    assert opt.recipe == {"name": name, **keys}
    twin_params = _params()
    twin = make_optimizer(params=twin_params, lr=0.03, rate_factors=opt.rate_factors, **opt.recipe)
    for seed in (1, 2):
        opt.step(params, _grads(seed))
        twin.step(twin_params, _grads(seed))
    for key, p in params.items():
        np.testing.assert_array_equal(p, twin_params[key])


class _SignSGD(Optimizer):
    """A toy optimizer declared in this test file alone: ``p -= lr * scale * sign(g)``."""

    name, slots = "signsgd", ()
    hyper = {"scale": ("momentum", 1.0)}  # borrows a config key

    def _update(self, p, g, s, lr):
        np.sign(g, out=s)
        s *= lr * self.scale
        p -= s


def test_a_registered_optimizer_is_built_by_name_and_from_config(monkeypatch):
    monkeypatch.setattr(optim, "OPTIMIZERS", dict(OPTIMIZERS))
    optim.register(_SignSGD)
    params = {"w": np.array([1.0, 2.0, 3.0])}
    opt = make_optimizer("signsgd", params, 0.5, momentum=0.25)
    opt.step(params, {"w": np.array([2.0, -3.0, 0.0])})
    np.testing.assert_array_equal(params["w"], [0.875, 2.125, 3.0])
    assert list(opt.state_dict()) == ["t"]
    cfg = dataclasses.replace(load_config(), optimizer="signsgd", momentum=0.5)
    assert optim.from_config(cfg, params).scale == 0.5
    with pytest.raises(ValueError, match=r"\['step'\] are taken"):
        optim.register(type("Bad", (_SignSGD,), {"hyper": {"step": ("momentum", 1.0)}}))


@pytest.mark.parametrize("factors", [{}, {"w": 3.0}], ids=["plain", "factor"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step_allocates_no_parameter_sized_temporaries(name, factors):
    params = {"w": np.ones(100_000)}  # 800 kB
    grads = {"w": np.full(100_000, 0.5)}
    opt = make_optimizer(name, params, LR, factors, momentum=0.9)
    opt.step(params, grads)
    tracemalloc.start()
    try:
        opt.step(params, grads)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < params["w"].nbytes // 4


def test_clip_value():
    grads = {"a": np.array([3.0, -4.0]), "b": np.array([[0.5, -12.0]])}
    norm = clip_gradients(grads, "value", 1.0)
    assert norm == math.sqrt(9 + 16 + 0.25 + 144)
    np.testing.assert_array_equal(grads["a"], [1.0, -1.0])
    np.testing.assert_array_equal(grads["b"], [[0.5, -1.0]])


def test_clip_norm_scales_to_threshold():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([4.0])}
    assert clip_gradients(grads, "norm", 1.0) == 5.0
    np.testing.assert_allclose(grads["a"], [0.6, 0.0])
    np.testing.assert_allclose(grads["b"], [0.8])


@pytest.mark.parametrize("mode", ["value", "norm"])
def test_clip_below_threshold_or_disabled_leaves_grads(mode):
    for threshold in (10.0, 0.0, -1.0):
        grads = {"a": np.array([3.0, -4.0])}
        assert clip_gradients(grads, mode, threshold) == 5.0
        np.testing.assert_array_equal(grads["a"], [3.0, -4.0])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_clip_non_finite_returns_non_finite_norm(bad):
    grads = {"a": np.array([1.0, bad]), "b": np.array([100.0])}
    assert not math.isfinite(clip_gradients(grads, "norm", 1.0))
    np.testing.assert_array_equal(grads["b"], [100.0])


def test_clip_norm_of_huge_float32_grads_is_finite():
    grads = {"a": np.full(4, 1e20, dtype=np.float32)}  # squares overflow float32
    norm = clip_gradients(grads, "norm", 1.0)
    assert norm == pytest.approx(2e20, rel=1e-6)
    np.testing.assert_allclose(grads["a"], 0.5, rtol=1e-6)
    assert grads["a"].dtype == np.float32


def test_clip_unknown_mode():
    with pytest.raises(ValueError, match="unknown clipping mode 'l2'"):
        clip_gradients({"a": np.ones(2)}, "l2", 1.0)


# -- a whole update, as training applies it, against the reference ----------------------------


@pytest.mark.parametrize("mode", ["value", "norm"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_training_updates_match_the_reference(name, mode):
    """Three updates of a model's parameters as the trainer makes them (``SingleProcess.update``
    with ``optim.from_config``): clipping by ``mode``, the input table at ``input_lr_scale``
    times the rate, the optimizer's config keys; the clipping threshold bites on steps 1 and 3,
    and step 2's gradients are not finite, so it is skipped."""
    cfg = load_config(overrides={"optimizer": name, "learning_rate": 0.05, "momentum": 0.5,
                                 "grad_clip_mode": mode, "grad_clip": 2.0,
                                 "input_lr_scale": 4.0})  # fmt: skip
    model = Model(5, "gru", 3, 2, dtype="float64", seed=0, embedding_size=2)
    net = SingleProcess(model, optim.from_config(cfg, model.params))
    params = {k: p.copy() for k, p in model.params.items()}
    factors = reference.input_rate_factors(params, cfg.input_lr_scale)
    assert factors["embed.W"] == 4.0 and sum(f != 1 for f in factors.values()) == 1
    hyper = {attr: getattr(cfg, key) for attr, (key, _) in OPTIMIZERS[name].hyper.items()}
    states, t, rng = {}, 0, np.random.default_rng(7)
    for step in (1, 2, 3):
        grads = {k: rng.normal(0, 1.5, p.shape) for k, p in params.items()}
        if step == 2:
            grads["out.b"][0] = np.nan
        t += step != 2  # a skipped update takes no step
        rate, clip = cfg.learning_rate, cfg.grad_clip
        update = (params, grads, states, t, name, rate, factors, mode, clip)
        params, states, ref_norm = reference.training_update(*update, **hyper)
        norm = net.update({k: g.copy() for k, g in grads.items()}, mode, clip)
        assert norm == pytest.approx(ref_norm, rel=1e-13, nan_ok=True)
        assert (ref_norm > clip) if step != 2 else math.isnan(ref_norm)
        for key, p in model.params.items():
            np.testing.assert_allclose(p, params[key], rtol=1e-13, atol=1e-15, err_msg=key)
