"""Model quality for equal training time, rnncli against PyTorch: ``python -m tests.bench.quality``.

Each framework trains an lstm 2x256 for ``--minutes`` (default 10) of wall time on the first 90%
of tiny shakespeare: B = T = 50, Adam 2e-3, each gradient element clipped to [-5, 5], hidden
state carried between windows, as many PyTorch threads as numpy's BLAS.

* rnncli runs its own trainer (``rnncli.train.train``, what ``rnn train`` runs) with its
  defaults otherwise: validation every 500 steps with learning-rate halving on plateaus, and
  checkpoints, all inside the time budget.
* PyTorch runs the plain loop a PyTorch user writes (``torch_models.train_step_fn``).

Then both final models are scored the same way on the whole validation split (the last 10%):
``rnncli.data.eval_batches`` cuts it into B streams read T characters at a time, the state
carried from window to window, and the loss is the mean over every character in nats.
rnncli's must be lower.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rnncli.checkpoint import load_checkpoint
from rnncli.config import Config
from rnncli.data import BatchIterator, eval_batches, load_corpus, split_corpus
from rnncli.evaluate import bits_per_char
from rnncli.model import Model
from rnncli.train import Plan, train
from tests.bench import markdown, torch_models
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
SECTION_TITLE = "Model quality for equal training time (`make bench-quality`)"


def validation_loss(score_window, data: np.ndarray) -> float:
    """Mean nats per character over ``data``, read as ``eval_batches(data, B, T)`` with the state
    carried. ``score_window(x, y, mask, state)`` returns (summed nats of the targets where mask
    is True, final state); the first state is None."""
    state, total, count = None, 0.0, 0
    for x, y, mask in eval_batches(data, BATCH, SEQ):
        nats, state = score_window(x, y, mask, state)
        total += nats
        count += int(mask.sum())
    return total / count


def rnncli_window_scorer(model: Model):
    def score_window(x, y, mask, state):
        state = model.zero_state(x.shape[0]) if state is None else state
        loss, state, _ = model.forward(x, y, state, mask=mask)  # mean over the masked targets
        return loss * int(mask.sum()), state

    return score_window


def torch_window_scorer(model: torch_models.CharModel):
    @torch.no_grad()
    def score_window(x, y, mask, state):
        logits, state = model(torch.from_numpy(x), state)
        nats = F.cross_entropy(
            logits.flatten(0, 1), torch.from_numpy(y).flatten(), reduction="none"
        )
        return float(nats[torch.from_numpy(mask).flatten()].double().sum()), state

    return score_window


def train_rnncli(corpus: Path, seconds: float, run_dir: Path, workers: int) -> dict:
    cfg = Config.from_dict(
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
    result = train(corpus, Plan(cfg), run_dir, quiet=True)
    model = Model.from_params(load_checkpoint(run_dir / "last.npz").params, CELL)
    return {
        "model": model,
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


def train_torch(train_data: np.ndarray, vocab_size: int, seconds: float) -> dict:
    torch.manual_seed(0)
    model = torch_models.CharModel(CELL, vocab_size, HIDDEN, LAYERS)
    batches = BatchIterator(train_data, BATCH, SEQ)
    step = torch_models.train_step_fn(model, batches, LR, CLIP)
    steps, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        step()
        steps += 1
    return {"model": model, "steps": steps, "epochs": steps / batches.batches_per_epoch}


def measured(train_fn, *args) -> dict:
    """``train_fn(*args)``'s result with its wall time and the mean number of cores that other
    processes kept busy meanwhile (competition for the cores skews a timed comparison)."""
    other_cpu, begin = other_processes_cpu_seconds(), time.perf_counter()
    result = train_fn(*args)
    seconds = time.perf_counter() - begin
    other_cores = (other_processes_cpu_seconds() - other_cpu) / seconds
    return {**result, "seconds": seconds, "other_processes_cores": other_cores}


def main() -> None:
    def options(parser):
        parser.add_argument(
            "--minutes",
            type=float,
            default=10.0,
            help="training time of each framework [default: %(default)s]",
        )

    args, facts = start(
        "Model quality for equal training time, rnncli against PyTorch.",
        "tests.bench.quality",
        options,
    )
    seconds = args.minutes * 60
    print(f"\nlstm 2x256, B={BATCH}, T={SEQ}, Adam {LR:g}, clip 5, {args.minutes:g} min each")
    with tempfile.TemporaryDirectory(prefix="rnncli-quality-") as folder:
        corpus = load_corpus(args.corpus, Path(folder) / "cache")
        train_data, val_data, _ = split_corpus(corpus.data, VAL_FRACTION, 0.0)
        print("training rnncli (rnncli.train.train) ...")
        rnncli = measured(
            train_rnncli, args.corpus, seconds, Path(folder) / "run", facts["threads_requested"]
        )
        rnncli["val_loss"] = validation_loss(rnncli_window_scorer(rnncli.pop("model")), val_data)
        print("training PyTorch (plain loop) ...")
        pytorch = measured(train_torch, train_data, len(corpus.vocab), seconds)
        pytorch["val_loss"] = validation_loss(torch_window_scorer(pytorch.pop("model")), val_data)
        del corpus, train_data, val_data  # release the memory map before its folder goes

    print(
        f"validation split: {VAL_FRACTION:.0%} of {markdown.shown_path(args.corpus)}, whole, "
        "state carried"
    )
    for name, r in (("rnncli", rnncli), ("torch", pytorch)):
        print(
            f"  {name:7} {r['steps']:6} steps ({r['epochs']:.2f} epochs): final model "
            f"{r['val_loss']:.4f} nats/char ({bits_per_char(r['val_loss']):.3f} bits/char); "
            f"other processes used {r['other_processes_cores']:.2f} cores meanwhile"
        )
    rates = ", ".join(f"{lr:g} from step {step}" for step, lr in rnncli["learning_rates"])
    print(f"  (rnncli's learning rate, halved when validation stalled: {rates})")
    if rnncli["best_val_loss"] is not None:
        print(
            f"  (rnncli's best.npz, chosen on this split during training: "
            f"{rnncli['best_val_loss']:.4f} nats/char; it stopped: {rnncli['stopped']})"
        )
    passed = rnncli["val_loss"] < pytorch["val_loss"]
    print(f"rnncli's validation loss is lower than PyTorch's: {verdict(passed)}")
    target = {
        "figure": f"validation loss after {args.minutes:g} min",
        "value": f"rnncli {rnncli['val_loss']:.4f}, PyTorch {pytorch['val_loss']:.4f} nats/char",
        "target": "rnncli lower",
        "passed": passed,
    }
    publish(args, SECTION_TITLE, facts, [target])
    if args.json:
        results = {
            "machine": facts,
            "minutes": args.minutes,
            "rnncli": rnncli,
            "torch": pytorch,
            "passed": passed,
        }
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
