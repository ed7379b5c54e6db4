"""The page of `rnn export` in a real headless Chromium, driven by Selenium, opened offline:
its greedy text and its score against `rnn sample --argmax` and `rnn eval --batch-size 1`."""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from rnncli import export
from rnncli.checkpoint import load_checkpoint, restore_model
from rnncli.model import Model
from rnncli.sample import generate
from rnncli.vocab import Vocab
from tests.browser import console_errors, needs_chromium, offline_chromium, requested_urls
from tests.helpers import run
from tests.test_export import WORDS, train_tiny, write_corpus

pytestmark = needs_chromium
LENGTH = 300
# The tolerances docs/export.md states: |page score - rnn eval score| in nats per character.
SCORE_TOLERANCE = {"float32": 1e-4, "float16": 1e-4, "int8": 5e-3}
CASES = {"lstm": ("lstm",), "gru": ("gru",), "rnn": ("rnn",), "mingru": ("mingru",),
         "minlstm": ("minlstm",), "lstm-embedding": ("lstm", "--embedding-size", "6"),
         "lstm-mlp": ("lstm", "--mlp-size", "12"),
         "deep": ("mingru", "--num-layers", "3", "--mlp-size", "12", "--residual", "--norm", "rms"),
         "lstm-deep": ("lstm", "--num-layers", "3", "--residual", "--norm", "rms"),
         "conv": ("gru", "--embedding-size", "16", "--conv-size", "3", "--residual"),
         "deep-conv": ("mingru", "--num-layers", "3", "--embedding-size", "16", "--conv-size",
                       "4", "--mlp-size", "12", "--residual", "--norm", "rms")}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("export-browser")
    found = {}
    for name, (cell, *extra) in CASES.items():
        (folder / name).mkdir()
        found[name] = train_tiny(folder / name, cell, *extra)
    return found


