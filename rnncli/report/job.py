"""The ``rnn report`` job, for the command and the Python API: check the settings, read the
text to look at, build the page and write it where the user asked, never over an input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .. import excerpt, runlog
from ..analysis import MAX_CHARS
from ..checkpoint import Checkpoint
from ..errors import CorpusError, OutputError
from ..fileio import check_user_output
from ..model import Model
from ..rules import Rule, check_settings
from ..runfolder import owned_files
from ..sample import SAMPLING_RULES, prime_text
from ..vocab import Vocab
from . import build_page, write_page

MAX_SAMPLE_LENGTH = 5000  # characters of each of the page's samples

# What the page can lay out: the text its heat maps show, and its samples.
REPORT_RULES = {
    "chars": Rule(whole=True, low=2, high=MAX_CHARS),
    "length": Rule(whole=True, low=0, high=MAX_SAMPLE_LENGTH),
    "seed": SAMPLING_RULES["seed"],
}


def write_report(
    ckpt: Checkpoint,
    model: Model,
    vocab: Vocab,
    out: Path | None = None,
    text_file: Path | None = None,
    chars: int = 2000,
    length: int = 300,
    seed: int = 1,
    prime: str = "",
    named: Path | None = None,
    tell: Callable[[str], None] = lambda line: None,
) -> tuple[Path, int]:
    """Write the report page of ``ckpt`` to ``out`` (default: report.html beside it); returns
    (the path, its size in bytes).

    The network is shown on ``chars`` characters of ``text_file`` (default: the run's held-out
    text); each sample is ``length`` characters after ``prime``, drawn with ``seed``. ``named``
    is the path the user named, a run folder or a file (default: the checkpoint's): a folder's
    metrics.jsonl gives the curves. ``tell`` receives the notes and warnings on the way, each
    one line starting "note: " or "warning: ". Raises CommandError for bad settings,
    OutputError for an output it may not write, CorpusError for a text too short to show."""
    check_settings(REPORT_RULES, chars=chars, length=length, seed=seed)
    out = Path(out) if out is not None else Path(ckpt.path).parent / "report.html"
    corpus = ckpt.meta.get("corpus")  # the held-out text may come from it
    inputs = [ckpt.path, *owned_files(Path(ckpt.path).parent), text_file or corpus]
    inputs = [path for path in inputs if path]
    try:
        check_user_output(out, inputs)  # before the long part
    except OutputError as err:
        raise OutputError(f"cannot write the report: {err}") from None
    prime_text(vocab, prime, offers_drop=False)  # rnn report has no --drop-unknown
    if text_file is not None:
        text = excerpt.from_file(text_file, vocab, chars, ckpt.config["encoding"])
    else:
        text = excerpt.from_run(ckpt, model, chars)
    for note in text.notes:
        tell(f"note: {note}")
    if len(text.text) < 2:
        raise CorpusError(f"{text.source}: fewer than 2 characters to look at")
    named = Path(named if named is not None else ckpt.path)
    history, warnings = runlog.run_history(named, ckpt.meta, ckpt.path)
    for warning in warnings:
        tell(f"warning: {warning}")
    title = f"rnn report: {named}"
    page = build_page(title, ckpt, model, vocab, text, history, seed, length, prime)
    try:
        write_page(out, page, inputs)
    except OutputError as err:
        raise OutputError(f"cannot write the report: {err}") from None
    except OSError as err:
        raise OutputError(f"{out}: cannot write the report ({err.strerror or err})") from None
    return out, len(page.encode())
