"""What a trained model does on a piece of text: the numbers behind ``rnn report``'s page.

For a text x_0 .. x_{N-1} the model reads one character at a time through its own inference
path (``model.Stepper``) and ``analyse`` records, at every character i (after reading x_i):

* the activation of every unit of every layer: each of the cell's state arrays (``h``, and the
  cell state ``c`` of an LSTM) and gate blocks (LSTM i, f, o, g; GRU r, z, n; ...), as its
  declaration names them (``cells.Cell.kinds``), as (N, H) arrays keyed (layer, kind);
* the surprisal of x_i, -log2 p(x_i | x_<i) in bits (undefined for x_0, which has no context:
  as in ``rnn eval``, the first character is never scored);
* the k most likely next characters after x_i with their probabilities;
* simple text features of x_i and what precedes it (``FEATURES``), and the units whose
  activation correlates most strongly (Pearson, by absolute value) with each feature.

No HTML here: ``rnncli.report`` lays these numbers out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import cells
from .cells import Kind
from .model import Model
from .vocab import Vocab

MAX_CHARS = 5000  # activations of every unit are kept in memory: (N, H) per layer and kind


def kinds_of(cell: str) -> dict[str, Kind]:
    """The activation kinds of a cell type by name, as its declaration gives them: its state
    arrays (h first), then its gate blocks."""
    return cells.get(cell).kinds


# -- text features ------------------------------------------------------------------------------


def _inside_quotes(text: str) -> list[float]:
    """1 from an opening double quote up to (not including) its closing one."""
    out, inside = [], False
    for ch in text:
        if ch == '"':
            inside = not inside
        out.append(float(inside))
    return out


def _inside_brackets(text: str) -> list[float]:
    """1 inside (), [] or {} (from the opening bracket to before the closing one)."""
    out, depth = [], 0
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(depth - 1, 0)
        out.append(float(depth > 0))
    return out


def _line_position(text: str) -> list[float]:
    """Characters before this one on its line (0 for a line's first character)."""
    out, pos = [], 0
    for ch in text:
        out.append(float(pos))
        pos = 0 if ch == "\n" else pos + 1
    return out


def _word_position(text: str) -> list[float]:
    """Letters before this one in its word (0 for a word's first letter and outside words)."""
    out, run = [], 0
    for ch in text:
        run = run + 1 if ch.isalpha() else 0
        out.append(float(max(run - 1, 0)))
    return out


def _word_start(text: str) -> list[float]:
    """1 for a letter that follows a non-letter (or starts the text)."""
    return [
        float(ch.isalpha() and (i == 0 or not text[i - 1].isalpha())) for i, ch in enumerate(text)
    ]


def _after_newline(text: str) -> list[float]:
    """1 for the first character of a line (the previous one is a newline)."""
    return [float(i > 0 and text[i - 1] == "\n") for i in range(len(text))]


def _capitals_line(text: str) -> list[float]:
    """1 while the line so far has letters and all are capitals (a play's speaker names)."""
    out, letters, all_upper = [], 0, True
    for ch in text:
        if ch == "\n":
            letters, all_upper = 0, True
        elif ch.isalpha():
            letters += 1
            all_upper = all_upper and ch.isupper()
        out.append(float(letters > 0 and all_upper))
    return out


def _per_char(test: Callable[[str], bool]) -> Callable[[str], list[float]]:
    return lambda text: [float(test(ch)) for ch in text]


@dataclass(frozen=True)
class Feature:
    description: str
    compute: Callable[[str], list[float]]


# Each feature's value at character i depends only on x_0 .. x_i, what the model has read.
FEATURES = {
    "inside quotes": Feature(_inside_quotes.__doc__, _inside_quotes),
    "inside brackets": Feature(_inside_brackets.__doc__, _inside_brackets),
    "position in line": Feature(_line_position.__doc__, _line_position),
    "after newline": Feature(_after_newline.__doc__, _after_newline),
    "newline": Feature("1 for a newline.", _per_char(lambda ch: ch == "\n")),
    "start of word": Feature(_word_start.__doc__, _word_start),
    "position in word": Feature(_word_position.__doc__, _word_position),
    "space": Feature("1 for a space or tab.", _per_char(lambda ch: ch in " \t")),
    "uppercase": Feature("1 for an uppercase letter.", _per_char(str.isupper)),
    "vowel": Feature("1 for a, e, i, o, u (either case).", _per_char(lambda c: c in "aeiouAEIOU")),
    "digit": Feature("1 for a decimal digit.", _per_char(str.isdigit)),
    "punctuation": Feature(
        "1 for a character that is neither a letter, a digit nor whitespace.",
        _per_char(lambda ch: not (ch.isalnum() or ch.isspace())),
    ),
    "capitals line": Feature(_capitals_line.__doc__, _capitals_line),
}


def text_features(text: str) -> dict[str, np.ndarray]:
    """Every feature of ``FEATURES`` at every character of ``text``, as float64 (N,) arrays."""
    return {name: np.asarray(f.compute(text), dtype=np.float64) for name, f in FEATURES.items()}


# -- the model on the text ----------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """One unit of one layer and kind, and (in a ranking) its correlation with a feature."""

    layer: int
    kind: str
    index: int
    r: float = math.nan

    @property
    def key(self) -> str:
        """The page's name for the unit: layer, kind and index joined by colons ("1:c:37")."""
        return f"{self.layer}:{self.kind}:{self.index}"


@dataclass
class Analysis:
    text: str
    activations: dict[tuple[int, str], np.ndarray]  # (layer, kind) -> (N, H) float32
    surprisal: np.ndarray  # (N,) bits; nan at 0
    top_ids: np.ndarray  # (N, k) vocabulary indices of the likeliest next characters
    top_probs: np.ndarray  # (N, k) their probabilities, in decreasing order
    features: dict[str, np.ndarray]  # name -> (N,)
    ranking: dict[str, list[Unit]]  # feature -> units by decreasing |r|; constant features absent
    kinds: dict[str, Kind]  # the cell's activation kinds by name: labels and ranges


def run_model(model: Model, ids: np.ndarray, k: int = 5):
    """Feed ``ids`` (N,) through the model from a zero state, one character at a time.

    Returns (activations {(layer, kind): (N, H)}, surprisal (N,) in bits with nan at 0,
    top_ids (N, k), top_probs (N, k) float64).
    """
    ids = np.asarray(ids, dtype=np.intp)
    N, L, H = len(ids), model.num_layers, model.hidden_size
    cell = model.cell_type
    state_kinds = [k.name for k in cell.state_kinds]
    gate_kinds = [k.name for k in cell.gate_kinds]
    k = min(k, model.vocab_size)
    acts = {(layer, kind): np.empty((N, H), np.float32)
            for layer in range(L) for kind in state_kinds + gate_kinds}  # fmt: skip
    surprisal = np.full(N, np.nan)
    top_ids, top_probs = np.empty((N, k), np.intp), np.empty((N, k))
    gates = np.empty((L, cell.gates * H, 1), model.dtype) if gate_kinds else None
    stepper = model.stepper(1)
    for t in range(N):
        logits = stepper.step(ids[t : t + 1], gates)[0].astype(np.float64)
        state = stepper.state  # (L, S, 1, H), in the order of the cell's state kinds
        for layer in range(L):
            for s, kind in enumerate(state_kinds):
                acts[layer, kind][t] = state[layer, s, 0]
            for g, kind in enumerate(gate_kinds):
                acts[layer, kind][t] = gates[layer, g * H : (g + 1) * H, 0]
        log_p = logits - logits.max()
        log_p -= np.log(np.exp(log_p).sum())
        if t + 1 < N:
            surprisal[t + 1] = -log_p[ids[t + 1]] / math.log(2)
        best = np.argpartition(-log_p, k - 1)[:k]
        best = best[np.argsort(-log_p[best], kind="stable")]
        top_ids[t], top_probs[t] = best, np.exp(log_p[best])
    return acts, surprisal, top_ids, top_probs


def correlations(activations: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Pearson correlations (F, H) of the columns of ``features`` (N, F) with those of
    ``activations`` (N, H); 0 where either column is constant (it tells nothing)."""
    a = activations.astype(np.float64)
    a -= a.mean(axis=0)
    f = features - features.mean(axis=0)
    norms = np.outer(np.sqrt((f * f).sum(axis=0)), np.sqrt((a * a).sum(axis=0)))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (f.T @ a) / norms
    return np.where(norms > 0, r, 0.0)


def rank_units(
    activations: dict[tuple[int, str], np.ndarray], features: dict[str, np.ndarray], top: int = 5
) -> dict[str, list[Unit]]:
    """For each feature that varies, the ``top`` units of any layer and kind with the largest
    |correlation| with it, largest first."""
    names = [name for name, f in features.items() if np.ptp(f) > 0]  # constant: r undefined
    if not names:
        return {}
    matrix = np.stack([features[name] for name in names], axis=1)
    found: dict[str, list[Unit]] = {name: [] for name in names}
    for (layer, kind), acts in activations.items():
        r = correlations(acts, matrix)
        for row, name in enumerate(names):
            best = np.argsort(-abs(r[row]), kind="stable")[:top]
            found[name] += [Unit(layer, kind, int(j), float(r[row, j])) for j in best]
    return {name: sorted(units, key=lambda u: -abs(u.r))[:top] for name, units in found.items()}


@dataclass(frozen=True)
class CharacterMap:
    """Each character's learnt input vector, projected onto the plane that keeps the most of
    their variance (the first two principal components)."""

    xy: np.ndarray  # (V, 2): character v's coordinates along the two axes
    explained: tuple[float, float]  # the fraction of the total variance each axis holds
    source: str  # the parameter whose rows the vectors are


def character_map(model: Model) -> CharacterMap:
    """PCA of the rows of ``embed.W`` (V, E), or of ``rnn.0.Wx`` (V, G*H) without an embedding:
    in both cases row v is all that character v puts into the network.

    With X the centred rows and X = U S V^T its SVD, the coordinates are the first two columns
    of U S, and axis j explains S_j^2 / sum(S^2) of the variance (0 beyond the rank, or when
    there is no variance). S^2 and U come from the eigenvectors of the smaller of X X^T and
    X^T X, which costs far less than the SVD of X when V and G*H differ a lot.
    """
    source = "embed.W" if model.embedding_size else "rnn.0.Wx"
    X = model.params[source].astype(np.float64)
    X -= X.mean(axis=0)
    by_rows = X.shape[0] <= X.shape[1]
    values, vectors = np.linalg.eigh(X @ X.T if by_rows else X.T @ X)  # ascending
    top = np.argsort(-values, kind="stable")[:2]
    variances = np.clip(values[top], 0.0, None)  # rounding can leave tiny negatives
    xy = np.zeros((X.shape[0], 2))
    if by_rows:  # eigenvectors of X X^T are the columns of U; U S = U sqrt(S^2)
        xy[:, : top.size] = vectors[:, top] * np.sqrt(variances)
    else:  # eigenvectors of X^T X are the columns of V; U S = X V
        xy[:, : top.size] = X @ vectors[:, top]
    total = float(np.clip(values, 0.0, None).sum())
    shares = [float(variances[j] / total) if j < top.size and total > 0 else 0.0 for j in (0, 1)]
    return CharacterMap(xy, (shares[0], shares[1]), source)


def analyse(model: Model, vocab: Vocab, text: str, k: int = 5, top: int = 5) -> Analysis:
    """The model's activations, surprisal and top-k guesses on ``text`` (every character in the
    vocabulary, 2 to ``MAX_CHARS`` of them) and the units ranked for each text feature."""
    if not 2 <= len(text) <= MAX_CHARS:
        raise ValueError(f"the text must have 2 to {MAX_CHARS} characters, got {len(text)}")
    acts, surprisal, top_ids, top_probs = run_model(model, vocab.encode(text), k)
    features = text_features(text)
    ranking = rank_units(acts, features, top)
    return Analysis(
        text, acts, surprisal, top_ids, top_probs, features, ranking, kinds_of(model.cell)
    )
