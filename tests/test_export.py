"""`rnn export`: the page's content, its weights at each precision, and every refusal."""

from __future__ import annotations

import base64
import dataclasses
import errno
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rnncli import cells, export
from rnncli.checkpoint import load_checkpoint, save_checkpoint
from rnncli.export import tensors
from rnncli.model import Model
from rnncli.vocab import Vocab
from tests.helpers import run

# Words whose characters a page must carry intact: HTML and script delimiters, quotes, the
# line separators JavaScript once treated as newlines, an emoji outside the BMP, CJK.
WORDS = ["To ", "be, ", "or ", "not ", "the ", "question\n", "</script> ", "<!-- ", "'q' ",
         '"qq" ', "a\u2028b ", "\U0001f600 ", "漢字 ", "&amp; ", "\\n "]  # fmt: skip
TRAIN = ["--hidden-size", "16", "--num-layers", "2", "--batch-size", "8", "--seq-length",
         "16", "--max-steps", "60", "--learning-rate", "0.01", "--eval-every", "30",
         "--quiet"]  # fmt: skip


def write_corpus(path: Path, size: int = 1500, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.write_text("".join(rng.choice(WORDS, size=size)), encoding="utf-8")
    return path


def train_tiny(folder: Path, cell: str = "lstm", *extra) -> Path:
    """A run folder of a small model of ``cell`` trained briefly on ``WORDS``."""
    corpus = folder / "corpus.txt"
    if not corpus.exists():
        write_corpus(corpus)
    run("train", corpus, "--out", folder / cell, "--model", cell, *TRAIN, *extra)
    return folder / cell


def one_error_line(result) -> str:
    lines = [x for x in result.stderr.strip().splitlines() if not x.startswith("rnn: using ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rnn: error: ") and "Traceback" not in result.output
    return lines[0]


def model_json(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="model">(.*?)</script>', page, re.S)
    assert found
    return json.loads(found.group(1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("export"))


def test_the_page_holds_the_model_the_vocabulary_and_only_inline_code(trained, tmp_path):
    result = run("export", trained, "--out", tmp_path / "page.html")
    assert re.fullmatch(r"wrote \S+page\.html \(0\.\d\d MB, weights as float16\)\n", result.stdout)
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    spec = model_json(page)
    ckpt = load_checkpoint(trained / "best.npz")
    assert spec["vocab"] == list(ckpt.vocab)  # every hostile character intact
    assert set("</>'\"&\\\u2028\U0001f600漢") <= set(ckpt.vocab)
    assert spec["precision"] == "float16" and spec["cell"] == "lstm"
    assert {t["kind"] for t in spec["tensors"].values()} == {"f16"}
    # the only tags that close a script are the page's own two; the data is plain ASCII
    assert page.count("</script>") == 2 and page.count("<script") == 2
    data = re.search(r'id="model">(.*?)</script>', page, re.S).group(1)
    assert data.isascii() and not set("<>&") & set(data)
    assert not re.search(r"\b(src|href)=", page)


def test_a_title_from_a_hostile_folder_name_is_text(trained, tmp_path):
    folder = tmp_path / '<script>alert("x")'
    folder.mkdir()
    (folder / "best.npz").write_bytes((trained / "best.npz").read_bytes())
    run("export", folder, "--out", tmp_path / "page.html")
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert "<title>&lt;script&gt;alert(&quot;x&quot;)/best.npz</title>" in page
    assert page.count("<script") == 2


def test_the_content_security_policy_allows_exactly_the_page_s_script_and_style(trained, tmp_path):
    run("export", trained, "--out", tmp_path / "page.html")
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page).group(1)
    assert policy.startswith("default-src 'none'; ")
    script = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    for directive, text in (("script-src", script), ("style-src", style)):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert f"{directive} 'sha256-{digest}';" in policy
    assert cells.get("lstm").js_step in script


@pytest.mark.parametrize("cell", list(cells.CELLS))
@pytest.mark.parametrize("mlp_size", [0, 4])
def test_the_page_s_tensors_at_float32_compute_what_the_model_computes(cell, mlp_size):
    model = Model(7, cell, hidden_size=5, num_layers=3, embedding_size=3, seed=2,
                  mlp_size=mlp_size)  # fmt: skip
    if mlp_size:  # the MLP's biases start at zero: make them count
        for name in ("mlp.1.b1", "mlp.2.b2"):
            model.params[name][...] = np.random.default_rng(1).normal(size=model.params[name].shape)
    mirror = export.page_model(model, "float32")
    assert mirror.embedding_size == 0  # the embedding is folded into the table
    assert mirror.mlp_size == mlp_size  # the MLP is on the page, never dropped
    assert set(export.page_tensors(model)) == set(export._page_shapes(model))
    ids = np.random.default_rng(0).integers(0, 7, size=(2, 30))
    expected = model.forward(ids[:, :-1], ids[:, 1:], model.zero_state(2))[0]
    got = mirror.forward(ids[:, :-1], ids[:, 1:], mirror.zero_state(2))[0]
    assert got == pytest.approx(expected, abs=1e-5)


# Weights as a model has them: zero, or of a size whose int8 scale (max / 127) float32 holds.
WEIGHTS = st.one_of(st.just(0.0), st.floats(1e-30, 1e3), st.floats(-1e3, -1e-30))


@settings(max_examples=100, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=WEIGHTS),
    st.sampled_from(tensors.PRECISIONS),
)
def test_packed_weights_decode_within_their_precision(w, precision):
    packed = tensors.pack(w, precision)
    assert len(packed.data) + len(packed.scales or b"") == tensors.packed_bytes(w.shape, precision)
    back = tensors.unpack(packed)
    assert back.shape == w.shape
    if precision == "float32":
        np.testing.assert_array_equal(back, w.astype(np.float32))
    elif precision == "float16":
        assert np.all(np.abs(back - w) <= np.abs(w) * 2**-11 + 2**-25)
    else:  # each column to half its step, max |column| / 127, and the step's float32 rounding
        step = np.abs(w).max(axis=0) / 127
        assert np.all(np.abs(back - w) <= step * (0.5 + 127 * 2**-24))
        vector = tensors.unpack(tensors.pack(w[0], precision))
        np.testing.assert_array_equal(vector, w[0].astype(np.float32))  # biases stay float32


def test_an_all_zero_column_stays_zero_at_int8():
    w = np.array([[0.0, 1.0], [0.0, -0.5]])
    np.testing.assert_array_equal(tensors.unpack(tensors.pack(w, "int8"))[:, 0], 0.0)


@pytest.fixture(scope="module")
def trained_mlp(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("export-mlp"), "minlstm", "--mlp-size", "24")


@pytest.mark.parametrize("which", ["trained", "trained_mlp"])
def test_lower_precisions_give_smaller_pages_and_the_estimate_is_close(which, request, tmp_path):
    trained = request.getfixturevalue(which)
    ckpt = load_checkpoint(trained / "best.npz")
    model = Model.from_params(ckpt.params, ckpt.config["model"])
    sizes = {}
    for precision in tensors.PRECISIONS:
        out = tmp_path / f"{precision}.html"
        run("export", trained, "--out", out, "--precision", precision)
        sizes[precision] = out.stat().st_size
        estimate = export.estimate_bytes(model, precision)
        assert abs(estimate - sizes[precision]) < 0.01 * sizes[precision] + 3_000
    assert sizes["float32"] > sizes["float16"] > sizes["int8"]


# -- refusals ---------------------------------------------------------------------------------


def test_the_page_goes_beside_the_checkpoint_by_default(trained):
    result = run("export", trained, "--precision", "int8")
    assert f"wrote {trained / 'model.html'} (" in result.stdout
    assert model_json((trained / "model.html").read_text(encoding="utf-8"))["precision"] == "int8"
    (trained / "model.html").unlink()


def test_a_bad_checkpoint_is_one_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    result = run("export", bad, "--out", tmp_path / "page.html", code=1)
    assert str(bad) in one_error_line(result)
    assert not (tmp_path / "page.html").exists()


def test_an_unknown_precision_is_a_usage_error(trained, tmp_path):
    run("export", trained, "--out", tmp_path / "p.html", "--precision", "int4", code=2)


def test_out_a_folder_or_in_a_missing_folder_is_one_error(trained, tmp_path):
    (tmp_path / "folder").mkdir()
    for out in (tmp_path / "folder", tmp_path / "no" / "such.html"):
        result = run("export", trained, "--out", out, code=1)
        assert "cannot write the page" in one_error_line(result)
    assert list((tmp_path / "folder").iterdir()) == []


def test_an_unwritable_out_is_one_error_and_leaves_nothing(trained, tmp_path, monkeypatch):
    (tmp_path / "locked").mkdir(mode=0o500)
    if not os.access(tmp_path / "locked", os.W_OK):  # root may write anywhere
        result = run("export", trained, "--out", tmp_path / "locked" / "p.html", code=1)
        assert "cannot write the page (Permission denied)" in one_error_line(result)

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)  # the disk fills as the page is put in place
    result = run("export", trained, "--out", tmp_path / "p.html", code=1)
    assert "p.html: cannot write the page (No space left on device)" in one_error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked"]  # no temporary left


def test_out_the_checkpoint_itself_is_refused(trained, tmp_path):
    ckpt = tmp_path / "model.npz"
    ckpt.write_bytes((trained / "best.npz").read_bytes())
    result = run("export", ckpt, "--out", ckpt, code=1)
    assert "which this command reads" in one_error_line(result)
    assert ckpt.read_bytes() == (trained / "best.npz").read_bytes()


def test_out_is_written_as_a_file_the_user_named(trained, tmp_path):
    """The run folder's own files are refused; a symlink is written through and stays a link;
    /dev/null is written to, never replaced by a regular file."""
    metrics = trained / "metrics.jsonl"
    before = metrics.read_bytes()
    result = run("export", trained, "--out", metrics, code=1)
    assert "which this command reads" in one_error_line(result)
    assert metrics.read_bytes() == before
    (tmp_path / "link.html").symlink_to(tmp_path / "target.html")
    run("export", trained, "--out", tmp_path / "link.html")
    assert (tmp_path / "link.html").is_symlink()
    assert model_json((tmp_path / "target.html").read_text(encoding="utf-8"))["vocab"]
    run("export", trained, "--out", os.devnull)
    assert Path(os.devnull).is_char_device()


def test_a_cell_without_a_javascript_step_is_refused_in_one_line(trained, tmp_path, monkeypatch):
    bare = dataclasses.replace(cells.get("rnn"), name="bare", js_step=None)
    monkeypatch.setitem(cells.CELLS, "bare", bare)
    with pytest.raises(export.ExportError, match="the bare cell has no JavaScript step"):
        export.render(Model(5, "bare", 4, 1), Vocab("abcde"), "float32", "t")
    monkeypatch.setitem(cells.CELLS, "lstm", dataclasses.replace(cells.get("lstm"), js_step=None))
    result = run("export", trained, "--out", tmp_path / "p.html", code=1)
    assert "the lstm cell has no JavaScript step" in one_error_line(result)
    assert not (tmp_path / "p.html").exists()


def test_a_page_too_large_to_open_is_refused_before_it_is_built(trained, tmp_path, monkeypatch):
    model = Model.from_params(load_checkpoint(trained / "best.npz").params, "lstm")
    limit = (export.estimate_bytes(model, "float16") + export.estimate_bytes(model, "int8")) // 2
    monkeypatch.setattr(export, "MAX_PAGE_BYTES", limit)
    monkeypatch.setattr(export, "_packed", lambda *a: pytest.fail("packed before refusing"))
    result = run("export", trained, "--out", tmp_path / "p.html", code=1)
    line = one_error_line(result)
    assert "over the" in line and "--precision int8 would fit" in line
    assert not (tmp_path / "p.html").exists()


def test_weights_beyond_float16_are_refused_at_float16_only(trained, tmp_path):
    ckpt = load_checkpoint(trained / "best.npz")
    ckpt.params["out.b"] = ckpt.params["out.b"].copy()
    ckpt.params["out.b"][0] = 1e5
    save_checkpoint(tmp_path / "big.npz", ckpt)
    result = run("export", tmp_path / "big.npz", "--out", tmp_path / "p.html", code=1)
    assert "beyond float16's range" in one_error_line(result)
    run("export", tmp_path / "big.npz", "--out", tmp_path / "p.html", "--precision", "float32")
    run("export", tmp_path / "big.npz", "--out", tmp_path / "q.html", "--precision", "int8")


def test_the_javascript_steps_ship_in_the_package():
    for name in ("rnn", "lstm", "gru", "mingru", "minlstm"):
        assert cells.get(name).js_step == cells.js_source(name)
        assert f'RNN.registerCell("{name}"' in cells.js_source(name)
    assert cells.js_source("no-such-cell") is None
