"""Speed benchmarks of rnncli against PyTorch on the CPU: ``python -m tests.bench.run_bench``.

1. Parity. For each cell type, an rnncli model (V = 65, 2 layers of 64, every parameter and the
   initial state random) and its exact PyTorch twin (``torch_models.twin_of``) must agree on
   the loss, the final state, every parameter gradient and the initial state's gradient, to
   ``max|a - b| / max|b| <= 1e-4`` per tensor (a = rnncli, b = PyTorch, float32). The speed of
   a cell whose parity fails is not measured: speed without the same maths is worthless.
2. Training speed. For each configuration both frameworks train on the same batches
   (B = T = 50, Adam 2e-3, each gradient element clipped to [-5, 5], hidden state carried
   between windows), PyTorch with the model a PyTorch user would write (``nn.Embedding`` ->
   stack -> ``nn.Linear``) and N threads, rnncli as ``rnn train`` runs with ``workers: N``: the
   streams split over N worker processes of one BLAS thread each (``rnncli.parallel``), N = the
   usable cores or ``--threads``. A train step is forward, backward, clip and update. The two
   alternate in rounds of about ``round_s`` seconds each (the order flips every round); the
   figures are medians over rounds of characters per second and of the per-round ratio
   rnncli / PyTorch. Rounds during which other processes used the
   cores (measured from ``/proc/stat``) are left out unless no round was quiet.
3. FLOP rate. Training FLOPs per character are counted from the GEMMs, as three times the
   forward's (the backward pass runs two GEMMs of the same size for each forward one):
   ``3 * (sum over layers l of 2 G H (D_l + H)  +  2 H V)``, with G = 1, 4, 3 gates for rnn,
   lstm, gru, D_l = H above the first layer and D_0 = 0 (layer 0 reads its one-hot input as a
   row gather, which is no GEMM). The rate on lstm 2x512 is compared with the float32 GEMM peak
   measured in the same run: the best of several 2048 x 2048 numpy matmuls.
4. Sampling: ``rnncli.sample.BatchSampler``, lstm 2x256 at V = 65, with N = 1, 10 and 100
   streams (samples drawn as one batch); characters per second counts the characters of all
   streams.
5. Peak RSS of ``python -m rnncli train`` on synthetic corpora of 1 MB and 200 MB.
6. Start-up time of ``python -m rnncli --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from rnncli import cells, optim
from rnncli.batches import BatchIterator
from rnncli.config import Config
from rnncli.corpus import load_corpus
from rnncli.model import Model
from rnncli.parallel import data_parallel, usable_cores
from rnncli.sample import BatchSampler, stream_generators
from rnncli.vocab import Vocab
from tests.bench import breakdown, markdown, torch_models
from tests.bench.machine import blas_name, blas_threads, cpu_model, pin_threads
from tests.bench.torch_models import parity_errors

BATCH, SEQ, LR, CLIP = 50, 50, 2e-3, 5.0
PARITY_TOLERANCE = 1e-4
BUSY_LOAD = 0.5  # 1-minute load average above which the start warns of competition
BUSY_CORES = 0.1  # cores kept busy by other processes that make a timed round disturbed
TARGET_SPEEDUP, TARGET_PEAK, TARGET_SAMPLING, TARGET_RSS_GROWTH = 1.2, 0.70, 10_000, 1.2
TARGET_OVER_LSTM = 3.0  # a minGRU step against rnncli's LSTM of the same size
TARGET_BATCH_SAMPLING = 20  # N = 100 streams: this many times the characters per second of one
SAMPLING_STREAMS = (1, 10, 100)
REPO = Path(__file__).resolve().parents[2]
# The corpus, relative to the project root: tiny shakespeare where you supply it (docs/cells.md),
# else the larger one `make data` fetches. Paths inside the project only, so that what the
# benchmarks print names a file every clone can have.
CORPUS_CANDIDATES = ("data/tinyshakespeare.txt", "data/shakespeare.txt")
# Frequent letters first: with Zipf frequencies the text looks vaguely like English.
LATIN = " etaoinshrdlucmfwypvbgkqjxzETAOINSHRDLUCMFWYPVBGKQJXZ\n.,;:'!?-"
CJK = "".join(chr(0x4E00 + k) for k in range(6000))  # a Chinese-sized vocabulary


@dataclass(frozen=True)
class Effort:
    rounds: int  # A/B rounds per configuration
    round_s: float  # seconds each framework trains per round
    gemm_reps: int
    sample_chars: int
    sample_reps: int
    rss_steps: int
    help_runs: int


FULL = Effort(
    rounds=7, round_s=2.0, gemm_reps=7, sample_chars=2000, sample_reps=5, rss_steps=200, help_runs=7
)
QUICK = Effort(
    rounds=3, round_s=0.5, gemm_reps=3, sample_chars=2000, sample_reps=2, rss_steps=30, help_runs=3
)


@dataclass(frozen=True)
class BenchConfig:
    cell: str
    num_layers: int
    hidden_size: int
    corpus: str = "shakespeare"  # or "cjk": the synthetic Zipf corpus over CJK

    @property
    def name(self) -> str:
        suffix = "" if self.corpus == "shakespeare" else f" {self.corpus}"
        return f"{self.cell} {self.num_layers}x{self.hidden_size}{suffix}"


SIZES = ((1, 128), (2, 128), (2, 256), (2, 512))
CONFIGS = (
    *(BenchConfig(cell, layers, hidden) for cell in ("rnn", "lstm") for layers, hidden in SIZES),
    BenchConfig("gru", 2, 256),
    BenchConfig("mingru", 2, 256),
    BenchConfig("minlstm", 2, 256),
    BenchConfig("lstm", 1, 256, "cjk"),
)
FLOPS_CONFIG = BenchConfig("lstm", 2, 512)
EXTRAS = ("sampling", "rss", "startup")
SECTION_TITLE = "Speed, parity and memory against PyTorch (`make bench`)"


# ----------------------------------------------------------------------------------------------
# Machine and threads


def machine_facts(threads: int) -> dict:
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "blas": blas_name(),
        "blas_threads": blas_threads(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "threads_requested": threads,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def start(description: str, module: str, extra_arguments: Callable | None = None):
    """Shared start of the benchmark programs: options, threads, machine facts.

    Returns (args, facts). ``extra_arguments(parser)`` adds a program's own options. From here
    on stdout is also kept (``args.transcript``) for ``publish``.
    """
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument(
        "--corpus",
        type=Path,
        help="the tiny shakespeare text [default: the first of "
        f"{', '.join(CORPUS_CANDIDATES)} that exists, relative to the project root]",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="PyTorch threads, BLAS threads and rnncli workers [default: all cores]",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="PATH",
        help="also write the results as this program's section of this Markdown file "
        "(`make bench` passes docs/benchmarks.md)",
    )
    if extra_arguments is not None:
        extra_arguments(parser)
    args = parser.parse_args()
    args.corpus = args.corpus or default_corpus()
    args.module_name = module.rsplit(".", 1)[1]  # its section in --markdown
    if not args.corpus.is_file():
        shown = markdown.shown_path(args.corpus)
        parser.error(f"{shown}: no such file; pass --corpus (or run `make data`)")
    if args.markdown:
        try:
            markdown.check_target(args.markdown, args.module_name)
        except markdown.MarkdownError as err:
            parser.error(f"--markdown: {err}")
    threads = args.threads or usable_cores()
    pin_threads(threads, module)
    torch.set_num_threads(blas_threads() or threads)
    sys.stdout.reconfigure(line_buffering=True)
    args.transcript = markdown.Transcript.install()
    args.command_line = markdown.command_line(module, sys.argv[1:])
    facts = machine_facts(threads)
    print(f"{module}  {facts['date']}")
    print(
        f"CPU: {facts['cpu']}, {facts['cores']} cores ({facts['usable_cores']} usable), "
        f"load average {facts['load_average_1min']}"
    )
    print(f"Python {facts['python']} on {facts['platform']}")
    print(f"numpy {facts['numpy']} with {facts['blas']}, BLAS threads: {facts['blas_threads']}")
    print(f"torch {facts['torch']}, threads: {facts['torch_threads']}")
    print(f"corpus: {markdown.shown_path(args.corpus)}")
    if facts["load_average_1min"] > BUSY_LOAD:
        print(
            f"WARNING: load average above {BUSY_LOAD:g}: other processes may compete for the "
            "cores and skew the timings"
        )
    return args, facts


def default_corpus() -> Path:
    candidates = [REPO / name for name in CORPUS_CANDIDATES]
    return next((path for path in candidates if path.is_file()), candidates[0])


def publish(args, title: str, facts: dict, targets: list[dict]) -> None:
    """Write the run's section of ``--markdown`` (if given): ``title``, the machine facts, the
    targets and everything printed so far."""
    if not args.markdown:
        return
    body = markdown.section(title, args.command_line, facts, targets, args.transcript.text())
    markdown.write_section(args.markdown, args.module_name, body)
    print(f"results written to {markdown.shown_path(args.markdown)}")


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


# ----------------------------------------------------------------------------------------------
# Data


def write_zipf_text(path: Path, alphabet: str, num_chars: int, seed: int = 0) -> None:
    """Write ``num_chars`` characters of ``alphabet``, drawn independently with Zipf frequencies
    (the k-th character has probability proportional to 1/k), as UTF-8, a chunk at a time."""
    rng = np.random.default_rng(seed)
    codepoints = np.frombuffer(alphabet.encode("utf-32-le"), dtype="<u4")
    p = 1.0 / np.arange(1, codepoints.size + 1)
    p /= p.sum()
    chunk = 1 << 20
    with open(path, "wb") as f:
        for begin in range(0, num_chars, chunk):
            ids = rng.choice(codepoints.size, size=min(chunk, num_chars - begin), p=p)
            f.write(codepoints[ids].tobytes().decode("utf-32-le").encode("utf-8"))


def load_text(path: Path, cache_dir: Path) -> tuple[np.ndarray, Vocab]:
    corpus = load_corpus(path, cache_dir)
    return corpus.data, corpus.vocab


# ----------------------------------------------------------------------------------------------
# Parity


def check_parity(cells) -> dict[str, dict]:
    if not cells:
        return {}
    print(
        "\nParity: rnncli against its PyTorch twin (float32, V=65, 2x64, B=10, T=25, random "
        "parameters and initial state);\n  error = max|a-b| / max|b| per tensor (b = PyTorch), "
        f"target <= {PARITY_TOLERANCE:g}"
    )
    results = {}
    # each cell with one-hot input, and the LSTM also behind a learnt embedding (E = 16)
    cases = [(cell, cell, 0) for cell in cells] + [("lstm E=16", "lstm", 16)] * ("lstm" in cells)
    for label, cell, embedding_size in cases:
        errors = parity_errors(cell, embedding_size=embedding_size)
        passed = all(e <= PARITY_TOLERANCE for e in errors.values())
        worst = max((e, name) for name, e in errors.items() if name not in ("loss", "final state"))
        print(
            f"  {label:9} loss {errors['loss']:.1e}  final state {errors['final state']:.1e}  "
            f"worst of {len(errors) - 2} gradients {worst[0]:.1e} ({worst[1]})  "
            f"{verdict(passed)}"
        )
        for name, e in errors.items():
            if e > PARITY_TOLERANCE:
                print(f"        {name}: {e:.3e}")
        results[label] = {"errors": errors, "passed": passed}
    return results


# ----------------------------------------------------------------------------------------------
# Training speed


def rnncli_train_step(net, batches: BatchIterator):
    """rnncli's training step (as its trainer runs it) over ``batches``, with forward, backward
    and update run by ``net`` (from ``rnncli.parallel.data_parallel``); returns the callable."""
    state = net.zero_state(batches.batch_size)

    def step() -> float:
        nonlocal state
        if batches.index == 0:  # the streams restart
            state = net.zero_state(batches.batch_size)
        x, y = batches.next_batch()
        loss, state, cache = net.forward(x, y, state)
        grads, _ = net.backward(cache)
        net.update(grads, "value", CLIP)
        return loss

    return step


def other_processes_cpu_seconds() -> float:
    """CPU time used since boot by every process but this one and its children (rnncli's
    workers) (Linux ``/proc/stat``; 0 elsewhere).

    Its growth over a timed run measures how much other processes competed for the cores.
    """
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    everyone = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    own = os.times()  # children_*: the children that have exited
    return everyone - sum(own[:4]) - running_children_cpu_seconds()


def running_children_cpu_seconds() -> float:
    """User and system CPU time of this process's running children (Linux ``/proc``)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it exited meanwhile
            continue
        if int(fields[1]) == os.getpid():  # fields: state, ppid, ..., utime (12), stime (13)
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def interleaved_rounds(steps: dict[str, Callable], rounds: int, round_s: float):
    """Characters per second of each training step function per round, and the number of cores
    other processes kept busy meanwhile.

    Each function runs once untimed (first-call allocations), then a few steps estimate how
    many steps fill ``round_s`` seconds. In every round each function runs that many steps;
    the order flips from round to round so that neither always follows the other. A short
    pause before each timed run lets the other library's idle worker threads stop spinning.
    Returns ({name: [chars/s per round]}, {name: [other processes' cores per round]}).
    """
    steps_per_round = {}
    for name, step in steps.items():
        step()
        begin, n = time.perf_counter(), 0
        while n < 2 or time.perf_counter() - begin < round_s / 4:
            step()
            n += 1
        steps_per_round[name] = max(1, round(round_s * n / (time.perf_counter() - begin)))
    rates = {name: [] for name in steps}
    others = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            time.sleep(0.2)
            other_cpu, begin = other_processes_cpu_seconds(), time.perf_counter()
            for _ in range(steps_per_round[name]):
                steps[name]()
            seconds = time.perf_counter() - begin
            rates[name].append(steps_per_round[name] * BATCH * SEQ / seconds)
            others[name].append((other_processes_cpu_seconds() - other_cpu) / seconds)
    return rates, others


