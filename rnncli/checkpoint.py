"""Checkpoint files: one uncompressed ``.npz`` written atomically and read without pickle.

Members of the archive:

- ``params/<name>``: model parameters, in model order;
- ``optim/<key>``: the optimizer's ``state_dict`` arrays;
- ``state``: the carried hidden state ``(L, S, B, H)``, when saved;
- ``vocab``: the vocabulary as uint32 Unicode code points;
- ``meta``: UTF-8 JSON bytes (uint8) of ``{"format_version", "config", "meta"}``.
"""

import contextlib
import dataclasses
import glob
import json
import os
import zipfile
from typing import Any, BinaryIO

import numpy as np

from .fileio import atomic_write
from .model import Model

FORMAT_VERSION = 1
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip


class CheckpointError(Exception):
    """A checkpoint that cannot be written or read; ``str(err)`` is one line naming the file."""


@dataclasses.dataclass
class Checkpoint:
    """Everything needed to resume training or to sample.

    ``meta`` holds the JSON-able training progress (step, epoch, rng state, data position,
    learning-rate schedule, best validation loss, history, ...).
    """

    params: dict[str, np.ndarray]
    vocab: str
    config: dict[str, Any]
    optimizer: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    state: np.ndarray | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    format_version: int = FORMAT_VERSION  # of the file it was read from
    path: str | None = None  # the file it was read from

    @property
    def num_params(self) -> int:
        """Total number of model parameters."""
        return sum(p.size for p in self.params.values())


