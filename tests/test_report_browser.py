"""The report page in a real headless Chromium, driven by Selenium, opened from file:// offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import console_errors, needs_chromium, offline_chromium, requested_urls
from tests.helpers import run, write_corpus

pytestmark = needs_chromium
CHARS = 400


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("browser")
    corpus = write_corpus(
        folder / "corpus.txt",
        seed=1,
        words=["To ", "be, ", "or ", "not ", "(to be) ", '"that" ', "is ", "the\n", "QUESTION: "],
        size=1200,
    )
    opts = ["--hidden-size", "8", "--batch-size", "4", "--seq-length", "8", "--max-steps", "10"]
    opts += ["--eval-every", "4", "--log-every", "2", "--quiet"]
    run("train", corpus, "--out", folder / "run", *opts)
    run("report", folder / "run", "--out", folder / "report.html", "--chars", CHARS)
    return folder / "report.html"


@pytest.fixture(scope="module")
def browser(page):
    with offline_chromium(1280, 900) as driver:
        driver.get(page.as_uri())
        yield driver


def test_both_charts_are_drawn(browser):
    for name in ("loss", "lr"):
        drawn = browser.execute_script(
            "const svg = document.querySelector(`svg[data-chart='${arguments[0]}']`);"
            "const box = svg.getBoundingClientRect();"
            "const lines = Array.from(svg.querySelectorAll('path.line'));"
            "return [box.width, box.height, lines.map(p => p.getTotalLength()),"
            " svg.querySelectorAll('text.tick').length];",
            name,
        )
        width, height, lengths, ticks = drawn
        assert width > 300 and height > 100, (name, drawn)
        assert lengths and min(lengths) > 10, (name, drawn)
        assert ticks >= 4, (name, drawn)
    readout = browser.execute_script(
        "const svg = document.querySelector(\"svg[data-chart='loss']\");"
        "const box = svg.getBoundingClientRect();"
        "svg.dispatchEvent(new PointerEvent('pointermove', {clientX: box.right - 30,"
        " clientY: box.top + box.height / 2, bubbles: true}));"
        "return document.querySelector(\".readout[data-for='loss']\").textContent;"
    )
    assert readout.startswith("step 10 · epoch ") and "train " in readout, readout


def test_every_excerpt_character_is_drawn_once(browser):
    sizes = browser.execute_script(
        "return Array.from(document.querySelectorAll('[data-char-index]')).map(s => {"
        " const r = s.getBoundingClientRect(); return [Number(s.dataset.charIndex), r.width,"
        " r.height]; });"
    )
    assert [i for i, _, _ in sizes] == list(range(CHARS))
    assert all(w > 0 and h > 0 for _, w, h in sizes)


def colours(browser) -> list[str]:
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('[data-char-index]'))"
        ".map(s => getComputedStyle(s).backgroundColor);"
    )


def test_selecting_a_unit_recolours_the_text(browser):
    before = colours(browser)
    assert browser.find_element("tag name", "body").get_attribute("data-selected-unit") == ""
    buttons = browser.find_elements("css selector", "[data-unit]")
    assert buttons
    button = buttons[-1]
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()
    unit = button.get_attribute("data-unit")
    assert browser.find_element("tag name", "body").get_attribute("data-selected-unit") == unit
    after = colours(browser)
    assert sum(a != b for a, b in zip(before, after, strict=True)) > CHARS // 2
    assert len(set(after)) > 2  # the unit's activation varies over the text
    assert "selected" in button.get_attribute("class")


def test_hovering_a_character_shows_five_guesses(browser):
    from selenium.webdriver.common.action_chains import ActionChains

    span = browser.find_element("css selector", '[data-char-index="25"]')
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", span)
    ActionChains(browser).move_to_element(span).perform()
    guesses = browser.find_elements("css selector", "#guesses li.guess")
    assert len(guesses) == 5
    shares = [float(g.find_element("css selector", ".p").text.rstrip("%")) for g in guesses]
    assert shares == sorted(shares, reverse=True) and sum(shares) <= 100.5
    assert "character 25" in browser.find_element("id", "probe-head").text


def test_the_character_map_draws_one_label_per_character(browser):
    drawn = browser.execute_script(
        "const svg = document.querySelector(\"svg[data-chart='character-map']\");"
        "const box = svg.getBoundingClientRect();"
        "const labels = Array.from(svg.querySelectorAll('text.char')).map(t => {"
        " const r = t.getBoundingClientRect();"
        " return [t.textContent.slice(t.querySelector('title').textContent.length), r.width,"
        " r.height, r.left >= box.left - 1 && r.right <= box.right + 1"
        " && r.top >= box.top - 1 && r.bottom <= box.bottom + 1]; });"
        "const vocab = Array.from(document.querySelectorAll('.vocab .vc')).map(v => v.textContent);"
        "return [box.width, box.height, labels, vocab,"
        " document.getElementById('character-map-variance').textContent];"
    )
    width, height, labels, vocab, note = drawn
    assert width > 300 and height > 200, drawn
    assert [text for text, *_ in labels] == vocab  # one per character, in vocabulary order
    assert "␣" in vocab and "↵" in vocab  # the space and the newline, shown visibly
    assert all(w > 0 and h > 0 and inside for _, w, h, inside in labels), labels
    assert "rnn.0.Wx" in note and "The horizontal axis explains" in note, note


def test_narrow_screens_need_no_sideways_scrolling(browser):
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 400, "height": 800, "deviceScaleFactor": 1, "mobile": True},
    )
    try:
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 400
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_no_network_request_and_no_console_error(browser):
    """Runs last in this module: it reads the logs the other tests' actions added to."""
    requests = requested_urls(browser)
    assert requests and all(url.startswith("file://") for url in requests), requests
    assert console_errors(browser) == []
