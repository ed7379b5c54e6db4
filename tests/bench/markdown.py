"""docs/benchmarks.md from a benchmark run (no PyTorch needed, so it is unit-tested cheaply).

Each benchmark program owns one section of the document, between ``<!-- bench:NAME:begin -->``
and ``<!-- bench:NAME:end -->``, and replaces only that: the hand-written parts (the notes) and
the other program's section survive a re-run. A section holds the command, the machine facts,
the targets with their verdicts and everything the program printed, verbatim.
"""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path

from rnncli.fileio import atomic_write

REPO = Path(__file__).resolve().parents[2]
NEW_DOCUMENT = "# Benchmarks\n"
NOTES_HEADING = "## Measured facts"

# (key in the program's machine facts, label in the table, format of the value)
FACTS = (
    ("date", "date", "{}"),
    ("cpu", "CPU", "{}"),
    ("cores", "cores", "{}"),
    ("usable_cores", "usable cores", "{}"),
    ("platform", "platform", "{}"),
    ("python", "Python", "{}"),
    ("numpy", "numpy", "{}"),
    ("blas", "BLAS", "{}"),
    ("blas_threads", "BLAS threads", "{}"),
    ("torch", "PyTorch", "{}"),
    ("torch_threads", "PyTorch threads", "{}"),
    ("threads_requested", "threads (PyTorch) and workers (rnncli)", "{}"),
    ("load_average_1min", "load average at the start (1 min)", "{:.2f}"),
)


class MarkdownError(ValueError):
    """The document cannot take the section (markers missing, doubled or out of order)."""


class Transcript(io.TextIOBase):
    """A stdout that also keeps what was written, so a run's printed tables go into the
    document exactly as they were printed."""

    def __init__(self, stream):
        self.stream = stream
        self.chunks: list[str] = []

    @classmethod
    def install(cls) -> Transcript:
        sys.stdout = transcript = cls(sys.stdout)
        return transcript

    def write(self, text: str) -> int:
        self.chunks.append(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    # What callers ask of stdout besides writing answers for the stream it passes text on to.
    @property
    def encoding(self) -> str | None:
        return getattr(self.stream, "encoding", None)

    def isatty(self) -> bool:
        return self.stream.isatty()

    def text(self) -> str:
        return "".join(self.chunks)


def shown_path(path: Path | str) -> str:
    """``path`` relative to the project root: documents and printed results name no directory
    of the machine they ran on. Links are not followed, so a linked folder keeps its name."""
    try:
        return os.path.relpath(os.path.abspath(path), REPO)
    except ValueError:  # another drive on Windows
        return Path(path).name


def command_line(module: str, argv: list[str]) -> str:
    """The command that ran, for the document: without --json and --markdown (where the
    results went is not a result), with paths relative to the project root."""
    shown, skip = [f"python -m {module}"], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--json", "--markdown"):
            skip = True
        elif not arg.startswith(("--json=", "--markdown=")):
            shown.append(shown_path(arg) if os.path.isabs(arg) else arg)
    return " ".join(shown)


def facts_table(facts: dict) -> str:
    rows = [
        f"| {label} | {form.format(facts[key])} |"
        for key, label, form in FACTS
        if facts.get(key) is not None
    ]
    return "\n".join(["| machine | |", "| --- | --- |", *rows])


def targets_table(targets: list[dict]) -> str:
    rows = [
        f"| {t['figure']} | {t['value']} | {t['target']} | {'PASS' if t['passed'] else 'FAIL'} |"
        for t in targets
    ]
    passed = sum(t["passed"] for t in targets)
    header = ["| target | measured | goal | verdict |", "| --- | --- | --- | --- |"]
    return "\n".join([f"{passed} of {len(targets)} targets passed.", "", *header, *rows])


def fenced(text: str) -> str:
    """``text`` in a code block whose fence is longer than any run of backticks in it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text.rstrip()}\n{fence}"


def section(title: str, command: str, facts: dict, targets: list[dict], transcript: str) -> str:
    """The body of a program's section: what ran, where, the verdicts, what it printed."""
    parts = [
        f"## {title}",
        f"Command: `{command}`",
        facts_table(facts),
        targets_table(targets),
        "What it printed:",
        fenced(transcript),
    ]
    return "\n\n".join(parts)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"


def check_document(document: str, name: str) -> None:
    """Raise MarkdownError unless ``document`` holds section ``name``'s markers once each, in
    order, or neither."""
    begin, end = markers(name)
    counts = document.count(begin), document.count(end)
    if counts == (0, 0):
        return
    if counts != (1, 1) or document.index(begin) > document.index(end):
        raise MarkdownError(
            f"the markers {begin} and {end} must each occur once, in that order "
            f"(found {counts[0]} and {counts[1]})"
        )


def replace_section(document: str, name: str, body: str) -> str:
    """``document`` with section ``name`` holding ``body``: in place of the old one, or, for a
    new section, before the notes (at the end if there are none)."""
    check_document(document, name)
    begin, end = markers(name)
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin in document:
        head, rest = document.split(begin, 1)
        return head + block + rest.split(end, 1)[1]
    notes = re.search(rf"^{re.escape(NOTES_HEADING)}\b", document, re.M)
    if notes is None:
        return f"{document.rstrip()}\n\n{block}\n"
    at = notes.start()
    return f"{document[:at]}{block}\n\n{document[at:]}"


def read_document(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else NEW_DOCUMENT


def check_target(path: Path, name: str) -> None:
    """Fail before a long run, not after it: the file must be readable and its markers sound,
    and its folder must exist. Raises MarkdownError."""
    if not path.parent.is_dir():
        raise MarkdownError(f"{shown_path(path.parent)}: no such folder")
    if path.exists() and not path.is_file():
        raise MarkdownError(f"{shown_path(path)}: not a file")
    try:
        check_document(read_document(path), name)
    except (OSError, UnicodeDecodeError) as err:
        raise MarkdownError(f"{shown_path(path)}: cannot read it ({err})") from err


def write_section(path: Path, name: str, body: str) -> None:
    """Replace section ``name`` of the document at ``path`` (created if absent), atomically
    (``rnncli.fileio.atomic_write``)."""
    text = replace_section(read_document(path), name, body)
    with atomic_write(path, text=True) as f:
        f.write(text)
