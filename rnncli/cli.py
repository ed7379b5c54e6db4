"""The `rnn` command: parse options, call the job, report. User errors end in one line on stderr.

Exit codes: 0 success, 1 a runtime failure (bad corpus, bad checkpoint, failed check),
2 a usage error (bad option or config value), 130/143 training stopped by SIGINT/SIGTERM.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from pathlib import Path

import click

from . import __version__
from .beam import beam_search
from .checkpoint import (
    Checkpoint,
    CheckpointError,
    find_checkpoint,
    load_checkpoint,
    restore_model,
)
from .config import ConfigError, click_options, load_config, overrides_from_kwargs
from .data import CorpusError, Vocab
from .evaluate import (
    bits_per_char,
    eval_memory_bytes,
    evaluate_file,
    evaluate_split,
    line_surprisal,
    most_surprising,
    read_scored_text,
    text_surprisal,
)
from .gradcheck import check_model_gradients
from .model import Model
from .options import MAX_SEED, SEED, FiniteFloatRange, StopText
from .parallel import WorkerError
from .sample import BatchSampler, Stops, stream_generators, write_samples
from .tables import CHAR_COLUMNS, LINE_COLUMNS, char_rows, line_rows, write_table
from .train import Interrupted, TrainError, train
from .write import MAX_LENGTH as MAX_WRITE_LENGTH
from .write import CommandError, Settings, write_session

MAX_SAMPLES = 10_000
MAX_BEAM = 10_000
MAX_HELD_CHARS = 10_000_000  # characters held for --num-samples > 1, --json, --beam
MAX_EVAL_STREAMS = 10_000  # beyond this many streams scoring is no faster, only bigger
MAX_EVAL_SEQ_LENGTH = 10_000


def fail(message: str, code: int = 1) -> None:
    click.echo(f"rnn: error: {message}", err=True)
    sys.exit(code)


def reports_errors(command):
    """Turn the project's errors into one line on stderr and an exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ConfigError as err:
            fail(str(err), 2)
        except (CorpusError, CheckpointError, TrainError, WorkerError) as err:
            fail(str(err))
        except OSError as err:  # disk full, permissions: still one line
            fail(f"{err.filename}: {err.strerror}" if err.filename else str(err))
        except KeyboardInterrupt:
            click.echo("rnn: interrupted", err=True)
            sys.exit(130)

    return wrapper


def load_model(path: str) -> tuple[Model, Vocab, Checkpoint]:
    """The model and vocabulary of a checkpoint (or of a run folder's best, else last,
    checkpoint, named on stderr), checked against each other."""
    found = find_checkpoint(path)
    if found != str(path):
        click.echo(f"rnn: using {found}", err=True)
    ckpt = load_checkpoint(found)
    return restore_model(ckpt), Vocab(ckpt.vocab), ckpt


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="rnncli")
def cli():
    """Train character-level RNN, LSTM and GRU language models on the CPU.

    \b
    rnn train corpus.txt              train (settings: --config FILE and options)
    rnn sample runs/corpus            generate text (a run folder: its best.npz)
    rnn write runs/corpus             write together with the model, turn by turn
    rnn eval runs/corpus heldout.txt  score a file (--per-line: its oddest lines)
    """


@cli.command("train")
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
    help="Start from this checkpoint's weights (fine-tuning).",
)
@click.option("--force", is_flag=True, help="Replace a run already in --out.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or evaluation lines.")
@click_options
@reports_errors
def train_command(corpus, config_path, run_dir, resume, init_from, force, quiet, **options):
    """Train a model on CORPUS, a text file.

    Settings come from the built-in defaults, then --config, then the options below.
    Progress goes to stderr; checkpoints to RUN/last.npz and RUN/best.npz.
    """
    if resume and (config_path or init_from):
        fail(
            "--resume continues a run with its own config and weights; "
            "drop --config/--init-from and override single settings with options",
            2,
        )
    overrides = overrides_from_kwargs(options)
    cfg = load_config(config_path, overrides)
    run_dir = run_dir or Path("runs") / Path(corpus).stem
    try:
        result = train(
            corpus,
            cfg,
            run_dir,
            resume=resume,
            init_from=init_from,
            force=force,
            quiet=quiet,
            overrides=overrides,
        )
    except Interrupted as stop:
        click.echo(
            f"rnn: stopped by {stop}; saved {stop.run_dir / 'last.npz'}. Resume with:\n"
            f"  rnn train {corpus} --out {stop.run_dir} --resume",
            err=True,
        )
        sys.exit(128 + stop.signum)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    best = (
        "no validation split"
        if result.best_val_loss is None
        else f"best val loss {result.best_val_loss:.4f} "
        f"({bits_per_char(result.best_val_loss):.3f} bpc)"
    )
    click.echo(f"stopped at step {result.step} (epoch {result.epoch:.2f}): {result.reason}; {best}")
    click.echo(
        f"checkpoints: {result.run_dir / 'last.npz'}"
        + ("" if result.best_val_loss is None else f", {result.run_dir / 'best.npz'}")
    )


