"""The `rnn` command: parse options, call the job, report. User errors end in one line on stderr.

Exit codes:

- 0: success;
- 1: a runtime failure: a bad corpus, checkpoint or other file, a failed run or check, a
  non-finite result (``rnn: error: ...``, one line);
- 2: a usage error: a bad option or config value (``rnn: error: ...``, one line; Click's own
  parsing errors, such as an unknown option, keep Click's usage-and-error form);
- 130 / 143: training stopped by SIGINT / SIGTERM (other commands: 130 on Ctrl-C).

Errors travel as ``CliError`` (a ``click.ClickException``) raised by ``fail``; a closed or
broken stdout ends the program quietly. ``--json`` output is strict JSON: a non-finite result
is an error (exit 1), never ``NaN``.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import signal
import sys
from pathlib import Path
from typing import NoReturn

import click

from . import __version__
from . import sweep as sweep_lib  # Optuna itself loads only when a sweep runs
from .analysis import MAX_CHARS
from .beam import beam_search
from .checkpoint import Checkpoint, CheckpointError
from .checkpoint import load_model as open_model
from .config import ConfigError, click_options, overrides_from_kwargs, shape_text
from .dynamic import dynamic_label
from .dynamic import from_options as dynamic_from_options
from .errors import CommandError, CorpusError, Interrupted, OutputError, TrainError
from .evaluate import (
    EVAL_RULES,
    MAX_EVAL_STREAMS,
    bits_per_char,
    check_eval_memory,
    checked_report,
    evaluate_file,
    evaluate_split,
    read_scored_text,
)
from .export import PRECISIONS, ExportError, export_checkpoint
from .facts import checkpoint_facts
from .gradcheck import check_model_gradients
from .model import Model
from .options import (
    SEED,
    TRAIN_SECTIONS,
    FiniteFloatRange,
    Group,
    SectionedCommand,
    config_option,
    dynamic_options,
    ruled,
    sampling_options,
)
from .parallel import WorkerError
from .report.job import REPORT_RULES, write_report
from .rules import check_settings
from .sample import (
    SAMPLING_RULES,
    BatchSampler,
    Stops,
    check_held,
    prime_text,
    stream_generators,
    write_samples,
)
from .tables import surprisal_table, write_table
from .text import for_stream, for_terminal
from .train import default_run_dir, run_training
from .vocab import Vocab
from .write import MAX_LENGTH as MAX_WRITE_LENGTH
from .write import Settings, write_session

MAX_SAMPLES = 10_000
MAX_BEAM = 10_000
LONG_BEAM = 100_000  # --beam x --length from which a search takes long enough for a note


class CliError(click.ClickException):
    """An error the user can act on: Click shows it as one line ``rnn: error: ...`` on stderr and
    exits with ``exit_code`` (1 a failure, 2 a usage error)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(" ".join(message.splitlines()))  # one line, whatever it quotes
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"rnn: error: {for_terminal(self.format_message())}", err=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """End the command with ``message`` as one error line and exit status ``code``."""
    raise CliError(message, code)


def reports_errors(command):
    """Turn the project's errors into one line on stderr and an exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (ConfigError, CommandError) as err:
            raise CliError(str(err), 2) from None
        except (CorpusError, CheckpointError, OutputError, TrainError, WorkerError) as err:
            raise CliError(str(err)) from None
        except OSError as err:  # disk full, permissions: still one line
            message = f"{err.filename}: {err.strerror}" if err.filename else str(err)
            raise CliError(message) from None
        except MemoryError:  # the estimates come first; this is the backstop for the rest
            raise CliError("out of memory; try a smaller input or setting") from None
        except KeyboardInterrupt:
            click.echo("rnn: interrupted", err=True)
            raise click.exceptions.Exit(130) from None

    return wrapper


def echo_json(obj) -> None:
    """Print ``obj`` as one line of strict JSON; a NaN or infinity in it is an error."""
    try:
        text = json.dumps(obj, allow_nan=False)
    except ValueError:
        fail("the result is not finite (NaN or infinity), so it cannot be printed as JSON")
    click.echo(text)


def _shown_path(path: str) -> str:
    """``path`` relative to the working folder when it lies below it (checkpoints record
    absolute paths), else as it is."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def tell_user(line: str) -> None:
    """A note or warning for the user: one line on stderr."""
    click.echo(f"rnn: {for_terminal(line)}", err=True)


