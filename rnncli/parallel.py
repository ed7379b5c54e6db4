"""Data parallelism: the B streams of every window split into shards, one per worker process.

A window's loss is the mean over its N scored characters. With n_k of them in shard k,

    loss = sum_k (n_k / N) loss_k        grad = sum_k (n_k / N) grad_k,

so W processes that each run ``Model.forward`` and ``Model.backward`` on their own streams give
the whole window's loss and gradients, equal to one process's up to the order of float additions
(the same W gives the same bits on every run, which exact resume relies on).

Why processes: numpy runs its elementwise maths on one core, and a recurrent layer's per-step
GEMMs are too small to gain much from a second BLAS thread, so one process leaves the second
core mostly idle. Two single-threaded processes with half the streams each keep both cores busy
(docs/benchmarks.md has the speed-ups; the largest models gain least, their time going to GEMMs
that two BLAS threads already share). Threads would not: Python holds the GIL between numpy
calls.

How: the parameters, each shard's inputs and states, and each shard's flat gradient vector live in
one shared memory file that every process maps. The main process writes a shard's inputs, sends a
command (a typed message of fixed size per kind: ``Forward``, ``Backward``, ``Reduce``,
``Update``) down the worker's stdin and reads a fixed-size reply from its stdout; nothing is
pickled. Workers never see the corpus or a checkpoint; the main process tells them the learning
rate, step count and clipping of each update. The update is shared out too: each worker owns a
slice of the flat parameter vector, sums the shards' gradients over it (into shard 0's vector),
then clips and updates that slice of the parameters and of the optimizer's state, which lives in
the shared file as well, each parameter in it at its rate factor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import math
import mmap
import os
import signal
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import cells
from .model import Model, check_fresh, check_window
from .optim import (
    Optimizer,
    check_clip_mode,
    clip_,
    clip_gradients,
    make_optimizer,
    squared_norm,
)
from .threads import blas_thread_env, usable_cores

# Commands: a code byte, then the command's own fields (one struct per command); nothing is
# pickled. Each worker answers every command with one reply.


@dataclasses.dataclass(frozen=True)
class Forward:
    """Run ``Model.forward`` on the shard; ``seed`` (with ``seeded``) seeds its dropout masks."""

    masked: bool
    seeded: bool
    seed: int
    FORMAT = struct.Struct("<??Q")


@dataclasses.dataclass(frozen=True)
class Backward:
    """Run ``Model.backward``, scaling the shard's gradients by its share of the loss."""

    weight: float
    FORMAT = struct.Struct("<d")


@dataclasses.dataclass(frozen=True)
class Reduce:
    """Sum the shards' gradients over the worker's slice; reply its squared norm."""

    FORMAT = struct.Struct("<")


@dataclasses.dataclass(frozen=True)
class Update:
    """Clip (by ``norm`` when ``clip_norm``, else by value) and update the worker's slice of the
    parameters at step ``t``."""

    lr: float
    threshold: float
    norm: float
    t: int
    clip_norm: bool
    FORMAT = struct.Struct("<dddQ?")


_MESSAGES = (Forward, Backward, Reduce, Update)  # a message's code is its index here
_CODES = {cls: code for code, cls in enumerate(_MESSAGES)}


def _pack(message) -> bytes:
    fields = dataclasses.astuple(message)
    return bytes([_CODES[type(message)]]) + message.FORMAT.pack(*fields)


# Reply: status (0 ok, 1 error), a float (the shard's loss; after Reduce the squared norm of the
# worker's slice of the gradient), the length of the error text that follows.
_REPLY = struct.Struct("<BdI")
_ALIGN = 64  # bytes: every shared array starts on a cache line


class WorkerError(RuntimeError):
    """A worker process failed or died; the message says which and why, in one line."""


def resolve_workers(requested: int, batch_size: int) -> int:
    """The number of processes to train with: ``requested``, or with 0 one per usable core;
    never more than there are streams to share out. One where processes cannot inherit the
    shared file (not POSIX)."""
    if os.name != "posix":
        return 1
    return max(1, min(requested or usable_cores(), batch_size))


def shard_sizes(batch_size: int, workers: int) -> list[int]:
    """Streams per shard: contiguous blocks whose sizes differ by at most one."""
    return [len(a) for a in np.array_split(np.arange(batch_size), workers)]


