"""The abstract syntax tree of a `.rds` file: plain dataclasses, each with its source span."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Union

from .diagnostics import Span


# ---- expressions --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Int:
    value: int
    span: Span


@dataclass(frozen=True)
class Float:
    """A literal with a decimal point or an exponent (`0.3`, `1e-4`): for rates and coefficients."""
    value: float
    span: Span
    text: str  # as written, so `fmt` keeps `1e-4` as `1e-4`


@dataclass(frozen=True)
class Var:
    name: str
    span: Span


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * // /
    lhs: "Expr"
    rhs: "Expr"
    span: Span


@dataclass(frozen=True)
class Neg:
    operand: "Expr"
    span: Span


Expr = Union[Int, Float, Var, BinOp, Neg]


def variables(expr: Expr) -> Iterator[Var]:
    """The names an expression reads, left to right."""
    if isinstance(expr, Var):
        yield expr
    elif isinstance(expr, Neg):
        yield from variables(expr.operand)
    elif isinstance(expr, BinOp):
        yield from variables(expr.lhs)
        yield from variables(expr.rhs)


def substitute(expr: Expr, names: Mapping[str, Expr]) -> Expr:
    """`expr` with each name in `names` replaced by its expression: a block inlined as a layer
    (`subblocks`) writes its parameters as the arguments it was given."""
    if isinstance(expr, Var):
        return names.get(expr.name, expr)
    if isinstance(expr, Neg):
        return replace(expr, operand=substitute(expr.operand, names))
    if isinstance(expr, BinOp):
        return replace(expr, lhs=substitute(expr.lhs, names), rhs=substitute(expr.rhs, names))
    return expr


def shift_spans(expr: Expr, move: Callable[[Span], Span]) -> Expr:
    """`expr` with every span moved by `move` (an expression parsed from inside a string)."""
    if isinstance(expr, BinOp):
        return replace(expr, lhs=shift_spans(expr.lhs, move), rhs=shift_spans(expr.rhs, move),
                       span=move(expr.span))
    if isinstance(expr, Neg):
        return replace(expr, operand=shift_spans(expr.operand, move), span=move(expr.span))
    return replace(expr, span=move(expr.span))


# ---- layer and call arguments -----------------------------------------------------------------
@dataclass(frozen=True)
class Positional:
    value: Expr
    span: Span


@dataclass(frozen=True)
class Keyword:
    name: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class Partial:
    """`se(reduction=4)` as a block argument: a block given as a layer kind with some of its
    arguments (`bottleneck(64, attn=se(reduction=4))`); the slot it fills gives the rest."""
    block: str
    args: tuple[Keyword, ...]
    span: Span


Arg = Union[Positional, Keyword]


@dataclass(frozen=True)
class Layer:
    """One statement of a body: `[label:] op args...`; a label may be a dotted path (`conv1.0`)."""

    label: str | None
    op: str
    args: tuple[Arg, ...]
    span: Span
    op_span: Span


@dataclass(frozen=True)
class Join:
    """`[label:] add shortcut [POLICY] [from LABEL]` (`shortcut`), or `[label:] add|mul|concat
    NAME...`: a join of the current value with the block's input or with named values."""
    label: str | None
    op: str
    operands: tuple[Var, ...]  # the named values; empty for a shortcut
    span: Span
    op_span: Span
    shortcut: bool = False
    policy: Var | None = None  # `add shortcut POLICY`
    source: Var | None = None  # `add shortcut from LABEL`
    args: tuple = ()  # a join reads no expressions (walkers of layer arguments skip it)


@dataclass(frozen=True)
class Branch:
    """`label: branch [source] { layers }`: a side path, joined later by its label. Unlabeled,
    its layers are named as the enclosing body's and it is joined by its last layer's label."""

    label: str | None
    source: str | None  # None: the current value; `input`: the block's input; else a label
    body: tuple[Union["Layer", "Join", "Branch"], ...]
    span: Span
    source_span: Span | None = None


@dataclass(frozen=True)
class Let:
    """`let name = expr` in a block: a name its later layers may use."""

    name: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class Param:
    name: str
    default: Expr | None
    span: Span


@dataclass(frozen=True)
class BlockDef:
    name: str
    params: tuple[Param, ...]
    body: tuple[Layer | Join | Branch | Let, ...]
    span: Span


@dataclass(frozen=True)
class PolicyDef:
    """`policy name(channels, stride) { layers }`: a user-defined shortcut policy."""

    name: str
    params: tuple[Param, ...]
    body: tuple[Layer, ...]
    span: Span


@dataclass(frozen=True)
class Call:
    block: str
    args: tuple[Arg, ...]
    span: Span


@dataclass(frozen=True)
class NamePattern:
    """`named "b{i + 1}"`: how a stage keys its blocks, text and expressions of `i` (the block's
    index in the stage) in turn."""

    parts: tuple[str | Expr, ...]
    span: Span
    text: str  # as written, quotes included, for `fmt`


@dataclass(frozen=True)
class Stage:
    name: str
    call: Call
    repeat: Expr | None  # None: the stage is one block, named by the stage's label
    stride: Expr | None
    shortcut: str | None
    span: Span
    shortcut_span: Span | None = None
    first: tuple[Keyword, ...] = ()  # `first(dilation=1)`: arguments for block 0 only
    named: NamePattern | None = None  # None: numbered on in the stage's container


@dataclass
class Network:
    name: str
    span: Span
    input: tuple[int, int, int] | None = None
    input_span: Span | None = None
    classes: Expr | None = None
    shortcut: str = "B"
    shortcut_span: Span | None = None
    lets: list[tuple[str, Expr, Span]] = field(default_factory=list)
    stem: tuple[Layer, ...] = ()
    stem_span: Span | None = None
    stages: list[Stage] = field(default_factory=list)
    head: tuple[Layer, ...] = ()
    head_span: Span | None = None
    outputs: list[tuple[str, Span]] = field(default_factory=list)  # named feature maps to return
    outputs_span: Span | None = None


@dataclass
class Include:
    path: str
    span: Span


@dataclass
class SourceFile:
    path: str
    includes: list[Include] = field(default_factory=list)
    blocks: list[BlockDef] = field(default_factory=list)
    policies: list[PolicyDef] = field(default_factory=list)
    networks: list[Network] = field(default_factory=list)
