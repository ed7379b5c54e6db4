"""Config definition, YAML and command-line precedence, validation messages, YAML safety."""

import json

import click
import pytest
import yaml
from click.testing import CliRunner

from rnncli.config import (
    FIELDS,
    Config,
    ConfigError,
    click_options,
    config_reference_markdown,
    dump_yaml,
    load_config,
    overrides_from_kwargs,
)

CHOICES = "rnn, lstm, gru, mingru, minlstm"  # the cell types, in the registry's order


def _yaml(tmp_path, text, name="x.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path, text):
    """The one-line message load_config gives for a YAML file holding ``text``."""
    path = _yaml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    return message.removeprefix(f"{path}: ")


@click.command()
@click.option("--config", "config_path", default=None)
@click_options
def _train(config_path, **kwargs):
    click.echo(json.dumps(load_config(config_path, overrides_from_kwargs(kwargs)).to_dict()))


def test_defaults_are_valid_and_match_fields():
    cfg = load_config()
    assert cfg == Config()
    assert list(cfg.to_dict()) == [f.name for f in FIELDS]
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert (cfg.model, cfg.hidden_size, cfg.learning_rate, cfg.encoding) == (
        "lstm",
        128,
        2e-3,
        "utf-8",
    )


def test_yaml_overrides_defaults(tmp_path):
    cfg = load_config(_yaml(tmp_path, "model: gru\nhidden_size: 64\nlearning_rate: 0.01\n"))
    assert (cfg.model, cfg.hidden_size, cfg.learning_rate) == ("gru", 64, 0.01)
    assert cfg.num_layers == 2


def test_empty_yaml_means_no_overrides(tmp_path):
    assert load_config(_yaml(tmp_path, "# nothing here\n")) == Config()


def test_overrides_beat_yaml(tmp_path):
    path = _yaml(tmp_path, "hidden_size: 64\nseq_length: 10\n")
    cfg = load_config(path, {"hidden_size": 32})
    assert (cfg.hidden_size, cfg.seq_length) == (32, 10)


def test_cli_options_beat_yaml(tmp_path):
    path = _yaml(tmp_path, "hidden_size: 64\nmodel: gru\ndropout: 0.25\n")
    args = ["--config", str(path), "--hidden-size", "32", "--learning-rate", "1e-3"]
    result = CliRunner().invoke(_train, args)
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    assert (d["hidden_size"], d["learning_rate"]) == (32, 1e-3)  # command line
    assert (d["model"], d["dropout"]) == ("gru", 0.25)  # YAML
    assert d["num_layers"] == 2  # default


def test_every_key_is_a_cli_option_with_help_and_default():
    result = CliRunner().invoke(_train, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # undo click's line wrapping
    for f in FIELDS:
        assert f"{f.option} " in text
        assert f"{f.help} {f.rule[0].upper()}{f.rule[1:]}. [default: {f.default}]" in text
    assert "--model [rnn|lstm|gru|mingru|minlstm] Recurrent cell type." in text


def test_cli_value_errors_name_the_option():
    result = CliRunner().invoke(_train, ["--learning-rate", "-1"])
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception) == "--learning-rate: must be > 0, got -1.0"
    result = CliRunner().invoke(_train, ["--model", "lsmt"])
    message = str(result.exception)
    assert message == f"--model: must be one of {CHOICES}, got 'lsmt' (did you mean 'lstm'?)"


def test_cli_type_errors_are_usage_errors():
    result = CliRunner().invoke(_train, ["--hidden-size", "big"])
    assert result.exit_code == 2 and "--hidden-size" in result.output


def test_overrides_from_kwargs_keeps_given_config_keys():
    kwargs = {"hidden_size": 8, "model": None, "config_path": "x.yaml"}
    assert overrides_from_kwargs(kwargs) == {"hidden_size": 8}


@pytest.mark.parametrize(
    "text, message",
    [
        ("hidden_size: 0", "hidden_size: must be >= 1, got 0"),
        ("hidden_size: -5", "hidden_size: must be >= 1, got -5"),
        ("num_layers: 0", "num_layers: must be >= 1, got 0"),
        ("seq_length: 0", "seq_length: must be >= 1, got 0"),
        ("batch_size: 0", "batch_size: must be >= 1, got 0"),
        ("learning_rate: 0", "learning_rate: must be > 0, got 0.0"),
        ("learning_rate: -1.0", "learning_rate: must be > 0, got -1.0"),
        ("dropout: 1", "dropout: must be in [0, 1), got 1.0"),
        ("dropout: -0.1", "dropout: must be in [0, 1), got -0.1"),
        ("lr_decay: 1.0", "lr_decay: must be in (0, 1), got 1.0"),
        ("lr_decay: 0", "lr_decay: must be in (0, 1), got 0.0"),
        ("eps: 0", "eps: must be > 0, got 0.0"),
        ("grad_clip: -1", "grad_clip: must be >= 0, got -1.0"),
        ("max_steps: -1", "max_steps: must be >= 0, got -1"),
        ("max_vocab: 1", "max_vocab: must be >= 2, got 1"),
        ("model: lsmt", f"model: must be one of {CHOICES}, got 'lsmt' (did you mean 'lstm'?)"),
        ("model: LSTM", f"model: must be one of {CHOICES}, got 'LSTM' (did you mean 'lstm'?)"),
        ("model: transformer", f"model: must be one of {CHOICES}, got 'transformer'"),
        ("optimizer: adamw", "optimizer: must be one of sgd, adagrad, rmsprop, adam, got 'adamw'"),
        ("dtype: float16", "dtype: must be one of float32, float64, got 'float16'"),
        ("grad_clip_mode: nrom", "grad_clip_mode: must be one of value, norm, got 'nrom'"),
        ("encoding: utf-9", "encoding: must be a text encoding known to Python, got 'utf-9'"),
        ("encoding: hex", "encoding: must be a text encoding known to Python, got 'hex'"),
        ("val_fraction: 0.5\ntest_fraction: 0.5", "val_fraction + test_fraction: must be < 1"),
    ],
)
def test_invalid_values(tmp_path, text, message):
    assert _error(tmp_path, text + "\n").startswith(message)


def test_did_you_mean_for_choice_values(tmp_path):
    assert _error(tmp_path, "grad_clip_mode: nrom\n").endswith("(did you mean 'norm'?)")


@pytest.mark.parametrize(
    "text, message",
    [
        ("hidden_size: true", "hidden_size: expected an integer, got True"),
        ("learning_rate: yes", "learning_rate: expected a finite number, got True"),
        ("hidden_size: 12.5", "hidden_size: expected an integer, got 12.5"),
        ("hidden_size: '64'", "hidden_size: expected an integer, got '64'"),
        ("learning_rate: fast", "learning_rate: expected a finite number, got 'fast'"),
        ("learning_rate: .nan", "learning_rate: expected a finite number, got nan"),
        ("max_time: .inf", "max_time: expected a finite number, got inf"),
        ("model: 3", "model: expected a string, got 3"),
        ("model:", "model: expected a string, got None"),
        ("hidden_size: [1, 2]", "hidden_size: expected an integer, got [1, 2]"),
    ],
)
def test_wrong_types(tmp_path, text, message):
    assert _error(tmp_path, text + "\n") == message


def test_float_fields_accept_yaml_1_1_strings_and_ints(tmp_path):
    cfg = load_config(_yaml(tmp_path, "learning_rate: 1e-3\neps: 1E-6\nmax_time: 60\n"))
    assert (cfg.learning_rate, cfg.eps, cfg.max_time) == (1e-3, 1e-6, 60.0)
    assert isinstance(cfg.max_time, float)


def test_unknown_key_with_did_you_mean(tmp_path):
    path = _yaml(tmp_path, "hiden_size: 64\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: unknown key 'hiden_size' (did you mean 'hidden_size'?)"
    assert _error(tmp_path, "hidden-size: 64\n").endswith("(did you mean 'hidden_size'?)")
    assert _error(tmp_path, "colour: blue\n") == "unknown key 'colour'"


def test_unknown_override_key():
    with pytest.raises(ConfigError, match=r"unknown key 'learning_rat' \(did you mean"):
        load_config(None, {"learning_rat": 0.1})


def test_python_object_tag_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    text = f"hidden_size: 64\nmodel: !!python/object/apply:os.system ['touch {marker}']\n"
    message = _error(tmp_path, text)
    assert message.startswith("line 2: unsupported YAML")
    assert "python/object/apply:os.system" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("- 1\n- 2\n", "expected a mapping of key: value pairs, got a list"),
        ("just text\n", "expected a mapping of key: value pairs, got a str"),
        ("a: [1\nb: 2\n", "line 2: invalid YAML (expected ',' or ']', but got ':')"),
        ("a: 1\n\tb: 2\n", "line 2: invalid YAML"),
    ],
)
def test_malformed_yaml(tmp_path, text, message):
    assert _error(tmp_path, text).startswith(message)


