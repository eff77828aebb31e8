"""Lowering's joins: `add shortcut [POLICY] [from LABEL]`, and joins of named values (`add NAME`,
`mul NAME`, `concat NAME...`), with the shortcut policy each add records for `passes.shortcuts`."""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from . import ast
from .diagnostics import ResdslError, Span
from .expressions import suggest
from .labels import Names, written
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


class JoinLowering:
    """The join half of `lower._Lowering` (which holds the state it reads)."""

    def _join(self, layer: ast.Layer, ctx: Body, current: str, prefix: str) -> str:
        """`add shortcut [POLICY] [from LABEL]`, or a join of named values: `add NAME`, `mul NAME`,
        `concat NAME...`."""
        if ctx.block_input is None:
            what = "add shortcut" if layer.op == "add" else layer.op
            raise ResdslError(f"`{what}` only works inside a block", layer.span,
                              hint="residual joins belong in a `block` definition")
        words = []
        for arg in layer.args:
            text = written(arg.span) if isinstance(arg, ast.Keyword) else ""  # reads the whole file
            if SHORT_ATTR.fullmatch(text):
                raise ResdslError(f"`{text}` reads as the attribute `{arg.name}={text[1:]}` here, not as a "
                                  "name", arg.span, hint=f"a join cannot name a label that looks like `k3`, `s2`, "
                                                         f"`p1` or `g32`: rename `{text}`")
            if not (isinstance(arg, ast.Positional) and isinstance(arg.value, ast.Var)):
                raise ResdslError(f"expected `{_JOIN_FORMS[layer.op]}`", arg.span,
                                  hint="joins name values: `shortcut`, `input` or a label")
            words.append(arg.value)
        if not words or (layer.op != "concat" and len(words) > 1 and words[0].name != "shortcut"):
            raise ResdslError(f"expected `{_JOIN_FORMS[layer.op]}`", layer.span,
                              hint=f"POLICY is one of {', '.join(self._policies())}")
        if current == ctx.block_input and not (layer.op != "add" or words[0].name != "shortcut"):
            raise ResdslError("`add shortcut` needs a residual branch before it", layer.span,
                              hint="put the block's layers (conv, bn, ...) before `add shortcut`")
        label = self._label(layer, prefix, ctx, {"concat": "cat"}.get(layer.op, layer.op))
        name = f"{ctx.scope}.{label}"
        if layer.op == "add" and words[0].name == "shortcut":
            if ctx.inlined:
                raise ResdslError(f"block `{ctx.inlined}`, used here as a layer, has no shortcut of its own",
                                  layer.span, hint="a block given as a layer kind joins its `input` (`add input`, "
                                                   "`mul input`); `add shortcut` belongs to the block it sits in")
            policy, source = ctx.policy, None
            rest = words[1:]
            if len(rest) >= 2 and rest[-2].name == "from":
                source = self._value(rest[-1], ctx)
                rest = rest[:-2]
            if len(rest) > 1:
                raise ResdslError(f"expected `{_JOIN_FORMS['add']}`", layer.span,
                                  hint=f"POLICY is one of {', '.join(self._policies())}")
            if rest:
                policy = self.check_policy(rest[0].name, rest[0].span)
            if policy == "none":  # the plain network of the same layers (He et al. 2015, Fig. 3)
                ctx.values[label] = current
                return current
            ctx.values[label] = name
            return self.graph.add(name, "add", [current, ctx.block_input], span=layer.span, scope=ctx.scope,
                                  label=label, policy=policy, gated=policy == "gated",
                                  source=source or ctx.block_input)
        operands = [self._value(word, ctx) for word in words]
        if layer.op == "concat":  # the values it names, in order (name the current one to include it)
            if len(operands) < 2:
                raise ResdslError("`concat` joins two or more named values", layer.span,
                                  hint="`concat a b` (name `input` or a layer's label to include it)")
            _concat_operands(layer, words, operands)
            inputs = operands
        elif len(operands) != 1:
            raise ResdslError(f"`{layer.op}` joins one named value with the current one", layer.span,
                              hint=f"`{_JOIN_FORMS[layer.op]}`")
        else:
            _not_itself(layer, words[0], operands[0], current)
            inputs = [current, *operands]
        ctx.values[label] = name
        attrs = {"policy": "join", "gated": False, "source": operands[0]} if layer.op == "add" else {}
        return self.graph.add(name, layer.op, inputs, span=layer.span, scope=ctx.scope, label=label,
                              branch=ctx.branch, **attrs)

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
SHORT_ATTR = re.compile(r"[ksgp][0-9]+")  # as the grammar's SHORT_ATTR, which wins over a name



def _concat_operands(layer: ast.Layer, words: list[ast.Var], operands: list[str]) -> None:
    """At most MAX_CONCAT values, each once: the graph holds one edge per pair of nodes, so a value
    named twice would silently become one operand."""
    if len(words) > MAX_CONCAT:
        raise ResdslError(f"`concat` joins at most {MAX_CONCAT} values, not {len(words)}", words[MAX_CONCAT].span,
                          hint=f"concatenate in steps: label a `concat` of the first ones, then `concat` that "
                               f"label and the rest (the same channels in the same order). {MAX_CONCAT} is "
                               f"resdsl's own bound, not PyTorch's, ONNX's or TVM's")
    seen: dict[str, str] = {}  # node -> the first name given for it
    for word, node in zip(words, operands):
        if node in seen:
            what = "twice" if seen[node] == word.name else f"as well as `{seen[node]}`, its value"
            raise ResdslError(f"`concat` names `{word.name}` {what}", word.span,
                              hint="name each value once: a join takes distinct values")
        seen[node] = word.name


def _not_itself(layer: ast.Layer, word: ast.Var, operand: str, current: str) -> None:
    """`mul conv1` right after `conv1`: the graph cannot join a value with itself (one edge per
    pair of nodes), and squaring is not what a join of a branch means."""
    if operand == current:
        verb = f"multiply `{word.name}` by" if layer.op == "mul" else f"add `{word.name}` to"
        raise ResdslError(f"`{layer.op} {word.name}` would {verb} itself: it is the current value",
                          word.span, hint=f"`{layer.op} NAME` joins the current value with another one: "
                                          f"a branch, `input` or an earlier layer's label")


_JOIN_FORMS = {"add": "add shortcut [POLICY] [from LABEL]` or `add NAME", "mul": "mul NAME",
               "concat": "concat NAME [NAME ...]"}