def rnncli_model(cell: str, config: BenchConfig, vocab_size: int):
    """The model and optimizer ``rnn train`` builds for ``cell`` at the size of ``config``: its
    defaults (input_lr_scale too)."""
    cfg = Config.from_dict(
        {"model": cell, "hidden_size": config.hidden_size, "num_layers": config.num_layers,
         "batch_size": BATCH, "seq_length": SEQ, "learning_rate": LR, "seed": 0},
        source="speed benchmark",
    )  # fmt: skip
    model = Model.from_config(cfg, vocab_size)
    return model, optim.from_config(cfg, model.params)


def time_against_lstm(
    config: BenchConfig, data: np.ndarray, vocab_size: int, effort: Effort, workers: int
) -> dict:
    """Interleaved training-speed rounds of rnncli's ``config`` and rnncli's LSTM of the same
    width and depth, both as ``rnn train`` runs them with ``workers`` processes: the median
    per-round ratio of their characters per second (the inverse ratio of step times)."""
    with contextlib.ExitStack() as stack:
        steps = {}
        for cell in (config.cell, "lstm"):
            model, optimizer = rnncli_model(cell, config, vocab_size)
            net = stack.enter_context(data_parallel(model, optimizer, BATCH, SEQ, workers))
            steps[cell] = rnncli_train_step(net, BatchIterator(data, BATCH, SEQ))
        rates, others = interleaved_rounds(steps, effort.rounds, effort.round_s)
    ratios = [a / b for a, b in zip(rates[config.cell], rates["lstm"], strict=True)]
    busy = [max(a, b) for a, b in zip(others[config.cell], others["lstm"], strict=True)]
    quiet = [r for r in range(effort.rounds) if busy[r] <= BUSY_CORES]
    kept = quiet or list(range(effort.rounds))
    return {
        "chars_per_s": statistics.median(rates[config.cell][r] for r in kept),
        "lstm_chars_per_s": statistics.median(rates["lstm"][r] for r in kept),
        "ratio": statistics.median(ratios[r] for r in kept),
        "ratio_range": (min(ratios[r] for r in kept), max(ratios[r] for r in kept)),
        "quiet_rounds": len(quiet),
    }


