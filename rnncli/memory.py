"""How much memory a training run needs, estimated from its settings before anything is allocated.

The estimate counts the arrays training keeps: weights, gradients (one set per worker), the
optimizer's slots, the last-good snapshot of both, the optimizer copy a checkpoint save makes,
the per-layer activations a B x T window caches for backpropagation, and the hidden states. It
leaves out the interpreter and numpy themselves (tens of MB) and the memory-mapped corpus, whose
pages the kernel can drop at any time.
"""

from __future__ import annotations

import math
import os
import resource

import numpy as np

from . import cells
from .config import Config
from .model import NO_NORM, Model
from .optim import from_config as optimizer_from_config

GIB = 1 << 30


def parameter_count(cfg: Config, vocab_size: int) -> int:
    """Scalar parameters of the model ``cfg`` describes for ``vocab_size`` characters."""
    shapes = Model.config_shapes(cfg, vocab_size)
    return sum(math.prod(shape) for shape in shapes.values())


def optimizer_slots(cfg: Config) -> int:
    """Parameter-sized arrays the optimizer keeps (Adam 2, SGD with momentum 1, ...), as the
    optimizer itself declares them."""
    return len(optimizer_from_config(cfg, {}).slots)


def training_bytes(cfg: Config, vocab_size: int) -> int:
    """Bytes of the arrays a training run with ``cfg`` holds at its peak (see the module doc)."""
    d = np.dtype(cfg.dtype).itemsize
    P, slots = parameter_count(cfg, vocab_size), optimizer_slots(cfg)
    workers = max(cfg.workers, 1)
    # weights + one gradient per worker + slots, the last-good copy of weights and slots, and
    # the slots' copy a checkpoint save makes
    weights = P * d * (1 + workers + slots + (1 + slots) + slots)
    cell, H, B, T = cells.get(cfg.model), cfg.hidden_size, cfg.batch_size, cfg.seq_length
    # per layer and time step: the gates' activations and their gradient, a few H-vectors (the
    # hidden and cell states, their tanh and gradients), the MLP's units, output and their
    # gradients, a norm's output, normalised input and their gradients at each of its places
    # (the input of the cell and of the MLP), the residual sum, the convolution's input
    # sequence, output, term and their gradients, and the embedded input and its gradient
    mlp = 2 * (cfg.mlp_size + H) if cfg.mlp_size else 0
    norms = 4 * H * (1 + bool(cfg.mlp_size)) if cfg.norm != NO_NORM else 0
    residual = H if cfg.residual else 0
    conv = 5 * H if cfg.conv_size else 0
    per_layer = 2 * cell.gates * H + 6 * H + mlp + norms + residual + conv
    per_step = cfg.num_layers * per_layer + 2 * H + 2 * cfg.embedding_size
    activations = B * T * per_step * d
    state = Model.state_shape(cfg.model, H, cfg.num_layers, B, cfg.conv_size)
    states = 2 * math.prod(state) * d
    return weights + activations + states


def available_bytes() -> int | None:
    """Memory the system can give this process now (MemAvailable, or the cgroup's remaining
    limit if lower); None where neither can be read."""
    figures = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    figures.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
            used = int(f.read().strip())
        if limit.isdigit():
            figures.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    if not figures:
        try:
            figures.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            return None
    address_space = _address_space_left()  # a ulimit -v caps this process below the machine
    if address_space is not None:
        figures.append(address_space)
    return max(min(figures), 0)


def _address_space_left() -> int | None:
    """Bytes of address space this process may still map under its RLIMIT_AS, or None."""
    try:
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return limit - int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def format_bytes(n: int) -> str:
    """``n`` bytes in GiB, or MiB below one GiB."""
    return f"{n / GIB:,.1f} GiB" if n >= GIB else f"{n / (1 << 20):,.0f} MiB"
