"""The weights as a page stores them, at a chosen precision, and as the page decodes them.

``float32`` and ``float16`` store every tensor as little-endian floats of that width. ``int8``
stores each matrix as signed bytes with one float32 scale per column (the last axis: one
output unit of a product), ``round(w / scale)`` with ``scale = max |column| / 127``; vectors
(biases) stay float32, a negligible part of the size. ``unpack`` is the page's decoder in
numpy, which the tests and the tolerance measurements use.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

PRECISIONS = ("float32", "float16", "int8")
FLOAT16_MAX = float(np.finfo(np.float16).max)
FLOAT32_MAX = float(np.finfo(np.float32).max)
_ITEM_BYTES = {"f32": 4, "f16": 2, "i8": 1}


class PrecisionError(ValueError):
    """Weights that the chosen precision cannot hold."""


@dataclasses.dataclass(frozen=True)
class Packed:
    shape: tuple[int, ...]
    kind: str  # "f32", "f16" or "i8"
    data: bytes
    scales: bytes | None = None  # int8: float32 per column


def kind_of(shape: tuple[int, ...], precision: str) -> str:
    """How a tensor of ``shape`` is stored at ``precision``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8":
        return "i8" if len(shape) == 2 else "f32"
    return "f16" if precision == "float16" else "f32"


def packed_bytes(shape: tuple[int, ...], precision: str) -> int:
    """Bytes of a tensor of ``shape`` stored at ``precision`` (data and scales), allocating none."""
    kind = kind_of(shape, precision)
    scales = 4 * shape[-1] if kind == "i8" else 0
    return math.prod(shape) * _ITEM_BYTES[kind] + scales


def _check_range(array: np.ndarray, largest_allowed: float, name: str, factor: int = 1) -> None:
    """PrecisionError unless every value of ``array`` / ``factor`` is finite and fits a float
    whose largest is ``largest_allowed`` (named ``name``): never a silent infinity."""
    largest = float(np.abs(array).max(initial=0.0))
    if not largest / factor <= largest_allowed:  # NaN fails too
        raise PrecisionError(
            f"a weight of magnitude {largest:.3g} is beyond {name}'s range ({largest_allowed:g})"
        )


def pack(array: np.ndarray, precision: str) -> Packed:
    """``array`` (finite) stored at ``precision``; PrecisionError if it cannot hold it (float16
    or float32 beyond their range, or int8 whose per-column float32 scale would overflow)."""
    array = np.asarray(array, dtype=np.float64)
    kind = kind_of(array.shape, precision)
    if kind == "f16":
        _check_range(array, FLOAT16_MAX, "float16")
        return Packed(array.shape, kind, array.astype("<f2").tobytes())
    if kind == "f32":
        _check_range(array, FLOAT32_MAX, "float32")
        return Packed(array.shape, kind, array.astype("<f4").tobytes())
    _check_range(array, FLOAT32_MAX, "int8 with float32 scales", factor=127)
    scales = (np.abs(array).max(axis=0) / 127).astype("<f4")
    safe = np.where(scales > 0, scales, 1).astype(np.float64)  # an all-zero column stays 0
    codes = np.clip(np.rint(array / safe), -127, 127).astype("i1")
    return Packed(array.shape, kind, codes.tobytes(), scales.tobytes())


def unpack(packed: Packed) -> np.ndarray:
    """The float64 array the page decodes from ``packed``."""
    if packed.kind == "i8":
        codes = np.frombuffer(packed.data, "i1").reshape(packed.shape).astype(np.float64)
        return codes * np.frombuffer(packed.scales, "<f4").astype(np.float64)
    dtype = "<f2" if packed.kind == "f16" else "<f4"
    return np.frombuffer(packed.data, dtype).reshape(packed.shape).astype(np.float64)
