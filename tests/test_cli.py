"""The `rnn` command end to end: CliRunner in-process, real subprocesses for signals and kills."""

from __future__ import annotations

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

from rnncli.cells import CELLS
from rnncli.checkpoint import load_checkpoint, save_checkpoint
from rnncli.cli import cli
from rnncli.config import FIELDS
from tests.helpers import READERS, TINY, one_error_line, run


def params_of(path: Path) -> dict[str, np.ndarray]:
    return load_checkpoint(path).params


def record_corpus_hash(run_dir: Path, corpus: Path) -> None:
    """Add the corpus's SHA-256 to the run's checkpoints, as training records it, so that
    `eval` without a text file may read the corpus."""
    digest = hashlib.sha256(corpus.read_bytes()).hexdigest()
    for name in ("best.npz", "last.npz"):
        ckpt = load_checkpoint(run_dir / name)
        ckpt.meta["corpus_sha256"] = digest
        save_checkpoint(run_dir / name, ckpt)


@pytest.fixture
def trained(tmp_path, corpus) -> Path:
    out = tmp_path / "run"
    run("train", corpus, "--out", out, "--max-steps", "12", "--quiet", *TINY)
    record_corpus_hash(out, corpus)
    return out


# -- train ------------------------------------------------------------------------------------


def test_train_writes_config_metrics_and_checkpoints(trained):
    assert {"config.yaml", "metrics.jsonl", "last.npz", "best.npz"} <= {
        p.name for p in trained.iterdir()
    }
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 12
    assert {"step", "epoch", "train_loss", "val_loss", "lr", "chars_per_s", "elapsed"} <= set(
        records[0]
    )
    assert [r["step"] for r in records if r["val_loss"] is not None] == [5, 10, 12]
    ckpt = load_checkpoint(trained / "last.npz")
    assert ckpt.meta["step"] == 12
    assert ckpt.config["hidden_size"] == 8
    assert set(ckpt.params) == {f"rnn.{i}.{p}" for i in (0, 1) for p in ("Wx", "Wh", "b")} | {
        "out.W",
        "out.b",
    }


def test_train_summary_reports_reason_and_best(tmp_path, corpus):
    result = run("train", corpus, "--out", tmp_path / "r", "--max-steps", "6", "--quiet", *TINY)
    assert "stopped at step 6" in result.stdout
    assert "reached max_steps (6)" in result.stdout
    assert "best val loss" in result.stdout


def test_train_refuses_a_folder_holding_another_run(trained, corpus):
    before = (trained / "last.npz").read_bytes()
    result = run("train", corpus, "--out", trained, "--max-steps", "2", "--quiet", *TINY, code=1)
    assert "--resume" in one_error_line(result) and "--force" in result.stderr
    assert (trained / "last.npz").read_bytes() == before
    run("train", corpus, "--out", trained, "--max-steps", "2", "--quiet", "--force", *TINY)
    assert load_checkpoint(trained / "last.npz").meta["step"] == 2


@pytest.mark.parametrize(
    "cell,dropout,workers", [("lstm", "0.3", "2"), ("gru", "0.0", "1"), ("rnn", "0.2", "3")]
)
def test_resume_is_bitwise_identical(tmp_path, corpus, cell, dropout, workers):
    opts = [*TINY, "--model", cell, "--dropout", dropout, "--quiet", "--lr-patience", "1"]
    opts += ["--workers", workers]
    run("train", corpus, "--out", tmp_path / "once", "--max-steps", "17", *opts)
    run("train", corpus, "--out", tmp_path / "twice", "--max-steps", "7", *opts)
    run("train", corpus, "--out", tmp_path / "twice", "--resume", "--max-steps", "17", "--quiet")
    a, b = params_of(tmp_path / "once/last.npz"), params_of(tmp_path / "twice/last.npz")
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name
    ca, cb = (
        load_checkpoint(tmp_path / "once/last.npz"),
        load_checkpoint(tmp_path / "twice/last.npz"),
    )
    for key in ca.optimizer:
        assert np.array_equal(ca.optimizer[key], cb.optimizer[key]), key
    assert ca.meta["data_position"] == cb.meta["data_position"]


def test_the_run_records_how_many_workers_it_used(tmp_path, corpus):
    out = tmp_path / "r"
    run("train", corpus, "--out", out, "--max-steps", "2", "--quiet", *TINY, "--workers", "0")
    recorded = load_checkpoint(out / "last.npz").config["workers"]
    assert 1 <= recorded <= 4  # one per core, at most batch_size (4)
    assert f"workers: {recorded}" in (out / "config.yaml").read_text()


def test_resume_cannot_change_the_architecture(trained, corpus):
    result = run("train", corpus, "--out", trained, "--resume", "--hidden-size", "16", code=1)
    assert "hidden_size" in one_error_line(result)


