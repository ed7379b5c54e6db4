"""Training-step time of rnncli models against one another, in interleaved rounds:
``python -m tests.bench.step_ratio lstm:2:384 mingru:3:512:1024 ...``.

Each model is ``CELL:LAYERS:HIDDEN[:MLP_SIZE]``, trained as ``rnn train`` builds it (B = T = 50,
Adam, clip 5, ``workers`` as ``rnn train`` resolves 0) on the same corpus; all run in the same
process and alternate in rounds (``run_bench.interleaved_rounds``), so that a busy machine slows
them alike. Prints each model's median characters per second and its median per-round ratio to
the first model's: with learning per step measured apart (``tests.bench.per_step``) on
identical batches, steps in a time budget = the first model's steps x the ratio.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
from pathlib import Path

from rnncli import optim
from rnncli.batches import BatchIterator
from rnncli.config import Config
from rnncli.model import Model
from rnncli.parallel import data_parallel, resolve_workers
from tests.bench.run_bench import (
    BATCH,
    LR,
    SEQ,
    interleaved_rounds,
    load_text,
    rnncli_train_step,
    start,
)  # fmt: skip


def config_of(spec: str) -> Config:
    cell, layers, hidden, *mlp = spec.split(":")
    keys = {"model": cell, "num_layers": int(layers), "hidden_size": int(hidden),
            "mlp_size": int(mlp[0]) if mlp else 0, "batch_size": BATCH, "seq_length": SEQ,
            "learning_rate": LR, "seed": 0}  # fmt: skip
    return Config.from_dict(keys, source=spec)


def main() -> None:
    def options(parser):
        parser.add_argument("models", nargs="+", help="CELL:LAYERS:HIDDEN[:MLP_SIZE]")
        parser.add_argument("--rounds", type=int, default=5)
        parser.add_argument("--round-s", type=float, default=3.0)

    args, _ = start("Training-step time of rnncli models, interleaved.", "tests.bench.step_ratio",
                    options)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="rnncli-step-ratio-") as folder:
        data, vocab = load_text(args.corpus, Path(folder) / "cache")
        with contextlib.ExitStack() as stack:
            steps = {}
            for spec in args.models:
                cfg = config_of(spec)
                model = Model.from_config(cfg, len(vocab))
                workers = resolve_workers(cfg.workers, BATCH)
                net = stack.enter_context(data_parallel(
                    model, optim.from_config(cfg, model.params), BATCH, SEQ, workers))  # fmt: skip
                steps[spec] = rnncli_train_step(net, BatchIterator(data, BATCH, SEQ))
            rates, _ = interleaved_rounds(steps, args.rounds, args.round_s)
        del data
    first = args.models[0]
    print(f"{'model':24} {'chars/s':>9} {'x ' + first:>20}")
    for spec, r in rates.items():
        ratio = statistics.median(a / b for a, b in zip(r, rates[first], strict=True))
        print(f"{spec:24} {statistics.median(r):9,.0f} {ratio:20.2f}")


if __name__ == "__main__":
    main()
