"""Hostile cases at the newer surfaces: `rnn export` and its page's query hooks, `rnn sweep`
(space files, storage URLs, study names, output folders, crafted study databases), fine-tuning
that grows the vocabulary, `rnn eval --dynamic`, and the Python API.

The rule is the one of docs/trust.md: a command ends with a correct result, or one line on
stderr and a non-zero exit (the API: one exception of ``rnncli.errors``), never a traceback or a
leaked numpy warning, with nothing replaced that it was not asked to write.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import rnncli
from rnncli import errors, export
from rnncli.checkpoint import load_checkpoint
from rnncli.cli import cli
from rnncli.config import FIELD_BY_NAME, ConfigError, load_config
from rnncli.dynamic import DynamicSettings, dynamic_score, dynamic_surprisal
from rnncli.growvocab import new_bias
from rnncli.model import Model
from rnncli.sample import generate
from rnncli.space import Range, parse_space
from rnncli.vocab import Vocab
from tests.browser import needs_chromium, offline_chromium
from tests.crafted import crafted, train_tiny
from tests.helpers import one_error_line, run, tiny, write_corpus

try:
    import optuna
except ImportError:
    optuna = None
needs_optuna = pytest.mark.skipif(optuna is None, reason="the sweep extra is not installed")

ROOT = Path(__file__).resolve().parents[1]
# What the API may raise: the project's own classes, each one line.
PROJECT_ERRORS = (
    errors.ConfigError,
    errors.CorpusError,
    errors.CheckpointError,
    errors.ArchiveError,
    errors.CommandError,
    errors.TrainError,
    errors.OutputError,
)
NOISE = ("rnn: using ", "rnn: note: ", "note: ")


def clean(result, code: int | None = None) -> None:
    """No traceback and no numpy or Python warning in the output; with ``code``, that exit
    status and exactly one error line."""
    assert "Traceback" not in result.output
    assert "Warning" not in result.stderr, result.stderr
    if code is not None:
        assert result.exit_code == code, (result.output, result.exception)
        one_error_line(result, ignore=NOISE)


def invoke(*args):
    """``rnn ARGS`` in-process, whatever its exit status (the test judges it)."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tiny_run64(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("tiny64"), "--dtype", "float64")


def _big_weight(ckpt) -> None:
    ckpt.params["out.b"][0] = 1e300  # finite in float64, beyond float32 and float16
    ckpt.params["out.W"][0, 0] = -1e300


# -- rnn export ------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", export.PRECISIONS)
def test_export_refuses_weights_beyond_the_stored_precision(tiny_run64, tmp_path, precision):
    run_dir = crafted(tiny_run64, tmp_path, _big_weight)
    page = tmp_path / "page.html"
    result = run("export", run_dir, "--out", page, "--precision", precision, code=1)
    clean(result, 1)
    assert "cannot store the weights" in result.stderr
    assert not page.exists()


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_export_page_in_python_refuses_what_float32_cannot_hold(tmp_path, precision):
    model = Model(5, "lstm", 4, 1, dtype="float64", seed=1)
    model.params["rnn.0.Wx"][1, 2] = 1e300
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning would be a silent infinity
        with pytest.raises(export.ExportError, match="cannot store the weights"):
            export.export_page(model, Vocab("abcde"), tmp_path / "p.html", precision)
    assert not (tmp_path / "p.html").exists()


def test_export_of_extreme_but_valid_meta_writes_a_page(tiny_run, tmp_path):
    def extreme(ckpt):
        ckpt.meta["step"] = 2**53 - 1
        ckpt.meta["best_val_loss"] = 1e308

    run_dir = crafted(tiny_run, tmp_path, extreme)
    page = tmp_path / "page.html"
    clean(run("export", run_dir, "--out", page))
    about = re.search(r'"about":(\{[^}]*\})', page.read_text(encoding="utf-8")).group(1)
    assert "9007199254740991" in about and "Infinity" not in about and "NaN" not in about


