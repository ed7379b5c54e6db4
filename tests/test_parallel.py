"""Data parallelism over worker processes: the same maths as one process, and robust workers."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rnncli.model import Model
from rnncli.parallel import ShardedModel, WorkerError, resolve_workers, shard_sizes

B, T, V, H = 7, 5, 11, 8


def make_model(cell="lstm", dropout=0.0, seed=1):
    return Model(V, cell, H, 2, dropout=dropout, dtype="float64", seed=seed)


def copy_of(model: Model) -> Model:
    return Model.from_params({k: v.copy() for k, v in model.params.items()}, model.cell)


def window(seed=0):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    mask = rng.random((B, T)) < 0.7
    return x, y, mask


def test_shard_sizes_and_worker_counts():
    assert shard_sizes(7, 3) == [3, 2, 2]
    assert shard_sizes(50, 2) == [25, 25]
    assert resolve_workers(4, 50) == 4
    assert resolve_workers(4, 3) == 3  # never more workers than streams
    assert 1 <= resolve_workers(0, 50) <= os.cpu_count()


@pytest.mark.parametrize("cell,workers", [("lstm", 2), ("gru", 3), ("rnn", 3)])
def test_sharded_model_equals_one_process(cell, workers):
    model = make_model(cell)
    reference = copy_of(model)
    x, y, mask = window()
    state = np.random.default_rng(1).standard_normal(model.zero_state(B).shape)
    with ShardedModel(model, B, T, workers) as sharded:
        for m in (None, mask):
            loss, final, cache = sharded.forward(x, y, state, mask=m)
            grads, dstate0 = sharded.backward(cache)
            ref_loss, ref_final, ref_cache = reference.forward(x, y, state, mask=m)
            ref_grads, ref_dstate0 = reference.backward(ref_cache)
            assert loss == pytest.approx(ref_loss, rel=1e-13)
            np.testing.assert_allclose(final, ref_final, rtol=1e-13, atol=1e-15)
            np.testing.assert_allclose(dstate0, ref_dstate0, rtol=1e-11, atol=1e-15)
            assert list(grads) == list(ref_grads)
            for name, g in grads.items():
                np.testing.assert_allclose(g, ref_grads[name], rtol=1e-11, atol=1e-15)


def test_updates_reach_the_workers_and_close_hands_the_parameters_back():
    model = make_model()
    reference = copy_of(model)
    x, y, _ = window()
    sharded = ShardedModel(model, B, T, 2)
    procs = list(sharded._procs)
    for name in model.params:  # an optimizer's in-place update, as the trainer makes
        model.params[name] *= 0.5
        reference.params[name] *= 0.5
    loss, _, _ = sharded.forward(x, y, model.zero_state(B))
    assert loss == pytest.approx(reference.forward(x, y, model.zero_state(B))[0], rel=1e-13)
    sharded.close()
    assert all(proc.poll() is not None for proc in procs)
    for name, p in model.params.items():
        assert p.base is None and np.array_equal(p, reference.params[name])


def test_dropout_masks_come_from_one_draw_of_the_callers_generator():
    x, y, _ = window()
    losses = []
    for _ in range(2):
        model = make_model(dropout=0.5)
        rng = np.random.default_rng(5)
        with ShardedModel(model, B, T, 2) as sharded:
            losses.append(sharded.forward(x, y, model.zero_state(B), rng=rng)[0])
            without = sharded.forward(x, y, model.zero_state(B))[0]
        expected = np.random.default_rng(5)
        expected.integers(2**63)
        assert rng.bit_generator.state == expected.bit_generator.state
    assert losses[0] == losses[1] != without


def test_a_failing_command_is_reported_and_the_workers_go_on():
    model = make_model()
    x, y, _ = window()
    with ShardedModel(model, B, T, 2) as sharded:
        bad = x.copy()
        bad[-1, 0] = V  # out of range: only the last shard's worker sees it
        with pytest.raises(WorkerError, match=r"worker 1: IndexError"):
            sharded.forward(bad, y, model.zero_state(B))
        with pytest.raises(ValueError, match="stale cache"):
            sharded.backward(-1)
        loss, _, cache = sharded.forward(x, y, model.zero_state(B))
        assert np.isfinite(loss) and sharded.backward(cache)[0]


def test_a_dead_worker_is_reported():
    model = make_model()
    x, y, _ = window()
    with ShardedModel(model, B, T, 2) as sharded:
        sharded._procs[1].kill()
        sharded._procs[1].wait()
        with pytest.raises(WorkerError, match=r"worker 1 exited unexpectedly \(exit code -9\)"):
            sharded.forward(x, y, model.zero_state(B))


ORPHAN = """
import os, signal, sys
from rnncli.model import Model
from rnncli.parallel import ShardedModel
sharded = ShardedModel(Model(11, "lstm", 8, 1), 4, 5, 2)
print(" ".join(str(p.pid) for p in sharded._procs), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"  # exited; whoever adopted it has not reaped it yet


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_workers_exit_when_the_main_process_is_killed():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-c", ORPHAN], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while not all(gone(pid) for pid in pids):
        assert time.monotonic() < deadline, "workers outlived their main process"
        time.sleep(0.05)
