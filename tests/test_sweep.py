"""`rnn sweep` against real databases: SQLite files, and a PostgreSQL server started for the tests.

Trials are tiny (a one-layer LSTM of 8 units, a few dozen steps), so a sweep takes seconds. The
PostgreSQL tests start a server of their own in a temporary folder with the system's initdb and
pg_ctl (as the ``postgres`` user when run as root, since initdb refuses root), and skip when those
are not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rnncli.config import FIELDS, ConfigError, load_config
from rnncli.errors import StopTraining
from rnncli.plan import plan_run
from rnncli.space import FIXED, Choice, Range, parse_space
from rnncli.train import train

try:
    import optuna
except ImportError:  # the sweep extra is not installed: only the space's checks run
    optuna = None
needs_optuna = pytest.mark.skipif(optuna is None, reason="the sweep extra is not installed")

ROOT = Path(__file__).resolve().parents[1]
BASE = {
    "model": "lstm", "hidden_size": 8, "num_layers": 1, "batch_size": 4, "seq_length": 8,
    "max_steps": 20, "eval_every": 5, "eval_batches": 4, "checkpoint_every": 5, "log_every": 5,
    "workers": 1, "lr_schedule": "cosine",
}  # fmt: skip
SPACE = "hidden_size: [4, 8]\nlearning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}\n"


@pytest.fixture
def files(tmp_path, corpus):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE), encoding="utf-8")
    (tmp_path / "space.yaml").write_text(SPACE, encoding="utf-8")
    return tmp_path


def rnn(*args) -> list[str]:
    return [sys.executable, "-m", "rnncli", *map(str, args)]


def sweep_cmd(folder: Path, *args) -> list[str]:
    return rnn("sweep", "corpus.txt", "--space", "space.yaml", "--config", "base.yaml", *args)


def run(cmd: list[str], cwd: Path, code: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def error_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("rnn: error: ")
    return lines[0]


def trials_of(storage: str, study: str) -> list:
    return optuna.load_study(study_name=study, storage=storage).get_trials()


# -- the search space ------------------------------------------------------------------------------


def test_space_reads_lists_and_ranges():
    space = parse_space(
        {
            "hidden_size": [128, 256],
            "learning_rate": {"low": 1e-3, "high": 1e-2, "log": True},
            "num_layers": {"low": 1, "high": 3},
            "dropout": {"low": 0, "high": 0.3},
        },
        "space.yaml",
    )
    assert space["hidden_size"] == Choice((128, 256))
    assert space["learning_rate"] == Range(1e-3, 1e-2, log=True, integer=False)
    assert space["num_layers"] == Range(1, 3, log=False, integer=True)
    assert space["dropout"] == Range(0.0, 0.3, log=False, integer=False)


NUMERIC = [
    f
    for f in FIELDS
    if f.type in (int, float) and not f.choices and f.check is None and f.name not in FIXED
]


@settings(max_examples=200, deadline=None)
@given(
    field=st.sampled_from(NUMERIC),
    ends=st.lists(st.floats(-10, 1e4, allow_nan=False), min_size=2, max_size=2),
    log=st.booleans(),
    where=st.lists(st.floats(0, 1), min_size=1, max_size=5),
)
def test_every_value_of_an_accepted_range_is_valid(field, ends, log, where):
    low, high = sorted(int(e) for e in ends) if field.type is int else sorted(ends)
    spec = {"low": low, "high": high, "log": log}
    try:
        dim = parse_space({field.name: spec}, "space.yaml")[field.name]
    except ConfigError as err:  # refused: with one line that names the key
        assert "\n" not in str(err) and field.name in str(err)
        usable = low < high and (low > 0 or not log)
        assert not (field.is_valid(low) and field.is_valid(high) and usable)
        return
    for t in where:  # points across the range, as a sampler may draw them
        value = dim.low + t * (dim.high - dim.low)
        value = round(value) if dim.integer else value
        assert field.is_valid(field.type(value)), (field.name, value)


@pytest.mark.parametrize(
    "text, words",
    [
        ("hiden_size: [1, 2]\n", "unknown key 'hiden_size' (did you mean 'hidden_size'?)"),
        ("model: [lstm, lsmt]\n", "model[1]: must be one of"),
        ("model: {low: 1, high: 2}\n", "model is not a number; give a list of choices"),
        ("dropout: {low: 0.1, high: 1.0}\n", "dropout.high: must be in [0, 1)"),
        ("hidden_size: {low: 1.5, high: 8}\n", "hidden_size.low: expected an integer"),
        ("learning_rate: {low: 1.0e-2, high: 1.0e-3}\n", "low must be below high"),
        ("learning_rate: {low: 1.0e-3, hihg: 1.0e-2}\n", "(did you mean 'high'?)"),
        ("dropout: {low: 0, high: 0.5, log: true}\n", "a log range needs low > 0"),
        ("hidden_size: []\n", "an empty list leaves nothing to choose"),
        ("hidden_size: 128\n", "expected a list of choices or {low, high, log}, got 128"),
        ("val_fraction: [0.1, 0.2]\n", "cannot be searched: every trial must be scored"),
        ("workers: [1, 2]\n", "cannot be searched"),
        ("batch_size: [4, 8]\n", "set eval_batches: 0 in --config"),
        ("[1, 2]\n", "expected a mapping of key: value pairs, got a list"),
        ("a: &x [1]\nb: *x\n", "aliases (*name) are not allowed"),
        ("hidden_size: !!python/object:os.system [1]\n", "unsupported YAML"),
        ("hidden_size: [4, 4]\n", "a choice is listed twice"),
    ],
)
def test_a_bad_space_file_gets_one_clear_line(files, text, words):
    (files / "space.yaml").write_text(text, encoding="utf-8")
    done = run(sweep_cmd(files, "--trials", "1"), files, code=2)
    assert words in error_line(done)
    assert not (files / "runs").exists()  # refused before anything was written


@needs_optuna
@pytest.mark.parametrize(
    "args, code, words",
    [
        (["sweep", "corpus.txt"], 2, "rnn sweep needs CORPUS and --space"),
        (["sweep", "missing.txt", "--space", "space.yaml"], 1, "missing.txt: corpus not found"),
        (["sweep", "--summary", "--study", "s", "--jobs", "2"], 2, "it takes no --jobs"),
        (["sweep", "--summary", "--study", "s"], 1, "no study database there"),
    ],
)
def test_bad_sweep_arguments_get_one_clear_line(files, args, code, words):
    done = run(rnn(*args), files, code=code)
    assert words in error_line(done)
    assert not (files / "runs").exists()


def test_grid_sampler_refuses_a_range(files):
    done = run(sweep_cmd(files, "--sampler", "grid"), files, code=2)
    assert "learning_rate is a range; give it as a list" in error_line(done)


# -- SQLite ---------------------------------------------------------------------------------------


@needs_optuna
def test_sqlite_sweep_trains_run_folders_and_summarizes(files):
    done = run(sweep_cmd(files, "--trials", "3"), files)
    out = files / "runs" / "sweep-corpus"
    assert (out / "study.db").is_file()
    trials = trials_of(f"sqlite:///{out / 'study.db'}", "sweep-corpus")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    for t in trials:
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir == (out / f"trial-{t.number:04d}").resolve()
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["hidden_size"] == t.params["hidden_size"]
        assert config["learning_rate"] == t.params["learning_rate"]
        best = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
        assert best["step"] == BASE["max_steps"]
        assert t.value == min(t.intermediate_values.values())  # its best validation loss
        assert sorted(t.intermediate_values) == [5, 10, 15, 20]  # every evaluation
    best = min(trials, key=lambda t: t.value)
    assert f"| {best.number} | {best.value:.4f} |" in done.stdout
    cfg = load_config(out / "best.yaml")
    assert (cfg.hidden_size, cfg.learning_rate) == (
        best.params["hidden_size"],
        best.params["learning_rate"],
    )
    assert cfg.workers == 0
    svg = ET.parse(out / "trials.svg").getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    assert "http" not in (out / "trials.svg").read_text().replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )  # nothing fetched
    assert len(svg.findall(".//{http://www.w3.org/2000/svg}path")) == 3
    sample = run(rnn("sample", best.user_attrs["run_dir"], "--length", "20"), files)
    assert len(sample.stdout) >= 20

    summary = run(rnn("sweep", "--summary", "--study", "sweep-corpus"), files)
    assert summary.stdout == done.stdout  # the same table, written again


@needs_optuna
def test_jobs_share_the_trials_out(files):
    done = run(sweep_cmd(files, "--trials", "2", "--jobs", "2"), files)
    out = files / "runs" / "sweep-corpus"
    trials = trials_of(f"sqlite:///{out / 'study.db'}", "sweep-corpus")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    assert len({t.user_attrs["run_dir"] for t in trials}) == 2
    assert "job 2: 1 trial(s)" in done.stderr


def test_a_pruned_run_stops_cleanly_and_stays_resumable(tmp_path, corpus):
    cfg_path = tmp_path / "base.yaml"
    cfg_path.write_text(yaml.safe_dump({**BASE, "max_steps": 40}), encoding="utf-8")
    run_dir = tmp_path / "run"
    seen = []

    def prune_at_ten(step, loss):
        seen.append(step)
        if step == 10:
            raise StopTraining("pruned at step 10")

    plan = plan_run(run_dir, {}, cfg_path)
    result = train(corpus, plan, run_dir, quiet=True, on_evaluation=prune_at_ten)
    assert (result.step, result.reason, seen) == (10, "pruned at step 10", [5, 10])
    assert result.val_loss_full is not None  # scored on the whole split, as a limit ends a run
    resumed = train(corpus, plan_run(run_dir, {}, resume=True), run_dir, quiet=True)
    assert (resumed.step, resumed.reason) == (40, "reached max_steps (40)")


@needs_optuna
def test_median_pruner_prunes_a_hopeless_trial(files):
    # Five complete trials at a good rate, then one at a rate far too small to learn.
    (files / "space.yaml").write_text("learning_rate: [1.0e-2, 1.0e-6]\n", encoding="utf-8")
    storage = f"sqlite:///{files / 'study.db'}"
    study = optuna.create_study(study_name="p", storage=storage, direction="minimize")
    for _ in range(5):
        study.enqueue_trial({"learning_rate": 1e-2})
    study.enqueue_trial({"learning_rate": 1e-6})
    run(sweep_cmd(files, "--trials", "6", "--storage", storage, "--study", "p"), files)
    trials = trials_of(storage, "p")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5 + ["PRUNED"]
    pruned = Path(trials[-1].user_attrs["run_dir"])
    assert trials[-1].user_attrs["steps"] < BASE["max_steps"]
    assert (pruned / "last.npz").is_file()


def test_without_optuna_it_says_how_to_install_it(files):
    code = (
        "import sys; sys.modules['optuna'] = None; sys.argv = ['rnn', *sys.argv[1:]]; "
        "from rnncli.cli import main; main()"
    )
    cmd = [sys.executable, "-c", code, "sweep", "corpus.txt", "--space", "space.yaml"]
    done = run(cmd, files, code=1)
    assert error_line(done) == "rnn: error: rnn sweep needs Optuna: pip install 'rnncli[sweep]'"


def test_the_cli_does_not_import_optuna():
    code = "import sys, rnncli.cli; assert 'optuna' not in sys.modules, 'imported'"
    subprocess.run(
        [sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )


@needs_optuna
@pytest.mark.parametrize(
    "url, words",
    [
        ("nonsense", "is not a database URL"),
        ("postgresql://postgres@127.0.0.1/x", "write postgresql+psycopg://"),
        ("oracle+nodriver://h/x", "unsupported database kind"),
    ],
)
def test_a_bad_storage_url_gets_one_clear_line(files, url, words):
    done = run(sweep_cmd(files, "--storage", url), files, code=1)
    assert words in error_line(done)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_optuna
def test_an_unreachable_database_gets_one_clear_line(files):
    url = f"postgresql+psycopg://sweeper:secret@127.0.0.1:{free_port()}/nothing"
    done = run(sweep_cmd(files, "--storage", url), files, code=1)
    line = error_line(done)
    assert "cannot open the database" in line
    assert "secret" not in line  # the password is not shown


@needs_optuna
def test_an_interrupted_sweep_resumes(files):
    (files / "base.yaml").write_text(
        yaml.safe_dump({**BASE, "max_steps": 0, "max_time": 4.0, "max_epochs": 0}),
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(sweep_cmd(files, "--trials", "2"), cwd=files, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    first = files / "runs" / "sweep-corpus" / "trial-0000"
    deadline = time.monotonic() + 120
    while not (first / "last.npz").is_file():  # past its first checkpoint
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "the running trial is marked failed" in stderr
    storage = f"sqlite:///{files / 'runs' / 'sweep-corpus' / 'study.db'}"
    (stopped,) = trials_of(storage, "sweep-corpus")
    assert stopped.state.name == "FAIL" and stopped.user_attrs["interrupted"]
    step = json.loads((first / "metrics.jsonl").read_text().splitlines()[-1])["step"]

    done = run(sweep_cmd(files, "--trials", "1"), files)
    assert "1 interrupted trial(s) queued to resume" in done.stderr
    stopped, again = trials_of(storage, "sweep-corpus")
    assert again.state.name == "COMPLETE"
    assert again.params == stopped.params
    assert again.user_attrs["resumes"] == 0
    assert again.user_attrs["run_dir"] == stopped.user_attrs["run_dir"]
    records = [json.loads(line) for line in (first / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] > step  # it went on from where it stopped
    assert not (files / "runs" / "sweep-corpus" / "trial-0001").exists()


@needs_optuna
def test_a_signal_stops_every_job_and_marks_their_trials(files):
    (files / "base.yaml").write_text(
        yaml.safe_dump({**BASE, "max_steps": 0, "max_time": 15.0, "max_epochs": 0}),
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(sweep_cmd(files, "--trials", "2", "--jobs", "2"), cwd=files, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    out = files / "runs" / "sweep-corpus"
    deadline = time.monotonic() + 120
    while len(list(out.glob("trial-*/last.npz"))) < 2:  # both jobs past a checkpoint
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)  # to the sweep only: it passes it on to its jobs
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    trials = trials_of(f"sqlite:///{out / 'study.db'}", "sweep-corpus")
    assert [(t.state.name, t.user_attrs.get("interrupted")) for t in trials] == [("FAIL", True)] * 2
    for t in trials:  # each stopped as `rnn train` stops: its last.npz saved on the way out
        run_dir = Path(t.user_attrs["run_dir"])
        last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["step"]
        saved = run(rnn("info", run_dir / "last.npz", "--json"), files)
        assert json.loads(saved.stdout)["step"] >= last  # no recorded step is lost


# -- PostgreSQL -----------------------------------------------------------------------------------


def _postgres_bin() -> Path | None:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return versions[-1].parent if versions else None


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server in a temporary folder, on a free loopback port; its URL."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL's server (initdb, pg_ctl) is not installed")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser to start PostgreSQL as postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    folder = Path(tempfile.mkdtemp(prefix="rnncli-pg-"))
    if as_user:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()
    user = "postgres" if as_user else None
    subprocess.run([*as_user, bin_dir / "initdb", "-D", data, "-U", user or "rnncli", "-A", "trust",
                    "--no-sync"], check=True, capture_output=True)  # fmt: skip
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*as_user, bin_dir / "pg_ctl", "-D", data, "-o", options, "-l",
                    folder / "log", "-w", "start"], check=True, capture_output=True)  # fmt: skip
    try:
        yield f"postgresql+psycopg://{user or 'rnncli'}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "stop"],
                       capture_output=True)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


@needs_optuna
def test_two_processes_share_one_postgresql_study(files, postgres):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ("--trials", "3", "--storage", postgres, "--study", "shared")
    procs = [
        subprocess.Popen(sweep_cmd(files, *args, "--out", f"machine{k}"), cwd=files, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in (1, 2)
    ]  # fmt: skip
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        assert "Traceback" not in stderr
    trials = trials_of(postgres, "shared")
    assert len(trials) == 6
    # the sixth may be pruned: the median pruner starts comparing after five
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert sorted(t.number for t in trials) == list(range(6))
    folders = {t.user_attrs["run_dir"] for t in trials}
    assert len(folders) == 6
    for k in (1, 2):  # three in each process's folder
        assert len(list((files / f"machine{k}").glob("trial-*/last.npz"))) == 3
    assert not list(files.glob("machine*/study.db"))  # the study is in PostgreSQL only
    summary = run(rnn("sweep", "--summary", "--storage", postgres, "--study", "shared",
                      "--out", "summary"), files)  # fmt: skip
    complete = sum(t.state.name == "COMPLETE" for t in trials)
    assert f"{complete} complete" in summary.stdout
    assert load_config(files / "summary" / "best.yaml").model == "lstm"


@needs_optuna
def test_summary_of_a_missing_study_gets_one_clear_line(files, postgres):
    done = run(rnn("sweep", "--summary", "--storage", postgres, "--study", "nope"),
               files, code=1)  # fmt: skip
    assert "holds no study 'nope'" in error_line(done)
