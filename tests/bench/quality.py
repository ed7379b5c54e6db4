"""Model quality per step and per second, rnncli against PyTorch.

Run as ``python -m tests.bench.quality``.

Both parts train an lstm 2x256 on the first 90% of tiny shakespeare: B = T = 50, Adam 2e-3, each
gradient element clipped to [-5, 5], hidden state carried between windows; PyTorch runs the
model a PyTorch user writes (``nn.Embedding(V, H)`` -> ``nn.LSTM`` -> ``nn.Linear``).

(a) Per step (``tests.bench.per_step``): both frameworks train ``--steps`` steps on the identical
    sequence of batches, and every ``--eval-every`` steps both are scored on the same fixed
    sample of the validation split (its first ``--val-chars`` characters, state carried). This
    part measures what each framework learns from the same data; the machine's speed and load
    play no part. rnncli's curve must be at or below PyTorch's, within ``NOISE``, at every step.
(b) Per second: validation loss after each of ``--minutes`` of training (default 2, 5 and 10).
    rnncli runs its own trainer (``rnncli.train.train``, what ``rnn train`` runs) once per
    budget, with ``max_time`` set to it and its defaults otherwise (validation every 500 steps
    with learning-rate halving on plateaus, checkpoints, ``workers`` = the threads, all inside
    the budget); PyTorch runs its plain loop once, for the longest budget, and is scored at each
    (its loop has no schedule, so stopping it there is the same as a shorter run), with as many
    threads as numpy's BLAS. Each final model is scored on the whole validation split
    (``eval_batches``, state carried). rnncli's must be lower at each budget.
(c) The shipped config ``configs/laptop-10min.yaml``, "the best model in 10 minutes on a laptop",
    trained by rnncli's trainer for its own ``max_time`` and scored like (b): at most
    ``LAPTOP_TARGET`` nats/char. docs/benchmarks-quality.md has the search that chose it.

With ``--markdown PATH`` the curves are also drawn as SVG charts next to PATH
(``quality-per-step.svg``, ``quality-per-second.svg``); the section's transcript names them.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rnncli.batches import BatchIterator
from rnncli.checkpoint import load_checkpoint, restore_model
from rnncli.config import Config, load_config
from rnncli.corpus import load_corpus, split_corpus
from rnncli.evaluate import bits_per_char
from rnncli.train import Plan, train
from tests.bench import curves, markdown, per_step, torch_models
from tests.bench.run_bench import (
    BATCH,
    CLIP,
    LR,
    SEQ,
    other_processes_cpu_seconds,
    publish,
    start,
    verdict,
)

CELL, HIDDEN, LAYERS, VAL_FRACTION = "lstm", 256, 2, 0.1
LAPTOP = Path(__file__).resolve().parents[2] / "configs" / "laptop-10min.yaml"
LAPTOP_TARGET = 1.45  # nats/char on the 10% validation split after the config's 10 minutes
# Run-to-run noise of a per-step validation loss (nats/char): the largest difference between
# two seeds of one learner along the lstm 2x128 curves (docs/benchmarks-quality.md).
NOISE = 0.04
MODULE = "tests.bench.quality"
SECTION_TITLE = "Model quality per step and per second (`make bench-quality`)"
CHARTS = {"per step": "quality-per-step.svg", "per second": "quality-per-second.svg"}


# ----------------------------------------------------------------------------------------------
# (a) Per step


def per_step_part(args, vocab_size, train_data, val_data) -> tuple[list[dict], dict]:
    """rnncli's and PyTorch's curves on identical batches; (results, target)."""
    settings = per_step.Settings(
        cell=CELL,
        hidden=HIDDEN,
        layers=LAYERS,
        batch=BATCH,
        seq=SEQ,
        lr=LR,
        clip=CLIP,
        steps=args.steps,
        eval_every=args.eval_every,
        val_chars=args.val_chars,
    )
    sample = min(len(val_data), args.val_chars)
    print(
        f"\n(a) per step: {settings.name}, identical batches, validation loss every "
        f"{args.eval_every} steps on the first {sample} characters of the validation split"
    )
    results = per_step.measure(["rnncli", "torch"], vocab_size, train_data, val_data, settings, [0])
    print(curves.curve_table(results))
    rnncli, pytorch = (dict(r["points"]) for r in results)
    worst = max(rnncli[step] - pytorch[step] for step in rnncli)
    passed = worst <= NOISE
    print(
        f"rnncli at or below PyTorch + {NOISE} at every step: {verdict(passed)} "
        f"(largest excess {worst:+.4f})"
    )
    target = {
        "figure": f"per step: rnncli - PyTorch, worst of {len(rnncli)} evaluations",
        "value": f"{worst:+.4f} nats/char",
        "target": f"<= +{NOISE} (noise)",
        "passed": passed,
    }
    return results, target


# ----------------------------------------------------------------------------------------------
# (b) Per second


def benchmark_config(seconds: float, workers: int) -> Config:
    """The settings both frameworks share, for ``seconds``; rnncli's defaults otherwise."""
    return Config.from_dict(
        {
            "model": CELL,
            "hidden_size": HIDDEN,
            "num_layers": LAYERS,
            "batch_size": BATCH,
            "seq_length": SEQ,
            "optimizer": "adam",
            "learning_rate": LR,
            "grad_clip": CLIP,
            "grad_clip_mode": "value",
            "val_fraction": VAL_FRACTION,
            "test_fraction": 0.0,
            "max_epochs": 0,
            "max_time": seconds,
            "workers": workers,
        },
        source="quality benchmark",
    )