def test_init_from_fine_tunes_with_a_compatible_vocabulary(tmp_path, trained, corpus):
    subset = tmp_path / "subset.txt"
    subset.write_text("the cat sat on a mat. " * 80, encoding="utf-8")
    run(
        "train",
        subset,
        "--out",
        tmp_path / "ft",
        "--init-from",
        trained / "best.npz",
        "--max-steps",
        "3",
        "--quiet",
        *TINY,
    )
    ft = load_checkpoint(tmp_path / "ft/last.npz")
    assert ft.vocab == load_checkpoint(trained / "best.npz").vocab
    assert ft.meta["step"] == 3

    other = tmp_path / "other.txt"
    other.write_text("zebra quiz! " * 100, encoding="utf-8")
    result = run(
        "train",
        other,
        "--out",
        tmp_path / "bad",
        "--init-from",
        trained / "best.npz",
        "--no-grow-vocab",
        "--quiet",
        *TINY,
        code=1,
    )
    assert "init-from" in one_error_line(result)
    assert not (tmp_path / "bad").exists()


def test_init_from_a_run_folder_takes_the_checkpoint_the_other_commands_take(tmp_path, corpus):
    run("train", corpus, "--out", tmp_path / "a", "--max-steps", "3", "--quiet",
        *TINY, "--val-fraction", "0")  # fmt: skip
    assert not (tmp_path / "a/best.npz").exists()  # no validation split: only last.npz
    result = run("train", corpus, "--out", tmp_path / "b", "--init-from", tmp_path / "a/best.npz",
                 "--quiet", *TINY, code=1)  # fmt: skip
    line = one_error_line(result, tmp_path / "a/best.npz")
    assert line.startswith(f"no such checkpoint file, but {tmp_path / 'a/last.npz'} exists")
    assert not (tmp_path / "b").exists()
    result = run("train", corpus, "--out", tmp_path / "b", "--init-from", tmp_path / "a",
                 "--max-steps", "2", "--quiet", *TINY)  # fmt: skip
    assert f"note: --init-from {tmp_path / 'a'}: using {tmp_path / 'a/last.npz'}" in result.stderr
    started = load_checkpoint(tmp_path / "b/last.npz")
    assert started.meta["step"] == 2
    assert started.vocab == load_checkpoint(tmp_path / "a/last.npz").vocab
    line = one_error_line(run("sample", tmp_path / "a/best.npz", code=1), tmp_path / "a/best.npz")
    assert "last.npz exists" in line  # the same hint from the commands that read a checkpoint


def test_non_finite_steps_are_skipped_then_given_up(tmp_path, corpus, monkeypatch):
    from rnncli import trainer as train_module

    real_step = train_module.Trainer.train_step
    calls = {"n": 0}

    def flaky(self):
        calls["n"] += 1
        if calls["n"] == 3:
            self.batches.next_batch()
            return float("nan")
        return real_step(self)

    monkeypatch.setattr(train_module.Trainer, "train_step", flaky)
    result = run("train", corpus, "--out", tmp_path / "a", "--max-steps", "6", *TINY)
    assert "non-finite" in result.stderr
    ckpt = load_checkpoint(tmp_path / "a/last.npz")
    assert ckpt.meta["step"] == 6
    assert ckpt.meta["schedule"]["lr"] == pytest.approx(2e-3 * 0.5)
    assert all(np.isfinite(p).all() for p in ckpt.params.values())

    monkeypatch.setattr(train_module.Trainer, "train_step", lambda self: float("nan"))
    result = run(
        "train", corpus, "--out", tmp_path / "b", "--max-steps", "50", "--quiet", *TINY, code=1
    )
    assert "not finite" in one_error_line(result)


# -- config errors ------------------------------------------------------------------------------


def test_unknown_config_key_is_a_usage_error_with_a_suggestion(tmp_path, corpus):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("hiden_size: 64\n")
    result = run("train", corpus, "--config", cfg, "--out", tmp_path / "r", code=2)
    assert "hidden_size" in one_error_line(result)
    assert not (tmp_path / "r").exists()


def test_yaml_python_tags_are_refused_without_running_anything(tmp_path, corpus):
    marker = tmp_path / "pwned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    result = run("train", corpus, "--config", cfg, "--out", tmp_path / "r", code=2)
    one_error_line(result)
    assert not marker.exists()
    assert not (tmp_path / "r").exists()


def test_invalid_option_value_names_the_key(tmp_path, corpus):
    result = run("train", corpus, "--learning-rate", "-1", "--out", tmp_path / "r", code=2)
    assert "learning_rate" in one_error_line(result) or "learning-rate" in result.stderr


def test_every_config_key_is_a_train_option():
    help_text = run("train", "--help").stdout
    for f in FIELDS:
        assert "--" + f.name.replace("_", "-") in help_text, f.name


