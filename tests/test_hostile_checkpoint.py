"""Checkpoints from strangers: every corrupt or crafted file ends in one line and exit 1, with
bounded memory, reading nothing else and writing nothing.

Each case starts from the members of a real checkpoint (a short real training run) and changes
one thing; ``rnn info`` (or the command named) must refuse it naming the file and the member.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnncli
from rnncli.checkpoint import (
    CheckpointError,
    corpus_if_unchanged,
    load_checkpoint,
    save_checkpoint,
)
from tests.helpers import READERS, one_error_line, rnn_peak_rss, run

Members = dict[str, bytes]  # member key (name without .npy) -> .npy bytes, in archive order
MEMORY_LIMIT = 300 << 20  # bytes of peak RSS: the interpreter and numpy, far below any inflation


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time, but a run's lock file:
    a training takes the lock (creating ``rnn.lock``, which stays) before it reads anything."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "rnn.lock"
    }


# -- a real checkpoint and ways to build changed ones ------------------------------------------


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """A run folder from a real (tiny) training run: last.npz has optimizer state and state."""
    folder = tmp_path_factory.mktemp("good")
    corpus = folder / "corpus.txt"
    rng = np.random.default_rng(1)
    corpus.write_text("".join(rng.choice(list("abcd efg\n"), size=400)), encoding="utf-8")
    args = "--model lstm --hidden-size 4 --num-layers 2 --batch-size 2 --seq-length 4"
    args += " --max-steps 4 --eval-every 2 --checkpoint-every 2 --val-fraction 0.2 --workers 1"
    run("train", corpus, "--out", folder / "run", "--quiet", *args.split(), code=0)
    return folder / "run"


@pytest.fixture
def good(good_run) -> Members:
    with zipfile.ZipFile(good_run / "last.npz") as zf:
        return {info.filename.removesuffix(".npy"): zf.read(info) for info in zf.infolist()}


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)  # the object-array case needs a pickle inside
    return buf.getvalue()


def npy_claiming(shape: tuple, descr: str = "<f4", data: bytes = b"") -> bytes:
    """A .npy whose header declares ``shape`` whatever ``data`` holds."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def zip_bytes(pairs: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():  # zipfile warns about the duplicate-name case
        warnings.simplefilter("ignore", UserWarning)
        with zipfile.ZipFile(buf, "w", compression) as zf:
            for name, data in pairs:
                zf.writestr(name, data)
    return buf.getvalue()


def archive(members: Members, compression: int = zipfile.ZIP_STORED) -> bytes:
    return zip_bytes([(key + ".npy", data) for key, data in members.items()], compression)


def array_of(members: Members, key: str) -> np.ndarray:
    return np.load(io.BytesIO(members[key]), allow_pickle=False)


def with_array(members: Members, key: str, array: np.ndarray) -> bytes:
    return archive({**members, key: npy(array)})


def with_header(members: Members, change: Callable[[dict], None]) -> bytes:
    header = json.loads(array_of(members, "meta").tobytes())
    change(header)
    text = json.dumps(header).encode()
    return with_array(members, "meta", np.frombuffer(text, np.uint8))


def with_meta(**fields) -> Callable[[Members], bytes]:
    return lambda m: with_header(m, lambda h: h["meta"].update(fields))


def with_config(**fields) -> Callable[[Members], bytes]:
    return lambda m: with_header(m, lambda h: h["config"].update(fields))


def without(key: str) -> Callable[[Members], bytes]:
    return lambda m: archive({k: v for k, v in m.items() if k != key})


def changed(key: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Members], bytes]:
    return lambda m: with_array(m, key, change(array_of(m, key)))