def load_model(path: str) -> tuple[Model, Vocab, Checkpoint]:
    """``checkpoint.load_model``: the file a run folder resolves to is named on stderr."""
    return open_model(path, lambda found: tell_user(f"using {found}"))


@click.group(
    cls=Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="rnncli")
def cli():
    """Train character-level RNN, LSTM and GRU language models on the CPU.

    \b
    rnn train corpus.txt              train (settings: --config FILE and options)
    rnn sample runs/corpus            generate text (a run folder: its best.npz)
    rnn write runs/corpus             write together with the model, turn by turn
    rnn eval runs/corpus heldout.txt  score a file (--per-line: its oddest lines)
    """


@cli.command(
    "train",
    cls=SectionedCommand,
    sections=TRAIN_SECTIONS,
    rest="Other settings",
    epilog="""\b
Examples:
  rnn train corpus.txt                  defaults: an LSTM 2x128, into runs/corpus
  rnn train corpus.txt --config my.yaml --max-time 600
                                        settings from a file, one changed, 10 minutes
  rnn train corpus.txt --out runs/corpus --resume --max-steps 20000
                                        continue a run, with a later limit
  rnn train other.txt --init-from runs/corpus --learning-rate 5e-4
                                        fine-tune a trained model on another text""",
)
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="YAML file of settings; options given here override it.",
)
@click.option(
    "--out",
    "run_dir",
    type=click.Path(path_type=Path),
    help="Run folder for config.yaml, metrics.jsonl and checkpoints [default: runs/<corpus name>].",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.npz.")
@click.option(
    "--init-from",
    type=click.Path(path_type=Path),
    help="Start from a checkpoint's weights (fine-tuning): a file, or a run folder (its "
    "best.npz, else last.npz).",
)
@click.option("--force", is_flag=True, help="Replace a run already in --out.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or evaluation lines.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the result as one JSON object (steps, losses, checkpoints, stop reason).",
)
@click_options
@reports_errors
def train_command(
    corpus, config_path, run_dir, resume, init_from, force, quiet, as_json, **options
):
    """Train a model on CORPUS, a text file.

    Settings come from the built-in defaults, then --config, then the options below.
    Progress goes to stderr; checkpoints to RUN/last.npz and RUN/best.npz.
    """
    overrides = overrides_from_kwargs(options)
    run_dir = run_dir or default_run_dir(corpus)
    try:
        result = run_training(
            corpus, run_dir, overrides, config_path, resume, init_from, force, quiet,
            note=lambda note: click.echo(f"note: {for_terminal(note)}", err=True),
        )  # fmt: skip
    except Interrupted as stop:
        click.echo(_stopped(stop, corpus, run_dir), err=True)
        raise click.exceptions.Exit(128 + stop.signum) from None
    if as_json:
        echo_json(result.to_dict())
        return
    best = (
        "no validation split"
        if result.best_val_loss is None
        else f"best val loss {result.best_val_loss:.4f} "
        f"({bits_per_char(result.best_val_loss):.3f} bpc)"
    )
    whole = (
        ""
        if result.val_loss_full is None
        else f"; last.npz on the whole validation split: {result.val_loss_full:.4f} "
        f"({bits_per_char(result.val_loss_full):.3f} bpc)"
    )
    click.echo(
        f"stopped at step {result.step} (epoch {result.epoch:.2f}): {result.reason}; {best}{whole}"
    )
    click.echo(
        f"checkpoints: {result.run_dir / 'last.npz'}"
        + ("" if result.best_val_loss is None else f", {result.run_dir / 'best.npz'}")
    )
    click.echo(f"report: {_command('report', run_dir)}")


def _command(*args) -> str:
    """A shell command line running this program as the user ran it (e.g. .venv/bin/rnn)."""
    prog = sys.argv[0] if sys.argv and sys.argv[0] else "rnn"
    if Path(prog).name == "__main__.py":  # python -m rnncli
        return " ".join([f"{Path(sys.executable).name} -m rnncli", *map(_quoted, args)])
    found = shutil.which(Path(prog).name)  # run through PATH: the name is what was typed
    if found and os.path.exists(prog) and os.path.samefile(found, prog):
        prog = Path(prog).name
    return " ".join(map(_quoted, [prog, *args]))


def _quoted(arg) -> str:
    return shlex.quote(str(arg))


def _stopped(stop: Interrupted, corpus: Path, run_dir: Path) -> str:
    """What a signal left behind, and the command that continues from there."""
    last = run_dir / "last.npz"
    if stop.saved:
        done = f"saved {last}"
    elif last.exists():
        done = f"{last} is as the last save left it"
    else:
        as_run = sys.argv[1:] if sys.argv[1:2] == ["train"] else ["train", corpus]
        again = _command(*as_run)
        return (
            f"rnn: stopped by {stop} before the first checkpoint; nothing to resume. "
            f"Start again with:\n  {again}"
        )
    resume = _command("train", corpus, "--out", run_dir, "--resume")
    return f"rnn: stopped by {stop}; {done}. Resume with:\n  {resume}"


@cli.command("sample")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "-n",
    "--length",
    default=500,
    show_default=True,
    type=ruled(SAMPLING_RULES["length"]),
    help="Characters to generate per sample (at most: a stop text can end it sooner).",
)
@sampling_options()
@click.option("--prime", default="", help="Text to run through the model first; printed too.")
@click.option(
    "--drop-unknown",
    is_flag=True,
    help="Drop prime characters outside the vocabulary instead of refusing.",
)
@click.option("--argmax", is_flag=True, help="Always take the most likely character.")
@click.option(
    "--num-samples",
    default=1,
    show_default=True,
    type=click.IntRange(1, MAX_SAMPLES),
    help="Samples drawn together as one batch, each after a '--- sample i of N ---' line.",
)
@click.option(
    "--beam",
    type=click.IntRange(1, MAX_BEAM),
    help="Beam search with this many hypotheses for the most likely continuation.",
)
@click.option(
    "--length-norm",
    is_flag=True,
    help="With --beam: rank endings by log-probability per character, not in total.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of sample objects.")
