"""Hyperparameter search on Optuna: every trial is a normal run folder trained as `rnn train` does.

A study lives in a database (SQLite in the sweep's folder by default; PostgreSQL shared by many
machines): each process asks it for a trial's settings, trains the run, reports the periodic
validation losses (the pruner may stop the run after one, cleanly, as a limit would) and tells it
the run's best validation loss. ``--jobs J`` runs J such processes on this machine, each pinned to
its share of the cores, so that J trials with their ``workers`` and BLAS threads do not fight for
them. Threads would not do: training handles SIGINT/SIGTERM (Python only lets the main thread do
that) and numpy's BLAS reads its thread count once per process.

A signal ends the current trial as it ends `rnn train` (last.npz saved); the trial is marked failed
and ``interrupted``, and the next sweep on the study trains it again from that run folder.

Optuna is an optional extra, imported only when a sweep runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from .checkpoint import CheckpointError
from .config import Config, ConfigError, read_settings
from .errors import CorpusError, Interrupted, StopTraining, TrainError
from .evaluate import bits_per_char
from .fileio import atomic_write
from .parallel import WorkerError, blas_thread_env, usable_cores
from .plan import plan_run
from .progress import is_count
from .runlock import run_lock
from .space import Choice, Dimension, check_comparable, grid, read_space
from .text import for_terminal
from .train import train

INSTALL_HINT = "rnn sweep needs Optuna: pip install 'rnncli[sweep]'"
TOP = 5  # best trials in the summary's table
HEARTBEAT_S = 60  # a trial whose process sends no heartbeat for GRACE_S is marked failed
GRACE_S = 180
MAX_JOBS_PER_CORE = 4  # more processes only share the cores, each with a model in memory
CREATE_ATTEMPTS = 5  # a new database's tables, when several processes create them at once


class SweepError(Exception):
    """A sweep that cannot start or go on; the message is one line for the user."""


class _TrialFailed(Exception):
    """This trial cannot be trained (its settings clash, training failed); the sweep goes on."""


def _optuna():
    """The optuna module, imported on first use so that `rnn --help` stays fast."""
    try:
        import optuna
    except ImportError:
        raise SweepError(INSTALL_HINT) from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the sweep prints its own lines
    return optuna


def _samplers(optuna, space) -> dict[str, Callable[[], Any]]:
    return {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "grid": lambda: optuna.samplers.GridSampler(grid(space)),
    }


def _pruners(optuna) -> dict[str, Callable[[], Any]]:
    return {"median": optuna.pruners.MedianPruner, "none": optuna.pruners.NopPruner}


SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")


@dataclass
class Sweep:
    """What one `rnn sweep` does; also what its --jobs processes are told (as JSON)."""

    corpus: str
    space: str
    config: str | None
    trials: int
    storage: str
    study: str
    out: str
    jobs: int = 1
    sampler: str = "tpe"
    pruner: str = "median"


def default_study(corpus: str | os.PathLike) -> str:
    return f"sweep-{Path(corpus).stem}"


def default_out(study: str) -> Path:
    return Path("runs") / study


def default_storage(out: str | os.PathLike) -> str:
    return f"sqlite:///{Path(out) / 'study.db'}"


# -- the study's database -------------------------------------------------------------------------


def shown_url(url: str) -> str:
    """``url`` with any password hidden, for messages."""
    with contextlib.suppress(Exception):
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    return url.split("@")[-1] if "@" in url else url


def open_storage(url: str):
    """Optuna's storage at ``url``, connected (its tables created if new); SweepError if not."""
    optuna = _optuna()
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import (
        ArgumentError,
        IntegrityError,
        NoSuchModuleError,
        ProgrammingError,
        SAWarning,
        SQLAlchemyError,
    )

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SweepError(
            f"--storage {url!r} is not a database URL (e.g. postgresql+psycopg://user@host/db, "
            "sqlite:///study.db)"
        ) from None
    shown = shown_url(url)
    if parsed.drivername == "postgresql":  # SQLAlchemy's default driver is psycopg2, not ours
        raise SweepError(f"--storage {shown}: write postgresql+psycopg:// (the driver installed)")
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise SweepError(
            f"--storage {shown}: a database in memory ends with the process that made it, and "
            "the study with it; name a file (sqlite:///study.db)"
        )
    engine_kwargs = {}
    if parsed.get_backend_name() == "postgresql":  # an unreachable host fails in seconds
        engine_kwargs = {"connect_args": {"connect_timeout": 10}}
    database = _sqlite_file(url)
    if database is not None:  # --jobs processes take turns writing: wait for a turn, not 5 s
        database.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    try:
        for attempt in range(CREATE_ATTEMPTS):
            try:
                with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    # a URL option the driver would ignore is refused, not ignored
                    warnings.simplefilter("error", SAWarning)
                    return optuna.storages.RDBStorage(
                        url,
                        engine_kwargs=engine_kwargs,
                        heartbeat_interval=HEARTBEAT_S,
                        grace_period=GRACE_S,
                    )
            # another process created the tables at the same moment: a duplicate key, or on
            # PostgreSQL a table that already exists (DuplicateTable)
            except (IntegrityError, ProgrammingError):
                if attempt == CREATE_ATTEMPTS - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))
    except NoSuchModuleError:
        raise SweepError(f"--storage {shown}: unsupported database kind") from None
    except ImportError as err:
        raise SweepError(f"--storage {shown}: its driver is not installed ({err.name})") from None
    # TypeError, ValueError: a URL option the driver does not take (sqlite:///s.db?foo=bar)
    except (SQLAlchemyError, SAWarning, OSError, TypeError, ValueError) as err:
        raise SweepError(
            f"--storage {shown}: cannot open the database ({_first_line(err)})"
        ) from None


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; None for other databases (or an in-memory one)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    with contextlib.suppress(ArgumentError):
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            return Path(parsed.database)
    return None


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


