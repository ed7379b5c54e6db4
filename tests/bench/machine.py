"""Facts about the machine and its BLAS for the benchmark programs (no PyTorch needed)."""

from __future__ import annotations

import ctypes
import os
import platform
import re
import sys
from pathlib import Path

import numpy as np

from rnncli.threads import BLAS_THREAD_VARIABLES, blas_thread_env


def pin_threads(threads: int, module: str) -> None:
    """Make numpy's BLAS use ``threads`` threads: BLAS libraries read the count from the
    environment once, when numpy loads, so this re-runs the program once with it set."""
    env = blas_thread_env(threads)
    if all(os.environ.get(name) == env[name] for name in BLAS_THREAD_VARIABLES):
        return
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], env)


def blas_threads() -> int | None:
    """Threads of the BLAS that numpy loaded, asked from the library itself (None if unknown)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    libraries = {
        line.split()[-1] for line in maps.splitlines() if re.search(r"openblas|mkl_rt", line)
    }
    getters = (
        "scipy_openblas_get_num_threads64_",
        "openblas_get_num_threads64_",
        "openblas_get_num_threads",
        "MKL_Get_Max_Threads",
    )
    for library in sorted(libraries):
        try:
            handle = ctypes.CDLL(library)
        except OSError:
            continue
        for getter in getters:
            if hasattr(handle, getter):
                return int(getattr(handle, getter)())
    return None


def blas_name() -> str:
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except (TypeError, KeyError):  # numpy < 1.25 has no mode="dicts"
        return "unknown"
    return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
