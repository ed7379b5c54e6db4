"""The report's training curves as inline SVG: losses and the learning rate against steps.

Drawn here, not by a library: the page fetches nothing. Long histories are thinned to
``MAX_CHART_POINTS`` points a series, keeping every change of a stepwise learning rate.
"""

from __future__ import annotations

import html
import math

import numpy as np

from ..runlog import History
from ..schedules import SCHEDULES

MAX_CHART_POINTS = 1500


def esc(text) -> str:
    """``text`` escaped for HTML text and attribute values."""
    return html.escape(str(text), quote=True)


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten."""
    raw = (hi - lo) / count
    if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(raw)):
        return [lo]
    if hi <= lo or raw <= max(abs(lo), abs(hi)) * 1e-12:
        return [lo]  # no range to tick at float precision: one tick
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


# -- charts -------------------------------------------------------------------------------------

SMALL, WIDE = (720, 240), (1100, 300)  # chart sizes in SVG units: text keeps its size
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 30, 40


def is_stepwise(schedule: str) -> bool:
    """Whether the schedule named ``schedule`` changes the rate in steps (plateau's halvings),
    rather than at every step (cosine)."""
    return SCHEDULES[schedule].stepwise if schedule in SCHEDULES else True


def thin(records: list[dict], stepwise: bool = True) -> list[dict]:
    """About MAX_CHART_POINTS records, keeping every validation point and, when the schedule
    changes the rate in steps (``stepwise``), every rate change; never more than
    ``3 * MAX_CHART_POINTS`` (a history of nothing but evaluations is thinned evenly), so the
    page's size is bounded whatever the history holds."""
    if len(records) <= MAX_CHART_POINTS:
        return records
    every = math.ceil(len(records) / MAX_CHART_POINTS)
    kept = [
        r
        for i, r in enumerate(records)
        if i % every == 0
        or r.get("val_loss") is not None
        or (stepwise and i and r.get("lr") != records[i - 1].get("lr"))
        or i == len(records) - 1
    ]
    if len(kept) > 3 * MAX_CHART_POINTS:
        every = math.ceil(len(kept) / MAX_CHART_POINTS)
        kept = [*kept[:-1:every], kept[-1]]
    return kept


class Axes:
    """Maps (step, value) to the chart's pixels."""

    def __init__(self, size, x_lo, x_hi, y_lo, y_hi):
        self.w, self.h = size
        pad = (y_hi - y_lo) * 0.05 or abs(y_hi) * 0.1 or 1.0
        self.x_lo, self.x_hi = x_lo, x_hi if x_hi > x_lo else x_lo + 1
        self.y_lo, self.y_hi = y_lo - pad, y_hi + pad

    def x(self, step) -> float:
        return _LEFT + (step - self.x_lo) / (self.x_hi - self.x_lo) * (self.w - _LEFT - _RIGHT)

    def y(self, value) -> float:
        span = self.h - _TOP - _BOTTOM
        return self.h - _BOTTOM - (value - self.y_lo) / (self.y_hi - self.y_lo) * span


def line_path(axes: Axes, points: list[tuple[float, float]]) -> str:
    return " ".join(
        f"{'M' if i == 0 else 'L'}{axes.x(s):.1f},{axes.y(v):.1f}"
        for i, (s, v) in enumerate(points)
    )


def axes_frame(axes: Axes, y_label: str, epochs: list[tuple[float, float]]) -> list[str]:
    """Axes, ticks, grid and labels; the top axis shows epochs at the steps where they fall."""
    bottom, right = axes.h - _BOTTOM, axes.w - _RIGHT
    parts = [
        f'<rect class="plot" x="{_LEFT}" y="{_TOP}" width="{right - _LEFT}" '
        f'height="{bottom - _TOP}"/>'
    ]
    for v in _nice_ticks(axes.y_lo, axes.y_hi):
        y = axes.y(v)
        parts.append(f'<line class="grid" x1="{_LEFT}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="tick" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(v)}</text>'
        )
    for s in _nice_ticks(axes.x_lo, axes.x_hi, 6):
        x = axes.x(s)
        parts.append(
            f'<line class="tickmark" x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 5}"/>'
        )
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{bottom + 18}" '
            f'text-anchor="middle">{_fmt(s)}</text>'
        )
    parts.append(
        f'<text class="label" x="{(_LEFT + right) / 2}" y="{axes.h - 4}" '
        'text-anchor="middle">step</text>'
    )
    parts.append(
        f'<text class="label" x="14" y="{(_TOP + bottom) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(_TOP + bottom) / 2})">{esc(y_label)}</text>'
    )
    if len(epochs) >= 2:
        steps, values = zip(*epochs, strict=True)
        for e in _nice_ticks(values[0], values[-1], 6):
            s = float(np.interp(e, values, steps))
            if axes.x_lo <= s <= axes.x_hi:
                x = axes.x(s)
                parts.append(
                    f'<line class="tickmark" x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP - 5}" '
                    f'y2="{_TOP}"/>'
                )
                parts.append(
                    f'<text class="tick" x="{x:.1f}" y="{_TOP - 8}" '
                    f'text-anchor="middle">{_fmt(e)}</text>'
                )
        parts.append(
            f'<text class="label" x="{right}" y="{_TOP - 20}" text-anchor="end">epoch</text>'
        )
    return parts


