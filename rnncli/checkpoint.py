"""Checkpoint files: one uncompressed ``.npz`` written atomically and read without pickle.

Members of the archive:

- ``params/<name>``: model parameters, in model order;
- ``optim/<key>``: the optimizer's ``state_dict`` arrays;
- ``state``: the carried hidden state ``(L, S, B, H)``, when saved;
- ``vocab``: the vocabulary as uint32 Unicode code points;
- ``meta``: UTF-8 JSON bytes (uint8) of ``{"format_version", "config", "meta"}``.

Checkpoints are shared, so reading trusts nothing in the file: ``meta`` is read first (size and
nesting bounded), its config validated like a YAML config, and the config with the vocabulary
then fixes the name, dtype and shape of every other member, checked against each ``.npy``
header before any data is read (``archive.Archive``). Weights must be finite, the progress
fields well typed (``progress``). A checkpoint names its corpus but never makes rnncli read
another file: ``corpus_if_unchanged``.
"""

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .archive import Archive, ArchiveError
from .config import Config, ConfigError, shape_text
from .errors import CheckpointError
from .fileio import atomic_write
from .model import NO_NORM, Model
from .optim import from_config as optimizer_from_config
from .progress import MAX_COUNT, RESUME_FIELDS, check_meta
from .schedules import SCHEDULES
from .untrusted import UntrustedFileError, clip, loads_json, open_regular, short
from .vocab import Vocab

FORMAT_VERSION = 1


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
        text = json.dumps(header, allow_nan=False)  # readers refuse NaN: fail here instead
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
    full disk leaves the old file or the new one, and no temporary. A checkpoint that the reader
    would refuse is not written: CheckpointError (``check_loadable``)."""
    path = os.fspath(path)
    arrays = _to_arrays(path, ckpt)  # first: it refuses what cannot be stored at all
    check_loadable(path, ckpt)
    try:
        with atomic_write(path) as f:
            np.savez(f, **arrays)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot write checkpoint ({e.strerror or e})") from e


def check_loadable(path: str, ckpt: Checkpoint) -> None:
    """CheckpointError unless ``load_checkpoint`` would accept ``ckpt`` once saved: the rule
    that what rnncli saves, every command loads, checked where it saves (the same checks as the
    reader: config, progress fields, schedule state, finite weights, the step count)."""
    try:
        cfg = Config.from_dict(migrate_config(ckpt.config), "config")
        if not 1 <= len(ckpt.vocab) <= cfg.max_vocab:
            raise _Invalid("vocab", f"{len(ckpt.vocab):,} characters; the config allows fewer")
        _checked_meta(ckpt.meta, cfg.lr_schedule)
        arrays = {f"params/{k}": a for k, a in ckpt.params.items()}
        arrays.update({f"optim/{k}": a for k, a in ckpt.optimizer.items() if k != "t"})
        if ckpt.state is not None:
            arrays["state"] = ckpt.state
        for key, a in arrays.items():
            if not np.isfinite(a).all():
                raise _Invalid(key, "holds NaN or infinite values")
        t = ckpt.optimizer.get("t", 0)
        if not 0 <= int(t) < MAX_COUNT:
            raise _Invalid("optim/t", f"{int(t)} steps, beyond what a checkpoint may hold")
    except (ConfigError, ValueError) as e:
        raise CheckpointError(f"{path}: not saved: it would not load ({clip(str(e))})") from None


_META_LIMIT = 16 << 20  # bytes of meta JSON: the evaluation history grows ~40 bytes per eval
_JSON_DEPTH = 16  # rnncli's own meta nests 4 levels deep


class _Invalid(ValueError):
    """A member that breaks the layout; load_checkpoint adds the file's name."""

    def __init__(self, member: str, problem: str):
        super().__init__(f"member {member!r}: {problem}")


def _checked_meta(meta: dict[str, Any], lr_schedule: str) -> dict[str, Any]:
    """``meta``, refused unless each progress field passes its check, the schedule's state that
    of the schedule ``lr_schedule`` names."""
    try:
        check_meta(meta)
    except ValueError as e:
        raise _Invalid("meta", str(e)) from None
    schedule = SCHEDULES[lr_schedule]
    if "schedule" in meta and not schedule.state_check(meta["schedule"]):
        problem = f"{schedule.state_rule} ({lr_schedule}), got {short(meta['schedule'])}"
        raise _Invalid("meta", f"meta.schedule must be {problem}")
    return meta


