"""The page of ``rnn report``: lays out the numbers it is given, computes none of them.

One self-contained file: inline CSS, inline SVG charts (``charts``), a little plain JavaScript
for hovering and choosing a unit, and the excerpt's data as JSON. Nothing is fetched: no
fonts, scripts, images or links to anywhere.

Activations are stored 4 bits per value (15 levels over the kind's range, two per byte,
base64): the page only colours and reads them out, and a 2x512 LSTM on 2,000 characters has
over 12 million of them. Units are stored in order of interest (the ranked ones, then every h,
then c, then the gates) until ``ACTIVATION_BUDGET`` bytes; the page says how many made it.

The template, CSS and JavaScript are files in ``assets/``, read with ``importlib.resources`` so
that an installed wheel finds them.
"""

from __future__ import annotations

import base64
import json
import math
import os
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from ..analysis import FEATURES, Analysis, CharacterMap, Kind, Unit
from ..fileio import write_user_output
from ..runlog import History
from ..text import for_terminal
from .charts import esc, is_stepwise, thin, training_charts


@cache
def _asset(name: str) -> str:
    """One of the page's files in ``assets/`` (shipped in the wheel as package data)."""
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


ACTIVATION_BUDGET = 1_500_000  # bytes of base64 activation data in one page
LEVELS = 15  # odd, so that the middle of a range (0 of -1..1) is a level


@dataclass
class Sample:
    temperature: float
    seed: int
    text: str


# -- small formatting helpers -------------------------------------------------------------------

_VISIBLE = {"\n": "↵", " ": "␣", "\t": "⇥", "\r": "␍"}


def visible(ch: str) -> str:
    """A character as it can be seen: whitespace and control characters as symbols."""
    if ch in _VISIBLE:
        return _VISIBLE[ch]
    if unicodedata.category(ch)[0] in "CZ":
        return f"U+{ord(ch):04X}"
    return ch


def display_range(kind: Kind) -> tuple[float, float]:
    """The range a kind is coloured over; an unbounded one (the cell state c) as its tanh."""
    return (-1.0, 1.0) if kind.low is None else (kind.low, kind.high)


def quantise(values: np.ndarray, kind: Kind) -> str:
    """``values`` (N,) as ``LEVELS`` levels over the kind's range, two per byte, base64."""
    lo, hi = display_range(kind)
    v = np.tanh(values) if kind.low is None else values
    levels = np.clip(np.rint((v - lo) / (hi - lo) * (LEVELS - 1)), 0, LEVELS - 1).astype(np.uint8)
    if levels.size % 2:
        levels = np.append(levels, 0)
    packed = (levels[0::2] << 4) | levels[1::2]
    return base64.b64encode(packed.tobytes()).decode("ascii")


