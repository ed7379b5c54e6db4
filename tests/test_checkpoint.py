"""Checkpoint round trips, atomic saving and the errors for every kind of bad file."""

import io
import json
import os
import zipfile

import numpy as np
import pytest

from rnncli import checkpoint as ckpt_module
from rnncli.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)

VOCAB = "\t\n !AZaz\u00e9\u4e2d\u6587\U0001f600\U0001f9e0"


def _checkpoint():
    rng = np.random.default_rng(0)
    return Checkpoint(
        params={
            "rnn.0.Wx": rng.standard_normal((11, 8)).astype(np.float32),
            "rnn.0.b": rng.standard_normal(8),
            "out.W": rng.standard_normal((2, 11)).astype(np.float32),
        },
        vocab=VOCAB,
        config={"model": "lstm", "hidden_size": 2, "learning_rate": 0.002},
        optimizer={
            "m.rnn.0.Wx": rng.standard_normal((11, 8)).astype(np.float32),
            "t": np.array(7, dtype=np.int64),
        },
        state=rng.standard_normal((1, 2, 3, 2)),
        meta={"step": 7, "rng": {"state": [1, 2**63 + 5]}, "history": [[1, 4.5]], "best": None},
    )


def _npz_bytes(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _meta(**header):
    text = json.dumps({"format_version": FORMAT_VERSION, "config": {}, "meta": {}, **header})
    return np.frombuffer(text.encode(), dtype=np.uint8)


def _load_error(path):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message.removeprefix(f"{path}: ")


def test_round_trip_is_bitwise(tmp_path):
    ckpt = _checkpoint()
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, ckpt)
    loaded = load_checkpoint(path)
    assert list(loaded.params) == list(ckpt.params)  # model order kept
    for saved, back in [(ckpt.params, loaded.params), (ckpt.optimizer, loaded.optimizer)]:
        assert list(saved) == list(back)
        for key in saved:
            assert back[key].dtype == saved[key].dtype and back[key].shape == saved[key].shape
            assert back[key].tobytes() == saved[key].tobytes()
            assert back[key].flags.writeable  # training updates them in place
    assert loaded.state.tobytes() == ckpt.state.tobytes()
    assert loaded.vocab == VOCAB
    assert loaded.config == ckpt.config
    assert loaded.meta == ckpt.meta
    assert loaded.num_params == 11 * 8 + 8 + 2 * 11


def test_layout_loads_without_pickle(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, _checkpoint())
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == {
            "params/rnn.0.Wx",
            "params/rnn.0.b",
            "params/out.W",
            "optim/m.rnn.0.Wx",
            "optim/t",
            "state",
            "vocab",
            "meta",
        }
        assert z["vocab"].dtype == np.uint32
        assert z["vocab"].tolist() == [ord(c) for c in VOCAB]
        header = json.loads(z["meta"].tobytes().decode("utf-8"))
    assert header["format_version"] == FORMAT_VERSION
    assert header["config"]["model"] == "lstm"
    with zipfile.ZipFile(path) as zf:  # uncompressed, for speed
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}


def test_optional_parts_default_empty(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, Checkpoint(params={"out.b": np.zeros(3)}, vocab="ab", config={}))
    loaded = load_checkpoint(path)
    assert (loaded.optimizer, loaded.state, loaded.meta) == ({}, None, {})


def test_save_replaces_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "ckpt.npz"
    ckpt = _checkpoint()
    save_checkpoint(path, ckpt)
    ckpt.meta["step"] = 8
    save_checkpoint(str(path), ckpt)
    assert load_checkpoint(path).meta["step"] == 8
    assert os.listdir(tmp_path) == ["ckpt.npz"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.meta.update(bad=object()), "config/meta is not JSON-able"),
        (lambda c: c.meta.update(x=np.float32(1.0)), "config/meta is not JSON-able"),
        (lambda c: c.params.update(bad=np.array([1, "a"], dtype=object)), "object arrays"),
    ],
)
def test_failed_save_keeps_previous_file(tmp_path, change, message):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, _checkpoint())
    before = path.read_bytes()
    ckpt = _checkpoint()
    change(ckpt)
    with pytest.raises(CheckpointError, match=message):
        save_checkpoint(path, ckpt)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.npz"]


def test_failure_while_writing_removes_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, _checkpoint())
    before = path.read_bytes()

    def failing_replace(src, dst):
        assert os.path.getsize(src) > 0  # the archive was written before the rename
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_module.os, "replace", failing_replace)
    with pytest.raises(CheckpointError, match="ckpt.npz: cannot write checkpoint"):
        save_checkpoint(path, _checkpoint())
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.npz"]


