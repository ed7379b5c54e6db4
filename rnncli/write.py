"""``rnn write``: writing together with a model, turn by turn.

The user types text; the model reads it and continues it, streaming. The hidden state carries
over from turn to turn, through the user's text and the model's own, so the model conditions on
everything said since the start (or the last ``/reset``). Lines beginning with ``/`` are
commands (``COMMANDS``). Typed text understands the escapes of ``text.unescape`` (end a line
with ``\\n`` to send a newline); ``//`` at the start sends one ``/``.

On a terminal: a prompt, line editing and history through ``readline`` where Python has it,
Ctrl-C stops a continuation (at a character boundary, the state intact) and Ctrl-D or ``/quit``
leaves. From a pipe: one turn per line, each continuation on stdout ending with a newline
(added unless it ends with one: with a stop text of ``\n`` every turn is one line), messages
on stderr, and a bad command ends the session with exit status 2, so that a script
cannot go on with settings it did not get.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .errors import CommandError
from .model import Model
from .sample import SAMPLING_RULES, Stops, drawer, start_text
from .text import for_stream, for_terminal, unescape, visible
from .vocab import Vocab

MAX_LENGTH = 100_000  # characters of one continuation
MAX_LINE = 1_000_000  # characters of one line read from a pipe
CONTEXT_KEPT = 1_000  # characters of the conversation kept for stop texts to reach back into


@dataclass
class Settings:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    length: int = 200
    stops: list[str] = field(default_factory=list)

    def describe(self) -> str:
        stops = ", ".join(visible(s) for s in self.stops) or "none"
        return (
            f"temperature {self.temperature:g}, top-k {self.top_k or 'off'}, "
            f"top-p {self.top_p:g}, length {self.length}, stop texts: {stops}"
        )


class Session:
    """The model's side of the conversation: its state, its settings and its random stream."""

    def __init__(
        self,
        model: Model,
        vocab: Vocab,
        settings: Settings,
        seed: int | None,
        write: Callable[[str], None],
        warn: Callable[[str], None],
    ):
        self.model, self.vocab, self.settings = model, vocab, settings
        self.rng = np.random.default_rng(seed)
        self.write, self.warn = write, warn
        self.reset()

    def reset(self) -> None:
        """Forget everything: the state of a model that has just read a newline."""
        self.stepper = self.model.stepper(1)
        self.context = ""
        self._read(start_text(self.vocab, ""))

    def _read(self, text: str) -> None:
        for i in self.vocab.encode(text):
            self.logits = self.stepper.step(np.array([i]))
        self.context = (self.context + text)[-CONTEXT_KEPT:]

    def turn(self, text: str, interrupted: Callable[[], bool] = lambda: False) -> str:
        """Read ``text`` (characters outside the vocabulary reported and dropped), then write
        and return the continuation: ``length`` characters at most, fewer if a stop text ends it
        (it may begin in ``text`` or earlier) or ``interrupted()`` turns true."""
        unknown = self.vocab.unknown(text)
        if unknown:
            shown = ", ".join(repr(ch) for ch in unknown[:20])
            self.warn(f"left out characters outside the vocabulary: {shown}")
        self._read(self.vocab.drop_unknown(text))
        s = self.settings
        draw = drawer(s.temperature, s.top_k, s.top_p, False, len(self.vocab))
        stops = Stops(s.stops)
        tail, out = stops.tail(self.context), []
        for _ in range(s.length):
            if interrupted():
                break
            picked, _ = draw(self.logits, np.array([self.rng.random()]))
            char = self.vocab.chars[picked[0]]
            self.write(char)
            out.append(char)
            self.logits = self.stepper.step(picked)  # the model reads its own text too
            if stops:
                tail, hit = stops.advance(tail, char)
                if hit is not None:
                    break
        continuation = "".join(out)
        self.context = (self.context + continuation)[-CONTEXT_KEPT:]
        return continuation


# -- commands ------------------------------------------------------------------------------------


def _number(value: str, what: str, setting: str) -> float:
    """``value`` read as a number and checked by the rule ``rnn sample``'s option and the Python
    API check ``setting`` with (``sample.SAMPLING_RULES``)."""
    try:
        number = float(value)
    except ValueError:
        raise CommandError(f"{what} must be a number, got {value!r}") from None
    try:
        return SAMPLING_RULES[setting].check(number)
    except CommandError as err:
        raise CommandError(f"{what} {err}") from None


