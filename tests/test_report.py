"""`rnn report` through click's CliRunner, and the history it charts (rnncli.runlog)."""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from rnncli import runlog
from rnncli.analysis import Analysis, CharacterMap, kinds_of, rank_units, text_features
from rnncli.checkpoint import load_checkpoint, save_checkpoint
from rnncli.report import charts, render
from rnncli.runlog import History
from rnncli.vocab import Vocab
from tests.helpers import TINY as HELPER_TINY
from tests.helpers import one_error_line, run, write_corpus

TINY = [*HELPER_TINY, "--max-steps", "12", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    corpus = write_corpus(
        folder / "corpus.txt",
        words=["the ", "cat ", "sat ", "on ", "a ", "mat. ", "\n", "Dog ", '"ran" ', "(3) "],
    )
    run("train", corpus, "--out", folder / "run", *TINY)
    return folder / "run"


@pytest.fixture
def run_dir(trained, tmp_path) -> Path:
    """A copy of the trained run folder that a test may change."""
    copy = tmp_path / "run"
    copy.mkdir()
    for path in trained.rglob("*"):
        if path.is_file():
            target = copy / path.relative_to(trained)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    return copy


def page_of(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def excerpt_chars(page: str) -> int:
    return len(re.findall(r"data-char-index=", page))


def test_report_writes_one_self_contained_page(trained, tmp_path):
    out = tmp_path / "page.html"
    result = run("report", trained, "--out", out, "--chars", "300")
    assert result.stdout.startswith(f"wrote {out} (")
    page = page_of(out)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    lowered = page.lower()
    for remote in ("http:", "https:", "//cdn", "@import", "url(", "src=", "<link", "<iframe"):
        assert remote not in lowered, remote
    assert 10_000 < len(page.encode()) < 400_000
    assert '<svg data-chart="loss"' in page and '<svg data-chart="lr"' in page
    assert excerpt_chars(page) == 300
    assert re.search(r'data-unit="\d+:(h|c|i|f|o|g):\d+"', page)
    assert '<body data-selected-unit="' in page
    for temperature in ("0.5", "0.8", "1"):
        assert f"temperature {temperature}, seed 1" in page
    assert "lstm 2x8" in page and "corpus.txt" in page


def test_the_character_map_of_an_embedded_model_maps_its_embedding(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("ab ba\n" * 200, encoding="utf-8")
    run("train", corpus, "--out", tmp_path / "run", *TINY, "--embedding-size", "3")
    run("report", tmp_path / "run", "--out", tmp_path / "page.html", "--chars", "50")
    page = page_of(tmp_path / "page.html")
    chart = page.split('<svg data-chart="character-map"', 1)[1].split("</svg>", 1)[0]
    labels = re.findall(r'<text class="char"[^>]*><title>(U\+[0-9A-F]{4})</title>(.*?)</text>',
                        chart)  # fmt: skip
    assert labels == [("U+000A", "↵"), ("U+0020", "␣"), ("U+0061", "a"), ("U+0062", "b")]
    note = re.search(r'id="character-map-variance">(.*?)</p>', page).group(1)
    assert "<code>embed.W</code>" in note and "3 wide" in page
    first, second, both = (float(x) for x in re.findall(r"([\d.]+)%", note))
    assert first >= second >= 0 and both == pytest.approx(first + second, abs=0.11)


def test_default_output_is_in_the_run_folder(run_dir):
    result = run("report", run_dir, "--chars", "50")
    assert (run_dir / "report.html").is_file()
    assert str(run_dir / "report.html") in result.stdout
    assert not list(run_dir.glob(".report.html.*"))  # no temporary left behind


def test_history_comes_from_metrics_jsonl(trained, tmp_path):
    out = tmp_path / "p.html"
    run("report", trained, "--out", out, "--chars", "50")
    page = page_of(out)
    history = json.loads(
        re.search(r'<script type="application/json" id="history">(.*?)</script>', page, re.S).group(
            1
        )
    )
    lines = (trained / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in history] == sorted({r["step"] for r in records})
    # the closing evaluation repeats the last step's line with its validation loss; the chart
    # keeps the fields it draws (not eval_s, val_loss_full, ...)
    closing = {k: v for k, v in {**records[-2], **records[-1]}.items() if k in runlog.FIELDS}
    assert history[-1] == closing and history[-1]["val_loss"] is not None
    assert "metrics.jsonl" in page


def test_a_checkpoint_file_uses_its_own_history(trained, tmp_path):
    out = tmp_path / "p.html"
    run("report", trained / "last.npz", "--out", out, "--chars", "50")
    page = page_of(out)
    assert "the validation history in" in page
    assert "no learning rate recorded" in page  # checkpoints keep no rate history
    assert '<path class="line val"' in page


def forget_corpus_hash(run_dir: Path) -> None:
    """Make the run's checkpoints look written by an rnncli that recorded no corpus hash."""
    for name in ("best.npz", "last.npz"):
        ckpt = load_checkpoint(run_dir / name)
        del ckpt.meta["corpus_sha256"]
        save_checkpoint(run_dir / name, ckpt)


def test_excerpt_is_the_cached_held_out_split_without_a_recorded_hash(run_dir, tmp_path):
    forget_corpus_hash(run_dir)
    out = tmp_path / "p.html"
    run("report", run_dir, "--out", out, "--chars", "40")
    assert "the test split of corpus.txt as the run cached it" in page_of(out)


def test_excerpt_reads_the_corpus_when_its_recorded_hash_matches(run_dir, tmp_path):
    import hashlib

    for name in ("best.npz", "last.npz"):
        ckpt = load_checkpoint(run_dir / name)
        corpus = Path(ckpt.meta["corpus"])
        ckpt.meta["corpus_sha256"] = hashlib.sha256(corpus.read_bytes()).hexdigest()
        save_checkpoint(run_dir / name, ckpt)
    run("report", run_dir, "--out", tmp_path / "a.html", "--chars", "40")
    page = page_of(tmp_path / "a.html")
    assert "the test split of corpus.txt, 40 characters" in page
    text = corpus.read_text(encoding="utf-8")
    test_split = text[len(text) - int(len(text) * 0.1) :]
    test_split = test_split[test_split.index("\n") + 1 :]  # from its first full line
    shown = re.findall(r'data-char-index="\d+"(?: class="nl")?>(.*?)</span>', page)
    assert "".join("\n" if s == "↵" else s.replace("&quot;", '"') for s in shown) == test_split[:40]


def test_excerpt_falls_back_to_a_sample_without_corpus_or_cache(run_dir, tmp_path):
    forget_corpus_hash(run_dir)
    for path in (run_dir / "cache").iterdir():
        path.unlink()
    result = run("report", run_dir, "--out", tmp_path / "a.html", "--chars", "60")
    page = page_of(tmp_path / "a.html")
    assert "a sample the model wrote (temperature 0.8, seed 0)" in page
    assert excerpt_chars(page) == 60
    assert result.exit_code == 0


def test_text_file_characters_outside_the_vocabulary_are_dropped_and_said(trained, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the cat ZZ sat €\n", encoding="utf-8")
    result = run("report", trained, "--out", tmp_path / "a.html", "--text", text)
    notes = [line for line in result.stderr.splitlines() if line.startswith("rnn: note:")]
    assert len(notes) == 1 and "dropped 3 characters outside the vocabulary" in notes[0]
    assert "'Z' x2" in notes[0] and "'€' x1" in notes[0]
    assert excerpt_chars(page_of(tmp_path / "a.html")) == len("the cat  sat \n")


# -- hostile input -------------------------------------------------------------------------------


def test_corrupt_metrics_lines_are_skipped_with_one_warning(run_dir, tmp_path):
    metrics = run_dir / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    lines[1:1] = ["{not json", '{"step": -3}', "\x00\xff garbage"]
    metrics.write_text("\n".join(lines) + '\n{"step": 99, "epo')  # + a line being written
    result = run("report", run_dir, "--out", tmp_path / "a.html", "--chars", "30")
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert "skipped 3 lines that are not metrics records (line 2, 3, 4)" in warnings[0]


def test_unreadable_metrics_fall_back_to_the_checkpoint_with_one_warning(run_dir, tmp_path):
    (run_dir / "metrics.jsonl").unlink()
    (run_dir / "metrics.jsonl").mkdir()
    result = run("report", run_dir, "--out", tmp_path / "a.html", "--chars", "30")
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "not a regular file" in warnings[0]
    assert "the validation history in" in page_of(tmp_path / "a.html")


def test_a_folder_without_checkpoint_is_one_error(tmp_path):
    result = run("report", tmp_path, code=1)
    assert "a folder without best.npz or last.npz" in one_error_line(
        result, ignore=("rnn: using ",)
    )


@pytest.mark.parametrize("chars", ["0", "1", "-5", "5001", str(10**12)])
def test_chars_out_of_range_is_a_usage_error(trained, tmp_path, chars):
    result = run("report", trained, "--out", tmp_path / "a.html", "--chars", chars, code=2)
    line = one_error_line(result)  # refused before the checkpoint is read
    assert "chars: must be a whole number at least 2 and at most 5,000" in line
    assert not (tmp_path / "a.html").exists()


@pytest.mark.parametrize("seed", ["-1", str(2**63), "x"])
def test_a_seed_out_of_range_is_a_usage_error(trained, tmp_path, seed):
    result = run("report", trained, "--out", tmp_path / "a.html", "--seed", seed, code=2)
    assert "--seed" in result.stderr and not (tmp_path / "a.html").exists()


def test_unwritable_out_is_one_error(trained, tmp_path):
    result = run("report", trained, "--out", tmp_path / "no" / "such" / "a.html", code=1)
    assert "cannot write the report" in one_error_line(result, ignore=("rnn: using ",))
    (tmp_path / "locked").mkdir(mode=0o500)
    if not os.access(tmp_path / "locked", os.W_OK):  # root may write anywhere
        result = run("report", trained, "--out", tmp_path / "locked" / "a.html", code=1)
        assert "cannot write the report (Permission denied)" in one_error_line(
            result, ignore=("rnn: using ",)
        )
    (tmp_path / "locked").rmdir()
    (tmp_path / "folder").mkdir()
    result = run("report", trained, "--out", tmp_path / "folder", "--chars", "20", code=1)
    assert "cannot write the report" in one_error_line(result, ignore=("rnn: using ",))
    assert list((tmp_path / "folder").iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]  # no temporary left behind


def test_undecodable_text_file_is_one_error(trained, tmp_path):
    text = tmp_path / "t.bin"
    text.write_bytes(b"the cat \xff\xfe sat")
    result = run("report", trained, "--out", tmp_path / "a.html", "--text", text, code=1)
    line = one_error_line(result, ignore=("rnn: using ",))
    assert "not valid utf-8 at byte offset 8 (byte 0xff" in line  # the first bad byte
    result = run("report", trained, "--text", tmp_path / "missing.txt", code=1)
    assert "missing.txt: cannot read" in one_error_line(result, ignore=("rnn: using ",))
    os.mkfifo(tmp_path / "fifo")  # opening it would block until a writer came
    result = run("report", trained, "--text", tmp_path / "fifo", code=1)
    assert "fifo: not a regular file" in one_error_line(result, ignore=("rnn: using ",))


def test_prime_outside_the_vocabulary_is_a_usage_error(trained, tmp_path):
    result = run("report", trained, "--out", tmp_path / "a.html", "--prime", "€", code=2)
    assert "--prime" in one_error_line(result, ignore=("rnn: using ",))


# -- the history ---------------------------------------------------------------------------------


def write_lines(path: Path, records: list[dict], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return path


def test_a_resumed_run_reads_as_one_curve(tmp_path):
    first = [{"step": s, "train_loss": 3.0 - s / 100, "lr": 0.01} for s in (2, 4, 6, 8)]
    # resumed from the checkpoint at step 4: steps 6 and 8 are logged again, then it goes on
    second = [{"step": s, "train_loss": 2.0 - s / 100, "lr": 0.005} for s in (6, 8, 10)]
    history = runlog.read_metrics(write_lines(tmp_path / "m.jsonl", first + second))
    assert [r["step"] for r in history.records] == [2, 4, 6, 8, 10]
    assert history.records[2]["lr"] == 0.005 and history.skipped_lines == []
    assert history.records[1]["train_loss"] == first[1]["train_loss"]


def test_an_unfinished_last_line_is_left_out_silently(tmp_path):
    history = runlog.read_metrics(write_lines(tmp_path / "m.jsonl", [{"step": 1}], '{"step": 2'))
    assert [r["step"] for r in history.records] == [1] and history.skipped_lines == []


def test_overlong_and_non_finite_lines_are_skipped(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(
        '{"step": 1}\n' + "x" * (runlog.MAX_LINE * 3) + '\n{"step": 2, "lr": NaN}\n{"step": 3}\n'
    )
    history = runlog.read_metrics(path)
    assert [r["step"] for r in history.records] == [1, 3]
    assert history.skipped_lines == [2, 3]


def test_metrics_that_are_not_a_regular_small_file_are_refused(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="not a regular file"):
        runlog.read_metrics(tmp_path)
    monkeypatch.setattr(runlog, "MAX_BYTES", 10)
    with pytest.raises(ValueError, match="more than a metrics log"):
        runlog.read_metrics(write_lines(tmp_path / "m.jsonl", [{"step": 1}, {"step": 2}]))


def test_page_size_of_a_2x512_lstm_on_2000_characters_is_under_2_mb():
    # The writer lays out what it is given: activations of a 2x512 LSTM's shape and spread.
    rng = np.random.default_rng(0)
    vocab = Vocab("".join(chr(c) for c in range(32, 127)) + "\n")
    N, H = 2000, 512
    text = "".join(rng.choice(list(vocab.chars), size=N))
    acts = {
        (layer, kind): np.tanh(rng.normal(size=(N, H))).astype(np.float32)
        for layer in (0, 1)
        for kind in kinds_of("lstm")
    }
    features = text_features(text)
    top = np.argsort(-rng.random((N, len(vocab))), axis=1)[:, :5]
    result = Analysis(
        text,
        acts,
        rng.random(N) * 8,
        top,
        np.full((N, 5), 0.1),
        features,
        rank_units(acts, features),
        kinds_of("lstm"),
    )
    records = [
        {
            "step": s,
            "epoch": s / 100,
            "train_loss": 2.0,
            "val_loss": None,
            "lr": 1e-3,
            "chars_per_s": 1e4,
            "elapsed": s,
        }
        for s in range(1, 5000)
    ]
    cmap = CharacterMap(rng.standard_normal((len(vocab), 2)), (0.5, 0.25), "rnn.0.Wx")
    page = render("t", [], vocab.chars, {}, History(records, "m"), [], result, "x", cmap)
    size = len(page.encode())
    assert 1_000_000 < size < 2_000_000, size
    assert excerpt_chars(page) == N
    assert "of the 6,144 units are stored" in page


def test_rate_halvings_are_marked_and_long_histories_thinned():
    records = [
        {
            "step": s,
            "epoch": s / 10,
            "train_loss": 3 - s / 1e4,
            "val_loss": None,
            "lr": 0.01 if s < 3000 else 0.005 if s < 7000 else 0.0025,
            "chars_per_s": 9.0,
            "elapsed": s,
        }
        for s in range(1, 10_001)
    ]
    records[5000]["val_loss"] = 2.5
    svg = charts.training_charts(History(records, "m"))
    assert svg.count('<line class="halving"') == 2 and "x0.5" in svg
    assert "The rate changed 2 times" in svg
    thinned = charts.thin(records)
    assert len(thinned) <= charts.MAX_CHART_POINTS + 10
    kept = {r["step"] for r in thinned}
    assert {3000, 5001, 7000, 10_000} <= kept  # the rate changes, the validation point, the end


def test_excerpt_comes_from_the_runs_cache_of_the_recorded_corpus_when_the_file_is_gone(
    tmp_path, trained
):
    copy = tmp_path / "elsewhere"  # the run handed on without its corpus
    for path in trained.rglob("*"):
        if path.is_file():
            target = copy / path.relative_to(trained)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    for name in ("best.npz", "last.npz"):
        ckpt = load_checkpoint(copy / name)
        ckpt.meta["corpus"] = str(tmp_path / "gone.txt")
        save_checkpoint(copy / name, ckpt)
    run("report", copy, "--out", tmp_path / "a.html", "--chars", "40")
    assert "the test split of gone.txt, 40 characters" in page_of(tmp_path / "a.html")


def test_the_samples_are_those_rnn_sample_draws_with_the_same_seed(trained, tmp_path):
    run("report", trained, "--out", tmp_path / "a.html", "--chars", "20", "--length", "60",
        "--seed", "7", "--prime", "the")  # fmt: skip
    page = page_of(tmp_path / "a.html")
    shown = re.findall(r"<figure class=\"sample\">.*?<pre>(.*?)</pre>", page, flags=re.S)
    for temperature, text in zip((0.5, 0.8, 1.0), shown, strict=True):
        drawn = run("sample", trained, "--length", "60", "--seed", "7", "--prime", "the",
                    "--temperature", temperature).stdout  # fmt: skip
        assert html.unescape(text) == drawn[:-1]  # sample ends its text with a newline


def test_the_page_assets_are_package_resources():
    # read the way an installed wheel reads them, not from the source tree
    from importlib import resources

    assets = resources.files("rnncli.report").joinpath("assets")
    page = assets.joinpath("page.html").read_text(encoding="utf-8")
    assert "{css}" in page and "{script}" in page and "{data}" in page
    assert ".facts{" in assets.joinpath("report.css").read_text(encoding="utf-8")
    assert "select(" in assets.joinpath("report.js").read_text(encoding="utf-8")
