"""Training curves of timed runs against wall time, as one SVG chart (docs/cells.md's).

    python -m tests.bench.timed_curves --out docs/cells-3min.svg --title "..." \\
        "lstm 2x256=runs/a" "mingru 3x512, residual=runs/b" ...

Each ``LABEL=RUN`` draws the run folder's metrics.jsonl (``rnn train`` writes it) as the
training loss of every logged interval against the training seconds so far, solid, and the
validation loss at each evaluation, dashed, in the same colour.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rnncli.runlog import read_metrics
from tests.bench.curves import PALETTE, Series, svg_chart, write_atomic


def run_series(label: str, run: Path, colour: str) -> list[Series]:
    """The training and validation curves of the run folder ``run`` against seconds."""
    records = read_metrics(run / "metrics.jsonl").records
    timed = [r for r in records if r["elapsed"] is not None]
    train = [(r["elapsed"], r["train_loss"]) for r in timed if r["train_loss"] is not None]
    val = [(r["elapsed"], r["val_loss"]) for r in timed if r["val_loss"] is not None]
    return [
        Series(f"{label}: training", train, colour=colour),
        Series(f"{label}: validation", val, dashed=True, colour=colour),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.timed_curves", description=__doc__)
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN", help="a label and a run folder")
    parser.add_argument("--out", type=Path, required=True, help="the SVG file to write")
    parser.add_argument("--title", required=True, help="the chart's title")
    args = parser.parse_args()
    series = []
    for i, item in enumerate(args.runs):
        label, sep, run = item.rpartition("=")
        if not sep or not label:
            parser.error(f"expected LABEL=RUN, got {item!r}")
        series += run_series(label, Path(run), PALETTE[i % len(PALETTE)])
    svg = svg_chart(series, title=args.title, x_label="seconds of training",
                    y_label="loss (nats/char)")  # fmt: skip
    write_atomic(args.out, svg)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
