"""docs/benchmarks.md's writer (tests/bench/markdown.py), with fake results: no PyTorch, no run."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.bench import markdown

ROOT = Path(__file__).resolve().parents[1]
FACTS = {
    "date": "2026-11-22T13:35:21+00:00",
    "cpu": "Example CPU",
    "cores": 2,
    "usable_cores": 2,
    "python": "3.11.7",
    "platform": "Linux-x86_64",
    "numpy": "2.4.6",
    "blas": "scipy-openblas 0.3.31",
    "blas_threads": 2,
    "torch": "2.13.0+cpu",
    "torch_threads": 2,
    "threads_requested": 2,
    "load_average_1min": 0.5678,
}
TARGETS = [
    {"figure": "speed rnn 1x128", "value": "1.80x PyTorch", "target": ">= 1.2x", "passed": True},
    {"figure": "FLOP rate", "value": "52% of GEMM peak", "target": ">= 70%", "passed": False},
]
PRINTED = "Training speed\n  rnn 1x128  577,776  321,644  1.80x\nTargets: 1 of 2 passed\n"


def body(name="speed", printed=PRINTED) -> str:
    return markdown.section(f"{name} title", "python -m tests.bench.x", FACTS, TARGETS, printed)


def test_section_holds_facts_targets_and_the_printed_text_verbatim():
    text = body()
    assert text.startswith("## speed title\n")
    assert "Command: `python -m tests.bench.x`" in text
    assert "| date | 2026-11-22T13:35:21+00:00 |" in text
    for line in ("| CPU | Example CPU |", "| PyTorch | 2.13.0+cpu |", "| BLAS threads | 2 |"):
        assert line in text
    assert "| load average at the start (1 min) | 0.57 |" in text
    assert "1 of 2 targets passed." in text
    assert "| speed rnn 1x128 | 1.80x PyTorch | >= 1.2x | PASS |" in text
    assert "| FLOP rate | 52% of GEMM peak | >= 70% | FAIL |" in text
    assert f"```text\n{PRINTED.rstrip()}\n```" in text


def test_facts_missing_from_a_run_are_left_out():
    table = markdown.facts_table({"date": "today", "torch": None})
    assert table.splitlines()[2:] == ["| date | today |"]


def test_a_fence_is_longer_than_any_backticks_in_the_text():
    text = "Peak RSS of `python -m rnncli train`\n```\ninner\n````"
    block = markdown.fenced(text)
    assert block.startswith("`````text\n") and block.endswith("\n`````")
    assert block[len("`````text\n") : -len("\n`````")] == text


def test_a_new_section_goes_before_the_notes_and_replaces_itself_later():
    document = "# Benchmarks\n\nIntro.\n\n## Measured facts\n\n- a fact, 2026-11-22.\n"
    once = markdown.replace_section(document, "speed", body())
    begin, end = markdown.markers("speed")
    facts = once.index(markdown.NOTES_HEADING)
    assert once.index("Intro.") < once.index(begin) < once.index(end) < facts
    assert once.endswith("## Measured facts\n\n- a fact, 2026-11-22.\n")
    rerun = markdown.replace_section(once, "speed", body(printed="second run\n"))
    assert "second run" in rerun and "577,776" not in rerun
    assert rerun.count(begin) == rerun.count(end) == 1
    # the same run written twice gives the same document
    assert markdown.replace_section(rerun, "speed", body(printed="second run\n")) == rerun


def test_each_program_replaces_only_its_own_section():
    document = markdown.replace_section(markdown.NEW_DOCUMENT, "run_bench", body("speed"))
    document = markdown.replace_section(document, "quality", body("quality"))
    assert document.index("## speed title") < document.index("## quality title")
    updated = markdown.replace_section(document, "run_bench", body("speed", printed="new\n"))
    quality = re.escape(markdown.markers("quality")[0]) + ".*" + re.escape("-->")
    assert re.search(quality, updated, re.S).group() == re.search(quality, document, re.S).group()
    assert "```text\nnew\n```" in updated


def test_a_document_without_notes_gets_the_section_at_its_end():
    document = markdown.replace_section("# Benchmarks\n", "speed", "## S")
    begin, end = markdown.markers("speed")
    assert document == f"# Benchmarks\n\n{begin}\n## S\n{end}\n"


@pytest.mark.parametrize(
    "document",
    [
        "<!-- bench:speed:begin -->\nno end\n",
        "<!-- bench:speed:end -->\n<!-- bench:speed:begin -->\n",
        "<!-- bench:speed:begin -->\n<!-- bench:speed:end -->\n<!-- bench:speed:begin -->\n",
    ],
    ids=["no end", "reversed", "doubled"],
)
def test_broken_markers_are_refused_not_guessed(document):
    with pytest.raises(markdown.MarkdownError, match="must each occur once"):
        markdown.replace_section(document, "speed", body())


def test_write_section_creates_then_updates_the_file_atomically(tmp_path):
    path = tmp_path / "benchmarks.md"
    markdown.write_section(path, "speed", body())
    first = path.read_text(encoding="utf-8")
    assert first.startswith(markdown.NEW_DOCUMENT) and "577,776" in first
    path.write_text(first + "\n## Measured facts\n\nkept\n", encoding="utf-8")
    markdown.write_section(path, "speed", body(printed="rerun\n"))
    second = path.read_text(encoding="utf-8")
    assert "rerun" in second and second.endswith("## Measured facts\n\nkept\n")
    assert [p.name for p in tmp_path.iterdir()] == ["benchmarks.md"]  # no temporary left


def test_a_failed_write_leaves_the_old_document(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text("<!-- bench:speed:begin -->\nold\n", encoding="utf-8")
    with pytest.raises(markdown.MarkdownError):
        markdown.write_section(path, "speed", body())
    assert path.read_text(encoding="utf-8") == "<!-- bench:speed:begin -->\nold\n"
    assert [p.name for p in tmp_path.iterdir()] == ["benchmarks.md"]


def test_check_target_fails_before_the_run(tmp_path):
    markdown.check_target(tmp_path / "new.md", "speed")  # absent is fine: it is created
    with pytest.raises(markdown.MarkdownError, match="no such folder"):
        markdown.check_target(tmp_path / "missing" / "b.md", "speed")
    with pytest.raises(markdown.MarkdownError, match="not a file"):
        markdown.check_target(tmp_path, "speed")
    bad = tmp_path / "bad.md"
    bad.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(markdown.MarkdownError, match="cannot read it"):
        markdown.check_target(bad, "speed")
    bad.write_text("<!-- bench:speed:end -->\n", encoding="utf-8")
    with pytest.raises(markdown.MarkdownError, match="must each occur once"):
        markdown.check_target(bad, "speed")


def test_the_command_shown_names_no_folder_of_the_machine():
    corpus = str(markdown.REPO.parent / "shared" / "t.txt")
    argv = ["--quick", "--json", "/x/r.json", "--markdown=docs/b.md", "--corpus", corpus]
    shown = markdown.command_line("tests.bench.run_bench", argv)
    assert shown == "python -m tests.bench.run_bench --quick --corpus ../shared/t.txt"


def test_transcript_keeps_what_it_passes_on(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # restored after the test
    transcript = markdown.Transcript.install()
    print("line one")
    print("line two", flush=True)
    assert transcript.text() == "line one\nline two\n"
    assert capsys.readouterr().out == "line one\nline two\n"
    assert transcript.encoding == transcript.stream.encoding
    assert transcript.isatty() == transcript.stream.isatty()


def test_make_bench_writes_both_sections_of_docs_benchmarks_md():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for module in ("run_bench", "quality"):
        assert f"-m tests.bench.{module} --markdown docs/benchmarks.md" in makefile
    document = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    for name in ("run_bench", "quality"):
        markdown.check_document(document, name)
        assert markdown.markers(name)[0] in document
    assert document.index("bench:quality:end") < document.index(markdown.NOTES_HEADING)
