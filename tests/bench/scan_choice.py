"""The elementwise recurrence h_t = a_t h_{t-1} + b_t over a window, two ways:
``python -m tests.bench.scan_choice``.

minGRU and minLSTM (``rnncli.scan``) run it as a loop over T of two ufunc calls on (B, H)
arrays. The alternative is the log-space parallel scan (Heinsen 2023, "Efficient
Parallelization of a Ubiquitous Sequential Computation"): ``a* = cumsum(log a)``,
``log h = a* + logcumsumexp(log b - a*)``, a few whole-window ufuncs and no Python loop, but
with a log, an exp and a logaddexp per element and the cumulative ops along T. It needs b > 0
(the paper's log-space mode keeps h~ positive for it); this times it on positive inputs and
checks that both agree. Prints the median of ``--repeats`` runs of each, interleaved.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def loop(a: np.ndarray, b: np.ndarray, h0: np.ndarray, h: np.ndarray) -> np.ndarray:
    """h (T + 1, B, H): h_0, then the recurrence, as ``rnncli.scan.scan_forward`` runs it."""
    np.copyto(h[0], h0)
    for t in range(a.shape[0]):
        np.multiply(a[t], h[t], out=h[t + 1])
        h[t + 1] += b[t]
    return h[1:]


def log_space(a: np.ndarray, b: np.ndarray, h0: np.ndarray) -> np.ndarray:
    """The same recurrence by Heinsen's log-space scan (h0 > 0, b > 0)."""
    log_a = np.log(a)
    a_star = np.cumsum(log_a, axis=0)
    log_terms = np.log(b) - a_star
    log_terms[0] = np.logaddexp(log_terms[0], np.log(h0))  # h0 enters with weight a*_t
    return np.exp(a_star + np.logaddexp.accumulate(log_terms, axis=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--seq", type=int, nargs="+", default=[50, 100])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'T':>4} {'B':>4} {'H':>5}  {'loop ms':>8}  {'log-space ms':>12}")
    for T in args.seq:
        for H in args.hidden:
            shape = (T, args.batch, H)
            a = rng.uniform(0.05, 0.95, shape).astype(np.float32)
            b = rng.uniform(0.01, 1.0, shape).astype(np.float32)
            h0 = rng.uniform(0.01, 1.0, shape[1:]).astype(np.float32)
            h = np.empty((T + 1,) + shape[1:], np.float32)
            np.testing.assert_allclose(loop(a, b, h0, h), log_space(a, b, h0), rtol=1e-3)
            times = {"loop": [], "log": []}
            for _ in range(args.repeats):
                start = time.perf_counter()
                loop(a, b, h0, h)
                times["loop"].append(time.perf_counter() - start)
                start = time.perf_counter()
                log_space(a, b, h0)
                times["log"].append(time.perf_counter() - start)
            ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
            print(f"{T:>4} {args.batch:>4} {H:>5}  {ms['loop']:>8.2f}  {ms['log']:>12.2f}")


if __name__ == "__main__":
    main()