@click.pass_context
@reports_errors
def sample_command(
    ctx,
    checkpoint,
    length,
    temperature,
    top_k,
    top_p,
    prime,
    drop_unknown,
    seed,
    argmax,
    stop_texts,
    num_samples,
    beam,
    length_norm,
    as_json,
):
    """Generate text from CHECKPOINT (a file or a run folder), streaming it to stdout."""
    check_sample_options(ctx, length, num_samples, beam, length_norm, as_json)
    model, vocab, _ = load_model(checkpoint)
    prime = prime_text(vocab, prime, drop_unknown)
    stops = Stops(stop_texts)

    def write(text: str) -> None:
        sys.stdout.write(for_stream(text, sys.stdout))
        sys.stdout.flush()  # streaming: every character is out as soon as it is drawn

    if beam is not None:
        if beam * length >= LONG_BEAM:  # the text may come out only at the end: say so first
            click.echo(
                f"rnn: beam search of {beam} hypotheses over {length:,} characters: the text is "
                "written as it becomes certain, which can be only at the end",
                err=True,
            )
        if not as_json:
            write(prime)
        stream = None if as_json else write
        found = beam_search(model, vocab, beam, length, prime, stops, length_norm, stream)
        write(f"[\n{found.to_json()}\n]\n" if as_json else "\n")
        return
    sampler = BatchSampler(
        model,
        vocab,
        stream_generators(seed, num_samples),
        length,
        prime,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        argmax=argmax,
        stops=stops,
        keep_text=as_json,  # plain output is written as drawn, so texts need not be kept
        score=as_json,  # and shows no log-probabilities
    )
    write_samples(sampler, write, as_json)


