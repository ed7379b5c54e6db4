"""Data parallelism over worker processes: the same maths as one process, and robust workers."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rnncli import cells
from rnncli.model import Model
from rnncli.optim import OPTIMIZERS, make_optimizer
from rnncli.parallel import (
    _MESSAGES,
    Backward,
    Forward,
    Reduce,
    ShardedModel,
    SingleProcess,
    Update,
    WorkerError,
    _pack,
    _rate_segments,
    resolve_workers,
    shard_sizes,
)

B, T, V, H = 7, 5, 11, 8


def make_model(cell="lstm", dropout=0.0, seed=1, embedding_size=0):
    return Model(V, cell, H, 2, dropout=dropout, dtype="float64", seed=seed,
                 embedding_size=embedding_size)  # fmt: skip


def copy_of(model: Model) -> Model:
    return Model.from_params({k: v.copy() for k, v in model.params.items()}, model.cell)


def sharded(model: Model, workers: int, optimizer: str = "adam", **settings) -> ShardedModel:
    return ShardedModel(model, make_optimizer(optimizer, model.params, 0.01, **settings), B, T,
                        workers)  # fmt: skip


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


@pytest.mark.parametrize("cell,workers", [(cell, 2 + i % 2) for i, cell in enumerate(cells.CELLS)])
def test_sharded_model_equals_one_process(cell, workers):
    model = make_model(cell)
    reference = copy_of(model)
    x, y, mask = window()
    state = np.random.default_rng(1).standard_normal(model.zero_state(B).shape)
    with sharded(model, workers) as net:
        for m in (None, mask):
            loss, final, cache = net.forward(x, y, state, mask=m)
            grads, dstate0 = net.backward(cache)
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
    net = sharded(model, 2)
    procs = list(net._procs)
    for name in model.params:  # an optimizer's in-place update, as the trainer makes
        model.params[name] *= 0.5
        reference.params[name] *= 0.5
    loss, _, _ = net.forward(x, y, model.zero_state(B))
    assert loss == pytest.approx(reference.forward(x, y, model.zero_state(B))[0], rel=1e-13)
    net.close()
    assert all(proc.poll() is not None for proc in procs)
    for name, p in model.params.items():
        assert p.base is None and np.array_equal(p, reference.params[name])


def test_dropout_masks_come_from_one_draw_of_the_callers_generator():
    x, y, _ = window()
    losses = []
    for _ in range(2):
        model = make_model(dropout=0.5)
        rng = np.random.default_rng(5)
        with sharded(model, 2) as net:
            losses.append(net.forward(x, y, model.zero_state(B), rng=rng)[0])
            without = net.forward(x, y, model.zero_state(B))[0]
        expected = np.random.default_rng(5)
        expected.integers(2**63)
        assert rng.bit_generator.state == expected.bit_generator.state
    assert losses[0] == losses[1] != without


def test_a_failing_command_is_reported_and_the_workers_go_on():
    model = make_model()
    x, y, _ = window()
    with sharded(model, 2) as net:
        bad = x.copy()
        bad[-1, 0] = V  # out of range: only the last shard's worker sees it
        with pytest.raises(WorkerError, match=r"worker 1: IndexError"):
            net.forward(bad, y, model.zero_state(B))
        with pytest.raises(ValueError, match="stale cache"):
            net.backward(-1)
        loss, _, cache = net.forward(x, y, model.zero_state(B))
        grads = net.backward(cache)[0]
        reference = copy_of(model)
        ref_loss, _, ref_cache = reference.forward(x, y, model.zero_state(B))
        assert loss == pytest.approx(ref_loss, rel=1e-13)
        ref_grads = reference.backward(ref_cache)[0]
        assert list(grads) == list(ref_grads)
        for name, g in grads.items():
            np.testing.assert_allclose(g, ref_grads[name], rtol=1e-11, atol=1e-15)


def test_a_dead_worker_is_reported():
    model = make_model()
    x, y, _ = window()
    with sharded(model, 2) as net:
        net._procs[1].kill()
        net._procs[1].wait()
        with pytest.raises(WorkerError, match=r"worker 1 exited unexpectedly \(exit code -9\)"):
            net.forward(x, y, model.zero_state(B))


ORPHAN = """
import os, signal, sys
from rnncli import cells
from rnncli.model import Model
from rnncli.optim import OPTIMIZERS, make_optimizer
from rnncli.parallel import ShardedModel
model = Model(11, "lstm", 8, 1)
net = ShardedModel(model, make_optimizer("adam", model.params, 0.01), 4, 5, 2)
print(" ".join(str(p.pid) for p in net._procs), flush=True)
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


CLIPPINGS = [("value", 0.05), ("norm", 0.5), ("value", 0.0), ("norm", 1e9)]


@pytest.mark.parametrize(
    "optimizer,mode,threshold",
    [(name, *CLIPPINGS[i % len(CLIPPINGS)]) for i, name in enumerate(OPTIMIZERS)],
)
def test_updates_in_the_workers_equal_one_process(optimizer, mode, threshold):
    _train_in_workers_and_in_one_process(make_model("gru"), optimizer, mode, threshold)


@pytest.mark.parametrize("cell", cells.CELLS)
def test_workers_train_an_embedded_model_as_one_process(cell):
    model = make_model(cell, embedding_size=3)
    assert model.params["embed.W"].shape == (V, 3)
    _train_in_workers_and_in_one_process(model, "adam", "norm", 0.5)


