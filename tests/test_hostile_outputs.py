"""User-named outputs (``fileio.write_user_output``, ``rnn report --out``): a regular file is
replaced atomically, a link written through, a device or FIFO written in place and never
replaced, and the command's own inputs refused in one line with nothing lost."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnncli.errors import OutputError
from rnncli.fileio import check_user_output, remove_temporaries, write_user_output
from rnncli.runfolder import owned_files
from tests.crafted import train_tiny
from tests.helpers import one_error_line, run

USING = ("rnn: using ",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("outputs"))


def test_regular_file_is_replaced_atomically_and_keeps_no_temporary(tmp_path):
    target = tmp_path / "page.html"
    target.write_text("old")
    write_user_output(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"]


def test_new_path_is_created(tmp_path):
    write_user_output(tmp_path / "new.html", b"\x00bytes")
    assert (tmp_path / "new.html").read_bytes() == b"\x00bytes"


def test_symlink_is_written_through_and_stays_a_link(tmp_path):
    (tmp_path / "real.html").write_text("old")
    (tmp_path / "link.html").symlink_to("real.html")
    write_user_output(tmp_path / "link.html", "new")
    assert (tmp_path / "link.html").is_symlink()
    assert (tmp_path / "real.html").read_text() == "new"


def test_dangling_symlink_creates_its_target(tmp_path):
    (tmp_path / "link.html").symlink_to("made.html")
    write_user_output(tmp_path / "link.html", "new")
    assert (tmp_path / "link.html").is_symlink()
    assert (tmp_path / "made.html").read_text() == "new"


def test_dev_null_is_written_to_never_replaced(tmp_path):
    before = os.stat(os.devnull)
    write_user_output(os.devnull, "x" * 10_000)
    after = os.stat(os.devnull)
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino


def test_a_link_to_dev_null_stays_a_link_to_a_device(tmp_path):
    (tmp_path / "sink").symlink_to(os.devnull)
    write_user_output(tmp_path / "sink", "page")
    assert (tmp_path / "sink").is_symlink() and stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_fifo_with_a_reader_gets_the_data(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    # wait until the reader has it open, so the non-blocking open for writing finds it
    for _ in range(500):
        try:
            write_user_output(fifo, "through the pipe")
            break
        except OutputError:
            threading.Event().wait(0.01)
    reader.join(timeout=10)
    assert got == [b"through the pipe"] and stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_fifo_without_a_reader_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OutputError, match="no process reads"):
        write_user_output(tmp_path / "fifo", "x")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)


def test_folder_and_missing_folder_are_refused(tmp_path):
    with pytest.raises(OutputError, match="a folder"):
        check_user_output(tmp_path)
    with pytest.raises(OutputError, match="no such folder"):
        check_user_output(tmp_path / "no" / "such.html")


@pytest.mark.parametrize("how", ["same", "link", "hardlink", "dotdot", "relative"])
def test_an_input_is_refused_however_it_is_named(tmp_path, monkeypatch, how):
    source = tmp_path / "sub" / "input.npz"
    source.parent.mkdir()
    source.write_bytes(b"precious")
    target = {
        "same": lambda: source,
        "link": lambda: (tmp_path / "l").symlink_to(source) or tmp_path / "l",
        "hardlink": lambda: os.link(source, tmp_path / "h") or tmp_path / "h",
        "dotdot": lambda: tmp_path / "sub" / ".." / "sub" / "input.npz",
        "relative": lambda: monkeypatch.chdir(tmp_path) or Path("sub/input.npz"),
    }[how]()
    with pytest.raises(OutputError, match="which this command reads"):
        write_user_output(target, "page", inputs=[source])
    assert source.read_bytes() == b"precious"


@given(name=st.sampled_from(["last.npz", "best.npz", "metrics.jsonl", "config.yaml", "rnn.lock"]))
@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_every_file_a_run_folder_owns_is_protected(tmp_path, name):
    folder = tmp_path / "run"
    (folder / "cache").mkdir(parents=True, exist_ok=True)
    (folder / "cache" / "c.ids").write_bytes(b"ids")
    (folder / name).write_bytes(b"owned")
    for target in (folder / name, folder / "cache" / "c.ids"):
        with pytest.raises(OutputError):
            write_user_output(target, "page", owned_files(folder))
    assert (folder / name).read_bytes() == b"owned"


@pytest.mark.parametrize("name", ["best.npz", "last.npz", "metrics.jsonl", "config.yaml"])
def test_report_refuses_to_replace_the_run_it_reads(trained, name):
    before = (trained / name).read_bytes()
    result = run("report", trained, "--out", trained / name, "--chars", "20", code=1)
    assert "which this command reads" in one_error_line(result, ignore=USING)
    assert (trained / name).read_bytes() == before


def test_report_refuses_its_text_file_and_a_link_to_its_checkpoint(trained, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat\n" * 5)
    result = run("report", trained, "--text", text, "--out", text, "--chars", "20", code=1)
    assert "which this command reads" in one_error_line(result, ignore=USING)
    assert text.read_text() == "the cat sat on the mat\n" * 5
    (tmp_path / "sneaky.html").symlink_to(trained / "best.npz")
    result = run("report", trained, "--out", tmp_path / "sneaky.html", "--chars", "20", code=1)
    assert "which this command reads" in one_error_line(result, ignore=USING)


def test_report_to_dev_null_leaves_the_device(trained):
    run("report", trained, "--out", os.devnull, "--chars", "20", "--length", "5")
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_report_through_a_symlink_keeps_the_link(trained, tmp_path):
    (tmp_path / "page.html").write_text("old")
    (tmp_path / "link.html").symlink_to(tmp_path / "page.html")
    run("report", trained, "--out", tmp_path / "link.html", "--chars", "20", "--length", "5")
    assert (tmp_path / "link.html").is_symlink()
    assert (tmp_path / "page.html").read_text().startswith("<!DOCTYPE html>")


def test_a_running_writers_temporary_survives_a_cleanup(tmp_path):
    """A training starting in a folder clears dead writers' temporaries, not a live one's (a
    report or eval writing there at the same moment)."""
    live = tmp_path / f".report.html.{os.getppid()}.abc123.tmp"
    dead = tmp_path / ".report.html.999999999.abc123.tmp"
    old_style = tmp_path / ".report.html.abc123.tmp"
    for p in (live, dead, old_style):
        p.write_text("half")
    remove_temporaries(tmp_path)
    assert live.exists() and not dead.exists() and not old_style.exists()


def test_report_refuses_the_corpus_it_may_read_its_text_from(trained):
    corpus = trained.parent / "corpus.txt"
    before = corpus.read_bytes()
    result = run("report", trained, "--out", corpus, "--chars", "20", code=1)
    assert "which this command reads" in one_error_line(result, ignore=USING)
    assert corpus.read_bytes() == before
