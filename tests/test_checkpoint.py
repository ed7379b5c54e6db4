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
    save_checkpoint,
)
from rnncli.config import Config
from rnncli.model import Model

VOCAB = "\t\n !AZaz\u00e9\u4e2d\u6587\U0001f600\U0001f9e0"
CONFIG = Config(model="lstm", hidden_size=2, num_layers=1, batch_size=3, optimizer="adam")


def _checkpoint():
    rng = np.random.default_rng(0)
    params = Model(len(VOCAB), "lstm", 2, 1, dtype="float32").params
    optimizer = {
        f"{slot}.{name}": rng.standard_normal(p.shape).astype(np.float32)
        for slot in ("m", "v")
        for name, p in params.items()
    }
    return Checkpoint(
        params=params,
        vocab=VOCAB,
        config=CONFIG.to_dict(),
        optimizer={**optimizer, "t": np.array(7, dtype=np.int64)},
        state=rng.standard_normal((1, 2, 3, 2)).astype(np.float32),
        meta={"step": 7, "other": {"big": [1, 2**63 + 5]}, "history": [[1, 4.5]], "best": None},
    )


def _npz_bytes(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _meta(**header):
    text = json.dumps({"format_version": FORMAT_VERSION, "config": {}, "meta": {}, **header})
    return np.frombuffer(text.encode(), dtype=np.uint8)


def _good_arrays():
    """The members of a valid weights-only checkpoint: a 2-character rnn 1x1 and its meta."""
    cfg = {"model": "rnn", "hidden_size": 1, "num_layers": 1}
    params = Model(2, "rnn", 1, 1, dtype="float32").params
    return {
        "meta": _meta(config=cfg),
        "vocab": np.array([97, 98], np.uint32),
        **{f"params/{name}": p for name, p in params.items()},
    }


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
    assert loaded.config == ckpt.config == CONFIG.to_dict()
    assert loaded.meta == ckpt.meta
    assert loaded.num_params == Model(len(VOCAB), "lstm", 2, 1).num_params


def test_layout_loads_without_pickle(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, _checkpoint())
    with np.load(path, allow_pickle=False) as z:
        names = ["rnn.0.Wx", "rnn.0.Wh", "rnn.0.b", "out.W", "out.b"]
        assert set(z.files) == {
            *(f"params/{name}" for name in names),
            *(f"optim/{slot}.{name}" for slot in "mv" for name in names),
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
    params = Model(2, "lstm", 128, 2).params  # the default config's shape
    save_checkpoint(path, Checkpoint(params=params, vocab="ab", config={}))
    loaded = load_checkpoint(path)
    assert (loaded.optimizer, loaded.state, loaded.meta) == ({}, None, {})
    # missing keys take their defaults, but forget_bias: a config without it comes from before
    # the key, when an lstm's forget-gate bias started at 1 (checkpoint.migrate_config)
    assert loaded.config == {**Config().to_dict(), "forget_bias": 1.0}


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
    assert _load_error(path).startswith("member 'params/rnn.0.Wx': cannot read (Bad CRC-32")


def test_object_array_is_refused_at_load(tmp_path):
    path = tmp_path / "evil.npz"
    arrays = {**_good_arrays(), "params/out.b": np.array([{}, 1], dtype=object)}
    path.write_bytes(_npz_bytes(**arrays))
    assert _load_error(path) == "member 'params/out.b': holds Python objects (a pickle); refused"


def test_good_arrays_load(tmp_path):
    path = tmp_path / "x.npz"
    path.write_bytes(_npz_bytes(**_good_arrays()))
    assert load_checkpoint(path).vocab == "ab"


@pytest.mark.parametrize("missing", ["meta", "vocab", "params/out.b"])
def test_missing_members(tmp_path, missing):
    arrays = _good_arrays()
    del arrays[missing]
    path = tmp_path / "x.npz"
    path.write_bytes(_npz_bytes(**arrays))
    assert _load_error(path) == f"member {missing!r}: missing"


@pytest.mark.parametrize(
    "meta, message",
    [
        (np.frombuffer(b"{not json", np.uint8), "member 'meta': invalid JSON"),
        (np.frombuffer(b"\xff\xfe", np.uint8), "member 'meta': invalid JSON"),
        (np.array("{}"), "member 'meta': expected UTF-8 bytes"),
        (np.frombuffer(b"[1]", np.uint8), "member 'meta': no valid format_version"),
        (_meta(format_version="1"), "member 'meta': no valid format_version"),
        (_meta(config=None), "member 'meta': 'config' is missing or not a mapping"),
        (
            _meta(format_version=FORMAT_VERSION + 1),
            f"member 'meta': written by a newer rnncli (format {FORMAT_VERSION + 1}, "
            f"this reads up to {FORMAT_VERSION})",
        ),
    ],
)
def test_bad_metadata(tmp_path, meta, message):
    path = tmp_path / "x.npz"
    path.write_bytes(_npz_bytes(**{**_good_arrays(), "meta": meta}))
    assert _load_error(path).startswith(message)


@pytest.mark.parametrize(
    "vocab", [np.array([97, 0x110000], np.uint32), np.array([[97, 98]], np.uint32), np.ones(2)]
)
def test_bad_vocab(tmp_path, vocab):
    path = tmp_path / "x.npz"
    path.write_bytes(_npz_bytes(**{**_good_arrays(), "vocab": vocab}))
    assert _load_error(path).startswith("member 'vocab': ")
