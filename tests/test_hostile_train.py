"""Training at the edges: concurrent writers, resumes that change settings, sizes, signals at
every phase, a damaged cache, a full disk and a read-only folder.

Each case asserts the exit status, one line on stderr without a traceback, and that nothing was
lost or half-written. Real processes wait for events (a lock file naming its holder, a record in
metrics.jsonl, a temporary file appearing), never for a guessed time.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tqdm import tqdm

from rnncli.checkpoint import load_checkpoint
from rnncli.cli import _command, cli
from rnncli.config import Config
from rnncli.console import ProgressBar
from rnncli.memory import training_bytes
from rnncli.runlock import LOCK_NAME
from tests.helpers import rnn_peak_rss, run, tiny

ROOT = Path(__file__).resolve().parents[1]
TINY = tiny(("val_fraction", "test_fraction"), num_layers=1)


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("rnn: error: ") and "Traceback" not in stderr
    return lines[0]


def last_line_error(stderr: str) -> str:
    """The one error of a run that had started: its last line, after any progress lines."""
    errors = [line for line in stderr.splitlines() if line.startswith("rnn: error: ")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr
    assert "Traceback" not in stderr
    return errors[0]


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def record_count(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def no_temporaries(run_dir: Path) -> bool:
    return not list(run_dir.glob(".*.tmp")) and not list(run_dir.glob("cache/.*.tmp"))


def spawn(*args: str, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rnncli", "train", *map(str, args), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_until(condition, what: str, proc: subprocess.Popen | None = None, timeout=60.0):
    """Poll ``condition`` (an event the child causes), failing if the child ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the child ended before {what}: {proc.communicate()}")
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.005)


def lock_names(run_dir: Path, pid: int):
    def check():
        with contextlib.suppress(OSError):
            return (run_dir / LOCK_NAME).read_text().strip() == str(pid)
        return False

    return check


def endless(corpus: Path) -> list:
    return [corpus, *TINY, "--max-steps", "1000000", "--min-lr", "0", "--quiet"]


# -- one writer per run folder -------------------------------------------------------------------


@pytest.mark.parametrize(
    "second", [[], ["--force"], ["--resume"]], ids=["fresh", "force", "resume"]
)
def test_a_second_writer_is_refused_at_once_and_readers_keep_working(tmp_path, corpus, second):
    out = tmp_path / "run"
    first = spawn(*endless(corpus), out=out)
    try:
        wait_until(lock_names(out, first.pid), "the lock file naming its holder", first)
        wait_until((out / "last.npz").exists, "the first checkpoint", first)
        other = spawn(*endless(corpus), *second, out=out)
        _, stderr = other.communicate(timeout=60)
        assert other.returncode == 1
        line = one_line(stderr)
        assert str(out) in line and f"PID {first.pid}" in line
        info = run("info", out / "last.npz", "--json")  # a reader is never locked out
        assert json.loads(info.stdout)["step"] >= 5
    finally:
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=60)
    assert first.returncode == 143, stderr
    steps = [r["step"] for r in records(out)]
    assert steps == sorted(set(steps)), "one writer: steps strictly increase"
    step = load_checkpoint(out / "last.npz").meta["step"]
    run("train", corpus, "--out", out, "--resume", "--max-steps", step + 2, "--quiet")
    assert load_checkpoint(out / "last.npz").meta["step"] == step + 2


def test_kill_9_loop_leaves_a_resumable_run(tmp_path, corpus):
    out = tmp_path / "run"
    rng = np.random.default_rng(1)
    for attempt in range(5):
        extra = ["--checkpoint-every", "1"] + ([] if attempt == 0 else ["--resume"])
        seen = record_count(out)
        proc = spawn(*endless(corpus), *extra, out=out)
        wanted = seen + int(rng.integers(1, 4))  # kill after 1 to 3 new records
        wait_until(lambda n=wanted: record_count(out) >= n, "new records in metrics.jsonl", proc)
        proc.kill()
        proc.wait(timeout=30)
        ckpt = load_checkpoint(out / "last.npz")  # complete, or this raises
        assert all(np.isfinite(p).all() for p in ckpt.params.values())
    step = ckpt.meta["step"]
    run("train", corpus, "--out", out, "--resume", "--max-steps", step + 2, "--quiet")
    assert load_checkpoint(out / "last.npz").meta["step"] == step + 2
    steps = [r["step"] for r in records(out)]
    assert steps == sorted(set(steps)), "records past a killed run's checkpoint were dropped"
    assert no_temporaries(out)