def _train_in_workers_and_in_one_process(model, optimizer, mode, threshold):
    """Three steps of ``optimizer`` in three workers and in one process: the same gradients'
    norm, parameters and optimizer state, to float rounding."""
    settings = {"momentum": 0.9}  # sgd's; the others ignore it
    reference = copy_of(model)
    one = SingleProcess(reference, make_optimizer(optimizer, reference.params, 0.01, **settings))
    x, y, _ = window()
    with sharded(model, 3, optimizer, **settings) as net:
        for _ in range(3):  # the state (moments, t) carries from step to step
            state = model.zero_state(B)
            grads = net.backward(net.forward(x, y, state)[2])[0]
            norm = net.update(grads, mode, threshold)
            ref_grads = one.backward(one.forward(x, y, state)[2])[0]
            assert norm == pytest.approx(one.update(ref_grads, mode, threshold), rel=1e-12)
            for name, p in model.params.items():
                np.testing.assert_allclose(p, reference.params[name], rtol=1e-11, atol=1e-14)
        saved = net.optimizer.state_dict()
    expected = one.optimizer.state_dict()
    assert saved["t"] == expected["t"] == 3
    for key in expected:
        np.testing.assert_allclose(saved[key], expected[key], rtol=1e-10, atol=1e-14)
    assert all(a.base is None for a in net.optimizer._buffers().values())  # private again


def test_rate_segments_cut_a_worker_s_slice_where_the_factor_changes():
    # flat layout: a 0-4, b 4-10, c 10-15, d 15-17
    spec = {"params": [["a", [4]], ["b", [2, 3]], ["c", [5]], ["d", [2]]],
            "rate_factors": {"b": 2.0, "d": 2.0}}  # fmt: skip
    assert _rate_segments(spec, slice(2, 16)) == [
        (slice(0, 2), 1.0), (slice(2, 8), 2.0), (slice(8, 13), 1.0), (slice(13, 14), 2.0)
    ]  # fmt: skip
    assert _rate_segments(spec, slice(4, 10)) == [(slice(0, 6), 2.0)]
    assert _rate_segments({**spec, "rate_factors": {}}, slice(2, 16)) == [(slice(0, 14), 1.0)]
    assert _rate_segments({**spec, "rate_factors": {"a": 3.0, "b": 3.0}}, slice(0, 17)) == [
        (slice(0, 10), 3.0), (slice(10, 17), 1.0)
    ]  # fmt: skip
    assert _rate_segments(spec, slice(16, 16)) == []


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_rate_factors_in_the_workers_equal_one_process(optimizer):
    """Factors on parameters that straddle the workers' slices (rnn.0.Wh, rnn.1.Wx with 3
    workers) and on one that does not; the run without factors shows they changed something."""
    factors = {"rnn.0.Wx": 4.0, "rnn.0.Wh": 0.25, "rnn.1.Wx": 2.0}
    settings = {"momentum": 0.9}  # sgd's; the others ignore it
    model = make_model("lstm")
    reference, unscaled = copy_of(model), copy_of(model)
    one = SingleProcess(reference, make_optimizer(optimizer, reference.params, 0.01, factors,
                                                  **settings))  # fmt: skip
    plain = SingleProcess(unscaled, make_optimizer(optimizer, unscaled.params, 0.01, **settings))
    x, y, _ = window()
    with sharded(model, 3, optimizer, rate_factors=factors, **settings) as net:
        for _ in range(3):
            state = model.zero_state(B)
            for learner in (net, one, plain):
                grads = learner.backward(learner.forward(x, y, state)[2])[0]
                learner.update(grads, "norm", 0.5)
            for name, p in model.params.items():
                np.testing.assert_allclose(p, reference.params[name], rtol=1e-11, atol=1e-14)
    for name in factors:
        assert not np.allclose(reference.params[name], unscaled.params[name]), name


def test_a_non_finite_gradient_skips_the_update():
    model = make_model()
    x, y, _ = window()
    with sharded(model, 2) as net:
        model.params["rnn.1.Wh"][0, 0] = np.nan  # a NaN in the main process's parameters
        before = {name: p.copy() for name, p in model.params.items()}
        grads = net.backward(net.forward(x, y, model.zero_state(B))[2])[0]
        assert np.isnan(net.update(grads, "value", 5.0))
        assert net.optimizer.t == 0
        for name, p in model.params.items():
            np.testing.assert_array_equal(p, before[name])
        with pytest.raises(ValueError, match="clipping mode"):
            net.update(grads, "elementwise", 5.0)


@pytest.mark.parametrize(
    "message",
    [Forward(masked=True, seeded=False, seed=2**63 + 1), Backward(0.25), Reduce(),
     Update(lr=0.002, threshold=5.0, norm=7.5, t=3, clip_norm=True)],
)  # fmt: skip
def test_each_command_is_one_typed_message(message):
    data = _pack(message)
    cls = _MESSAGES[data[0]]
    assert cls is type(message) and len(data) == 1 + cls.FORMAT.size
    assert cls(*cls.FORMAT.unpack(data[1:])) == message


def test_an_unknown_command_is_reported_and_the_workers_go_on():
    model = make_model()
    x, y, _ = window()
    with sharded(model, 2) as net:
        for proc in net._procs:
            proc.stdin.write(bytes([len(_MESSAGES)]))
            proc.stdin.flush()
        with pytest.raises(WorkerError, match="worker 0: ValueError: unknown command code 4"):
            net._replies()
        assert np.isfinite(net.forward(x, y, model.zero_state(B))[0])
