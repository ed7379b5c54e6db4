"""What a run spent evaluating: ``python -m tests.bench.eval_cost RUN/metrics.jsonl``.

Training and evaluation are timed apart inside the same run, so a machine shared with other
work slows both without making the fraction meaningless: training seconds are the logged
windows' steps x ``batch_size`` x ``seq_length`` / ``chars_per_s`` (a window's speed leaves its
evaluation out), evaluation seconds the records' ``eval_s``. Prints both, the cost of one
scoring batch against one training step, and the fraction at another ``--eval-every``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml


def costs(metrics: Path, chars_per_step: int) -> dict:
    """Steps, training seconds, and the periodic evaluations' count and seconds of a run."""
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    train = evaluation = 0.0
    evaluations, previous = 0, 0
    for record in records:
        if record["chars_per_s"]:
            train += (record["step"] - previous) * chars_per_step / record["chars_per_s"]
        previous = record["step"]
        if record.get("eval_s") is not None:
            evaluation += record["eval_s"]
            evaluations += 1
    closing = records[-1]
    return {
        "steps": previous,
        "train_s": train,
        "evaluations": evaluations,
        "eval_s": evaluation,
        "val_loss": closing.get("val_loss"),
        "val_loss_full": closing.get("val_loss_full"),
        "eval_full_s": closing.get("eval_full_s"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics", type=Path, help="a run's metrics.jsonl (config.yaml beside it)")
    parser.add_argument("--eval-every", type=int, default=500, help="the fraction at this setting")
    args = parser.parse_args()
    cfg = yaml.safe_load((args.metrics.parent / "config.yaml").read_text())
    c = costs(args.metrics, cfg["batch_size"] * cfg["seq_length"])
    step = c["train_s"] / c["steps"]
    per_eval = c["eval_s"] / c["evaluations"]
    batch = per_eval / cfg["eval_batches"] if cfg["eval_batches"] else float("nan")
    print(f"training: {c['steps']} steps, {c['train_s']:.1f} s ({step * 1000:.1f} ms/step)")
    print(f"evaluations: {c['evaluations']}, {c['eval_s']:.1f} s ({per_eval:.2f} s each)")
    print(f"one scoring batch / one training step: {batch / step:.2f}")
    print(f"evaluating / training in this run: {c['eval_s'] / c['train_s']:.1%}")
    print(f"at eval_every {args.eval_every}: {per_eval / (args.eval_every * step):.1%}")
    if c["val_loss_full"] is not None:
        print(f"closing: sample {c['val_loss']:.4f}, whole split {c['val_loss_full']:.4f} "
              f"({c['eval_full_s']:.1f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