def _chart(name, title, y_label, records, series, extra=None, size=SMALL) -> str:
    """One ``<svg data-chart=name>`` of size (w, h) showing ``series``, each (record key, css
    class, label, whether to dot its points); ``extra(axes)`` adds marks."""
    w, h = size
    points = {
        key: [(r["step"], r[key]) for r in records if r.get(key) is not None] for key, *_ in series
    }
    values = [v for pts in points.values() for _, v in pts]
    head = (
        f'<svg data-chart="{name}" viewBox="0 0 {w} {h}" role="img" '
        f'aria-label="{esc(title)}" preserveAspectRatio="xMidYMid meet">'
    )
    if not values:
        return (
            f'{head}<text class="empty" x="{w / 2}" y="{h / 2}" text-anchor="middle">'
            f"no {esc(title.lower())} recorded in this history</text></svg>"
        )
    steps = [r["step"] for r in records]
    axes = Axes(size, min(steps), max(steps), min(values), max(values))
    epochs = [(r["step"], r["epoch"]) for r in records if r.get("epoch") is not None]
    parts = [head, *axes_frame(axes, y_label, epochs)]
    parts += extra(axes) if extra else []
    for key, css, _label, dots in series:
        if points[key]:
            parts.append(f'<path class="line {css}" d="{line_path(axes, points[key])}"/>')
        if dots:
            parts += [
                f'<circle class="dot {css}" cx="{axes.x(s):.1f}" cy="{axes.y(v):.1f}" r="2.5"/>'
                for s, v in points[key]
            ]
    shown = [(css, label) for key, css, label, _dots in series if points[key]]
    legend_x = w - _RIGHT - 10 - sum(34 + 7 * len(label) for _, label in shown)
    for css, label in shown:
        parts.append(
            f'<line class="line {css}" x1="{legend_x}" x2="{legend_x + 18}" '
            f'y1="{_TOP + 12}" y2="{_TOP + 12}"/>'
        )
        parts.append(
            f'<text class="legend" x="{legend_x + 22}" y="{_TOP + 16}">{esc(label)}</text>'
        )
        legend_x += 34 + 7 * len(label)
    parts.append(
        f'<line class="cursor" x1="0" x2="0" y1="{_TOP}" y2="{h - _BOTTOM}" visibility="hidden"/>'
    )
    parts.append(
        f'<g class="geometry" data-x0="{axes.x(axes.x_lo):.2f}" '
        f'data-x1="{axes.x(axes.x_hi):.2f}" data-s0="{axes.x_lo}" '
        f'data-s1="{axes.x_hi}"></g></svg>'
    )
    return "".join(parts)


def _halvings(records: list[dict]):
    """Marks where the learning rate dropped, with the factor."""
    drops = [
        (b["step"], b["lr"] / a["lr"])
        for a, b in zip(records, records[1:], strict=False)
        if a.get("lr") and b.get("lr") is not None and b["lr"] < a["lr"]
    ]

    def draw(axes: Axes) -> list[str]:
        parts = []
        for step, factor in drops:
            x = axes.x(step)
            parts.append(
                f'<line class="halving" x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP}" '
                f'y2="{axes.h - _BOTTOM}"><title>step {step}: rate x{factor:.3g}</title>'
                "</line>"
            )
            parts.append(
                f'<text class="halving-label" x="{x + 3:.1f}" y="{_TOP + 28}">x{factor:.3g}</text>'
            )
        return parts

    return draw, len(drops)


def training_charts(history: History, schedule: str = "plateau") -> str:
    """The loss, rate and speed charts; a ``schedule`` that changes the rate in steps has its
    changes marked, another one (cosine) is named in the rate's caption."""
    stepwise = is_stepwise(schedule)
    records = thin(history.records, stepwise)
    loss = _chart(
        "loss",
        "Loss",
        "loss (nats/char)",
        records,
        [
            ("train_loss", "train", "training loss", False),
            ("val_loss", "val", "validation loss", True),
        ],
        size=WIDE,
    )
    draw, drops = _halvings(records) if stepwise else (None, 0)
    lr = _chart(
        "lr",
        "Learning rate",
        "learning rate",
        records,
        [("lr", "lr", "learning rate", False)],
        draw,
    )
    speed = _chart(
        "speed",
        "Throughput",
        "characters/s",
        records,
        [("chars_per_s", "speed", "training speed", False)],
    )
    halved = {0: "never changed.", 1: "changed once (dashed line)."}.get(
        drops, f"changed {drops} times (dashed lines)."
    )
    if not stepwise:
        halved = f"followed the {esc(schedule)} schedule."
    return (
        f'<figure class="chart">{loss}<figcaption class="readout" data-for="loss">'
        "Hover a chart to read its values.</figcaption></figure>"
        f'<div class="pair"><figure class="chart">{lr}<figcaption class="readout" data-for="lr">'
        f"The rate {halved}</figcaption></figure>"
        f'<figure class="chart">{speed}<figcaption class="readout" data-for="speed">'
        "Training characters per second, between log lines.</figcaption></figure></div>"
    )


# -- activations --------------------------------------------------------------------------------