def time_config(
    config: BenchConfig, data: np.ndarray, vocab_size: int, effort: Effort, workers: int
) -> dict:
    """Interleaved training-speed rounds of rnncli (with ``workers`` processes, as ``rnn train``
    runs with ``workers: N``) and PyTorch on ``config``.

    Rounds in which other processes kept more than ``BUSY_CORES`` cores busy during either
    framework's run are left out of the medians, unless every round was disturbed.
    """
    model, optimizer = rnncli_model(config.cell, config, vocab_size)
    torch.manual_seed(0)
    user_model = torch_models.CharModel(
        config.cell, vocab_size, config.hidden_size, config.num_layers
    )
    with data_parallel(model, optimizer, BATCH, SEQ, workers) as net:
        steps = {
            "rnncli": rnncli_train_step(net, BatchIterator(data, BATCH, SEQ)),
            "torch": torch_models.train_step_fn(
                user_model, BatchIterator(data, BATCH, SEQ), LR, CLIP
            ),
        }
        rates, others = interleaved_rounds(steps, effort.rounds, effort.round_s)
    ratios = [a / b for a, b in zip(rates["rnncli"], rates["torch"], strict=True)]
    busy = [max(a, b) for a, b in zip(others["rnncli"], others["torch"], strict=True)]
    quiet = [r for r in range(effort.rounds) if busy[r] <= BUSY_CORES]
    kept = quiet or list(range(effort.rounds))
    return {
        "vocab_size": vocab_size,
        "rnncli_chars_per_s": statistics.median(rates["rnncli"][r] for r in kept),
        "torch_chars_per_s": statistics.median(rates["torch"][r] for r in kept),
        "ratio": statistics.median(ratios[r] for r in kept),
        "ratio_range": (min(ratios[r] for r in kept), max(ratios[r] for r in kept)),
        "quiet_rounds": len(quiet),
        "rounds": {**rates, "ratio": ratios, "other_processes_cores": busy},
    }