# ----------------------------------------------------------------------------------------------
# The shared memory: one file, laid out identically by every process from the same spec


def _num_params(spec: dict) -> int:
    return sum(int(np.prod(shape)) for _, shape in spec["params"])


def _layout(spec: dict) -> tuple[dict[str, tuple[int, tuple, str]], int]:
    """(name -> (byte offset, shape, dtype), total bytes) of every shared array.

    ``params``: all parameters as one flat vector; ``slot.NAME`` the same for each state
    buffer of the optimizer (Adam's ``m`` and ``v``); per shard k: ``x.k``, ``y.k`` (b_k, T) ids,
    ``mask.k`` (b_k, T) weights, ``state.k``, ``final.k``, ``dstate.k`` (L, S, b_k, H) and
    ``grads.k``, a flat vector like ``params``.
    """
    num_params = _num_params(spec)
    L, S, H, T, dtype = (spec[k] for k in ("num_layers", "states", "hidden_size", "seq_length",
                                            "dtype"))  # fmt: skip
    vectors = ["params"] + [f"slot.{slot}" for slot in spec["slots"]]
    arrays = [(name, (num_params,), dtype) for name in vectors]
    for k, b in enumerate(spec["shards"]):
        arrays += [(f"x.{k}", (b, T), "int64"), (f"y.{k}", (b, T), "int64"),
                   (f"mask.{k}", (b, T), "float64")]  # fmt: skip
        arrays += [(f"{name}.{k}", (L, S, b, H), dtype) for name in ("state", "final", "dstate")]
        arrays.append((f"grads.{k}", (num_params,), dtype))
    layout, offset = {}, 0
    for name, shape, dt in arrays:
        layout[name] = (offset, tuple(shape), dt)
        nbytes = int(np.prod(shape)) * np.dtype(dt).itemsize
        offset += -(-nbytes // _ALIGN) * _ALIGN
    return layout, max(offset, 1)


def _views(buffer, layout) -> dict[str, np.ndarray]:
    return {
        name: np.ndarray(shape, dtype=dt, buffer=buffer, offset=offset)
        for name, (offset, shape, dt) in layout.items()
    }


def _by_name(flat: np.ndarray, spec: dict) -> dict[str, np.ndarray]:
    """Views of a flat parameter-shaped vector, one per parameter, in the spec's order."""
    out, start = {}, 0
    for name, shape in spec["params"]:
        size = int(np.prod(shape))
        out[name] = flat[start : start + size].reshape(shape)
        start += size
    return out


def _rate_segments(spec: dict, part: slice) -> list[tuple[slice, float]]:
    """``part`` of the flat parameter vector cut where the parameters' rate factors change:
    (slice relative to ``part``, factor) pieces, one piece when every factor is 1."""
    factors, segments, start = spec["rate_factors"], [], 0
    for name, shape in spec["params"]:
        end = start + int(np.prod(shape))
        lo, hi = max(start, part.start), min(end, part.stop)
        if lo < hi:
            factor = factors.get(name, 1.0)
            if segments and segments[-1][1] == factor:  # extend the previous piece
                segments[-1] = (slice(segments[-1][0].start, hi - part.start), factor)
            else:
                segments.append((slice(lo - part.start, hi - part.start), factor))
        start = end
    return segments


def _reduce_slice(spec: dict, index: int) -> slice:
    """The part of the flat gradient vector that worker ``index`` sums."""
    num_params = _num_params(spec)
    bounds = np.linspace(0, num_params, len(spec["shards"]) + 1).astype(int) // 16 * 16
    bounds[-1] = num_params
    return slice(int(bounds[index]), int(bounds[index + 1]))


def _shared_file(size: int):
    """An anonymous file of ``size`` bytes to map in every process; gone when all close it."""
    if hasattr(os, "memfd_create"):  # Linux: in memory, not bound by /dev/shm's size limit
        fd = os.memfd_create("rnncli-shards", 0)
    else:
        with tempfile.TemporaryFile() as f:  # already unlinked: nothing to clean up
            fd = os.dup(f.fileno())
    os.ftruncate(fd, size)
    return fd


# ----------------------------------------------------------------------------------------------
# The main process's side


class SingleProcess:
    """One training step's phases for a model trained in this process: ``Model.forward`` and
    ``Model.backward``, and ``update``. The counterpart of ``ShardedModel``."""

    def __init__(self, model: Model, optimizer: Optimizer):
        self.model, self.optimizer = model, optimizer
        self.zero_state = model.zero_state
        self.forward = model.forward
        self.backward = model.backward

    def __enter__(self) -> SingleProcess:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def update(self, grads: dict[str, np.ndarray], mode: str, threshold: float) -> float:
        """Clip ``grads`` (``optim.clip_gradients``), then take an optimizer step with them
        unless their norm is not finite; returns the norm before clipping."""
        norm = clip_gradients(grads, mode, threshold)
        if math.isfinite(norm):
            self.optimizer.step(self.model.params, grads)
        return norm


class ShardedModel:
    """One training step's phases, ``forward``, ``backward`` and ``update``, for (B, T) windows
    whose streams are split over ``workers`` processes; use it as a context manager, or call
    ``close``.

    It takes the model's parameters and the optimizer's state over: meanwhile ``model.params``
    and the optimizer's buffers are views of shared memory (same values), which the caller may
    read and write in place, as the trainer does to save and restore them. ``forward`` and
    ``backward`` take and return what the model's do; the gradients are views that the next
    ``backward`` overwrites.
    """

    def __init__(
        self, model: Model, optimizer: Optimizer, batch_size: int, seq_length: int, workers: int
    ):
        if not 2 <= workers <= batch_size:
            raise ValueError(f"workers must be in [2, batch_size], got {workers}")
        self.model, self.optimizer = model, optimizer
        self.batch_size, self.seq_length = batch_size, seq_length
        sizes = shard_sizes(batch_size, workers)
        self._rows = np.cumsum([0] + sizes)
        self._spec = {
            "cell": model.cell,
            "residual": model.residual,
            "norm": model.norm,
            # a worker lacking the cell imports the module that registered it, from where the
            # main process found it
            "cell_module": model.cell_type.module,
            "import_path": sys.path,
            "dropout": model.dropout,
            "dtype": model.dtype.name,
            "hidden_size": model.hidden_size,
            "num_layers": model.num_layers,
            "states": model.state_slots,
            "seq_length": seq_length,
            "shards": sizes,
            "params": [[name, list(p.shape)] for name, p in model.params.items()],
            "slots": list(optimizer.slots),
            "optimizer": optimizer.recipe,
            "rate_factors": optimizer.rate_factors,
        }
        layout, size = _layout(self._spec)
        self._fd = _shared_file(size)
        self._map = mmap.mmap(self._fd, size)
        self._shared = _views(self._map, layout)
        params = _by_name(self._shared["params"], self._spec)
        for name, p in params.items():
            np.copyto(p, model.params[name])
        model.params = params
        optimizer.adopt_state(
            {slot: _by_name(self._shared[f"slot.{slot}"], self._spec) for slot in optimizer.slots}
        )
        self._grads = _by_name(self._shared["grads.0"], self._spec)
        self._weights = np.zeros(workers)
        self._generation = 0
        self._procs: list[subprocess.Popen] = []
        try:
            self._start_workers(workers)
        except BaseException:
            self.close()
            raise

    def _start_workers(self, workers: int) -> None:
        env = blas_thread_env(max(1, usable_cores() // workers))
        package_root = str(Path(__file__).resolve().parents[1])  # importable as we were
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        for k in range(workers):
            spec = json.dumps({**self._spec, "index": k, "fd": self._fd})
            self._procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "rnncli.parallel", spec],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    pass_fds=(self._fd,),
                    env=env,
                )
            )
        self._replies()  # each worker says it is ready

    def __enter__(self) -> ShardedModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers (end of input tells them to exit) and free the shared memory."""
        for proc in self._procs:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        self._procs = []
        if self._fd is not None:  # the mapping goes when its last view does: gradients may live on
            self.model.params = {name: p.copy() for name, p in self.model.params.items()}
            state = self.optimizer.state_dict()  # copies
            self.optimizer.adopt_state(
                {
                    slot: {name: state[f"{slot}.{name}"] for name in self.model.params}
                    for slot in self.optimizer.slots
                }  # fmt: skip
            )
            self._grads = self._shared = self._map = None
            os.close(self._fd)
            self._fd = None

    def zero_state(self, batch_size: int) -> np.ndarray:
        return self.model.zero_state(batch_size)

    def _send(self, messages: list) -> list[float]:
        """Send messages[k] to worker k; returns their replies' values."""
        for proc, message in zip(self._procs, messages, strict=True):
            with contextlib.suppress(BrokenPipeError):  # a dead worker: its reply says so
                proc.stdin.write(_pack(message))
                proc.stdin.flush()
        return self._replies()

    def _send_all(self, message) -> list[float]:
        return self._send([message] * len(self._procs))

    def _replies(self) -> list[float]:
        values, errors = [], []
        for k, proc in enumerate(self._procs):
            reply = proc.stdout.read(_REPLY.size)
            if len(reply) < _REPLY.size:
                errors.append(f"worker {k} exited unexpectedly (exit code {proc.wait()})")
                continue
            status, value, length = _REPLY.unpack(reply)
            if status:
                errors.append(f"worker {k}: {proc.stdout.read(length).decode()}")
            values.append(value)
        if errors:
            raise WorkerError("; ".join(errors))
        return values

    def forward(self, x, y, state, mask=None, rng: np.random.Generator | None = None):
        """As ``Model.forward``; the dropout masks of shard k come from a generator seeded
        with (a number drawn from ``rng``, k), so ``rng`` advances by one draw per window."""
        x, y, mask = check_window(x, y, mask, (self.batch_size, self.seq_length))
        state = self.model.check_state(state, self.batch_size)
        seeded = rng is not None and self.model.dropout > 0
        seed = int(rng.integers(2**63)) if seeded else 0
        for k, (lo, hi) in enumerate(zip(self._rows[:-1], self._rows[1:], strict=True)):
            np.copyto(self._shared[f"x.{k}"], x[lo:hi])
            np.copyto(self._shared[f"y.{k}"], y[lo:hi])
            np.copyto(self._shared[f"state.{k}"], state[:, :, lo:hi])
            if mask is not None:
                np.copyto(self._shared[f"mask.{k}"], mask[lo:hi])
            self._weights[k] = (hi - lo) * self.seq_length if mask is None else mask[lo:hi].sum()
        losses = self._send_all(Forward(masked=mask is not None, seeded=seeded, seed=seed))
        total = self._weights.sum()
        self._weights /= max(total, np.finfo(np.float64).tiny)
        self._generation += 1
        loss = float(np.dot(self._weights, losses))
        final = np.concatenate([self._shared[f"final.{k}"] for k in range(len(self._procs))], 2)
        return loss, final, self._generation

    def backward(self, cache):
        """As ``Model.backward``: (grads by parameter name, dstate0 (L, S, B, H))."""
        check_fresh(cache, self._generation)
        self._send([Backward(float(w)) for w in self._weights])
        self._norm = math.sqrt(sum(self._send_all(Reduce())))
        workers = range(len(self._procs))
        dstate0 = np.concatenate([self._shared[f"dstate.{k}"] for k in workers], 2)
        return self._grads, dstate0

    def update(self, grads: dict[str, np.ndarray], mode: str, threshold: float) -> float:
        """As ``SingleProcess.update`` for the gradients of the latest ``backward`` (``grads``),
        each worker clipping and updating its slice; returns the norm before clipping."""
        if grads is not self._grads:
            raise ValueError("update takes the gradients that backward returned")
        check_clip_mode(mode)
        if math.isfinite(self._norm):
            self.optimizer.t += 1
            update = Update(self.optimizer.lr, threshold, self._norm, self.optimizer.t,
                            clip_norm=mode == "norm")  # fmt: skip
            self._send_all(update)
        return self._norm