# -- the page's hooks, in a real headless Chromium -------------------------------------------------

HOSTILE = '<img src=x onerror="window.pwned=1"></script><b>\u2028\u202e'


@pytest.fixture(scope="module")
def browser():
    with offline_chromium(1000, 800) as driver:
        yield driver


def _page_model(chars: str, seed: int) -> tuple[Model, Vocab]:
    model = Model(len(chars), "lstm", 6, 1, dtype="float64", seed=seed)
    model.params["out.W"] *= 6  # peaked enough that argmax differs from the first character
    return model, Vocab(chars)


def _open(browser, page: Path, **query) -> str:
    browser.get(page.as_uri() + "?" + urllib.parse.urlencode(query))
    deadline = time.monotonic() + 20
    while (state := browser.execute_script("return document.body.dataset.state")) not in (
        "done",
        "error",
    ):
        assert time.monotonic() < deadline, state
        time.sleep(0.02)
    return state


def _text(browser, element_id: str) -> str:
    return browser.execute_script(f"return document.getElementById('{element_id}').textContent")


@needs_chromium
@pytest.mark.parametrize(
    "query",
    [
        {"temperature": "1e-320"},
        {"temperature": "1e-320", "top_k": "3"},
        {"temperature": "1e-320", "top_p": "0.5"},
        {"temperature": "5e-324", "top_k": "1000000000"},
        {"top_p": "1e-300"},
    ],
)
def test_a_vanishing_temperature_or_top_p_in_the_page_draws_the_most_likely(
    browser, tmp_path, query
):
    model, vocab = _page_model("abcdefgh", seed=4)
    page = tmp_path / "m.html"
    export.export_page(model, vocab, page, "float32")
    mirror = export.page_model(model, "float32")
    expected = "ab" + "".join(generate(mirror, vocab, 60, "ab", argmax=True))
    assert len(set(expected[2:])) > 1  # not the first character over and over
    assert _open(browser, page, prime="ab", length=60, seed=1, **query) == "done"
    assert _text(browser, "output") == expected


@needs_chromium
def test_hostile_text_in_the_hooks_stays_text(browser, tmp_path):
    chars = "".join(sorted(set(HOSTILE + "abc ")))
    model, vocab = _page_model(chars, seed=2)
    page = tmp_path / "m.html"
    export.export_page(model, vocab, page, "float16")
    extra = "\ud7ff\U0001f600\x00"  # outside the vocabulary: left out, and said so
    assert _open(browser, page, prime=HOSTILE + extra, length=30, seed=3, score=HOSTILE) == "done"
    assert _text(browser, "output").startswith(HOSTILE)
    assert browser.execute_script("return window.pwned === undefined")
    assert browser.execute_script("return document.querySelectorAll('img, main b').length") == 0
    assert "left out of the prime" in _text(browser, "status")
    assert _text(browser, "score") != "" and "NaN" not in _text(browser, "score-detail")


@needs_chromium
@pytest.mark.parametrize("hook", ["prime", "score"])
def test_a_long_prime_or_score_text_in_the_hooks_can_be_stopped(browser, tmp_path, hook):
    """Reading 40,000 characters through a 1x256 LSTM takes the page seconds: it must stay
    live, and the Stop button end it."""
    model = Model(2, "lstm", 256, 1, dtype="float64", seed=0)
    page = tmp_path / "m.html"
    export.export_page(model, Vocab("ab"), page, "float16")
    query = {hook: "ab" * 20_000} | ({"length": 5, "seed": 1} if hook == "prime" else {})
    browser.get(page.as_uri() + "?" + urllib.parse.urlencode(query))
    assert browser.execute_script("return document.body.dataset.state") == "running"
    browser.find_element("id", "stop").click()
    deadline = time.monotonic() + 5
    while browser.execute_script("return document.body.dataset.state") == "running":
        assert time.monotonic() < deadline, "Stop was not heard"
        time.sleep(0.02)
    if hook == "prime":
        assert "0 characters (stopped; seed 1" in _text(browser, "status")
    else:
        assert "stopped after" in _text(browser, "score-detail") and _text(browser, "score") == ""