# -- --resume applies what it is given, or says why not ------------------------------------------


def test_resume_applies_a_new_learning_rate(tmp_path, corpus):
    out = tmp_path / "run"
    run("train", corpus, "--out", out, "--max-steps", "10", "--quiet", *TINY)
    before = load_checkpoint(out / "last.npz")
    result = run("train", corpus, "--out", out, "--resume", "--max-steps", "12",
                 "--learning-rate", "1e-9", "--min-lr", "0", "--quiet")  # fmt: skip
    assert "learning_rate = 1e-09 (was 0.002) from step 11" in result.stderr
    after = load_checkpoint(out / "last.npz")
    assert after.config["learning_rate"] == 1e-9 and after.meta["schedule"]["lr"] == 1e-9
    moved = max(np.abs(after.params[k] - before.params[k]).max() for k in before.params)
    assert moved < 1e-6, "two steps at 1e-9 barely move the weights (at 2e-3 they move ~1e-3)"
    resumed = [r for r in records(out) if r["step"] > 10]
    assert [r["lr"] for r in resumed] == [1e-9]
    assert resumed[0]["changed"]["learning_rate"] == [0.002, 1e-9]
    assert "learning_rate: 1.0e-09" in (out / "config.yaml").read_text()


def test_resume_applies_limits_clipping_and_intervals(tmp_path, corpus):
    out = tmp_path / "run"
    run("train", corpus, "--out", out, "--max-steps", "4", "--quiet", *TINY)
    run("train", corpus, "--out", out, "--resume", "--max-steps", "9", "--log-every", "3",
        "--eval-every", "100", "--grad-clip", "1", "--dropout", "0.2", "--beta1", "0.5",
        "--quiet")  # fmt: skip
    assert [r["step"] for r in records(out)] == [2, 4, 6, 9]
    cfg = load_checkpoint(out / "last.npz").config
    assert (cfg["log_every"], cfg["grad_clip"], cfg["dropout"], cfg["beta1"]) == (3, 1.0, 0.2, 0.5)


@pytest.mark.parametrize(
    "option, value",
    [
        ("--hidden-size", "16"),
        ("--optimizer", "sgd"),
        ("--seed", "7"),
        ("--embedding-size", "4"),
        ("--forget-bias", "0.5"),
        ("--dtype", "float64"),
        ("--encoding", "latin-1"),
    ],  # fmt: skip
)
def test_resume_refuses_what_it_cannot_change(tmp_path, corpus, option, value):
    out = tmp_path / "run"
    run("train", corpus, "--out", out, "--max-steps", "3", "--quiet", *TINY)
    before = (out / "last.npz").read_bytes()
    result = run("train", corpus, "--out", out, "--resume", option, value, code=1)
    assert option[2:].replace("-", "_") in one_line(result.stderr)
    assert (out / "last.npz").read_bytes() == before


@pytest.mark.parametrize(
    "change", [["--batch-size", "3"], ["--seq-length", "5"], ["--val-fraction", "0.2"], "edit"]
)
def test_resume_with_the_data_cut_differently_restarts_the_epoch(tmp_path, corpus, change):
    out = tmp_path / "run"
    run("train", corpus, "--out", out, "--max-steps", "7", "--quiet", *TINY)
    if change == "edit":
        corpus.write_text(corpus.read_text()[:-300], encoding="utf-8")
        change = []
    result = run("train", corpus, "--out", out, "--resume", "--max-steps", "9", *change)
    assert "restarts at the start of the current epoch (epoch 0.00)" in result.stderr
    ckpt = load_checkpoint(out / "last.npz")
    assert ckpt.meta["step"] == 9 and ckpt.meta["data_position"]["index"] == 2
    assert ckpt.meta["corpus_sha256"] == hashlib.sha256(corpus.read_bytes()).hexdigest()