@contextlib.contextmanager
def _database_errors(url: str) -> Iterator[None]:
    """A database failure met while the sweep runs, as one line."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except SQLAlchemyError as err:
        raise SweepError(f"--storage {shown_url(url)}: {_first_line(err)}") from None


# -- one trial ------------------------------------------------------------------------------------


def suggest(trial, space: Mapping[str, Dimension]) -> dict[str, Any]:
    """The trial's value of every dimension of ``space``, drawn by the study's sampler."""
    params = {}
    for key, dim in space.items():
        if isinstance(dim, Choice):
            params[key] = trial.suggest_categorical(key, list(dim.values))
        elif dim.integer:
            params[key] = trial.suggest_int(key, int(dim.low), int(dim.high), log=dim.log)
        else:
            params[key] = trial.suggest_float(key, dim.low, dim.high, log=dim.log)
    return params


def _say(message: str) -> None:
    print(for_terminal(message), file=sys.stderr, flush=True)  # it may quote the study's records


def _params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def _shown_path(path: str | os.PathLike) -> str:
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def _own_run_dir(recorded, out: Path) -> Path | None:
    """The run folder a study records (``run_dir``, ``resume_dir``) if it is one of this sweep's
    trial folders (``out``/trial-NNNN), else None: whoever wrote the study's database, a trial
    never trains into another folder."""
    if not isinstance(recorded, str) or "\0" in recorded:
        return None
    path = Path(recorded)
    if path.name.startswith("trial-") and path.parent.resolve() == out.resolve():
        return path
    return None


class _Objective:
    """Trains one trial's run folder; its value is the run's best validation loss."""

    def __init__(self, sweep: Sweep, space: Mapping[str, Dimension]):
        self.sweep, self.space = sweep, space
        self.out = Path(sweep.out)

    def __call__(self, trial) -> float:
        params = suggest(trial, self.space)
        resume_dir = _own_run_dir(trial.user_attrs.get("resume_dir"), self.out)
        resume = resume_dir is not None and (resume_dir / "last.npz").is_file()
        run_dir = resume_dir if resume else self.out / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        trial.set_user_attr("host", socket.gethostname())
        again = f" (trial {trial.user_attrs.get('resumes')} again, resumed)" if resume else ""
        _say(f"trial {trial.number}{again}: {_params_text(params)} -> {_shown_path(run_dir)}")
        try:
            with run_lock(run_dir):
                if resume:
                    plan = plan_run(run_dir, {}, resume=True)
                else:
                    plan = plan_run(run_dir, params, self._config_path())
                trial.set_user_attr("config", plan.cfg.to_dict())
                result = train(
                    self.sweep.corpus, plan, run_dir, quiet=True,
                    on_evaluation=lambda step, loss: self._report(trial, step, loss),
                )  # fmt: skip
        except Interrupted:
            trial.set_user_attr("interrupted", True)
            raise
        except (ConfigError, TrainError) as err:
            trial.set_user_attr("error", str(err))
            raise _TrialFailed(str(err)) from None
        trial.set_user_attr("steps", result.step)
        trial.set_user_attr("reason", result.reason)
        if result.best_val_loss is None:
            message = "no validation loss (the validation split is too short)"
            trial.set_user_attr("error", message)
            raise _TrialFailed(message)
        if trial.user_attrs.get("pruned_at") == result.step:
            raise _optuna().TrialPruned(result.reason)
        return result.best_val_loss

    def _config_path(self) -> Path | None:
        return None if self.sweep.config is None else Path(self.sweep.config)

    def _report(self, trial, step: int, val_loss: float) -> None:
        if not math.isfinite(val_loss):
            return  # Optuna refuses a non-finite value; the run's own recovery handles it
        trial.report(val_loss, step)
        if trial.should_prune():
            trial.set_user_attr("pruned_at", step)
            raise StopTraining(f"pruned at step {step} by the {self.sweep.pruner} pruner")


def _trial_line(study, frozen) -> str:
    """What became of a finished trial, in one line."""
    state, attrs = frozen.state.name, frozen.user_attrs
    head = f"trial {frozen.number}"
    if state == "COMPLETE":
        best = " (best so far)" if study.best_trial.number == frozen.number else ""
        return (
            f"{head}: val loss {frozen.value:.4f} ({bits_per_char(frozen.value):.3f} bpc) after "
            f"{attrs.get('steps')} steps{best}"
        )
    if state == "PRUNED":
        return f"{head}: {attrs.get('reason', 'pruned')}"
    return f"{head}: failed: {attrs.get('error', 'see its run folder')}"


# -- the sweep ------------------------------------------------------------------------------------


def _load_space(sweep: Sweep) -> dict[str, Dimension]:
    space = read_space(sweep.space)
    base = Config.from_dict(read_settings(sweep.config) if sweep.config else {}, sweep.config or "")
    check_comparable(space, base.eval_batches)
    if base.val_fraction == 0:
        raise ConfigError(
            f"{sweep.config or 'config'}: val_fraction is 0, so no trial has a validation loss "
            "to compare"
        )
    if sweep.sampler == "grid":
        grid(space)  # refuses ranges before any trial starts
    return space


def _study(sweep: Sweep, space, storage):
    optuna = _optuna()
    sampler = _samplers(optuna, space)[sweep.sampler]()
    pruner = _pruners(optuna)[sweep.pruner]()
    with _database_errors(sweep.storage):
        return optuna.create_study(
            storage=storage,
            study_name=sweep.study,
            sampler=sampler,
            pruner=pruner,
            direction="minimize",
            load_if_exists=True,
        )


def requeue_interrupted(study, limit: int, out: Path) -> int:
    """Queue again (at most ``limit``) the interrupted trials whose run folder is on this
    machine, one of ``out``'s trial folders, and that no later trial took up; the trial that
    takes one resumes that folder."""
    trials = study.get_trials(deepcopy=False)
    taken = {r for t in trials if is_count(r := t.user_attrs.get("resumes"))}
    host, queued = socket.gethostname(), 0
    for t in trials:
        attrs = t.user_attrs
        if queued >= limit or attrs.get("interrupted") is not True or t.number in taken:
            continue
        run_dir = _own_run_dir(attrs.get("run_dir"), out)
        if attrs.get("host") == host and run_dir is not None and (run_dir / "last.npz").is_file():
            study.enqueue_trial(
                t.params, user_attrs={"resumes": t.number, "resume_dir": str(run_dir)}
            )
            queued += 1
    return queued


def run_trials(sweep: Sweep, trials: int, space=None, study=None) -> None:
    """Train ``trials`` trials of the study in this process, one after another."""
    space = space or _load_space(sweep)
    study = study or _study(sweep, space, open_storage(sweep.storage))
    objective = _Objective(sweep, space)
    with _signals_raise(), _database_errors(sweep.storage):
        study.optimize(
            objective,
            n_trials=trials,
            catch=(_TrialFailed,),
            callbacks=[lambda study, frozen: _say(_trial_line(study, frozen))],
        )


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGINT and SIGTERM between trainings raise ``Interrupted`` (training handles its own)."""

    def handle(signum, frame):
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(sweep: Sweep) -> None:
    """Run the sweep: its trials in this process, or shared out over ``jobs`` processes.

    Raises ``Interrupted`` after a signal (the trial that was running is marked failed)."""
    space = _load_space(sweep)  # every check before anything is written
    if not Path(sweep.corpus).is_file():
        raise SweepError(f"{sweep.corpus}: corpus not found (or not a file)")
    most = MAX_JOBS_PER_CORE * usable_cores()
    if min(sweep.jobs, sweep.trials) > most:
        raise SweepError(
            f"--jobs {sweep.jobs}: at most {most} at once on this machine ({MAX_JOBS_PER_CORE} "
            "per core): each job is a process that holds a model in training"
        )
    Path(sweep.out).mkdir(parents=True, exist_ok=True)
    storage = open_storage(sweep.storage)
    study = _study(sweep, space, storage)
    with _database_errors(sweep.storage):
        queued = requeue_interrupted(study, sweep.trials, Path(sweep.out))
    if queued:
        _say(f"{queued} interrupted trial(s) queued to resume from their run folders")
    jobs = min(sweep.jobs, sweep.trials)
    if jobs == 1:
        run_trials(sweep, sweep.trials, space, study)
    else:
        _run_jobs(sweep, jobs)


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


