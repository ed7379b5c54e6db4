"""Where a worker's training step goes: ``python -m tests.bench.breakdown lstm 2x256``.

With ``workers: N`` each of N processes runs forward and backward on its share of the B
streams with one BLAS thread (``rnncli.parallel``). This program times that share, n streams
(the largest shard) of a T = 50 window at V = 65, on one BLAS thread, and splits its time into:

- the recurrent products, two per layer and step: ``Wh^T h_{t-1}`` forward and ``Wh da_t``
  backward, (G*H x H) and (H x G*H) times (. x n): small GEMMs that the recurrence forbids
  batching;
- the batched products over all T * n rows: ``dWh`` of every layer, the input projection,
  ``dx`` and ``dWx`` of every layer above the first (the first one gathers and scatter-adds
  rows of its one-hot input instead), and the output layer's three;
- the rest, by difference: elementwise ufuncs, copies between layouts, gathers, scatter-adds,
  the softmax and Python.

Each product is timed alone, at its shape, with its operands warm in the cache, so their sum
is an estimate of their share of the whole step. A last table times the forward recurrent
product at several stream counts (OpenBLAS's speed per FLOP depends on the count, and on more
than its size) and, split by gate rows over the workers instead of by streams, at all B.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from rnncli import cells
from rnncli.model import Model
from rnncli.parallel import shard_sizes, usable_cores
from tests.bench.machine import blas_name, cpu_model, pin_threads

SEQ, VOCAB = 50, 65
GATES = {"rnn": 1, "lstm": 4, "gru": 3, "mingru": 2, "minlstm": 3}
STREAM_COUNTS = (16, 24, 25, 26, 32, 48, 50)


def median_seconds(call: Callable[[], object], reps: int) -> float:
    """Median wall time of ``call`` over ``reps`` runs, after warm-up runs (the first runs
    allocate and first touch the layers' buffers)."""
    for _ in range(3):
        call()
    times = []
    for _ in range(reps):
        begin = time.perf_counter()
        call()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def product_seconds(m: int, k: int, n: int, reps: int) -> float:
    """Median time of one float32 (m x k) @ (k x n) numpy matmul into a preallocated output."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    out = np.empty((m, n), dtype=np.float32)
    return median_seconds(lambda: np.matmul(a, b, out=out), reps)


def products(
    cell: str, num_layers: int, H: int, n: int, V: int = VOCAB
) -> dict[str, list[tuple[int, ...]]]:
    """The GEMMs of one window's forward and backward on n streams, as (m, k, n, count) each,
    in two groups: per step (recurrent) and batched over the T * n rows."""
    GH, rows = GATES[cell] * H, SEQ * n
    has_wh = cells.get(cell).recurrent  # minGRU and minLSTM have no recurrent product
    recurrent = [(GH, H, n, SEQ), (H, GH, n, SEQ)] * num_layers * has_wh
    batched = [(H, rows, GH, 1)] * num_layers * has_wh  # dWh
    batched += [(rows, H, GH, 1), (rows, GH, H, 1), (H, rows, GH, 1)] * (num_layers - 1)
    batched += [(rows, H, V, 1), (rows, V, H, 1), (H, rows, V, 1)]  # output layer
    return {"recurrent": recurrent, "batched": batched}


def window_seconds(cell: str, num_layers: int, H: int, n: int, reps: int) -> float:
    """Median time of ``Model.forward`` + ``Model.backward`` on one (n, T) window."""
    model = Model(VOCAB, cell, H, num_layers, seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, VOCAB, (2, n, SEQ))
    state = model.zero_state(n)
    return median_seconds(lambda: model.backward(model.forward(x, y, state)[2]), reps)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.breakdown", description=__doc__.splitlines()[0]
    )
    parser.add_argument("cell", choices=tuple(GATES))
    parser.add_argument("size", help="LAYERSxHIDDEN, e.g. 2x256")
    parser.add_argument("--batch", type=int, default=50, help="B [default: %(default)s]")
    parser.add_argument(
        "--workers", type=int, default=usable_cores(), help="N [default: the usable cores]"
    )
    parser.add_argument("--reps", type=int, default=30, help="timed runs of each part")
    args = parser.parse_args()
    try:
        num_layers, H = (int(part) for part in args.size.lower().split("x"))
    except ValueError:
        num_layers = H = 0
    if num_layers < 1 or H < 1:
        parser.error(f"size must be LAYERSxHIDDEN, e.g. 2x256, got {args.size!r}")
    if not 1 <= args.workers <= args.batch:
        parser.error("workers must be in [1, batch]")
    pin_threads(1, "tests.bench.breakdown")
    n = max(shard_sizes(args.batch, args.workers))
    print(
        f"{args.cell} {num_layers}x{H}, V={VOCAB}, T={SEQ}: one worker's share, {n} of B="
        f"{args.batch} streams ({args.workers} workers), forward and backward, 1 BLAS thread"
    )
    print(f"numpy {np.__version__} with {blas_name()}; {cpu_model()}")

    total = window_seconds(args.cell, num_layers, H, n, args.reps)
    parts, flops = {}, {}
    for group, shapes in products(args.cell, num_layers, H, n).items():
        parts[group] = sum(c * product_seconds(m, k, q, args.reps) for m, k, q, c in shapes)
        flops[group] = sum(2 * m * k * q * c for m, k, q, c in shapes)
    rest = total - sum(parts.values())
    print(f"\n  {'part':<44}{'ms':>8}{'share':>8}{'GFLOP/s':>9}")
    rows = [
        ("forward + backward (Model)", total, sum(flops.values())),
        (f"recurrent products, {2 * num_layers} per step at {n} streams", parts["recurrent"],
         flops["recurrent"]),
        (f"batched products over T * {n} rows", parts["batched"], flops["batched"]),
        ("the rest (elementwise, copies, gathers, ...)", rest, 0),
    ]  # fmt: skip
    for name, seconds, count in rows:
        rate = f"{count / seconds / 1e9:9.0f}" if count else f"{'':>9}"
        print(f"  {name:<44}{seconds * 1e3:8.2f}{seconds / total:8.0%}{rate}")
    print(f"  that is {n * SEQ / total:,.0f} characters per second for this worker")

    GH = GATES[args.cell] * H
    print(f"\n  forward recurrent product ({GH} x {H}) @ ({H} x n), alone:")
    print(f"  {'n':>4}{'us':>9}{'us/stream':>11}{'GFLOP/s':>9}")
    for q in STREAM_COUNTS:
        us = product_seconds(GH, H, q, max(args.reps, 200)) * 1e6
        print(f"  {q:>4}{us:9.1f}{us / q:11.2f}{2 * GH * H * q / us / 1e3:9.0f}")
    if args.workers > 1:  # the alternative split: every worker all B streams, a share of rows
        share = -(-GH // args.workers)
        us = product_seconds(share, H, args.batch, max(args.reps, 200)) * 1e6
        print(
            f"  split by gate rows instead, each worker's ({share} x {H}) @ ({H} x {args.batch}) "
            f"takes {us:.1f} us"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
