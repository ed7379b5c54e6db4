"""The benchmarks' SVG line charts (tests/bench/curves.py): no PyTorch, no run."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import pytest

from tests.bench import curves

SVG = "{http://www.w3.org/2000/svg}"


def parse(text: str) -> ET.Element:
    return ET.fromstring(text)


def polyline_points(element: ET.Element) -> list[tuple[float, float]]:
    return [tuple(map(float, pair.split(","))) for pair in element.get("points").split()]


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (1.31, 2.2, [1.2, 1.4, 1.6, 1.8, 2.0, 2.2]),
        (250, 1500, [0, 500, 1000, 1500]),
        (0, 1, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (-3, 7, [-4, -2, 0, 2, 4, 6, 8]),
    ],
)
def test_nice_ticks_are_round_and_cover_the_range(lo, hi, expected):
    assert curves.nice_ticks(lo, hi) == pytest.approx(expected)


def test_nice_ticks_of_a_single_value_make_a_range_around_it():
    ticks = curves.nice_ticks(2.0, 2.0)
    assert ticks[0] < 2.0 < ticks[-1]


@pytest.mark.parametrize(("lo", "hi"), [(math.nan, 1.0), (0.0, math.inf), (2.0, 1.0)])
def test_nice_ticks_reject_a_range_that_is_not_one(lo, hi):
    with pytest.raises(ValueError):
        curves.nice_ticks(lo, hi)


def chart(*series: curves.Series) -> ET.Element:
    return parse(curves.svg_chart(list(series), title="t <&>", x_label="steps", y_label="loss"))


def test_each_series_is_a_polyline_with_a_dot_per_point_and_a_legend_entry():
    a = curves.Series("rnncli (seed 0)", [(250, 2.0), (500, 1.8), (750, 1.7)])
    b = curves.Series("torch & co", [(250, 1.9), (500, 1.75)], dashed=True)
    root = chart(a, b)
    lines = root.findall(f"{SVG}polyline")
    assert [len(polyline_points(p)) for p in lines] == [3, 2]
    assert len(root.findall(f"{SVG}circle")) == 5
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "rnncli (seed 0)" in texts and "torch & co" in texts and "t <&>" in texts
    assert lines[1].get("stroke-dasharray") and not lines[0].get("stroke-dasharray")
    assert lines[0].get("stroke") != lines[1].get("stroke")


def test_points_map_inside_the_plot_with_larger_values_higher_up():
    root = chart(curves.Series("a", [(0, 1.5), (100, 2.5), (50, 2.0)]))
    (x0, y0), (x1, y1), (x2, y2) = polyline_points(root.find(f"{SVG}polyline"))
    width, height = float(root.get("width")), float(root.get("height"))
    for x, y in ((x0, y0), (x1, y1), (x2, y2)):
        assert 0 < x < width and 0 < y < height
    assert x0 < x2 < x1  # x grows to the right
    assert y1 < y2 < y0  # a larger y is drawn higher (smaller pixel row)
    assert x2 == pytest.approx((x0 + x1) / 2) and y2 == pytest.approx((y0 + y1) / 2)


def test_points_that_are_not_finite_are_left_out():
    root = chart(curves.Series("a", [(0, 2.0), (1, math.nan), (2, math.inf), (3, 1.0)]))
    assert len(polyline_points(root.find(f"{SVG}polyline"))) == 2


def test_a_chart_without_a_finite_point_is_refused():
    with pytest.raises(ValueError, match="no finite points"):
        curves.svg_chart([curves.Series("a", [(0, math.nan)])], title="", x_label="", y_label="")


def test_write_atomic_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "chart.svg"
    target.write_text("old", encoding="utf-8")
    curves.write_atomic(target, "<svg/>\n")
    assert target.read_text(encoding="utf-8") == "<svg/>\n"
    assert [p.name for p in tmp_path.iterdir()] == ["chart.svg"]


def test_write_atomic_into_a_missing_folder_fails_and_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        curves.write_atomic(tmp_path / "missing" / "chart.svg", "<svg/>\n")
    assert list(tmp_path.iterdir()) == []


def test_curve_table_has_a_row_per_curve_and_the_difference_from_the_reference():
    results = [
        {"learner": "rnncli", "seed": 0, "points": [[250, 2.2], [500, 2.0]]},
        {"learner": "torch", "seed": 0, "points": [[250, 2.1], [500, 1.9]]},
        {"learner": "torch", "seed": 1, "points": [[250, 2.15]]},
    ]
    lines = curves.curve_table(results).splitlines()
    assert lines[0] == "| learner | 250 | 500 | vs rnncli, same seed |"
    assert lines[2] == "| rnncli (seed 0) | 2.2000 | 2.0000 |  |"
    assert lines[3] == "| torch (seed 0) | 2.1000 | 1.9000 | -0.1000 |"
    assert lines[4] == "| torch (seed 1) | 2.1500 |  |  |"  # no reference with seed 1
    assert len(lines) == 5


def test_a_series_may_choose_its_colour_and_a_thin_line():
    root = chart(
        curves.Series("a", [(0, 1.0), (1, 2.0)], colour="#123456", thin=True),
        curves.Series("b", [(0, 1.5), (1, 2.5)]),
    )
    a, b = root.findall(f"{SVG}polyline")
    assert (a.get("stroke"), a.get("stroke-width")) == ("#123456", "1")
    assert (b.get("stroke"), b.get("stroke-width")) == (curves.PALETTE[1], "2")


def test_timed_curves_draw_a_runs_logged_losses_against_its_seconds(tmp_path):
    from tests.bench import timed_curves
    from tests.helpers import TINY, run, write_corpus

    corpus = write_corpus(tmp_path / "corpus.txt")
    run("train", corpus, "--out", tmp_path / "r", "--max-steps", "10", "--quiet", *TINY)
    records = [json.loads(line) for line in (tmp_path / "r/metrics.jsonl").read_text().splitlines()]
    train, val = timed_curves.run_series("tiny", tmp_path / "r", "#000000")
    assert train.points == [(r["elapsed"], r["train_loss"]) for r in records if r["train_loss"]]
    assert val.points == [(r["elapsed"], r["val_loss"]) for r in records if r["val_loss"]]
    assert len(train.points) >= 2 and val.points and val.dashed and not train.dashed
    svg = parse(curves.svg_chart([train, val], title="t", x_label="s", y_label="nats"))
    assert len(svg.findall(f".//{SVG}polyline")) == 2