def _core_groups(jobs: int) -> list[list[int]]:
    """The cores each job may use: disjoint groups, or one core each, shared, past one a core."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cores:
        return [[] for _ in range(jobs)]
    if jobs >= len(cores):
        return [[cores[k % len(cores)]] for k in range(jobs)]
    return [list(group) for group in _split(cores, jobs)]


def _split(items: list, parts: int) -> Iterator[list]:
    start = 0
    for size in _shares(len(items), parts):
        yield items[start : start + size]
        start += size


def _run_jobs(sweep: Sweep, jobs: int) -> None:
    """``jobs`` processes, each running its share of the trials on its share of the cores.

    They run in their own sessions, so a terminal's Ctrl-C reaches this process only, which
    passes each signal on once: a second one there would stop a trial before it saves."""
    groups = _core_groups(jobs)
    package_root = str(Path(__file__).resolve().parents[1])
    procs: list[subprocess.Popen] = []
    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for share, cores in zip(_shares(sweep.trials, jobs), groups, strict=True):
            if received:  # a signal while starting them: start no more
                break
            env = blas_thread_env(max(1, len(cores) or usable_cores() // jobs))
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
            spec = json.dumps({**asdict(sweep), "trials": share})
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "rnncli.sweep", spec],
                    env=env,
                    start_new_session=True,
                    preexec_fn=(lambda c=cores: os.sched_setaffinity(0, c)) if cores else None,
                )
            )
            where = ",".join(map(str, cores)) or "all"
            _say(f"job {len(procs)}: {share} trial(s) on core(s) {where}")
        codes = [proc.wait() for proc in procs]
    finally:
        for proc in procs:  # only if this process is unwinding early
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise Interrupted(received[0], saved=True)
    for k, code in enumerate(codes):
        if code < 0:
            raise SweepError(f"job {k + 1} of {jobs} was killed by {signal.Signals(-code).name}")
        if code != 0:
            raise SweepError(f"job {k + 1} of {jobs} failed (its error is above)")


def _job_main(argv: list[str]) -> None:
    """A --jobs process: its share of the trials; errors as one line, a signal as 128 + it."""
    try:
        sweep = Sweep(**json.loads(argv[0]))
        run_trials(sweep, sweep.trials)
    except (SweepError, ConfigError, TrainError, CorpusError, CheckpointError, WorkerError) as err:
        _say(f"rnn: error: {' '.join(str(err).splitlines())}")
        sys.exit(1)
    except OSError as err:  # disk full, permissions
        _say(
            f"rnn: error: {err.filename}: {err.strerror}" if err.filename else f"rnn: error: {err}"
        )
        sys.exit(1)
    except Interrupted as stop:
        sys.exit(128 + stop.signum)


# -- results --------------------------------------------------------------------------------------


@dataclass
class Summary:
    study: str
    counts: dict[str, int]  # trial state -> trials
    table: str  # Markdown: the best trials
    best_config: Path | None
    plot: Path | None
    best_run: str | None


def summarize(storage_url: str, study_name: str, out: str | os.PathLike) -> Summary:
    """The study's best trials as a table; its best config (ready for `rnn train --config`) and
    a plot of its trials written into ``out``."""
    optuna = _optuna()
    database = _sqlite_file(storage_url)
    if database is not None and not database.is_file():  # do not create one to find it empty
        raise SweepError(f"{database}: no study database there (--storage, --out or --study)")
    storage = open_storage(storage_url)
    with _database_errors(storage_url):
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
        except KeyError:
            raise SweepError(
                f"--storage {shown_url(storage_url)} holds no study {study_name!r}"
            ) from None
        trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    complete = sorted((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from .sweepplot import trials_svg

    plot = out / "trials.svg"
    with atomic_write(plot, text=True) as f:
        f.write(trials_svg(trials, study_name))
    best_config = None
    if complete:
        best_config = out / "best.yaml"
        write_best_config(complete[0], study_name, best_config)
    return Summary(
        study=study_name,
        counts=counts,
        table=trials_table(complete[:TOP]),
        best_config=best_config,
        plot=plot,
        best_run=complete[0].user_attrs.get("run_dir") if complete else None,
    )


def trials_table(trials: list) -> str:
    """Markdown table of ``trials`` (finished ones): value, steps, parameters, run folder."""
    keys = sorted({k for t in trials for k in t.params})
    head = ["trial", "val loss", "bpc", "steps", *keys, "run folder"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for t in trials:
        params = [_cell(t.params.get(k)) for k in keys]
        run_dir = t.user_attrs.get("run_dir")
        cells = [
            str(t.number),
            f"{t.value:.4f}",
            f"{bits_per_char(t.value):.3f}",
            str(t.user_attrs.get("steps", "")),
            *params,
            _shown_path(run_dir) if isinstance(run_dir, str) and run_dir else "",
        ]
        # what a study's database records may hold anything: escaped, one line per trial
        lines.append("| " + " | ".join(for_terminal(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_best_config(trial, study_name: str, path: Path) -> None:
    """The best trial's settings as a config file for `rnn train --config` (workers 0: one per
    core of the machine that trains it, as the trial's count was this machine's share)."""
    recorded = trial.user_attrs.get("config") or {}
    if not isinstance(recorded, Mapping):
        raise ConfigError(f"trial {trial.number}: its recorded config is not a mapping of settings")
    settings = {**recorded, "workers": 0}
    cfg = Config.from_dict(settings, f"trial {trial.number}")  # what the file will load as
    header = (
        f"# Best trial of the sweep {study_name!r}: trial {trial.number}, best val loss "
        f"{trial.value:.4f} ({bits_per_char(trial.value):.3f} bpc).\n"
        "# Its settings for `rnn train --config`; workers 0 means one per core.\n"
    )
    body = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)
    with atomic_write(path, text=True) as f:
        f.write(header + body)


if __name__ == "__main__":
    _job_main(sys.argv[1:])