def data_parallel(
    model: Model, optimizer: Optimizer, batch_size: int, seq_length: int, workers: int
):
    """What runs a training step's phases: ``SingleProcess`` for one worker, else a
    ``ShardedModel`` over ``workers`` processes. A context manager: the workers stop on exit."""
    if workers == 1:
        return SingleProcess(model, optimizer)
    return ShardedModel(model, optimizer, batch_size, seq_length, workers)


# ----------------------------------------------------------------------------------------------
# The worker's side: ``python -m rnncli.parallel SPEC``


class _Worker:
    """A worker's model, optimizer and views of the shared memory, and one method per command."""

    def __init__(self, spec: dict):
        self.k = k = spec["index"]
        self.spec, size = spec, os.fstat(spec["fd"]).st_size
        self.shared = shared = _views(mmap.mmap(spec["fd"], size), _layout(spec)[0])
        if spec["cell"] not in cells.CELLS:  # registered outside rnncli, after import
            sys.path[:] = list(dict.fromkeys(spec["import_path"] + sys.path))
            importlib.import_module(spec["cell_module"])
        self.model = Model.from_params(_by_name(shared["params"], spec), spec["cell"],
                                       spec["dropout"], spec["residual"], spec["norm"])  # fmt: skip
        self.grads_out = _by_name(shared[f"grads.{k}"], spec)
        self.mine = mine = _reduce_slice(spec, k)
        self.x, self.y, self.mask, self.state = (
            shared[f"{name}.{k}"] for name in ("x", "y", "mask", "state")
        )
        self.optimizer = make_optimizer(params={}, lr=0.0, **spec["optimizer"])
        self.grad = shared["grads.0"][mine]  # the batch's gradient, once reduced, over our slice
        params = shared["params"][mine]
        slots = {s: shared[f"slot.{s}"][mine] for s in spec["slots"]}
        # The views each update works on, cut once here where the rate factor changes.
        self.pieces = [
            (params[piece], self.grad[piece], {s: a[piece] for s, a in slots.items()}, factor)
            for piece, factor in _rate_segments(spec, mine)
        ]
        self.cache = None

    def forward(self, m: Forward) -> float:
        rng = np.random.default_rng([m.seed, self.k]) if m.seeded else None
        mask = self.mask if m.masked else None
        loss, final, self.cache = self.model.forward(self.x, self.y, self.state, mask, rng)
        np.copyto(self.shared[f"final.{self.k}"], final)
        return loss

    def backward(self, m: Backward) -> float:
        grads, dstate0 = self.model.backward(self.cache)  # of the shard's mean loss: scale
        w = self.model.dtype.type(m.weight)
        for name, g in grads.items():
            np.multiply(g, w, out=self.grads_out[name])
        np.multiply(dstate0, w, out=self.shared[f"dstate.{self.k}"])
        return 0.0

    def reduce(self, m: Reduce) -> float:
        for j in range(1, len(self.spec["shards"])):
            self.grad += self.shared[f"grads.{j}"][self.mine]
        return squared_norm([self.grad])

    def update(self, m: Update) -> float:
        clip_([self.grad], "norm" if m.clip_norm else "value", m.threshold, m.norm)
        self.optimizer.lr, self.optimizer.t = m.lr, m.t
        for params, grad, slots, factor in self.pieces:
            self.optimizer.update(params, grad, slots, factor)
        return 0.0

    def serve(self, commands, replies) -> None:
        """Answer commands until the main process closes our input."""
        handlers = dict(zip(_MESSAGES, (self.forward, self.backward, self.reduce, self.update),
                            strict=True))  # fmt: skip
        replies.write(_REPLY.pack(0, 0.0, 0))  # ready
        replies.flush()
        while len(code := commands.read(1)) == 1:
            try:
                if code[0] >= len(_MESSAGES):
                    raise ValueError(f"unknown command code {code[0]}")
                cls = _MESSAGES[code[0]]
                fields = commands.read(cls.FORMAT.size)
                if len(fields) < cls.FORMAT.size:
                    return  # the main process went away mid-command
                reply = _REPLY.pack(0, handlers[cls](cls(*cls.FORMAT.unpack(fields))), 0)
            except Exception as err:  # reported to the main process, which raises WorkerError
                text = f"{type(err).__name__}: {err}".encode()
                reply = _REPLY.pack(1, 0.0, len(text)) + text
            replies.write(reply)
            replies.flush()


def _worker_main(argv: list[str]) -> None:
    # The main process handles SIGINT and SIGTERM and finishes the step; a terminal's Ctrl-C
    # reaches the whole process group, so the workers ignore both and exit at end of input.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints cannot corrupt the replies
    np.seterr(all="ignore")  # the main process reports a non-finite step once, in words
    _Worker(json.loads(argv[0])).serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
