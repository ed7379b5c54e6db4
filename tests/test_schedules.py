"""Learning-rate schedules: plateau halving, cosine decay with warm-up, their registry, their state
in checkpoints, and what `rnn train` records and says with them."""

from __future__ import annotations

import json
import math
import re
import signal
from pathlib import Path

import numpy as np
import pytest

from rnncli import trainer as train_module
from rnncli.checkpoint import load_checkpoint
from rnncli.config import FIELDS, load_config
from rnncli.report import charts
from rnncli.runlog import History
from rnncli.schedules import FEW_EVALUATIONS, SCHEDULES, Cosine, Plateau, cosine_rate
from rnncli.schedules import from_config as schedule_from_config
from tests.crafted import write_unchecked
from tests.helpers import TINY, one_error_line, run

# -- plateau ------------------------------------------------------------------------------------


def test_plateau_sequence():
    sched = Plateau(1.0, decay=0.5, patience=2, min_lr=0.2)
    assert sched.observe(3.0) is True  # first loss is always an improvement
    assert sched.observe(2.5) is True
    assert sched.observe(2.6) is False  # one bad evaluation: patience 2 not reached
    assert sched.lr == 1.0
    assert sched.observe(2.5) is False  # equal is not better: second bad -> halve
    assert (sched.lr, sched.stop) == (0.5, False)
    assert sched.observe(2.0) is True  # improvement resets the count
    assert sched.best == 2.0
    assert [sched.observe(x) for x in (2.1, 2.2)] == [False, False]
    assert (sched.lr, sched.stop) == (0.25, False)
    assert [sched.observe(x) for x in (float("nan"), 2.0)] == [False, False]
    assert (sched.lr, sched.stop) == (0.125, True)  # below min_lr


def test_plateau_patience_one_halves_on_every_plateau():
    sched = Plateau(0.1, patience=1, min_lr=0.0)
    sched.observe(1.0)
    for expected in (0.05, 0.025, 0.0125):
        sched.observe(1.5)
        assert sched.lr == pytest.approx(expected)
        assert sched.rate(7, 0.5) == sched.lr  # its rate does not depend on the step
    assert not sched.stop


def test_plateau_state_round_trip():
    a = Plateau(1.0, patience=3)
    assert json.loads(json.dumps(a.state_dict())) == a.state_dict()  # also before any loss
    for loss in (2.0, 1.0, 1.5):
        a.observe(loss)
    b = Plateau(1.0, patience=3)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    losses = (1.6, 1.7, 0.9, 1.0, 1.0, 1.0)
    assert [a.observe(x) for x in losses] == [b.observe(x) for x in losses]
    assert a.state_dict() == b.state_dict()
    assert a.lr == 0.25


@pytest.mark.parametrize(
    "state",
    [{"lr": 0.1}, {"lr": 0.1, "penalty": 1.0}, [1, 2], None,
     {"lr": -1.0, "best": None, "bad_evals": 0, "stop": False},
     {"lr": 0.1, "best": None, "bad_evals": True, "stop": False}],
)  # fmt: skip
def test_plateau_rejects_malformed_state(state):
    sched = Plateau(1.0)
    with pytest.raises(ValueError, match="invalid learning-rate schedule state for plateau"):
        sched.load_state_dict(state)
    assert sched.state_dict() == Plateau(1.0).state_dict()  # nothing changed


# -- cosine -------------------------------------------------------------------------------------


def test_cosine_rate_at_known_steps():
    lr, floor, warmup, n = 1.0, 0.1, 10, 110
    rate = [cosine_rate(lr, floor, warmup, k, k / n) for k in range(1, n + 1)]
    assert rate[0] == 0.1  # step 1 of the warm-up
    assert rate[4] == 0.5  # step 5
    assert rate[warmup - 1] == lr  # the end of the warm-up: the peak
    assert rate[60 - 1] == pytest.approx((lr + lr * floor) / 2, rel=1e-15)  # halfway through decay
    assert rate[-1] == lr * floor  # the last step: the floor, exactly
    after = rate[warmup - 1 :]
    assert all(a > b for a, b in zip(after, after[1:], strict=False))  # decays throughout