def _read_header(archive: Archive) -> dict[str, Any]:
    """The decoded ``meta`` member, with its format version checked."""
    dtype, shape = _header(archive, "meta")
    if dtype != np.uint8 or len(shape) != 1:
        raise _Invalid("meta", f"expected UTF-8 bytes (uint8), got {dtype} {short(shape)}")
    if shape[0] > _META_LIMIT:
        raise _Invalid("meta", f"{shape[0]:,} bytes, more than the {_META_LIMIT:,} allowed")
    try:
        header = loads_json(archive.array("meta").tobytes().decode("utf-8"), _JSON_DEPTH)
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _Invalid("meta", f"invalid JSON ({clip(str(e))})") from None
    version = header.get("format_version") if isinstance(header, dict) else None
    if type(version) is not int or version < 1:
        raise _Invalid("meta", "no valid format_version")
    if version > FORMAT_VERSION:
        raise _Invalid(
            "meta",
            f"written by a newer rnncli (format {version}, this reads up to "
            f"{FORMAT_VERSION}); upgrade rnncli to load it",
        )
    for key in ("config", "meta"):
        if not isinstance(header.get(key), dict):
            raise _Invalid("meta", f"{key!r} is missing or not a mapping")
    return header


def _header(archive: Archive, key: str) -> tuple[np.dtype, tuple[int, ...]]:
    if key not in archive.members:
        raise _Invalid(key, "missing")
    return archive.header(key)


def _read_vocab(archive: Archive, max_vocab: int) -> Vocab:
    dtype, shape = _header(archive, "vocab")
    if dtype.kind not in "iu" or len(shape) != 1:
        raise _Invalid("vocab", f"expected a 1-D integer array, got {dtype} {short(shape)}")
    if not 1 <= shape[0] <= max_vocab:
        raise _Invalid("vocab", f"{shape[0]:,} characters; the config allows 1 to {max_vocab:,}")
    try:
        return Vocab.from_array(archive.array("vocab"))
    except ValueError as e:
        raise _Invalid("vocab", str(e)) from None


def _read_float(
    archive: Archive, key: str, dtype: np.dtype, shape: tuple[int, ...], why: str
) -> np.ndarray:
    """Member ``key``, refused unless it is a finite ``dtype`` array of ``shape`` (which ``why``
    explains in a message)."""
    got_dtype, got_shape = _header(archive, key)
    if got_dtype != dtype or got_shape != shape:
        raise _Invalid(key, f"expected {dtype} {shape} ({why}), got {got_dtype} {short(got_shape)}")
    a = archive.array(key)
    if not np.isfinite(a).all():
        raise _Invalid(key, "holds NaN or infinite values")
    return a


def _read_optimizer(
    archive: Archive, cfg: Config, shapes: dict[str, tuple[int, ...]], why: str
) -> dict[str, np.ndarray]:
    """The ``optim/`` members, exactly those the config's optimizer saves; {} if none."""
    if not any(key.startswith("optim/") for key in archive.members):
        return {}
    slots = optimizer_from_config(cfg, {}).slots
    why += f", {cfg.optimizer}"
    optimizer = {
        f"{slot}.{name}": _read_float(archive, f"optim/{slot}.{name}", np.dtype(cfg.dtype), s, why)
        for slot in slots
        for name, s in shapes.items()
    }
    dtype, shape = _header(archive, "optim/t")
    t = archive.array("optim/t") if dtype.kind in "iu" and shape == () else None
    if t is None or not 0 <= t < MAX_COUNT:  # the step count: it must survive its next +1
        shown = f"{dtype} {short(shape)}" if t is None else short(int(t))
        raise _Invalid("optim/t", f"must be a 0-d integer in [0, 2**53), got {shown}")
    optimizer["t"] = t
    return optimizer


