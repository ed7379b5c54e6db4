"""No directory of the machine the project was written on in what users read or run by default:
the README, docs/, the package, the benchmark programs, configs, Makefile and install scripts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("README.md", "Makefile", "pyproject.toml", "docs", "rnncli", "tests/bench", "configs")
SCANNED += ("data/fetch_shakespeare.py", "data/README.md", ".ci")
# Home, work and temporary roots, and a Windows drive. /proc/ and /dev/ name the operating
# system's files, the same on every machine, and are not matched.
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:root|work|tmp|home|Users)/|(?<!\w)[A-Z]:\\")


def text_files() -> list[Path]:
    files = []
    for name in SCANNED:
        path = ROOT / name
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        files += [p for p in candidates if p.is_file() and "__pycache__" not in p.parts]
    return files


def machine_paths(text: str) -> list[str]:
    """The lines of ``text`` that name an absolute path of a machine."""
    return [line.strip() for line in text.splitlines() if MACHINE_PATH.search(line)]


@pytest.mark.parametrize(
    "line",
    [
        "test split of /tmp/democlone/data/shakespeare.txt",
        "default=Path('/work/shared/data/tinyshakespeare.txt')",
        "corpus: /home/ada/texts/poems.txt",
        "results written to /root/bench.json",
        "see /Users/ada/rnn",
        r"C:\Users\ada\corpus.txt",
    ],
)
def test_the_pattern_finds_machine_paths(line):
    assert machine_paths(line) == [line]


@pytest.mark.parametrize(
    "line",
    [
        "fields = Path('/proc/stat').read_text()",
        "open('/dev/null')",
        "rnn train ../shared/data/tinyshakespeare.txt --out runs/tmp/x",
        "tmp_path / 'home/' and ~/work/ are relative",
        "print('ERROR:\\n')",
    ],
)
def test_the_pattern_leaves_portable_paths(line):
    assert machine_paths(line) == []


def test_scanned_files_exist():
    assert (ROOT / "README.md") in text_files()
    assert any(p.suffix == ".py" for p in text_files())


@pytest.mark.parametrize("path", text_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_machine_paths(path):
    data = path.read_bytes()
    if b"\0" in data:  # binary, e.g. an image under docs/
        return
    assert machine_paths(data.decode("utf-8", errors="replace")) == []
