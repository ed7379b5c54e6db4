"""Fine-tuning onto a corpus with new characters: validation loss against step for a model
carried over with a grown vocabulary (new input rows at the mean of the old ones, or drawn at
random) and for the same shape trained from scratch (docs/finetune.md).

    python -m tests.bench.grow_vocab_curves BASE.npz CORPUS.txt OUT_DIR [--steps N]
        [--markdown FILE] [--svg FILE]

Each run trains N steps with the settings below and evaluates every EVAL_EVERY steps on the
same fixed sample of CORPUS's validation split (step 0: the weights it starts from, scored on
those windows); OUT_DIR keeps the runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from click.testing import CliRunner

from rnncli import growvocab
from rnncli.checkpoint import load_checkpoint
from rnncli.cli import cli
from rnncli.plan import plan_run
from rnncli.runfolder import Signals
from rnncli.trainer import Trainer
from tests.bench.curves import Series, svg_chart, write_atomic

EVAL_EVERY = 25
SETTINGS = dict(eval_every=EVAL_EVERY, eval_batches=10, val_fraction=0.1, learning_rate=2e-3,
                checkpoint_every=100_000, log_every=25, batch_size=50, seq_length=50)  # fmt: skip
RUNS = {  # name -> (start from the base checkpoint, new input rows)
    "carried over, mean rows": (True, "mean"),
    "carried over, random rows": (True, "random"),
    "from scratch": (False, None),
}


def start_loss(corpus: Path, out: Path, overrides: dict, init_from: Path | None) -> float:
    """The loss, on the runs' fixed validation sample, of the weights a run starts from."""
    plan = plan_run(out, overrides, init_from=init_from)
    with Signals() as signals:
        trainer = Trainer(corpus, plan, out, signals, quiet=True)
        trainer.net = trainer.model  # what Trainer.run sets up: here, no worker processes
        return trainer.validate().loss


def train(name: str, base: Path, corpus: Path, out: Path, steps: int) -> list[tuple]:
    carried, init = RUNS[name]
    overrides = dict(SETTINGS, max_steps=steps)
    if not carried:
        shape = load_checkpoint(base).config
        overrides |= {k: shape[k] for k in ("model", "hidden_size", "num_layers")}
    args = ["train", str(corpus), "--out", str(out), "--force", "--quiet"]
    args += [f"--{k.replace('_', '-')}={v}" for k, v in overrides.items()]
    init_from = base if carried else None
    if carried:
        args += ["--init-from", str(base)]
    default = growvocab.DEFAULT_INPUT_INIT
    growvocab.DEFAULT_INPUT_INIT = init or default
    try:
        first = start_loss(corpus, out / "start", overrides, init_from)
        result = CliRunner().invoke(cli, args)
    finally:
        growvocab.DEFAULT_INPUT_INIT = default
    if result.exit_code != 0:
        raise SystemExit(f"{name}: {result.output}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # the run's last step may be both a scheduled and the closing evaluation: one point
    losses = {r["step"]: r["val_loss"] for r in records if r.get("val_loss") is not None}
    return [(0, first), *losses.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--svg", type=Path)
    args = parser.parse_args()
    curves = {}
    for i, name in enumerate(RUNS):
        curves[name] = train(name, args.base, args.corpus, args.out / f"run{i}", args.steps)
        print(name, curves[name], flush=True)
    steps = sorted({step for points in curves.values() for step, _ in points})
    lines = ["| step | " + " | ".join(curves) + " |", "| ---: |" + " ---: |" * len(curves)]
    for step in steps:
        cells = [
            next((f"{v:.3f}" for s, v in points if s == step), "") for points in curves.values()
        ]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.markdown:
        write_atomic(args.markdown, table)
    if args.svg:
        series = [Series(name, points) for name, points in curves.items()]
        svg = svg_chart(series, title="Fine-tuning onto new characters", x_label="step",
                        y_label="validation loss (nats/char)")  # fmt: skip
        write_atomic(args.svg, svg)


if __name__ == "__main__":
    main()
