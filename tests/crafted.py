"""What the hostile tests of the newer edges share: a real tiny run, and checkpoints crafted
from it by changing what a stranger could change, written without the saver's checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from rnncli.checkpoint import Checkpoint, _to_arrays, load_checkpoint
from tests.helpers import run, tiny, write_corpus


def train_tiny(folder: Path, *extra: str) -> Path:
    """A run folder from a real training of a few steps on a small corpus."""
    corpus = write_corpus(folder / "corpus.txt")
    out = folder / "run"
    run("train", corpus, "--out", out, "--quiet", *tiny(max_steps=6), *extra)
    return out


def crafted(run_dir: Path, folder: Path, change) -> Path:
    """A copy of ``run_dir`` whose checkpoints went through ``change(ckpt)``, saved as they are
    (no check: the point is what a reader makes of them)."""
    copy = folder / "crafted"
    shutil.copytree(run_dir, copy)
    for name in ("last.npz", "best.npz"):
        ckpt = load_checkpoint(copy / name)
        change(ckpt)
        write_unchecked(copy / name, ckpt)
    return copy


def write_unchecked(path: Path, ckpt: Checkpoint) -> None:
    with open(path, "wb") as f:
        np.savez(f, **_to_arrays(str(path), ckpt))
