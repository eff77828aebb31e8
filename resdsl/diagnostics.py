"""Source spans and user-facing errors, rendered rustc-style.

Every error a user can cause is a :class:`ResdslError` carrying one or more
:class:`Diagnostic`; the CLI renders them and exits with status 1. Anything else
escaping the pipeline is an internal bug.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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
        lines = self.text.splitlines()
        return lines[self.line - 1] if 0 < self.line <= len(lines) else ""


@dataclass(frozen=True)
class Diagnostic:
    message: str
    span: Span | None = None
    hint: str | None = None
    notes: tuple[tuple[str, Span | None], ...] = ()

    def render(self, colour: bool = False) -> str:
        where = f"{self.span}: " if self.span else ""
        error = "\x1b[1;31merror\x1b[0m" if colour else "error"
        out = [f"{where}{error}: {self.message}"]
        if self.span:
            out += _excerpt(self.span, colour)
        for note, span in self.notes:
            out.append(f"   = note: {note}" + (f" ({span})" if span else ""))
        if self.hint:
            out.append(f"   = help: {self.hint}")
        return "\n".join(out)


def _excerpt(span: Span, colour: bool = False) -> list[str]:
    line = span.source_line().rstrip("\r\n").expandtabs(1)
    if not line:
        return []
    gutter = len(str(span.line))
    start = max(span.column - 1, 0)
    if span.end_line == span.line and span.end_column > span.column:
        width = span.end_column - span.column
    else:  # a multi-line span: underline to the end of its first line
        width = max(len(line.rstrip()) - start, 1)
    shown = line
    if colour:
        from .highlight import highlight
        shown = highlight(line).rstrip("\n")
    carets = "^" * width
    return [
        f" {span.line:>{gutter}} | {shown}",
        f" {'':>{gutter}} | {' ' * start}" + (f"\x1b[1;31m{carets}\x1b[0m" if colour else carets),
    ]


PRELUDE = "<prelude>"


def in_prelude(span: Span | None) -> bool:
    return span is not None and span.file == PRELUDE


class ResdslError(Exception):
    """A user error: bad syntax, an impossible network, a missing file."""

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None,
                 notes: tuple[tuple[str, Span | None], ...] = ()) -> None:
        super().__init__(message)
        self.diagnostic = Diagnostic(message, span, hint, notes)

    def render(self, colour: bool = False) -> str:
        return self.diagnostic.render(colour)


def read_source(path: str | Path, span: Span | None = None) -> str:
    """Read a spec file, turning OS errors into located user errors."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResdslError(f"file not found: {path}", span,
                          hint="check the path; includes are relative to the including file") from None
    except UnicodeDecodeError as exc:
        raise ResdslError(f"{path} is not UTF-8 text ({exc.reason})", span) from None
    except OSError as exc:
        raise ResdslError(f"cannot read {path}: {exc.strerror}", span) from None


class OptionError(ResdslError):
    """A user error about library options (`layout`, `winograd`, ...), phrased without naming
    command-line flags; `options` names the parameters involved so a front end can add its own
    spelling of them (the CLI adds `--layout`, ...)."""

    def __init__(self, message: str, options: tuple[str, ...], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.options = options