def test_cosine_rate_without_warm_up_and_by_progress_alone():
    assert cosine_rate(2.0, 0.25, 0, 1, 0.0) == 2.0
    assert cosine_rate(2.0, 0.25, 0, 50, 0.5) == pytest.approx(1.25, rel=1e-15)
    assert cosine_rate(2.0, 0.25, 0, 99, 1.0) == 0.5
    assert cosine_rate(2.0, 0.0, 0, 99, 1.0) == 0.0  # a floor of 0 ends at 0
    assert cosine_rate(2.0, 0.25, 0, 120, 1.3) == 0.5  # past the end (a time limit): the floor


def test_cosine_rate_under_a_time_limit_estimates_the_warm_up_s_end():
    # Step 20 at progress 0.4: the 10 warm-up steps took about 0.2 of the run, so the decay is
    # (0.4 - 0.2) / (1 - 0.2) = 0.25 of the way through.
    expected = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25))
    assert cosine_rate(1.0, 0.1, 10, 20, 0.4) == pytest.approx(expected, rel=1e-15)
    assert cosine_rate(1.0, 0.1, 10, 11, 1.0) == pytest.approx(0.1)  # warm-up took the whole run


def test_cosine_schedule_penalty_after_a_non_finite_step():
    sched = Cosine(1.0, floor=0.1, warmup_steps=0, decay=0.5, min_lr=0.2)
    first = sched.rate(3, 0.3)
    sched.penalize()
    assert sched.lr == first / 2  # the step is retried at its number, at half the rate
    assert sched.rate(3, 0.3) == first / 2 and sched.rate(10, 1.0) == 0.05
    assert not sched.stop
    sched.penalize()
    sched.penalize()  # the peak is now 0.125 < min_lr 0.2
    assert sched.stop and sched.state_dict()["penalty"] == 0.125


def test_cosine_state_round_trip_and_refusals():
    a = Cosine(1.0, 0.1, 5)
    a.rate(7, 0.4)
    a.penalize()
    b = Cosine(1.0, 0.1, 5)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.state_dict() == a.state_dict()
    assert [b.rate(k, k / 20) for k in (8, 9)] == [a.rate(k, k / 20) for k in (8, 9)]
    bad_states = [
        Plateau(1.0).state_dict(),
        {"lr": 0.1, "penalty": 2.0},
        {"lr": 0.1, "penalty": 0},
        {"lr": math.inf, "penalty": 1.0},
        "x" * 10_000,
    ]
    for bad in bad_states:
        with pytest.raises(ValueError, match="invalid learning-rate schedule state for cos") as e:
            Cosine(1.0).load_state_dict(bad)
        assert len(str(e.value)) < 300
    with pytest.raises(ValueError, match="needs a run with an end"):
        Cosine(1.0).rate(1, None)


# -- the registry and the configuration --------------------------------------------------------


def test_the_config_offers_every_registered_schedule():
    field = next(f for f in FIELDS if f.name == "lr_schedule")
    assert list(field.choices) == list(SCHEDULES) == ["plateau", "cosine"]
    for name, cls in SCHEDULES.items():
        cfg = load_config(overrides={"lr_schedule": name, "learning_rate": 0.01})
        sched = schedule_from_config(cfg)
        assert type(sched) is cls and sched.rate(1, 0.0) == 0.01


def test_cosine_takes_its_keys_from_the_config():
    cfg = load_config(overrides={"lr_schedule": "cosine", "warmup_steps": 3, "lr_floor": 0.2,
                                 "lr_decay": 0.25, "min_lr": 0.0})  # fmt: skip
    sched = schedule_from_config(cfg)
    got = (sched.peak, sched.floor, sched.warmup_steps, sched.decay, sched.min_lr)
    assert got == (cfg.learning_rate, 0.2, 3, 0.25, 0.0)


def test_budget_note_only_for_a_plateau_with_few_evaluations():
    note = Plateau(0.002, patience=2).budget_note(2, 500)
    assert note.startswith("plateau schedule: 2 evaluation(s) left before the run ends")
    assert "lr_patience (2)" in note and "0.002" in note and "--lr-schedule cosine" in note
    assert Plateau(0.002).budget_note(FEW_EVALUATIONS, 500) is None
    assert Cosine(0.002).budget_note(0, 500) is None


# -- rnn train ----------------------------------------------------------------------------------


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


COSINE = ["--lr-schedule", "cosine", "--log-every", "1", "--quiet"]


