"""Integers in generated code as the spec wrote them: a `Sym` is a Python expression and the spec
expression it came from, so a class can write `width * 4` and be checked against every block's 256."""
from __future__ import annotations

from dataclasses import dataclass

from ... import ast
from ...diagnostics import ResdslError
from ...expressions import IN_CHANNELS, PAIR
from ...ir import Graph
from ...lower import evaluate

IN = "<in>"  # the block input's channel count: not an identifier, so no spec parameter is named so


@dataclass(frozen=True)
class Sym:
    """An integer in generated code: its Python text, its binding strength (4 atom, 3 unary
    minus, 2 `*`/`//`, 1 `+`/`-`) and, unless a literal, the spec expression it came from."""
    text: str
    prec: int = 4
    expr: ast.Expr | None = None

    @classmethod
    def literal(cls, value: float | tuple[int, int]) -> Sym:
        if isinstance(value, tuple):  # a (height, width) kernel, stride or padding: `(1, 7)`
            return cls(repr(value), 4)
        return cls(repr(value), 4 if value >= 0 else 3)

    def value(self, env: dict[str, int | float]) -> int | float | tuple[int, int]:
        if self.expr is None:
            if self.text.startswith("("):
                return tuple(int(n) for n in self.text.strip("()").split(","))  # type: ignore[return-value]
            return float(self.text) if any(c in self.text for c in ".en") else int(self.text)
        return evaluate(self.expr, env)


class Inexpressible(Exception):
    """A spec expression the generated class cannot write: it reads a name the class does not
    take (the block's place in the network). The definition gets literal classes instead."""


def render(expr: ast.Expr, names: dict[str, str], env: dict[str, int | float] | None = None) -> Sym:
    """A spec expression as Python. `/` between integers (checked exact when lowered) becomes
    `//`; between reals (a float literal, or a parameter `env` binds to a float) stays `/`."""
    if isinstance(expr, ast.Int):
        return Sym(str(expr.value), 4, expr)
    if isinstance(expr, ast.Float):
        return Sym(repr(expr.value), 4, expr)
    if isinstance(expr, ast.Var):
        if expr.name not in names:
            raise Inexpressible(f"`{expr.name}` is no parameter of the class")
        return Sym(names[expr.name], 4, expr)
    if isinstance(expr, ast.Neg):
        inner = render(expr.operand, names, env)
        return Sym("-" + _wrap(inner, 3), 3, expr)
    lhs, rhs = render(expr.lhs, names, env), render(expr.rhs, names, env)
    if expr.op == PAIR:  # PyTorch's (height, width) tuple, one number where the spec wrote `k3x3`
        return lhs if lhs.text == rhs.text else Sym(f"({lhs.text}, {rhs.text})", 4, expr)
    prec = 1 if expr.op in "+-" else 2
    op = "//" if expr.op == "/" and not (_real(expr.lhs, env) or _real(expr.rhs, env)) else expr.op
    return Sym(f"{_wrap(lhs, prec)} {op} {_wrap(rhs, prec + 1)}", prec, expr)


def block_env(graph: Graph, path: str) -> dict[str, int | float]:
    """What a block's expressions may name, with its values: its parameters, its lets, the
    input channels and `classes`."""
    block = graph.blocks[path]
    channels = graph.shape(block.input)[0]
    env = {IN_CHANNELS: channels, **block.args, IN: channels, "classes": graph.classes}
    for name, expr in graph.signatures[block.block].lets:
        env[name] = evaluate(expr, env)
    return env


def _real(expr: ast.Expr, env: dict[str, int | float] | None) -> bool:
    if env is not None:
        try:
            return isinstance(evaluate(expr, env), float)
        except ResdslError:  # a name env lacks: judge by the literals below
            pass
    if isinstance(expr, ast.Float):
        return True
    if isinstance(expr, ast.Neg):
        return _real(expr.operand, env)
    if isinstance(expr, ast.BinOp):
        return _real(expr.lhs, env) or _real(expr.rhs, env)
    return False


def _wrap(sym: Sym, prec: int) -> str:
    return sym.text if sym.prec >= prec else f"({sym.text})"
