"""Static against dynamic evaluation of a checkpoint (docs/dynamic-eval.md): the loss in nats per
character and the seconds taken, for each dynamic rule given, on a split of the checkpoint's
corpus or on a text file.

    python -m tests.bench.dynamic_eval CKPT (--split val|test | --file TEXT) [--chars N]
        [--first-half | --second-half] RULE...

RULE is LR,SEGMENT[,DECAY] (e.g. 0.03,50 or 0.03,50,0.001). ``--chars`` keeps the first N
characters; ``--first-half``/``--second-half`` score one half of them (to tune on one part of a
held-out text and report on the other). One stream: every rule scores the same characters.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from rnncli.checkpoint import load_checkpoint, recorded_corpus, restore_model
from rnncli.corpus import encode_file, load_corpus, split_corpus
from rnncli.dynamic import DynamicSettings, dynamic_score
from rnncli.evaluate import score
from rnncli.vocab import Vocab


def held_out(ckpt, split: str) -> np.ndarray:
    config = ckpt.config
    corpus = load_corpus(recorded_corpus(ckpt), Path(ckpt.path).parent / "cache",
                         encoding=config["encoding"], max_vocab=config["max_vocab"],
                         vocab=Vocab(ckpt.vocab))  # fmt: skip
    _, val, test = split_corpus(corpus.data, config["val_fraction"], config["test_fraction"])
    return np.array(val if split == "val" else test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--split", choices=("val", "test"))
    where.add_argument("--file", type=Path)
    parser.add_argument("--chars", type=int, default=0)
    half = parser.add_mutually_exclusive_group()
    half.add_argument("--first-half", action="store_true")
    half.add_argument("--second-half", action="store_true")
    parser.add_argument("rules", nargs="*")
    args = parser.parse_intermixed_args()
    ckpt = load_checkpoint(args.checkpoint)
    model = restore_model(ckpt)
    if args.split:
        ids = held_out(ckpt, args.split)
    else:
        with tempfile.TemporaryDirectory() as folder:
            data, _ = encode_file(args.file, Vocab(ckpt.vocab), folder, oov="skip")
            ids = np.array(data)
    ids = ids[: args.chars] if args.chars else ids
    if args.first_half or args.second_half:
        ids = ids[: len(ids) // 2] if args.first_half else ids[len(ids) // 2 :]
    start = time.perf_counter()
    total, count = score(model, ids, 1, 100)
    print(f"static\t{total / count:.4f}\t{time.perf_counter() - start:.1f} s\t{count} chars",
          flush=True)  # fmt: skip
    for rule in args.rules:
        lr, segment, *decay = rule.split(",")
        settings = DynamicSettings(float(lr), int(segment), float(decay[0]) if decay else 0.0)
        start = time.perf_counter()
        total, count = dynamic_score(model, ids, settings)
        print(f"{rule}\t{total / count:.4f}\t{time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