# -- rnn sweep: space files ------------------------------------------------------------------------

_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=4),
)
_VALUES = st.recursive(
    _LEAF,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["low", "high", "log", "x"]), inner, max_size=4)
    ),
    max_leaves=8,
)
_KEYS = st.sampled_from(sorted(FIELD_BY_NAME)) | st.text(max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES, max_size=3) | _VALUES)
def test_any_space_is_read_or_refused_in_one_line(raw):
    try:
        space = parse_space(raw, "space.yaml")
    except ConfigError as err:
        assert "\n" not in str(err) and str(err).startswith("space.yaml")
        return
    for key, dim in space.items():
        if isinstance(dim, Range):
            assert dim.low < dim.high
            # a range of a whole-number key draws whole numbers, of a real-valued key reals,
            # and a switch (true/false) is no range
            assert FIELD_BY_NAME[key].type in (int, float)
            assert dim.integer == (FIELD_BY_NAME[key].type is int)


@pytest.mark.parametrize(
    "key, ends",
    [("learning_rate", (1, 3)), ("max_time", (1, 60)), ("grad_clip", (1, 100))],
)
def test_a_real_valued_range_with_whole_ends_stays_real_valued(key, ends):
    low, high = ends
    space = parse_space({key: {"low": low, "high": high}}, "space.yaml")
    assert space[key].integer is False


def test_a_switch_is_not_a_range():
    with pytest.raises(ConfigError, match="grow_vocab is not a number"):
        parse_space({"grow_vocab": {"low": False, "high": True}}, "space.yaml")


SWEEP_BASE = {"model": "lstm", "hidden_size": 4, "num_layers": 1, "batch_size": 4,
              "seq_length": 8, "max_steps": 4, "eval_every": 2, "eval_batches": 2,
              "checkpoint_every": 2, "log_every": 2, "workers": 1}  # fmt: skip


