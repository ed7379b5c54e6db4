"""How many threads BLAS may use: the cores this process may run on, less those that other work
is measured to keep busy. Imports no numpy: BLAS reads its thread count from the environment
once, when numpy loads, so the count is set before that, in a new process or at start-up."""

from __future__ import annotations

import os

BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                         "VECLIB_MAXIMUM_THREADS")  # fmt: skip


def blas_thread_env(threads: int) -> dict[str, str]:
    """This process's environment with the BLAS thread count set to ``threads``: BLAS libraries
    read it once, when numpy loads, so it serves a new process."""
    return {**os.environ, **{name: str(threads) for name in BLAS_THREAD_VARIABLES}}


def usable_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def busy_cores() -> float:
    """Cores that other work kept busy: the load average of the last minute (processes running
    or waiting to run); 0 where the system does not say."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def free_cores(cores: int, busy: float) -> int:
    """Threads for one process's BLAS: the ``cores`` it may use less the ``busy`` ones, at least
    one. A BLAS thread that shares its core with other work makes the rest wait for it at every
    product (OpenBLAS's threads also spin while they wait), which costs far more than the core
    gains (measured in the benchmarks' "BLAS threads of one-process commands")."""
    return max(1, min(cores, int(cores - busy + 0.5)))


def choose_blas_threads(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The BLAS thread variables to set for a one-process command, measured as ``free_cores``;
    none when the user has set any of them (theirs is the choice)."""
    environ = os.environ if environ is None else environ
    if any(name in environ for name in BLAS_THREAD_VARIABLES):
        return {}
    threads = free_cores(usable_cores(), busy_cores())
    return {name: str(threads) for name in BLAS_THREAD_VARIABLES}
