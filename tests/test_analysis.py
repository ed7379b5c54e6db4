"""rnncli.analysis: activations, surprisal, top-k guesses, features and unit ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnncli import analysis, cells
from rnncli.analysis import Unit, analyse, run_model, text_features
from rnncli.evaluate import evaluate_file, score
from rnncli.model import Model
from rnncli.vocab import Vocab

TEXT = 'He said "to be (or not) be", 2 times.\nTHE END\nno more'
VOCAB = Vocab(TEXT)


def model(cell: str, seed: int = 0) -> Model:
    return Model(len(VOCAB), cell, hidden_size=5, num_layers=2, dtype="float64", seed=seed)


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


@pytest.mark.parametrize("cell", tuple(cells.CELLS))
def test_states_equal_the_forward_pass_at_every_character(cell):
    m = model(cell)
    ids = VOCAB.encode(TEXT)
    acts, *_ = run_model(m, ids)
    for t in range(1, len(ids)):
        # Model.forward over the first t characters ends in the state after character t - 1.
        _, final, _ = m.forward(ids[None, :t], ids[None, :t], m.zero_state(1))
        for layer in range(m.num_layers):
            np.testing.assert_allclose(acts[layer, "h"][t - 1], final[layer, 0, 0], atol=1e-12)
            if cell == "lstm":
                np.testing.assert_allclose(acts[layer, "c"][t - 1], final[layer, 1, 0], atol=1e-12)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gates_are_the_cell_equations_of_the_parameters(cell):
    m = model(cell, seed=3)
    ids = VOCAB.encode(TEXT)
    acts, *_ = run_model(m, ids)
    H, p = m.hidden_size, m.params
    for layer in range(m.num_layers):
        x = np.eye(len(VOCAB))[ids] if layer == 0 else acts[layer - 1, "h"]
        h = acts[layer, "h"]
        h_prev = np.vstack([np.zeros(H), h[:-1]])
        ax = x @ p[f"rnn.{layer}.Wx"] + p[f"rnn.{layer}.b"]
        ah = h_prev @ p[f"rnn.{layer}.Wh"]
        if cell == "lstm":
            a = ax + ah
            expected = {
                "i": sigmoid(a[:, :H]),
                "f": sigmoid(a[:, H : 2 * H]),
                "o": sigmoid(a[:, 2 * H : 3 * H]),
                "g": np.tanh(a[:, 3 * H :]),
            }
            c_prev = np.vstack([np.zeros(H), acts[layer, "c"][:-1]])
            c = expected["f"] * c_prev + expected["i"] * expected["g"]
            np.testing.assert_allclose(acts[layer, "c"], c, atol=1e-6)
        else:
            r = sigmoid(ax[:, :H] + ah[:, :H])
            expected = {
                "r": r,
                "z": sigmoid(ax[:, H : 2 * H] + ah[:, H : 2 * H]),
                "n": np.tanh(ax[:, 2 * H :] + r * (ah[:, 2 * H :] + p[f"rnn.{layer}.bh"])),
            }
        for kind, value in expected.items():
            # activations are kept as float32: compare at that precision
            np.testing.assert_allclose(acts[layer, kind], value, atol=1e-6)


@pytest.mark.parametrize("cell", tuple(cells.CELLS))
def test_surprisal_matches_evaluate(cell, tmp_path):
    m = model(cell, seed=1)
    ids = VOCAB.encode(TEXT)
    _, surprisal, _, _ = run_model(m, ids)
    assert math.isnan(surprisal[0]) and np.isfinite(surprisal[1:]).all()
    total, count = score(m, ids, batch_size=1, seq_length=7)
    assert count == len(ids) - 1
    np.testing.assert_allclose(np.sum(surprisal[1:]) * math.log(2), total, rtol=1e-10)
    path = tmp_path / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    report = evaluate_file(m, VOCAB, path, batch_size=1, seq_length=10)  # what `rnn eval` runs
    np.testing.assert_allclose(np.mean(surprisal[1:]), report.bpc, rtol=1e-10)


def test_top_k_are_the_largest_softmax_probabilities():
    m = model("lstm", seed=2)
    ids = VOCAB.encode(TEXT)
    acts, _, top_ids, top_probs = run_model(m, ids, k=5)
    logits = acts[1, "h"].astype(np.float64) @ m.params["out.W"] + m.params["out.b"]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    order = np.argsort(-p, axis=1)[:, :5]
    np.testing.assert_array_equal(top_ids, order)
    np.testing.assert_allclose(top_probs, np.take_along_axis(p, order, axis=1), atol=1e-6)
    assert (np.diff(top_probs, axis=1) <= 0).all()
    assert (top_probs.sum(axis=1) <= 1 + 1e-12).all()
    _, _, _, every = run_model(m, ids, k=len(VOCAB))  # k = V: all of it
    np.testing.assert_allclose(every.sum(axis=1), 1.0, rtol=1e-12)


def test_a_planted_unit_ranks_first_for_its_feature():
    m = model("rnn", seed=4)
    space = VOCAB.chars.index(" ")
    # Unit 3 of layer 0 becomes tanh(+-4): +0.9993 on a space, -0.9993 elsewhere.
    m.params["rnn.0.Wx"][:, 3] = -4.0
    m.params["rnn.0.Wx"][space, 3] = 4.0
    m.params["rnn.0.Wh"][:, 3] = 0.0
    m.params["rnn.0.b"][3] = 0.0
    result = analyse(m, VOCAB, TEXT)
    best = result.ranking["space"][0]
    assert (best.layer, best.kind, best.index) == (0, "h", 3)
    assert best.r == pytest.approx(1.0, abs=1e-6)
    assert best.key == "0:h:3"
    assert all(abs(u.r) <= abs(best.r) for u in result.ranking["space"])


def test_features_by_hand():
    f = text_features('a "b (c)" D\n9e')
    # characters:      a   ␣  "  b  ␣  (  c  )  "  ␣  D  ↵  9  e
    assert f["inside quotes"].tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert f["inside brackets"].tolist() == [0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert f["position in line"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0, 1]
    assert f["after newline"].tolist() == [0] * 12 + [1, 0]
    assert f["start of word"].tolist() == [1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1]
    assert f["uppercase"].tolist() == [0] * 10 + [1, 0, 0, 0]
    assert f["digit"].tolist() == [0] * 12 + [1, 0]
    assert f["capitals line"].tolist()[:12] == [0] * 10 + [0, 0]  # 'a' is lower case
    assert text_features("AB c\nXY\n")["capitals line"].tolist() == [1, 1, 1, 0, 0, 1, 1, 0]
    assert text_features("ab cde")["position in word"].tolist() == [0, 1, 0, 0, 1, 2]
    assert set(f) == set(analysis.FEATURES)


def test_constant_features_are_not_ranked_and_constant_units_correlate_zero():
    acts = np.array([[1.0, 0.0, 5.0], [1.0, 1.0, 4.0], [1.0, 0.0, 3.0], [1.0, 1.0, 2.0]])
    r = analysis.correlations(acts, np.array([[0.0, 1, 0, 1], [7, 7, 7, 7]]).T)
    assert r[0, :2].tolist() == [0.0, 1.0] and r[0, 2] == pytest.approx(-np.sqrt(0.2))
    assert r[1].tolist() == [0.0, 0.0, 0.0]
    result = analyse(model("gru"), VOCAB, "ab ab ab")
    assert "digit" not in result.ranking and "space" in result.ranking
    assert all(isinstance(u, Unit) for u in result.ranking["space"])


@pytest.mark.parametrize("length", [0, 1, analysis.MAX_CHARS + 1])
def test_text_length_is_bounded(length):
    with pytest.raises(ValueError, match="2 to"):
        analyse(model("rnn"), Vocab("a"), "a" * length)


@pytest.mark.parametrize("width", [3, 6])  # fewer or more columns than characters: both ways
def test_character_map_is_the_pca_of_the_input_vectors(width):
    """Rows of known principal axes: two characters at +-3 along one direction, two at +-1
    along another, and some at the mean; the first axis holds 18 of the 20 units of variance."""
    V = 5
    m = Model(V, "lstm", 2, 1, dtype="float64", embedding_size=width)
    W = np.zeros((V, width))
    W[0, 0], W[1, 0], W[2, 1], W[3, 1] = 3.0, -3.0, 1.0, -1.0
    W += np.arange(width) * 0.5  # an offset: PCA centres the rows
    m.params["embed.W"][...] = W
    cmap = analysis.character_map(m)
    assert cmap.source == "embed.W"
    assert cmap.explained == pytest.approx((0.9, 0.1), abs=1e-12)
    np.testing.assert_allclose(np.abs(cmap.xy), [[3, 0], [3, 0], [0, 1], [0, 1], [0, 0]],
                               atol=1e-12)  # fmt: skip
    assert cmap.xy[0, 0] == pytest.approx(-cmap.xy[1, 0])  # opposite sides; the sign is free


def test_character_map_without_an_embedding_uses_layer_0_s_one_hot_weights():
    m = model("gru")
    m.params["rnn.0.Wx"][...] = 0.0
    m.params["rnn.0.Wx"][:, 4] = np.arange(len(VOCAB))  # rank 1: one axis holds everything
    cmap = analysis.character_map(m)
    assert cmap.source == "rnn.0.Wx" and cmap.xy.shape == (len(VOCAB), 2)
    assert cmap.explained == pytest.approx((1.0, 0.0), abs=1e-12)
    centred = np.arange(len(VOCAB)) - (len(VOCAB) - 1) / 2
    np.testing.assert_allclose(np.abs(cmap.xy[:, 0]), np.abs(centred), atol=1e-9)
    m.params["rnn.0.Wx"][...] = 1.0  # no variance at all: nothing to explain
    assert analysis.character_map(m).explained == (0.0, 0.0)


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_the_min_cells_gates_are_the_papers_equations(cell):
    m = model(cell, seed=3)
    ids = VOCAB.encode(TEXT)
    acts, *_ = run_model(m, ids)
    H, p = m.hidden_size, m.params
    assert set(kind for _, kind in acts) == set(m.cell_type.kinds)
    for layer in range(m.num_layers):
        x = np.eye(len(VOCAB))[ids] if layer == 0 else acts[layer - 1, "h"]
        a = x @ p[f"rnn.{layer}.Wx"] + p[f"rnn.{layer}.b"]
        if cell == "mingru":
            expected = {"z": sigmoid(a[:, :H]), "n": a[:, H:]}
            decay, inp = 1 - expected["z"], expected["z"] * expected["n"]
        else:
            f, i = sigmoid(a[:, :H]), sigmoid(a[:, H : 2 * H])
            expected = {"f": f / (f + i), "i": i / (f + i), "n": a[:, 2 * H :]}
            decay, inp = expected["f"], expected["i"] * expected["n"]
        h, prev = np.empty_like(inp), np.zeros(H)
        for t in range(len(ids)):
            h[t] = prev = decay[t] * prev + inp[t]
        expected["h"] = h
        for kind, value in expected.items():
            # activations are kept as float32: compare at that precision
            np.testing.assert_allclose(acts[layer, kind], value, rtol=1e-5, atol=1e-6)
