"""`--help` texts a newcomer reads, and the `--json` results of `train` and `gradcheck`."""

from __future__ import annotations

import json

import click
import pytest

from rnncli.cli import cli
from rnncli.config import FIELDS
from rnncli.options import TRAIN_SECTIONS
from tests.helpers import TINY, run


def options_without_help(command: str) -> list[str]:
    """The options of ``rnn COMMAND`` whose --help line says nothing about them."""
    params = cli.commands[command].params
    return [p.opts[-1] for p in params if isinstance(p, click.Option) and not p.help]


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_option_is_described(command):
    assert options_without_help(command) == []


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_help_names_no_repository_file(command):
    text = run(command, "--help").stdout
    assert "docs/" not in text and ".md" not in text and "README" not in text


def test_the_command_list_shows_whole_summaries():
    text = run("--help").stdout
    commands = text.split("Commands:")[1]
    assert "..." not in commands
    assert "streaming it to stdout." in " ".join(commands.split())


def test_write_describes_top_k_and_top_p():
    text = " ".join(run("write", "--help").stdout.split())
    assert "--top-k INTEGER RANGE Draw only from the k most likely characters" in text
    assert "--top-p FLOAT RANGE Draw only from the smallest set" in text


def test_train_help_groups_its_options_and_gives_examples():
    text = run("train", "--help").stdout
    for title in TRAIN_SECTIONS:
        assert f"\n{title}:\n" in text
    assert "Other settings:" not in text  # every configuration key has its heading
    placed = {name for names in TRAIN_SECTIONS.values() for name in names}
    assert {f.name for f in FIELDS} <= placed
    examples = text.split("Examples:")[1]
    assert examples.count("rnn train ") >= 3


def test_gradcheck_takes_the_configs_seed_range():
    run("gradcheck", "--model", "rnn", "--hidden-size", "2", "--num-layers", "1",
        "--seed", str(2**63 - 1))  # fmt: skip
    result = run("gradcheck", "--seed", str(2**63), code=2)
    assert "--seed" in result.stderr


def test_train_json_is_the_result(tmp_path, corpus):
    out = tmp_path / "run"
    result = run("train", corpus, "--out", out, "--max-steps", "6", "--json", *TINY)
    found = json.loads(result.stdout)
    assert found["step"] == 6 and found["reason"] == "reached max_steps (6)"
    assert found["run_dir"] == str(out) and found["last_checkpoint"] == str(out / "last.npz")
    assert found["best_checkpoint"] == str(out / "best.npz")
    assert found["best_val_loss"] > 0 and found["val_loss_full"] > 0
    assert found["epoch"] > 0 and isinstance(found["notes"], list)


def test_train_json_without_a_validation_split_has_no_best(tmp_path, corpus):
    args = [*TINY, "--val-fraction", "0", "--test-fraction", "0", "--max-steps", "3", "--json"]
    found = json.loads(run("train", corpus, "--out", tmp_path / "r", *args).stdout)
    assert found["best_val_loss"] is None and found["best_checkpoint"] is None
    assert found["val_loss_full"] is None


def test_gradcheck_json_passes_and_fails():
    args = ["gradcheck", "--model", "gru", "--hidden-size", "2", "--num-layers", "1", "--json"]
    found = json.loads(run(*args).stdout)
    assert found["passed"] is True and found["model"] == "gru"
    assert found["max_error"] == max(found["errors"].values()) <= found["tolerance"]
    assert "out.W" in found["errors"]
    failed = json.loads(run(*args, "--tolerance", "1e-300", code=1).stdout)
    assert failed["passed"] is False and failed["tolerance"] == 1e-300