def test_a_resume_that_trains_nothing_writes_no_record(tmp_path, corpus):
    out = tmp_path / "run"
    run("train", corpus, "--out", out, "--max-steps", "6", "--quiet", *TINY)
    before = records(out)
    run("train", corpus, "--out", out, "--resume", "--quiet")
    assert records(out) == before


def test_a_run_stopping_on_a_log_step_has_one_record_for_it(tmp_path, corpus):
    out = tmp_path / "run"
    run("train", corpus, "--out", out, "--max-steps", "4", "--quiet", *TINY)
    assert [(r["step"], r["val_loss"] is not None) for r in records(out)] == [
        (2, False),
        (4, True),
    ]


def test_init_from_refuses_a_shape_that_disagrees_before_any_work(tmp_path, corpus):
    run("train", corpus, "--out", tmp_path / "a", "--max-steps", "3", "--quiet", *TINY)
    result = run("train", corpus, "--out", tmp_path / "b", "--init-from", tmp_path / "a/last.npz",
                 "--hidden-size", "16", code=1)  # fmt: skip
    assert "hidden_size = 16" in one_line(result.stderr)
    assert not (tmp_path / "b").exists()
    result = run("train", corpus, "--out", tmp_path / "c", "--init-from", tmp_path / "a/last.npz",
                 "--max-steps", "2", "--eval-every", "1")  # fmt: skip
    lines = result.stderr.splitlines()
    assert lines[0].startswith("note: model shape taken from") and "hidden_size=8" in lines[0]
    assert load_checkpoint(tmp_path / "c/last.npz").config["hidden_size"] == 8


def test_an_embedded_model_trains_resumes_samples_and_keeps_its_settings(tmp_path, corpus):
    """embedding_size is a shape and forget_bias part of how the weights began: a resume keeps
    both without a note, --init-from takes both and refuses a conflicting one up front."""
    out = tmp_path / "run"
    run("train", corpus, "--out", out, "--max-steps", "3", "--quiet", *TINY,
        "--embedding-size", "5", "--forget-bias", "1")  # fmt: skip
    ckpt = load_checkpoint(out / "last.npz")
    V = len(ckpt.vocab)
    assert ckpt.params["embed.W"].shape == (V, 5) and ckpt.params["rnn.0.Wx"].shape == (5, 32)
    assert (ckpt.config["embedding_size"], ckpt.config["forget_bias"]) == (5, 1.0)
    result = run("train", corpus, "--out", out, "--resume", "--max-steps", "5")
    assert "embedding_size" not in result.stderr and "forget_bias" not in result.stderr
    assert load_checkpoint(out / "last.npz").meta["step"] == 5
    assert len(run("sample", out / "last.npz", "-n", "12", "--seed", "3").output) >= 12
    for option, value, asked in [("--embedding-size", "0", "embedding_size = 0"),
                                 ("--hidden-size", "16", "hidden_size = 16"),
                                 ("--forget-bias", "0", "forget_bias = 0.0")]:  # fmt: skip
        result = run("train", corpus, "--out", tmp_path / "b", "--init-from", out / "last.npz",
                     option, value, code=1)  # fmt: skip
        line = one_line(result.stderr)
        assert asked in line and "shape lstm 1x8, embedding_size 5" in line, line
        assert not (tmp_path / "b").exists()
    run("train", corpus, "--out", tmp_path / "c", "--init-from", out / "last.npz",
        "--max-steps", "2", "--quiet")  # fmt: skip
    taken = load_checkpoint(tmp_path / "c/last.npz").config
    assert (taken["embedding_size"], taken["forget_bias"]) == (5, 1.0)


# -- sizes, the cache, --force -------------------------------------------------------------------


def test_a_model_too_big_for_memory_fails_fast_with_both_figures(tmp_path, corpus):
    result = run("train", corpus, "--out", tmp_path / "r", "--hidden-size", "100000", code=1)
    line = one_line(result.stderr)
    assert "needs about" in line and "GiB" in line and "is available" in line
    assert not (tmp_path / "r").exists()


