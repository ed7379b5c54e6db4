"""Tests for rnncli.vocab, corpus and batches: vocabulary, encode + cache, splits, bad input."""

import errno
import gzip
import hashlib
import json
import os
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from rnncli import batches, corpus
from rnncli.batches import BatchIterator, eval_batch_count, eval_batches
from rnncli.corpus import cached_ids, encode_file, load_corpus, split_corpus
from rnncli.errors import CorpusError
from rnncli.evaluate import read_scored_text
from rnncli.vocab import Vocab, vocab_dtype

ASCII = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\tSpeak, speak.\n"
CJK = "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n"
# emoji (4-byte UTF-8, surrogate pair in UTF-16), ZWJ sequence, combining marks, CRLF, tab, CR
MIXED = "naïve cafe\u0301 😀👩\u200d💻\r\n\tα→β e\u0301\u0302 \r end\u00a0ß ﬁ 𝔘\n"
TEXTS = {"ascii": ASCII, "cjk": CJK, "mixed": MIXED}


def write(path, text, encoding="utf-8"):
    """Write ``text`` byte for byte (no newline translation)."""
    path.write_bytes(text.encode(encoding))
    return path


def ids(corpus):
    return np.asarray(corpus.data)


def error(fn, *args, **kwargs):
    with pytest.raises(CorpusError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- vocabulary -------------------------------------------------------------------------


@pytest.mark.parametrize("name", TEXTS)
def test_vocab_is_sorted_distinct_and_round_trips(name):
    text = TEXTS[name]
    vocab = Vocab(text)
    assert vocab.chars == "".join(sorted(set(text)))
    assert len(vocab) == len(set(text))
    arr = vocab.to_array()
    assert arr.dtype == np.uint32 and arr.tolist() == sorted(map(ord, set(text)))
    assert Vocab.from_array(arr) == vocab and Vocab.from_array(arr).chars == vocab.chars
    encoded = vocab.encode(text)
    assert encoded.dtype == np.intp
    assert encoded.tolist() == [vocab.chars.index(c) for c in text]
    assert vocab.decode(encoded) == text
    assert vocab.decode(encoded.reshape(1, -1)) == text


@pytest.mark.parametrize(
    "bad", [[3, 2], [1, 1], [-1, 5], [0x110000], [], [[1, 2]], np.array([1.0, 2.0])]
)
def test_vocab_from_array_rejects_invalid(bad):
    with pytest.raises(ValueError):
        Vocab.from_array(np.asarray(bad))


def test_vocab_unknown_drop_and_encode_error():
    vocab = Vocab("abc \n")
    text = "a 😀b\tcé😀"
    assert vocab.unknown(text) == ["\t", "é", "😀"]
    assert vocab.unknown("cab") == []
    assert vocab.drop_unknown(text) == "a bc"
    message = error(vocab.encode, text)
    assert "3 distinct characters" in message and "U+1F600" in message and "'\\t'" in message
    with pytest.raises(ValueError):
        vocab.decode(np.array([0, 5]))
    with pytest.raises(ValueError):
        Vocab("")


@pytest.mark.parametrize(
    "size, dtype", [(1, np.uint8), (256, np.uint8), (257, np.uint16), (65536, np.uint16)]
)
def test_vocab_dtype_bounds(size, dtype):
    assert vocab_dtype(size) == dtype
    assert vocab_dtype(65537) == np.uint32


# --- encoding files ---------------------------------------------------------------------


@pytest.mark.parametrize("name", TEXTS)
def test_encode_file_round_trips_exactly(tmp_path, name):
    text = TEXTS[name] * 3
    corpus = load_corpus(write(tmp_path / "c.txt", text), tmp_path / "cache")
    assert corpus.vocab == Vocab(text)
    assert isinstance(corpus.data, np.memmap) and corpus.data.dtype == np.uint8
    np.testing.assert_array_equal(ids(corpus), Vocab(text).encode(text))
    assert corpus.vocab.decode(ids(corpus)) == text  # \r\n, \r, tabs, marks kept as they are
    assert corpus.skipped == {} and not corpus.from_cache


def mixed_long_text(n=4000, seed=0):
    """Random mix of 1-, 2-, 3- and 4-byte UTF-8 characters and line endings."""
    rng = np.random.default_rng(seed)
    pool = list("abc \n\r\t") + list("éßπж") + list("中文語") + list("😀𝔘🎉")
    return "".join(rng.choice(pool, size=n))


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7, 64, 4096])
def test_streaming_tiny_chunks_equals_one_piece(tmp_path, chunk_size):
    text = mixed_long_text()
    path = write(tmp_path / "c.txt", text)
    assert path.stat().st_size > 8 * 1024  # far larger than any of the chunk sizes
    corpus = load_corpus(path, tmp_path / "cache", chunk_size=chunk_size)
    assert corpus.vocab == Vocab(text)
    np.testing.assert_array_equal(ids(corpus), Vocab(text).encode(text))


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-8-sig"])
@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
def test_streaming_other_unicode_encodings(tmp_path, encoding, chunk_size):
    text = mixed_long_text(1000, seed=1)
    path = write(tmp_path / "c.txt", text, encoding)
    corpus = load_corpus(path, tmp_path / "cache", encoding=encoding, chunk_size=chunk_size)
    assert corpus.vocab.decode(ids(corpus)) == text  # byte-order marks are not characters