def _to_arrays(path: str, ckpt: Checkpoint) -> dict[str, np.ndarray]:
    """The archive members for ``ckpt``; content that cannot be stored raises CheckpointError."""
    header = {"format_version": FORMAT_VERSION, "config": ckpt.config, "meta": ckpt.meta}
    try:
        text = json.dumps(header)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot save: config/meta is not JSON-able ({e})") from None
    arrays = {f"params/{name}": np.asarray(p) for name, p in ckpt.params.items()}
    arrays.update({f"optim/{key}": np.asarray(a) for key, a in ckpt.optimizer.items()})
    if ckpt.state is not None:
        arrays["state"] = np.asarray(ckpt.state)
    for key, a in arrays.items():
        if a.dtype.hasobject:  # np.savez would pickle it, and loading refuses pickles
            raise CheckpointError(f"{path}: cannot save {key!r}: object arrays are not allowed")
    arrays["vocab"] = np.fromiter(map(ord, ckpt.vocab), dtype=np.uint32, count=len(ckpt.vocab))
    arrays["meta"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    return arrays


def save_checkpoint(path: str | os.PathLike, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` to ``path`` atomically (``fileio.atomic_write``): a crash, a signal or a
    full disk leaves the old file or the new one, and no temporary."""
    path = os.fspath(path)
    arrays = _to_arrays(path, ckpt)
    try:
        with atomic_write(path) as f:
            np.savez(f, **arrays)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot write checkpoint ({e.strerror or e})") from e


def remove_stale_temporaries(folder: str | os.PathLike) -> None:
    """Delete the temporary files of saves into ``folder`` that a kill -9 or power cut cut short.

    Call it only when no other process is saving into ``folder``.
    """
    for stale in glob.glob(os.path.join(glob.escape(os.fspath(folder)), ".*.npz.*.tmp")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)


def _read_arrays(path: str) -> dict[str, np.ndarray]:
    """Every member of the ``.npz`` at ``path``."""
    try:
        with open(path, "rb") as f:
            return _read_npz(path, f)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror})") from None


def _read_npz(path: str, f: BinaryIO) -> dict[str, np.ndarray]:
    """Every member of the open ``.npz`` file ``f``, read eagerly so corruption shows up here."""
    # np.load would try to unpickle anything that is neither .npz nor .npy.
    if f.read(4) not in _ZIP_MAGICS:
        raise CheckpointError(f"{path}: not an rnncli checkpoint (not an .npz archive)")
    f.seek(0)
    try:
        npz = np.load(f, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({e})") from None
    arrays = {}
    with npz:
        for key in npz.files:
            try:
                arrays[key] = npz[key]
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
                # ValueError also covers object arrays, which cannot load without pickle.
                raise CheckpointError(f"{path}: cannot read {key!r} ({e})") from None
            if not isinstance(arrays[key], np.ndarray):
                raise CheckpointError(f"{path}: cannot read {key!r} (not a .npy array)")
    return arrays


def _members(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays whose key starts with ``prefix``, keyed by the rest of the key."""
    return {k.removeprefix(prefix): a for k, a in arrays.items() if k.startswith(prefix)}


def _read_header(path: str, raw: np.ndarray) -> dict[str, Any]:
    """The decoded ``meta`` member, with its format version checked."""
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{path}: corrupt metadata (expected UTF-8 bytes, got {raw.dtype})")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except ValueError as e:
        raise CheckpointError(f"{path}: corrupt metadata (invalid JSON: {e})") from None
    version = header.get("format_version") if isinstance(header, dict) else None
    if type(version) is not int or version < 1:
        raise CheckpointError(f"{path}: corrupt metadata (no valid format_version)")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer rnncli (format {version}, this reads up to "
            f"{FORMAT_VERSION}); upgrade rnncli to load it"
        )
    for key in ("config", "meta"):
        if not isinstance(header.get(key), dict):
            raise CheckpointError(f"{path}: corrupt metadata ({key!r} is missing or not a mapping)")
    return header


def find_checkpoint(path: str | os.PathLike) -> str:
    """The checkpoint file that ``path`` names: the file itself, or a run folder's ``best.npz``
    (else its ``last.npz``); CheckpointError when a folder holds neither."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return path
    for name in ("best.npz", "last.npz"):
        candidate = os.path.join(path, name)
        if os.path.isfile(candidate):
            return candidate
    raise CheckpointError(f"{path}: a folder without best.npz or last.npz")


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and check the checkpoint at ``path``; any problem raises ``CheckpointError``."""
    path = os.fspath(path)
    arrays = _read_arrays(path)
    if "meta" not in arrays:
        raise CheckpointError(f"{path}: not an rnncli checkpoint (no 'meta' member)")
    header = _read_header(path, arrays["meta"])
    params = _members(arrays, "params/")
    if not params:
        raise CheckpointError(f"{path}: not an rnncli checkpoint (no 'params/...' members)")
    if "vocab" not in arrays:
        raise CheckpointError(f"{path}: not an rnncli checkpoint (no 'vocab' member)")
    codes = arrays["vocab"]
    if codes.ndim != 1 or codes.dtype.kind not in "iu":
        raise CheckpointError(f"{path}: corrupt vocab (got {codes.dtype} {codes.shape} array)")
    try:
        vocab = "".join(map(chr, codes.tolist()))
    except (ValueError, OverflowError) as e:
        raise CheckpointError(f"{path}: corrupt vocab ({e})") from None
    return Checkpoint(
        params=params,
        vocab=vocab,
        config=header["config"],
        optimizer=_members(arrays, "optim/"),
        state=arrays.get("state"),
        meta=header["meta"],
        format_version=header["format_version"],
        path=path,
    )


def restore_model(ckpt: Checkpoint, dropout: float = 0.0, dtype: str | None = None) -> Model:
    """The model whose weights ``ckpt`` holds (cast to ``dtype`` if given), checked against the
    checkpoint's config and vocabulary; CheckpointError if they do not fit together."""
    params = ckpt.params if dtype is None else {k: v.astype(dtype) for k, v in ckpt.params.items()}
    try:
        model = Model.from_params(params, ckpt.config["model"], dropout)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{ckpt.path}: parameters do not form a model ({e})") from None
    if len(ckpt.vocab) != model.vocab_size:
        raise CheckpointError(
            f"{ckpt.path}: vocabulary has {len(ckpt.vocab)} characters but the model "
            f"{model.vocab_size}"
        )
    return model
