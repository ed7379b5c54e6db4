"""Logs from strangers (``metrics.jsonl``, a checkpoint's evaluation history): every line read by
the depth-checked JSON reader, every number range-checked, memory bounded while reading, and
the report page's size bounded whatever the history holds."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnncli import runlog
from rnncli.report.charts import MAX_CHART_POINTS, thin, training_charts
from rnncli.runlog import History, read_metrics
from tests.crafted import crafted, train_tiny
from tests.helpers import run

USING = ("rnn: using ",)
NUMBER = re.compile(r"(?<![\w.])-?(?:nan|inf)(?![\w])", re.IGNORECASE)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("logs"))


def log_of(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


HOSTILE_LINES = {
    "deep brackets": "[" * 60_000,
    "deep object": '{"a":' * 30_000 + "1" + "}" * 30_000,
    "huge step": '{"step": ' + "1" * 400 + ', "train_loss": 1.0}',
    "step beyond 2**53": '{"step": 9007199254740993, "train_loss": 1.0}',
    "value near float max": '{"step": 3, "train_loss": 1.7e308}',
    "huge integer value": '{"step": 3, "val_loss": ' + "9" * 400 + "}",
    "NaN": '{"step": 3, "train_loss": NaN}',
    "negative step": '{"step": -1, "train_loss": 1.0}',
    "bool step": '{"step": true, "train_loss": 1.0}',
    "lone surrogate": '{"step": 3, "train_loss": 1.0, "note": "\\ud800"}',
    "not utf-8": '{"step": 3, "train_loss": 1.0, "x": "\xff"}',
}


@pytest.mark.parametrize("name", HOSTILE_LINES)
def test_a_hostile_line_is_skipped_and_counted(tmp_path, name):
    good = ['{"step": 1, "train_loss": 2.0}', '{"step": 2, "train_loss": 1.5}']
    path = log_of(tmp_path, [good[0], HOSTILE_LINES[name], good[1]])
    if name == "not utf-8":
        path.write_bytes(path.read_bytes().replace("\xff".encode(), b"\xff"))
    history = read_metrics(path)
    assert [r["step"] for r in history.records] == [1, 2]
    assert history.skipped_lines == [2]


@pytest.mark.parametrize("name", ["deep brackets", "huge step", "value near float max"])
def test_report_on_a_hostile_log_is_a_page_and_a_warning(trained, tmp_path, name):
    folder = crafted(trained, tmp_path, lambda c: None)
    with open(folder / "metrics.jsonl", "a") as f:
        f.write(HOSTILE_LINES[name] + "\n")
    out = tmp_path / "r.html"
    result = run("report", folder, "--chars", "20", "--length", "5", "--out", out)
    assert "skipped 1 lines" in result.stderr
    assert not NUMBER.search(training_charts(read_metrics(folder / "metrics.jsonl")))


@given(
    values=st.lists(
        st.floats(-runlog.MAX_VALUE, runlog.MAX_VALUE, allow_nan=False), min_size=1, max_size=40
    ),
    steps=st.lists(st.integers(0, 2**53 - 1), min_size=1, max_size=40),
)
@settings(max_examples=60, deadline=None)
def test_charts_of_any_accepted_values_have_finite_coordinates(values, steps):
    records = []
    for step, value in zip(sorted(steps), values, strict=False):
        record = {"step": step, "epoch": None, "train_loss": value, "val_loss": value,
                  "lr": abs(value), "chars_per_s": abs(value), "elapsed": None}  # fmt: skip
        runlog._append(records, record)
    svg = training_charts(History(records=records))
    assert not NUMBER.search(svg)
    for number in re.findall(r' (?:x|y|x1|x2|y1|y2|cx|cy)="([^"]+)"', svg):
        assert math.isfinite(float(number))


@given(
    count=st.integers(0, 30_000),
    val_every=st.integers(1, 5),
    lr_changes=st.booleans(),
)
@settings(max_examples=25, deadline=None)
def test_thinning_has_a_hard_cap(count, val_every, lr_changes):
    records = [
        {"step": i, "val_loss": 1.0 if i % val_every == 0 else None,
         "lr": (1.0 / (i + 1)) if lr_changes else 1.0}
        for i in range(count)
    ]  # fmt: skip
    kept = thin(records)
    assert len(kept) <= 3 * MAX_CHART_POINTS + 1
    if records:
        assert kept[-1] is records[-1] and kept[0] is records[0]


def test_reading_a_long_log_keeps_bounded_records(tmp_path, monkeypatch):
    monkeypatch.setattr(runlog, "MAX_RECORDS", 100)
    lines = [json.dumps({"step": i, "val_loss": 1.0 + i % 7}) for i in range(20_000)]
    history = read_metrics(log_of(tmp_path, lines))
    assert len(history.records) <= 2 * 100 + 1
    assert history.records[-1]["step"] == 19_999 and history.records[0]["step"] == 0
    steps = [r["step"] for r in history.records]
    assert steps == sorted(set(steps))


def test_a_resume_still_replaces_later_records_after_thinning(tmp_path, monkeypatch):
    monkeypatch.setattr(runlog, "MAX_RECORDS", 10)
    lines = [json.dumps({"step": i, "train_loss": 1.0}) for i in range(100)]
    lines += [json.dumps({"step": 50, "train_loss": 2.0})]  # a resume from step 50
    history = read_metrics(log_of(tmp_path, lines))
    assert history.records[-1] == {**history.records[-1], "step": 50, "train_loss": 2.0}


def test_a_checkpoint_with_a_huge_evaluation_history_makes_a_small_page(trained, tmp_path):
    evaluations = [{"step": i, "val_loss": 2.0 + (i % 13) / 10} for i in range(45_000)]
    folder = crafted(trained, tmp_path, lambda c: c.meta.update(evaluations=evaluations))
    (folder / "metrics.jsonl").unlink()  # the history then comes from the checkpoint
    out = tmp_path / "r.html"
    run("report", folder, "--chars", "20", "--length", "5", "--out", out)
    assert out.stat().st_size < 3_000_000
