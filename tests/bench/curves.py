"""Line charts as plain SVG text, for the benchmark documents (no plotting library).

``svg_chart`` draws named series of (x, y) points on shared axes with round-numbered ticks and
a legend; ``write_atomic`` puts the text in place whole or not at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from xml.sax.saxutils import escape

from rnncli.fileio import atomic_write

# Colours told apart by most readers, including those with red-green colour blindness (Okabe
# and Ito's palette less its yellow, which is faint on white, then Tol's muted colours): series
# past the twelfth repeat a colour.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
           "#882255", "#999933", "#332288", "#999999", "#44AA99")  # fmt: skip
MARGIN = {"left": 64, "right": 16, "top": 36, "bottom": 48}
LEGEND_ROW = 16


@dataclass(frozen=True)
class Series:
    label: str
    points: list[tuple[float, float]]
    dashed: bool = False
    colour: str | None = None  # None: the next of PALETTE
    thin: bool = False


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) covering [lo, hi] in about
    ``count`` steps: the first at or below lo, the last at or above hi."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"need finite lo <= hi, got {lo}, {hi}")
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first, last = math.floor(lo / step), math.ceil(hi / step)
    return [round(k * step, 12) for k in range(first, last + 1)]


def _label(value: float) -> str:
    return f"{value:g}"


def svg_chart(
    series: list[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 760,
    height: int = 440,
) -> str:
    """An SVG document: each series a polyline with a dot per point, solid or dashed, and a
    legend below the title. Points whose x or y is not finite are left out; ValueError when
    no series has a finite point."""
    clean = [
        replace(s, points=[(x, y) for x, y in s.points if math.isfinite(x) and math.isfinite(y)])
        for s in series
    ]
    xs = [x for s in clean for x, _ in s.points]
    ys = [y for s in clean for _, y in s.points]
    if not xs:
        raise ValueError("no finite points to draw")
    x_ticks, y_ticks = nice_ticks(min(xs), max(xs)), nice_ticks(min(ys), max(ys))
    legend_height = LEGEND_ROW * len(clean)
    left, right = MARGIN["left"], width - MARGIN["right"]
    top, bottom = MARGIN["top"] + legend_height, height + legend_height - MARGIN["bottom"]

    def px(x: float) -> float:
        return left + (x - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * (right - left)

    def py(y: float) -> float:  # larger values higher up
        return bottom - (y - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * (bottom - top)

    total_height = height + legend_height
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total_height}" '
        f'viewBox="0 0 {width} {total_height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{total_height}" fill="white"/>',
        f'<text x="{width / 2:.1f}" y="20" text-anchor="middle" font-size="14">'
        f"{escape(title)}</text>",
    ]
    for x in x_ticks:
        parts.append(
            f'<line x1="{px(x):.1f}" y1="{top}" x2="{px(x):.1f}" y2="{bottom}" stroke="#ddd"/>'
        )
        parts.append(
            f'<text x="{px(x):.1f}" y="{bottom + 16}" text-anchor="middle">{_label(x)}</text>'
        )
    for y in y_ticks:
        parts.append(
            f'<line x1="{left}" y1="{py(y):.1f}" x2="{right}" y2="{py(y):.1f}" stroke="#ddd"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{_label(y)}</text>'
        )
    parts.append(
        f'<text x="{(left + right) / 2:.1f}" y="{bottom + 36}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
    )
    parts.append(
        f'<text transform="translate(16 {(top + bottom) / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )
    for k, s in enumerate(clean):
        colour = s.colour or PALETTE[k % len(PALETTE)]
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        width = 1 if s.thin else 2
        row = MARGIN["top"] + LEGEND_ROW * k
        parts.append(
            f'<line x1="{left}" y1="{row - 4}" x2="{left + 28}" y2="{row - 4}" '
            f'stroke="{colour}" stroke-width="{width}"{dash}/>'
        )
        parts.append(f'<text x="{left + 34}" y="{row}">{escape(s.label)}</text>')
        if not s.points:
            continue
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in s.points)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" '
            f'stroke-width="{width}"{dash}><title>{escape(s.label)}</title></polyline>'
        )
        for x, y in s.points:
            parts.append(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}">'
                f"<title>{escape(s.label)}: {_label(x)}, {y:.4f}</title>"
                "</circle>"
            )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def label(result: dict) -> str:
    """A curve record's name: its learner and seed."""
    return f"{result['learner']} (seed {result['seed']})"


def curve_table(results: list[dict], reference: str | None = "rnncli") -> str:
    """A Markdown table of curves (records with "learner", "seed" and "points" [(step, loss)]):
    one row per curve, one column per evaluated step, and the difference at the last step from
    the ``reference`` learner's curve with the same seed (negative: lower than it)."""
    steps = sorted({step for r in results for step, _ in r["points"]})
    ref = {r["seed"]: dict(r["points"]) for r in results if r["learner"] == reference}
    head = ["learner", *(f"{step}" for step in steps), f"vs {reference}, same seed"]
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in results:
        losses = dict(r["points"])
        cells = [f"{losses[step]:.4f}" if step in losses else "" for step in steps]
        last, base = steps[-1], ref.get(r["seed"], {})
        delta = ""
        if r["learner"] != reference and last in losses and last in base:
            delta = f"{losses[last] - base[last]:+.4f}"
        rows.append("| " + " | ".join([label(r), *cells, delta]) + " |")
    return "\n".join(rows)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with rnncli's atomic writer: a reader sees the old file or the
    new one, never a part."""
    with atomic_write(path, text=True) as f:
        f.write(text)
