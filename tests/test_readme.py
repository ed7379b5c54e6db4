"""The README stays true: the config reference it links to is the config definition, its
commands parse, and the commands of its console examples run as written through the real `rnn`
program."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rnncli.cli import cli
from rnncli.config import config_reference_markdown

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONFIG_REFERENCE = ROOT / "docs" / "configuration.md"  # the full table, linked from the README
RNN = Path(sys.executable).with_name("rnn")  # the console script installed next to python
BEGIN, END = "<!-- config-reference:begin -->", "<!-- config-reference:end -->"


def readme() -> str:
    return README.read_text(encoding="utf-8")


def test_config_reference_matches_the_definition():
    assert "(docs/configuration.md)" in readme()
    text = CONFIG_REFERENCE.read_text(encoding="utf-8")
    assert BEGIN in text and END in text
    table = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert table == config_reference_markdown().strip()


def readme_commands() -> list[list[str]]:
    """Every `rnn ...` command in the README: the lines of its shell code blocks, and the
    `$ `-prompted lines of its console blocks (the rest of those is output)."""
    commands = []
    for kind, block in re.findall(r"```(sh|console)\n(.*?)```", readme(), re.S):
        for line in block.splitlines():
            if kind == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            for part in line.split(" | "):  # rnn may read a pipe: printf ... | rnn write
                if part.startswith("rnn "):
                    commands.append(shlex.split(part, comments=True)[1:])
    return commands


def test_readme_shows_every_subcommand():
    shown = {args[0] for args in readme_commands()}
    assert shown >= set(cli.commands)


@pytest.mark.parametrize("args", readme_commands(), ids=" ".join)
def test_readme_commands_parse(args):
    command = cli.get_command(None, args[0])
    assert command is not None, args[0]
    # parses and type-checks every option and argument without running the command
    command.make_context(args[0], args[1:])


def console_commands() -> list[str]:
    """The `$ `-prompted lines of the README's console blocks, in order."""
    blocks = re.findall(r"```console\n(.*?)```", readme(), re.S)
    return [line[2:] for block in blocks for line in block.splitlines() if line.startswith("$ ")]


# Made-up lines with the characters the README's primes use; a few KB, so training is instant.
SPEECHES = (
    "ROMEO:\nWhat light is this that breaks upon the wall?\n\n"
    "JULIET:\nIt is the lamp, good sir, and nothing more.\n\n"
)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    """A project folder laid out as the README's run was, with `runs/demo` trained for a few
    steps on a small corpus at the README's corpus path, `data/shakespeare.txt`."""
    if not RNN.is_file() or shutil.which("bash") is None:
        pytest.skip("needs the installed `rnn` console script (make install) and bash")
    root = tmp_path_factory.mktemp("readme")
    project = root / "project"
    shutil.copytree(ROOT / "configs", project / "configs")
    corpus = project / "data" / "shakespeare.txt"
    corpus.parent.mkdir(parents=True)
    corpus.write_text(SPEECHES * 40, encoding="utf-8")
    tiny = "--max-steps 3 --max-time 0 --hidden-size 8 --batch-size 2 --seq-length 8 --workers 1"
    train = [str(RNN), "train", "data/shakespeare.txt", "--config"]
    train += ["configs/demo.yaml", "--out", "runs/demo", "--quiet", *tiny.split()]
    subprocess.run(train, cwd=project, check=True, capture_output=True, timeout=120)
    return project


def test_readme_console_commands_run_as_written(sandbox):
    """Every console command but training (the README's runs take minutes; their options are
    checked by test_readme_commands_parse) runs in a shell, in order, and succeeds."""
    env = {**os.environ, "PATH": f"{RNN.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    ran, failures = [], []
    for command in console_commands():
        if command.startswith("rnn train "):
            continue
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=sandbox,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        ran.append(command)
        if done.returncode != 0 or "rnn: error" in done.stderr:
            failures.append(f"{command}\n  exit {done.returncode}: {done.stderr.strip()}")
    assert failures == []
    assert {c.split()[1] for c in ran if c.startswith("rnn ")} >= {"sample", "eval", "info"}