def test_latin1_encoding(tmp_path):
    text = "Götterdämmerung — no: Gtterdmmerung, £5, ÿ\r\n" * 20
    text = text.replace("—", "-")
    path = write(tmp_path / "c.txt", text, "latin-1")
    message = error(load_corpus, path, tmp_path / "cache")
    assert "byte offset 1 " in message and "--encoding" in message
    corpus = load_corpus(path, tmp_path / "cache", encoding="latin-1", chunk_size=7)
    assert corpus.vocab.decode(ids(corpus)) == text


def test_dtype_follows_vocab_size(tmp_path):
    u8 = "".join(map(chr, range(1, 257)))
    u16 = u8 + "中"
    for text, dtype in [(u8, np.uint8), (u16, np.uint16)]:
        corpus = load_corpus(write(tmp_path / f"{len(text)}.txt", text), tmp_path / "cache")
        assert corpus.data.dtype == dtype and len(corpus.vocab) == len(text)


def test_uint32_for_more_than_65536_characters(tmp_path):
    cps = [c for c in range(1, 0x11000) if not 0xD800 <= c <= 0xDFFF]
    text = "".join(map(chr, cps))
    path = write(tmp_path / "big_vocab.txt", text)
    message = error(load_corpus, path, tmp_path / "cache")
    assert f"{len(cps)} distinct characters" in message and "max_vocab=65536" in message
    assert "--max-vocab" in message
    corpus = load_corpus(path, tmp_path / "cache", max_vocab=70000, chunk_size=4099)
    assert len(corpus.vocab) == len(cps) > 65536
    assert corpus.data.dtype == np.uint32
    np.testing.assert_array_equal(ids(corpus), np.arange(len(cps)))
    assert Vocab.from_array(corpus.vocab.to_array()) == corpus.vocab


def test_given_vocab_fixes_ids_and_dtype(tmp_path):
    vocab = Vocab("".join(map(chr, range(32, 400))))
    corpus = load_corpus(write(tmp_path / "c.txt", "abc cab"), tmp_path / "cache", vocab=vocab)
    assert corpus.vocab is vocab and corpus.data.dtype == np.uint16
    np.testing.assert_array_equal(ids(corpus), vocab.encode("abc cab"))


def test_encode_file_skips_and_counts_oov(tmp_path):
    text = mixed_long_text(3000, seed=2)
    vocab = Vocab("abc \n\réß中😀")
    path, folder = write(tmp_path / "eval.txt", text), tmp_path / "eval"
    encoded, skipped = encode_file(path, vocab, folder, oov="skip", chunk_size=5)
    kept = vocab.drop_unknown(text)
    assert isinstance(encoded, np.memmap) and encoded.dtype == np.uint8
    np.testing.assert_array_equal(encoded, vocab.encode(kept))
    expected = {c: text.count(c) for c in vocab.unknown(text)}
    assert skipped == expected and sum(expected.values()) == len(text) - len(kept)
    stamp = next(folder.glob("*.ids")).stat().st_mtime_ns
    again, skipped_again = encode_file(path, vocab, folder, oov="skip")
    assert skipped_again == expected  # also when reused from the folder
    np.testing.assert_array_equal(again, encoded)
    assert next(folder.glob("*.ids")).stat().st_mtime_ns == stamp
    message = error(encode_file, path, vocab, folder)  # oov="error"
    assert f"not in the model's vocabulary of {len(vocab)}" in message
    assert f"{len(expected)} of its {len(set(text))} distinct" in message
    assert message == error(load_corpus, path, tmp_path / "cache", vocab=vocab)


