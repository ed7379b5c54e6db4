"""Saved means loadable: what ``rnn train`` accepts and saves, every command loads; a setting
that would make a checkpoint the reader refuses is refused before training starts, and the
saver runs the reader's checks on what it is about to write."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnncli.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from rnncli.config import Config, ConfigError
from rnncli.schedules import Cosine, Plateau
from tests.crafted import train_tiny
from tests.helpers import one_error_line, run, tiny, write_corpus


@given(
    lr=st.floats(1e-300, 10.0),
    decay=st.floats(1e-300, 0.999),
    min_lr=st.sampled_from([0.0, 1e-320, 1e-5]),
    cuts=st.integers(1, 3000),
)
@settings(max_examples=60, deadline=None)
def test_plateau_never_saves_a_rate_the_reader_refuses(lr, decay, min_lr, cuts):
    schedule = Plateau(lr, decay, 1, min_lr)
    for _ in range(cuts):
        if schedule.stop:
            break
        schedule.reduce()
    assert Plateau.state_check(schedule.state_dict())
    assert schedule.lr > 0
    if schedule.lr < 2.3e-308:
        assert schedule.stop  # a rate that moves nothing ends the run, whatever min_lr says


@given(decay=st.floats(1e-300, 0.999), cuts=st.integers(1, 3000))
@settings(max_examples=40, deadline=None)
def test_cosine_penalties_never_reach_zero(decay, cuts):
    schedule = Cosine(1e-3, 0.1, 0, decay, 0.0)
    for _ in range(cuts):
        if schedule.stop:
            break
        schedule.penalize()
    assert Cosine.state_check(schedule.state_dict()) and schedule.penalty > 0


@pytest.mark.parametrize(
    "option, value",
    [
        ("--forget-bias", "1e308"),
        ("--forget-bias", "-3.5e38"),
        ("--learning-rate", "1e39"),
        ("--eps", "1e-50"),
        ("--grad-clip", "1e300"),
        ("--input-lr-scale", "1e300"),
    ],
)
def test_a_float32_run_refuses_what_float32_cannot_hold(tmp_path, option, value):
    corpus = write_corpus(tmp_path / "c.txt")
    result = run("train", corpus, "--out", tmp_path / "run", *tiny(max_steps=2), option, value,
                 code=2)  # fmt: skip
    assert "float32" in one_error_line(result)
    assert not (tmp_path / "run" / "last.npz").exists()


def test_the_product_of_rate_and_input_scale_must_fit_too():
    with pytest.raises(ConfigError, match="learning_rate x input_lr_scale"):
        Config.from_dict({"learning_rate": 1e30, "input_lr_scale": 1e30})
    assert Config.from_dict({"learning_rate": 1e30, "input_lr_scale": 1e30, "dtype": "float64"})


@given(bias=st.floats(allow_nan=False, allow_infinity=False))
@settings(max_examples=100, deadline=None)
def test_forget_bias_is_refused_or_finite_in_the_models_precision(bias):
    for dtype in ("float32", "float64"):
        try:
            cfg = Config.from_dict({"forget_bias": bias, "dtype": dtype})
        except ConfigError:
            continue
        with np.errstate(over="ignore"):
            assert math.isfinite(np.dtype(cfg.dtype).type(cfg.forget_bias))


def test_min_lr_zero_run_that_underflows_stops_with_a_loadable_checkpoint(tmp_path):
    corpus = write_corpus(tmp_path / "c.txt")
    out = tmp_path / "run"
    changes = dict(max_steps=40, eval_every=1, checkpoint_every=1, lr_patience=1)
    args = tiny(**changes) + ["--dtype", "float64", "--learning-rate", "1e-300"]
    args += ["--lr-decay", "1e-30", "--min-lr", "0"]
    run("train", corpus, "--out", out, "--quiet", *args)
    ckpt = load_checkpoint(out / "last.npz")
    assert ckpt.meta["schedule"]["lr"] > 0 and ckpt.meta["schedule"]["stop"]
    run("info", out / "last.npz")
    run("train", corpus, "--out", out, "--resume", "--quiet")


def test_the_saver_refuses_what_the_reader_would(tmp_path):
    run_dir = train_tiny(tmp_path)
    good = load_checkpoint(run_dir / "last.npz")
    cases = {
        "lr 0": lambda c: c.meta["schedule"].update(lr=0.0),
        "nan weight": lambda c: c.params[next(iter(c.params))].flat.__setitem__(0, np.nan),
        "inf moment": lambda c: c.optimizer[
            next(k for k in c.optimizer if k != "t")
        ].flat.__setitem__(0, np.inf),
        "step count at int64 max": lambda c: c.optimizer.update(t=np.array(2**63 - 1)),
        "epoch beyond any run": lambda c: c.meta.update(step=2**60),
        "bad config": lambda c: c.config.update(hidden_size=0),
    }
    for name, change in cases.items():
        ckpt = load_checkpoint(run_dir / "last.npz")
        change(ckpt)
        target = tmp_path / f"{name}.npz"
        with pytest.raises(CheckpointError, match="not saved: it would not load"):
            save_checkpoint(target, ckpt)
        assert not target.exists(), name
    save_checkpoint(tmp_path / "fine.npz", good)
    load_checkpoint(tmp_path / "fine.npz")
