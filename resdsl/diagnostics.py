"""Source spans and user-facing errors, rendered rustc-style.

Every error a user can cause is a :class:`ResdslError` carrying one or more
:class:`Diagnostic`; the CLI renders them and exits with status 1. Anything else
escaping the pipeline is an internal bug.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    """A region of a source file: 1-based line/column of its start and end."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int
    text: str = field(default="", repr=False, compare=False)  # the whole file, for rendering

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def source_line(self) -> str:
        # Lark counts only "\n" as a line break; str.splitlines() would also split at form feeds
        # and U+2028 and show the wrong line.
        lines = self.text.split("\n")
        return lines[self.line - 1].rstrip("\r") if 0 < self.line <= len(lines) else ""


@dataclass(frozen=True)
class Diagnostic:
    message: str
    span: Span | None = None
    hint: str | None = None
    notes: tuple[tuple[str, Span | None], ...] = ()

    def render(self, highlight: Highlighter | None = None) -> str:
        """The message as text; with `highlight` (source line -> ANSI-coloured line) in colour.
        The caller brings the highlighter, so the module every error imports imports no lexer."""
        colour = highlight is not None
        # Messages quote file names, paths and source text: anything that could drive a terminal
        # (escape sequences, carriage returns) is shown escaped, never sent raw.
        where = f"{printable(str(self.span))}: " if self.span else ""
        error = "\x1b[1;31merror\x1b[0m" if colour else "error"
        out = [f"{where}{error}: {printable(self.message)}"]
        if self.span:
            out += _excerpt(self.span, highlight)
        for note, span in self.notes:
            out.append(f"   = note: {printable(note)}" + (f" ({printable(str(span))})" if span else ""))
        if self.hint:
            out.append(f"   = help: {printable(self.hint)}")
        return "\n".join(out)


Highlighter = Callable[[str], str]  # a source line -> the same line with ANSI colours

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with control characters (and bidirectional overrides) written as escapes."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _excerpt(span: Span, highlight: Highlighter | None = None) -> list[str]:
    line = span.source_line().rstrip("\r\n").expandtabs(1)
    if not line:
        return []
    gutter = len(str(span.line))
    start = max(span.column - 1, 0)
    if span.end_line == span.line and span.end_column > span.column:
        width = span.end_column - span.column
    else:  # a multi-line span: underline to the end of its first line
        width = max(len(line.rstrip()) - start, 1)
    if len(line) > MAX_EXCERPT:  # a window around the caret
        first = max(start - 40, 0)
        line = ("…" if first else "") + line[first:first + 120] + "…"
        start, width = start - first + (1 if first else 0), min(width, 120 - (start - first))
    if _UNPRINTABLE.search(line):  # shown escaped, the carets moved to match
        start, width = len(printable(line[:start])), max(len(printable(line[start:start + width])), 1)
        shown = line = printable(line)
    elif highlight is not None:
        shown = highlight(line).rstrip("\n")
    else:
        shown = line
    carets = "^" * width
    return [
        f" {span.line:>{gutter}} | {shown}",
        f" {'':>{gutter}} | {' ' * start}" + (f"\x1b[1;31m{carets}\x1b[0m" if highlight else carets),
    ]


MAX_EXCERPT = 160  # longer lines are shown as a window around the caret

PRELUDE = "<prelude>"


def in_prelude(span: Span | None) -> bool:
    return span is not None and span.file == PRELUDE


class ResdslError(Exception):
    """A user error: bad syntax, an impossible network, a missing file."""

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None,
                 notes: tuple[tuple[str, Span | None], ...] = ()) -> None:
        super().__init__(message)
        self.diagnostic = Diagnostic(message, span, hint, notes)

    def render(self, highlight: Highlighter | None = None) -> str:
        return self.diagnostic.render(highlight)


class OptionError(ResdslError):
    """A user error about library options (`layout`, `winograd`, ...), phrased without naming
    command-line flags; `options` names the parameters involved so a front end can add its own
    spelling of them (the CLI adds `--layout`, ...)."""

    def __init__(self, message: str, options: tuple[str, ...], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.options = options