def test_a_cosine_run_records_the_rate_of_every_step(tmp_path, corpus):
    out = tmp_path / "run"
    run("train", corpus, "--out", out, *TINY, *COSINE, "--max-steps", "20", "--warmup-steps", "4")
    lr = [r["lr"] for r in records(out)]
    assert lr == [cosine_rate(2e-3, 0.1, 4, k, k / 20) for k in range(1, 21)]
    assert lr[:4] == [5e-4, 1e-3, 1.5e-3, 2e-3] and lr[-1] == 2e-3 * 0.1
    assert load_checkpoint(out / "last.npz").meta["schedule"] == {"lr": lr[-1], "penalty": 1.0}


def test_a_cosine_run_ends_at_the_floor_at_max_epochs(tmp_path, corpus):
    out = tmp_path / "run"
    run("train", corpus, "--out", out, *TINY, *COSINE, "--batch-size", "8", "--seq-length",
        "32", "--max-epochs", "1", "--lr-floor", "0.25")  # fmt: skip
    lr = [r["lr"] for r in records(out)]
    assert 10 < len(lr) < 100 and lr[0] < 2e-3 and lr[-1] == 2e-3 * 0.25
    assert all(a > b for a, b in zip(lr, lr[1:], strict=False))


def test_a_cosine_run_under_a_time_limit_decays_with_its_training_time(tmp_path, corpus):
    out = tmp_path / "run"
    run("train", corpus, "--out", out, *TINY, *COSINE, "--max-epochs", "0", "--max-time", "0.5")
    lr = [r["lr"] for r in records(out)]
    assert len(lr) > 3 and lr[0] <= 2e-3
    assert all(a >= b >= 2e-4 for a, b in zip(lr, lr[1:], strict=False))
    assert lr[-1] < lr[0]


def test_cosine_without_a_limit_is_refused_in_one_line(tmp_path, corpus):
    out = tmp_path / "run"
    result = run("train", corpus, "--out", out, "--lr-schedule", "cosine", "--max-epochs", "0",
                 code=2)  # fmt: skip
    assert one_error_line(result, strip=True) == (
        "lr_schedule: cosine decays to the end of the run, which needs a limit: set max_steps, "
        "max_epochs or max_time"
    )
    assert not out.exists()


def interrupt_at(monkeypatch, step: int) -> None:
    """SIGINT arrives during step ``step`` + 1 of the next training: the run saves and stops."""
    original = train_module.Trainer.train_step

    def train_step(self):
        if self.step == step:
            signal.raise_signal(signal.SIGINT)
        return original(self)

    monkeypatch.setattr(train_module.Trainer, "train_step", train_step)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_cosine_run_resumes_bitwise(tmp_path, corpus, monkeypatch, workers):
    opts = [*TINY, *COSINE, "--max-steps", "17", "--warmup-steps", "3", "--workers", workers,
            "--input-lr-scale", "4"]  # fmt: skip
    run("train", corpus, "--out", tmp_path / "once", *opts)
    interrupt_at(monkeypatch, 7)
    run("train", corpus, "--out", tmp_path / "twice", *opts, code=130)
    assert load_checkpoint(tmp_path / "twice/last.npz").meta["step"] == 8
    monkeypatch.undo()
    run("train", corpus, "--out", tmp_path / "twice", "--resume", "--quiet")
    a, b = load_checkpoint(tmp_path / "once/last.npz"), load_checkpoint(tmp_path / "twice/last.npz")
    for name in a.params:
        assert a.params[name].tobytes() == b.params[name].tobytes(), name
    for key in a.optimizer:
        assert np.array_equal(a.optimizer[key], b.optimizer[key]), key
    assert a.meta["schedule"] == b.meta["schedule"]
    timed = ("chars_per_s", "elapsed", "eval_s", "eval_full_s")  # wall-clock fields differ
    assert records(tmp_path / "once") == [
        {**r, **{key: o[key] for key in timed if key in o}}
        for r, o in zip(records(tmp_path / "twice"), records(tmp_path / "once"), strict=True)
    ]


def test_resume_applies_a_new_schedule_from_the_current_step(tmp_path, corpus):
    out = tmp_path / "run"
    run("train", corpus, "--out", out, *TINY, "--max-steps", "10", "--log-every", "1", "--quiet")
    result = run("train", corpus, "--out", out, "--resume", "--lr-schedule", "cosine",
                 "--max-steps", "20", "--warmup-steps", "2", "--lr-floor", "0.5")  # fmt: skip
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes == [
        "note: --resume applies lr_schedule = cosine (was plateau) from step 11",
        "note: --resume applies warmup_steps = 2 (was 0) from step 11",
        "note: --resume applies lr_floor = 0.5 (was 0.1) from step 11",
        "note: --resume applies max_steps = 20 (was 10) from step 11",
    ]
    lr = [r["lr"] for r in records(out)]
    assert lr[:10] == [2e-3] * 10
    assert lr[10:] == [cosine_rate(2e-3, 0.5, 2, k, k / 20) for k in range(11, 21)]
    assert lr[-1] == 1e-3


