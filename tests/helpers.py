"""What the command-line tests share: running `rnn` in-process, and a tiny model's settings."""

from __future__ import annotations

from click.testing import CliRunner

from rnncli.cli import cli

# A model and schedule small enough that a run of a dozen steps takes a fraction of a second.
TINY = [
    "--model", "lstm", "--hidden-size", "8", "--num-layers", "2",
    "--batch-size", "4", "--seq-length", "8",
    "--eval-every", "5", "--checkpoint-every", "5", "--log-every", "2",
    "--val-fraction", "0.1", "--test-fraction", "0.1",
]  # fmt: skip


# The commands that read a checkpoint or run folder, named by their first argument.
READERS = tuple(name for name, c in cli.commands.items() if c.params[0].name == "checkpoint")


def run(*args, code: int = 0, **kwargs):
    """``rnn ARGS`` through Click's runner; asserts the exit status and that no traceback shows."""
    result = CliRunner().invoke(cli, [str(a) for a in args], **kwargs)
    assert result.exit_code == code, (result.output, result.exception)
    assert "Traceback" not in result.output
    return result
