"""Lowering's blocks used as layers: a block given as a layer kind (`bottleneck(64, attn=se)`,
whose body writes `se: attn width * expansion`) is inlined where its slot stands, its layers
under the slot's label (`se.fc1`), as timm's Bottleneck builds `self.se = attn_layer(channels)`.

Its layers' attributes are written in the enclosing block's terms (`channels // reduction`
becomes `width * expansion // 16`), so the generated class computes them from its own
parameters, as it does for every other layer.
"""
from __future__ import annotations

from . import ast
from .diagnostics import ResdslError
from .expressions import Value
from .joins import Body
from .kinds import Kind


class SubBlockLowering:
    """The block-as-layer half of `lower._Lowering` (which holds the state it reads)."""

    def _inline(self, layer: ast.Layer, kind: Kind, ctx: Body, current: str, env: dict[str, Value],
                prefix: str) -> str:
        definition = self.program.blocks[kind.op]
        if definition.name in self.inlining:
            raise ResdslError(f"block `{definition.name}` would contain itself", layer.op_span,
                              hint="a block given as a layer kind cannot be, or contain, the block it sits in")
        if ctx.block_input is None:
            raise ResdslError(f"`{definition.name}` is a block: it goes in a block's layer slot", layer.span)
        values = self._bind(definition, ast.Call(definition.name, layer.args, layer.span), env, dict(kind.args))
        label = prefix + (layer.label or definition.name)
        self.labeler.check_name(label, layer.span)  # its layers may all be unlabeled: check the container
        if label in ctx.used or label in ctx.values:
            self.labeler.claim(label, ctx.used, layer.span, ctx.scope)  # reports the collision
        inner = Body(ctx.scope, ctx.used, current, ctx.policy, {"input": current}, branch=ctx.branch,
                     inlined=definition.name)
        saved = self.slots, self.substitution
        self.inlining.append(definition.name)
        self.slots, self.substitution = self.kinds(definition), self._terms(definition, layer.args, kind)
        try:
            end = self._statements(definition.body, inner, current, values, prefix=label + ".")
        finally:
            self.inlining.pop()
            self.slots, self.substitution = saved
        self._all_joined(inner, end)
        ctx.used.containers.setdefault(label, label)
        ctx.used.add(label)
        ctx.values[label] = end
        ctx.slots[label] = layer.span
        return end

    def _terms(self, definition: ast.BlockDef, args: tuple[ast.Arg, ...], kind: Kind) -> dict[str, ast.Expr]:
        """The inlined block's parameters and `let`s as expressions of the enclosing block's: the
        arguments its slot gave, the values its kind came with (`se(reduction=4)`), else its
        defaults; each in the outermost block's terms."""
        given = {p.name: a.value for p, a in zip(definition.params, (a for a in args if isinstance(a, ast.Positional)))}
        given.update((a.name, a.value) for a in args if isinstance(a, ast.Keyword))
        fixed = dict(kind.args)
        terms: dict[str, ast.Expr] = {}
        for param in definition.params:
            if param.name in fixed:
                terms[param.name] = _literal(fixed[param.name], kind.span)
            elif param.name in given:
                terms[param.name] = ast.substitute(given[param.name], self.substitution)
            elif param.default is not None:
                terms[param.name] = ast.substitute(param.default, terms)
        for item in definition.body:
            if isinstance(item, ast.Let):
                terms[item.name] = ast.substitute(item.value, terms)
        return terms


def _literal(value: Value, span) -> ast.Expr:
    """A value a block's kind came with, as the expression generated code writes for it."""
    if isinstance(value, Kind):
        return ast.Var(value.op, span)
    if isinstance(value, float):
        return ast.Float(value, span, repr(value))
    return ast.Int(value, span)
