"""A stage's `named "b{i + 1}"`: the string split into its text and the expressions between
braces, each expression with the way to move its spans (parsed on its own, it starts at column 1)
to where it is written in the file."""
from __future__ import annotations

from collections.abc import Callable

from .diagnostics import ResdslError, Span

Part = str | tuple[str, Callable[[Span], Span]]


def split_pattern(token: str, span: Span) -> list[Part]:
    """`token` with its quotes: `"b{i + 1}"` -> ["b", ("i + 1", move)]. A string token holds no
    newline, so moving a span is moving its columns."""
    raw, parts, at = token[1:-1], [], 0
    while at < len(raw):
        start = raw.find("{", at)
        if start < 0:
            parts.append(raw[at:])
            break
        end = raw.find("}", start)
        if end < 0:
            column = span.column + 1 + start
            raise ResdslError("`{` without its `}` in a name pattern",
                              Span(span.file, span.line, column, span.line, column + 1, span.text),
                              hint='close it: `named "b{i + 1}"`')
        if start > at:
            parts.append(raw[at:start])
        parts.append((raw[start + 1:end], _mover(span, start + 2)))
        at = end + 1
    if any(isinstance(p, str) and "}" in p for p in parts):
        raise ResdslError("`}` without its `{` in a name pattern", span, hint='write `named "b{i + 1}"`')
    return parts


def _mover(string: Span, offset: int) -> Callable[[Span], Span]:
    """Spans of text parsed from `offset` characters into the string token at `string`."""
    def move(s: Span) -> Span:
        return Span(string.file, string.line, string.column + offset + s.column - 1, string.line,
                    string.column + offset + s.end_column - 1, string.text)
    return move
