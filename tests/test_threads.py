"""The BLAS threads of the one-process commands: chosen from the free cores before numpy loads,
left to the user when they set them, and what BLAS then really uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnncli.launch import ONE_PROCESS, command_name
from rnncli.threads import BLAS_THREAD_VARIABLES, choose_blas_threads, free_cores

ROOT = Path(__file__).resolve().parents[1]


def test_free_cores_leaves_the_busy_ones_to_other_work():
    assert free_cores(2, 0.1) == 2  # an idle laptop: every core
    assert free_cores(2, 0.6) == 1  # one core mostly taken
    assert free_cores(2, 11.4) == 1  # a busy machine: one thread, never none
    assert free_cores(16, 3.2) == 13
    assert free_cores(1, 0.0) == 1


@given(cores=st.integers(1, 512), busy=st.floats(0, 1e6, allow_nan=False))
def test_free_cores_is_between_one_and_the_cores(cores, busy):
    assert 1 <= free_cores(cores, busy) <= cores


def test_a_thread_count_the_user_set_is_theirs():
    for name in BLAS_THREAD_VARIABLES:
        assert choose_blas_threads({name: "3"}) == {}
    chosen = choose_blas_threads({})
    assert set(chosen) == set(BLAS_THREAD_VARIABLES) and len(set(chosen.values())) == 1


def test_the_command_is_the_first_argument_that_is_not_an_option():
    assert command_name(["eval", "runs/x", "--split", "test"]) == "eval"
    assert command_name(["--help"]) is None and command_name([]) is None
    assert command_name(["-h", "sample"]) == "sample"
    assert {"eval", "sample", "write", "report"} == ONE_PROCESS


# A child that starts `rnn ARGS` as the console script does, then reports what its BLAS uses:
# the OpenBLAS that numpy loaded, asked through its own C function (Linux: found in the maps).
CHILD = """
import ctypes, json, os, sys
sys.argv = ["rnn", *json.loads(sys.argv[1])]
assert "numpy" not in sys.modules
from rnncli import launch
try:
    launch.main()
except SystemExit:
    pass
maps = open("/proc/self/maps").read().split()
libs = sorted({p for p in maps if "openblas" in os.path.basename(p).lower()})
threads = None
for lib in libs:
    handle = ctypes.CDLL(lib)
    for name in ("openblas_get_num_threads", "openblas_get_num_threads64_",
                 "scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads"):
        if hasattr(handle, name):
            threads = getattr(handle, name)()
print(json.dumps({"env": os.environ.get("OPENBLAS_NUM_THREADS"), "blas": threads}))
"""


def child(args: list[str], **env) -> dict:
    environ = {k: v for k, v in os.environ.items() if k not in BLAS_THREAD_VARIABLES}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(args)],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_one_process_commands_give_blas_the_measured_count_before_numpy_loads():
    seen = child(["sample", "--help"])
    if seen["blas"] is None:
        pytest.skip("numpy's BLAS here is not an OpenBLAS that says its thread count")
    measured = free_cores(len(os.sched_getaffinity(0)), os.getloadavg()[0])
    assert seen["env"] is not None and 1 <= int(seen["env"]) <= len(os.sched_getaffinity(0))
    assert seen["blas"] == int(seen["env"])  # BLAS took it: it was set before numpy loaded
    assert abs(int(seen["env"]) - measured) <= 1  # the load may move between the two readings
    user = child(["eval", "--help"], OPENBLAS_NUM_THREADS="1")
    assert user == {"env": "1", "blas": 1}
    train = child(["train", "--help"])  # train's workers set their own: the process keeps BLAS's
    assert train["env"] is None