def test_encode_file_without_oov(tmp_path):
    vocab = Vocab(MIXED + ASCII)
    encoded, skipped = encode_file(write(tmp_path / "c.txt", MIXED), vocab, tmp_path / "eval")
    assert skipped == {} and vocab.decode(encoded) == MIXED


def test_oov_skip_with_nothing_left(tmp_path):
    path = write(tmp_path / "c.txt", "xyz")
    message = error(encode_file, path, Vocab("ab"), tmp_path / "eval", oov="skip")
    assert "none of its 3 distinct characters" in message
    assert not (tmp_path / "eval").exists()
    with pytest.raises(ValueError):
        encode_file(path, Vocab("xyz"), tmp_path / "eval", oov="ignore")


# --- cache ------------------------------------------------------------------------------


def cache_listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_cache_reused_when_unchanged(tmp_path):
    path, cache = write(tmp_path / "c.txt", ASCII * 10), tmp_path / "cache"
    first = load_corpus(path, cache)
    stamp = first.cache_file.stat().st_mtime_ns
    second = load_corpus(path, cache)
    assert second.from_cache and not first.from_cache
    assert second.cache_file == first.cache_file
    assert second.cache_file.stat().st_mtime_ns == stamp  # not rewritten
    assert second.vocab == first.vocab
    np.testing.assert_array_equal(ids(second), ids(first))
    sidecar = json.loads(first.cache_file.with_suffix(".json").read_text())
    assert sidecar["vocab"] == first.vocab.chars and sidecar["length"] == len(ASCII * 10)
    assert cache_listing(cache) == sorted([first.cache_file.name, f"{first.cache_file.stem}.json"])


def test_cache_invalidated_by_same_size_edit(tmp_path):
    path, cache = write(tmp_path / "c.txt", "hello world\n" * 50), tmp_path / "cache"
    load_corpus(path, cache)
    st = path.stat()
    write(path, "hello World\n" * 50)  # same size, different bytes, same mtime
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    corpus = load_corpus(path, cache)
    assert not corpus.from_cache and "W" in corpus.vocab.chars
    assert corpus.vocab.decode(ids(corpus)) == "hello World\n" * 50
    assert load_corpus(path, cache).from_cache
    assert len(cache_listing(cache)) == 2  # replaced, not accumulated


def test_cache_invalidated_by_touch_and_by_growth(tmp_path):
    path, cache = write(tmp_path / "c.txt", CJK * 5), tmp_path / "cache"
    load_corpus(path, cache)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert not load_corpus(path, cache).from_cache
    assert load_corpus(path, cache).from_cache
    with path.open("ab") as fh:
        fh.write("又一行。\n".encode())
    corpus = load_corpus(path, cache)
    assert not corpus.from_cache and corpus.vocab.decode(ids(corpus)).endswith("又一行。\n")


def test_cache_keyed_by_encoding_and_vocab(tmp_path):
    path, cache = write(tmp_path / "c.txt", "abc\n" * 10), tmp_path / "cache"
    own = load_corpus(path, cache)
    wide = load_corpus(path, cache, vocab=Vocab("abcdef\n"))
    latin = load_corpus(path, cache, encoding="latin-1")
    assert not wide.from_cache and not latin.from_cache
    assert len({own.cache_file, wide.cache_file, latin.cache_file}) == 3
    assert load_corpus(path, cache).from_cache
    assert load_corpus(path, cache, vocab=wide.vocab).from_cache