def _peak_rss(tmp_path, corpus, hidden: int) -> int:
    """Peak RSS in bytes of a child training an lstm 1 x ``hidden`` for a few steps."""
    args = ["train", corpus, "--out", tmp_path / f"h{hidden}", *TINY, "--hidden-size", hidden,
            "--max-steps", 2, "--checkpoint-every", 1, "--eval-every", 1, "--quiet"]  # fmt: skip
    code, stderr, peak = rnn_peak_rss(args, tmp_path)
    assert code == 0, stderr
    return peak


def test_the_memory_estimate_is_within_a_factor_two_of_measured_rss(tmp_path, corpus):
    hidden = 1600  # large enough that the allocator's own variation (tens of MB) is small beside it
    ballast = np.ones(400 * 2**20, dtype=np.uint8)  # a parent as large as pytest late in the suite
    grown = _peak_rss(tmp_path, corpus, hidden) - _peak_rss(tmp_path, corpus, 8)
    del ballast
    cfg = dict(model="lstm", num_layers=1, batch_size=4, seq_length=8, workers=1)
    vocab = len(set(corpus.read_text()))
    estimate = training_bytes(Config(hidden_size=hidden, **cfg), vocab) - training_bytes(
        Config(hidden_size=8, **cfg), vocab
    )
    assert estimate / 2 <= grown <= estimate * 2, (grown, estimate)


def test_the_memory_estimate_counts_the_embedding():
    from rnncli.memory import parameter_count
    from rnncli.model import Model

    for E in (0, 48):
        cfg = Config(model="gru", hidden_size=16, num_layers=2, embedding_size=E)
        assert parameter_count(cfg, 3000) == Model.from_config(cfg, 3000).num_params
    plain, embedded = Config(hidden_size=16), Config(hidden_size=16, embedding_size=48)
    # 3000 x 64 one-hot weights become 3000 x 48 + 48 x 64 in every parameter-sized copy
    # (weights, one gradient, Adam's 2 slots, the last-good weights and slots, the save's slots
    # copy), and each window holds the embedded input and its gradient: 2 B T E more values
    copies = 1 + 1 + 2 + 3 + 2
    params = 3000 * 48 + 48 * 64 - 3000 * 64
    window = 2 * plain.batch_size * plain.seq_length * 48
    grown = training_bytes(embedded, 3000) - training_bytes(plain, 3000)
    assert grown == (params * copies + window) * 4  # float32


def test_force_checks_everything_before_it_removes_anything(tmp_path, corpus):
    out = tmp_path / "run"
    run("train", corpus, "--out", out, "--max-steps", "3", "--quiet", *TINY)
    kept = {name: (out / name).read_bytes() for name in ("last.npz", "best.npz", "config.yaml")}
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    for args in ([empty], [corpus, "--hidden-size", "100000"], [corpus, "--max-epochs", "-1"]):
        result = CliRunner().invoke(cli, ["train", *map(str, args), "--out", str(out), "--force"])
        assert result.exit_code in (1, 2), result.output
        one_line(result.stderr)
        assert {name: (out / name).read_bytes() for name in kept} == kept


def test_a_damaged_cache_is_encoded_again_before_training(tmp_path, corpus):
    out = tmp_path / "run"
    run("train", corpus, "--out", out, "--max-steps", "2", "--quiet", *TINY)
    ids_file = next((out / "cache").glob("*.ids"))
    good = ids_file.read_bytes()
    ids_file.write_bytes(bytes([good[0] ^ 1]) + good[1:3] + b"\xff" + good[4:])
    run("train", corpus, "--out", out, "--resume", "--max-steps", "4", "--quiet")
    assert ids_file.read_bytes() == good
    assert sorted(p.suffix for p in (out / "cache").iterdir()) == [".ids", ".json"]


def test_resume_and_eval_reuse_the_run_cache(tmp_path, corpus):
    out = tmp_path / "run"
    run("train", corpus, "--out", out, "--max-steps", "2", "--quiet", *TINY)
    listing = {p.name: p.stat().st_mtime_ns for p in (out / "cache").iterdir()}
    run("train", corpus, "--out", out, "--resume", "--max-steps", "4", "--quiet")
    run("eval", out / "last.npz", "--split", "val")
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cache").iterdir()} == listing