def test_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("model: l\xe9stm\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)


def test_dump_yaml_round_trip(tmp_path):
    cfg = load_config(None, {"model": "gru", "learning_rate": 1e-4, "eps": 1e-10, "max_time": 3.5})
    path = tmp_path / "run" / "config.yaml"
    path.parent.mkdir()
    dump_yaml(cfg, path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# ")
    assert [line.split(":")[0] for line in text.splitlines()[1:]] == [f.name for f in FIELDS]
    assert load_config(path) == cfg
    assert yaml.safe_load(text) == cfg.to_dict()


def test_from_dict_round_trip_and_validation():
    cfg = load_config(None, {"hidden_size": 16, "dropout": 0.5})
    d = json.loads(json.dumps(cfg.to_dict()))  # as stored in a checkpoint
    assert Config.from_dict(d) == cfg
    assert Config.from_dict({"hidden_size": 16}).hidden_size == 16  # missing keys: defaults
    with pytest.raises(ConfigError, match="^ckpt.npz: dropout: must be in"):
        Config.from_dict({**d, "dropout": 2.0}, "ckpt.npz")
    with pytest.raises(ConfigError, match="expected a mapping"):
        Config.from_dict(["model"], "ckpt.npz")


def test_from_dict_with_overrides_names_options():
    d = load_config(None, {"hidden_size": 16}).to_dict()
    cfg = Config.from_dict(d, "ckpt.npz", {"learning_rate": 0.5})
    assert (cfg.hidden_size, cfg.learning_rate) == (16, 0.5)
    with pytest.raises(ConfigError, match="^--learning-rate: must be > 0, got 0.0$"):
        Config.from_dict(d, "ckpt.npz", {"learning_rate": 0.0})


def test_reference_markdown_lists_every_key():
    table = config_reference_markdown()
    lines = table.splitlines()
    assert lines[0] == "| key | default | meaning |"
    assert len(lines) == 2 + len(FIELDS)
    for f, line in zip(FIELDS, lines[2:], strict=True):
        assert line.startswith(f"| `{f.name}` | `{f.default}` | {f.help}")
    assert "Must be > 0." in table


def test_forget_bias_is_applied_or_refused_never_recorded_and_ignored(tmp_path):
    assert load_config(overrides={"forget_bias": 1.5}).forget_bias == 1.5  # lstm has one
    assert load_config(overrides={"model": "gru", "forget_bias": 0}).forget_bias == 0.0
    message = _error(tmp_path, "model: rnn\nforget_bias: 1\n")
    assert message == "forget_bias: must be 0 for rnn, which has no forget gate, got 1.0"
    result = CliRunner().invoke(_train, ["--model", "gru", "--forget-bias", "0.5"])
    assert result.exit_code != 0 and "forget_bias: must be 0 for gru" in str(result.exception)


def test_embedding_size_is_a_count_from_zero(tmp_path):
    assert Config().embedding_size == 0
    assert load_config(_yaml(tmp_path, "embedding_size: 16\n")).embedding_size == 16
    assert _error(tmp_path, "embedding_size: -1\n") == "embedding_size: must be >= 0, got -1"
    assert _error(tmp_path, "embedding_size: 1.5\n").startswith("embedding_size: expected an")