@pytest.fixture
def sweep_dir(tmp_path, corpus, monkeypatch) -> Path:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(SWEEP_BASE), encoding="utf-8")
    (tmp_path / "space.yaml").write_text("learning_rate: [0.01, 0.02]\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def sweep(*args, code=0):
    return run("sweep", "corpus.txt", "--space", "space.yaml", "--config", "base.yaml",
               "--trials", "1", *args, code=code)  # fmt: skip


@needs_optuna
def test_a_grid_too_large_to_list_is_refused_at_once(tmp_path, corpus):
    lines = [f"{key}: [{', '.join(str(v) for v in range(1, 1001))}]"
             for key in ("hidden_size", "seed", "max_steps")]  # fmt: skip
    (tmp_path / "space.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "rnncli", "sweep", "corpus.txt", "--space", "space.yaml",
         "--sampler", "grid"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert time.monotonic() - started < 30
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnn: error: ") and "grid" in lines[0]
    assert not (tmp_path / "runs").exists()


# -- rnn sweep: storage URLs, study names, output folders ------------------------------------------


@needs_optuna
@pytest.mark.parametrize(
    "url, words",
    [
        ("sqlite:///study.db?foo=bar", "cannot open the database"),
        ("sqlite:///study.db?timeout=soon", "cannot open the database"),
        ("sqlite://", "in memory"),
        ("sqlite:///:memory:", "in memory"),
        ("sqlite:///corpus.txt", "cannot open the database"),
        ("sqlite:///.", "cannot open the database"),
        ("postgresql+psycopg://u:s3cret@127.0.0.1:1/x", "cannot open the database"),
    ],
)
def test_a_hostile_storage_url_is_one_line(sweep_dir, url, words):
    before = hashlib.sha256((sweep_dir / "corpus.txt").read_bytes()).hexdigest()
    result = sweep("--storage", url, code=1)
    clean(result, 1)
    assert words in result.stderr and "s3cret" not in result.stderr
    assert hashlib.sha256((sweep_dir / "corpus.txt").read_bytes()).hexdigest() == before


@needs_optuna
@pytest.mark.parametrize(
    "args",
    [["--study", "s" * 300], ["--out", "corpus.txt"], ["--out", "base.yaml/inside"]],
)
def test_a_study_name_or_folder_that_cannot_be_made_is_one_line(sweep_dir, args):
    before = digest(sweep_dir)
    clean(sweep(*args, code=1), 1)
    assert digest(sweep_dir) == before


# -- rnn sweep: a crafted study database -----------------------------------------------------------

ESC = "\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b[2J"


def _crafted_study(path: Path, name: str, trials: list[dict]) -> str:
    """A SQLite study at ``path`` holding ``trials`` (create_trial's keywords) as given."""
    storage = f"sqlite:///{path}"
    study = optuna.create_study(study_name=name, storage=storage)
    for spec in trials:
        study.add_trial(optuna.trial.create_trial(**spec))
    return storage


def _complete(value=1.0, **attrs) -> dict:
    dist = optuna.distributions.CategoricalDistribution([ESC, "plain"])
    return {"state": optuna.trial.TrialState.COMPLETE, "value": value,
            "params": {"model": ESC}, "distributions": {"model": dist},
            "user_attrs": attrs}  # fmt: skip


CRAFTED_STUDIES = {
    "escapes": [_complete(run_dir=f"/elsewhere/{ESC}", steps=ESC)],
    "run_dir not a path": [_complete(run_dir=5, steps=[1])],
    "config not a mapping": [_complete(config=5)],
    "config a string": [_complete(config="hidden_size: 5")],
    "config a list": [_complete(config=[["hidden_size", 5]])],
    "config bad values": [_complete(config={"hidden_size": -1, ESC: 1})],
    "steps of any kind": [_complete(steps="abc"), _complete(2.0, steps=10**30),
                          _complete(3.0, steps=True), _complete(4.0, steps=-5)],
    "infinite value": [_complete(math.inf, steps=3)],
    "extreme curves": [
        {**_complete(1.0), "intermediate_values": {0: 1e308, 2**62: -1e308, 5: math.nan}},
        {**_complete(2.0), "intermediate_values": {1: math.inf, 3: 0.5}},
    ],
}  # fmt: skip


@needs_optuna
@pytest.mark.parametrize("case", CRAFTED_STUDIES)
@pytest.mark.parametrize("name", ["s", f"{ESC}\n</svg><script>x</script>"])
def test_summary_of_a_crafted_study_is_escaped_or_one_line(tmp_path, monkeypatch, case, name):
    monkeypatch.chdir(tmp_path)
    storage = _crafted_study(tmp_path / "study.db", name, CRAFTED_STUDIES[case])
    result = invoke(
        "sweep", "--summary", "--study", name, "--storage", storage, "--out", tmp_path / "out"
    )
    assert "Traceback" not in result.output and "\x1b" not in result.output
    if result.exit_code:
        clean(result, result.exit_code)
        return
    svg = (tmp_path / "out" / "trials.svg").read_text(encoding="utf-8")
    ET.fromstring(svg)  # well-formed: the name is text
    assert not re.search(r"nan|inf", svg.split("</style>", 1)[1], re.I)
    best = tmp_path / "out" / "best.yaml"
    if best.exists():  # what it writes loads as a config
        load_config(best)


@needs_optuna
def test_a_crafted_study_cannot_send_a_trial_into_another_folder(sweep_dir, tiny_run):
    victim = sweep_dir / "victim"
    shutil.copytree(tiny_run, victim)
    before = digest(victim)
    dist = optuna.distributions.CategoricalDistribution([0.01, 0.02])
    storage = _crafted_study(
        sweep_dir / "study.db",
        "s",
        [
            # an interrupted trial of "this machine" whose run folder is someone else's
            {"state": optuna.trial.TrialState.FAIL, "params": {"learning_rate": 0.01},
             "distributions": {"learning_rate": dist},
             "user_attrs": {"interrupted": True, "run_dir": str(victim),
                            "host": socket.gethostname()}},
            # a trial that claims to have taken up an unhashable one
            {"state": optuna.trial.TrialState.FAIL, "params": {"learning_rate": 0.02},
             "distributions": {"learning_rate": dist}, "user_attrs": {"resumes": [0]}},
        ],
    )  # fmt: skip
    study = optuna.load_study(study_name="s", storage=storage)
    study.enqueue_trial({"learning_rate": 0.01}, user_attrs={"resume_dir": str(victim)})
    files = ["--space", "space.yaml", "--config", "base.yaml", "--out", "out", "--study", "s"]
    result = invoke("sweep", "corpus.txt", *files, "--trials", 2, "--storage", storage)
    assert "Traceback" not in result.output, result.output
    assert digest(victim) == before  # not resumed, not written
    trained = [t for t in optuna.load_study(study_name="s", storage=storage).get_trials()
               if "run_dir" in t.user_attrs and t.number >= 2]  # fmt: skip
    assert trained and all(Path(t.user_attrs["run_dir"]).parent == (sweep_dir / "out").resolve()
                           for t in trained)  # fmt: skip


# -- fine-tuning that grows the vocabulary ---------------------------------------------------------


def test_init_from_weights_beyond_the_asked_dtype_is_one_line(tiny_run64, tmp_path, corpus):
    source = crafted(tiny_run64, tmp_path, _big_weight)
    out = tmp_path / "ft"
    result = run("train", corpus, "--out", out, "--init-from", source, "--dtype", "float32",
                 *tiny(max_steps=2), code=1)  # fmt: skip
    clean(result, 1)
    assert "float32" in result.stderr
    assert not (out / "last.npz").exists()


def test_characters_a_corpus_adds_are_named_escaped(tiny_run, tmp_path):
    corpus = write_corpus(tmp_path / "c.txt")
    corpus.write_text(corpus.read_text() + ESC + "\u202e\u2028", encoding="utf-8")
    result = run("train", corpus, "--out", tmp_path / "ft", "--init-from", tiny_run,
                 *tiny(max_steps=2), "--quiet")  # fmt: skip
    clean(result)
    assert "\x1b" not in result.output and "\u202e" not in result.output
    assert "\\x1b" in result.stderr


def test_init_from_the_run_it_replaces_with_force(tiny_run, tmp_path, corpus):
    out = tmp_path / "r"
    shutil.copytree(tiny_run, out)
    result = invoke("train", corpus, "--out", out, "--force", "--init-from", out,
                    *tiny(max_steps=2), "--quiet")  # fmt: skip
    clean(result, None if result.exit_code == 0 else result.exit_code)
    load_checkpoint(out / "last.npz")  # whatever happened, the folder holds a loadable run


@pytest.mark.parametrize("extra", [["--resume"], ["--no-grow-vocab"]])
def test_init_from_with_a_clashing_option_is_one_line(tiny_run, tmp_path, extra):
    corpus = write_corpus(tmp_path / "c.txt")
    corpus.write_text(corpus.read_text() + "\u00e9", encoding="utf-8")
    result = invoke("train", corpus, "--out", tmp_path / "ft", "--init-from", tiny_run,
                    *tiny(max_steps=2), *extra)  # fmt: skip
    assert result.exit_code in (1, 2)
    clean(result, result.exit_code)


def test_fine_tuning_from_output_biases_at_float32_s_limits(tiny_run, tmp_path):
    def extremes(ckpt):
        b = ckpt.params["out.b"]
        b[:] = np.where(np.arange(b.size) % 2, 3.4e38, -3.4e38).astype(b.dtype)

    source = crafted(tiny_run, tmp_path, extremes)
    corpus = write_corpus(tmp_path / "c.txt")
    corpus.write_text(corpus.read_text() + "\u00e9Z", encoding="utf-8")
    result = invoke("train", corpus, "--out", tmp_path / "ft", "--init-from", source,
                    *tiny(max_steps=3), "--quiet")  # fmt: skip
    clean(result, None if result.exit_code == 0 else result.exit_code)
    if result.exit_code == 0:
        load_checkpoint(tmp_path / "ft" / "last.npz")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=30),
    st.integers(1, 70000),
)
def test_a_new_character_s_bias_is_finite_in_float32_for_any_finite_biases(biases, added):
    old = np.array(biases, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = np.float32(new_bias(old, old.size + added))
    assert np.isfinite(b) and b <= old.max()


# -- rnn eval --dynamic ----------------------------------------------------------------------------


@pytest.mark.parametrize("rate", ["1e30", "3e38", "1e308"])
@pytest.mark.parametrize("form", [["--json"], ["--per-char", "--json"], ["--per-line"]])
def test_a_rate_that_overflows_the_weights_is_a_result_or_one_line(tiny_run, corpus, rate, form):
    result = invoke("eval", tiny_run, corpus, "--dynamic", "--dynamic-lr", rate,
                    "--dynamic-segment", "200", *form)  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    clean(result, result.exit_code or None)


@pytest.mark.parametrize(
    "option, value",
    [("--dynamic-lr", "nan"), ("--dynamic-lr", "inf"), ("--dynamic-lr", "-1e-300"),
     ("--dynamic-lr", "1e400"), ("--dynamic-segment", "0"), ("--dynamic-segment", "-3"),
     ("--dynamic-segment", "10001"), ("--dynamic-segment", str(2**80))],
)  # fmt: skip
def test_a_bad_dynamic_value_is_a_usage_error(tiny_run, corpus, option, value):
    result = invoke("eval", tiny_run, corpus, "--dynamic", option, value)
    assert result.exit_code == 2
    clean(result)
    # rnn's one line, or click's usage error (its usage and hint lines, then one Error: line)
    lines = [x for x in result.stderr.splitlines() if x and not x.startswith(("Usage:", "Try "))]
    assert len(lines) == 1 and lines[0].startswith(("rnn: error: ", "Error: ")), lines


@pytest.mark.parametrize("text", ["", "t", "\u00e9\u00e9\u00e9", "\n"])
@pytest.mark.parametrize("form", [[], ["--json"], ["--per-char"], ["--per-line"]])
def test_dynamic_evaluation_of_a_text_too_short_to_score(tiny_run, tmp_path, text, form):
    path = tmp_path / "short.txt"
    path.write_text(text, encoding="utf-8")
    result = invoke("eval", tiny_run, path, "--dynamic", *form)
    assert result.exit_code in (0, 1), result.output
    clean(result, result.exit_code or None)
    if result.exit_code == 0 and form == ["--json"]:
        assert "NaN" not in result.stdout


@pytest.mark.parametrize("segment", [math.inf, -math.inf, math.nan, 5.0, "5", True, None, 2**70])
def test_dynamic_settings_take_a_whole_segment_only(segment):
    with pytest.raises(ValueError, match="segment"):
        DynamicSettings(0.1, segment)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.floats(0, 3e38), st.integers(1, 30), st.sampled_from(["float32", "float64"]))
