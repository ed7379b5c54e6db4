"""Evaluation that costs what it is worth: the fixed sample scored every ``eval_every`` steps,
the whole validation split scored once when a run ends by a limit, and progress bars during
evaluations on a terminal only (a real pseudo-terminal, and a pipe)."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnncli.batches import eval_batches, eval_sample_chars
from rnncli.checkpoint import load_checkpoint
from rnncli.evaluate import score
from rnncli.model import Model
from tests.helpers import TINY, run, write_corpus

ROOT = Path(__file__).resolve().parents[1]
ONE = [*TINY, "--workers", "1"]  # one process: the trainer scores exactly as `rnn eval` does
# `rnn` with evaluation bars drawn at once rather than after PROGRESS_DELAY seconds, so that a
# tiny model's evaluation is "long enough" to show one where one would be shown.
NO_DELAY = "import rnncli.evaluate as e; e.PROGRESS_DELAY = 0; from rnncli.cli import main; main()"


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run of 7 steps whose periodic evaluations score 2 of the validation split's batches."""
    folder = tmp_path_factory.mktemp("evaluation")
    corpus = write_corpus(folder / "corpus.txt", seed=1)
    out = folder / "run"
    result = run("train", corpus, "--out", out, *ONE, "--max-steps", "7", "--eval-batches", "2")
    (folder / "stdout.txt").write_text(result.stdout)
    (folder / "stderr.txt").write_text(result.stderr)
    return out


# -- the fixed sample ----------------------------------------------------------------------------


@given(
    n=st.integers(0, 400),
    b=st.integers(1, 9),
    t=st.integers(1, 12),
    k=st.one_of(st.integers(0, 60), st.just(10**30)),
)
def test_the_sample_size_is_what_the_first_batches_score(n, b, t, k):
    batches = eval_batches(np.zeros(n, dtype=np.int32), b, t)
    counted = sum(int(m.sum()) for _, _, m in itertools.islice(batches, min(k, 10**6) or None))
    assert eval_sample_chars(n, b, t, k) == counted


def test_eval_batches_beyond_the_split_scores_it_whole_without_allocating_for_them():
    model = Model(5, "lstm", 8, 1, dtype="float64", seed=0)
    data = np.random.default_rng(0).integers(0, 5, 301)
    whole = score(model, data, 4, 8)
    assert score(model, data, 4, 8, 10**30) == whole  # 10**30 batches: the 10 there are
    assert whole[1] == 300
    first = score(model, data, 4, 8, 2)  # the first 2 windows of each of the 4 streams
    assert first[1] == eval_sample_chars(301, 4, 8, 2) == 4 * 16
    assert score(model, data, 4, 8, 2) == first, "the same windows every time"


def test_a_huge_eval_batches_in_a_run_means_the_whole_split(tmp_path, corpus):
    out = tmp_path / "r"
    result = run("train", corpus, "--out", out, *ONE, "--max-steps", "5",
                 "--eval-batches", str(10**30))  # fmt: skip
    assert "validation: the whole split (" in result.stderr
    closing = records(out)[-1]
    assert closing["val_loss_full"] == closing["val_loss"] and closing["eval_full_s"] == 0.0


# -- the whole split once at the end -------------------------------------------------------------


def test_a_run_that_reaches_a_limit_scores_the_whole_split_with_its_last_weights(trained):
    closing = records(trained)[-1]
    assert closing["step"] == 7 and closing["val_loss"] is not None
    full = closing["val_loss_full"]
    scored = run("eval", trained / "last.npz", "--split", "val", "--batch-size", "4",
                 "--seq-length", "8", "--json")  # fmt: skip
    report = json.loads(scored.stdout)
    assert full == pytest.approx(report["loss"], rel=1e-6)
    assert closing["val_chars_full"] == report["chars"]
    assert closing["eval_full_s"] > 0
    assert load_checkpoint(trained / "last.npz").meta["val_loss_full"] == full
    assert "val_loss_full" not in load_checkpoint(trained / "best.npz").meta, "chosen by sample"
    assert [r["step"] for r in records(trained) if "val_loss_full" in r] == [7]
    stdout = (trained.parent / "stdout.txt").read_text()
    assert "reached max_steps (7); best val loss " in stdout
    assert f"; last.npz on the whole validation split: {full:.4f} (" in stdout


