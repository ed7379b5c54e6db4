"""The search behind ``configs/laptop-10min.yaml``: ``python -m tests.bench.search``.

Each candidate is that shipped config with a few keys changed (``CANDIDATES``). Every candidate
trains through rnncli's own trainer (what ``rnn train`` runs) for the same ``--minutes`` of wall
time, with as many workers as cores, and its final parameters are scored on the whole validation
split (the last 10% of tiny shakespeare, state carried). The candidates run one after another,
so the machine must be otherwise idle: the table states how many cores other processes used
during each run.

The search is small on purpose: a handful of runs of the full budget each, varying what the
per-step measurements (``tests.bench.per_step``, docs/benchmarks-quality.md) left open: the
model's size against the steps the budget allows, and the learning-rate schedule.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from rnncli.config import load_config
from rnncli.corpus import load_corpus, split_corpus
from rnncli.evaluate import bits_per_char
from tests.bench import markdown, per_step, quality
from tests.bench.run_bench import publish, start

MODULE = "tests.bench.search"
SECTION_TITLE = "The search for `configs/laptop-10min.yaml` (`python -m tests.bench.search`)"
BASE = quality.LAPTOP

# name -> (what it changes, the keys it changes over BASE)
CANDIDATES: dict[str, tuple[str, dict]] = {
    "shipped": ("configs/laptop-10min.yaml as shipped", {}),
    "plateau": ("halving on plateaus instead of the cosine decay", {"lr_schedule": "plateau"}),
    "lr-2e-3": ("Adam at 2e-3 instead of 4e-3", {"learning_rate": 2e-3}),
    "2x256": ("2 layers of 256 units instead of 384", {"hidden_size": 256}),
    "2x512": ("2 layers of 512 units instead of 384", {"hidden_size": 512}),
    "3x384": ("3 layers of 384 units instead of 2", {"num_layers": 3}),
    "dropout-0.1": ("dropout 0.1", {"dropout": 0.1}),
}


def run_candidate(name: str, corpus: Path, minutes: float, folder: Path, workers: int, val_data):
    """Train candidate ``name`` for ``minutes``; its record, scored on ``val_data``."""
    overrides = {**CANDIDATES[name][1], "max_time": minutes * 60, "workers": workers}
    r = quality.scored_run(corpus, load_config(BASE, overrides), folder / name, val_data)
    return {"candidate": name, "changes": CANDIDATES[name][0], **r}


def table(records: list[dict]) -> str:
    lines = [
        "| candidate | changes | steps | epochs | val loss (whole split) | other processes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in sorted(records, key=lambda r: r["val_loss"]):
        lines.append(
            f"| {r['candidate']} | {r['changes']} | {r['steps']} | {r['epochs']:.1f} | "
            f"{r['val_loss']:.4f} ({bits_per_char(r['val_loss']):.3f} bits) | "
            f"{r['other_processes_cores']:.2f} cores |"
        )
    return "\n".join(lines)


def main() -> None:
    def options(parser):
        parser.add_argument(
            "--minutes", type=float, default=10.0, help="budget of each run [default: 10]"
        )
        parser.add_argument(
            "--candidates",
            default=",".join(CANDIDATES),
            help=f"comma-separated, from: {', '.join(CANDIDATES)} [default: all]",
        )

    args, facts = start("The search behind configs/laptop-10min.yaml.", MODULE, options)
    names = [n for n in args.candidates.split(",") if n]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown or not names:
        per_step.usage_error(f"unknown candidates: {', '.join(unknown) or '(none)'}", MODULE)
    if not 0 < args.minutes < 24 * 60:
        per_step.usage_error("--minutes must be above 0 and below a day", MODULE)
    base = load_config(BASE)
    print(
        f"\n{len(names)} candidates over {markdown.shown_path(BASE)}, {args.minutes:g} min each, "
        f"{facts['threads_requested']} workers; validation split: the last "
        f"{base.val_fraction:.0%} of {markdown.shown_path(args.corpus)}"
    )
    records = []
    with tempfile.TemporaryDirectory(prefix="rnncli-search-") as folder:
        corpus = load_corpus(args.corpus, Path(folder) / "cache")
        data = np.array(corpus.data)  # off the memory map
        del corpus
        _, val_data, _ = split_corpus(data, base.val_fraction, base.test_fraction)
        for name in names:
            print(f"training {name} ({CANDIDATES[name][0]}) for {args.minutes:g} min ...")
            records.append(
                run_candidate(
                    name, args.corpus, args.minutes, Path(folder), facts["threads_requested"],
                    val_data,
                )
            )  # fmt: skip
            print(f"  {records[-1]['steps']} steps, val loss {records[-1]['val_loss']:.4f}")
    print(table(records))
    best = min(records, key=lambda r: r["val_loss"])
    target = {
        "figure": f"best validation loss after {args.minutes:g} min ({best['candidate']})",
        "value": f"{best['val_loss']:.4f} nats/char",
        "target": "<= 1.45 at 10 min",
        "passed": best["val_loss"] <= 1.45,
    }
    publish(args, SECTION_TITLE, facts, [target])
    if args.json:
        args.json.write_text(
            json.dumps({"machine": facts, "records": records}, indent=2) + "\n", encoding="utf-8"
        )
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