def test_dynamic_evaluation_at_any_finite_rate_leaks_no_warning(lr, segment, dtype):
    model = Model(5, "lstm", 4, 1, dtype=dtype, seed=0)
    ids = np.random.default_rng(0).integers(0, 5, 90)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        total, count = dynamic_score(model, ids, DynamicSettings(lr, segment))
        bits = dynamic_surprisal(model, ids, DynamicSettings(lr, segment))
    assert count == 89 and len(bits) == 90
    assert math.isnan(total) or total >= 0


# -- the Python API --------------------------------------------------------------------------------

ODD = [None, True, -1, 0, 1.5, math.nan, math.inf, -math.inf, "5", 2**63, 10**30, [], b"x",
       {"a": 1}, np.float32(np.nan), np.int64(-3)]  # fmt: skip


@pytest.mark.parametrize(
    "path", [None, 123, 1.5, [], b"missing.npz", "a\0b", "", "\x1b[2J.npz", "/dev/zero"]
)
def test_load_of_anything_is_a_model_or_one_project_error(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PROJECT_ERRORS) as raised:
        rnncli.load(path)
    assert "\n" not in str(raised.value)


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return rnncli.load(tiny_run)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["prime", "length", "temperature", "top_k", "top_p", "stop", "seed",
                     "argmax", "drop_unknown"]),
    st.sampled_from(ODD) | st.text(max_size=3) | st.integers(-5, 50) | st.floats(),
)  # fmt: skip
def test_sample_with_any_argument_is_a_text_or_one_project_error(loaded, name, value):
    assume(not (name == "length" and isinstance(value, int) and value > 50))
    kwargs = {"length": 20, name: value}
    try:
        text = loaded.sample(**kwargs)
    except PROJECT_ERRORS as err:
        assert "\n" not in str(err)
        return
    assert isinstance(text, str)