# -- corpus errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content,needle",
    [
        (None, "no such file"),
        (b"", "empty"),
        (b"abc\xff\xfedef" * 50, "offset"),
        (b"abc\x00def" * 50, "NUL"),
    ],
)
def test_bad_corpus_is_one_line_and_writes_nothing(tmp_path, content, needle):
    path = tmp_path / "bad.txt"
    if content is not None:
        path.write_bytes(content)
    result = run("train", path, "--out", tmp_path / "r", *TINY, code=1)
    assert needle.lower() in one_error_line(result).lower()
    assert not (tmp_path / "r").exists()


def test_too_short_corpus_says_what_it_needs(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("hello world\n" * 3)
    result = run("train", path, "--out", tmp_path / "r", *TINY, code=1)
    line = one_error_line(result)
    assert "batch" in line and "seq" in line


# -- sample -------------------------------------------------------------------------------------


def test_sample_same_seed_same_text(trained):
    a = run("sample", trained / "best.npz", "--length", "80", "--seed", "3").stdout
    b = run("sample", trained / "best.npz", "--length", "80", "--seed", "3").stdout
    c = run("sample", trained / "best.npz", "--length", "80", "--seed", "4").stdout
    assert a == b and a != c
    assert len(a) == 81  # 80 characters and a final newline


def test_sample_prime_top_k_argmax_and_num_samples(trained):
    ckpt = trained / "best.npz"
    primed = run("sample", ckpt, "--prime", "the cat", "--length", "20", "--seed", "1").stdout
    assert primed.startswith("the cat") and len(primed) == len("the cat") + 21
    greedy = run("sample", ckpt, "--argmax", "--length", "30").stdout
    top1 = run("sample", ckpt, "--top-k", "1", "--length", "30", "--seed", "9").stdout
    assert greedy == top1
    many = run(
        "sample", ckpt, "--num-samples", "3", "--length", "10", "--seed", "2", "--prime", "a"
    ).stdout
    parts = re.split(r"^--- sample (\d) of 3 ---\n", many, flags=re.M)
    assert parts[0] == "" and parts[1::2] == ["1", "2", "3"]
    texts = parts[2::2]
    assert all(t.startswith("a") and len(t) == 1 + 10 + 1 and t.endswith("\n") for t in texts)
    one = run("sample", ckpt, "--length", "10", "--seed", "2", "--prime", "a").stdout
    assert one == texts[0]  # sample 1 of a seed is the same alone or among others


def test_sample_refuses_unknown_prime_characters_unless_dropped(trained):
    result = run("sample", trained / "best.npz", "--prime", "the Ωcat", code=2)
    assert "Ω" in one_error_line(result)
    out = run(
        "sample",
        trained / "best.npz",
        "--prime",
        "the Ωcat",
        "--drop-unknown",
        "--length",
        "5",
        "--seed",
        "1",
    ).stdout
    assert out.startswith("the cat")


@pytest.mark.parametrize("args", [["--temperature", "0"], ["--top-p", "1.5"], ["--top-k", "-1"]])
def test_sample_bad_options_are_usage_errors(trained, args):
    run("sample", trained / "best.npz", *args, code=2)


# -- eval and info -----------------------------------------------------------------------------


def test_eval_skips_and_reports_characters_outside_the_vocabulary(tmp_path, trained):
    held = tmp_path / "held.txt"
    held.write_text("the cat sat on a mat.\n" * 20 + "the ☃ cat Ω\n", encoding="utf-8")
    report = json.loads(run("eval", trained / "best.npz", held, "--json").stdout)
    assert set(report) >= {"loss", "bpc", "perplexity", "chars", "oov"}
    assert report["oov"] == 2
    assert report["chars"] == len(held.read_text(encoding="utf-8")) - 2 - 1
    assert report["bpc"] == pytest.approx(report["loss"] / np.log(2))
    assert report["perplexity"] == pytest.approx(np.exp(report["loss"]))
    text = run("eval", trained / "best.npz", held).stdout
    assert "bits/char" in text and "'☃'" in text


def test_eval_of_the_training_corpus_test_split(trained):
    report = json.loads(run("eval", trained / "best.npz", "--split", "test", "--json").stdout)
    assert report["chars"] > 0 and np.isfinite(report["loss"])


def test_info_describes_the_checkpoint(trained):
    info = json.loads(run("info", trained / "last.npz", "--json").stdout)
    assert info["step"] == 12
    assert info["model"] == "lstm 2x8"
    assert info["format_version"] == 1
    assert info["parameters"] == sum(p.size for p in params_of(trained / "last.npz").values())
    assert "hidden_size: 8" in run("info", trained / "last.npz").stdout


def test_a_run_folder_stands_for_its_best_then_last_checkpoint(tmp_path, trained):
    by_file = run("sample", trained / "best.npz", "--length", "40", "--seed", "5").stdout
    result = run("sample", trained, "--length", "40", "--seed", "5")
    assert result.stdout == by_file
    assert result.stderr.strip() == f"rnn: using {trained / 'best.npz'}"
    by_split = json.loads(run("eval", trained, "--split", "test", "--json").stdout)
    assert by_split == json.loads(
        run("eval", trained / "best.npz", "--split", "test", "--json").stdout
    )
    (trained / "best.npz").unlink()
    info = run("info", trained, "--json")
    assert json.loads(info.stdout)["step"] == 12
    assert str(trained / "last.npz") in info.stderr
    (trained / "last.npz").unlink()
    assert "without best.npz or last.npz" in one_error_line(run("info", trained, code=1))


def test_checkpoint_with_an_object_array_is_refused(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, meta=np.array([{"a": 1}], dtype=object))
    for command in READERS:
        result = run(command, bad, code=1)
        assert str(bad) in one_error_line(result)


def test_checkpoint_whose_parts_do_not_fit_is_refused(tmp_path, trained, corpus):
    ckpt = load_checkpoint(trained / "last.npz")
    ckpt.vocab = ckpt.vocab[:-1]  # one character short of the output layer
    save_checkpoint(trained / "last.npz", ckpt)
    assert "vocabulary" in one_error_line(run("sample", trained / "last.npz", code=1))
    resumed = run("train", corpus, "--out", trained, "--resume", code=1)
    assert "vocabulary" in one_error_line(resumed)
    ckpt = load_checkpoint(trained / "best.npz")
    del ckpt.params["rnn.1.Wh"]
    save_checkpoint(trained / "last.npz", ckpt)
    missing = one_error_line(run("info", trained / "last.npz", code=1))
    assert "member 'params/rnn.1.Wh': missing" in missing


def test_truncated_checkpoint_is_refused(tmp_path, trained):
    cut = tmp_path / "cut.npz"
    data = (trained / "last.npz").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    one_error_line(run("info", cut, code=1))


# -- gradcheck ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", tuple(CELLS))
def test_gradcheck_passes_and_can_fail(cell):
    result = run("gradcheck", "--model", cell, "--num-layers", "2")
    assert "passed" in result.stdout and "out.W" in result.stdout
    run("gradcheck", "--model", cell, "--num-layers", "1", "--tolerance", "1e-300", code=1)
    lines = run("gradcheck", "--model", cell, "--embedding-size", "2").stdout.splitlines()
    assert lines[0].startswith("embed.W ") and lines[0].endswith("ok")
    assert lines[-1].startswith(f"{cell} 2x6, embedding_size 2: ") and "passed" in lines[-1]


def test_every_subcommand_has_help():
    for command in cli.commands:
        assert "Usage: " in run(command, "--help").stdout


# -- real processes: signals and kills --------------------------------------------------------


def spawn_training(corpus: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "rnncli",
        "train",
        str(corpus),
        "--out",
        str(out),
        *TINY,
        "--max-steps",
        "100000",
        "--min-lr",  # never stop on the learning rate: these runs end by signal
        "0",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_and_resume_continues(tmp_path, corpus, sig, code):
    out = tmp_path / "run"
    proc = spawn_training(corpus, out)
    wait_for(out / "last.npz")
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    step = load_checkpoint(out / "last.npz").meta["step"]
    assert step >= 5
    run("train", corpus, "--out", out, "--resume", "--max-steps", step + 3, "--quiet")
    assert load_checkpoint(out / "last.npz").meta["step"] == step + 3


def metric_lines(out: Path) -> int:
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_kill_9_never_leaves_a_broken_checkpoint(tmp_path, corpus):
    out = tmp_path / "run"
    rng = np.random.default_rng(0)
    for attempt in range(6):
        extra = ["--checkpoint-every", "1", "--quiet"]
        seen = metric_lines(out)
        proc = spawn_training(corpus, out, *extra, *([] if attempt == 0 else ["--resume"]))
        wanted = seen + int(rng.integers(1, 4))  # the event: 1 to 3 new progress records
        deadline = time.monotonic() + 60
        while metric_lines(out) < wanted:
            assert proc.poll() is None and time.monotonic() < deadline, "no progress"
            time.sleep(0.005)
        proc.kill()
        proc.wait(timeout=30)
        ckpt = load_checkpoint(out / "last.npz")  # raises if broken
        assert all(np.isfinite(p).all() for p in ckpt.params.values())
    step = ckpt.meta["step"]
    run("train", corpus, "--out", out, "--resume", "--max-steps", step + 2, "--quiet")
    assert load_checkpoint(out / "last.npz").meta["step"] == step + 2
    assert not list(out.glob(".*.tmp")), "a resumed run clears what killed saves left behind"