def train_flops_per_char(cell: str, num_layers: int, hidden_size: int, vocab_size: int) -> int:
    """GEMM FLOPs of one training step per character (formula in the module docstring), summed
    over the products ``breakdown.products`` lists for one stream of its window length."""
    shapes = breakdown.products(cell, num_layers, hidden_size, 1, vocab_size).values()
    flops = sum(2 * m * k * n * count for group in shapes for m, k, n, count in group)
    return flops // breakdown.SEQ


def gemm_peak(reps: int, n: int = 2048) -> float:
    """Best float32 FLOP/s of an n x n numpy matmul over ``reps`` runs (after one warm-up)."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    out = a @ b
    best = math.inf
    for _ in range(reps):
        begin = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - begin)
    return 2 * n**3 / best


# ----------------------------------------------------------------------------------------------
# Sampling, memory, start-up


def sampling_speed(vocab: Vocab, streams: int, chars: int, reps: int) -> float:
    """Median characters per second (all streams together) of a ``BatchSampler`` of
    ``streams`` samples of ``chars // streams`` characters each (at least 200) from an lstm
    2x256."""
    model = Model(len(vocab), "lstm", 256, 2, seed=0)
    length = max(chars // streams, 200)
    rates = []
    for rep in range(reps):
        # as `rnn sample` draws plain text: neither kept nor scored
        sampler = BatchSampler(
            model, vocab, stream_generators(rep, streams), length, keep_text=False, score=False
        )
        begin = time.perf_counter()
        n = sum(len(active) for active, _ in sampler.steps())
        rates.append(n / (time.perf_counter() - begin))
    return statistics.median(rates)


# A child's ru_maxrss starts at its parent's peak (fork copies the parent's page tables and
# exec records the old memory's high-water mark), so training runs are started from this small
# launcher rather than from the benchmark's big process; it prints the exit code and the peak.
_LAUNCHER = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:], stdout=2).returncode; "
    "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def training_peak_rss(corpus: Path, steps: int, run_dir: Path) -> float:
    """Peak RSS in MiB of ``python -m rnncli train`` on ``corpus`` for ``steps`` steps."""
    rnn_train = [sys.executable, "-m", "rnncli", "train", str(corpus), "--out", str(run_dir)]
    settings = f"--max-steps {steps} --model lstm --hidden-size 128 --num-layers 2 --quiet"
    # the closing evaluation scores 10 batches, not the 20 MB validation split of 200 MB
    settings += " --eval-batches 10"
    command = [sys.executable, "-c", _LAUNCHER, *rnn_train, *settings.split()]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    code, maxrss = done.stdout.split()
    if int(code) != 0:
        raise RuntimeError(f"rnn train failed on {corpus}:\n{done.stderr[-2000:]}")
    return int(maxrss) / (1024 * 1024 if sys.platform == "darwin" else 1024)


def peak_rss_by_corpus_size(sizes_mb, steps: int) -> dict[int, float]:
    """Peak training RSS (MiB) on synthetic Latin-alphabet corpora of each size in MB."""
    peaks = {}
    for size in sizes_mb:
        with tempfile.TemporaryDirectory(prefix="rnncli-bench-rss-") as folder:
            corpus = Path(folder) / f"synthetic-{size}mb.txt"
            write_zipf_text(corpus, LATIN, size * 1_000_000, seed=size)
            peaks[size] = training_peak_rss(corpus, steps, Path(folder) / "run")
    return peaks


def startup_seconds(runs: int) -> float:
    """Median wall time of ``python -m rnncli --help`` in a fresh process."""
    times = []
    for _ in range(runs):
        begin = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "rnncli", "--help"],
            stdout=subprocess.DEVNULL,
            cwd=REPO,
            check=True,
        )
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


# ----------------------------------------------------------------------------------------------


class Report:
    """Results for --json, and the targets with their verdicts for the closing summary."""

    def __init__(self, facts: dict, effort: Effort):
        self.results = {"machine": facts, "effort": asdict(effort)}
        self.targets: list[dict] = []

    def target(self, figure: str, value: str, goal: str, passed: bool) -> str:
        """Record a target; returns ``"target GOAL  PASS|FAIL"`` for the figure's line."""
        self.targets.append({"figure": figure, "value": value, "target": goal, "passed": passed})
        return f"target {goal}  {verdict(passed)}"

    def summary(self) -> None:
        passed = sum(t["passed"] for t in self.targets)
        print(
            f"\nTargets: {passed} of {len(self.targets)} passed "
            f"(load average now {os.getloadavg()[0]:.2f})"
        )
        for t in self.targets:
            print(f"  {verdict(t['passed'])}  {t['figure']:26} {t['value']:26} {t['target']}")
        self.results["targets"] = self.targets