def train_config(corpus: Path, cfg: Config, run_dir: Path) -> dict:
    """Train as ``rnn train`` does with ``cfg``; the final model and what the run reports."""
    result = train(corpus, Plan(cfg), run_dir, quiet=True)
    return {
        "model": restore_model(load_checkpoint(run_dir / "last.npz")),
        "steps": result.step,
        "epochs": result.epoch,
        "stopped": result.reason,
        "best_val_loss": result.best_val_loss,
        "learning_rates": learning_rate_changes(run_dir / "metrics.jsonl"),
    }


def learning_rate_changes(metrics: Path) -> list[tuple[int, float]]:
    """(step, learning rate from that step on) for each rate a run used, from its metrics.jsonl
    (a change shows at the evaluation that made it)."""
    changes: list[tuple[int, float]] = []
    for line in metrics.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if not changes or record["lr"] != changes[-1][1]:
            changes.append((record["step"] if changes else 0, record["lr"]))
    return changes


def train_torch(train_data, vocab_size, marks, val_data) -> list[dict]:
    """PyTorch's plain loop for the last of ``marks`` (seconds, ascending), scored at each on
    ``val_data`` with the clock stopped: one record per mark."""
    torch.manual_seed(0)
    model = torch_models.CharModel(CELL, vocab_size, HIDDEN, LAYERS)
    batches = BatchIterator(train_data, BATCH, SEQ)
    step = torch_models.train_step_fn(model, batches, LR, CLIP)
    records, steps, trained = [], 0, 0.0
    for mark in marks:
        other_cpu, begin = other_processes_cpu_seconds(), time.perf_counter()
        while trained + (time.perf_counter() - begin) < mark:
            step()
            steps += 1
        seconds = time.perf_counter() - begin
        trained += seconds
        other_cores = (other_processes_cpu_seconds() - other_cpu) / seconds
        val = per_step.validation_loss(per_step.torch_window_scorer(model), val_data, BATCH, SEQ)
        records.append(
            {
                "seconds": trained,
                "steps": steps,
                "val_loss": val,
                "epochs": steps / batches.batches_per_epoch,
                "other_processes_cores": other_cores,
            }
        )
    return records


def measured(train_fn, *args) -> dict:
    """``train_fn(*args)``'s result with its wall time and the mean number of cores that other
    processes kept busy meanwhile (competition for the cores skews a timed comparison)."""
    other_cpu, begin = other_processes_cpu_seconds(), time.perf_counter()
    result = train_fn(*args)
    seconds = time.perf_counter() - begin
    other_cores = (other_processes_cpu_seconds() - other_cpu) / seconds
    return {**result, "seconds": seconds, "other_processes_cores": other_cores}


