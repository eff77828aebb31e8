"""Attribute validation: a layer's written arguments, evaluated and checked against its op's schema.

Below the front end: lowering checks every layer with it, and the shortcut pass a user policy's
layers when it instantiates them.
"""
from __future__ import annotations

from . import ast
from .diagnostics import ResdslError, Span
from .expressions import Number, Value, evaluate, evaluate_int, evaluate_number, suggest
from .limits import LIMITS
from .ops import JOINS, OPS, OpDef
from .ops.schema import pair_text

# The short forms (`k3 s2 p1 g32`): the attribute each stands for, as the op definitions say.
SHORT_ATTRS = {a.short: a.name for op in OPS.values() for a in op.attrs if a.short}


def layer_attrs(layer: ast.Layer, info: OpDef, env: dict[str, Value], exprs: dict[str, ast.Expr],
                checked: set[str]) -> dict[str, Number]:
    """The layer's attributes (ints, or floats where the op takes a rate); `exprs` gets the
    expressions they were written as. `checked` holds the ops whose default attributes were
    checked already (an op's defaults are checked the first time it is used; after that only
    what a layer gives)."""
    attrs: dict[str, Number] = {}
    spans: dict[str, Span] = {}
    resolve = info.resolve
    for arg in layer.args:
        # A keyword naming a new attribute is nearly every argument: resolved here, without a call.
        key = resolve(arg.name) if arg.__class__ is ast.Keyword else None
        if key is None or key in attrs:
            key = _key(arg, info, attrs)
        if key in info.floats:
            attrs[key] = float(evaluate_number(arg.value, env, f"`{key}` of `{info.name}`"))
        else:
            value = evaluate(arg.value, env)
            # Checked (and the message made) only where it is not an int: 240,000 times in a
            # stage of 20,000 blocks.
            attrs[key] = value if value.__class__ is int else _non_int(arg, key, value, info, env)
        exprs[key] = arg.value
        spans[key] = arg.span
    for key, default in info.defaults.items():
        if key not in attrs:
            if default is None:
                raise ResdslError(f"`{info.name}` needs `{key}`", layer.span, hint=attr_hint(info))
            attrs[key] = default
    skip_defaults = info.name in checked
    checked.add(info.name)
    for key, value in attrs.items():
        if skip_defaults and key not in spans:
            continue
        span = spans.get(key, layer.span)
        if key in info.floats or key in info.flags:
            _check_rate_or_flag(info, key, value, span)
            continue
        low = info.attr(key).low  # an integer, checked here: 140,000 times in 20,000 blocks
        if value.__class__ is tuple:
            _check_pair(info, key, value, span)
            continue
        if value < low:
            raise ResdslError(f"`{key}` must be at least {low}, not {value}", span, hint=attr_hint(info))
        LIMITS.check_attr(key, value, span)
    if info.complete is not None:
        info.complete(attrs)
    return attrs


def _key(arg: ast.Arg, info: OpDef, attrs: dict[str, Number]) -> str:
    """The attribute an argument sets: the op's positional one, or the one its keyword names."""
    if isinstance(arg, ast.Positional):
        positional = info.positional
        if positional is None or positional in attrs:
            what = "no" if positional is None else "one"
            raise ResdslError(f"`{info.name}` takes {what} positional argument", arg.span, hint=attr_hint(info))
        return positional
    # `s=stride` is `stride=stride`, unless the op has an attribute of that name (lrn's `k`)
    key = info.resolve(arg.name)
    if key is None:
        written = SHORT_ATTRS.get(arg.name, arg.name)
        raise ResdslError(f"`{info.name}` has no attribute `{written}`", arg.span, hint=attr_hint(info))
    if key in attrs:
        raise ResdslError(f"attribute `{key}` is given twice", arg.span, hint="keep one of them")
    return key


def _non_int(arg: ast.Arg, key: str, value: Value, info: OpDef, env: dict[str, Value]) -> Value:
    """An integer attribute's value that is not an int: a (height, width) pair where the attribute
    takes one, else the error saying what it is."""
    if value.__class__ is tuple and key in info.pairs:
        return value
    return evaluate_int(arg.value, env, f"`{key}` of `{info.name}`")


def _check_pair(info: OpDef, key: str, value: tuple[int, int], span: Span) -> None:
    low = info.attr(key).low
    for dimension, n in zip(("height", "width"), value):
        if n < low:
            raise ResdslError(f"`{key}` must be at least {low} in each dimension, not {pair_text(value)} "
                              f"(its {dimension} is {n})", span, hint=attr_hint(info))
        LIMITS.check_attr(key, n, span)


def _check_rate_or_flag(info: OpDef, key: str, value: Number, span: Span) -> None:
    if key in info.floats:
        bounds = info.attr(key).range
        if bounds is not None and value not in bounds:
            raise ResdslError(f"`{key}` must be {bounds.describe()}, not {value:g}", span,
                              hint=f"`{key}` of `{info.name}` is {bounds.why}")
    elif value not in (0, 1):
        raise ResdslError(f"`{key}` is 0 or 1, not {value}", span, hint=f"`{key}=1` turns it on")


def attr_hint(info: OpDef) -> str:
    keys = ", ".join(f"{a.name}=" for a in info.attrs) or "none"
    shorts = " ".join(f"{a.short}{a.example}" for a in info.attrs if a.short)
    return f"`{info.name}` takes: {keys}" + (f" (short forms: {shorts})" if shorts else "")


def unknown_layer(op: str, span: Span) -> ResdslError:
    """The error for a layer whose op is no layer a spec may write."""
    known = sorted([name for name, i in OPS.items() if i.user] + list(JOINS))
    return ResdslError(f"unknown layer `{op}`", span, hint=suggest(op, known, "known layers"))