def test_resume_applies_a_new_input_lr_scale(tmp_path, corpus):
    out = tmp_path / "run"
    run("train", corpus, "--out", out, *TINY, "--max-steps", "4", "--quiet")
    result = run("train", corpus, "--out", out, "--resume", "--max-steps", "6",
                 "--input-lr-scale", "8")  # fmt: skip
    assert "note: --resume applies input_lr_scale = 8.0 (was 16.0) from step 5" in result.stderr
    assert load_checkpoint(out / "last.npz").config["input_lr_scale"] == 8.0
    assert "input_lr_scale: 8.0" in (out / "config.yaml").read_text()


def with_schedule_state(path: Path, state) -> None:
    """Rewrite the checkpoint at ``path`` with ``state`` as its schedule's, all else kept."""
    ckpt = load_checkpoint(path)
    ckpt.meta["schedule"] = state
    write_unchecked(path, ckpt)  # save_checkpoint would refuse what the reader refuses


@pytest.mark.parametrize(
    "state",
    [{"lr": 1e-3, "penalty": 2.0}, {"lr": 1e-3}, {"lr": 2e-3, "best": None, "bad_evals": 0,
                                                  "stop": False}, [], "cosine"],
    ids=["penalty-above-1", "no-penalty", "a-plateau-state", "list", "string"],
)  # fmt: skip
def test_a_malformed_schedule_state_is_one_line_and_exit_1(tmp_path, corpus, state):
    out = tmp_path / "run"
    run("train", corpus, "--out", out, *TINY, *COSINE, "--max-steps", "6")
    with_schedule_state(out / "last.npz", state)
    before = (out / "last.npz").read_bytes()
    result = run("train", corpus, "--out", out, "--resume", "--max-steps", "8", code=1)
    line = one_error_line(result, strip=True)
    assert line.startswith(f"{out / 'last.npz'}: member 'meta': meta.schedule must be an object")
    assert "(cosine)" in line and len(line) < 400
    assert (out / "last.npz").read_bytes() == before


def test_a_short_plateau_run_says_its_rule_may_never_act(tmp_path, corpus):
    out = tmp_path / "run"
    result = run("train", corpus, "--out", out, *TINY, "--max-steps", "12", "--quiet")
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes == [
        "note: plateau schedule: 2 evaluation(s) left before the run ends (one every 5 steps); "
        "the rate is multiplied by lr_decay only after lr_patience (1) of them without a new "
        "best, so it may stay at 0.002: lower --eval-every, or --lr-schedule cosine decays it "
        "by the end"
    ]
    many = run("train", corpus, "--out", tmp_path / "many", *TINY, "--max-steps", "12",
               "--eval-every", "2", "--quiet")  # fmt: skip
    assert "note:" not in many.stderr
    cosine = run("train", corpus, "--out", tmp_path / "cos", *TINY, *COSINE, "--max-steps", "12")
    assert "note:" not in cosine.stderr


def test_a_time_budget_ending_before_the_first_evaluation_says_so_at_the_start(tmp_path, corpus):
    out = tmp_path / "run"
    result = run("train", corpus, "--out", out, *TINY, "--lr-schedule", "cosine", "--max-time",
                 "1", "--eval-every", "1000000")  # fmt: skip
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1, result.stderr
    found = re.fullmatch(
        r"note: at the speed of its first 10 steps, max_time \(1 s\) ends this run near step "
        r"([\d,]+), before its first evaluation \(step 1,000,000, eval_every 1000000\): no "
        r"validation loss until the closing one; a lower --eval-every shows how it goes",
        notes[0],
    )
    assert found, notes[0]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["val_loss"] is not None  # the closing evaluation, the only one
    assert [r for r in records if r["val_loss"] is not None] == records[-1:]
    lines = result.stderr.splitlines()  # said at the start, not with the closing evaluation
    closing = next(i for i, line in enumerate(lines) if "val loss" in line)
    assert lines.index(notes[0]) < closing and records[-1]["step"] > 10
    # evaluations within the budget, or a step limit that ends the run first: no such note
    for extra in (["--eval-every", "5"], ["--eval-every", "1000000", "--max-steps", "6"]):
        other = run("train", corpus, "--out", tmp_path / extra[-1], *TINY, *COSINE,
                    "--max-time", "1", *extra, "--quiet")  # fmt: skip
        assert "before its first evaluation" not in other.stderr