def check_sample_options(ctx, length, num_samples, beam, length_norm, as_json) -> None:
    """Refuse option combinations that would be ignored or would hold too much in memory."""
    if beam is not None:
        given = [
            "--" + name.replace("_", "-")
            for name in ("temperature", "top_k", "top_p", "seed", "argmax")
            if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT
        ] + (["--num-samples"] if num_samples > 1 else [])
        if given:
            fail(
                f"--beam searches deterministically for the single most likely text and would "
                f"ignore {', '.join(given)}",
                2,
            )
    elif length_norm:
        fail("--length-norm ranks beam search results; it needs --beam", 2)
    if num_samples > 1 or as_json or beam:
        check_held(length, num_samples)


@cli.command("write")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "-n",
    "--length",
    default=200,
    show_default=True,
    type=click.IntRange(0, MAX_WRITE_LENGTH),
    help="Characters per continuation (/length changes it).",
)
@sampling_options(live=True)
@reports_errors
def write_command(checkpoint, length, temperature, top_k, top_p, stop_texts, seed):
    """Write together with CHECKPOINT's model: type text, it continues it.

    \b
    On a terminal: Ctrl-C stops a continuation, Ctrl-D or /quit leaves, /help lists the
    commands (/temp, /top-k, /top-p, /length, /stop, /nostop, /reset, /show).
    From a pipe: one turn per line, each continuation on stdout followed by a newline.
    """
    model, vocab, _ = load_model(checkpoint)
    settings = Settings(temperature, top_k, top_p, length, list(stop_texts))
    banner = (
        f"rnn write: {model.cell} {model.num_layers}x{model.hidden_size}, {len(vocab)} "
        "characters. Type text and press Enter; /help lists commands, Ctrl-C stops the "
        "model, Ctrl-D leaves."
    )
    try:
        write_session(model, vocab, settings, seed, banner)
    except CommandError as err:
        fail(str(err), 2)


@cli.command("eval")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("textfile", required=False, type=click.Path(path_type=Path))
@click.option(
    "--split",
    type=click.Choice(["val", "test"]),
    help="Without TEXTFILE only: score this split of the corpus the model was trained on, from "
    "the run's cache/ or from that file if it is unchanged since training [default: test when "
    "the run kept a test split (test_fraction > 0), else val].",
)
@click.option("--encoding", help="Encoding of TEXTFILE [default: the training encoding].")
@click.option(
    "--batch-size",
    default=50,
    show_default=True,
    type=ruled(EVAL_RULES["batch_size"]),
    help=f"Parallel streams (at most {MAX_EVAL_STREAMS:,}).",
)
@click.option(
    "--seq-length",
    default=100,
    show_default=True,
    type=ruled(EVAL_RULES["seq_length"]),
    help=f"Characters per window (at most {EVAL_RULES['seq_length'].high:,}).",
)
@click.option(
    "--per-char",
    is_flag=True,
    help="Print the surprisal of every character of TEXTFILE (TSV: index, char, bits).",
)
@click.option(
    "--per-line",
    is_flag=True,
    help="Print TEXTFILE's lines from most to least surprising "
    "(TSV: line, bits_per_char, chars, text).",
)
@click.option("--top", type=click.IntRange(min=1), help="With --per-line: the N most surprising.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (per-char/per-line: a list).")
@dynamic_options
@reports_errors
def eval_command(
    checkpoint, textfile, split, encoding, batch_size, seq_length, per_char, per_line, top, as_json,
    **dynamic_kwargs,
):  # fmt: skip
    """Score TEXTFILE (or a split of the training corpus) with CHECKPOINT (a file or a run
    folder).

    Without TEXTFILE the held-out text of the training corpus is read from the run's verified
    cache/ beside the checkpoint, else from the corpus file if its content is unchanged since
    training (same SHA-256). Characters outside the model's vocabulary are skipped and reported.
    """
    check_eval_options(textfile, split, per_char, per_line, top)
    dynamic = dynamic_from_options(**dynamic_kwargs)
    model, vocab, ckpt = load_model(checkpoint)
    check_eval_memory(model, batch_size, seq_length)
    encoding = encoding or ckpt.config["encoding"]
    if per_char or per_line:
        write_surprisal(
            model, vocab, textfile, encoding, batch_size, per_line, top, as_json, dynamic
        )
        return
    if textfile is not None:
        what = str(textfile)
        bar = _bar_label(f"scoring {textfile.name}")
        report = evaluate_file(
            model, vocab, textfile, encoding, batch_size, seq_length, bar, dynamic
        )
    else:
        split = split or ("test" if ckpt.config["test_fraction"] > 0 else "val")
        if ckpt.config[f"{split}_fraction"] == 0:
            fail(f"{checkpoint}: the run kept no {split} split ({split}_fraction is 0)", 2)
        bar = _bar_label(f"scoring the {split} split")
        report = evaluate_split(model, vocab, ckpt, split, batch_size, seq_length, bar, dynamic)
        what = f"{split} split of {for_terminal(_shown_path(ckpt.meta['corpus']))}"
    checked_report(report, what)
    if as_json:
        echo_json(report.to_dict())
        return
    click.echo(f"{what}: {report.chars:,} characters scored" + dynamic_label(dynamic))
    click.echo(
        f"loss {report.loss:.4f} nats/char, {report.bpc:.4f} bits/char, "
        f"perplexity {report.perplexity:.3f}"
    )
    if report.oov:
        listed = ", ".join(f"{ch!r} x{n}" for ch, n in sorted(report.oov.items()))
        click.echo(
            f"skipped {sum(report.oov.values()):,} characters outside the vocabulary: {listed}"
        )