def test_every_checkpoint_records_the_corpus_hash(tmp_path, corpus):
    out = tmp_path / "run"
    run("train", corpus, "--out", out, "--max-steps", "5", "--quiet", *TINY)
    digest = hashlib.sha256(corpus.read_bytes()).hexdigest()
    for name in ("last.npz", "best.npz"):
        assert load_checkpoint(out / name).meta["corpus_sha256"] == digest


# -- non-finite steps, signals ---------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_non_finite_first_run_can_be_restarted_without_force(tmp_path, corpus, workers):
    out = tmp_path / "run"
    out.mkdir()
    # forget_bias 1 and input_lr_scale 1: with them this corpus overflows within 50 steps and
    # every retry does too (with the defaults the halved rates recover)
    blow_up = ["--optimizer", "sgd", "--learning-rate", "1e38", "--grad-clip", "0"]
    blow_up += ["--forget-bias", "1", "--input-lr-scale", "1"]
    proc = spawn(corpus, *TINY, "--max-steps", "50", *blow_up, "--workers", workers, out=out)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "RuntimeWarning" not in stderr and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("rnn: error: loss or gradients")
    assert not (out / "last.npz").exists()
    run("train", corpus, "--out", out, "--max-steps", "2", "--quiet", *TINY)
    assert [r["step"] for r in records(out)] == [2]


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory) -> Path:
    """About 24 MB of text: encoding and a whole validation pass each take seconds."""
    path = tmp_path_factory.mktemp("big") / "big.txt"
    rng = np.random.default_rng(0)
    letters = np.frombuffer(b"abcdefghij klmnop\n", dtype=np.uint8)
    path.write_bytes(letters[rng.integers(0, letters.size, 24 << 20)].tobytes())
    return path


def test_a_signal_while_encoding_ends_at_once_and_leaves_nothing(tmp_path, big_corpus):
    out = tmp_path / "run"
    proc = spawn(*endless(big_corpus), out=out)
    wait_until(lambda: bool(list(out.glob("cache/.*.tmp"))), "the encoding's temporary", proc)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 2.0
    assert proc.returncode == 143 and "Traceback" not in stderr
    assert "before the first checkpoint" in stderr
    assert f"-m rnncli train {big_corpus} " in stderr.splitlines()[-1]
    assert not out.exists(), "a folder the run created goes with it"


def test_a_signal_during_a_full_evaluation_ends_it_within_a_second(tmp_path, big_corpus):
    out = tmp_path / "run"
    args = [*endless(big_corpus), "--val-fraction", "0.5", "--eval-every", "3",
            "--eval-batches", "0", "--log-every", "2", "--checkpoint-every", "1000"]  # fmt: skip
    proc = spawn(*args, out=out)
    metrics = out / "metrics.jsonl"
    wait_until(lambda: metrics.exists() and metrics.read_text(), "the step-2 record", proc)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)  # during step 3 or the evaluation after it
    _, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 2.0, "a whole validation pass takes far longer"
    assert proc.returncode == 130 and "Traceback" not in stderr
    assert load_checkpoint(out / "last.npz").meta["step"] == 3
    assert no_temporaries(out)


def test_a_signal_during_the_closing_whole_split_pass_stops_it_and_keeps_the_saved_run(
    tmp_path, big_corpus
):
    out = tmp_path / "run"
    args = [big_corpus, *TINY, "--max-steps", "3", "--val-fraction", "0.5", "--eval-batches", "1",
            "--quiet"]  # fmt: skip
    proc = spawn(*args, out=out)
    # last.npz is saved at step 3 before the whole split (12 MB here) is scored
    wait_until((out / "last.npz").exists, "last.npz", proc)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 2.0, "the whole validation pass takes far longer"
    assert proc.returncode == 130 and "Traceback" not in stderr
    assert f"rnn: stopped by SIGINT; saved {out / 'last.npz'}. Resume with:" in stderr
    meta = load_checkpoint(out / "last.npz").meta
    assert meta["step"] == 3 and "val_loss_full" not in meta
    closing = records(out)[-1]
    assert closing["step"] == 3 and closing["val_loss"] is not None
    assert "val_loss_full" not in closing
    assert no_temporaries(out)


