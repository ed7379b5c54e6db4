"""The figures of docs/export.md: ``python -m tests.bench.export_figures [CKPT TEXT]``.

1. Sizes: the page of a model of each shipped config's shape (configs/*.yaml, V = 65, weights
   random: the size depends only on the shapes) at each precision.
2. Tolerance, given a checkpoint and a text file: how far the page at each precision is from
   the model as `rnn sample` / `rnn eval` run it (float32). The page's arithmetic is that of
   ``rnncli.export.page_model`` (the browser tests hold it to the character), so numpy stands
   in for the browser here. Score: |loss - loss of the float32 model| in nats per character,
   `rnn eval --batch-size 1`'s way, over the text's first ``SCORED`` characters. Greedy text:
   ``PRIMES`` primes of 40 characters spread over the text, each continued for ``GREEDY``
   characters by --argmax; the share whose continuation is the float32 model's to the last
   character, and the median position of the first difference among the others.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from rnncli.checkpoint import load_checkpoint, restore_model
from rnncli.config import load_config, shape_text
from rnncli.evaluate import score
from rnncli.export import PRECISIONS, page_model, render
from rnncli.model import Model
from rnncli.sample import generate
from rnncli.vocab import Vocab

SCORED = 20_000
PRIMES = 100
GREEDY = 200


def sizes() -> None:
    print("| config | model | parameters | " + " | ".join(PRECISIONS) + " |")
    print("|---|---|---:|" + "---:|" * len(PRECISIONS))
    vocab = Vocab("".join(chr(32 + i) for i in range(65)))
    for path in sorted(Path("configs").glob("*.yaml")):
        cfg = load_config(path)
        model = Model.from_config(cfg, len(vocab))
        mb = [len(render(model, vocab, p, "x").encode()) / 1e6 for p in PRECISIONS]
        shape = shape_text(cfg.to_dict())
        cells = " | ".join(f"{m:.2f} MB" for m in mb)
        print(f"| {path.name} | {shape} | {model.num_params:,} | {cells} |")


def tolerance(ckpt_path: str, text_path: str) -> None:
    ckpt = load_checkpoint(ckpt_path)
    model, vocab = restore_model(ckpt), Vocab(ckpt.vocab)
    text = vocab.drop_unknown(Path(text_path).read_text(encoding="utf-8"))
    ids = vocab.encode(text[:SCORED])
    total, count = score(model, ids, 1, 100)
    reference = total / count
    starts = np.linspace(0, len(text) - 41, PRIMES).astype(int)
    primes = [text[s : s + 40] for s in starts]
    greedy = ["".join(generate(model, vocab, GREEDY, p, argmax=True)) for p in primes]
    print(f"{ckpt_path}: {model.cell} {model.num_layers}x{model.hidden_size}, float32 loss "
          f"{reference:.4f} over {count:,} characters")  # fmt: skip
    print("| precision | score difference (nats/char) | greedy texts identical | "
          "median first difference |")  # fmt: skip
    print("|---|---:|---:|---:|")
    for precision in PRECISIONS:
        mirror = page_model(model, precision)
        total, count = score(mirror, ids, 1, 100)
        texts = ["".join(generate(mirror, vocab, GREEDY, p, argmax=True)) for p in primes]
        same = [a == b for a, b in zip(texts, greedy, strict=True)]
        firsts = [
            next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
            for a, b, s in zip(texts, greedy, same, strict=True)
            if not s
        ]
        median = f"{np.median(firsts):.0f}" if firsts else "-"
        print(f"| {precision} | {abs(total / count - reference):.2e} | "
              f"{sum(same)}/{len(same)} | {median} |")  # fmt: skip


if __name__ == "__main__":
    sizes()
    if len(sys.argv) == 3:
        tolerance(sys.argv[1], sys.argv[2])