def _bar_label(label: str) -> str | None:
    """``label`` for a progress bar on stderr when it is a terminal; None (no bar) otherwise."""
    return label if sys.stderr.isatty() else None


def check_eval_options(textfile, split, per_char, per_line, top) -> None:
    """Refuse options that contradict each other or would be ignored."""
    if textfile is not None and split is not None:
        fail("--split picks a part of the training corpus; it cannot score TEXTFILE", 2)
    if per_char and per_line:
        fail("choose one of --per-char and --per-line", 2)
    if (per_char or per_line) and textfile is None:
        fail(f"{'--per-char' if per_char else '--per-line'} scores a TEXTFILE; give one", 2)
    if top is not None and not per_line:
        fail("--top ranks the lines of --per-line; it needs --per-line", 2)


def write_surprisal(
    model, vocab, textfile, encoding, streams, per_line, top, as_json, dynamic=None
) -> None:
    """Score TEXTFILE character by character and print the per-char or per-line table."""
    text = read_scored_text(textfile, encoding)
    unknown = vocab.unknown(text)
    if unknown:
        listed = ", ".join(repr(ch) for ch in unknown[:20]) + (", ..." if len(unknown) > 20 else "")
        click.echo(f"rnn: left out characters outside the vocabulary: {listed}", err=True)
    bar = _bar_label(f"scoring {textfile.name}")
    rows, columns = surprisal_table(model, vocab, text, streams, per_line, top, bar, dynamic)
    write_table(rows, columns, as_json, sys.stdout.write)
    sys.stdout.flush()


@cli.command("info")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@reports_errors
def info_command(checkpoint, as_json):
    """Describe CHECKPOINT: settings, size, training progress."""
    model, _, ckpt = load_model(checkpoint)
    info = checkpoint_facts(ckpt, model)
    if as_json:
        echo_json(info)
        return
    shown = dict(info)
    if info["val_loss_full"] is None:  # only last.npz of a run that ended by a limit has one
        del shown["val_loss_full"]
    del shown["elapsed"], shown["checkpoint"]  # the file is named, the time is the report's
    if info["epoch"] is not None:
        shown["epoch"] = f"{info['epoch']:.2f}"
    for key in ("best_val_loss", "val_loss_full"):
        if info[key] is not None:
            shown[key] = f"{info[key]:.4f} nats/char ({bits_per_char(info[key]):.3f} bpc)"
    for key, value in shown.items():
        if key != "config":
            shown_value = f"{value:,}" if isinstance(value, int) else for_terminal(str(value))
            click.echo(f"{key + ':':16}{shown_value}")
    click.echo("config:")
    for key, value in ckpt.config.items():
        click.echo(f"  {key}: {for_terminal(str(value))}")


