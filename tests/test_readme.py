"""The README stays true: its config reference is the config definition, its commands parse."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from rnncli.cli import cli
from rnncli.config import config_reference_markdown

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- config-reference:begin -->", "<!-- config-reference:end -->"


def readme() -> str:
    return README.read_text(encoding="utf-8")


def test_config_reference_matches_the_definition():
    text = readme()
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
            if line.startswith("rnn "):
                commands.append(shlex.split(line.split(" | ")[0], comments=True)[1:])
    return commands


def test_readme_shows_every_subcommand():
    shown = {args[0] for args in readme_commands()}
    assert shown >= {"train", "sample", "eval", "info", "gradcheck"}


@pytest.mark.parametrize("args", readme_commands(), ids=" ".join)
def test_readme_commands_parse(args):
    command = cli.get_command(None, args[0])
    assert command is not None, args[0]
    # parses and type-checks every option and argument without running the command
    command.make_context(args[0], args[1:])
