"""The line formatter: calls, nn.Sequential and signatures written within the line limit, broken
as black breaks them, and text made safe for a docstring."""
from __future__ import annotations

LINE_LIMIT = 110  # the project's own (pyproject.toml)


def call(head: str, args: list[str], indent: int, one_per_line: bool = False) -> list[str]:
    """`head(a, b)` on one line where it fits at `indent`, else the arguments on continuation
    lines (packed, or one a line), black's way. Lines are relative to `indent`."""
    one = f"{head}({', '.join(args)})"
    if indent + len(one) <= LINE_LIMIT:
        return [one]
    lines, current = [f"{head}("], ""
    for arg in args:
        piece = arg + ","
        if current and (one_per_line or indent + 4 + len(current) + 1 + len(piece) > LINE_LIMIT):
            lines.append("    " + current)
            current = piece
        else:
            current = f"{current} {piece}" if current else piece
    return lines + ["    " + current, ")"]


class Nested(list):
    """The items of an nn.Sequential inside an nn.Sequential (torchvision's `features.0`)."""


def sequential_of(target: str, ctors: list[tuple[str, list]], indent: int = 8) -> list[str]:
    """`target = nn.Sequential(` with one layer a line (or a call broken over several, or a nested
    nn.Sequential of its own lines), then `)`."""
    lines = [f"{target} = nn.Sequential(" if target else "nn.Sequential("]
    for ctor, args in ctors:
        inner = sequential_of("", args, indent + 4) if isinstance(args, Nested) else call(ctor, args, indent + 4)
        lines += [f"    {line}" for line in inner[:-1]] + [f"    {inner[-1]},"]
    return lines + [")"]


def pack(parts: list[str], indent: int) -> list[str]:
    lines, current = [], ""
    for part in parts:
        piece = part + ","
        if current and indent + len(current) + 1 + len(piece) > LINE_LIMIT:
            lines.append(current)
            current = piece
        else:
            current = f"{current} {piece}" if current else piece
    return lines + [current]


def stage_sequential(target: str, calls: list[tuple[str, list[str]]]) -> list[str]:
    """`target = nn.Sequential(A(64), *[B(256, 64) for _ in range(5)])`, runs of one call written
    once, one part a line where they do not fit on one."""
    runs: list[tuple[tuple[str, list[str]], int]] = []
    for made in calls:
        if runs and runs[-1][0] == made:
            runs[-1] = (made, runs[-1][1] + 1)
        else:
            runs.append((made, 1))
    texts = [f"{head}({', '.join(args)})" if n == 1 else f"*[{head}({', '.join(args)}) for _ in range({n})]"
             for (head, args), n in runs]
    one = f"{target} = nn.Sequential({', '.join(texts)})"
    if 8 + len(one) <= LINE_LIMIT:
        return [one]
    lines = [f"{target} = nn.Sequential("]
    for ((head, args), n), text in zip(runs, texts):
        if 12 + len(text) + 1 <= LINE_LIMIT:
            lines.append(f"    {text},")
            continue
        inner = call(head, args, 12 + 2 * (n > 1))
        if n > 1:
            inner = [f"*[{inner[0]}", *inner[1:-1], f"{inner[-1]} for _ in range({n})]"]
        lines += [f"    {line}" for line in inner[:-1]] + [f"    {inner[-1]},"]
    return lines + [")"]


def docstring_text(text: str) -> str:
    """`text` safe inside a triple-quoted docstring: backslashes, quotes and anything not
    printable ASCII escaped, so a file name cannot end the docstring or break the module."""
    escaped = text.encode("ascii", "backslashreplace").decode("ascii")
    escaped = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in escaped)
    return escaped.replace("\\", "\\\\").replace('"', '\\"')
