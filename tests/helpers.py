"""What the command-line tests share: running `rnn` in-process, and a tiny model's settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rnncli import reference
from rnncli.cli import cli
from rnncli.gradcheck import rel_error

# A model and schedule small enough that a run of a dozen steps takes a fraction of a second.
TINY = [
    "--model", "lstm", "--hidden-size", "8", "--num-layers", "2",
    "--batch-size", "4", "--seq-length", "8",
    "--eval-every", "5", "--checkpoint-every", "5", "--log-every", "2",
    "--val-fraction", "0.1", "--test-fraction", "0.1", "--workers", "1",
]  # fmt: skip
# One worker: the same path on any machine (0 would choose by the cores); test_cli covers more.


def tiny(drop: tuple[str, ...] = (), **changes) -> list[str]:
    """``TINY`` with options changed (``hidden_size=12`` sets --hidden-size 12; ``quiet=True``
    adds the flag) and the options named in ``drop`` left to their defaults."""
    options = dict(zip(TINY[::2], TINY[1::2], strict=True))
    for name in drop:
        del options[f"--{name.replace('_', '-')}"]
    flags = []
    for name, value in changes.items():
        option = f"--{name.replace('_', '-')}"
        if value is True:
            flags.append(option)
        else:
            options[option] = str(value)
    return [item for pair in options.items() for item in pair] + flags


WORDS = ("the ", "cat ", "sat ", "on ", "a ", "mat. ", "\n", "dog ", "ran ")


def write_corpus(path: Path, seed: int = 0, words=WORDS, size: int = 1500) -> Path:
    """A small corpus of ``size`` words drawn from ``words``: enough for tiny models to train a
    few steps on."""
    rng = np.random.default_rng(seed)
    path.write_text("".join(rng.choice(list(words), size=size)), encoding="utf-8")
    return path


# The commands that read a checkpoint or run folder, named by their first argument.
READERS = tuple(name for name, c in cli.commands.items() if c.params[0].name == "checkpoint")


# Runs `rnn ARGS` and writes its own peak RSS (VmHWM, kB) to the file named first. Not
# getrusage's ru_maxrss: Linux carries the pre-exec peak into it, at least the RSS of the
# parent that spawned the child, which for a pytest process late in the suite is hundreds of MB.
_PEAK_LAUNCHER = """
import atexit, re, runpy, sys
def report(path=sys.argv[1]):
    with open("/proc/self/status") as f:
        peak = re.search(r"VmHWM:\\s*(\\d+) kB", f.read())[1]
    with open(path, "w") as f:
        f.write(peak)
atexit.register(report)
sys.argv = ["rnn", *sys.argv[2:]]
runpy.run_module("rnncli", run_name="__main__")
"""


def rnn_peak_rss(args, folder: Path) -> tuple[int, str, int]:
    """Exit status, stderr and the peak RSS in bytes of ``rnn ARGS`` run in a child process of
    this checkout (its files in ``folder``); skips where /proc has no VmHWM (Linux only)."""
    if not Path("/proc/self/status").exists():
        pytest.skip("the peak RSS is read from Linux's /proc/self/status")
    peak = folder / "peak_rss_kb.txt"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-c", _PEAK_LAUNCHER, str(peak), *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return done.returncode, done.stderr, int(peak.read_text()) * 1024


def run(*args, code: int = 0, **kwargs):
    """``rnn ARGS`` through Click's runner; asserts the exit status and that no traceback shows."""
    result = CliRunner().invoke(cli, [str(a) for a in args], **kwargs)
    assert result.exit_code == code, (result.output, result.exception)
    assert "Traceback" not in result.output
    return result


def one_error_line(
    result, path=None, *, strip: bool = False, usage_errors: bool = False, ignore: tuple = ()
) -> str:
    """The one line a failed command wrote on stderr, asserting there is exactly one (besides
    lines starting with ``ignore``), that it is rnn's ``rnn: error: `` line (naming ``path`` first
    when given) or, with ``usage_errors``, click's ``Error: `` line, and that no traceback shows.
    Returned without rnn's prefix when ``strip`` or ``path`` is given, else whole."""
    lines = [x for x in result.stderr.strip().splitlines() if not (ignore and x.startswith(ignore))]
    assert len(lines) == 1, result.stderr
    prefix = "rnn: error: " + (f"{path}: " if path is not None else "")
    assert lines[0].startswith(prefix) or (usage_errors and lines[0].startswith("Error: ")), lines[
        0
    ]
    assert "Traceback" not in result.output
    return lines[0].removeprefix(prefix) if strip or path is not None else lines[0]


def assert_stepper_agrees(model, rng: np.random.Generator, B: int = 2, T: int = 7) -> None:
    """``model``'s Stepper, from a random state over random characters, scores each step's
    inputs as ``Model.forward`` scores that one position, and ends in its final state."""
    x = rng.integers(0, model.vocab_size, (B, T))
    state = rng.uniform(-1, 1, model.zero_state(B).shape)
    stepper = model.stepper(B, state)
    for t in range(T):
        logits = stepper.step(x[:, t])
        only_t = np.zeros(x.shape, bool)
        only_t[:, t] = True
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        expected = model.forward(x, x, state, mask=only_t)[0]
        assert np.isclose(-logp[np.arange(B), x[:, t]].mean(), expected, rtol=1e-10, atol=0)
    np.testing.assert_allclose(stepper.state, model.forward(x, x, state)[1], rtol=1e-10)


def assert_model_matches_reference(model, B: int, T: int, seed: int) -> None:
    """``model`` (float64), its parameters moved off their initial values, computes what
    ``reference.model_forward``/``model_backward`` compute on B random windows of T characters
    from a random state (dropout masks drawn alike): loss, final state and every gradient to
    1e-10."""
    rng = np.random.default_rng(seed)
    for param in model.params.values():
        param += rng.normal(0, 0.1, param.shape)
    V, L, H, p = model.vocab_size, model.num_layers, model.hidden_size, model.dropout
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    state0 = rng.uniform(-1, 1, model.zero_state(B).shape)
    loss, final, cache = model.forward(x, y, state0, None, np.random.default_rng(seed))
    grads, dstate0 = model.backward(cache)
    drops = reference.dropout_masks(p, np.random.default_rng(seed), L, B, T, H)
    ref_loss, ref_final, ref_cache = reference.model_forward(
        model.params, model.cell, x, y, state0, None, drops, model.residual
    )
    ref_grads, ref_dstate0 = reference.model_backward(ref_cache)
    assert abs(loss - ref_loss) <= 1e-10 * abs(ref_loss)
    assert rel_error(final, ref_final) <= 1e-10 and rel_error(dstate0, ref_dstate0) <= 1e-10
    assert list(grads) == list(model.params)
    for name, grad in grads.items():
        assert rel_error(grad, ref_grads[name]) <= 1e-10, name