def speed_section(configs, corpora, effort: Effort, report: Report) -> None:
    parity = report.results["parity"]
    speed = report.results["speed"] = {}
    print(
        f"\nTraining speed in chars/s (B={BATCH}, T={SEQ}, Adam, clip 5) over {effort.rounds} "
        f"interleaved rounds of ~{effort.round_s:g} s;\n  ratio = rnncli / torch per round; "
        f"medians of the quiet rounds (other processes used <= {BUSY_CORES:g} core),\n  "
        "of all rounds if none was quiet"
    )
    print(f"  {'config':16} {'V':>5} {'rnncli':>8} {'torch':>8} {'ratio':>6} {'(range)':11} quiet")
    for config in configs:
        if not parity[config.cell]["passed"]:
            print(f"  {config.name:16} not timed: {config.cell} parity failed")
            continue
        data, vocab = corpora[config.corpus]
        workers = report.results["machine"]["threads_requested"]
        r = speed[config.name] = time_config(config, data, len(vocab), effort, workers)
        goal = report.target(
            f"speed {config.name}",
            f"{r['ratio']:.2f}x PyTorch" + ("" if r["quiet_rounds"] else " (disturbed)"),
            f">= {TARGET_SPEEDUP:g}x",
            r["ratio"] >= TARGET_SPEEDUP,
        )
        low, high = r["ratio_range"]
        print(
            f"  {config.name:16} {len(vocab):5} {r['rnncli_chars_per_s']:8,.0f} "
            f"{r['torch_chars_per_s']:8,.0f} {r['ratio']:5.2f}x {f'({low:.2f}-{high:.2f})':11} "
            f"{r['quiet_rounds']}/{effort.rounds}  {goal}"
        )