def with_value(key: str, value: float) -> Callable[[Members], bytes]:
    def put(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        a.flat[0] = value
        return a

    return changed(key, put)


def truncated(fraction: float) -> Callable[[Members], bytes]:
    def cut(m: Members) -> bytes:
        data = archive(m)
        return data[: int(len(data) * fraction)]

    return cut


def patched_central_entry(offset: int, fmt: str, value: int) -> Callable[[Members], bytes]:
    """The archive with one field of the first central-directory entry overwritten."""

    def patch(m: Members) -> bytes:
        data = bytearray(archive(m))
        entry = data.index(b"PK\x01\x02")
        struct.pack_into(fmt, data, entry + offset, value)
        return bytes(data)

    return patch


DEEP_JSON = "[" * 100_000 + "]" * 100_000

# id -> (build the file from the good members, text the error line must contain)
CASES: dict[str, tuple[Callable[[Members], bytes], str]] = {
    # the file as a whole
    "zero-bytes": (lambda m: b"", "not an .npz archive"),
    "random-bytes": (lambda m: np.random.default_rng(0).bytes(4096), "not an .npz archive"),
    "pickle-file": (lambda m: b"\x80\x04\x95\x10\x00\x00\x00", "not an .npz archive"),
    "zip-magic-then-junk": (lambda m: b"PK\x03\x04" + bytes(200), "truncated or corrupt"),
    "truncated-1%": (truncated(0.01), "truncated or corrupt"),
    "truncated-50%": (truncated(0.5), "truncated or corrupt"),
    "truncated-99%": (truncated(0.99), "truncated or corrupt"),
    "truncated-end-record": (lambda m: archive(m)[:-1], "truncated or corrupt"),
    "empty-zip": (lambda m: zip_bytes([]), "member 'meta': missing"),
    # members
    "pickled-member": (
        lambda m: archive({**m, "params/out.b": b"\x80\x04K\x01."}),
        "member 'params/out.b': not a .npy array",
    ),
    "object-array-member": (
        lambda m: with_array(m, "params/out.b", np.array([{}, 1], dtype=object)),
        "member 'params/out.b': holds Python objects",
    ),
    "non-npy-member": (
        lambda m: zip_bytes([*((k + ".npy", v) for k, v in m.items()), ("run.py", b"x")]),
        "member 'run.py': not a .npy array",
    ),
    "missing-meta": (without("meta"), "member 'meta': missing"),
    "missing-vocab": (without("vocab"), "member 'vocab': missing"),
    "missing-param": (without("params/rnn.1.Wh"), "member 'params/rnn.1.Wh': missing"),
    "missing-optim-slot": (without("optim/m.out.W"), "member 'optim/m.out.W': missing"),
    "missing-optim-step": (without("optim/t"), "member 'optim/t': missing"),
    "extra-param": (
        lambda m: archive({**m, "params/rnn.2.Wx": m["params/rnn.1.Wx"]}),
        "member 'params/rnn.2.Wx': unexpected",
    ),
    "extra-member": (
        lambda m: archive({**m, "notes": npy(np.zeros(2))}),
        "member 'notes': unexpected",
    ),
    "duplicate-member": (
        lambda m: zip_bytes([*((k + ".npy", v) for k, v in m.items()), ("vocab.npy", b"")]),
        "member 'vocab' appears twice",
    ),
    "compressed-members": (lambda m: archive(m, zipfile.ZIP_DEFLATED), "is compressed"),
    "encrypted-member": (patched_central_entry(8, "<H", 1), "is encrypted"),
    "sizes-beyond-the-file": (
        patched_central_entry(24, "<L", 1 << 30),
        "members claim 1,073,",
    ),
    "header-claims-1e12-elements": (
        lambda m: archive({**m, "params/out.b": npy_claiming((10**12,))}),
        "member 'params/out.b': its header declares float32 (1000000000000,)",
    ),
    "data-longer-than-header": (
        lambda m: archive({**m, "params/out.b": m["params/out.b"] + bytes(8)}),
        "stores",
    ),
    "negative-dimension": (
        lambda m: archive({**m, "params/out.b": npy_claiming((-4,))}),
        "negative dimension",
    ),
    "npy-version-9": (
        lambda m: archive({**m, "params/out.b": b"\x93NUMPY\x09\x00" + m["params/out.b"][8:]}),
        "member 'params/out.b': ",
    ),
    # parameters, optimizer state and carried state
    "param-wrong-shape": (
        changed("params/out.W", lambda a: np.ascontiguousarray(a.T)),
        "expected float32 (4, ",
    ),
    "param-float64": (changed("params/out.W", lambda a: a.astype(np.float64)), "got float64"),
    "param-int": (changed("params/out.W", lambda a: a.astype(np.int32)), "got int32"),
    "param-complex": (
        changed("params/out.W", lambda a: a.astype(np.complex64)),
        "got complex64",
    ),
    "param-strings": (changed("params/out.b", lambda a: a.astype(str)), "got <U"),
    "param-big-endian": (changed("params/out.b", lambda a: a.astype(">f4")), "got >f4"),
    "param-fortran-order": (
        changed("params/out.W", np.asfortranarray),
        "not a plain C-order array",
    ),
    "param-structured": (
        changed("params/out.b", lambda a: np.zeros(a.shape, "f4,f4")),
        "not a plain C-order array",
    ),
    "param-nan": (with_value("params/rnn.0.Wx", np.nan), "'params/rnn.0.Wx': holds NaN"),
    "param-inf": (with_value("params/out.b", np.inf), "'params/out.b': holds NaN or infinite"),
    "optim-wrong-shape": (changed("optim/v.out.b", lambda a: a[:-1]), "'optim/v.out.b': expected"),
    "optim-nan": (with_value("optim/m.out.W", np.nan), "'optim/m.out.W': holds NaN"),
    "optim-step-negative": (
        lambda m: with_array(m, "optim/t", np.array(-1)),
        "'optim/t': must be a 0-d integer in [0, 2**53)",
    ),
    "optim-step-float": (
        lambda m: with_array(m, "optim/t", np.array(4.0)),
        "'optim/t': must be a 0-d integer in [0, 2**53)",
    ),
    "state-wrong-batch": (
        changed("state", lambda a: np.concatenate([a, a], axis=2)),
        "'state': expected float32 (2, 2, 2, 4) (batch_size 2)",
    ),
    "state-inf": (with_value("state", -np.inf), "'state': holds NaN"),
    # vocabulary
    "vocab-duplicate": (
        changed("vocab", lambda a: np.concatenate([a[:1], a[:-1]])),
        "member 'vocab': vocabulary code points must be strictly increasing",
    ),
    "vocab-unsorted": (changed("vocab", lambda a: a[::-1].copy()), "strictly increasing"),
    "vocab-surrogate": (
        changed("vocab", lambda a: np.append(a[:-1], 0xD800).astype(np.uint32)),
        "surrogate code point U+D800",
    ),
    "vocab-beyond-unicode": (
        changed("vocab", lambda a: np.append(a[:-1], 0x110000).astype(np.uint32)),
        "in 0..0x10FFFF",
    ),
    "vocab-negative": (
        changed("vocab", lambda a: np.append(-5, a[1:]).astype(np.int64)),
        "in 0..0x10FFFF",
    ),
    "vocab-2d": (changed("vocab", lambda a: a[None, :]), "expected a 1-D integer array"),
    "vocab-floats": (changed("vocab", lambda a: a.astype(np.float64)), "1-D integer array"),
    "vocab-empty": (changed("vocab", lambda a: a[:0]), "member 'vocab': 0 characters"),
    "vocab-one-short": (changed("vocab", lambda a: a[:-1]), "-character vocabulary"),
    "vocab-beyond-max-vocab": (with_config(max_vocab=3), "the config allows 1 to 3"),
    # the meta member: JSON, format, config
    "meta-not-json": (
        lambda m: with_array(m, "meta", np.frombuffer(b"{oops", np.uint8)),
        "member 'meta': invalid JSON",
    ),
    "meta-not-utf8": (
        lambda m: with_array(m, "meta", np.frombuffer(b"\xff\xfe{}", np.uint8)),
        "member 'meta': invalid JSON",
    ),
    "meta-nan-literal": (
        lambda m: with_array(
            m, "meta", np.frombuffer(array_of(m, "meta").tobytes().replace(b"0.", b"NaN"), "u1")
        ),
        "invalid JSON",
    ),
    "meta-nested-100000-deep": (
        with_meta(note=None),  # replaced below: JSON too deep to write with json.dumps
        "member 'meta': invalid JSON (nested deeper than 16 levels)",
    ),
    "meta-over-16MB": (
        lambda m: with_array(m, "meta", np.zeros((16 << 20) + 1, np.uint8)),
        "more than the 16,777,216 allowed",
    ),
    "meta-wrong-dtype": (
        lambda m: with_array(m, "meta", np.array(["{}"])),
        "expected UTF-8 bytes (uint8)",
    ),
    "format-future": (
        lambda m: with_header(m, lambda h: h.update(format_version=2)),
        "written by a newer rnncli (format 2",
    ),
    "format-missing": (
        lambda m: with_header(m, lambda h: h.pop("format_version")),
        "no valid format_version",
    ),
    "format-bool": (
        lambda m: with_header(m, lambda h: h.update(format_version=True)),
        "no valid format_version",
    ),
    "config-not-a-mapping": (
        lambda m: with_header(m, lambda h: h.update(config=[1])),
        "'config' is missing or not a mapping",
    ),
    "config-unknown-key": (with_config(hiden_size=4), "unknown key 'hiden_size'"),
    "config-bad-value": (with_config(hidden_size=0), "hidden_size: must be >= 1"),
    "config-wrong-type": (with_config(num_layers="2"), "num_layers: expected an integer"),
    "config-unknown-cell": (with_config(model="transformer"), "model: must be one of"),
    "config-billion-layers": (with_config(num_layers=10**9), "the file cannot hold them"),
    "config-huge-hidden": (with_config(hidden_size=10**9), "expected float32"),
    "config-float64-weights": (with_config(dtype="float64"), "expected float64"),
    "config-other-cell": (with_config(model="gru"), "expected float32"),
    "config-other-optimizer": (with_config(optimizer="rmsprop"), "unexpected"),
    # the embedding (the good run has none: embedding_size 0, rnn.0.Wx (V, 4H))
    "embedding-recorded-but-missing": (
        with_config(embedding_size=3),
        "member 'params/embed.W': missing",
    ),
    "embedding-wrong-shape": (
        lambda m: with_header(
            {**m, "params/embed.W": npy(np.zeros((len(array_of(m, "vocab")), 2), np.float32))},
            lambda h: h["config"].update(embedding_size=3),
        ),
        "member 'params/embed.W': expected float32",
    ),
    "embedding-extra-with-size-0": (
        lambda m: archive({**m, "params/embed.W": npy(np.zeros((9, 3), np.float32))}),
        "member 'params/embed.W': unexpected",
    ),
    "config-negative-embedding": (with_config(embedding_size=-1), "embedding_size: must be >= 0"),
    "config-forget-bias-string": (with_config(forget_bias="open"), "forget_bias: expected a"),
    "config-forget-bias-without-forget-gate": (
        with_config(model="rnn", forget_bias=1.0),
        "forget_bias: must be 0 for rnn, which has no forget gate",
    ),
    # meta fields, one wrong type or value each
    "meta-step-string": (
        with_meta(step="7"),
        "meta.step must be an integer in [0, 2**53), got '7'",
    ),
    "meta-step-negative": (with_meta(step=-1), "meta.step must be an integer in [0, 2**53)"),
    "meta-step-bool": (with_meta(step=True), "meta.step must be an integer in [0, 2**53)"),
    "meta-epoch-negative": (with_meta(epoch=-0.5), "meta.epoch must be a finite number >= 0"),
    "meta-epoch-list": (with_meta(epoch=[1]), "meta.epoch must be a finite number"),
    "meta-elapsed-string": (with_meta(elapsed="1s"), "meta.elapsed must be"),
    "meta-best-val-loss-string": (with_meta(best_val_loss="low"), "meta.best_val_loss must be"),
    "meta-best-val-loss-huge-int": (
        with_meta(best_val_loss=10**400),
        "meta.best_val_loss must be a finite number or null",
    ),
    "meta-val-loss-full-string": (
        with_meta(val_loss_full="1.5"),
        "meta.val_loss_full must be a finite number or null",
    ),
    "meta-val-loss-full-huge-int": (
        with_meta(val_loss_full=10**400),
        "meta.val_loss_full must be a finite number or null",
    ),
    "meta-corpus-int": (
        with_meta(corpus=5),
        "meta.corpus must be a path (a string without NUL) or null",
    ),
    "meta-corpus-sha256-short": (with_meta(corpus_sha256="abc"), "64 hexadecimal digits"),
    "meta-version-int": (with_meta(rnncli_version=3), "meta.rnncli_version must be a string"),
    "meta-evaluations-not-list": (with_meta(evaluations={}), "meta.evaluations must be a list"),
    "meta-evaluation-bad-entry": (
        with_meta(evaluations=[{"step": -1, "val_loss": 1.0}]),
        "meta.evaluations must be",
    ),
    "meta-schedule-empty": (with_meta(schedule={}), "meta.schedule must be"),
    "meta-schedule-zero-lr": (
        with_meta(schedule={"lr": 0, "best": None, "bad_evals": 0, "stop": False}),
        "meta.schedule must be",
    ),
    "meta-rng-other-generator": (
        with_meta(rng={"bit_generator": "MT19937", "state": {}}),
        "meta.rng must be a PCG64 generator state",
    ),
    "meta-rng-state-too-big": (
        lambda m: with_header(m, lambda h: h["meta"]["rng"]["state"].update(state=2**128)),
        "meta.rng must be a PCG64 generator state",
    ),
    "meta-data-position-missing-key": (
        with_meta(data_position={"epoch": 0, "index": 0}),
        "meta.data_position must be",
    ),
    "meta-huge-value-message-is-short": (with_meta(step="x" * 1_000_000), "meta.step must be"),
}


def build(case: str, members: Members) -> bytes:
    if case == "meta-nested-100000-deep":
        text = json.dumps(json.loads(array_of(members, "meta").tobytes()))
        text = text[:-1] + ', "deep": ' + DEEP_JSON + "}"
        return with_array(members, "meta", np.frombuffer(text.encode(), np.uint8))
    return CASES[case][0](members)


@pytest.mark.parametrize("case", CASES)
def test_hostile_checkpoint_is_one_line_and_writes_nothing(tmp_path, good, case):
    path = tmp_path / "bad.npz"
    path.write_bytes(build(case, good))
    before = snapshot(tmp_path)
    line = one_error_line(run("info", path, code=1), path)
    assert CASES[case][1] in line
    assert len(line) < 400  # never an echo of a huge value
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", READERS)
def test_every_reader_refuses_the_same_way(tmp_path, good, command):
    path = tmp_path / "bad.npz"
    path.write_bytes(build("param-nan", good))
    assert "holds NaN" in one_error_line(run(command, path, code=1), path)


@pytest.mark.parametrize("case", CASES)
def test_the_python_api_refuses_the_same_way(tmp_path, good, case):
    path = tmp_path / "bad.npz"
    path.write_bytes(build(case, good))
    with pytest.raises(CheckpointError) as raised:
        rnncli.load(path)
    assert str(raised.value) == one_error_line(run("info", path, code=1), strip=True)


def test_not_a_regular_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    assert "not a regular file" in one_error_line(run("info", fifo, code=1), fifo)


def test_the_good_checkpoint_loads(good_run):
    ckpt = load_checkpoint(good_run / "last.npz")
    assert ckpt.state is not None and "t" in ckpt.optimizer and ckpt.meta["step"] == 4


# -- resume and init-from with crafted files --------------------------------------------------


@pytest.mark.parametrize(
    "drop, message",
    [
        ("state", "cannot resume: no 'state' member"),
        ("optim/", "cannot resume: no 'optim/' member"),
        ("meta.rng", "cannot resume: meta lacks rng"),
    ],
)
def test_resume_without_what_it_needs_is_one_line(tmp_path, good_run, drop, message):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("best.npz", "config.yaml", "metrics.jsonl"):
        (run_dir / name).write_bytes((good_run / name).read_bytes())
    ckpt = load_checkpoint(good_run / "last.npz")
    if drop == "state":
        ckpt.state = None
    elif drop == "optim/":
        ckpt.optimizer = {}
    else:
        del ckpt.meta["rng"]
    save_checkpoint(run_dir / "last.npz", ckpt)
    before = snapshot(tmp_path)
    corpus = good_run.parent / "corpus.txt"
    result = run("train", corpus, "--out", run_dir, "--resume", code=1)
    assert message in one_error_line(result, run_dir / "last.npz")
    assert snapshot(tmp_path) == before


def test_a_checkpoint_from_before_embedding_size_and_forget_bias_loads_samples_and_resumes(
    tmp_path, good_run
):
    """Written before the two keys existed: its config lacks them and it has no embed.W. It
    reads as it was trained (no embedding, the LSTM forget-gate bias 1 of then), and a resume
    neither refuses nor notes them."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("best.npz", "config.yaml", "metrics.jsonl"):
        (run_dir / name).write_bytes((good_run / name).read_bytes())
    with zipfile.ZipFile(good_run / "last.npz") as zf:
        members = {info.filename.removesuffix(".npy"): zf.read(info) for info in zf.infolist()}

    def old_style(header: dict) -> None:
        for key in ("embedding_size", "forget_bias"):
            del header["config"][key]

    (run_dir / "last.npz").write_bytes(with_header(members, old_style))
    ckpt = load_checkpoint(run_dir / "last.npz")
    assert (ckpt.config["embedding_size"], ckpt.config["forget_bias"]) == (0, 1.0)
    assert "params/embed.W" not in members and "embed.W" not in ckpt.params
    assert len(run("sample", run_dir / "last.npz", "-n", "20", "--seed", "1").output) >= 20
    info = json.loads(run("info", run_dir / "last.npz", "--json").output)
    assert info["embedding_size"] == 0 and info["config"]["forget_bias"] == 1.0
    corpus = good_run.parent / "corpus.txt"
    result = run("train", corpus, "--out", run_dir, "--resume", "--max-steps", "6", "--quiet")
    assert "forget_bias" not in result.stderr and "embedding_size" not in result.stderr
    resumed = load_checkpoint(run_dir / "last.npz")
    assert resumed.meta["step"] == 6
    assert (resumed.config["embedding_size"], resumed.config["forget_bias"]) == (0, 1.0)


def test_init_from_a_hostile_checkpoint_creates_nothing(tmp_path, good, good_run):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(build("vocab-surrogate", good))
    out = tmp_path / "new-run"
    corpus = good_run.parent / "corpus.txt"
    result = run("train", corpus, "--out", out, "--init-from", bad, code=1)
    assert "surrogate" in one_error_line(result, bad)
    assert not out.exists()


# -- bounded memory, measured on a real process -----------------------------------------------


def deflate_bomb(path: Path, mib: int = 4095) -> None:
    """A zip whose one deflated member of about 4 MB inflates to ``mib`` MiB of zeros.

    After a full flush each MiB of zeros deflates to the same bytes, so the stream is one block
    repeated; the CRC is left 0 because a reader must refuse the member before reading it.
    """
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(bytes(1 << 20)) + deflate.flush(zlib.Z_FULL_FLUSH)
    body = block * mib + deflate.flush()
    name, size = b"params/out.b.npy", mib << 20
    local = struct.pack(
        "<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, 0, len(body), size, len(name), 0
    )
    central = struct.pack(
        "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, 0, len(body), size, len(name), 0, 0, 0,
        0, 0, 0,
    )  # fmt: skip
    end = struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(name),
        len(local) + len(name) + len(body), 0,
    )  # fmt: skip
    path.write_bytes(local + name + body + central + name + end)


def test_deflate_bomb_is_refused_with_small_memory(tmp_path):
    bomb = tmp_path / "bomb.npz"
    deflate_bomb(bomb)
    assert bomb.stat().st_size < 5 << 20
    with zipfile.ZipFile(bomb) as zf:  # it is what it claims: 4 GiB inside a 4 MB file
        assert zf.infolist()[0].file_size == 4095 << 20
    code, stderr, rss = rnn_peak_rss(["info", bomb], tmp_path)
    assert code == 1 and stderr.count("\n") == 1 and "is compressed" in stderr, stderr
    assert rss < MEMORY_LIMIT, f"peak RSS {rss / 2**20:.0f} MiB"


def test_header_claiming_1e12_elements_is_refused_with_small_memory(tmp_path, good):
    path = tmp_path / "huge.npz"
    path.write_bytes(archive({**good, "params/out.b": npy_claiming((10**12,))}))
    code, stderr, rss = rnn_peak_rss(["info", path], tmp_path)
    assert code == 1 and stderr.count("\n") == 1 and "its header declares" in stderr, stderr
    assert rss < MEMORY_LIMIT, f"peak RSS {rss / 2**20:.0f} MiB"


# -- the recorded corpus: named by the checkpoint, read only when unchanged --------------------


@pytest.fixture
def scored_run(tmp_path, good_run) -> Path:
    """A copy of the good run whose checkpoints record their corpus (a copy) and its hash."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes((good_run.parent / "corpus.txt").read_bytes())
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("best.npz", "last.npz"):
        ckpt = load_checkpoint(good_run / name)
        ckpt.meta["corpus"] = str(corpus)
        ckpt.meta["corpus_sha256"] = hashlib.sha256(corpus.read_bytes()).hexdigest()
        save_checkpoint(run_dir / name, ckpt)
    return run_dir


def test_eval_reads_the_recorded_corpus_when_unchanged(scored_run):
    result = run("eval", scored_run / "best.npz", "--json", code=0)
    assert json.loads(result.stdout)["chars"] > 0


@pytest.mark.parametrize("change", ["edited", "missing", "fifo", "secret"])
def test_eval_refuses_a_recorded_corpus_that_changed(tmp_path, scored_run, change):
    corpus = tmp_path / "corpus.txt"
    secret = "TOP-SECRET \u00e9\u00e8 42"
    if change == "edited":
        corpus.write_text(corpus.read_text() + "x")
    elif change == "missing":
        corpus.unlink()
    elif change == "fifo":
        corpus.unlink()
        os.mkfifo(corpus)
    else:  # the checkpoint names another file, as a hostile one would
        corpus.write_text(secret)
    before = snapshot(tmp_path)
    ckpt = scored_run / "best.npz"
    line = one_error_line(run("eval", ckpt, code=1), ckpt)
    assert line.startswith("its recorded corpus is missing or has changed since training;")
    assert not any(ch in line for ch in "\u00e9\u00e842")  # nothing of the file's content
    assert snapshot(tmp_path) == before and not (scored_run / "cache").exists()


@pytest.mark.parametrize("change", ["edited", "missing"])
def test_eval_scores_the_runs_verified_cache_when_the_corpus_changed(tmp_path, change):
    corpus = tmp_path / "corpus.txt"
    rng = np.random.default_rng(2)
    corpus.write_text("".join(rng.choice(list("abcd efg\n"), size=600)), encoding="utf-8")
    args = "--hidden-size 4 --batch-size 2 --seq-length 4 --max-steps 2 --test-fraction 0.2"
    run("train", corpus, "--out", tmp_path / "run", "--quiet", "--workers", "1", *args.split())
    before = json.loads(run("eval", tmp_path / "run", "--json").stdout)
    if change == "edited":
        corpus.write_text("a different text entirely", encoding="utf-8")
    else:
        corpus.unlink()
    cache = snapshot(tmp_path / "run" / "cache")
    for split in ("test", "val"):
        result = run("eval", tmp_path / "run", "--split", split, "--json")
        if split == "test":
            assert json.loads(result.stdout) == before  # the same held-out text, scored the same
    assert snapshot(tmp_path / "run" / "cache") == cache  # read, never written
    shutil.rmtree(tmp_path / "run" / "cache")  # no verified copy left: refused as before
    line = one_error_line(run("eval", tmp_path / "run", code=1), ignore=("rnn: using",))
    assert "its recorded corpus is missing or has changed since training;" in line


def test_eval_of_a_checkpoint_without_a_corpus_hash_asks_for_the_text_file(tmp_path, good_run):
    old = load_checkpoint(good_run / "best.npz")  # as an rnncli before the hash wrote it
    del old.meta["corpus_sha256"]
    save_checkpoint(tmp_path / "old.npz", old)
    line = one_error_line(run("eval", tmp_path / "old.npz", code=1), tmp_path / "old.npz")
    assert "records no hash of its corpus" in line and "pass the text file" in line


def test_corpus_if_unchanged_never_raises(tmp_path, scored_run):
    ckpt = load_checkpoint(scored_run / "last.npz")
    assert corpus_if_unchanged(ckpt) == tmp_path / "corpus.txt"
    for corpus in ["", "\0", str(tmp_path), "/dev/zero", str(tmp_path / "nope"), 5, None]:
        ckpt.meta["corpus"] = corpus
        assert corpus_if_unchanged(ckpt) is None
    ckpt.meta["corpus"] = str(tmp_path / "corpus.txt")
    del ckpt.meta["corpus_sha256"]
    assert corpus_if_unchanged(ckpt) is None


def test_eval_split_with_a_text_file_is_a_usage_error(good_run):
    corpus = good_run.parent / "corpus.txt"
    result = run("eval", good_run / "best.npz", corpus, "--split", "val", code=2)
    assert "--split" in one_error_line(result, strip=True)


# -- non-finite results ------------------------------------------------------------------------


def test_eval_with_an_infinite_loss_exits_non_zero_and_prints_no_json(tmp_path, good_run):
    ckpt = load_checkpoint(good_run / "best.npz")
    ckpt.params["out.W"][...] = 0
    ckpt.params["out.b"][...] = -3e38  # finite weights whose softmax puts 0 on every character
    ckpt.params["out.b"][0] = 3e38
    save_checkpoint(tmp_path / "overflow.npz", ckpt)
    corpus = good_run.parent / "corpus.txt"
    for extra in ([], ["--json"]):
        result = run("eval", tmp_path / "overflow.npz", corpus, *extra, code=1)
        assert "the loss is not finite" in one_error_line(result, strip=True)
        assert result.stdout == ""


# -- the fuzzer: mutated real files load or fail in one line ----------------------------------


def _expect_loaded_or_one_line(path: Path) -> None:
    try:
        load_checkpoint(path)
    except CheckpointError as err:
        message = str(err)
        assert message.startswith(f"{path}: ") and "\n" not in message


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), max_size=6),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_fuzz_byte_flips_and_truncations(tmp_path, good, flips, cut):
    data = bytearray(archive(good))
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    if cut is not None:
        data = data[: int(cut * len(data))]
    path = tmp_path / "fuzz.npz"
    path.write_bytes(bytes(data))
    _expect_loaded_or_one_line(path)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzz_member_swaps(tmp_path, good, data):
    keys = list(good)
    a = data.draw(st.sampled_from(keys))
    b = data.draw(st.sampled_from(keys))
    swapped = {**good, a: good[b], b: good[a]}
    path = tmp_path / "fuzz.npz"
    path.write_bytes(archive(swapped))
    if good[a] == good[b]:
        load_checkpoint(path)  # nothing really changed: it must still load
    else:
        _expect_loaded_or_one_line(path)
