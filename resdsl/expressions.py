"""Expression evaluation: the values of a spec's arithmetic, its names and its layer kinds.

Below the front end (it reads `ast` expressions, which the IR keeps as `Node.exprs`): lowering,
the shortcut pass instantiating a user policy and the PyTorch generator all evaluate with it.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable

from . import ast
from .diagnostics import ResdslError
from .kinds import Kind, kind_of, not_a_kind
from .limits import LIMITS

Number = int | float
Value = Number | Kind  # what a name may hold: a number, or a layer kind (a block's `act = relu`)
# What a block's expressions may read of its place in the network, beside its parameters.
POSITION = ("block_index", "num_blocks")
# ... and the channels of its input (MobileNet's expansion, EfficientNet's SE squeeze): its
# generated class's own `in_channels`.
IN_CHANNELS = "in_channels"
# The operator of a (height, width) pair, `k1x7` or `kernel=(1, 7)`: a BinOp, so that substituting
# and moving spans treat it as any other expression.
PAIR = "x"


def evaluate(expr: ast.Expr, env: dict[str, Value]) -> Value:
    """An expression's value: an int where every operand is one (and `/` divides exactly), else
    a float; a bare name no one binds that names a layer is that layer kind (`relu`). Iterative
    in effect: the parser bounds how deep expressions nest."""
    if isinstance(expr, ast.Int):
        return expr.value
    if isinstance(expr, ast.Float):
        LIMITS.check_value(expr.value, expr.span)
        return expr.value
    if isinstance(expr, ast.Var):
        if expr.name in env:
            return env[expr.name]
        kind = kind_of(expr.name, expr.span)
        if kind is None:
            raise ResdslError(f"unknown name `{expr.name}`", expr.span, hint=suggest(expr.name, env))
        return kind
    if isinstance(expr, ast.Neg):
        return -_operand(expr.operand, env)
    lhs, rhs = _operand(expr.lhs, env), _operand(expr.rhs, env)
    if expr.op == PAIR:  # a (height, width) kernel, stride or padding; a square one is one number
        return lhs if lhs == rhs else (lhs, rhs)
    real = isinstance(lhs, float) or isinstance(rhs, float)
    if expr.op == "+":
        value = lhs + rhs
    elif expr.op == "-":
        value = lhs - rhs
    elif expr.op == "*":
        value = lhs * rhs
    else:
        if rhs == 0:
            raise ResdslError("division by zero", expr.span, hint="check the divisor's value")
        if expr.op == "/" and real:
            value = lhs / rhs
        elif expr.op == "/" and lhs % rhs:
            raise ResdslError(f"{lhs} / {rhs} is not a whole number", expr.span,
                              hint="use `//` to round down")
        else:
            value = lhs // rhs
    LIMITS.check_value(value, expr.span)
    return value


def _operand(expr: ast.Expr, env: dict[str, Value]) -> Number:
    value = evaluate(expr, env)
    not_a_kind(value, "an operand of arithmetic", expr.span)
    if isinstance(value, tuple):
        raise ResdslError(f"a (height, width) pair {value[0]}x{value[1]} is no number", expr.span,
                          hint="pairs are a kernel, stride or padding's whole value: `k=(1, n)`")
    return value


def evaluate_number(expr: ast.Expr, env: dict[str, Value], what: str) -> Number:
    """An expression where only a number makes sense, not a layer kind."""
    value = evaluate(expr, env)
    not_a_kind(value, what, expr.span)
    return value


def evaluate_int(expr: ast.Expr, env: dict[str, Value], what: str) -> int:
    """An expression where only an integer makes sense (a width, a count, a stride)."""
    value = evaluate(expr, env)
    if value.__class__ is int:  # nearly always: asked first, as lowering asks once per attribute
        return value
    not_a_kind(value, what, expr.span)
    if isinstance(value, tuple):
        raise ResdslError(f"{what} is one number, not a pair {value[0]}x{value[1]}", expr.span,
                          hint="only a layer's kernel, stride or padding is a (height, width) pair")
    if isinstance(value, float):
        raise ResdslError(f"{what} must be an integer, not {value!r}", expr.span,
                          hint="integers are written without a decimal point; floats are for rates")
    return value


def suggest(name: str, names: Iterable[str], what: str = "names defined here") -> str:
    """A hint for an unknown `name`: the closest of `names`, else all of them."""
    names = sorted(names)
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        return f"did you mean `{close[0]}`?"
    return f"{what}: {', '.join(names)}" if names else f"no {what}"