@cli.command("gradcheck")
@config_option("model", "lstm", dest="cell")
@config_option("num_layers", 2)
@config_option("hidden_size", 6)
@config_option("embedding_size", 0)
@config_option("mlp_size", 0)
@config_option("residual", False)
@config_option("norm", "none")
@config_option("conv_size", 0)
@config_option("dropout", 0.0)
@config_option("seed", 0)
@click.option(
    "--tolerance",
    default=1e-6,
    show_default=True,
    type=FiniteFloatRange(min=0, min_open=True),
    help="Largest relative error that passes (finite, > 0).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@reports_errors
def gradcheck_command(cell, num_layers, hidden_size, dropout, seed, tolerance, as_json, **arch):
    """Check backpropagation against centred finite differences in float64."""
    errors = check_model_gradients(cell=cell, num_layers=num_layers, hidden_size=hidden_size,
                                   dropout=dropout, seed=seed, **arch)  # fmt: skip
    worst = max(errors.values())
    shape = dict(model=cell, num_layers=num_layers, hidden_size=hidden_size, **arch)
    if as_json:
        shape.update(dropout=dropout, seed=seed)
        passed = worst <= tolerance
        echo_json(
            {**shape, "errors": errors, "max_error": worst, "tolerance": tolerance}
            | {"passed": passed}
        )
        if not passed:
            raise click.exceptions.Exit(1)
        return
    width = max(map(len, errors))
    for name, err in errors.items():
        click.echo(f"{name:{width}}  {err:.2e}  {'ok' if err <= tolerance else 'FAIL'}")
    verdict = "passed" if worst <= tolerance else "FAILED"
    click.echo(
        f"{shape_text(shape)}: max relative error {worst:.2e}, tolerance {tolerance:g}: {verdict}"
    )
    if worst > tolerance:
        raise click.exceptions.Exit(1)


@cli.command("report")
@click.argument("checkpoint", metavar="PATH", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="HTML file to write [default: report.html in the run folder].",
)
@click.option(
    "--text",
    "text_file",
    type=click.Path(path_type=Path),
    help="Run the model on this text file [default: the run's held-out text].",
)
@click.option(
    "--chars",
    default=2000,
    show_default=True,
    type=int,
    help=f"Characters of text to look inside the network on (2 to {MAX_CHARS:,}).",
)
@click.option("--length", default=300, show_default=True, type=int, help="Characters per sample.")
@click.option("--seed", default=1, show_default=True, type=SEED, help="Seed of the samples.")
@click.option("--prime", default="", help="Text the samples start from.")
@reports_errors
def report_command(checkpoint, out, text_file, chars, length, seed, prime):
    """Write one self-contained HTML page about the run or checkpoint PATH: the run, its
    training curves, samples at temperatures 0.5, 0.8 and 1.0, and what its units do on a text.
    """
    check_settings(REPORT_RULES, chars=chars, length=length)  # before the checkpoint is read
    model, vocab, ckpt = load_model(checkpoint)
    out, size = write_report(ckpt, model, vocab, out, text_file, chars, length, seed, prime,
                             named=checkpoint, tell=tell_user)  # fmt: skip
    click.echo(f"wrote {out} ({size / 1e6:.2f} MB)")


@cli.command("sweep")
@click.argument("corpus", required=False, type=click.Path(path_type=Path))
@click.option(
    "--space",
    "space_path",
    type=click.Path(path_type=Path),
    help="YAML file mapping config keys to a list of choices or {low, high, log}.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="YAML file of the settings every trial starts from.",
)
@click.option(
    "--trials",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),
    help="Trials this command trains (a study continues across commands).",
)
@click.option(
    "--storage",
    help="Study database URL, e.g. postgresql+psycopg://user@host/db "
    "[default: sqlite:///OUT/study.db].",
)
@click.option("--study", "study_name", help="Study name [default: sweep-<corpus name>].")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Folder of the trials' run folders [default: runs/<study name>].",
)
@click.option(
    "--jobs",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Trials at once on this machine, the cores shared out between them.",
)
@click.option(
    "--sampler",
    default="tpe",
    show_default=True,
    type=click.Choice(sweep_lib.SAMPLERS),
    help="How Optuna picks each trial's settings (grid needs a space of lists only).",
)
@click.option(
    "--pruner",
    default="median",
    show_default=True,
    type=click.Choice(sweep_lib.PRUNERS),
    help="Whether a trial whose validation curve lags the others' median stops early.",
)
@click.option("--summary", is_flag=True, help="Only summarize the study: table, best config, plot.")
@reports_errors
def sweep_command(corpus, space_path, config_path, trials, storage, study_name, out, jobs,
                  sampler, pruner, summary):  # fmt: skip
    """Search settings for CORPUS: train trials of an Optuna study, each a run folder in OUT.

    At the end (or with --summary): the best trials, OUT/best.yaml for `rnn train --config`
    and OUT/trials.svg. Needs the extra: pip install 'rnncli[sweep]'.
    """
    if not summary and (corpus is None or space_path is None):
        fail("rnn sweep needs CORPUS and --space (or --summary to report on a study)", 2)
    ctx = click.get_current_context()
    sweep_options = {"space_path": "--space", "config_path": "--config", "trials": "--trials",
                     "jobs": "--jobs", "sampler": "--sampler", "pruner": "--pruner"}  # fmt: skip
    default = click.core.ParameterSource.DEFAULT
    given = [option for name, option in sweep_options.items()
             if ctx.get_parameter_source(name) is not default]  # fmt: skip
    if summary and given:
        fail(f"--summary only reports on a study; it takes no {given[0]}", 2)
    if summary and study_name is None and corpus is None:
        fail("--summary needs --study (or CORPUS, whose name the default study takes)", 2)
    study_name = study_name or sweep_lib.default_study(corpus)
    out = out or sweep_lib.default_out(study_name)
    storage = storage or sweep_lib.default_storage(out)
    try:
        if not summary:
            job = sweep_lib.Sweep(
                str(corpus), str(space_path), None if config_path is None else str(config_path),
                trials, storage, study_name, str(out), jobs, sampler, pruner,
            )  # fmt: skip
            sweep_lib.run(job)
        result = sweep_lib.summarize(storage, study_name, out)
    except sweep_lib.SweepError as err:
        fail(str(err))
    except Interrupted as stop:
        click.echo(
            f"rnn: stopped by {stop}; the running trial is marked failed, its run folder kept. "
            f"The next `rnn sweep` on study {study_name!r} trains it again from there.",
            err=True,
        )
        raise click.exceptions.Exit(128 + stop.signum) from None
    counts = ", ".join(f"{n} {state}" for state, n in sorted(result.counts.items()))
    click.echo(f"study {result.study!r} in {sweep_lib.shown_url(storage)}: {counts or 'no trials'}")
    click.echo(result.table)
    if result.best_config is not None:
        click.echo(
            f"best config: {result.best_config} (rnn train CORPUS --config {result.best_config})"
        )
    click.echo(f"plot: {result.plot}")


