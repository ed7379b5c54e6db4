"""The Python API against the commands: ``rnncli.load(...)``'s sample, score, activations and
info give what ``rnn sample``, ``rnn eval --json``, ``rnn report`` and ``rnn info --json`` give,
``rnncli.train`` trains as ``rnn train`` does, and both refuse bad input in the same words."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import click
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnncli
from rnncli import evaluate
from rnncli.analysis import MAX_CHARS, analyse, kinds_of
from rnncli.errors import (
    CheckpointError,
    CommandError,
    ConfigError,
    CorpusError,
    OutputError,
    TrainError,
)
from rnncli.options import ruled
from rnncli.sample import SAMPLING_RULES
from tests.helpers import one_error_line, run, tiny, write_corpus

SETTINGS = dict(
    model="lstm", hidden_size=12, num_layers=2, batch_size=4, seq_length=8, val_fraction=0.1,
    test_fraction=0.1, workers=1, eval_every=10, max_steps=30,
)  # fmt: skip
WORDS = ("the ", "cat ", "sat ", "on ", "a ", "mat. ", "\n", "dog ", "ran ", "“quoted” ")


def as_options(settings: dict) -> list[str]:
    return [
        item for key, value in settings.items() for item in (f"--{key.replace('_', '-')}", value)
    ]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("api") / "corpus.txt", words=WORDS)


@pytest.fixture(scope="module")
def lstm(corpus):
    """An LSTM trained through the API (the same run through the command is compared below)."""
    return rnncli.train(corpus, out=corpus.parent / "lstm", quiet=True, **SETTINGS)


@pytest.fixture(scope="module")
def gru(corpus):
    """A one-layer GRU trained through the command."""
    out = corpus.parent / "gru"
    run("train", corpus, "--out", out, "--max-steps", "20", "--quiet",
        *tiny(model="gru", hidden_size=10, num_layers=1))  # fmt: skip
    return out


@pytest.fixture(params=["lstm", "gru"])
def trained(request, lstm, gru):
    """A run folder and its model loaded through the API, for each cell."""
    folder = lstm.training.run_dir if request.param == "lstm" else gru
    return folder, rnncli.load(folder)


# -- train and load ------------------------------------------------------------------------------


def test_train_trains_as_the_command_does(corpus, lstm):
    out = corpus.parent / "by-command"
    printed = run("train", corpus, "--out", out, "--quiet", "--json", *as_options(SETTINGS))
    by_command = json.loads(printed.stdout)
    assert lstm.training.to_dict() == {
        **by_command,
        **{k: v.replace(str(out), str(lstm.training.run_dir)) for k, v in by_command.items()
           if k in ("run_dir", "last_checkpoint", "best_checkpoint")},
    }  # fmt: skip
    assert (out / "config.yaml").read_text() == (lstm.training.run_dir / "config.yaml").read_text()
    for name in ("best.npz", "last.npz"):
        ours, theirs = rnncli.load(lstm.training.run_dir / name), rnncli.load(out / name)
        assert ours.model.params.keys() == theirs.model.params.keys()
        for key, value in ours.model.params.items():
            np.testing.assert_array_equal(value, theirs.model.params[key])
    assert lstm.training.step == SETTINGS["max_steps"]


def test_train_returns_the_run_folders_model_with_a_readable_repr(lstm):
    assert lstm.path == str(lstm.training.run_dir / "best.npz")
    step, best = lstm.checkpoint.meta["step"], lstm.checkpoint.meta["best_val_loss"]
    assert (
        repr(lstm)
        == f"<rnncli model lstm 2x12, V={len(lstm.vocabulary)}, step {step}, val {best:.4f}>"
    )
    assert re.fullmatch(r"<rnncli model lstm 2x12, V=\d+, step \d+, val \d\.\d{4}>", repr(lstm))


def test_load_resolves_a_run_folder_as_the_commands_do(trained):
    folder, model = trained
    assert model.path == str(folder / "best.npz")
    (folder / "best.npz").rename(folder / "kept.npz")
    try:
        assert rnncli.load(folder).path == str(folder / "last.npz")
    finally:
        (folder / "kept.npz").rename(folder / "best.npz")


def test_info_is_what_info_json_prints(trained):
    folder, model = trained
    assert model.info() == json.loads(run("info", folder, "--json").stdout)


def test_the_api_is_not_imported_by_the_command():
    # `rnn` imports rnncli.train (the training job) and never rnncli.api, so it starts no slower
    code = (
        "import sys, rnncli.cli, rnncli; assert 'rnncli.api' not in sys.modules; "
        "print(rnncli.train)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("<function train")  # the API's, not the submodule


# -- sample --------------------------------------------------------------------------------------

SAMPLE_CASES = [
    dict(seed=1, length=40),
    dict(seed=7, length=60, prime="the cat", temperature=0.6),
    dict(seed=3, length=80, top_k=3, temperature=1.3),
    dict(seed=4, length=80, top_p=0.7, stop=" "),
    dict(seed=5, length=200, top_p=0.9, top_k=5, stop=["\n", "mat."], prime="on a"),
    dict(seed=2, length=50, stop="“", prime="“quo"),  # a stop text that begins in the prime
    dict(length=50, argmax=True, prime="dog"),
    dict(seed=2**63 - 1, length=0, prime="a"),
]


def sample_options(case: dict) -> list[str]:
    options = []
    for key, value in case.items():
        if key == "argmax":
            options.append("--argmax")
        elif key == "stop":
            for text in [value] if isinstance(value, str) else value:
                options += ["--stop", text.replace("\\", "\\\\").replace("\n", "\\n")]
        else:
            options += [f"--{key.replace('_', '-')}", str(value)]
    return options


@pytest.mark.parametrize("case", SAMPLE_CASES, ids=lambda c: ",".join(c))
def test_sample_is_the_text_sample_prints(trained, case):
    folder, model = trained
    text = model.sample(**case)
    assert run("sample", folder, *sample_options(case)).stdout == text + "\n"
    assert text.startswith(case.get("prime", ""))


@settings(
    max_examples=25, deadline=None, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)  # fmt: skip
@given(
    seed=st.integers(0, 2**63 - 1),
    length=st.integers(0, 120),
    temperature=st.floats(0.05, 3.0),
    top_k=st.integers(0, 25),
    top_p=st.floats(0.01, 1.0),
    stop=st.lists(st.text("the cat\n“", min_size=1, max_size=3), max_size=2),
    prime=st.text("the mat\n”", max_size=6),
)
def test_any_sampling_arguments_give_the_text_sample_prints(lstm, **case):
    options = sample_options(case)
    assert run("sample", lstm.path, *options).stdout == lstm.sample(**case) + "\n"


@pytest.mark.parametrize("setting", sorted(SAMPLING_RULES))
@settings(max_examples=60, deadline=None, database=None)
@given(value=st.one_of(st.integers(-(2**64), 2**64), st.floats(allow_nan=True)))
def test_the_option_and_the_api_accept_the_same_values(setting, value):
    rule, option = SAMPLING_RULES[setting], ruled(SAMPLING_RULES[setting])
    try:
        api = rule.check(value)
    except CommandError as err:
        api = str(err)
    try:
        cli = option.convert(str(value), None, None)
    except click.BadParameter as err:
        cli = err.message
    if isinstance(value, float) and rule.whole:
        assert isinstance(api, str)  # a float is no whole number, whatever the text says
    elif isinstance(api, str):  # the same refusal, the value shown as each received it
        assert isinstance(cli, str) and api.split(", got")[0] == cli.split(", got")[0]
    else:
        assert api == cli and type(api) is type(cli)


def test_sample_stops_at_a_stop_text(lstm):
    text = lstm.sample(length=500, seed=11, stop="cat", prime="the ")
    assert text.endswith("cat") or len(text) == 4 + 500


def test_sample_without_a_seed_draws_afresh(lstm):
    assert len({lstm.sample(length=60) for _ in range(4)}) > 1


@pytest.mark.parametrize("bad, option", [
    (dict(temperature=0.0), "--temperature"), (dict(temperature=float("nan")), "--temperature"),
    (dict(top_p=0.0), "--top-p"), (dict(top_p=1.5), "--top-p"), (dict(top_k=-1), "--top-k"),
    (dict(seed=-1), "--seed"), (dict(seed=2**63), "--seed"), (dict(length=-5), "--length"),
])  # fmt: skip
def test_bad_sampling_values_are_refused_in_the_commands_words(lstm, bad, option):
    ((name, value),) = bad.items()
    with pytest.raises(CommandError) as raised:
        lstm.sample(**bad)
    assert str(raised.value).startswith(f"{name}: must be")
    stderr = run("sample", lstm.path, option, str(value), code=2).stderr
    assert str(raised.value).removeprefix(f"{name}: ") in " ".join(stderr.split())


@pytest.mark.parametrize("bad", [
    dict(length=True), dict(length=2.5), dict(top_k="3"), dict(temperature="hot"),
    dict(stop=""), dict(stop=["x", ""]), dict(stop=[1]), dict(prime=3), dict(length=10_000_001),
])  # fmt: skip
def test_bad_sampling_arguments_raise_one_line(lstm, bad):
    with pytest.raises(CommandError) as raised:
        lstm.sample(**bad)
    assert "\n" not in str(raised.value)


def test_a_prime_outside_the_vocabulary_is_refused_as_the_command_refuses_it(lstm):
    with pytest.raises(CommandError) as raised:
        lstm.sample(prime="the Ωcat", length=5)
    stderr = run("sample", lstm.path, "--prime", "the Ωcat", code=2)
    assert one_error_line(stderr, strip=True) == str(raised.value)
    assert lstm.sample(prime="the Ωcat", length=5, seed=1, drop_unknown=True).startswith("the cat")


# -- score ---------------------------------------------------------------------------------------

HELD = "the dog sat on a “mat”.\nthe cat ran\n" * 30 + "a ☃ on Ω\n"


@pytest.mark.parametrize("window", [{}, {"batch_size": 1}, {"batch_size": 7, "seq_length": 13}])
def test_score_is_what_eval_json_prints(tmp_path, trained, window):
    folder, model = trained
    path = tmp_path / "held.txt"
    path.write_text(HELD, encoding="utf-8")
    printed = run("eval", folder, path, "--json", *as_options(window)).stdout
    scored = model.score(HELD, **window)
    assert scored == json.loads(printed)
    assert scored["oov_chars"] == {"☃": 1, "Ω": 1} and scored["chars"] > 0


@pytest.mark.parametrize("options", [{}, {"dynamic_lr": 0.3, "dynamic_segment": 7}])
def test_dynamic_score_is_what_eval_dynamic_json_prints(tmp_path, trained, options):
    folder, model = trained
    path = tmp_path / "held.txt"
    path.write_text(HELD, encoding="utf-8")
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in options.items()]
    printed = json.loads(run("eval", folder, path, "--json", "--dynamic", *flags).stdout)
    scored = model.score(HELD, dynamic=True, **options)
    assert scored == printed and "dynamic" in scored
    assert scored["loss"] != model.score(HELD)["loss"]  # it did adapt
    with pytest.raises(CommandError, match="leave batch_size and seq_length out"):
        model.score(HELD, batch_size=4, dynamic=True)
    with pytest.raises(ConfigError, match="add --dynamic"):
        model.score(HELD, dynamic_lr=0.3)


def test_score_refuses_what_eval_refuses(tmp_path, lstm):
    for text in ("", "☃☃"):
        path = tmp_path / "held.txt"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(CorpusError) as raised:
            lstm.score(text)
        line = one_error_line(run("eval", lstm.path, path, code=1), path)
        assert str(raised.value) == f"the text: {line}"
    empty = tmp_path / "held.txt"
    for bad, option in (
        (dict(batch_size=0), "--batch-size"),
        (dict(seq_length=10_001), "--seq-length"),
    ):
        ((name, value),) = bad.items()
        with pytest.raises(CommandError) as raised:
            lstm.score(HELD, **bad)
        stderr = run("eval", lstm.path, empty, option, str(value), code=2).stderr
        assert str(raised.value).removeprefix(f"{name}: ") in " ".join(stderr.split())
    with pytest.raises(CorpusError, match="not valid Unicode"):
        lstm.score("the \ud800 cat")
    with pytest.raises(CommandError):
        lstm.score(b"the cat")


# -- activations ---------------------------------------------------------------------------------


def test_activations_are_the_numbers_the_report_draws(trained):
    _, model = trained
    text = "the cat sat on a “mat”.\nthe dog ran"
    acts = model.activations(text)
    report = analyse(model.model, model.vocab, text).activations  # what rnn report lays out
    assert acts.keys() == report.keys()
    for key, rows in acts.items():
        np.testing.assert_array_equal(rows, report[key])
    layers, hidden = model.model.num_layers, model.model.hidden_size
    cell = model.info()["model"].split()[0]
    assert set(acts) == {(layer, kind) for layer in range(layers) for kind in kinds_of(cell)}
    assert all(rows.shape == (len(text), hidden) for rows in acts.values())


def test_activations_follow_the_state_the_model_carries(lstm):
    text = "the cat sat"
    acts = lstm.activations(text)
    stepper = lstm.model.stepper(1)
    for i, char_id in enumerate(lstm.vocab.encode(text)):
        stepper.step(np.array([char_id]))
        np.testing.assert_array_equal(acts[1, "h"][i], stepper.state[1, 0, 0])
        np.testing.assert_array_equal(acts[0, "c"][i], stepper.state[0, 1, 0])
    gates = acts[0, "f"]
    assert ((gates > 0) & (gates < 1)).all()


@pytest.mark.parametrize("text, message", [
    ("the Ωcat", "outside the model's vocabulary: 'Ω'"),
    ("a" * (MAX_CHARS + 1), f"at most {MAX_CHARS:,} characters"),
    (None, "expected a string"),
])  # fmt: skip
def test_activations_refuse_what_they_cannot_show(lstm, text, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        lstm.activations(text)


# -- report --------------------------------------------------------------------------------------


def test_report_writes_the_page_the_command_writes(trained, tmp_path):
    folder, model = trained
    settings = dict(chars=40, length=30, seed=5, prime="the ")
    path = model.report(tmp_path / "api.html", **settings)
    run("report", model.path, "--out", tmp_path / "cli.html", *as_options(settings))
    assert path == tmp_path / "api.html"
    assert path.read_bytes() == (tmp_path / "cli.html").read_bytes()
    assert model.report() == folder / "report.html" and (folder / "report.html").stat().st_size


@pytest.mark.parametrize("bad, option", [
    (dict(chars=1), "--chars"), (dict(chars=10**9), "--chars"), (dict(length=-1), "--length"),
    (dict(length=5001), "--length"), (dict(seed=-3), "--seed"),
])  # fmt: skip
def test_bad_report_values_are_refused_in_the_commands_words(lstm, tmp_path, bad, option):
    ((name, value),) = bad.items()
    with pytest.raises(CommandError) as raised:
        lstm.report(tmp_path / "page.html", **bad)
    assert str(raised.value).startswith(f"{name}: must be")
    stderr = run("report", lstm.path, "--out", tmp_path / "page.html", option, value, code=2).stderr
    assert str(raised.value).removeprefix(f"{name}: ") in " ".join(stderr.split())
    assert not (tmp_path / "page.html").exists()


@pytest.mark.parametrize("bad", [dict(chars="40"), dict(length=2.0), dict(prime=7),
                                 dict(prime="\x00 unknown"), dict(out=3)])  # fmt: skip
def test_bad_report_arguments_raise_one_line(lstm, tmp_path, bad):
    with pytest.raises(CommandError) as raised:
        lstm.report(**{"out": tmp_path / "page.html", **bad})
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "page.html").exists()


def test_report_never_writes_over_its_inputs(lstm):
    with pytest.raises(OutputError) as raised:
        lstm.report(lstm.path, chars=20)
    assert str(raised.value).startswith("cannot write the report:")
    assert rnncli.load(lstm.path).path == lstm.path  # the checkpoint is intact


# -- refusals of load and train ------------------------------------------------------------------


def test_load_refuses_what_the_commands_refuse(tmp_path, lstm):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint", encoding="utf-8")
    truncated = tmp_path / "cut.npz"
    truncated.write_bytes((lstm.training.run_dir / "best.npz").read_bytes()[:5000])
    empty = tmp_path / "empty-run"
    empty.mkdir()
    for path in (text, truncated, empty, tmp_path / "missing.npz"):
        with pytest.raises(CheckpointError) as raised:
            rnncli.load(path)
        assert one_error_line(run("info", path, code=1), strip=True) == str(raised.value)
        assert str(raised.value).startswith(str(path))


def test_train_refuses_bad_settings_as_a_config_file_would(tmp_path, corpus):
    out = tmp_path / "run"
    with pytest.raises(
        ConfigError, match=re.escape("unknown key 'hiden_size' (did you mean 'hidden_size'?)")
    ):
        rnncli.train(corpus, out=out, hiden_size=8)
    with pytest.raises(ConfigError, match=r"^rnncli\.train: learning_rate: must be > 0"):
        rnncli.train(corpus, out=out, learning_rate=-1)
    with pytest.raises(
        ConfigError, match=r"^config: unknown key 'optimiser' \(did you mean 'optimizer'\?\)$"
    ):
        rnncli.train(corpus, {"optimiser": "adam"}, out=out)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("hidden_size: -3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        rnncli.train(corpus, bad_yaml, out=out)
    printed = run("train", corpus, "--config", bad_yaml, "--out", out, code=2)
    assert one_error_line(printed, strip=True) == str(raised.value)
    with pytest.raises(ConfigError, match="^--resume continues a run with its own config"):
        rnncli.train(corpus, {"hidden_size": 8}, out=out, resume=True)
    assert not out.exists() or not any(out.glob("*.npz"))


def test_train_takes_a_mapping_of_settings_under_the_keyword_ones(tmp_path, corpus):
    config = {**SETTINGS, "hidden_size": 6, "max_steps": 4, "eval_every": 2}
    model = rnncli.train(corpus, config, out=tmp_path / "run", num_layers=1, quiet=True)
    assert model.info()["model"] == "lstm 1x6"
    assert model.training.step == 4
    with pytest.raises(TrainError, match="already holds a run"):
        rnncli.train(corpus, config, out=tmp_path / "run", quiet=True)


def test_score_refuses_a_window_too_big_for_the_machine_as_eval_does(tmp_path, lstm, monkeypatch):
    monkeypatch.setattr(evaluate, "available_bytes", lambda: 2**30)
    big = dict(batch_size=10_000, seq_length=10_000)
    with pytest.raises(CommandError) as raised:
        lstm.score(HELD, **big)
    path = tmp_path / "held.txt"
    path.write_text(HELD, encoding="utf-8")
    printed = run("eval", lstm.path, path, *as_options(big), code=2)
    assert one_error_line(printed, strip=True) == str(raised.value)