def test_the_resume_hint_names_the_program_as_run(tmp_path, corpus):
    script = Path(sys.executable).parent / "rnn"
    if not script.exists():
        pytest.skip("no rnn console script beside this Python")
    out = tmp_path / "run"
    proc = subprocess.Popen([str(script), "train", *map(str, endless(corpus)), "--out", str(out)],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_until((out / "last.npz").exists, "the first checkpoint", proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert f"{script} train {corpus} --out {out} --resume" in stderr


# -- progress ------------------------------------------------------------------------------------


def test_the_bar_fits_80_columns_and_drops_whole_figures():
    parts = ["loss 12.345", "best val 12.345", "lr 2.0e-03", "epoch 12345.67"]
    fmt = dict(n=123456, total=999999, elapsed=35999, rate=0.1, unit="step")
    shown = ProgressBar.fit(fmt, parts, width=80)
    line = tqdm.format_meter(**fmt, bar_format=ProgressBar.FORMAT, postfix=shown)
    assert len(line) < 80 and line.endswith(", loss 12.345, best val 12.345]")
    assert ProgressBar.fit(fmt, parts, width=200) == ", ".join(parts)
    assert ProgressBar.fit(fmt, parts, width=40) == ""


def test_without_a_terminal_the_first_line_says_where_metrics_go(tmp_path, corpus):
    result = run("train", corpus, "--out", tmp_path / "r", "--max-steps", "5", *TINY)
    lines = result.stderr.splitlines()
    assert (
        lines[0]
        == f"metrics: {tmp_path / 'r' / 'metrics.jsonl'} (a line every 2 steps and evaluation)"
    )
    assert any(line.startswith("step 5 ") and "best" in line for line in lines)
    assert result.stdout.splitlines()[-1] == f"report: {_command('report', tmp_path / 'r')}"


def test_printed_commands_start_with_the_program_as_it_was_typed(tmp_path, monkeypatch):
    script = tmp_path / "bin" / "rnn"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(script), "train"])
    monkeypatch.setenv("PATH", "/nonexistent")
    assert _command("report", "my runs/a") == f"{script} report 'my runs/a'"
    monkeypatch.setenv("PATH", str(script.parent))  # found through PATH: typed as its name
    assert _command("report", "r") == "rnn report r"
    monkeypatch.setattr(sys, "argv", [".venv/bin/rnn", "train"])
    assert _command("report", "r") == ".venv/bin/rnn report r"
    monkeypatch.setattr(sys, "argv", ["/somewhere/rnncli/__main__.py", "train"])
    assert _command("report", "r") == f"{Path(sys.executable).name} -m rnncli report r"


# -- the disk: full, read-only -------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(folder: Path, options: str):
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'})")
    try:
        yield folder
    finally:
        # lazily: this process may still map a cache file from it
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_is_one_line_and_leaves_no_temporary(tmp_path, corpus):
    with tmpfs(tmp_path / "small", "size=64k") as disk:
        out = disk / "run"
        result = CliRunner().invoke(cli, ["train", str(corpus), "--out", str(out), *TINY,
                                          "--hidden-size", "64", "--max-steps", "6"])  # fmt: skip
        assert result.exit_code == 1
        assert "No space left" in last_line_error(result.stderr)
        assert no_temporaries(out) if out.exists() else True


def test_a_read_only_folder_is_one_line(tmp_path, corpus):
    with tmpfs(tmp_path / "ro", "size=1m,ro") as disk:
        result = CliRunner().invoke(cli, ["train", str(corpus), "--out", str(disk / "run"), *TINY])
        assert result.exit_code == 1
        assert "Read-only file system" in one_line(result.stderr)


