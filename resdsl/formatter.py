"""`resdsl fmt`: one canonical layout for .rds files, comments kept.

Style: 4-space indents; one statement per line; a blank line between top-level items;
network statements in the order input, classes, shortcut, let, stem, stages, head; short
attributes (`k3 s2 p1 g32`) for literal kernel/stride/padding/groups and `s=expr` otherwise;
`stem { ... }` and `head { ... }` on one line when they fit and hold no comment; expressions
with the fewest parentheses that keep their meaning.

Comments stay with the statement that follows them (or that they end the line of); comments
after the last statement of a body stay at its end.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import ast
from .checks import check_source
from .expressions import PAIR
from .ops import OPS
from .parser import SHORT_ATTRS, parse

SHORT = {long: short for short, long in SHORT_ATTRS.items()}
PRECEDENCE = {"+": 1, "-": 1, "*": 2, "//": 2, "/": 2}
INDENT = "    "
ONE_LINE_LIMIT = 100


@dataclass
class _Comment:
    line: int
    text: str
    trailing: bool  # code precedes it on its line
    used: bool = False


def format_source(text: str, filename: str = "<string>") -> str:
    tokens: list = []
    source = parse(text, filename, comments=tokens)
    check_source(source)  # a spec that breaks a rule is refused, not reformatted as if it were one
    lines = text.splitlines()
    comments = [_Comment(t.line, str(t).rstrip(), bool(lines[t.line - 1][: t.column - 1].strip()))
                for t in tokens]
    return _Printer(comments).file(source)


def expr(e: ast.Expr, parent: int = 0, right: bool = False) -> str:
    if isinstance(e, ast.Int):
        return str(e.value)
    if isinstance(e, ast.Float):
        return e.text
    if isinstance(e, ast.Var):
        return e.name
    if isinstance(e, ast.Neg):
        return "-" + expr(e.operand, 3)
    if e.op == PAIR:
        return f"({expr(e.lhs)}, {expr(e.rhs)})"
    level = PRECEDENCE[e.op]
    text = f"{expr(e.lhs, level)} {e.op} {expr(e.rhs, level, right=True)}"
    # Left-associative: a right operand of equal precedence needs parentheses, a left one not.
    return f"({text})" if level < parent or (right and level == parent) else text


def _literal_pair(e: ast.Expr) -> bool:
    return isinstance(e, ast.BinOp) and e.op == PAIR and isinstance(e.lhs, ast.Int) and isinstance(e.rhs, ast.Int)


def arg(a: ast.Arg, op: str = "") -> str:
    if isinstance(a, ast.Positional):
        return expr(a.value)
    info = OPS.get(op)
    name = (info.resolve(a.name) if info is not None else None) or SHORT_ATTRS.get(a.name, a.name)
    # The op's own short form (`kernel=3` is `k3`); lrn's `k` is an attribute of its own, not one.
    # An attribute the op lacks keeps the grammar's short form, so that its error reads the same.
    short = info.attr(name).short if info is not None and name in info.defaults else SHORT.get(name)
    if short is not None and isinstance(a.value, ast.Int):
        return f"{short}{a.value.value}"
    if short is not None and _literal_pair(a.value) and (info is None or name in info.pairs):
        return f"{short}{a.value.lhs.value}x{a.value.rhs.value}"  # `k1x7`
    return f"{short or name}={expr(a.value)}"


def layer(l: ast.Layer | ast.Join) -> str:
    if isinstance(l, ast.Join) and l.shortcut:
        policy = [l.policy.name] if l.policy else []
        text = " ".join([l.op, "shortcut", *policy, *(["from", l.source.name] if l.source else [])])
    elif isinstance(l, ast.Join):
        text = " ".join([l.op, *(v.name for v in l.operands)])
    else:
        text = " ".join([l.op, *(arg(a, l.op) for a in l.args)])
    return f"{l.label}: {text}" if l.label else text


class _Printer:
    def __init__(self, comments: list[_Comment]) -> None:
        self.comments = comments
        self.out: list[str] = []

    # ---- comments
    def _leading(self, before_line: int, indent: str) -> None:
        previous = None
        for c in self.comments:
            if not c.used and not c.trailing and c.line < before_line:
                c.used = True
                if previous is not None and c.line - previous > 1:
                    self.out.append("")  # keep one blank line between comment paragraphs
                self.out.append(indent + c.text)
                previous = c.line
        if previous is not None and before_line - previous > 1 and before_line < 10**9 and indent == "":
            self.out.append("")

    def _trailing(self, first: int, last: int) -> str:
        found = [c for c in self.comments if not c.used and c.trailing and first <= c.line <= last]
        for c in found:
            c.used = True
        return "".join("  " + c.text for c in found)

    def _has_comments(self, first: int, last: int) -> bool:
        return any(not c.used and first <= c.line <= last for c in self.comments)

    def _emit(self, indent: str, text: str, span) -> None:
        self._leading(span.line, indent)
        self.out.append(indent + text + self._trailing(span.line, span.end_line))

    # ---- items
    def file(self, source: ast.SourceFile) -> str:
        items = sorted(source.includes + source.blocks + source.policies + source.networks,
                       key=lambda i: i.span.line)
        for i, item in enumerate(items):
            if i and not (isinstance(item, ast.Include) and isinstance(items[i - 1], ast.Include)):
                self.out.append("")
            if isinstance(item, ast.Include):
                self._emit("", f'include "{item.path}"', item.span)
            elif isinstance(item, (ast.BlockDef, ast.PolicyDef)):
                self.block(item)
            else:
                self.network(item)
        self._leading(10**9, "")  # comments after the last item
        return "\n".join(self.out).strip("\n") + "\n"

    def block(self, b: ast.BlockDef | ast.PolicyDef) -> None:
        params = ", ".join(
            p.name + (f" = {expr(p.default)}" if p.default is not None else "") for p in b.params
        )
        header_end = b.body[0].span.line - 1 if b.body else b.span.line
        keyword = "policy" if isinstance(b, ast.PolicyDef) else "block"
        self._emit("", f"{keyword} {b.name}({params}) {{", _line_span(b.span, header_end))
        self._statements(b.body, INDENT)
        self._close(b.span)

    def _statements(self, body: tuple, indent: str) -> None:
        for item in body:
            if isinstance(item, ast.Branch):
                source = f" {item.source}" if item.source else ""
                header_end = item.body[0].span.line - 1 if item.body else item.span.line
                label = f"{item.label}: " if item.label is not None else ""
                self._emit(indent, f"{label}branch{source} {{", _line_span(item.span, header_end))
                self._statements(item.body, indent + INDENT)
                self._leading(item.span.end_line, indent + INDENT)
                self.out.append(indent + "}" + self._trailing(item.span.end_line, item.span.end_line))
            elif isinstance(item, ast.Let):
                self._emit(indent, f"let {item.name} = {expr(item.value)}", item.span)
            else:
                self._emit(indent, layer(item), item.span)

    def _close(self, span) -> None:
        self._leading(span.end_line, INDENT)
        self.out.append("}" + self._trailing(span.end_line, span.end_line))

    def network(self, n: ast.Network) -> None:
        self._emit("", f"network {n.name} {{", _line_span(n.span, n.span.line))
        if n.input is not None:
            self._emit(INDENT, "input " + "x".join(map(str, n.input)), n.input_span)
        if n.classes is not None:
            self._emit(INDENT, f"classes {expr(n.classes)}", n.classes.span)
        if n.shortcut_span is not None:
            self._emit(INDENT, f"shortcut {n.shortcut}", n.shortcut_span)
        if n.outputs_span is not None:
            self._emit(INDENT, "outputs " + ", ".join(name for name, _ in n.outputs), n.outputs_span)
        for name, value, span in n.lets:
            self._emit(INDENT, f"let {name} = {expr(value)}", span)
        if n.stem_span is not None:
            self._body("stem", n.stem, n.stem_span)
        for s in n.stages:
            self._emit(INDENT, stage(s), s.span)
        if n.head_span is not None:
            self._body("head", n.head, n.head_span)
        self._close(n.span)

    def _body(self, keyword: str, layers: tuple[ast.Layer, ...], span) -> None:
        one_line = f"{keyword} {{ {'; '.join(layer(l) for l in layers)} }}" if layers else f"{keyword} {{ }}"
        inner_comments = self._has_comments(span.line, span.end_line) and span.end_line > span.line
        if len(INDENT + one_line) <= ONE_LINE_LIMIT and not inner_comments:
            self._emit(INDENT, one_line, span)
            return
        self._emit(INDENT, f"{keyword} {{", _line_span(span, span.line))
        for l in layers:
            self._emit(INDENT * 2, layer(l), l.span)
        self._leading(span.end_line, INDENT * 2)
        self.out.append(INDENT + "}" + self._trailing(span.end_line, span.end_line))


def call_arg(a: ast.Arg) -> str:
    if isinstance(a, ast.Positional):
        return expr(a.value)
    if isinstance(a.value, ast.Partial):
        return f"{a.name}={a.value.block}({', '.join(call_arg(b) for b in a.value.args)})"
    return f"{a.name}={expr(a.value)}"


def stage(s: ast.Stage) -> str:
    call = s.call.block + (f"({', '.join(call_arg(a) for a in s.call.args)})" if s.call.args else "")
    text = f"stage {s.name}: {call}" + (f" x {expr(s.repeat)}" if s.repeat is not None else "")
    if s.stride is not None:
        text += f" stride {expr(s.stride)}"
    if s.shortcut is not None:
        text += f" shortcut {s.shortcut}"
    if s.first:
        text += f" first({', '.join(call_arg(a) for a in s.first)})"
    if s.named is not None:
        text += f" named {s.named.text}"
    return text


def _line_span(span, last_line: int):
    from .diagnostics import Span
    return Span(span.file, span.line, span.column, last_line, span.end_column)