def test_the_run_says_what_its_evaluations_score(trained):
    stderr = (trained.parent / "stderr.txt").read_text().splitlines()
    val = report_chars(trained)
    sample = eval_sample_chars(val + 1, 4, 8, 2)
    assert sample < val
    assert stderr[1] == (
        f"validation: every 5 steps a fixed sample of {sample:,} of its {val:,} characters "
        "(eval_batches 2); the whole split when the run ends"
    )
    assert f"step 7: the whole validation split ({val:,} characters), val loss " in stderr[-1]


def report_chars(run_dir: Path) -> int:
    return records(run_dir)[-1]["val_chars_full"]


def test_info_shows_the_whole_split_loss(trained):
    full = load_checkpoint(trained / "last.npz").meta["val_loss_full"]
    assert json.loads(run("info", trained / "last.npz", "--json").stdout)["val_loss_full"] == full
    assert f"val_loss_full:  {full:.4f} nats/char" in run("info", trained / "last.npz").stdout
    assert json.loads(run("info", trained / "best.npz", "--json").stdout)["val_loss_full"] is None
    assert "val_loss_full" not in run("info", trained / "best.npz").stdout  # not "None"


def test_records_say_how_long_each_evaluation_took(trained):
    for record in records(trained):
        assert (record["eval_s"] is None) == (record["val_loss"] is None)
        assert record["eval_s"] is None or record["eval_s"] >= 0


def test_a_sample_that_is_the_whole_split_is_not_scored_twice(tmp_path, corpus):
    out = tmp_path / "r"  # the default eval_batches covers this small split
    result = run("train", corpus, "--out", out, *ONE, "--max-steps", "10")
    assert "validation: the whole split (" in result.stderr
    assert "the whole validation split (" not in result.stderr
    closing = records(out)[-1]
    assert closing["step"] == 10 and closing["eval_full_s"] == 0.0
    assert closing["val_loss_full"] == closing["val_loss"]
    assert load_checkpoint(out / "last.npz").meta["val_loss_full"] == closing["val_loss"]


def test_a_run_resumed_with_nothing_left_to_do_keeps_its_whole_split_loss(tmp_path, corpus):
    out = tmp_path / "r"
    run("train", corpus, "--out", out, *ONE, "--max-steps", "6", "--eval-batches", "1")
    full = load_checkpoint(out / "last.npz").meta["val_loss_full"]
    result = run("train", corpus, "--out", out, "--resume", "--quiet")
    assert f"last.npz on the whole validation split: {full:.4f}" in result.stdout
    assert load_checkpoint(out / "last.npz").meta["val_loss_full"] == full


def test_a_resumed_run_scores_its_new_last_weights(tmp_path, corpus):
    out = tmp_path / "r"
    run("train", corpus, "--out", out, *ONE, "--max-steps", "6", "--eval-batches", "1")
    first = load_checkpoint(out / "last.npz").meta["val_loss_full"]
    run("train", corpus, "--out", out, "--resume", "--max-steps", "9", "--quiet")
    again = records(out)
    assert [r["step"] for r in again if "val_loss_full" in r] == [6, 9]
    assert load_checkpoint(out / "last.npz").meta["val_loss_full"] == again[-1]["val_loss_full"]
    assert again[-1]["val_loss_full"] != first


def tiny_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text("the cat sat on a mat. " * 50, encoding="utf-8")  # 1,100 characters
    return path


def test_a_validation_split_of_two_characters_scores_its_one_target(tmp_path):
    out = tmp_path / "r"
    result = run("train", tiny_corpus(tmp_path), "--out", out, *ONE, "--max-steps", "3",
                 "--val-fraction", "0.002", "--test-fraction", "0")  # fmt: skip
    assert "validation: the whole split (1 characters) every 5 steps" in result.stderr
    closing = records(out)[-1]
    assert closing["val_chars_full"] == 1 and closing["val_loss_full"] == closing["val_loss"]