def test_damaged_cache_is_rebuilt(tmp_path):
    path, cache = write(tmp_path / "c.txt", ASCII), tmp_path / "cache"
    corpus = load_corpus(path, cache)
    expected = ids(corpus).copy()
    del corpus
    ids_file = next(cache.glob("*.ids"))
    ids_file.write_bytes(b"\x00" * 3)  # truncated
    rebuilt = load_corpus(path, cache)
    assert not rebuilt.from_cache
    np.testing.assert_array_equal(ids(rebuilt), expected)
    ids_file.with_suffix(".json").write_text("{not json")
    assert not load_corpus(path, cache).from_cache


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    path, cache = write(tmp_path / "c.txt", ASCII), tmp_path / "cache"
    load_corpus(path, cache)
    write(path, ASCII + "more")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(corpus.os, "fsync", disk_full)
    message = error(load_corpus, path, cache)
    assert str(cache) in message and "No space left" in message
    assert cache_listing(cache) == []  # no temp file, and no stale pair either


def test_file_changing_during_encode_is_detected(tmp_path, monkeypatch):
    path, cache = write(tmp_path / "c.txt", "abab\n" * 100), tmp_path / "cache"
    original = corpus._encode_pass

    def edit_then_encode(fh, *args):
        with path.open("ab") as other:
            other.write(b"xyz")
        return original(fh, *args)

    monkeypatch.setattr(corpus, "_encode_pass", edit_then_encode)
    message = error(load_corpus, path, cache)
    assert "changed while being encoded" in message
    assert cache_listing(cache) == []


# --- bad input --------------------------------------------------------------------------


def test_bad_files(tmp_path):
    cache = tmp_path / "cache"
    assert error(load_corpus, tmp_path / "missing.txt", cache) == (
        f"{tmp_path / 'missing.txt'}: no such file"
    )
    assert "is a directory" in error(load_corpus, tmp_path, cache)
    assert "is empty" in error(load_corpus, write(tmp_path / "empty.txt", ""), cache)
    bom_only = write(tmp_path / "bom.txt", "", "utf-16")
    assert "no characters" in error(load_corpus, bom_only, cache, encoding="utf-16")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "not a regular file" in error(load_corpus, fifo, cache)
    message = error(load_corpus, write(tmp_path / "c.txt", "abc"), cache, encoding="no-such")
    assert "c.txt" in message and "unknown encoding 'no-such'" in message
    assert "not a text encoding" in error(load_corpus, tmp_path / "c.txt", cache, encoding="hex")
    assert not cache.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path):
    path = write(tmp_path / "secret.txt", "abc")
    path.chmod(0)
    assert "permission denied" in error(load_corpus, path, tmp_path / "cache")


def test_unreadable_file_simulated(tmp_path, monkeypatch):
    path = write(tmp_path / "secret.txt", "abc")

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(corpus, "open", denied, raising=False)
    message = error(load_corpus, path, tmp_path / "cache")
    assert message == f"{path}: cannot read the file (permission denied)"