def test_the_bar_in_a_real_terminal_fits_and_counts_to_the_first_limit(tmp_path, corpus):
    pexpect = pytest.importorskip("pexpect")
    args = ["-m", "rnncli", "train", str(corpus), "--out", str(tmp_path / "r"), *TINY,
            "--max-steps", "12"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = pexpect.spawn(sys.executable, args, dimensions=(24, 80), encoding="utf-8", env=env)
    child.expect(pexpect.EOF, timeout=60)
    pieces = [p.strip() for p in re.split(r"[\r\n]+", child.before)]
    bars = [p for p in pieces if re.match(r"\d+/\d+ \[", p)]
    assert bars and all(len(p) < 80 for p in bars)
    assert all(p.split("/")[1].startswith("12 [") for p in bars), "max_steps ends this run"
    assert any("best val 0." in p or "best val 1." in p or "best val 2." in p for p in bars)


def test_a_signal_during_a_save_lets_the_save_finish_and_a_second_one_stops_at_once():
    from rnncli.errors import Interrupted
    from rnncli.runfolder import Signals

    with Signals() as signals:
        with signals.deferred():  # a step or a save: the first signal only sets the flag
            os.kill(os.getpid(), signal.SIGTERM)
            assert signals.signum == signal.SIGTERM
            with pytest.raises(Interrupted):  # an impatient second one does not wait
                os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(Interrupted), signals.deferred(False):  # e.g. an evaluation
            pass  # a signal already seen stops it before it starts


# -- one config path -----------------------------------------------------------------------------


def test_resolve_config_is_the_one_place_settings_are_decided():
    from rnncli.checkpoint import Checkpoint
    from rnncli.errors import TrainError
    from rnncli.plan import resolve_config

    cfg, changed, notes = resolve_config({"hidden_size": 32}, {"hidden_size": 16, "dropout": 0.1})
    assert (cfg.hidden_size, cfg.dropout, changed, notes) == (32, 0.1, {}, [])
    assert cfg.workers >= 1, "the worker count is resolved once, here"

    saved = Config(hidden_size=16, num_layers=1, workers=1).to_dict()
    ckpt = Checkpoint(params={}, vocab="ab", config=saved, meta={"step": 7}, path="r/last.npz")
    cfg, changed, notes = resolve_config({"learning_rate": 1e-3, "workers": 1}, resumed=ckpt)
    assert changed == {"learning_rate": [2e-3, 1e-3]} and cfg.hidden_size == 16
    assert notes == ["--resume applies learning_rate = 0.001 (was 0.002) from step 8"]
    with pytest.raises(TrainError, match="cannot change optimizer from adam to sgd"):
        resolve_config({"optimizer": "sgd"}, resumed=ckpt)

    cfg, _, notes = resolve_config({}, {"dropout": 0.2}, "f.yaml", init=ckpt)
    assert (cfg.hidden_size, cfg.num_layers, cfg.dropout) == (16, 1, 0.2)
    assert notes and notes[0].startswith("model shape taken from r/last.npz")
    with pytest.raises(TrainError, match="num_layers = 3 was asked"):
        resolve_config({}, {"num_layers": 3}, "f.yaml", init=ckpt)


def test_resume_with_a_lower_min_lr_continues_a_run_that_stopped_on_it(tmp_path, corpus):
    out = tmp_path / "run"
    plateau = [
        "--eval-every",
        "1",
        "--lr-decay",
        "0.1",
        "--learning-rate",
        "0.2",
        "--min-lr",
        "0.03",
    ]
    result = run("train", corpus, "--out", out, *TINY, *plateau, "--max-steps", "100", "--quiet")
    assert "learning rate fell below min_lr (0.03)" in result.stdout
    step = load_checkpoint(out / "last.npz").meta["step"]
    run("train", corpus, "--out", out, "--resume", "--min-lr", "0", "--max-steps", step + 3,
        "--eval-every", "100", "--quiet")  # fmt: skip
    ckpt = load_checkpoint(out / "last.npz")
    assert ckpt.meta["step"] == step + 3 and ckpt.meta["schedule"]["lr"] == pytest.approx(0.02)


@pytest.mark.parametrize("encoding", [[], ["--encoding", "latin-1"]])
def test_a_gzipped_corpus_is_called_binary_in_one_line(tmp_path, encoding):
    corpus = tmp_path / "corpus.txt.gz"
    corpus.write_bytes(gzip.compress(b"the cat sat on the mat.\n" * 100))
    proc = subprocess.run(
        [sys.executable, "-m", "rnncli", "train", str(corpus), "--out", str(tmp_path / "run"),
         *encoding],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1 and proc.stdout == ""
    said = f"rnn: error: {corpus}: binary, not text: it looks like gzip-compressed data ("
    assert proc.stderr.startswith(said) and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "run").exists()