@pytest.mark.parametrize("fraction", ["0.001", "0"], ids=["one-character", "none"])
def test_without_a_validation_split_to_score_nothing_claims_one(tmp_path, fraction):
    out = tmp_path / "r"
    result = run("train", tiny_corpus(tmp_path), "--out", out, *ONE, "--max-steps", "3",
                 "--val-fraction", fraction, "--test-fraction", "0")  # fmt: skip
    assert "validation:" not in result.stderr and "whole validation split" not in result.stderr
    closing = result.stdout.splitlines()[0]
    assert closing.startswith("stopped at step 3 (epoch ")
    assert closing.endswith("): reached max_steps (3); no validation split")
    assert all("val_loss_full" not in r and r["val_loss"] is None for r in records(out))
    assert "val_loss_full" not in load_checkpoint(out / "last.npz").meta
    assert not (out / "best.npz").exists()


# -- progress during evaluations -----------------------------------------------------------------


def spawn_on_terminal(*args) -> str:
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, ["-c", NO_DELAY, *map(str, args)],
                          dimensions=(24, 80), encoding="utf-8", env=env())  # fmt: skip
    child.expect(pexpect.EOF, timeout=60)
    child.close()
    assert child.exitstatus == 0, child.before
    return child.before


def through_pipes(*args) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-c", NO_DELAY, *map(str, args)], env=env(),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def test_rnn_eval_shows_a_bar_on_a_terminal(trained):
    out = spawn_on_terminal("eval", trained / "last.npz", "--split", "val")
    # 514 characters in 50 streams of 100: one batch; the bar is erased before the result
    assert re.search(r"\rscoring the val split: +\d+%\|[^|]*\| \d+/1 \[.*\r +\rval split of ", out)
    assert "loss " in out and "nats/char" in out


def test_rnn_eval_on_a_pipe_prints_no_bar_and_json_stays_json(trained):
    done = through_pipes("eval", trained / "last.npz", "--split", "val", "--json")
    assert done.stderr == ""
    assert json.loads(done.stdout)["chars"] == report_chars(trained)
    lines = trained.parent / "lines.txt"
    lines.write_text("the cat sat\non a mat\n", encoding="utf-8")
    done = through_pipes("eval", trained / "last.npz", lines, "--per-line", "--json")
    assert done.stderr == "" and len(json.loads(done.stdout)) == 2


def test_training_on_a_terminal_shows_the_evaluations_bars(tmp_path, corpus):
    out = spawn_on_terminal("train", corpus, "--out", tmp_path / "r", *ONE, "--max-steps", "7",
                            "--eval-batches", "2")  # fmt: skip
    assert re.search(r"validation: +\d+%\|", out), out
    assert re.search(r"whole validation split: +\d+%\|", out), out


def test_training_on_a_pipe_draws_no_bar(tmp_path, corpus):
    done = through_pipes("train", corpus, "--out", tmp_path / "r", *ONE, "--max-steps", "7",
                         "--eval-batches", "2")  # fmt: skip
    assert "%|" not in done.stderr and "\r" not in done.stderr
    assert all(
        line.startswith(("metrics: ", "validation: ", "note: ", "step "))
        for line in done.stderr.splitlines()
    ), done.stderr


def test_eval_of_a_split_never_writes_into_the_runs_cache(trained, tmp_path):
    # a training starting in that folder may be writing its cache; eval encodes elsewhere
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    from_cache = json.loads(run("eval", copy / "last.npz", "--split", "val", "--json").stdout)
    shutil.rmtree(copy / "cache")
    from_file = json.loads(run("eval", copy / "last.npz", "--split", "val", "--json").stdout)
    assert from_file == from_cache and from_file["chars"] > 0
    assert not (copy / "cache").exists()