def against_lstm_section(configs, corpora, effort: Effort, report: Report) -> None:
    """Cells with no recurrent product (minGRU, minLSTM) against rnncli's LSTM of their size."""
    configs = [c for c in configs if not cells.get(c.cell).recurrent]
    if not configs:
        return
    speed = report.results["against_lstm"] = {}
    print(
        f"\nTraining speed against rnncli's LSTM of the same width and depth, in chars/s "
        f"(B={BATCH}, T={SEQ}), both with rnncli;\n  ratio = cell / lstm per round, medians as "
        "above"
    )
    print(f"  {'config':16} {'cell':>8} {'lstm':>8} {'ratio':>6} {'(range)':11} quiet")
    for config in configs:
        data, vocab = corpora[config.corpus]
        workers = report.results["machine"]["threads_requested"]
        r = speed[config.name] = time_against_lstm(config, data, len(vocab), effort, workers)
        goal = ""  # the target is minGRU's; minLSTM's row is for comparison
        if config.cell == "mingru":
            goal = report.target(
                f"{config.name} vs lstm",
                f"{r['ratio']:.2f}x lstm" + ("" if r["quiet_rounds"] else " (disturbed)"),
                f">= {TARGET_OVER_LSTM:g}x",
                r["ratio"] >= TARGET_OVER_LSTM,
            )
        low, high = r["ratio_range"]
        print(
            f"  {config.name:16} {r['chars_per_s']:8,.0f} {r['lstm_chars_per_s']:8,.0f} "
            f"{r['ratio']:5.2f}x {f'({low:.2f}-{high:.2f})':11} {r['quiet_rounds']}/"
            f"{effort.rounds}  {goal}"
        )


