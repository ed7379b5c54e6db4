"""The HTML page of ``rnn report``: lays out the numbers it is given, computes none of them.

One self-contained file: inline CSS, inline SVG charts drawn here, a little plain JavaScript
for hovering and choosing a unit, and the excerpt's data as JSON. Nothing is fetched: no
fonts, scripts, images or links to anywhere.

Activations are stored 4 bits per value (15 levels over the kind's range, two per byte,
base64): the page only colours and reads them out, and a 2x512 LSTM on 2,000 characters has
over 12 million of them. Units are stored in order of interest (the ranked ones, then every h,
then c, then the gates) until ``ACTIVATION_BUDGET`` bytes; the page says how many made it.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .analysis import FEATURES, Analysis, CharacterMap, Kind, Unit
from .fileio import atomic_write
from .runlog import History
from .schedules import SCHEDULES

ACTIVATION_BUDGET = 1_500_000  # bytes of base64 activation data in one page
LEVELS = 15  # odd, so that the middle of a range (0 of -1..1) is a level
MAX_CHART_POINTS = 1500


@dataclass
class Sample:
    temperature: float
    seed: int
    text: str


# -- small formatting helpers -------------------------------------------------------------------

_VISIBLE = {"\n": "↵", " ": "␣", "\t": "⇥", "\r": "␍"}


def visible(ch: str) -> str:
    """A character as it can be seen: whitespace and control characters as symbols."""
    if ch in _VISIBLE:
        return _VISIBLE[ch]
    if unicodedata.category(ch)[0] in "CZ":
        return f"U+{ord(ch):04X}"
    return ch


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / count
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


def _stepwise(schedule: str) -> bool:
    """Whether the schedule named ``schedule`` changes the rate in steps (plateau's halvings),
    rather than at every step (cosine)."""
    return SCHEDULES[schedule].stepwise if schedule in SCHEDULES else True


def _thin(records: list[dict], stepwise: bool = True) -> list[dict]:
    """At most about MAX_CHART_POINTS records, keeping every validation point and, when the
    schedule changes the rate in steps (``stepwise``), every rate change."""
    if len(records) <= MAX_CHART_POINTS:
        return records
    every = math.ceil(len(records) / MAX_CHART_POINTS)
    return [
        r
        for i, r in enumerate(records)
        if i % every == 0
        or r.get("val_loss") is not None
        or (stepwise and i and r.get("lr") != records[i - 1].get("lr"))
        or i == len(records) - 1
    ]


class _Axes:
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


def _path(axes: _Axes, points: list[tuple[float, float]]) -> str:
    return " ".join(
        f"{'M' if i == 0 else 'L'}{axes.x(s):.1f},{axes.y(v):.1f}"
        for i, (s, v) in enumerate(points)
    )


def _frame(axes: _Axes, y_label: str, epochs: list[tuple[float, float]]) -> list[str]:
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
        f'transform="rotate(-90 14 {(_TOP + bottom) / 2})">{_esc(y_label)}</text>'
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
        f'aria-label="{_esc(title)}" preserveAspectRatio="xMidYMid meet">'
    )
    if not values:
        return (
            f'{head}<text class="empty" x="{w / 2}" y="{h / 2}" text-anchor="middle">'
            f"no {_esc(title.lower())} recorded in this history</text></svg>"
        )
    steps = [r["step"] for r in records]
    axes = _Axes(size, min(steps), max(steps), min(values), max(values))
    epochs = [(r["step"], r["epoch"]) for r in records if r.get("epoch") is not None]
    parts = [head, *_frame(axes, y_label, epochs)]
    parts += extra(axes) if extra else []
    for key, css, _label, dots in series:
        if points[key]:
            parts.append(f'<path class="line {css}" d="{_path(axes, points[key])}"/>')
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
            f'<text class="legend" x="{legend_x + 22}" y="{_TOP + 16}">{_esc(label)}</text>'
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

    def draw(axes: _Axes) -> list[str]:
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


def _charts(history: History, schedule: str = "plateau") -> str:
    """The loss, rate and speed charts; a ``schedule`` that changes the rate in steps has its
    changes marked, another one (cosine) is named in the rate's caption."""
    stepwise = _stepwise(schedule)
    records = _thin(history.records, stepwise)
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
        halved = f"followed the {_esc(schedule)} schedule."
    return (
        f'<figure class="chart">{loss}<figcaption class="readout" data-for="loss">'
        "Hover a chart to read its values.</figcaption></figure>"
        f'<div class="pair"><figure class="chart">{lr}<figcaption class="readout" data-for="lr">'
        f"The rate {halved}</figcaption></figure>"
        f'<figure class="chart">{speed}<figcaption class="readout" data-for="speed">'
        "Training characters per second, between log lines.</figcaption></figure></div>"
    )


# -- activations --------------------------------------------------------------------------------


def display_range(kind: Kind) -> tuple[float, float]:
    """The range a kind is coloured over; an unbounded one (the cell state c) as its tanh."""
    return (-1.0, 1.0) if kind.low is None else (kind.low, kind.high)


def quantise(values: np.ndarray, kind: Kind) -> str:
    """``values`` (N,) as ``LEVELS`` levels over the kind's range, two per byte, base64."""
    lo, hi = display_range(kind)
    v = np.tanh(values) if kind.low is None else values
    levels = np.clip(np.rint((v - lo) / (hi - lo) * (LEVELS - 1)), 0, LEVELS - 1).astype(np.uint8)
    if levels.size % 2:
        levels = np.append(levels, 0)
    packed = (levels[0::2] << 4) | levels[1::2]
    return base64.b64encode(packed.tobytes()).decode("ascii")


def _stored_units(analysis: Analysis) -> list[Unit]:
    """Units in order of interest, as many as ``ACTIVATION_BUDGET`` holds."""
    per_unit = 4 * math.ceil(math.ceil(len(analysis.text) / 2) / 3) + 16  # base64 + JSON key
    ranked = [Unit(u.layer, u.kind, u.index) for units in analysis.ranking.values() for u in units]
    order = {"h": 0, "c": 1}
    blocks = sorted(analysis.activations, key=lambda lk: (order.get(lk[1], 2), -lk[0]))
    rest = [
        Unit(layer, kind, j)
        for layer, kind in blocks
        for j in range(analysis.activations[layer, kind].shape[1])
    ]
    chosen = list(dict.fromkeys(ranked + rest))
    return chosen[: max(ACTIVATION_BUDGET // per_unit, len(set(ranked)))]


def _page_data(analysis: Analysis, vocab: str) -> dict:
    units = _stored_units(analysis)
    blocks = {}
    for layer, kind in analysis.activations:
        total = analysis.activations[layer, kind].shape[1]
        stored = sorted(u.index for u in units if (u.layer, u.kind) == (layer, kind))
        lo, hi = display_range(analysis.kinds[kind])
        unbounded = analysis.kinds[kind].low is None
        label = analysis.kinds[kind].label + (f" (coloured as tanh {kind})" if unbounded else "")
        blocks[f"{layer}:{kind}"] = {
            "layer": layer,
            "kind": kind,
            "label": label,
            "lo": lo,
            "hi": hi,
            "total": total,
            "stored": stored,
        }
    surprisal = [None if math.isnan(s) else round(float(s), 2) for s in analysis.surprisal]
    acts = analysis.activations
    return {
        "vocab": vocab,
        "levels": LEVELS,
        "surprisal": surprisal,
        "top_ids": analysis.top_ids.tolist(),
        "top_permille": np.rint(analysis.top_probs * 1000).astype(int).tolist(),
        "blocks": blocks,
        "units": {
            u.key: quantise(acts[u.layer, u.kind][:, u.index], analysis.kinds[u.kind])
            for u in units
        },
    }


def _excerpt(text: str) -> str:
    """Every character once, as a span; a newline as a visible mark and then a line break."""
    out = []
    for i, ch in enumerate(text):
        shown = _VISIBLE["\n"] if ch == "\n" else _esc(ch if ch in " \t" else visible(ch))
        css = ' class="nl"' if ch == "\n" else ""
        out.append(
            f'<span data-char-index="{i}"{css}>{shown}</span>' + ("\n" if ch == "\n" else "")
        )
    return "".join(out)


def _ranking(analysis: Analysis) -> str:
    rows = []
    for name, units in analysis.ranking.items():
        buttons = "".join(
            f'<button type="button" class="unit" data-unit="{u.key}" '
            f'title="{_esc(analysis.kinds[u.kind].label)}, layer {u.layer}, unit {u.index}">'
            f'<span class="uname">L{u.layer} {u.kind} {u.index}</span>'
            f'<span class="r">{u.r:+.2f}</span></button>'
            for u in units
        )
        rows.append(
            f'<tr><th scope="row" title="{_esc(FEATURES[name].description)}">'
            f"{_esc(name)}<small>{_esc(FEATURES[name].description)}</small></th>"
            f"<td>{buttons}</td></tr>"
        )
    constant = [name for name in analysis.features if name not in analysis.ranking]
    note = (
        f'<p class="note">Constant over this excerpt, so not ranked: {_esc(", ".join(constant))}.'
        "</p>"
        if constant
        else ""
    )
    return f'<table class="ranking">{"".join(rows)}</table>{note}'


# -- the page ------------------------------------------------------------------------------------


def _summary(rows: list[tuple[str, str]], vocab: str, config: dict) -> str:
    cells = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in rows)
    chars = "".join(
        f'<span class="vc" title="U+{ord(c):04X}">{_esc(visible(c))}</span>' for c in vocab
    )
    conf = "\n".join(f"{k}: {v}" for k, v in config.items())
    return (
        f'<dl class="facts">{cells}</dl>'
        f'<p class="vocab-title">Vocabulary ({len(vocab)} characters)</p>'
        f'<p class="vocab">{chars}</p>'
        f"<details><summary>Resolved configuration</summary><pre>{_esc(conf)}</pre></details>"
    )


def _samples(samples: list[Sample]) -> str:
    return "".join(
        f'<figure class="sample"><figcaption>temperature {s.temperature:g}, seed {s.seed}'
        f"</figcaption><pre>{_esc(s.text)}</pre></figure>"
        for s in samples
    )


MAP_SIZE = (640, 440)  # the character map's SVG, in its own pixels
_MAP_MARGIN = 24


def _character_map(cmap: CharacterMap, vocab: str) -> str:
    """The characters drawn at their coordinates in ``cmap`` (one scale for both axes, so that
    distances read true), and under the picture what the axes hold."""
    w, h = MAP_SIZE
    lo, hi = cmap.xy.min(axis=0), cmap.xy.max(axis=0)
    span = np.maximum(hi - lo, 1e-12)
    scale = min((w - 2 * _MAP_MARGIN) / span[0], (h - 2 * _MAP_MARGIN) / span[1])
    mid = (lo + hi) / 2
    labels = "".join(
        f'<text class="char" x="{w / 2 + (x - mid[0]) * scale:.1f}" '
        f'y="{h / 2 - (y - mid[1]) * scale:.1f}" text-anchor="middle" dominant-baseline="central"'
        f"><title>U+{ord(c):04X}</title>{_esc(visible(c))}</text>"
        for c, (x, y) in zip(vocab, cmap.xy, strict=True)
    )
    first, second = cmap.explained
    return (
        f'<svg data-chart="character-map" class="character-map" viewBox="0 0 {w} {h}" '
        f'role="img" aria-label="character map" preserveAspectRatio="xMidYMid meet">'
        f'<rect class="plot" x="0" y="0" width="{w}" height="{h}"/>{labels}</svg>'
        f'<p class="note" id="character-map-variance">Each character at its learnt input vector '
        f"(its row of <code>{_esc(cmap.source)}</code>), projected onto the two directions in "
        f"which those vectors vary most (principal components). The horizontal axis explains "
        f"{first:.1%} of their variance, the vertical {second:.1%}: together "
        f"{first + second:.1%}. Characters drawn close together enter the network alike; "
        f"␣ is the space, ↵ the newline.</p>"
    )


def render(
    title: str,
    facts: list[tuple[str, str]],
    vocab: str,
    config: dict,
    history: History,
    samples: list[Sample],
    analysis: Analysis,
    excerpt_source: str,
    character_map: CharacterMap,
) -> str:
    """The whole page as one string."""
    data = _page_data(analysis, vocab)
    stored = len(data["units"])
    total = sum(b["total"] for b in data["blocks"].values())
    kept = (
        "every unit's activations are stored"
        if stored == total
        else f"{stored:,} of the {total:,} units are stored (the ranked ones first, then h, c and "
        "the gates) to keep the page small"
    )
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    schedule = config.get("lr_schedule", "plateau")
    history_json = json.dumps(_thin(history.records, _stepwise(schedule)), separators=(",", ":"))
    history_json = history_json.replace("</", "<\\/")
    return _TEMPLATE.format(
        title=_esc(title),
        summary=_summary(facts, vocab, config),
        history_source=_esc(history.source),
        charts=_charts(history, schedule),
        samples=_samples(samples),
        character_map=_character_map(character_map, vocab),
        excerpt_source=_esc(excerpt_source),
        excerpt=_excerpt(analysis.text),
        ranking=_ranking(analysis),
        kept=_esc(kept),
        data=payload,
        history=history_json,
        css=_CSS,
        script=_SCRIPT,
    )


def write_page(path: str | os.PathLike, page: str) -> None:
    """Write ``page`` to ``path`` atomically: a reader never sees half a page."""
    with atomic_write(path, text=True) as f:
        f.write(page)


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style></head>
<body data-selected-unit="">
<header><h1>{title}</h1><p>A report by <code>rnn report</code>: the run, its training curves,
samples, and what the units of the network do on a piece of text.</p></header>
<main>
<section id="run"><h2>The run</h2>{summary}</section>
<section id="curves"><h2>Training curves</h2>
<p class="note">From {history_source}. Steps on the horizontal axes, epochs along the top.</p>
{charts}</section>
<section id="samples"><h2>Samples</h2>{samples}</section>
<section id="characters"><h2>Character map</h2>
<div class="chart map">{character_map}</div></section>
<section id="inside"><h2>Inside the network</h2>
<p class="note">The text is {excerpt_source}. Each character's background shows the chosen
quantity <em>after the model has read that character</em>; by default its surprisal, how many
bits the model needed for it (-log<sub>2</sub> of the probability it gave it). Hover or tap a
character for the model's top 5 guesses of the next one.</p>
<div class="controls">
<label>Colour by <select id="block"><option value="">surprisal (bits)</option></select></label>
<label>unit <select id="unit" disabled></select></label>
<span id="legend" class="legend-bar"></span>
</div>
<div class="inside-grid">
<div id="excerpt" class="excerpt">{excerpt}</div>
<aside id="probe" class="probe"><p id="probe-head">Hover or tap a character.</p>
<ol id="guesses" class="guesses"></ol></aside>
</div>
<h3>Units that track text features</h3>
<p class="note">For each feature of the text, the units whose activation correlates most
strongly with it over this excerpt (Pearson r; L1 c 37 is layer 1, cell state, unit 37). Click
one to colour the text by it. {kept}.</p>
{ranking}
</section></main>
<script type="application/json" id="data">{data}</script>
<script type="application/json" id="history">{history}</script>
<script>{script}</script>
</body></html>
"""

_CSS = """
:root{--ink:#1d232b;--muted:#5b6673;--line:#d9dee4;--paper:#fbfbf9;--accent:#2c5d8f;
--train:#2c5d8f;--val:#c4532d;--mono:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace}
*{box-sizing:border-box}
body{margin:0;background:var(--paper);color:var(--ink);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
header,main{max-width:1180px;margin:0 auto;padding:0 20px}
header{padding-top:20px;border-bottom:1px solid var(--line)}
h1{font-size:1.5rem;margin:0 0 4px;word-break:break-all}
header p{margin:0 0 14px;color:var(--muted)}
h2{font-size:1.15rem;margin:28px 0 10px;padding-bottom:4px;border-bottom:2px solid var(--ink)}
h3{font-size:1rem;margin:22px 0 6px}
code,pre{font-family:var(--mono)}
.note{color:var(--muted);font-size:.9rem;margin:4px 0 10px}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:6px 18px;
margin:0}
.facts dt{font-size:.75rem;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
.facts dd{margin:0 0 4px;font-weight:600;overflow-wrap:anywhere}
.vocab-title{margin:12px 0 4px;font-size:.75rem;text-transform:uppercase;letter-spacing:.04em;
color:var(--muted)}
.vocab{font-family:var(--mono);display:flex;flex-wrap:wrap;gap:3px;margin:0}
.vc{border:1px solid var(--line);border-radius:3px;padding:0 4px;background:#fff;min-width:1.4em;
text-align:center}
details{margin-top:10px}summary{cursor:pointer;color:var(--accent)}
details pre{background:#fff;border:1px solid var(--line);padding:8px;font-size:.85rem;
columns:2 220px}
.chart{margin:0 0 14px;background:#fff;border:1px solid var(--line);border-radius:6px;
padding:6px}
.chart svg{width:100%;height:auto;display:block;touch-action:none}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:14px}
.readout{font-family:var(--mono);font-size:.8rem;color:var(--muted);min-height:1.3em;
padding:0 6px}
svg .plot{fill:#fff;stroke:var(--line)}
svg .grid{stroke:#eceff2}
svg .tickmark{stroke:#8a949f}
svg .tick{font-size:11px;fill:var(--muted)}
svg .label,svg .legend{font-size:12px;fill:var(--ink)}
svg .empty{font-size:14px;fill:var(--muted)}
svg .line{fill:none;stroke-width:1.8}
svg .train{stroke:var(--train)}svg .val{stroke:var(--val)}svg .dot.val{fill:var(--val);stroke:none}
svg .lr{stroke:#3b7d4f}svg .speed{stroke:#7a5195}
svg .halving{stroke:#b8860b;stroke-dasharray:4 3}
svg .halving-label{font-size:11px;fill:#8a6500}
svg .cursor{stroke:#444;stroke-dasharray:2 2}
.chart.map{max-width:760px}
svg .char{font-family:var(--mono);font-size:13px;fill:var(--ink)}
.sample{margin:0 0 12px}
.sample figcaption{font-size:.8rem;color:var(--muted)}
.sample pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#fff;
border:1px solid var(--line);border-left:3px solid var(--accent);padding:8px 10px;margin:2px 0;
font-size:.85rem;max-height:18em;overflow:auto}
.controls{display:flex;flex-wrap:wrap;gap:8px 16px;align-items:center;margin:8px 0;
padding:6px 0}
select{font:inherit;max-width:100%}
.legend-bar{font-size:.8rem;color:var(--muted);display:flex;align-items:center;gap:6px}
.legend-bar i{display:inline-block;width:120px;height:10px;border:1px solid var(--line)}
.inside-grid{display:grid;grid-template-columns:minmax(0,1fr) 230px;gap:14px;
align-items:start}
.excerpt{font-family:var(--mono);font-size:14px;line-height:1.6;white-space:pre-wrap;
overflow-wrap:anywhere;background:#fff;border:1px solid var(--line);border-radius:6px;
padding:10px;max-height:34em;overflow:auto}
.excerpt span{cursor:pointer;border-radius:2px}
.excerpt span.nl{color:#9aa3ad}
.excerpt span.on{outline:2px solid var(--ink)}
.probe{position:sticky;top:8px;background:#fff;border:1px solid var(--line);border-radius:6px;
padding:8px 10px;font-size:.85rem}
.probe p{margin:0 0 6px}
.guesses{margin:0;padding:0;list-style:none;font-family:var(--mono)}
.guess{display:grid;grid-template-columns:3.2em 1fr 3.6em;gap:6px;align-items:center}
.guess b{font-weight:600}
.guess .bar{height:8px;background:var(--accent);border-radius:2px}
.guess .p{text-align:right}
.ranking{border-collapse:collapse;width:100%}
.ranking th{text-align:left;font-weight:600;padding:6px 10px 6px 0;vertical-align:top;
width:15em}
.ranking th small{display:block;font-weight:400;color:var(--muted);font-size:.75rem}
.ranking td{padding:4px 0;border-top:1px solid var(--line)}
.ranking th{border-top:1px solid var(--line)}
.unit{font:inherit;font-size:.8rem;margin:2px 4px 2px 0;padding:2px 6px;
border:1px solid var(--line);border-radius:4px;background:#fff;cursor:pointer;
display:inline-flex;gap:6px}
.unit .uname{font-family:var(--mono)}
.unit .r{color:var(--muted)}
.unit.selected{background:var(--ink);color:#fff;border-color:var(--ink)}
.unit.selected .r{color:#ddd}
@media (max-width:760px){
header,main{padding:0 10px}
.pair{grid-template-columns:1fr}
.inside-grid{grid-template-columns:1fr}
.probe{position:static}
.ranking th{width:auto;display:block;border:0;padding-bottom:0}
.ranking td{display:block;border:0}
.ranking tr{display:block;border-top:1px solid var(--line);padding:4px 0}
}
"""

_SCRIPT = r"""
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("data").textContent);
  const history = JSON.parse(document.getElementById("history").textContent);
  const spans = Array.from(document.querySelectorAll("#excerpt [data-char-index]"));
  const blockSelect = document.getElementById("block");
  const unitSelect = document.getElementById("unit");
  const legend = document.getElementById("legend");
  const excerpt = document.getElementById("excerpt");
  const decoded = {};
  let values = null, current = "";

  function unpack(key) {
    if (!(key in decoded)) {
      const bytes = atob(data.units[key]), n = spans.length, out = new Uint8Array(n);
      for (let i = 0; i < n; i++) {
        const b = bytes.charCodeAt(i >> 1);
        out[i] = i % 2 ? b & 15 : b >> 4;
      }
      decoded[key] = out;
    }
    return decoded[key];
  }
  // Diverging: red for the low end of a range, white in the middle, blue for the high end.
  function diverging(t) {
    const lo = [202, 64, 48], mid = [247, 247, 245], hi = [38, 104, 175];
    const a = t < 0.5 ? lo : hi, s = Math.abs(t - 0.5) * 2;
    const c = mid.map((m, k) => Math.round(m + (a[k] - m) * s));
    return "rgb(" + c.join(",") + ")";
  }
  function heat(bits) {  // surprisal: white (0 bits) to deep orange (8 bits and more)
    const s = Math.min(bits / 8, 1);
    const c = [255 - 22 * s, 255 - 150 * s, 255 - 215 * s].map(Math.round);
    return "rgb(" + c.join(",") + ")";
  }
  function visible(ch) {
    const map = {"\n": "\u21b5", " ": "\u2423", "\t": "\u21e5", "\r": "\u240d"};
    if (ch in map) return map[ch];
    const code = ch.codePointAt(0);
    return code < 32 || code === 127 ? "U+" + code.toString(16).toUpperCase().padStart(4, "0") : ch;
  }
  function levelValue(block, level) {
    return block.lo + level * (block.hi - block.lo) / (data.levels - 1);
  }
  function paint() {
    if (!current) {
      spans.forEach((s, i) => {
        const b = data.surprisal[i];
        s.style.backgroundColor = b === null ? "" : heat(b);
      });
      legend.innerHTML = "0 bits <i style=\"background:linear-gradient(90deg," + heat(0) + "," +
        heat(4) + "," + heat(8) + ")\"></i> 8+ bits";
    } else {
      const levels = values, top = data.levels - 1;
      spans.forEach((s, i) => { s.style.backgroundColor = diverging(levels[i] / top); });
      const block = data.blocks[current.split(":").slice(0, 2).join(":")];
      legend.innerHTML = block.lo + " <i style=\"background:linear-gradient(90deg," +
        diverging(0) + "," + diverging(0.5) + "," + diverging(1) + ")\"></i> " + block.hi;
    }
  }
  function select(key) {
    current = key && key in data.units ? key : "";
    values = current ? unpack(current) : null;
    document.body.dataset.selectedUnit = current;
    document.querySelectorAll("button.unit").forEach(b => {
      b.classList.toggle("selected", b.dataset.unit === current);
    });
    const block = current ? current.split(":").slice(0, 2).join(":") : "";
    if (blockSelect.value !== block) { blockSelect.value = block; fillUnits(); }
    if (current) unitSelect.value = current;
    paint();
  }
  function fillUnits() {
    const block = data.blocks[blockSelect.value];
    unitSelect.innerHTML = "";
    unitSelect.disabled = !block;
    if (!block) return;
    block.stored.forEach(j => {
      const o = document.createElement("option");
      o.value = blockSelect.value + ":" + j;
      o.textContent = "unit " + j;
      unitSelect.appendChild(o);
    });
  }
  Object.entries(data.blocks).forEach(([key, block]) => {
    if (!block.stored.length) return;
    const o = document.createElement("option");
    o.value = key;
    o.textContent = "layer " + block.layer + ": " + block.label +
      (block.stored.length < block.total ? " (" + block.stored.length + " of " + block.total +
       " units stored)" : "");
    blockSelect.appendChild(o);
  });
  blockSelect.addEventListener("change", () => {
    fillUnits();
    select(unitSelect.disabled ? "" : unitSelect.value);
  });
  unitSelect.addEventListener("change", () => select(unitSelect.value));
  document.querySelectorAll("button.unit").forEach(b => {
    b.addEventListener("click", () => {
      select(b.dataset.unit);
      const box = excerpt.getBoundingClientRect();  // bring the recoloured text into view
      if (box.bottom < 0 || box.top > window.innerHeight) excerpt.scrollIntoView({block: "start"});
    });
  });

  const head = document.getElementById("probe-head"), guesses = document.getElementById("guesses");
  let probed = null;
  function probe(span) {
    if (probed) probed.classList.remove("on");
    probed = span;
    span.classList.add("on");
    const i = Number(span.dataset.charIndex), ch = chars[i];
    const bits = data.surprisal[i];
    let text = "'" + visible(ch) + "' (character " + i + "): " +
      (bits === null ? "first character, not predicted" : bits.toFixed(2) + " bits");
    if (current) {
      const block = data.blocks[current.split(":").slice(0, 2).join(":")];
      text += "; unit " + current + " \u2248 " + levelValue(block, values[i]).toFixed(2);
    }
    head.textContent = text + "; the next character might be:";
    guesses.innerHTML = "";
    data.top_ids[i].forEach((id, k) => {
      const p = data.top_permille[i][k] / 10;
      const li = document.createElement("li");
      li.className = "guess";
      li.innerHTML = "<b></b><span class=\"bar\"></span><span class=\"p\"></span>";
      li.firstChild.textContent = visible(data.vocab[id]);
      li.children[1].style.width = Math.max(p, 1) + "%";
      li.children[2].textContent = p.toFixed(1) + "%";
      guesses.appendChild(li);
    });
  }
  const chars = spans.map(s => s.classList.contains("nl") ? "\n" : s.textContent);
  excerpt.addEventListener("mouseover", e => {
    if (e.target.dataset && "charIndex" in e.target.dataset) probe(e.target);
  });
  excerpt.addEventListener("click", e => {
    if (e.target.dataset && "charIndex" in e.target.dataset) probe(e.target);
  });

  // Chart read-outs: the record nearest the pointer.
  document.querySelectorAll("svg[data-chart]").forEach(svg => {
    const g = svg.querySelector(".geometry"), cursor = svg.querySelector(".cursor");
    const out = document.querySelector(".readout[data-for=\"" + svg.dataset.chart + "\"]");
    if (!g || !history.length) return;
    const x0 = +g.dataset.x0, x1 = +g.dataset.x1, s0 = +g.dataset.s0, s1 = +g.dataset.s1;
    function show(e) {
      const m = svg.getScreenCTM();
      if (!m) return;
      const x = (e.clientX - m.e) / m.a, step = s0 + (x - x0) / (x1 - x0) * (s1 - s0);
      let best = history[0];
      history.forEach(r => { if (Math.abs(r.step - step) < Math.abs(best.step - step)) best = r; });
      const cx = x0 + (best.step - s0) / (s1 - s0) * (x1 - x0);
      cursor.setAttribute("x1", cx); cursor.setAttribute("x2", cx);
      cursor.setAttribute("visibility", "visible");
      const parts = ["step " + best.step];
      if (best.epoch != null) parts.push("epoch " + best.epoch.toFixed(2));
      if (best.train_loss != null) parts.push("train " + best.train_loss.toFixed(4));
      if (best.val_loss != null) parts.push("val " + best.val_loss.toFixed(4));
      if (best.lr != null) parts.push("lr " + best.lr.toPrecision(3));
      if (best.chars_per_s != null) parts.push(Math.round(best.chars_per_s) + " chars/s");
      out.textContent = parts.join(" \u00b7 ");
    }
    svg.addEventListener("pointermove", show);
    svg.addEventListener("pointerdown", show);
  });
  select("");
})();
"""


def facts(ckpt, model) -> list[tuple[str, str]]:
    """The run's key figures, as (label, text) rows for the page's first section."""
    meta = ckpt.meta
    best = meta.get("best_val_loss")
    elapsed = meta.get("elapsed")
    corpus = Path(str(meta.get("corpus", "unknown")))
    try:
        size = f"{corpus.stat().st_size:,} bytes"
    except OSError:
        size = "no longer there"
    return [
        ("model", f"{model.cell} {model.num_layers}x{model.hidden_size} ({model.dtype.name})"),
        ("character embedding", _embedding_text(model.embedding_size)),
        ("parameters", f"{model.num_params:,}"),
        ("vocabulary", f"{model.vocab_size} characters"),
        ("corpus", f"{corpus.name} ({size})"),
        ("steps", f"{meta.get('step', 0):,}"),
        ("epochs", f"{meta.get('epoch', 0):.2f}"),
        ("training time", "unknown" if elapsed is None else _duration(elapsed)),
        (
            "best validation loss",
            "none" if best is None else f"{best:.4f} nats/char, {best / math.log(2):.3f} bits/char",
        ),
        ("checkpoint", Path(str(ckpt.path)).name),
    ]


def _embedding_text(embedding_size: int) -> str:
    return f"{embedding_size} wide" if embedding_size else "none (one-hot input)"


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min" if hours else f"{m} min {s:02d} s"