@pytest.mark.parametrize("name", ["argmax", "drop_unknown"])
@pytest.mark.parametrize("value", ["false", "no", 2, [], None])
def test_a_switch_that_is_not_true_or_false_is_refused(loaded, name, value):
    with pytest.raises(errors.CommandError, match=name):
        loaded.sample(length=5, **{name: value})


def test_stop_none_means_no_stop_text(loaded):
    assert len(loaded.sample(length=15, seed=1, stop=None)) == 15


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["text", "batch_size", "seq_length"]),
    st.sampled_from(ODD) | st.text(max_size=30) | st.integers(-5, 500),
)
def test_score_with_any_argument_is_figures_or_one_project_error(loaded, name, value):
    kwargs = {"text": "the cat sat on a mat. " * 3, name: value}
    try:
        figures = loaded.score(**kwargs)
    except PROJECT_ERRORS as err:
        assert "\n" not in str(err)
        return
    assert math.isfinite(figures["loss"])


@pytest.mark.parametrize("text", ["", "t", "\ud800", "\x1b", None, 5, "the " * 2000])
def test_activations_of_anything_are_arrays_or_one_project_error(loaded, text):
    try:
        acts = loaded.activations(text)
    except PROJECT_ERRORS as err:
        assert "\n" not in str(err)
        return
    assert all(a.shape[0] == len(text) for a in acts.values())