def flops_section(vocab_size: int, effort: Effort, report: Report) -> None:
    c = FLOPS_CONFIG
    chars_per_s = report.results["speed"][c.name]["rnncli_chars_per_s"]
    flops = train_flops_per_char(c.cell, c.num_layers, c.hidden_size, vocab_size)
    peak = gemm_peak(effort.gemm_reps)
    fraction = flops * chars_per_s / peak
    report.results["flops"] = {
        "flops_per_char": flops,
        "rate": flops * chars_per_s,
        "gemm_peak": peak,
        "fraction_of_peak": fraction,
    }
    goal = report.target(
        f"FLOP rate {c.name}",
        f"{fraction:.0%} of GEMM peak",
        f">= {TARGET_PEAK:.0%}",
        fraction >= TARGET_PEAK,
    )
    print(
        f"\nFLOP rate, rnncli {c.name}: {flops / 1e6:.2f} MFLOP/char x {chars_per_s:,.0f} "
        f"chars/s = {flops * chars_per_s / 1e9:.1f} GFLOP/s; float32 GEMM peak (2048^2 numpy "
        f"matmul, best of {effort.gemm_reps}) {peak / 1e9:.1f} GFLOP/s: {fraction:.0%}  {goal}"
    )


def sampling_section(vocab: Vocab, effort: Effort, report: Report) -> None:
    rates = {n: sampling_speed(vocab, n, effort.sample_chars, effort.sample_reps)
             for n in SAMPLING_STREAMS}  # fmt: skip
    report.results["sampling_chars_per_s"] = rates[1]
    report.results["sampling_chars_per_s_by_streams"] = {str(n): r for n, r in rates.items()}
    goal = report.target(
        "sampling lstm 2x256",
        f"{rates[1]:,.0f} chars/s",
        f">= {TARGET_SAMPLING:,}",
        rates[1] >= TARGET_SAMPLING,
    )
    print(
        f"\nSampling, lstm 2x256, one stream, {effort.sample_chars} chars (median of "
        f"{effort.sample_reps}): {rates[1]:,.0f} chars/s  {goal}"
    )
    for n in SAMPLING_STREAMS[1:]:
        print(f"  {n} streams as one batch: {rates[n]:,.0f} chars/s, {rates[n] / rates[1]:.1f}x")
    top = SAMPLING_STREAMS[-1]
    speedup = rates[top] / rates[1]
    goal = report.target(
        f"sampling {top} streams",
        f"{speedup:.1f}x one stream",
        f">= {TARGET_BATCH_SAMPLING}x",
        speedup >= TARGET_BATCH_SAMPLING,
    )
    print(f"  {top} streams against one: {speedup:.1f}x  {goal}")


