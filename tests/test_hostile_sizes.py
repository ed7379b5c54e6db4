"""Commands whose cost scales with their input estimate it before allocating, and refuse in one
line what would not fit: ``gradcheck`` from the model's shape, ``eval --per-char/--per-line``
from the file's size and lines (also under a ``ulimit -v``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnncli import evaluate
from rnncli.gradcheck import MAX_PARAMETERS, check_size
from rnncli.memory import available_bytes
from tests.crafted import train_tiny
from tests.helpers import one_error_line, run

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("sizes"))


@pytest.mark.parametrize(
    "args",
    [
        ("--hidden-size", "100000"),
        ("--num-layers", "100000"),
        ("--num-layers", str(10**12)),
        ("--embedding-size", str(10**9)),
        ("--hidden-size", str(10**15), "--num-layers", str(10**15)),
        ("--model", "gru", "--hidden-size", "200"),
        ("--mlp-size", str(10**9)),  # the MLPs' and kernels' parameters count too
        ("--embedding-size", "6", "--conv-size", "16", "--num-layers", "60"),  # 18,785 without
    ],
)
def test_gradcheck_refuses_a_model_too_large_to_check_in_one_line(args):
    result = run("gradcheck", *args, code=2)
    assert "finite differences check at most" in one_error_line(result)


@given(
    cell=st.sampled_from(["rnn", "lstm", "gru"]),
    layers=st.integers(1, 10**6),
    hidden=st.integers(1, 10**6),
    embedding=st.integers(0, 100),
)
@settings(max_examples=60, deadline=None)
def test_the_gradcheck_count_matches_the_model_it_would_build(cell, layers, hidden, embedding):
    from rnncli.model import Model

    small = min(layers, 3)  # the real count, built layer by layer, for a few layers
    real = sum(
        a * (b if len(s) > 1 else 1)
        for s in Model.param_shapes(5, cell, hidden, small, embedding).values()
        for a, b in [(s[0], s[-1])]
    )
    try:
        check_size(cell, small, hidden, 5, embedding)
        assert real <= MAX_PARAMETERS
    except ValueError:
        assert real > MAX_PARAMETERS


def test_gradcheck_within_the_limit_still_runs():
    assert "passed" in run("gradcheck", "--hidden-size", "3", "--num-layers", "1").output


def test_per_char_refuses_a_file_that_would_not_fit(trained, tmp_path, monkeypatch):
    text = tmp_path / "t.txt"
    text.write_text("the cat sat\n" * 20_000)
    monkeypatch.setattr(evaluate, "available_bytes", lambda: 10 << 20)
    for flag in ("--per-char", "--per-line"):
        result = run("eval", trained, text, flag, code=1)
        line = one_error_line(result, ignore=("rnn: using ",))
        assert "per-character scoring needs about" in line and "available" in line


def test_per_line_estimate_counts_lines():
    many_lines, few_lines = b"\n" * 1000, b"a" * 1000
    assert evaluate.surprisal_bytes(many_lines) > evaluate.surprisal_bytes(few_lines)


def test_an_address_space_limit_counts_as_memory(tmp_path):
    """Under ``ulimit -v`` the estimate sees the cap, and per-char scoring of a file too big for
    it is one line, not a numpy allocation traceback."""
    text = tmp_path / "t.txt"
    text.write_bytes(b"the cat sat on the mat\n" * 700_000)  # 16 MB: about 1 GB to score
    run_dir = train_tiny(tmp_path)
    script = textwrap.dedent(
        """
        import resource, sys
        from rnncli.memory import available_bytes
        vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1])
        cap = vm * 1024 + (600 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        assert available_bytes() <= 600 << 20, available_bytes()
        from rnncli.cli import main
        sys.argv = ["rnn", "eval", sys.argv[1], sys.argv[2], "--per-char"]
        main()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(run_dir), str(text)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = [x for x in done.stderr.splitlines() if not x.startswith("rnn: using")]
    assert len(lines) == 1 and "per-character scoring needs about" in lines[0], done.stderr


def test_available_bytes_is_never_negative():
    have = available_bytes()
    assert have is None or have >= 0


def test_running_out_of_memory_anyway_is_one_line(trained, tmp_path, monkeypatch):
    import rnncli.cli

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(rnncli.cli, "surprisal_table", exhausted)
    text = tmp_path / "t.txt"
    text.write_text("the cat sat\n")
    result = run("eval", trained, text, "--per-char", code=1)
    assert "out of memory" in one_error_line(result, ignore=("rnn: using ",))
