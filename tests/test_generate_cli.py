"""`rnn sample`'s stop texts, batches, JSON and beam search, and the refusals of bad option
values, through the real command: CliRunner in-process, subprocesses for closed pipes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import one_error_line, run, tiny, write_corpus

TINY = tiny(
    ("eval_every", "checkpoint_every", "log_every"),
    model="gru", hidden_size=12, num_layers=1, test_fraction=0, quiet=True,
)  # fmt: skip
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gen")
    corpus = write_corpus(
        folder / "corpus.txt",
        words=["the ", "cat ", "sat ", "on ", "a ", "mat.", "\n", "dog ", "ran "],
    )
    run("train", corpus, "--out", folder / "run", "--max-steps", "30", *TINY)
    return folder / "run" / "best.npz"


def samples_of(output: str, n: int) -> list[str]:
    parts = re.split(r"^--- sample (\d+) of \d+ ---\n", output, flags=re.M)
    assert parts[0] == "" and parts[1::2] == [str(i) for i in range(1, n + 1)]
    assert all(text.endswith("\n") for text in parts[2::2])
    return [text[:-1] for text in parts[2::2]]


def test_stop_texts_end_samples_and_are_kept(ckpt):
    out = run("sample", ckpt, "--stop", "\\n", "--stop", "at", "--length", "300", "--seed", "1",
              "--num-samples", "5", "--prime", "the c").stdout  # fmt: skip
    texts = samples_of(out, 5)
    records = json.loads(
        run(
            "sample",
            ckpt,
            "--stop",
            "\\n",
            "--stop",
            "at",
            "--length",
            "300",
            "--seed",
            "1",
            "--num-samples",
            "5",
            "--prime",
            "the c",
            "--json",
        ).stdout  # fmt: skip
    )
    assert [r["text"] for r in records] == texts
    for text, r in zip(texts, records, strict=True):
        generated = text[len("the c") :]
        assert r["characters"] == len(generated)
        if r["stop_reason"] == "stop":
            assert text.endswith(r["stop"]) and r["stop"] in ("\n", "at")
            assert "\n" not in generated[:-1] and "at" not in text[:-1][len("the c") - 1 :]
        else:
            assert len(generated) == 300
        assert r["log_prob"] < 0
    assert any(r["stop_reason"] == "stop" for r in records)


def test_a_stop_text_can_begin_in_the_prime(ckpt):
    # "cat" primed as "c": the stop text "ca" is completed by the first generated "a", if any
    records = json.loads(run("sample", ckpt, "--prime", "the c", "--stop", "ca", "--length", "1",
                             "--num-samples", "40", "--seed", "0", "--json").stdout)  # fmt: skip
    ended = [r for r in records if r["text"] == "the ca"]
    assert ended and all(r["stop_reason"] == "stop" for r in ended)
    # wholly inside the prime, "ca" ends nothing: only a generated "c" then "a" does
    inside = json.loads(run("sample", ckpt, "--prime", "the ca", "--stop", "ca", "--length", "6",
                            "--num-samples", "40", "--seed", "0", "--json").stdout)  # fmt: skip
    for r in inside:
        after = r["text"][len("the ca") :]
        assert r["characters"] == len(after) >= 1
        if r["stop_reason"] == "stop":
            assert after.endswith("ca") and after.count("ca") == 1
        else:
            assert "ca" not in after and len(after) == 6


def test_samples_of_a_seed_do_not_depend_on_how_many_are_drawn(ckpt):
    three = samples_of(run("sample", ckpt, "--num-samples", "3", "--seed", "11",
                           "--length", "60").stdout, 3)  # fmt: skip
    seven = samples_of(run("sample", ckpt, "--num-samples", "7", "--seed", "11",
                           "--length", "60").stdout, 7)  # fmt: skip
    assert seven[:3] == three and len(set(seven)) == 7
    alone = run("sample", ckpt, "--seed", "11", "--length", "60").stdout
    assert alone == three[0] + "\n"


def test_beam_search_output(ckpt):
    out = run("sample", ckpt, "--beam", "4", "--length", "30", "--prime", "the").stdout
    assert out.startswith("the") and len(out) == 3 + 30 + 1
    (record,) = json.loads(run("sample", ckpt, "--beam", "4", "--length", "30", "--prime",
                               "the", "--json").stdout)  # fmt: skip
    assert record["text"] + "\n" == out and record["characters"] == 30
    greedy = json.loads(run("sample", ckpt, "--argmax", "--length", "30", "--prime", "the",
                            "--json").stdout)[0]  # fmt: skip
    assert record["log_prob"] >= greedy["log_prob"]
    assert run("sample", ckpt, "--beam", "1", "--length", "30", "--prime", "the").stdout == (
        greedy["text"] + "\n"
    )
    stopped = json.loads(run("sample", ckpt, "--beam", "3", "--stop", " ", "--length", "30",
                             "--length-norm", "--json").stdout)[0]  # fmt: skip
    assert stopped["stop_reason"] == "stop" and stopped["text"].endswith(" ")


@pytest.mark.parametrize("args, needle", [
    (["--beam", "2", "--temperature", "0.5"], "--temperature"),
    (["--beam", "2", "--top-k", "3", "--top-p", "0.5", "--seed", "1"], "--top-k, --top-p, --seed"),
    (["--beam", "2", "--num-samples", "2"], "--num-samples"),
    (["--beam", "2", "--argmax"], "--argmax"),
    (["--length-norm"], "--beam"),
    (["--num-samples", "10000", "--length", "100000"], "at most"),
    (["--json", "--length", "10000001"], "at most 10,000,000"),
    (["--beam", "2", "--length", "10000001"], "at most 10,000,000"),
])  # fmt: skip
def test_combinations_that_would_be_ignored_are_refused(ckpt, args, needle):
    assert needle in one_error_line(run("sample", ckpt, *args, code=2), usage_errors=True)


@pytest.mark.parametrize("args", [
    ["--temperature", "nan"], ["--temperature", "inf"], ["--temperature", "0"],
    ["--top-p", "nan"], ["--top-p", "0"], ["--seed", "-1"], ["--seed", str(2**63)],
    ["--beam", "0"], ["--stop", ""], ["--stop", "\\q"], ["--num-samples", "0"],
    ["--top-k", "-1"], ["--length", "-5"],
])  # fmt: skip
def test_bad_sample_values_are_usage_errors(ckpt, args):
    result = run("sample", ckpt, *args, code=2)
    assert "Traceback" not in result.output
    assert args[0] in result.stderr


def test_the_largest_seed_is_accepted(ckpt):
    run("sample", ckpt, "--seed", str(2**63 - 1), "--length", "5")


def rnn(*args, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "from rnncli.cli import main; main()"
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, **kwargs)


def test_a_closed_stdout_and_a_broken_pipe_end_quietly(ckpt):
    closed = subprocess.run(
        [sys.executable, "-c", "from rnncli.cli import main; main()", "sample", str(ckpt)],
        stderr=subprocess.PIPE, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=lambda: os.close(1),
    )  # fmt: skip
    assert closed.returncode == 0 and closed.stderr == ""
    proc = rnn("sample", ckpt, "--length", "1000000", stdout=subprocess.PIPE,
               stderr=subprocess.PIPE)  # fmt: skip
    assert len(proc.stdout.read(10)) == 10
    proc.stdout.close()  # as `| head -c 10` does
    _, stderr = proc.communicate(timeout=60)
    assert stderr == b""
    assert proc.returncode == -13  # SIGPIPE's default action, as for other tools


def test_the_new_options_and_commands_have_help():
    assert "--beam" in run("sample", "--help").stdout
    assert "--per-line" in run("eval", "--help").stdout
    assert "Ctrl-C" in run("write", "--help").stdout
    assert "rnn write" in run("--help").stdout
