"""Grow a trained model's vocabulary, for fine-tuning on a text with characters it never saw.

A character's weights live in three places: its row of the input table (``embed.W`` with an
embedding, else ``rnn.0.Wx``: a one-hot input selects that row), its column of ``out.W`` and its
entry of ``out.b``. Growing copies every old character's row, column and bias to the
character's place in the new (sorted) vocabulary and leaves every other parameter as it is, so
on text of old characters the grown model computes the same hidden states and the same logits
for the old characters; only the softmax now also spreads a little mass over the new ones.

New characters start as follows (docs/finetune.md has the measurements behind the choices):

- input row: ``random``, drawn like a fresh model's row (the default: a little ahead of the
  alternative on German, level with it on Russian), or ``mean``, the mean of the old rows (a
  new character first acting like a typical old one);
- output column: zero, so its logit is its bias alone, whatever the context;
- output bias: log(prior) + logsumexp(old biases), with prior 1/V_new: with a zero hidden
  state the new character gets about the probability of an average character, and in real
  contexts, where the trained logits are peaked, much less. The model therefore does not
  start out predicting new characters often; where one is the target, its logit's gradient
  is p - 1, about -1 however small p is, so it is learnt from its first occurrences.
"""

from __future__ import annotations

import unicodedata

import numpy as np

from .model import input_table_name

NOTE_LIMIT = 40  # characters named in the note; the rest are counted


def _draw_random(old_rows: np.ndarray, count: int, table: str, rng: np.random.Generator):
    # As Model._init_params draws them: N(0, 1) for an embedding, uniform in +-1 for one-hot Wx.
    shape = (count, old_rows.shape[1])
    return rng.standard_normal(shape) if table == "embed.W" else rng.uniform(-1.0, 1.0, shape)


def _mean_rows(old_rows: np.ndarray, count: int, table: str, rng: np.random.Generator):
    return np.broadcast_to(old_rows.mean(axis=0, dtype=np.float64), (count, old_rows.shape[1]))


# How new characters' input rows start: name -> (old rows, count, table name, rng) -> rows.
INPUT_INITS = {"mean": _mean_rows, "random": _draw_random}
DEFAULT_INPUT_INIT = "random"


def new_positions(old_chars: str, new_chars: str) -> tuple[np.ndarray, np.ndarray]:
    """(index in ``new_chars`` of each old character, indices in ``new_chars`` of the added
    ones). ValueError unless ``new_chars`` holds every character of ``old_chars``."""
    where = {ch: i for i, ch in enumerate(new_chars)}
    missing = [ch for ch in old_chars if ch not in where]
    if missing:
        raise ValueError(f"the new vocabulary lacks {len(missing)} of the old characters")
    kept = np.fromiter((where[ch] for ch in old_chars), dtype=np.intp, count=len(old_chars))
    added = np.setdiff1d(np.arange(len(new_chars)), kept)
    return kept, added


def grow_params(
    params: dict[str, np.ndarray],
    old_chars: str,
    new_chars: str,
    init: str | None = None,
    rng: np.random.Generator | None = None,
) -> dict[str, np.ndarray]:
    """``params`` of a model over ``old_chars`` refitted to ``new_chars`` (a superset; both in
    the order of the model's ids), as new arrays of the same dtypes; see the module doc.
    ``init`` names the new input rows' start (``INPUT_INITS``; None: ``DEFAULT_INPUT_INIT``),
    ``rng`` draws them if random."""
    init = DEFAULT_INPUT_INIT if init is None else init
    if init not in INPUT_INITS:
        raise ValueError(f"init must be one of {', '.join(INPUT_INITS)}, got {init!r}")
    table = input_table_name(params)
    if table is None or "out.W" not in params or "out.b" not in params:
        raise ValueError("params lack an input table, out.W or out.b")
    V_old, V_new = len(old_chars), len(new_chars)
    if params[table].shape[0] != V_old or params["out.W"].shape[1] != V_old:
        raise ValueError(f"params do not fit a vocabulary of {V_old} characters")
    kept, added = new_positions(old_chars, new_chars)
    rng = np.random.default_rng(0) if rng is None else rng
    grown = {name: p.copy() for name, p in params.items()}

    old_rows = params[table]
    rows = np.empty((V_new, old_rows.shape[1]), old_rows.dtype)
    rows[kept] = old_rows
    rows[added] = INPUT_INITS[init](old_rows, added.size, table, rng)
    grown[table] = rows

    out_W, out_b = params["out.W"], params["out.b"]
    W = np.zeros((out_W.shape[0], V_new), out_W.dtype)
    W[:, kept] = out_W
    b = np.empty(V_new, out_b.dtype)
    b[kept] = out_b
    b[added] = new_bias(out_b, V_new)
    grown["out.W"], grown["out.b"] = W, b
    return grown


def new_bias(old_bias: np.ndarray, new_size: int) -> float:
    """The output bias of an added character: log(1 / new_size) + logsumexp(old_bias)."""
    b = old_bias.astype(np.float64)
    top = b.max()
    return float(top + np.log(np.exp(b - top).sum()) - np.log(new_size))


def shown_char(ch: str) -> str:
    """``ch`` as the terminal can show it: itself if a visible character, else an escape
    (``\\n``, ``\\x00``, ``\\u00a0``, ``\\u200b``: spaces, controls, format and unassigned)."""
    if ch.isprintable() and unicodedata.category(ch)[0] not in "CZ":
        return ch
    code = ord(ch)
    if ch in "\n\t\r":
        return repr(ch)[1:-1]
    return (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else f"\\U{code:08x}"
    )


def growth_note(old_chars: str, new_chars: str) -> str:
    """One line naming the characters ``new_chars`` adds to ``old_chars``."""
    old = set(old_chars)
    added = [ch for ch in new_chars if ch not in old]
    shown = " ".join(shown_char(ch) for ch in added[:NOTE_LIMIT])
    more = f" and {len(added) - NOTE_LIMIT} more" if len(added) > NOTE_LIMIT else ""
    return (
        f"the vocabulary grows from {len(old_chars)} to {len(new_chars)} characters, adding "
        f"{len(added)}: {shown}{more}"
    )