def per_second_part(args, folder: Path, vocab_size, train_data, val_data, workers: int):
    """rnncli's and PyTorch's validation loss after each budget; (records, targets)."""
    print(
        f"\n(b) per second: {CELL} {LAYERS}x{HIDDEN}, validation loss on the whole validation "
        f"split ({len(val_data)} characters) after {', '.join(map(format_minutes, args.minutes))} "
        "min of training"
    )
    rnncli = []
    for minutes in args.minutes:
        print(f"training rnncli for {minutes:g} min (rnncli.train.train) ...")
        run_dir = folder / f"run-{minutes:g}"
        r = scored_run(args.corpus, benchmark_config(minutes * 60, workers), run_dir, val_data)
        rnncli.append({"minutes": minutes, **r})
    print(f"training PyTorch for {max(args.minutes):g} min (plain loop), scored at each budget ...")
    marks = [minutes * 60 for minutes in args.minutes]
    timed = train_torch(train_data, vocab_size, marks, val_data)
    pytorch = [{"minutes": m, **r} for m, r in zip(args.minutes, timed, strict=True)]
    print(
        "| budget | rnncli steps | rnncli val loss | PyTorch steps | PyTorch val loss | "
        "other processes (cores, rnncli / PyTorch) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    targets = []
    for ours, theirs in zip(rnncli, pytorch, strict=True):
        print(
            f"| {ours['minutes']:g} min | {ours['steps']} | {ours['val_loss']:.4f} "
            f"({bits_per_char(ours['val_loss']):.3f} bits) | {theirs['steps']} | "
            f"{theirs['val_loss']:.4f} ({bits_per_char(theirs['val_loss']):.3f} bits) | "
            f"{ours['other_processes_cores']:.2f} / {theirs['other_processes_cores']:.2f} |"
        )
        rates = ", ".join(f"{lr:g} from step {step}" for step, lr in ours["learning_rates"])
        best = ours["best_val_loss"]
        best = "none" if best is None else f"{best:.4f}"
        print(
            f"  (rnncli {ours['minutes']:g} min: learning rate {rates}; best.npz {best}; "
            f"stopped: {ours['stopped']})"
        )
        value = f"rnncli {ours['val_loss']:.4f}, PyTorch {theirs['val_loss']:.4f} nats/char"
        targets.append(
            {
                "figure": f"per second: validation loss after {ours['minutes']:g} min",
                "value": value,
                "target": "rnncli lower",
                "passed": ours["val_loss"] < theirs["val_loss"],
            }
        )
    return {"rnncli": rnncli, "torch": pytorch}, targets


def scored_run(corpus: Path, cfg: Config, run_dir: Path, val_data: np.ndarray) -> dict:
    """``train_config`` timed (``measured``), its final model scored on the whole ``val_data``."""
    r = measured(train_config, corpus, cfg, run_dir)
    r["val_loss"] = per_step.validation_loss(
        per_step.numpy_window_scorer(r.pop("model")), val_data, cfg.batch_size, cfg.seq_length
    )
    return r


def shipped_part(args, folder: Path, val_data, workers: int) -> tuple[dict, dict]:
    """configs/laptop-10min.yaml trained for its own max_time; (record, target)."""
    cfg = load_config(LAPTOP, {"workers": workers})
    print(
        f"\n(c) the shipped config {markdown.shown_path(LAPTOP)}: {cfg.max_time:g} s of training, "
        "validation loss on the whole validation split"
    )
    r = scored_run(args.corpus, cfg, folder / "laptop", val_data)
    rates = ", ".join(f"{lr:.3g} at step {step}" for step, lr in r["learning_rates"][-3:])
    print(
        f"{r['steps']} steps ({r['epochs']:.1f} epochs) in {r['seconds']:.0f} s: validation loss "
        f"{r['val_loss']:.4f} ({bits_per_char(r['val_loss']):.3f} bits); other processes "
        f"{r['other_processes_cores']:.2f} cores; last rates {rates}; stopped: {r['stopped']}"
    )
    target = {
        "figure": f"validation loss of {LAPTOP.name} after {cfg.max_time / 60:g} min",
        "value": f"{r['val_loss']:.4f} nats/char",
        "target": f"<= {LAPTOP_TARGET}",
        "passed": r["val_loss"] <= LAPTOP_TARGET,
    }
    return r, target


def format_minutes(minutes: float) -> str:
    return f"{minutes:g}"


# ----------------------------------------------------------------------------------------------
# Charts


def per_second_chart(records: dict) -> str:
    series = [
        curves.Series(
            name, [(r["minutes"], r["val_loss"]) for r in records[key]], dashed=key == "torch"
        )
        for key, name in (("rnncli", "rnncli (rnn train)"), ("torch", "PyTorch (plain loop)"))
    ]
    return curves.svg_chart(
        series,
        title=f"{CELL} {LAYERS}x{HIDDEN}: validation loss per minute",
        x_label="training time (minutes)",
        y_label="validation loss (nats/char)",
    )


def write_charts(args, per_step_results, per_second_records) -> None:
    """The SVG charts next to ``--markdown``'s document, and their links in the transcript."""
    charts = {}
    if per_step_results:
        title = f"{CELL} {LAYERS}x{HIDDEN}: validation loss per step, identical batches"
        charts["per step"] = per_step.chart(per_step_results, title)
    if per_second_records:
        charts["per second"] = per_second_chart(per_second_records)
    for part, svg in charts.items():
        path = args.markdown.parent / CHARTS[part]
        curves.write_atomic(path, svg)
        print(f"chart {part}: {markdown.shown_path(path)}")


def main() -> None:
    def options(parser):
        parser.add_argument(
            "--minutes",
            type=float,
            nargs="+",
            default=[2.0, 5.0, 10.0],
            help="training budgets of the per-second part [default: 2 5 10]",
        )
        parser.add_argument(
            "--steps",
            type=int,
            default=1500,
            help="steps of the per-step part [default: %(default)s]",
        )
        parser.add_argument(
            "--eval-every",
            type=int,
            default=250,
            help="per step: steps between evaluations [default: %(default)s]",
        )
        parser.add_argument(
            "--val-chars",
            type=int,
            default=100_000,
            help="per step: size of the fixed validation sample [default: %(default)s]",
        )
        parser.add_argument("--no-per-step", action="store_true", help="skip part (a)")
        parser.add_argument("--no-per-second", action="store_true", help="skip part (b)")
        parser.add_argument("--no-shipped", action="store_true", help="skip part (c)")

    args, facts = start(
        "Model quality per step and per second, rnncli against PyTorch.",
        MODULE,
        options,
    )
    for name in ("steps", "eval_every", "val_chars"):
        if getattr(args, name) < 1:
            per_step.usage_error(f"--{name.replace('_', '-')} must be at least 1", MODULE)
    if any(not 0 < minutes < 24 * 60 for minutes in args.minutes):
        per_step.usage_error("--minutes must each be above 0 and below a day", MODULE)
    args.minutes = sorted(set(args.minutes))
    print(
        f"\nlstm 2x256, B={BATCH}, T={SEQ}, Adam {LR:g}, clip 5, validation split: the last "
        f"{VAL_FRACTION:.0%} of {markdown.shown_path(args.corpus)}"
    )
    targets, step_results, second_records, shipped = [], [], {}, None
    with tempfile.TemporaryDirectory(prefix="rnncli-quality-") as folder:
        corpus = load_corpus(args.corpus, Path(folder) / "cache")
        vocab_size, data = len(corpus.vocab), np.array(corpus.data)  # off the memory map
        del corpus  # release the memory map before its folder goes
        train_data, val_data, _ = split_corpus(data, VAL_FRACTION, 0.0)
        if not args.no_per_step:
            step_results, target = per_step_part(args, vocab_size, train_data, val_data)
            targets.append(target)
        if not args.no_per_second:
            second_records, timed = per_second_part(
                args, Path(folder), vocab_size, train_data, val_data, facts["threads_requested"]
            )
            targets.extend(timed)
        if not args.no_shipped:
            shipped, target = shipped_part(args, Path(folder), val_data, facts["threads_requested"])
            targets.append(target)
    passed = sum(t["passed"] for t in targets)
    print(f"\n{passed} of {len(targets)} targets passed")
    if args.markdown:
        write_charts(args, step_results, second_records)
    publish(args, SECTION_TITLE, facts, targets)
    if args.json:
        results = {
            "machine": facts,
            "per_step": step_results,
            "per_second": second_records,
            "shipped": shipped,
            "targets": targets,
        }
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