def rss_section(effort: Effort, report: Report) -> None:
    peaks = peak_rss_by_corpus_size((1, 200), effort.rss_steps)
    growth = peaks[200] / peaks[1]
    report.results["peak_rss_mib"] = {f"{size} MB": peak for size, peak in peaks.items()}
    goal = report.target(
        "peak RSS 200 MB / 1 MB",
        f"{growth:.2f}x",
        f"<= {TARGET_RSS_GROWTH:g}x",
        growth <= TARGET_RSS_GROWTH,
    )
    print(
        f"\nPeak RSS of `python -m rnncli train --max-steps {effort.rss_steps}` (lstm 2x128): "
        f"1 MB corpus {peaks[1]:.0f} MiB, 200 MB corpus {peaks[200]:.0f} MiB, "
        f"{growth:.2f}x  {goal}"
    )


def startup_section(effort: Effort, report: Report) -> None:
    seconds = report.results["startup_s"] = startup_seconds(effort.help_runs)
    print(
        f"\nStart-up of `python -m rnncli --help`: {seconds * 1000:.0f} ms "
        f"(median of {effort.help_runs} runs)"
    )


def main() -> int:
    def options(parser):
        parser.add_argument("--quick", action="store_true", help="fewer rounds: a smoke run")
        parser.add_argument(
            "--only",
            metavar="TEXT",
            default="",
            help="run only the configurations (e.g. 'lstm 2x512', 'cjk') and "
            f"extras ({', '.join(EXTRAS)}) whose name contains TEXT",
        )

    args, facts = start(
        "Speed benchmarks of rnncli against PyTorch on the CPU.", "tests.bench.run_bench", options
    )
    effort = QUICK if args.quick else FULL
    configs = [c for c in CONFIGS if args.only in c.name]
    extras = [e for e in EXTRAS if args.only in e]
    report = Report(facts, effort)
    report.results["parity"] = check_parity(
        sorted({c.cell for c in configs}, key=list(breakdown.GATES).index)
    )
    with tempfile.TemporaryDirectory(prefix="rnncli-bench-") as folder:
        corpora = {"shakespeare": load_text(args.corpus, Path(folder) / "cache")}
        if any(c.corpus == "cjk" for c in configs):
            path = Path(folder) / "zipf-cjk.txt"
            write_zipf_text(path, CJK, 1_000_000)
            corpora["cjk"] = load_text(path, Path(folder) / "cache")
        vocab = corpora["shakespeare"][1]
        if configs:
            speed_section(configs, corpora, effort, report)
            against_lstm_section(configs, corpora, effort, report)
        if FLOPS_CONFIG.name in report.results.get("speed", {}):
            flops_section(len(vocab), effort, report)
        del corpora  # release the memory maps before their folder goes
    if "sampling" in extras:
        sampling_section(vocab, effort, report)
    if "rss" in extras:
        rss_section(effort, report)
    if "startup" in extras:
        startup_section(effort, report)
    report.summary()
    publish(args, SECTION_TITLE, facts, report.targets)
    if args.json:
        args.json.write_text(json.dumps(report.results, indent=2) + "\n", encoding="utf-8")
        print(f"results written to {args.json}")
    return 0 if all(r["passed"] for r in report.results["parity"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
