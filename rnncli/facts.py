"""A checkpoint's facts: the one description that ``rnn info``, ``rnn info --json`` and the report
share (shape, size, vocabulary, progress, losses, corpus, settings)."""

from __future__ import annotations

from pathlib import Path

from .checkpoint import Checkpoint
from .model import Model


def checkpoint_facts(ckpt: Checkpoint, model: Model) -> dict:
    """The facts of ``ckpt`` (whose restored model is ``model``) as JSON-able values; what the
    checkpoint does not record is None. Losses are in nats per character."""
    meta = ckpt.meta
    return {
        "format_version": ckpt.format_version,
        "rnncli_version": meta.get("rnncli_version"),
        "model": f"{model.cell} {model.num_layers}x{model.hidden_size}",
        "embedding_size": model.embedding_size,
        "parameters": model.num_params,
        "vocab_size": model.vocab_size,
        "dtype": str(model.params["out.W"].dtype),
        "step": meta.get("step"),
        "epoch": meta.get("epoch"),
        "elapsed": meta.get("elapsed"),  # seconds of training
        "best_val_loss": meta.get("best_val_loss"),
        "val_loss_full": meta.get("val_loss_full"),  # these weights on the whole validation split
        "corpus": meta.get("corpus"),
        "checkpoint": Path(str(ckpt.path)).name,
        "config": ckpt.config,
    }