@cli.command("sample")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "-n",
    "--length",
    default=500,
    show_default=True,
    type=click.IntRange(min=0),
    help="Characters to generate per sample (at most: a stop text can end it sooner).",
)
@click.option(
    "-t",
    "--temperature",
    default=1.0,
    show_default=True,
    type=FiniteFloatRange(min=0, min_open=True),
    help="Below 1 is more conservative, above 1 more surprising.",
)
@click.option(
    "--top-k",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Draw only from the k most likely characters (0: all).",
)
@click.option(
    "--top-p",
    default=1.0,
    show_default=True,
    type=FiniteFloatRange(min=0, max=1, min_open=True),
    help="Draw only from the smallest set of characters whose probability reaches p.",
)
@click.option("--prime", default="", help="Text to run through the model first; printed too.")
@click.option(
    "--drop-unknown",
    is_flag=True,
    help="Drop prime characters outside the vocabulary instead of refusing.",
)
@click.option(
    "--seed",
    type=SEED,
    help=f"Random seed, 0 to {MAX_SEED}: the same seed gives the same text.",
)
@click.option("--argmax", is_flag=True, help="Always take the most likely character.")
@click.option(
    "--stop",
    "stop_texts",
    multiple=True,
    type=StopText(),
    help="End a sample once it ends with TEXT (kept); repeatable; \\n, \\t, \\r, \\\\ understood.",
)
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
    unknown = vocab.unknown(prime)
    if unknown and not drop_unknown:
        fail(
            f"--prime has characters outside the model's vocabulary: {''.join(unknown)!r} "
            "(pass --drop-unknown to leave them out)",
            2,
        )
    prime = vocab.drop_unknown(prime)
    stops = Stops(stop_texts)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()  # streaming: every character is out as soon as it is drawn

    if beam is not None:
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
    if (num_samples > 1 or as_json or beam) and num_samples * length > MAX_HELD_CHARS:
        fail(
            f"--num-samples x --length is at most {MAX_HELD_CHARS:,} characters with several "
            f"samples, --json or --beam (texts are held in memory), got {num_samples * length:,}",
            2,
        )


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
@click.option(
    "-t",
    "--temperature",
    default=1.0,
    show_default=True,
    type=FiniteFloatRange(min=0, min_open=True),
    help="Sampling temperature (/temp changes it).",
)
@click.option("--top-k", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--top-p", default=1.0, show_default=True, type=FiniteFloatRange(0, 1, min_open=True))
@click.option(
    "--stop",
    "stop_texts",
    multiple=True,
    type=StopText(),
    help="End a continuation at TEXT; repeatable (/stop adds one).",
)
@click.option("--seed", type=SEED, help="Random seed, for a session that can be replayed.")
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
    help="Without TEXTFILE: score this split of the corpus the model was trained on "
    "[default: test if the run kept one, else val].",
)
@click.option("--encoding", help="Encoding of TEXTFILE [default: the training encoding].")
@click.option(
    "--batch-size",
    default=50,
    show_default=True,
    type=click.IntRange(1, MAX_EVAL_STREAMS),
    help=f"Parallel streams (at most {MAX_EVAL_STREAMS:,}).",
)
@click.option(
    "--seq-length",
    default=100,
    show_default=True,
    type=click.IntRange(1, MAX_EVAL_SEQ_LENGTH),
    help=f"Characters per window (at most {MAX_EVAL_SEQ_LENGTH:,}).",
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
@reports_errors
def eval_command(
    checkpoint, textfile, split, encoding, batch_size, seq_length, per_char, per_line, top, as_json
):
    """Score TEXTFILE (or a split of the training corpus) with CHECKPOINT (a file or a run
    folder).

    Characters outside the model's vocabulary are skipped and reported.
    """
    check_eval_options(textfile, split, per_char, per_line, top)
    model, vocab, ckpt = load_model(checkpoint)
    check_eval_memory(model, batch_size, seq_length)
    encoding = encoding or ckpt.config["encoding"]
    if per_char or per_line:
        write_surprisal(model, vocab, textfile, encoding, batch_size, per_line, top, as_json)
        return
    if textfile is not None:
        report = evaluate_file(model, vocab, textfile, encoding, batch_size, seq_length)
        what = str(textfile)
    else:
        split = split or ("test" if ckpt.config["test_fraction"] > 0 else "val")
        if ckpt.config[f"{split}_fraction"] == 0:
            fail(f"{checkpoint}: the run kept no {split} split ({split}_fraction is 0)", 2)
        report = evaluate_split(
            model,
            vocab,
            ckpt.config,
            ckpt.meta["corpus"],
            split,
            Path(ckpt.path).parent / "cache",
            batch_size,
            seq_length,
        )
        what = f"{split} split of {ckpt.meta['corpus']}"
    if report.chars == 0:
        fail(f"{what}: no characters to score", 1)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    click.echo(f"{what}: {report.chars:,} characters scored")
    click.echo(
        f"loss {report.loss:.4f} nats/char, {report.bpc:.4f} bits/char, "
        f"perplexity {report.perplexity:.3f}"
    )
    if report.oov:
        listed = ", ".join(f"{ch!r} x{n}" for ch, n in sorted(report.oov.items()))
        click.echo(
            f"skipped {sum(report.oov.values()):,} characters outside the vocabulary: {listed}"
        )


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


def check_eval_memory(model: Model, batch_size: int, seq_length: int) -> None:
    """Refuse a window too large for this machine before allocating it."""
    need, have = eval_memory_bytes(model, batch_size, seq_length), physical_memory()
    if have and need > have // 2:
        fail(
            f"--batch-size {batch_size} x --seq-length {seq_length} needs about "
            f"{need / 2**30:.1f} GiB for this model, over half of this machine's "
            f"{have / 2**30:.1f} GiB; use smaller values",
            2,
        )


def physical_memory() -> int:
    """Bytes of memory of this machine, 0 where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def write_surprisal(model, vocab, textfile, encoding, streams, per_line, top, as_json) -> None:
    """Score TEXTFILE character by character and print the per-char or per-line table."""
    text = read_scored_text(textfile, encoding)
    unknown = vocab.unknown(text)
    if unknown:
        listed = ", ".join(repr(ch) for ch in unknown[:20]) + (", ..." if len(unknown) > 20 else "")
        click.echo(f"rnn: left out characters outside the vocabulary: {listed}", err=True)
    bits = text_surprisal(model, vocab, text, streams)

    def write(piece: str) -> None:
        sys.stdout.write(piece)

    if per_line:
        ranked = most_surprising(line_surprisal(text, bits))
        rows = line_rows(ranked if top is None else ranked[:top])
        write_table(rows, LINE_COLUMNS, as_json, write)
    else:
        write_table(char_rows(text, bits), CHAR_COLUMNS, as_json, write)
    sys.stdout.flush()


@cli.command("info")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@reports_errors
def info_command(checkpoint, as_json):
    """Describe CHECKPOINT: settings, size, training progress."""
    model, vocab, ckpt = load_model(checkpoint)
    meta = ckpt.meta
    info = {
        "format_version": ckpt.format_version,
        "rnncli_version": meta.get("rnncli_version"),
        "model": f"{model.cell} {model.num_layers}x{model.hidden_size}",
        "parameters": model.num_params,
        "vocab_size": len(vocab),
        "dtype": str(model.params["out.W"].dtype),
        "step": meta.get("step"),
        "epoch": meta.get("epoch"),
        "best_val_loss": meta.get("best_val_loss"),
        "corpus": meta.get("corpus"),
        "config": ckpt.config,
    }
    if as_json:
        click.echo(json.dumps(info))
        return
    shown = {**info, "epoch": f"{info['epoch']:.2f}"}
    if info["best_val_loss"] is not None:
        loss = info["best_val_loss"]
        shown["best_val_loss"] = f"{loss:.4f} nats/char ({bits_per_char(loss):.3f} bpc)"
    for key, value in shown.items():
        if key != "config":
            click.echo(
                f"{key + ':':16}{value:,}" if isinstance(value, int) else f"{key + ':':16}{value}"
            )
    click.echo("config:")
    for key, value in ckpt.config.items():
        click.echo(f"  {key}: {value}")


@cli.command("gradcheck")
@click.option(
    "--model",
    "cell",
    type=click.Choice(Model.CELLS),
    default="lstm",
    show_default=True,
    help="Cell type.",
)
@click.option("--num-layers", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--hidden-size", default=6, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--dropout",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1, max_open=True),
    help="Dropout, with one fixed mask for all evaluations.",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--tolerance",
    default=1e-6,
    show_default=True,
    type=float,
    help="Largest relative error that passes.",
)
@reports_errors
def gradcheck_command(cell, num_layers, hidden_size, dropout, seed, tolerance):
    """Check backpropagation against centred finite differences in float64."""
    errors = check_model_gradients(
        cell=cell, num_layers=num_layers, hidden_size=hidden_size, dropout=dropout, seed=seed
    )
    width = max(map(len, errors))
    for name, err in errors.items():
        click.echo(f"{name:{width}}  {err:.2e}  {'ok' if err <= tolerance else 'FAIL'}")
    worst = max(errors.values())
    verdict = "passed" if worst <= tolerance else "FAILED"
    click.echo(
        f"{cell} {num_layers}x{hidden_size}: max relative error {worst:.2e}, "
        f"tolerance {tolerance:g}: {verdict}"
    )
    if worst > tolerance:
        sys.exit(1)


def main() -> None:
    # A broken pipe (rnn sample | head) ends quietly, as command-line tools do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if sys.stdout is None:  # started with stdout closed (rnn sample >&-): nowhere to write
        fail("stdout is closed", 1)
    cli(prog_name="rnn")