@cli.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="HTML file to write [default: model.html in the checkpoint's folder].",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="float16",
    show_default=True,
    help="How the page stores the weights (int8: one scale per matrix column).",
)
@reports_errors
def export_command(checkpoint, out, precision):
    """Write one self-contained web page that runs CHECKPOINT's model (a file or a run folder)
    in the browser: type a beginning and watch it write, or score a text. It loads nothing."""
    if out is not None and (out.is_dir() or not out.parent.is_dir()):  # before reading
        fail(f"{out}: cannot write the page (no such folder, or {out} is a folder)")
    model, vocab, ckpt = load_model(checkpoint)
    out = out or Path(ckpt.path).parent / "model.html"
    try:
        size = export_checkpoint(ckpt, model, vocab, out, precision)
    except ExportError as err:
        fail(str(err))
    click.echo(f"wrote {out} ({size / 1e6:.2f} MB, weights as {precision})")


def main() -> None:
    # A broken pipe (rnn sample | head) ends quietly, as command-line tools do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if sys.stdout is None:  # started with stdout closed (rnn sample >&-): print nowhere, quietly
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (it lives as long as the process)
    if sys.stdin is None:  # started with stdin closed (rnn write <&-): an empty input
        sys.stdin = open(os.devnull)  # noqa: SIM115 (it lives as long as the process)
    cli(prog_name="rnn")
