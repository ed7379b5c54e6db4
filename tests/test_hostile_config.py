"""Configs from strangers and bad option values: one line (or Click's usage form), exit 2,
bounded time and memory, nothing created. Also the CLI's error plumbing and a closed stdout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnncli.cli import CliError, fail
from rnncli.config import CONFIG_LIMIT, Config, ConfigError, load_config
from tests.helpers import one_error_line, rnn_peak_rss, run

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"
MEMORY_LIMIT = 300 << 20  # bytes of peak RSS


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)

# id -> (config file text, text the error line must contain)
CASES: dict[str, tuple[str, str]] = {
    "alias-bomb": (BILLION_LAUGHS, "aliases (*name) are not allowed"),
    "alias-bomb-under-model": (
        BILLION_LAUGHS.replace("i: &i", "model: &i"),
        "aliases (*name) are not allowed",
    ),
    "duplicate-key": ("hidden_size: 8\nnum_layers: 1\nhidden_size: 9\n", "line 3: duplicate key"),
    "list-not-mapping": ("- 1\n- 2\n", "expected a mapping of key: value pairs, got a list"),
    "scalar-not-mapping": ("lstm\n", "expected a mapping of key: value pairs, got a str"),
    "python-object-tag": (
        "model: !!python/object/apply:os.system ['echo hi']\n",
        "unsupported YAML",
    ),
    "python-name-tag": ("model: !!python/name:os.system\n", "unsupported YAML"),
    "nested-100000-deep": ("model: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested deeper"),
    "huge-integer": ("hidden_size: " + "9" * 5000 + "\n", "invalid YAML value"),
    "bad-value": ("hidden_size: 0\n", "hidden_size: must be >= 1, got 0"),
    "wrong-type": ("hidden_size: [1, 2]\n", "hidden_size: expected an integer"),
    "huge-value-message-is-short": (
        "model: [" + ", ".join(["abcdefgh"] * 5_000) + "]\n",
        "model: expected a string, got ['abcdefgh', ",
    ),
    "huge-unknown-key": ("k" * 1000 + ": 1\n", "unknown key 'kkkk"),
    "not-utf8": ("model: caf\udce9\n", "not UTF-8 text"),
    "invalid-yaml": ("a: [1\nb: 2\n", "invalid YAML"),
    "nan-learning-rate": ("learning_rate: .nan\n", "learning_rate: expected a finite number"),
    "negative-warmup": ("lr_schedule: cosine\nwarmup_steps: -5\n", "warmup_steps: must be >= 0"),
    "lr-floor-one": ("lr_floor: 1\n", "lr_floor: must be in [0, 1), got 1.0"),
    "unknown-schedule": ("lr_schedule: linear\n", "lr_schedule: must be one of plateau, cosine"),
    "input-lr-scale-zero": ("input_lr_scale: 0\n", "input_lr_scale: must be > 0, got 0.0"),
    "input-lr-scale-inf": ("input_lr_scale: .inf\n", "input_lr_scale: expected a finite number"),
}


@pytest.mark.parametrize("case", CASES)
def test_hostile_config_is_one_line_and_creates_nothing(tmp_path, case):
    text, needle = CASES[case]
    config = tmp_path / "bad.yaml"
    config.write_bytes(text.encode("utf-8", "surrogateescape"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello world\n" * 50)
    out = tmp_path / "run"
    result = run("train", corpus, "--config", config, "--out", out, code=2)
    line = one_error_line(result, strip=True)
    assert line.startswith(f"{config}: ") and needle in line, line
    assert len(line) < 300 + len(str(config))
    assert not out.exists()


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: p.mkdir(), "is a directory, not a config file"),
        (lambda p: p.write_bytes(b"#" * CONFIG_LIMIT + b"\n"), "larger than 1,048,576 bytes"),
        (lambda p: None, "config file not found"),
    ],
    ids=["directory", "over-1MB", "missing"],
)
def test_config_that_is_not_a_small_regular_file(tmp_path, make, needle):
    config = tmp_path / "config.yaml"
    make(config)
    with pytest.raises(ConfigError, match=needle):
        load_config(config)


def test_config_of_exactly_the_limit_loads(tmp_path):
    config = tmp_path / "config.yaml"
    body = b"hidden_size: 8\n"
    config.write_bytes(body + b"#" * (CONFIG_LIMIT - len(body) - 1) + b"\n")
    assert load_config(config).hidden_size == 8


def spawn_rnn(args: list[str], tmp_path: Path, timeout: float = 60):
    """Exit status, stderr and peak RSS (bytes) of ``python -m rnncli ARGS``, killed after
    ``timeout`` seconds (a hang fails the test instead of stalling the suite)."""
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "rnncli", *args], stderr=err)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"rnn {' '.join(args)} still running after {timeout} s")
    return proc.returncode, err_path.read_text()


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_config_that_never_ends_is_refused_at_once(tmp_path, kind):
    config = tmp_path / "config.yaml"
    if kind == "fifo":
        os.mkfifo(config)
    else:
        config = Path("/dev/zero")
        if not config.exists():
            pytest.skip("no /dev/zero on this system")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello world\n" * 50)
    out = tmp_path / "run"
    code, stderr = spawn_rnn(
        ["train", str(corpus), "--config", str(config), "--out", str(out)], tmp_path
    )
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert "not a regular file (a FIFO, socket or device)" in stderr
    assert not out.exists()


def test_alias_bomb_fails_fast_with_small_memory(tmp_path):
    config = tmp_path / "bomb.yaml"
    config.write_text(BILLION_LAUGHS.replace("i: &i", "model: &i"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello world\n" * 50)
    args = ["train", corpus, "--config", config, "--out", tmp_path / "run"]
    code, stderr, peak = rnn_peak_rss(args, tmp_path)
    assert code == 2 and "aliases (*name) are not allowed" in stderr
    assert peak < MEMORY_LIMIT


# -- bad option values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--tolerance", "nan"],
        ["--tolerance", "inf"],
        ["--tolerance", "0"],
        ["--tolerance", "-1e-6"],
        ["--seed", "-1"],
        ["--seed", str(2**63)],
        ["--embedding-size", "-1"],
    ],
    ids=["tolerance-nan", "tolerance-inf", "tolerance-0", "tolerance-negative", "seed-negative",
         "seed-2**63", "embedding-size-negative"],
)  # fmt: skip
def test_gradcheck_option_values_are_usage_errors(args):
    result = run("gradcheck", "--hidden-size", "2", "--num-layers", "1", *args, code=2)
    assert f"Invalid value for '{args[0]}'" in result.stderr


def test_gradcheck_accepts_the_largest_seed():
    run("gradcheck", "--model", "rnn", "--hidden-size", "2", "--num-layers", "1",
        "--seed", str(2**63 - 1), code=0)  # fmt: skip


# -- the CLI's error plumbing ------------------------------------------------------------------


def test_fail_raises_a_click_exception_with_the_exit_code(capsys):
    with pytest.raises(CliError) as info:
        fail("two\nlines", 2)
    assert info.value.exit_code == 2
    info.value.show()
    assert capsys.readouterr().err == "rnn: error: two lines\n"


def test_info_of_a_checkpoint_without_progress_fields(tmp_path):
    import numpy as np

    from rnncli.checkpoint import Checkpoint, save_checkpoint
    from rnncli.model import Model

    path = tmp_path / "bare.npz"
    save_checkpoint(path, Checkpoint(params=Model(2, "lstm", 128, 2).params, vocab="ab", config={}))
    shown = run("info", path, code=0).stdout
    assert "step:           None" in shown and "epoch:          None" in shown
    assert np.isfinite(float(run("info", path, "--json", code=0).stdout.count("null")))


def test_closed_stdout_ends_quietly():
    args = [sys.executable, "-m", "rnncli", "gradcheck", "--hidden-size", "2"]
    closed = subprocess.run(
        args, stderr=subprocess.PIPE, timeout=120, preexec_fn=lambda: os.close(1)
    )
    assert closed.returncode == 0 and closed.stderr == b""


def test_broken_stdout_ends_quietly():
    args = [sys.executable, "-m", "rnncli", "gradcheck", "--hidden-size", "2"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader went away, as `| head -c0` does
    assert proc.wait(120) != 0 and proc.stderr.read() == b""


# -- the fuzzer: mutated real configs load or fail in one line --------------------------------


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(
        st.tuples(
            st.floats(0, 1, exclude_max=True), st.sampled_from(list(":-[]{}&*!|>'\"#\n\t x0."))
        ),
        max_size=8,
    ),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_fuzz_config_loader(tmp_path, edits, cut):
    text = list(DEMO.read_text(encoding="utf-8"))
    for where, char in edits:
        text[int(where * len(text))] = char
    if cut is not None:
        text = text[: int(cut * len(text))]
    path = tmp_path / "fuzz.yaml"
    path.write_text("".join(text), encoding="utf-8")
    try:
        assert isinstance(load_config(path), Config)
    except ConfigError as err:
        assert "\n" not in str(err) and str(err).startswith(f"{path}") and len(str(err)) < 400