def _check_names(archive: Archive, cfg: Config, shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse members that a checkpoint of this config cannot have (a missing one is named when
    it is read)."""
    allowed = {"meta", "vocab", "state", *(f"params/{name}" for name in shapes)}
    slots = optimizer_from_config(cfg, {}).slots
    allowed.update(f"optim/{slot}.{name}" for slot in slots for name in shapes)
    allowed.add("optim/t")
    unexpected = sorted(set(archive.members) - allowed)
    if unexpected:
        raise _Invalid(unexpected[0], "unexpected in a checkpoint of this config")


def migrate_config(config: dict[str, Any]) -> dict[str, Any]:
    """The recorded ``config`` with the keys that older checkpoints lack, as those checkpoints
    were trained: no embedding (``embedding_size`` 0), and the LSTM's forget-gate bias of 1
    that rnncli set at initialisation before ``forget_bias`` existed (0 for the other cells).
    Whatever the defaults become, an old checkpoint keeps meaning what it did."""
    migrated = dict(config)
    migrated.setdefault("embedding_size", 0)
    if "forget_bias" not in migrated:
        migrated["forget_bias"] = 1.0 if migrated.get("model", "lstm") == "lstm" else 0.0
    return migrated


def _read(archive: Archive) -> Checkpoint:
    header = _read_header(archive)
    try:
        cfg = Config.from_dict(migrate_config(header["config"]), "config")
    except ConfigError as e:
        raise _Invalid("meta", str(e)) from None
    vocab = _read_vocab(archive, cfg.max_vocab)
    if cfg.num_layers > len(archive.members):  # before listing the names of that many layers
        raise _Invalid("meta", f"config has {cfg.num_layers:,} layers; the file cannot hold them")
    shapes = Model.config_shapes(cfg, len(vocab))
    _check_names(archive, cfg, shapes)
    dtype = np.dtype(cfg.dtype)
    why = f"{shape_text(cfg.to_dict())}, {len(vocab)}-character vocabulary"
    params = {
        name: _read_float(archive, f"params/{name}", dtype, s, why) for name, s in shapes.items()
    }
    optimizer = _read_optimizer(archive, cfg, shapes, why)
    state = None
    if "state" in archive.members:
        shape = Model.state_shape(cfg.model, cfg.hidden_size, cfg.num_layers, cfg.batch_size,
                                  cfg.conv_size)  # fmt: skip
        state = _read_float(archive, "state", dtype, shape, f"batch_size {cfg.batch_size}")
    return Checkpoint(
        params=params,
        vocab=vocab.chars,
        config=cfg.to_dict(),
        optimizer=optimizer,
        state=state,
        meta=_checked_meta(header["meta"], cfg.lr_schedule),
        format_version=header["format_version"],
    )


RUN_CHECKPOINTS = ("best.npz", "last.npz")  # what a run folder names, in order of choice


def find_checkpoint(path: str | os.PathLike) -> str:
    """The checkpoint file that ``path`` names: the file itself, or a run folder's ``best.npz``
    (else its ``last.npz``); CheckpointError when a folder holds neither, or when ``path`` names
    a missing file beside a checkpoint that exists (a run saves best.npz only once it has a
    validation loss), naming that one."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        if not os.path.lexists(path):
            folder = os.path.dirname(path) or "."
            for name in RUN_CHECKPOINTS:
                candidate = os.path.join(folder, name)
                if os.path.isfile(candidate):
                    raise CheckpointError(
                        f"{path}: no such checkpoint file, but {candidate} exists (name the run "
                        f"folder, {folder}, to take its best.npz, else its last.npz)"
                    )
        return path
    for name in RUN_CHECKPOINTS:
        candidate = os.path.join(path, name)
        if os.path.isfile(candidate):
            return candidate
    raise CheckpointError(f"{path}: a folder without best.npz or last.npz")


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and verify the checkpoint at ``path``; any problem raises ``CheckpointError``.

    Only the members rnncli uses are accepted, each checked (dtype, shape, size) against what the
    stored config and vocabulary imply before its data is read; weights must be finite.
    """
    path = os.fspath(path)
    try:
        with open_regular(path, "checkpoint file") as f:
            ckpt = _read(Archive(f, os.fstat(f.fileno()).st_size))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror})") from None
    except (UntrustedFileError, ArchiveError, _Invalid) as e:
        raise CheckpointError(f"{path}: {e}") from None
    ckpt.path = path
    return ckpt


def require_resumable(ckpt: Checkpoint) -> None:
    """CheckpointError unless ``ckpt`` holds what ``--resume`` needs besides the weights."""
    missing = [key for key in RESUME_FIELDS if key not in ckpt.meta]
    if missing:
        raise CheckpointError(f"{ckpt.path}: cannot resume: meta lacks {', '.join(missing)}")
    for member, present in (("state", ckpt.state is not None), ("optim/", bool(ckpt.optimizer))):
        if not present:
            raise CheckpointError(f"{ckpt.path}: cannot resume: no {member!r} member")


def corpus_if_unchanged(ckpt: Checkpoint) -> Path | None:
    """The corpus path that ``ckpt`` records, only if that regular file's SHA-256 is the one
    recorded with it; otherwise None (never raises, never reads a FIFO or device)."""
    corpus, digest = ckpt.meta.get("corpus"), ckpt.meta.get("corpus_sha256")
    if not isinstance(corpus, str) or not isinstance(digest, str):
        return None
    sha = hashlib.sha256()
    try:
        with open_regular(corpus, "corpus") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
    except (OSError, ValueError):  # missing, unreadable, not a regular file, NUL in the name
        return None
    return Path(corpus) if sha.hexdigest() == digest.lower() else None


def recorded_corpus(ckpt: Checkpoint) -> Path:
    """``corpus_if_unchanged(ckpt)``, or CheckpointError in one line that says nothing of what
    is at the recorded path."""
    corpus = corpus_if_unchanged(ckpt)
    if corpus is not None:
        return corpus
    if "corpus_sha256" not in ckpt.meta:
        reason = "it records no hash of its corpus (written by an older rnncli)"
    else:
        reason = "its recorded corpus is missing or has changed since training"
    raise CheckpointError(f"{ckpt.path}: {reason}; pass the text file to score")


def _cast(ckpt: Checkpoint, dtype: str) -> dict[str, np.ndarray]:
    """``ckpt``'s weights in ``dtype``; CheckpointError for a weight beyond its range, which the
    cast would make infinite."""
    with np.errstate(over="ignore"):
        params = {k: v.astype(dtype) for k, v in ckpt.params.items()}
    for name, p in params.items():
        if not np.isfinite(p).all():
            raise CheckpointError(
                f"{ckpt.path}: member 'params/{name}' holds values beyond {dtype}'s range "
                f"({float(np.finfo(dtype).max):.3g}); keep the checkpoint's dtype "
                f"({ckpt.params[name].dtype})"
            )
    return params


def restore_model(ckpt: Checkpoint, dropout: float = 0.0, dtype: str | None = None) -> Model:
    """The model whose weights ``ckpt`` holds (cast to ``dtype`` if given), checked against the
    checkpoint's config and vocabulary; CheckpointError if they do not fit together."""
    params = ckpt.params if dtype is None else _cast(ckpt, dtype)
    try:
        config = ckpt.config
        model = Model.from_params(params, config["model"], dropout, config.get("residual", False),
                                  config.get("norm", NO_NORM))  # fmt: skip
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{ckpt.path}: parameters do not form a model ({e})") from None
    if len(ckpt.vocab) != model.vocab_size:
        raise CheckpointError(
            f"{ckpt.path}: vocabulary has {len(ckpt.vocab)} characters but the model "
            f"{model.vocab_size}"
        )
    return model


def load_model(
    path: str | os.PathLike, found: Callable[[str], None] | None = None
) -> tuple[Model, Vocab, Checkpoint]:
    """The model, vocabulary and checkpoint that ``path`` names: a checkpoint file, or a run
    folder's best.npz, else its last.npz (then ``found`` is told which, before it is read); what
    every command and ``rnncli.load`` open. CheckpointError for anything else."""
    file = find_checkpoint(path)
    if found is not None and file != os.fspath(path):
        found(file)
    ckpt = load_checkpoint(file)
    return restore_model(ckpt), Vocab(ckpt.vocab), ckpt
