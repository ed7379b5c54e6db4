"""A sweep's trials as one self-contained SVG: each trial's validation loss against its steps.

Drawn with the report's chart frame (axes, ticks, labels), with its own styles inside the file, so
it opens offline in any browser or image viewer: no script, no font or stylesheet to fetch.
"""

from __future__ import annotations

from .progress import is_count
from .report.charts import Axes, axes_frame, esc, line_path
from .runlog import is_value
from .text import for_terminal

SIZE = (900, 420)
_STYLE = (
    "text{font-family:system-ui,sans-serif}.plot{fill:#fff;stroke:#c9d1d9}.grid{stroke:#eceff2}"
    ".tickmark{stroke:#8a949f}.tick{font-size:11px;fill:#5b6570}.label,.legend{font-size:12px;"
    "fill:#1f2328}.title{font-size:14px;fill:#1f2328}.line{fill:none;stroke-width:1.4}"
    ".complete{stroke:#4c78a8}.pruned{stroke:#b0b7bf}.fail{stroke:#e4572e;stroke-dasharray:4 3}"
    ".best{stroke:#1a1a6e;stroke-width:3}.dot{stroke:none;fill:#4c78a8}.dot.best{fill:#1a1a6e}"
    ".empty{font-size:14px;fill:#5b6570}"
)
# trial state -> (css class, legend label), drawn in this order (best last, on top)
_KINDS = {
    "PRUNED": ("pruned", "pruned"),
    "FAIL": ("fail", "failed"),
    "COMPLETE": ("complete", "complete"),
}


def _points(trial) -> list[tuple[float, float]]:
    """A trial's (step, validation loss) points: what it reported to the pruner, or for a
    finished trial that reported none (a run shorter than eval_every) its value at its end.
    Only points a run can make (a count of steps, a finite value the run log's reader would
    take) are drawn, whatever the study's database holds, so the axes stay finite."""
    points = sorted(trial.intermediate_values.items())
    if not points and trial.state.name == "COMPLETE" and "steps" in trial.user_attrs:
        points = [(trial.user_attrs["steps"], trial.value)]
    return [(s, v) for s, v in points if is_count(s) and is_value(v)]


def trials_svg(trials: list, title: str) -> str:
    """The SVG text of ``trials`` (Optuna's frozen trials) of the study named ``title``."""
    w, h = SIZE
    title = for_terminal(title)  # a control character is not even allowed in XML
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" '
        f'height="{h}" role="img" aria-label="{esc(title)}"><style>{_STYLE}</style>'
        f'<text class="title" x="{w / 2}" y="16" text-anchor="middle">'
        f"{esc(title)}: validation loss of each trial (nats/char)</text>"
    )
    curves = [(t, _points(t)) for t in trials if t.state.name in _KINDS]
    curves = [(t, pts) for t, pts in curves if pts]
    if not curves:
        return (
            f'{head}<text class="empty" x="{w / 2}" y="{h / 2}" text-anchor="middle">'
            "no trial has reported a validation loss yet</text></svg>"
        )
    steps = [s for _, pts in curves for s, _ in pts]
    values = [v for _, pts in curves for _, v in pts]
    axes = Axes(SIZE, min(steps), max(steps), min(values), max(values))
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    best = min(complete, key=lambda t: t.value).number if complete else None
    parts = [head, *axes_frame(axes, "validation loss", [])]
    order = sorted(curves, key=lambda c: (list(_KINDS).index(c[0].state.name), c[0].number == best))
    for t, pts in order:
        css = "best" if t.number == best else _KINDS[t.state.name][0]
        parts.append(f'<path class="line {css}" d="{line_path(axes, pts)}"><title>trial {t.number}'
                     f"</title></path>")  # fmt: skip
        if t.state.name == "COMPLETE":
            s, v = pts[-1]
            parts.append(
                f'<circle class="dot {css}" cx="{axes.x(s):.1f}" cy="{axes.y(v):.1f}" r="3"/>'
            )
    legend = [(css, label) for state, (css, label) in _KINDS.items()
              if any(t.state.name == state for t, _ in curves)]  # fmt: skip
    if best is not None:
        legend.append(("best", f"best: trial {best}"))
    x = w - 16 - 10 - sum(34 + 7 * len(label) for _, label in legend)
    for css, label in legend:
        parts.append(f'<line class="line {css}" x1="{x}" x2="{x + 18}" y1="42" y2="42"/>')
        parts.append(f'<text class="legend" x="{x + 22}" y="46">{esc(label)}</text>')
        x += 34 + 7 * len(label)
    return "".join(parts) + "</svg>"