def test_the_recorded_rate_is_the_one_each_step_used(tmp_path, corpus):
    """Replaying the plateau rule over the run's evaluations gives each step's rate: the record
    of an evaluation that halves the rate still shows the rate its step used."""
    out = tmp_path / "run"
    run("train", corpus, "--out", out, *TINY, "--eval-every", "1", "--log-every", "1",
        "--learning-rate", "0.05", "--max-steps", "40", "--min-lr", "0", "--quiet")  # fmt: skip
    evaluations = load_checkpoint(out / "last.npz").meta["evaluations"]
    replay, expected = Plateau(0.05, 0.5, 1, 0.0), []
    for evaluation in evaluations:
        expected.append(replay.lr)
        replay.observe(evaluation["val_loss"])
    lr = [r["lr"] for r in records(out)]
    assert lr == expected[: len(lr)]
    assert min(lr) < 0.05, "the run never halved its rate: the test shows nothing"


def test_the_report_names_a_cosine_schedule_instead_of_marking_each_change():
    records = [
        {"step": s, "epoch": s / 10, "train_loss": 3 - s / 1e4, "val_loss": None,
         "lr": cosine_rate(0.01, 0.1, 0, s, s / 10_000), "chars_per_s": 9.0, "elapsed": s}
        for s in range(1, 10_001)
    ]  # fmt: skip
    svg = charts.training_charts(History(records, "m"), "cosine")
    assert '<line class="halving"' not in svg and "The rate followed the cosine schedule." in svg
    assert len(charts.thin(records, stepwise=False)) <= charts.MAX_CHART_POINTS + 10
    # plateau's rule keeps the rate's changes, up to the hard cap that bounds the page
    # (10,000 changes: over the cap, so thinned evenly to about MAX_CHART_POINTS)
    assert charts.MAX_CHART_POINTS // 2 < len(charts.thin(records)) <= charts.MAX_CHART_POINTS + 1


def test_a_non_finite_step_halves_the_rest_of_the_cosine_curve(tmp_path, corpus, monkeypatch):
    real_step, calls = train_module.Trainer.train_step, {"n": 0}

    def flaky(self):
        calls["n"] += 1
        if calls["n"] == 3:  # step 3's first try
            self.batches.next_batch()
            return float("nan")
        return real_step(self)

    monkeypatch.setattr(train_module.Trainer, "train_step", flaky)
    out = tmp_path / "run"
    result = run("train", corpus, "--out", out, *TINY, "--lr-schedule", "cosine",
                 "--log-every", "1", "--max-steps", "10")  # fmt: skip
    cut = cosine_rate(2e-3, 0.1, 0, 3, 3 / 10) * 0.5
    assert f"step 3: non-finite loss or gradient, skipped; learning rate cut to {cut:.3g}" in (
        result.stderr
    )
    lr = [r["lr"] for r in records(out)]
    expected = [cosine_rate(2e-3 * (1 if k < 3 else 0.5), 0.1, 0, k, k / 10) for k in range(1, 11)]
    assert lr == pytest.approx(expected, rel=1e-15)
    assert load_checkpoint(out / "last.npz").meta["schedule"]["penalty"] == 0.5


def test_resuming_a_time_limited_cosine_run_says_where_its_curve_ends(tmp_path, corpus):
    out = tmp_path / "run"
    run("train", corpus, "--out", out, *TINY, *COSINE, "--max-steps", "4")
    elapsed = load_checkpoint(out / "last.npz").meta["elapsed"]
    result = run("train", corpus, "--out", out, "--resume", "--max-steps", "0", "--max-epochs",
                 "0", "--max-time", "0.3")  # fmt: skip
    assert (
        f"note: cosine schedule: {elapsed:.1f} s of max_time (0.3 s) trained before this resume, "
        f"so its curve ends {max(0.3 - elapsed, 0):.1f} s into this run, which stops after 0.3 s "
        "of its own"
    ) in result.stderr
    resumed = [r["lr"] for r in records(out) if r["step"] > 4]
    assert resumed and all(2e-4 <= lr < 2e-3 for lr in resumed)
