"""Lowering's joins: `add shortcut [POLICY] [from LABEL]`, and joins of named values (`add NAME`,
`mul NAME`, `concat NAME...`, `select NAME...`), with the shortcut policy each add records for
`passes.shortcuts`."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from . import ast
from .diagnostics import ResdslError, Span
from .expressions import suggest
from .labels import Names
from .ops import OPS
from .parser import POLICIES


@dataclass
class Body:
    """One body being lowered: its scope, its names, and the values statements can name."""
    scope: str
    used: Names
    block_input: str | None
    policy: str
    values: dict[str, str] = field(default_factory=dict)  # label -> node
    branches: dict[str, tuple[str, Span]] = field(default_factory=dict)  # label -> (last node, where)
    branch: str = ""  # the branch being lowered, if any
    inlined: str = ""  # the block being inlined as a layer (`subblocks`), if any
    slots: dict[str, Span] = field(default_factory=dict)  # label -> where a block was inlined as a layer


class JoinLowering:
    """The join half of `lower._Lowering` (which holds the state it reads)."""

    def _join(self, join: ast.Join, ctx: Body, current: str, prefix: str) -> str:
        """`add shortcut [POLICY] [from LABEL]`, or a join of named values: `add NAME`, `mul NAME`,
        `concat NAME...`, `select NAME NAME...` (weighted by the current value's softmax)."""
        if ctx.block_input is None:
            what = "add shortcut" if join.shortcut else join.op
            raise ResdslError(f"`{what}` only works inside a block", join.span,
                              hint="residual joins belong in a `block` definition")
        if join.shortcut:
            return self._shortcut(join, ctx, current, prefix)
        label = self._label(join, prefix, ctx, {"concat": "cat"}.get(join.op, join.op))
        name = f"{ctx.scope}.{label}"
        operands = [self._value(word, ctx) for word in join.operands]
        if join.op == "concat":  # the values it names, in order (name the current one to include it)
            if len(operands) < 2:
                raise ResdslError("`concat` joins two or more named values", join.span,
                                  hint="`concat a b` (name `input` or a layer's label to include it)")
            _concat_operands(join.operands, operands)
            inputs = operands
        elif join.op == "select":  # the branches it names, then the current value: their logits
            _select_operands(join, operands, current)
            inputs = [*operands, current]
        elif len(operands) != 1:
            raise ResdslError(f"`{join.op}` joins one named value with the current one", join.span,
                              hint=f"`{_JOIN_FORMS[join.op]}`")
        else:
            _not_itself(join, join.operands[0], operands[0], current)
            inputs = [current, *operands]
        ctx.values[label] = name
        attrs = {"policy": "join", "gated": False, "source": operands[0]} if join.op == "add" else {}
        return self.graph.add(name, join.op, inputs, span=join.span, scope=ctx.scope, label=label,
                              branch=ctx.branch, **attrs)

    def _shortcut(self, join: ast.Join, ctx: Body, current: str, prefix: str) -> str:
        if join.op != "add":
            raise ResdslError(f"`{join.op} shortcut`: the shortcut is added", join.span,
                              hint="write `add shortcut`; `mul` and `concat` join named values")
        if ctx.inlined:
            raise ResdslError(f"block `{ctx.inlined}`, used here as a layer, has no shortcut of its own",
                              join.span, hint="a block given as a layer kind joins its `input` (`add input`, "
                                              "`mul input`); `add shortcut` belongs to the block it sits in")
        if current == ctx.block_input:
            raise ResdslError("`add shortcut` needs a residual branch before it", join.span,
                              hint="put the block's layers (conv, bn, ...) before `add shortcut`")
        label = self._label(join, prefix, ctx, "add")
        policy = ctx.policy if join.policy is None else self.check_policy(join.policy.name, join.policy.span)
        source = self._value(join.source, ctx) if join.source is not None else None
        if policy == "identity_or_none":  # MobileNet's: a residual only where the shapes agree
            policy = "identity" if self.shape_of(current) == self.shape_of(ctx.block_input) else "none"
            self.graph.blocks[ctx.scope].residual = policy == "identity"  # one class takes it as a flag
        if policy == "none":  # the plain network of the same layers (He et al. 2015, Fig. 3)
            ctx.values[label] = current
            return current
        name = f"{ctx.scope}.{label}"
        ctx.values[label] = name
        return self.graph.add(name, "add", [current, ctx.block_input], span=join.span, scope=ctx.scope,
                              label=label, policy=policy, gated=policy == "gated",
                              source=source or ctx.block_input)

    def _value(self, word: ast.Var, ctx: Body) -> str:
        if word.name not in ctx.values:
            raise ResdslError(f"`{word.name}` names no value here", word.span,
                              hint=suggest(word.name, ctx.values, "values defined before it"))
        return ctx.values[word.name]

    def _policies(self) -> list[str]:
        return list(POLICIES) + sorted(self.program.policies)

    def check_policy(self, name: str, span: Span | None) -> str:
        if name not in POLICIES and name not in self.program.policies:
            close = difflib.get_close_matches(name, self._policies(), n=1)
            raise ResdslError(
                f"unknown shortcut policy `{name}`",
                span,
                hint=f"did you mean `{close[0]}`?"
                if close
                else f"use one of {', '.join(self._policies())}, or define it with `policy {name}(...)`",
            )
        return name


MAX_CONCAT = max(OPS["concat"].arity)
MAX_SELECT = max(OPS["select"].arity) - 1  # and the logits



def _concat_operands(words: tuple[ast.Var, ...], operands: list[str], op: str = "concat") -> None:
    """At most MAX_CONCAT values, each once: the graph holds one edge per pair of nodes, so a value
    named twice would silently become one operand."""
    if op == "concat" and len(words) > MAX_CONCAT:
        raise ResdslError(f"`concat` joins at most {MAX_CONCAT} values, not {len(words)}", words[MAX_CONCAT].span,
                          hint=f"concatenate in steps: label a `concat` of the first ones, then `concat` that "
                               f"label and the rest (the same channels in the same order). {MAX_CONCAT} is "
                               f"resdsl's own bound, not PyTorch's, ONNX's or TVM's")
    seen: dict[str, str] = {}  # node -> the first name given for it
    for word, node in zip(words, operands):
        if node in seen:
            what = "twice" if seen[node] == word.name else f"as well as `{seen[node]}`, its value"
            raise ResdslError(f"`{op}` names `{word.name}` {what}", word.span,
                              hint="name each value once: a join takes distinct values")
        seen[node] = word.name


def _select_operands(join: ast.Join, operands: list[str], current: str) -> None:
    """Two or more distinct branches, none of them the logits (the current value)."""
    if len(operands) < 2:
        raise ResdslError("`select` weights two or more named values by a softmax across them", join.span,
                          hint="`select a b`: the branches a and b, weighted by the current value's logits")
    if len(operands) > MAX_SELECT:
        raise ResdslError(f"`select` weights at most {MAX_SELECT} values, not {len(operands)}",
                          join.operands[MAX_SELECT].span, hint=f"{MAX_SELECT} is resdsl's own bound, as concat's")
    _concat_operands(join.operands, operands, "select")
    for word, operand in zip(join.operands, operands):
        if operand == current:
            raise ResdslError(f"`select` names `{word.name}`, the current value: that is its logits", word.span,
                              hint="`select a b` weights the named branches by the current value's softmax; "
                                   "compute the logits after the branches (pool, conv)")


def _not_itself(layer: ast.Join, word: ast.Var, operand: str, current: str) -> None:
    """`mul conv1` right after `conv1`: the graph cannot join a value with itself (one edge per
    pair of nodes), and squaring is not what a join of a branch means."""
    if operand == current:
        verb = f"multiply `{word.name}` by" if layer.op == "mul" else f"add `{word.name}` to"
        raise ResdslError(f"`{layer.op} {word.name}` would {verb} itself: it is the current value",
                          word.span, hint=f"`{layer.op} NAME` joins the current value with another one: "
                                          f"a branch, `input` or an earlier layer's label")


_JOIN_FORMS = {"add": "add shortcut [POLICY] [from LABEL]` or `add NAME", "mul": "mul NAME",
               "concat": "concat NAME [NAME ...]", "select": "select NAME NAME [NAME ...]"}