@pytest.mark.parametrize("chunk_size", [1, 4, 1 << 20])
def test_invalid_utf8_names_byte_offset(tmp_path, chunk_size):
    good = "日本語 ok\n" * 7  # 3-byte characters before the bad byte
    offset = len(good.encode())
    path = tmp_path / "bad.txt"
    path.write_bytes(good.encode() + b"\xe6\x97" + b"x more")  # truncated 3-byte sequence
    message = error(load_corpus, path, tmp_path / "cache", chunk_size=chunk_size)
    assert f"bad.txt: not valid utf-8 at byte offset {offset} " in message
    assert "--encoding" in message
    path.write_bytes(good.encode() + b"\xe6\x97")  # truncated at the very end
    assert f"byte offset {offset} " in error(load_corpus, path, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("chunk_size", [1, 5, 1 << 20])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_nul_bytes_are_binary(tmp_path, chunk_size, encoding):
    head = "héllo 世界 😀\n" * 5
    path = write(tmp_path / "bin.dat", head + "\x00tail", encoding)
    offset = len(head.encode(encoding))  # includes the UTF-16 byte-order mark
    message = error(load_corpus, path, tmp_path / "cache", encoding=encoding, chunk_size=chunk_size)
    assert f"bin.dat: NUL byte at byte offset {offset}:" in message and "binary" in message
    assert not (tmp_path / "cache").exists()


def test_utf16_file_read_as_utf8_suggests_encoding(tmp_path):
    path = write(tmp_path / "wide.txt", "plain ascii\n" * 4, "utf-16")
    message = error(load_corpus, path, tmp_path / "cache")
    assert "byte offset 0" in message and "--encoding" in message


def _binary_files(folder) -> dict[str, tuple[bytes, str]]:
    """Real files of formats a user may hand over by mistake: name -> (bytes, what they are)."""
    text = (ASCII * 20).encode()
    zipped = folder / "z.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("a.txt", text)
    np.save(folder / "a.npy", np.arange(50))
    return {
        "python": (Path(sys.executable).resolve().read_bytes()[:4096], "an ELF executable"),
        "gz": (gzip.compress(text), "gzip-compressed data"),
        "zip": (zipped.read_bytes(), "a zip archive"),
        "npy": ((folder / "a.npy").read_bytes(), "a numpy .npy array"),
        "png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "a PNG image"),
        "nul": (b"\x01\xfe\x00\x02\xff" * 40, "binary data with NUL bytes"),
    }


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
@pytest.mark.parametrize("name", ["python", "gz", "zip", "npy", "png", "nul"])
def test_a_binary_file_is_called_binary_not_sent_to_another_encoding(tmp_path, name, encoding):
    content, kind = _binary_files(tmp_path)[name]
    if name == "python" and not content.startswith(b"\x7fELF"):
        pytest.skip("this Python is not an ELF file")
    path = tmp_path / f"data.{name}"
    path.write_bytes(content)
    for chunk_size in (1, 1 << 16):
        message = error(load_corpus, path, tmp_path / "cache", encoding=encoding,
                        chunk_size=chunk_size)  # fmt: skip
        if name == "nul" and encoding == "latin-1":  # decodes: the NUL byte itself is named
            assert message.startswith(f"{path}: NUL byte at byte offset 2: binary data, not text")
        else:
            assert message.startswith(f"{path}: binary, not text: it looks like {kind}"), message
            assert "--encoding" not in message
        assert "latin-1" not in message
    assert not (tmp_path / "cache").exists()


def test_text_that_starts_like_a_magic_number_is_text(tmp_path):
    path = write(tmp_path / "mz.txt", "MZ is two letters.\nBZh too.\n" * 10)
    assert len(ids(load_corpus(path, tmp_path / "cache"))) == len(path.read_text())


def test_utf16_with_a_byte_order_mark_read_as_utf8_names_utf16(tmp_path):
    path = write(tmp_path / "wide.txt", "plain ascii\n" * 4, "utf-16")
    message = error(load_corpus, path, tmp_path / "cache")
    assert message.endswith("it starts with a utf-16 byte-order mark: pass --encoding utf-16")


def test_per_char_scoring_calls_a_binary_file_binary(tmp_path):
    path = tmp_path / "a.gz"
    path.write_bytes(gzip.compress(ASCII.encode()))
    message = error(read_scored_text, path, "utf-8")
    assert message == f"{path}: binary, not text: it looks like gzip-compressed data"


# --- splits -----------------------------------------------------------------------------


def test_split_contiguous_from_the_end():
    arr = np.arange(1000)
    train, val, test = split_corpus(arr, 0.1, 0.05)
    assert (len(train), len(val), len(test)) == (850, 100, 50)
    np.testing.assert_array_equal(np.concatenate([train, val, test]), arr)
    assert np.shares_memory(train, arr) and val[0] == 850 and test[-1] == 999
    train, val, test = split_corpus(arr)
    assert (len(train), len(val), len(test)) == (900, 100, 0)
    for bad in [(1.0, 0.0), (-0.1, 0.0), (0.5, 0.5), (0.2, 1.0)]:
        with pytest.raises(ValueError):
            split_corpus(arr, *bad)


def test_split_of_memmap_stays_memmap(tmp_path):
    corpus = load_corpus(write(tmp_path / "c.txt", ASCII * 20), tmp_path / "cache")
    train, val, _ = split_corpus(corpus.data, 0.25)
    assert isinstance(train, np.memmap) and len(val) == len(ASCII * 20) // 4


# --- training batches -------------------------------------------------------------------


@pytest.mark.parametrize("n, b, t", [(1000, 4, 7), (51, 5, 9), (20, 1, 19), (64, 8, 1)])
def test_batches_cover_streams_and_continue(n, b, t):
    arr = np.arange(n, dtype=np.uint16)
    it = BatchIterator(arr, b, t)
    row = n // b
    assert it.batches_per_epoch == (row - 1) // t >= 1
    xs, prev = [], None
    for k in range(it.batches_per_epoch):
        assert (it.epoch, it.index) == (0, k)
        x, y = it.next_batch()
        assert x.shape == y.shape == (b, t) and x.dtype == y.dtype == np.intp
        assert x.flags.c_contiguous and y.flags.c_contiguous
        np.testing.assert_array_equal(y, x + 1)  # targets are the inputs shifted by one
        np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
        if prev is not None:
            np.testing.assert_array_equal(x[:, 0], prev[:, -1])  # streams continue
        prev = y
        xs.append(x)
    assert (it.epoch, it.index) == (1, 0)
    streams = np.concatenate(xs, axis=1)
    used = it.batches_per_epoch * t
    expected = np.arange(b)[:, None] * row + np.arange(used)[None, :]
    np.testing.assert_array_equal(streams, expected)  # each stream a contiguous 1/B
    x, _ = it.next_batch()
    np.testing.assert_array_equal(x, xs[0])  # the next epoch starts over
    assert (it.epoch, it.index) == divmod(it.batches_per_epoch + 1, it.batches_per_epoch)


def test_batch_position_restores_exactly():
    arr = np.random.default_rng(0).integers(0, 60, size=5000).astype(np.uint8)
    it = BatchIterator(arr, 6, 11)
    for _ in range(it.batches_per_epoch + 17):  # into the second epoch
        it.next_batch()
    state = json.loads(json.dumps(it.state_dict()))
    expected = [it.next_batch() for _ in range(it.batches_per_epoch)]
    resumed = BatchIterator(arr, 6, 11)
    resumed.load_state_dict(state)
    assert (resumed.epoch, resumed.index) == (1, 17)
    for x, y in expected:
        rx, ry = resumed.next_batch()
        np.testing.assert_array_equal(rx, x)
        np.testing.assert_array_equal(ry, y)
    assert resumed.state_dict() == it.state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        BatchIterator(arr, 5, 11).load_state_dict(state)
    with pytest.raises(ValueError, match="invalid data position"):
        BatchIterator(arr, 6, 11).load_state_dict({**state, "index": 10**6})


def test_too_short_for_one_batch():
    arr = np.zeros(100, dtype=np.uint8)
    message = error(BatchIterator, arr, 10, 10, source="play.txt (training split)")
    assert message.startswith("play.txt (training split): 100 characters")
    assert "batch_size x (seq_length + 1) = 10 x 11 = 110" in message
    for flag in ("--batch-size", "--seq-length", "--val-fraction"):
        assert flag in message
    assert BatchIterator(arr, 10, 9).batches_per_epoch == 1  # 10 x (9 + 1) = 100 is enough
    with pytest.raises(ValueError):
        BatchIterator(arr, 0, 5)


def test_batches_from_memmap_with_page_release(tmp_path, monkeypatch):
    monkeypatch.setattr(batches, "_RELEASE_BYTES", 64)  # release pages after nearly every batch
    text = mixed_long_text(6000, seed=3)
    corpus = load_corpus(write(tmp_path / "c.txt", text), tmp_path / "cache")
    train, val, _ = split_corpus(corpus.data, 0.2)
    plain = np.asarray(train).copy()
    a, b = BatchIterator(train, 7, 13), BatchIterator(plain, 7, 13)
    assert batches._shared_mmap(train) is not None and batches._shared_mmap(plain) is None
    for _ in range(a.batches_per_epoch):
        for u, v in zip(a.next_batch(), b.next_batch(), strict=True):
            np.testing.assert_array_equal(u, v)
    scored = [y[m] for _, y, m in eval_batches(val, 4, 16)]
    np.testing.assert_array_equal(np.sort(np.concatenate(scored)), np.sort(np.asarray(val)[1:]))


# --- evaluation batches -----------------------------------------------------------------


@pytest.mark.parametrize(
    "n, b, t", [(1000, 4, 7), (101, 4, 25), (10, 4, 3), (3, 5, 2), (2, 1, 1), (57, 57, 4)]
)
def test_eval_batches_score_every_char_once(n, b, t):
    arr = np.arange(n, dtype=np.uint32)
    batches = list(eval_batches(arr, b, t))
    assert len(batches) == eval_batch_count(n, b, t) >= 1
    targets, prev = [], None
    for x, y, mask in batches:
        assert x.shape == y.shape == mask.shape == (b, t) and mask.dtype == bool
        assert x.dtype == y.dtype == np.intp
        np.testing.assert_array_equal(x[mask], y[mask] - 1)  # the char before each target
        if prev is not None:  # each stream continues where it stopped
            pm, py = prev
            cont = pm[:, -1] & mask[:, 0]
            np.testing.assert_array_equal(x[cont, 0], py[cont, -1])
        prev = (mask, y)
        targets.append(y[mask])
    np.testing.assert_array_equal(np.sort(np.concatenate(targets)), np.arange(1, n))
    masks = np.concatenate([m for _, _, m in batches], axis=1)
    lengths = masks.sum(axis=1)
    assert lengths.max() - lengths.min() <= 1  # balanced streams; padding only at the end
    assert all(np.all(np.diff(row.astype(int)) <= 0) for row in masks)


def test_eval_batches_nothing_to_score():
    assert list(eval_batches(np.arange(1), 3, 4)) == []
    assert eval_batch_count(0, 3, 4) == 0
    with pytest.raises(ValueError):
        eval_batches(np.arange(10), 3, 0)


def test_cache_bytes_overwritten_in_range_are_caught_by_the_checksum(tmp_path):
    path, cache = write(tmp_path / "c.txt", ASCII * 3), tmp_path / "cache"
    expected = ids(load_corpus(path, cache)).copy()
    ids_file = next(cache.glob("*.ids"))
    damaged = bytearray(ids_file.read_bytes())
    damaged[5] = (damaged[5] + 1) % len(set(ASCII))  # still a valid id: only the CRC tells
    ids_file.write_bytes(bytes(damaged))
    again = load_corpus(path, cache)
    assert not again.from_cache
    np.testing.assert_array_equal(ids(again), expected)


def test_cache_id_beyond_the_vocabulary_is_never_used(tmp_path):
    path, cache = write(tmp_path / "c.txt", "abc\n" * 20), tmp_path / "cache"
    load_corpus(path, cache)
    ids_file = next(cache.glob("*.ids"))
    damaged = bytearray(ids_file.read_bytes())
    damaged[0] = 200
    ids_file.write_bytes(bytes(damaged))
    sidecar = ids_file.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["ids_crc32"] = zlib.crc32(bytes(damaged))  # a forged checksum that matches
    sidecar.write_text(json.dumps(meta))
    again = load_corpus(path, cache)
    assert not again.from_cache and int(np.max(ids(again))) < len(again.vocab)


def test_one_cache_per_corpus_for_its_own_vocabulary(tmp_path):
    path, cache = write(tmp_path / "c.txt", "abc\n" * 10), tmp_path / "cache"
    own = load_corpus(path, cache)
    assert len(own.sha256) == 64
    same = load_corpus(path, cache, vocab=own.vocab)  # a resume or a split's evaluation
    assert same.from_cache and same.cache_file == own.cache_file
    assert same.sha256 == own.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(cache_listing(cache)) == 2


def test_cached_ids_are_read_without_the_text_only_while_verified(tmp_path):
    path, cache = write(tmp_path / "c.txt", ASCII * 3), tmp_path / "cache"
    corpus = load_corpus(path, cache)
    expected = ids(corpus).copy()
    path.unlink()  # the ids stand on their own
    np.testing.assert_array_equal(cached_ids(cache, corpus.vocab), expected)
    np.testing.assert_array_equal(cached_ids(cache, corpus.vocab, corpus.sha256), expected)
    assert cached_ids(cache, corpus.vocab, "0" * 64) is None  # another file's text
    assert cached_ids(cache, Vocab("abc")) is None  # another vocabulary
    assert cached_ids(tmp_path / "none", corpus.vocab) is None
    ids_file = next(cache.glob("*.ids"))
    damaged = bytearray(ids_file.read_bytes())
    damaged[3] = (damaged[3] + 1) % len(corpus.vocab)
    ids_file.write_bytes(bytes(damaged))
    assert cached_ids(cache, corpus.vocab) is None