@pytest.fixture(scope="module")
def scored_text(tmp_path_factory) -> Path:
    """Text of the corpus's words (a fresh draw) with two characters the models never saw."""
    path = write_corpus(tmp_path_factory.mktemp("text") / "text.txt", size=120, seed=7)
    text = path.read_text(encoding="utf-8")
    path.write_text("é" + text[:200] + "\u00a7" + text[200:], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def browser():
    with offline_chromium(1100, 900) as driver:
        yield driver


def exported(run_dir: Path, precision: str) -> Path:
    out = run_dir.parent / f"{run_dir.name}-{precision}.html"
    if not out.exists():
        run("export", run_dir, "--out", out, "--precision", precision)
    return out


def wait(browser, states=("done", "error"), timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while (state := browser.execute_script("return document.body.dataset.state")) not in states:
        assert time.monotonic() < deadline, f"the page is still {state}"
        time.sleep(0.05)
    return state


def text_of(browser, element_id: str) -> str:
    return browser.execute_script(f"return document.getElementById('{element_id}').textContent")


def open_page(browser, page: Path, **query) -> str:
    browser.get(page.as_uri() + ("?" + urllib.parse.urlencode(query) if query else ""))
    return wait(browser, ("done", "error", "ready"))


def page_score(browser, page: Path, text: str) -> float:
    assert open_page(browser, page, score=text) == "done", text_of(browser, "status")
    return float(browser.execute_script("return document.getElementById('score').dataset.loss"))


def eval_score(run_dir: Path, text_file: Path) -> float:
    result = run("eval", run_dir, text_file, "--batch-size", "1", "--json")
    return json.loads(result.stdout)["loss"]


def greedy(run_dir: Path, prime: str, length: int = LENGTH) -> str:
    result = run("sample", run_dir, "--argmax", "--prime", prime, "--length", length)
    return result.stdout.removesuffix("\n")


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("prime", ["not ", ""])
def test_at_float32_the_greedy_text_is_rnn_sample_s(browser, runs, name, prime):
    page = exported(runs[name], "float32")
    assert open_page(browser, page, prime=prime, length=LENGTH, argmax=1) == "done"
    expected = greedy(runs[name], prime)
    assert len(expected) == len(prime) + LENGTH and len(set(expected[len(prime) :])) > 1
    assert text_of(browser, "output") == expected


@pytest.mark.parametrize("name", CASES)
def test_at_float32_the_score_is_rnn_eval_s(browser, runs, scored_text, name):
    page = exported(runs[name], "float32")
    text = scored_text.read_text(encoding="utf-8")
    assert page_score(browser, page, text) == pytest.approx(
        eval_score(runs[name], scored_text), abs=SCORE_TOLERANCE["float32"]
    )
    detail = text_of(browser, "score-detail")
    assert f"over {len(text) - 3:,} characters" in detail and "left out" in detail


@pytest.mark.parametrize("name", ["lstm", "minlstm", "lstm-mlp", "deep", "deep-conv"])
@pytest.mark.parametrize("precision", ["float16", "int8"])
def test_lower_precisions_stay_within_the_stated_tolerance(
    browser, runs, scored_text, precision, name
):
    run_dir = runs[name]
    page = exported(run_dir, precision)
    text = scored_text.read_text(encoding="utf-8")
    assert page_score(browser, page, text) == pytest.approx(
        eval_score(run_dir, scored_text), abs=SCORE_TOLERANCE[precision]
    )
    # the page computes what its decoded weights give in numpy, to the character
    ckpt = load_checkpoint(run_dir / "best.npz")
    mirror = export.page_model(restore_model(ckpt), precision)
    expected = "To " + "".join(generate(mirror, Vocab(ckpt.vocab), LENGTH, "To ", argmax=True))
    assert open_page(browser, page, prime="To ", length=LENGTH, argmax=1) == "done"
    assert text_of(browser, "output") == expected


def test_a_text_too_short_to_score_says_so(browser, runs):
    page = exported(runs["lstm"], "float32")
    assert open_page(browser, page, score="T") == "done"
    assert text_of(browser, "score") == ""
    assert "no characters to score" in text_of(browser, "score-detail")


def test_a_seed_repeats_its_text_and_a_stop_text_ends_it(browser, runs):
    page = exported(runs["gru"], "float16")
    query = {"prime": "be", "length": 400, "seed": 12, "temperature": 1.5, "top_k": 5}
    texts = []
    for _ in range(2):
        assert open_page(browser, page, **query) == "done"
        texts.append(text_of(browser, "output"))
    assert texts[0] == texts[1] and len(texts[0]) == 402
    assert open_page(browser, page, **(query | {"seed": 13})) == "done"
    assert text_of(browser, "output") != texts[0]
    assert open_page(browser, page, **query, stop=" ") == "done"
    stopped = text_of(browser, "output")
    assert stopped.endswith(" ") and " " not in stopped[2:-1]
    assert "ended at the stop text" in text_of(browser, "status")


def test_bad_hook_values_are_one_message_and_no_text(browser, runs):
    page = exported(runs["rnn"], "int8")
    for query in ({"length": "-3"}, {"prime": "x", "temperature": "0"}, {"seed": "1e99"}):
        assert open_page(browser, page, **query) == "error", query
        assert text_of(browser, "output") == ""
        assert "must be" in text_of(browser, "status")


def test_typing_a_prime_and_clicking_generate_writes_text(browser, runs):
    page = exported(runs["lstm-embedding"], "float16")
    assert open_page(browser, page) == "ready"
    assert "lstm 2x16 · embedding 6" in text_of(browser, "about")
    prime = browser.find_element("id", "prime")
    prime.send_keys("To be, or \U0001f600 ")
    length = browser.find_element("id", "length")
    length.clear()
    length.send_keys("120")
    browser.find_element("id", "generate").click()
    assert wait(browser) == "done"
    text = text_of(browser, "output")
    assert text.startswith("To be, or \U0001f600 ") and len(text) == len("To be, or 😀 ") + 120
    assert "120 characters (reached the length; seed " in text_of(browser, "status")


def test_the_stop_button_stops_a_long_run(browser, runs):
    page = exported(runs["lstm"], "float16")
    assert open_page(browser, page) == "ready"
    length = browser.find_element("id", "length")
    length.clear()
    length.send_keys("1000000")
    browser.find_element("id", "generate").click()
    wait(browser, ("running",))
    time.sleep(0.3)
    browser.find_element("id", "stop").click()
    assert wait(browser) == "done"
    assert 0 < len(text_of(browser, "output")) < 1_000_000
    assert "(stopped; seed " in text_of(browser, "status")


def test_minlstm_gates_far_below_zero_agree_with_numpy(browser, tmp_path):
    """minLSTM's f' = s(f) / (s(f) + s(i)) of pre-activations near -100 needs 1 / (1 + exp(-x)):
    the tanh identity rounds both to 0 there. Past exp's range both are 0, and h stays finite."""
    V, H = 5, 4
    model = Model(V, "minlstm", H, 1, dtype="float64", seed=3)
    b = model.params["rnn.0.b"]
    b[[0, H]] = -800.0  # unit 0: both sigmoids 0
    b[[1, H + 1]] = -100.0, -103.0  # unit 1: f' about 0.95
    model.params["out.W"] *= 8
    vocab = Vocab("abcde")
    page = tmp_path / "extreme.html"
    export.export_page(model, vocab, page, "float32")
    mirror = export.page_model(model, "float32")
    text = "".join(np.random.default_rng(5).choice(list("abcde"), size=80))
    ids = np.array([vocab.encode(text)])
    expected = mirror.forward(ids[:, :-1], ids[:, 1:], mirror.zero_state(1))[0]
    assert np.isfinite(expected)
    assert page_score(browser, page, text) == pytest.approx(expected, abs=1e-9)


def test_no_network_request_and_no_console_error(browser, runs):
    """Runs last in this module: it reads the logs the other tests' pages added to."""
    for precision in export.PRECISIONS:
        open_page(browser, exported(runs["lstm"], precision), prime="To ", length=50)
    requests = requested_urls(browser)
    assert requests and all(url.startswith("file://") for url in requests), requests
    assert console_errors(browser) == []
    policy = browser.execute_script(
        "return document.querySelector('meta[http-equiv=\"Content-Security-Policy\"]').content"
    )
    assert policy.startswith("default-src 'none';")


def test_the_corpus_words_reach_the_pages(runs):
    vocab = load_checkpoint(runs["rnn"] / "best.npz").vocab
    assert set("".join(WORDS)) == set(vocab)
    assert np.all(np.isfinite(load_checkpoint(runs["rnn"] / "best.npz").params["out.W"]))