@pytest.mark.parametrize(
    "kwargs",
    [{"corpus": None}, {"corpus": 123}, {"corpus": "a\0b"}, {"corpus": "."},
     {"config": 123}, {"config": ["hidden_size"]}, {"config": {"hidden_size": "x"}},
     {"config": {1: 2}}, {"config": "missing.yaml"}, {"out": 123}, {"out": "a\0b"},
     {"init_from": 123}, {"init_from": "a\0b"}, {"resume": "yes"}, {"force": "no"},
     {"quiet": "no"}, {"hidden_size": True}, {"hidden_size": 10**100}, {"max_steps": -1},
     {"bogus": 1},
     {"learning_rate": math.nan}, {"init_from": "/dev/zero"}],
)  # fmt: skip
def test_train_with_a_hostile_argument_is_one_project_error(tmp_path, monkeypatch, kwargs):
    monkeypatch.chdir(tmp_path)
    write_corpus(tmp_path / "corpus.txt")
    args = {"corpus": "corpus.txt", "out": "run", "quiet": True, "max_steps": 1} | kwargs
    corpus = args.pop("corpus")
    with pytest.raises(PROJECT_ERRORS) as raised:
        rnncli.train(corpus, **args)
    assert "\n" not in str(raised.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt"]  # nothing written


@needs_optuna
def test_more_jobs_than_the_machine_can_hold_are_refused_before_any_starts(sweep_dir):
    result = sweep("--jobs", "100000", "--trials", "100000", code=1)
    clean(result, 1)
    assert "--jobs 100000: at most" in result.stderr
    assert not (sweep_dir / "runs").exists()
