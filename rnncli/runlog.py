"""A run's training history, as ``rnn report`` charts it: read from ``metrics.jsonl`` or from a
checkpoint.

``metrics.jsonl`` gets one JSON object per log line of ``rnn train`` (step, epoch, train_loss,
val_loss, lr, chars_per_s, elapsed). A run resumed from ``last.npz`` appends to the same file
and repeats the steps logged after that checkpoint; the later records replace them, so a run
resumed several times reads as one curve. The last line may be half written while training
runs: it is left out silently; other lines that are not records are skipped and counted.

A log or checkpoint comes from anyone: each line is parsed by the depth-checked reader
(``untrusted.loads_json``), each number range-checked, the file streamed line by line, and a
history longer than ``MAX_RECORDS`` thinned as it is read, so memory stays bounded whatever
the file holds.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .progress import is_count
from .untrusted import UntrustedFileError, loads_json, open_regular

FIELDS = ("step", "epoch", "train_loss", "val_loss", "lr", "chars_per_s", "elapsed")
MAX_BYTES = 64 << 20  # far above any real run's log; bounds the memory a hostile file can take
MAX_LINE = 1 << 16
MAX_RECORDS = 20_000  # a history is thinned to at most twice this many records as it is read
MAX_VALUE = 1e100  # far above any loss, rate, speed or time; keeps chart arithmetic finite
_LINE_DEPTH = 4  # a record is one flat object, with a "changed" mapping of pairs


@dataclass
class History:
    records: list[dict] = field(default_factory=list)  # by increasing step, FIELDS (None: unknown)
    source: str = ""
    skipped_lines: list[int] = field(default_factory=list)  # 1-based numbers of corrupt lines


def _record(obj) -> dict | None:
    """The record a parsed line holds, or None if it is not one."""
    if not isinstance(obj, dict):
        return None
    step = obj.get("step")
    if not is_count(step):
        return None
    record = {"step": step}
    for key in FIELDS[1:]:
        value = obj.get(key)
        if value is not None and not is_value(value):
            return None
        record[key] = value
    return record


def is_value(value) -> bool:
    """A finite number of at most ``MAX_VALUE`` in size (not a bool): what a chart can draw."""
    if type(value) not in (int, float):
        return False
    try:
        return math.isfinite(value) and abs(value) <= MAX_VALUE
    except OverflowError:  # an integer beyond the float range
        return False


def _append(records: list[dict], record: dict) -> None:
    """Add a record. One before the last step means a resume: it replaces the later ones. One
    at the last step (the closing evaluation repeats the last log line) completes it. Past
    ``2 * MAX_RECORDS`` records every other one goes (the last stays): bounded memory, at the
    cost of detail where no chart could show it."""
    while records and records[-1]["step"] > record["step"]:
        records.pop()
    if records and records[-1]["step"] == record["step"]:
        known = {key: value for key, value in record.items() if value is not None}
        records[-1] = {**records[-1], **known}
    else:
        records.append(record)
        if len(records) > 2 * MAX_RECORDS:
            records[:] = [*records[:-1:2], records[-1]]


def read_metrics(path: str | os.PathLike) -> History:
    """The history in a ``metrics.jsonl`` file; OSError if it cannot be read, ValueError if it
    is not a regular file or is larger than ``MAX_BYTES``."""
    path = Path(path)
    try:
        f = open_regular(str(path), "metrics log")
    except UntrustedFileError:
        raise ValueError(f"{path}: not a regular file") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_BYTES:
            raise ValueError(f"{path}: {size:,} bytes, more than a metrics log can hold")
        history = History(source=str(path))
        for number, line in enumerate(_lines(f), 1):
            if line is None:
                break  # the line training is writing now
            try:
                record = _record(loads_json(line.decode("utf-8"), _LINE_DEPTH))
            except ValueError:  # also UnicodeDecodeError
                record = None
            if record is None:
                if line.strip():
                    history.skipped_lines.append(number)
                continue
            _append(history.records, record)
    return history


def _lines(f):
    """The complete lines of ``f``, each cut to ``MAX_LINE`` bytes; None for an unfinished last
    line (no newline yet)."""
    while line := f.readline(MAX_LINE):
        if not line.endswith(b"\n"):
            if len(line) < MAX_LINE:
                yield None
                return
            while (rest := f.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                pass  # an overlong line: skip to its end
        yield line


def from_checkpoint(meta: dict, source: str) -> History:
    """The history a checkpoint's ``meta`` holds: its validation losses by step (checkpoints
    keep no training loss, rate or speed history)."""
    history = History(source=source)
    evaluations = meta.get("evaluations")
    for item in evaluations if isinstance(evaluations, list) else []:
        record = _record(item)
        if record is not None:
            _append(history.records, record)
    return history


def run_history(path: Path, meta: dict, checkpoint: str) -> tuple[History, list[str]]:
    """The history of the run at ``path``: its folder's metrics.jsonl when there is one that
    can be read, else the validation history in the checkpoint's ``meta`` (read from the file
    ``checkpoint``); and warnings for the user about what was skipped."""
    metrics = path / "metrics.jsonl"
    if path.is_dir() and metrics.exists():
        try:
            history = read_metrics(metrics)
        except (OSError, ValueError) as err:
            reason = err.strerror if isinstance(err, OSError) else str(err)
            warning = f"{metrics}: cannot read ({reason}); using the checkpoint's validation "
            warning += "history"
            return from_checkpoint(meta, f"the validation history in {checkpoint}"), [warning]
        warnings = []
        if history.skipped_lines:
            lines = ", ".join(map(str, history.skipped_lines[:5]))
            more = ", ..." if len(history.skipped_lines) > 5 else ""
            warnings.append(
                f"{metrics}: skipped {len(history.skipped_lines)} lines that are not metrics "
                f"records (line {lines}{more})"
            )
        return history, warnings
    return from_checkpoint(meta, f"the validation history in {checkpoint}"), []
