"""The `rnn` program's entry point: before numpy loads, the commands that compute in this one
process (``ONE_PROCESS``) get their BLAS thread count measured (``threads.choose_blas_threads``),
as training's worker processes get theirs; then the command line runs."""

from __future__ import annotations

import os
import sys

from .threads import choose_blas_threads

# Commands whose products run in this process. `train` computes in its worker processes, which
# set their own count; `info` and `gradcheck` do too little for threads to matter.
ONE_PROCESS = frozenset({"eval", "sample", "write", "report"})


def command_name(args: list[str]) -> str | None:
    """The command ``rnn ARGS`` runs: the first argument that is not an option (the group's
    options, --help and --version, take no value)."""
    return next((arg for arg in args if not arg.startswith("-")), None)


def main() -> None:
    if command_name(sys.argv[1:]) in ONE_PROCESS:
        os.environ.update(choose_blas_threads())
    from .cli import main as run_cli  # imports numpy, which reads the count once

    run_cli()