def _whole(value: str, what: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise CommandError(f"{what} must be a whole number, got {value!r}") from None
    if not low <= number <= high:
        raise CommandError(f"{what} must be from {low:,} to {high:,}, got {value!r}")
    return number


def _temp(session: Session, arg: str) -> str:
    session.settings.temperature = _number(arg, "temperature", "temperature")
    return f"temperature {session.settings.temperature:g}"


def _top_k(session: Session, arg: str) -> str:
    session.settings.top_k = _whole(arg, "top-k", 0, len(session.vocab))
    return f"top-k {session.settings.top_k or 'off'}"


def _top_p(session: Session, arg: str) -> str:
    session.settings.top_p = _number(arg, "top-p", "top_p")
    return f"top-p {session.settings.top_p:g}"


def _length(session: Session, arg: str) -> str:
    session.settings.length = _whole(arg, "length", 0, MAX_LENGTH)
    return f"length {session.settings.length}"


def _stop(session: Session, arg: str) -> str:
    try:
        text = unescape(arg)
    except ValueError as err:
        raise CommandError(str(err)) from None
    if not text:
        raise CommandError("a stop text cannot be empty (/nostop removes them all)")
    if text not in session.settings.stops:
        session.settings.stops.append(text)
    return "stop texts: " + ", ".join(visible(s) for s in session.settings.stops)


def _nostop(session: Session, arg: str) -> str:
    session.settings.stops.clear()
    return "stop texts: none"


def _reset(session: Session, arg: str) -> str:
    session.reset()
    return "state reset: the model has forgotten the conversation"


def _show(session: Session, arg: str) -> str:
    return session.settings.describe()


def _help(session: Session, arg: str) -> str:
    return "\n".join(f"  /{name}{' ' + usage if usage else ''}: {text}"
                     for name, (_, usage, text) in COMMANDS.items())  # fmt: skip


def _quit(session: Session, arg: str) -> str:
    raise EOFError


# name: (function, argument, description); the functions return the line that confirms them
COMMANDS: dict[str, tuple[Callable[[Session, str], str], str, str]] = {
    "temp": (_temp, "T", "sampling temperature, above 0 (below 1: safer, above 1: wilder)"),
    "top-k": (_top_k, "K", "draw from the K most likely characters only (0: all)"),
    "top-p": (_top_p, "P", "draw from the smallest set reaching probability P, in (0, 1]"),
    "length": (_length, "N", f"characters per continuation, 0 to {MAX_LENGTH:,}"),
    "stop": (_stop, "TEXT", "also end a continuation at TEXT (\\n, \\t, \\r, \\\\ understood)"),
    "nostop": (_nostop, "", "remove every stop text"),
    "reset": (_reset, "", "forget the conversation"),
    "show": (_show, "", "the current settings"),
    "help": (_help, "", "this list"),
    "quit": (_quit, "", "leave (Ctrl-D too)"),
}
TAKES_ARGUMENT = {name for name, (_, usage, _) in COMMANDS.items() if usage}


def run_command(session: Session, line: str) -> str:
    """Carry out one ``/command [argument]`` line; CommandError for a bad one, EOFError for
    /quit."""
    name, _, arg = line[1:].partition(" ")
    if name not in COMMANDS:
        raise CommandError(f"unknown command /{name} (/help lists them)")
    if (name in TAKES_ARGUMENT) != bool(arg):
        usage = COMMANDS[name][1]
        raise CommandError(f"usage: /{name}{' ' + usage if usage else ''}")
    return COMMANDS[name][0](session, arg)


def typed_text(line: str) -> str:
    """The text a typed line sends: escapes read, a leading // as one /."""
    try:
        return unescape(line[1:] if line.startswith("//") else line)
    except ValueError as err:
        raise CommandError(str(err)) from None


# -- the two front ends --------------------------------------------------------------------------


def _out(text: str) -> None:
    sys.stdout.write(for_stream(text, sys.stdout))
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(for_terminal(text, keep="\n") + "\n")  # /help spans lines
    sys.stderr.flush()


def interactive(session: Session, banner: str) -> None:
    """The terminal front end: prompt, readline, Ctrl-C stops a continuation."""
    with contextlib.suppress(ImportError):  # where Python has it, input() gains editing
        import readline  # noqa: F401
    _err(banner)
    stopped = {"now": False}

    def on_interrupt(signum, frame):
        stopped["now"] = True

    while True:
        try:
            line = input("> ")
        except KeyboardInterrupt:  # at the prompt: a fresh line, as shells do
            _out("\n")
            continue
        except EOFError:
            _out("\n")
            return
        # From here to the next prompt Ctrl-C only sets the flag: it stops a continuation and
        # never ends the session, however early it comes.
        stopped["now"] = False
        previous = signal.signal(signal.SIGINT, on_interrupt)
        try:
            if line.startswith("/") and not line.startswith("//"):
                _err(run_command(session, line))
                continue
            continuation = session.turn(typed_text(line), lambda: stopped["now"])
        except CommandError as err:
            _err(f"rnn: {err}")
            continue
        except EOFError:
            return
        finally:
            signal.signal(signal.SIGINT, previous)
        if not continuation.endswith("\n") or stopped["now"]:
            _out("\n")  # the prompt on a line of its own (the terminal echoes the ^C itself)


def scripted(session: Session, lines) -> None:
    """The pipe front end: one turn per line; a bad line ends it with CommandError."""
    while True:
        line = lines.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE and not line.endswith("\n"):
            raise CommandError(f"a line longer than {MAX_LINE:,} characters")
        line = line.removesuffix("\n")
        if line.startswith("/") and not line.startswith("//"):
            try:
                run_command(session, line)
            except EOFError:
                return
            continue
        if not session.turn(typed_text(line)).endswith("\n"):
            session.write("\n")


def write_session(
    model: Model, vocab: Vocab, settings: Settings, seed: int | None, banner: str
) -> None:
    """Run ``rnn write`` on the terminal, or on stdin when it is not one."""
    session = Session(model, vocab, settings, seed, _out, lambda msg: _err(f"rnn: {msg}"))
    # Bytes that do not decode become U+FFFD, reported and left out like any unknown character.
    sys.stdin.reconfigure(errors="replace")
    if sys.stdin.isatty():
        interactive(session, banner)
    else:
        scripted(session, sys.stdin)