def _stored_units(analysis: Analysis) -> list[Unit]:
    """Units in order of interest, as many as ``ACTIVATION_BUDGET`` holds."""
    per_unit = 4 * math.ceil(math.ceil(len(analysis.text) / 2) / 3) + 16  # base64 + JSON key
    ranked = [Unit(u.layer, u.kind, u.index) for units in analysis.ranking.values() for u in units]
    order = {"h": 0, "c": 1}
    blocks = sorted(analysis.activations, key=lambda lk: (order.get(lk[1], 2), -lk[0]))
    rest = [
        Unit(layer, kind, j)
        for layer, kind in blocks
        for j in range(analysis.activations[layer, kind].shape[1])
    ]
    chosen = list(dict.fromkeys(ranked + rest))
    return chosen[: max(ACTIVATION_BUDGET // per_unit, len(set(ranked)))]


def _page_data(analysis: Analysis, vocab: str) -> dict:
    units = _stored_units(analysis)
    blocks = {}
    for layer, kind in analysis.activations:
        total = analysis.activations[layer, kind].shape[1]
        stored = sorted(u.index for u in units if (u.layer, u.kind) == (layer, kind))
        lo, hi = display_range(analysis.kinds[kind])
        unbounded = analysis.kinds[kind].low is None
        label = analysis.kinds[kind].label + (f" (coloured as tanh {kind})" if unbounded else "")
        blocks[f"{layer}:{kind}"] = {
            "layer": layer,
            "kind": kind,
            "label": label,
            "lo": lo,
            "hi": hi,
            "total": total,
            "stored": stored,
        }
    surprisal = [None if math.isnan(s) else round(float(s), 2) for s in analysis.surprisal]
    return {
        "vocab": vocab,
        "levels": LEVELS,
        "surprisal": surprisal,
        "top_ids": analysis.top_ids.tolist(),
        "top_permille": np.rint(analysis.top_probs * 1000).astype(int).tolist(),
        "blocks": blocks,
        "units": {
            u.key: quantise(
                analysis.activations[u.layer, u.kind][:, u.index], analysis.kinds[u.kind]
            )
            for u in units
        },
    }


def _excerpt(text: str) -> str:
    """Every character once, as a span; a newline as a visible mark and then a line break."""
    out = []
    for i, ch in enumerate(text):
        shown = _VISIBLE["\n"] if ch == "\n" else esc(ch if ch in " \t" else visible(ch))
        css = ' class="nl"' if ch == "\n" else ""
        out.append(
            f'<span data-char-index="{i}"{css}>{shown}</span>' + ("\n" if ch == "\n" else "")
        )
    return "".join(out)


def _ranking(analysis: Analysis) -> str:
    rows = []
    for name, units in analysis.ranking.items():
        buttons = "".join(
            f'<button type="button" class="unit" data-unit="{u.key}" '
            f'title="{esc(analysis.kinds[u.kind].label)}, layer {u.layer}, unit {u.index}">'
            f'<span class="uname">L{u.layer} {u.kind} {u.index}</span>'
            f'<span class="r">{u.r:+.2f}</span></button>'
            for u in units
        )
        rows.append(
            f'<tr><th scope="row" title="{esc(FEATURES[name].description)}">'
            f"{esc(name)}<small>{esc(FEATURES[name].description)}</small></th>"
            f"<td>{buttons}</td></tr>"
        )
    constant = [name for name in analysis.features if name not in analysis.ranking]
    note = (
        f'<p class="note">Constant over this excerpt, so not ranked: {esc(", ".join(constant))}.'
        "</p>"
        if constant
        else ""
    )
    return f'<table class="ranking">{"".join(rows)}</table>{note}'


# -- the page ------------------------------------------------------------------------------------


def _summary(rows: list[tuple[str, str]], vocab: str, config: dict) -> str:
    cells = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows)
    chars = "".join(
        f'<span class="vc" title="U+{ord(c):04X}">{esc(visible(c))}</span>' for c in vocab
    )
    conf = "\n".join(f"{k}: {v}" for k, v in config.items())
    return (
        f'<dl class="facts">{cells}</dl>'
        f'<p class="vocab-title">Vocabulary ({len(vocab)} characters)</p>'
        f'<p class="vocab">{chars}</p>'
        f"<details><summary>Resolved configuration</summary><pre>{esc(conf)}</pre></details>"
    )


def _samples(samples: list[Sample]) -> str:
    return "".join(
        f'<figure class="sample"><figcaption>temperature {s.temperature:g}, seed {s.seed}'
        f"</figcaption><pre>{esc(s.text)}</pre></figure>"
        for s in samples
    )


MAP_SIZE = (640, 440)  # the character map's SVG, in its own pixels
_MAP_MARGIN = 24


def _character_map(cmap: CharacterMap, vocab: str) -> str:
    """The characters drawn at their coordinates in ``cmap`` (one scale for both axes, so that
    distances read true), and under the picture what the axes hold."""
    w, h = MAP_SIZE
    lo, hi = cmap.xy.min(axis=0), cmap.xy.max(axis=0)
    span = np.maximum(hi - lo, 1e-12)
    scale = min((w - 2 * _MAP_MARGIN) / span[0], (h - 2 * _MAP_MARGIN) / span[1])
    mid = (lo + hi) / 2
    labels = "".join(
        f'<text class="char" x="{w / 2 + (x - mid[0]) * scale:.1f}" '
        f'y="{h / 2 - (y - mid[1]) * scale:.1f}" text-anchor="middle" dominant-baseline="central"'
        f"><title>U+{ord(c):04X}</title>{esc(visible(c))}</text>"
        for c, (x, y) in zip(vocab, cmap.xy, strict=True)
    )
    first, second = cmap.explained
    return (
        f'<svg data-chart="character-map" class="character-map" viewBox="0 0 {w} {h}" '
        f'role="img" aria-label="character map" preserveAspectRatio="xMidYMid meet">'
        f'<rect class="plot" x="0" y="0" width="{w}" height="{h}"/>{labels}</svg>'
        f'<p class="note" id="character-map-variance">Each character at its learnt input vector '
        f"(its row of <code>{esc(cmap.source)}</code>), projected onto the two directions in "
        f"which those vectors vary most (principal components). The horizontal axis explains "
        f"{first:.1%} of their variance, the vertical {second:.1%}: together "
        f"{first + second:.1%}. Characters drawn close together enter the network alike; "
        f"␣ is the space, ↵ the newline.</p>"
    )


def render(
    title: str,
    facts: list[tuple[str, str]],
    vocab: str,
    config: dict,
    history: History,
    samples: list[Sample],
    analysis: Analysis,
    excerpt_source: str,
    character_map: CharacterMap,
) -> str:
    """The whole page as one string."""
    data = _page_data(analysis, vocab)
    stored = len(data["units"])
    total = sum(b["total"] for b in data["blocks"].values())
    kept = (
        "every unit's activations are stored"
        if stored == total
        else f"{stored:,} of the {total:,} units are stored (the ranked ones first, then h, c and "
        "the gates) to keep the page small"
    )
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    schedule = config.get("lr_schedule", "plateau")
    history_json = json.dumps(thin(history.records, is_stepwise(schedule)), separators=(",", ":"))
    history_json = history_json.replace("</", "<\\/")
    return _asset("page.html").format(
        title=esc(title),
        summary=_summary(facts, vocab, config),
        history_source=esc(for_terminal(history.source)),
        charts=training_charts(history, schedule),
        samples=_samples(samples),
        character_map=_character_map(character_map, vocab),
        excerpt_source=esc(for_terminal(excerpt_source)),
        excerpt=_excerpt(analysis.text),
        ranking=_ranking(analysis),
        kept=esc(kept),
        data=payload,
        history=history_json,
        css=_asset("report.css"),
        script=_asset("report.js"),
    )


def write_page(path: str | os.PathLike, page: str, inputs=()) -> None:
    """Write ``page`` to the user-named ``path`` (``fileio.write_user_output``): a regular file
    atomically, a device or FIFO in place, never over one of ``inputs``."""
    write_user_output(path, page, inputs)


def fact_rows(facts: dict) -> list[tuple[str, str]]:
    """The run's key figures (``facts.checkpoint_facts``) as (label, text) rows for the page's
    first section."""
    best, elapsed = facts["best_val_loss"], facts["elapsed"]
    corpus = Path(str(facts["corpus"] or "unknown"))
    try:
        size = f"{corpus.stat().st_size:,} bytes"
    except OSError:
        size = "no longer there"
    return [
        ("model", f"{facts['model']} ({facts['dtype']})"),
        ("character embedding", _embedding_text(facts["embedding_size"])),
        ("parameters", f"{facts['parameters']:,}"),
        ("vocabulary", f"{facts['vocab_size']} characters"),
        ("corpus", f"{for_terminal(corpus.name)} ({size})"),  # any character shown, none acting
        ("steps", f"{facts['step'] or 0:,}"),
        ("epochs", f"{facts['epoch'] or 0:.2f}"),
        ("training time", "unknown" if elapsed is None else _duration(elapsed)),
        (
            "best validation loss",
            "none" if best is None else f"{best:.4f} nats/char, {best / math.log(2):.3f} bits/char",
        ),
        ("checkpoint", facts["checkpoint"]),
    ]


def _embedding_text(embedding_size: int) -> str:
    return f"{embedding_size} wide" if embedding_size else "none (one-hot input)"


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min" if hours else f"{m} min {s:02d} s"
