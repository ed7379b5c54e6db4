"""The training's console: a tqdm progress bar on a terminal, with notes written above it."""

from __future__ import annotations

import shutil
import sys
from typing import TYPE_CHECKING

from tqdm import tqdm

if TYPE_CHECKING:  # the bar reads the trainer's step and plan; the trainer imports the bar
    from .trainer import Trainer


class ProgressBar:
    """The tqdm bar on a terminal: its total follows the first limit to come, and its figures
    are dropped whole, last first, rather than cut when the line would not fit."""

    FORMAT = "{n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"  # tqdm adds ", " to postfix

    def __init__(self, trainer: Trainer, disable: bool):
        self._trainer = trainer
        self._bar = tqdm(
            total=trainer.planned_steps(0),
            initial=trainer.step,
            unit="step",
            bar_format=self.FORMAT,
            disable=disable,
            file=sys.stderr,
        )
        self._parts: list[str] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._bar.close()

    def advance(self, steps_this_run: int) -> None:
        total = self._trainer.planned_steps(steps_this_run)
        if total != self._bar.total:
            self._bar.total = total
        self._bar.update(1)

    def show(self, loss: float | None, best: float | None, lr: float, epoch: float) -> None:
        self._parts = [
            f"loss {'-' if loss is None else f'{loss:.3f}'}",
            f"best val {'-' if best is None else f'{best:.3f}'}",
            f"lr {lr:.1e}",
            f"epoch {epoch:.2f}",
        ]
        self._bar.set_postfix_str(self.fit(self._bar.format_dict, self._parts), refresh=False)
        self._bar.refresh()

    @classmethod
    def fit(cls, fmt: dict, parts: list[str], width: int | None = None) -> str:
        """The leading ``parts``, comma-joined, that fit beside the counts in ``width`` columns."""
        width = width or min(shutil.get_terminal_size((80, 24)).columns, 200)
        base = len(tqdm.format_meter(**{**fmt, "postfix": None, "bar_format": cls.FORMAT}))
        shown = ""
        for part in parts:
            candidate = shown + (", " if shown else "") + part
            # the ", " tqdm adds, room for the counts and times to grow until the next refresh,
            # and the cursor's column
            if base + 2 + len(candidate) > width - 8:
                break
            shown = candidate
        return shown

    def write(self, message: str) -> None:
        self._bar.write(message, file=sys.stderr)