def test_interrupted_save_removes_temp_file(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_module.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "ckpt.npz", _checkpoint())
    assert os.listdir(tmp_path) == []


def test_save_into_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        save_checkpoint(tmp_path / "nope" / "ckpt.npz", _checkpoint())


def test_missing_file_and_directory(tmp_path):
    assert _load_error(tmp_path / "missing.npz") == "no such checkpoint file"
    assert _load_error(tmp_path) == "is a directory, not a checkpoint file"


def _npy_bytes():
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    return buf.getvalue()


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, not a checkpoint", b"\x80\x04\x95 pickle", _npy_bytes()],
    ids=["empty", "text", "pickle", "npy"],
)
def test_not_an_npz(tmp_path, content):
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    assert _load_error(path) == "not an rnncli checkpoint (not an .npz archive)"


def test_truncated_file(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, _checkpoint())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert _load_error(path).startswith("truncated or corrupt checkpoint")


def test_corrupted_member(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, _checkpoint())
    data = bytearray(path.read_bytes())
    data[300] ^= 0xFF  # inside the first member's data: its CRC no longer matches
    path.write_bytes(bytes(data))
    assert "cannot read 'params/rnn.0.Wx'" in _load_error(path)


def test_object_array_is_refused_at_load(tmp_path):
    path = tmp_path / "evil.npz"
    good = {"meta": _meta(), "vocab": np.array([97], np.uint32), "params/out.b": np.zeros(2)}
    path.write_bytes(_npz_bytes(**good, **{"params/x": np.array([{}, 1], dtype=object)}))
    message = _load_error(path)
    assert message.startswith("cannot read 'params/x'") and "allow_pickle=False" in message


@pytest.mark.parametrize("missing", ["meta", "vocab", "params/out.b"])
def test_missing_members(tmp_path, missing):
    arrays = {"meta": _meta(), "vocab": np.array([97], np.uint32), "params/out.b": np.zeros(2)}
    del arrays[missing]
    path = tmp_path / "x.npz"
    path.write_bytes(_npz_bytes(**arrays))
    assert _load_error(path).startswith("not an rnncli checkpoint (no '" + missing.split("/")[0])


@pytest.mark.parametrize(
    "meta, message",
    [
        (np.frombuffer(b"{not json", np.uint8), "corrupt metadata (invalid JSON"),
        (np.frombuffer(b"\xff\xfe", np.uint8), "corrupt metadata (invalid JSON"),
        (np.array("{}"), "corrupt metadata (expected UTF-8 bytes"),
        (np.frombuffer(b"[1]", np.uint8), "corrupt metadata (no valid format_version)"),
        (_meta(format_version="1"), "corrupt metadata (no valid format_version)"),
        (_meta(config=None), "corrupt metadata ('config' is missing or not a mapping)"),
        (
            _meta(format_version=FORMAT_VERSION + 1),
            f"written by a newer rnncli (format {FORMAT_VERSION + 1}, "
            f"this reads up to {FORMAT_VERSION})",
        ),
    ],
)
def test_bad_metadata(tmp_path, meta, message):
    path = tmp_path / "x.npz"
    vocab = np.array([97], np.uint32)
    path.write_bytes(_npz_bytes(meta=meta, vocab=vocab, **{"params/out.b": np.zeros(2)}))
    assert _load_error(path).startswith(message)


@pytest.mark.parametrize(
    "vocab", [np.array([0x110000], np.uint32), np.array([[97]], np.uint32), np.array([0.5])]
)
def test_bad_vocab(tmp_path, vocab):
    path = tmp_path / "x.npz"
    path.write_bytes(_npz_bytes(meta=_meta(), vocab=vocab, **{"params/out.b": np.zeros(2)}))
    assert _load_error(path).startswith("corrupt vocab")


def test_remove_stale_temporaries_keeps_everything_else(tmp_path):
    (tmp_path / ".last.npz.k2j4.tmp").write_bytes(b"half a zip")
    (tmp_path / ".best.npz.x9.tmp").write_bytes(b"")
    keep = [tmp_path / "last.npz", tmp_path / "notes.tmp", tmp_path / ".hidden"]
    for path in keep:
        path.write_bytes(b"x")
    remove_stale_temporaries(tmp_path)
    assert sorted(tmp_path.iterdir()) == sorted(keep)
