"""Typing awkward characters in and showing them back: backslash escapes both ways.

``unescape`` reads what users type for stop texts and ``rnn write`` turns; ``visible`` writes
characters into one-line table cells, so that every character can be told apart.
"""

from __future__ import annotations

# What a backslash followed by this character stands for, and back.
ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
_SHOWN = {char: "\\" + key for key, char in ESCAPES.items()}


def unescape(text: str) -> str:
    """``text`` with ``\\n``, ``\\t``, ``\\r`` and ``\\\\`` replaced by the characters they stand
    for; ValueError for any other backslash sequence (a typo should not pass silently)."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            key = text[i + 1 : i + 2]
            if key not in ESCAPES:
                shown = "\\" + key if key else "a trailing \\"
                raise ValueError(f"unknown escape {shown} (use \\n, \\t, \\r or \\\\)")
            out.append(ESCAPES[key])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def visible(text: str, space: bool = False) -> str:
    """``text`` on one line with every character distinguishable: ``\\n``, ``\\t``, ``\\r``,
    ``\\\\``, other unprintable characters as ``\\xHH``/``\\uHHHH``/``\\UHHHHHHHH``, and a space
    as ``\\s`` when ``space`` (a lone space cell would look empty)."""
    out = []
    for ch in text:
        if ch in _SHOWN:
            out.append(_SHOWN[ch])
        elif ch == " ":
            out.append("\\s" if space else " ")
        elif not ch.isprintable():
            out.append(repr(ch)[1:-1])  # Python's own \x.., \u.... or \U........ form
        else:
            out.append(ch)
    return "".join(out)


def for_terminal(text: str, keep: str = "") -> str:
    """``text`` from a file (a path, a corpus name, a version, a character, a model's output)
    made safe to print: every character that is not printable (C0 and C1 controls, ESC and so
    terminal escapes such as OSC 52, NUL, lone surrogates, bidirectional overrides, line
    separators) becomes its ``\\x..``/``\\u....`` escape, except those in ``keep``.

    The one escaping of untrusted strings for the terminal: what a stranger's file holds can
    neither drive the terminal nor make a print fail on an unencodable character."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in keep else repr(ch)[1:-1] for ch in text)


def for_stream(text: str, stream) -> str:
    """Generated ``text`` (a model's output: characters of a stranger's vocabulary) as it should
    go to ``stream``: through ``for_terminal`` on a terminal, keeping newlines and tabs, and as
    it is into a file or a pipe, where the exact text is the product."""
    isatty = getattr(stream, "isatty", None)
    return for_terminal(text, keep="\n\t") if isatty is not None and isatty() else text
