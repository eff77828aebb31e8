"""AST -> graph IR: evaluates expressions, expands stages into blocks and blocks into layers.

Shapes are not known here; `passes.shapes` infers them. Each residual `add` is lowered with the
block's input as its shortcut operand and the shortcut policy recorded; `passes.shortcuts`
legalizes it (projection, zero-pad or gate) once shapes are known.
"""
from __future__ import annotations

import difflib
import keyword
import re
from dataclasses import dataclass, field
from typing import Iterable

from . import ast
from .diagnostics import ResdslError, Span, in_prelude
from .ir import INPUT, BlockInstance, BlockSignature, Graph, Stage
from .kinds import (
    NONE,
    Kind,
    check_argument,
    kind_of,
    kind_params,
    misfit,
    not_a_kind,
    shape_change,
    unknown_kind,
)
from .limits import LIMITS
from .loader import Program
from .ops import JOINS, LAYER, OPS, OpDef
from .parser import POLICIES, SHORT_ATTRS
from .reserved import CONTAINER_MEMBERS, MODULE_MEMBERS, SHORTCUT_MODULES


def lower(program: Program, overrides: dict[str, ast.Expr] | None = None,
          header: HeaderOverrides | None = None) -> Graph:
    """The graph of `program`'s network; `overrides` replace its `let` constants by name
    (`resdsl --set n=18`), `header` its `classes` and `input` (`--set classes=10`)."""
    if header is not None and not header.empty():
        header.apply(program.network)
    return _Lowering(program, overrides or {}).run()


@dataclass
class HeaderOverrides:
    """`--set classes=N` / `--set input=CxHxW` (or `HxW`, keeping the channels), and the API's
    `classes=`, `input=`, `in_chans=`: values as given (strings or ints, a tuple for `input`),
    checked against the spec so that a bad one is an error at the header line it replaces.
    `how` names each as the user wrote it (`--set classes=10`, `classes=10`), for messages."""

    classes: object = None
    input: object = None
    in_chans: object = None
    how: dict[str, str] = field(default_factory=dict)
    notes: tuple[tuple[str, Span | None], ...] = ()  # set by `apply`: what was replaced, and where
    applied: dict[str, str] = field(default_factory=dict)  # set by `apply`: {"classes": "10", "input": "1x28x28"}

    def empty(self) -> bool:
        return self.classes is None and self.input is None and self.in_chans is None

    def _flag(self, key: str, value: object) -> str:
        return self.how.get(key, f"--set {key}={value}")

    def apply(self, net: ast.Network) -> None:
        """Replace `net`'s header in place (the network is the loaded program's own copy)."""
        notes = []
        if self.classes is not None:
            flag = self._flag("classes", self.classes)
            if net.classes is None:
                raise ResdslError(f"`{flag}`: network `{net.name}` has no class vector to resize: it returns "
                                  "its `outputs` (a backbone)", net.outputs_span or net.span,
                                  hint="`classes` applies to a network whose head ends in `fc classes`")
            span = net.classes.span
            classes = _positive(self.classes)
            if classes is None:
                raise ResdslError(f"`{flag}`: the number of classes must be a positive whole number", span,
                                  hint="e.g. --set classes=10 (it replaces this `classes` line)")
            notes.append((f"`{flag}` replaced the spec's `classes {_written(span) or '...'}`", span))
            net.classes = ast.Int(classes, span)
            self.applied["classes"] = str(classes)
        if self.input is not None or self.in_chans is not None:
            span = net.input_span or net.span
            old = net.input
            shape = old
            if self.input is not None:
                shape = _input_shape(self.input, old, self._flag("input", self.input), span)
            if self.in_chans is not None:
                flag = self._flag("in_chans", self.in_chans)
                channels = _positive(self.in_chans)
                if channels is None:
                    raise ResdslError(f"`{flag}`: the number of input channels must be a positive whole number",
                                      span, hint="e.g. in_chans=1 for grayscale images")
                if shape is None:
                    raise ResdslError(f"`{flag}`: network `{net.name}` has no input shape to change", net.span,
                                      hint="give the whole shape instead: input=(3, 224, 224)")
                shape = (channels, shape[1], shape[2])
            LIMITS.check_input(shape, span)
            what = "x".join(map(str, old)) if old else "none"
            flags = " and ".join(self._flag(k, v) for k, v in (("input", self.input), ("in_chans", self.in_chans))
                                 if v is not None)
            shown = "x".join(map(str, shape))
            notes.append((f"`{flags}` replaced the spec's `input {what}` with {shown}", span))
            net.input = shape
            self.applied["input"] = shown
        self.notes = tuple(notes)


_SHAPE = re.compile(r"\s*(\d+)\s*[xX]\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?")


def _positive(value: object) -> int | None:
    """`value` as a positive int (an int, or a string of digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 1 else None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        number = int(value.strip())
        return number if number >= 1 else None
    return None


def _input_shape(value: object, old: tuple[int, int, int] | None, flag: str, span: Span) -> tuple[int, int, int]:
    """`CxHxW`, or `HxW` keeping the spec's channels; a tuple or list of 3 (or 2) ints likewise."""
    if isinstance(value, str):
        match = _SHAPE.fullmatch(value)
        parts = [g for g in match.groups() if g is not None] if match else None
    elif isinstance(value, (tuple, list)):
        parts = list(value)
    else:
        parts = None
    numbers = [_positive(p) for p in parts] if parts is not None and len(parts) in (2, 3) else None
    if numbers is None or None in numbers:
        raise ResdslError(f"`{flag}`: expected CxHxW (channels x height x width) or HxW (keeping the channels), "
                          "each a positive whole number", span,
                          hint="e.g. --set input=1x28x28, or --set input=32x32 (it replaces this `input` line)")
    if len(numbers) == 2:
        if old is None:
            raise ResdslError(f"`{flag}` gives no channels, and the spec has no input shape to keep them from",
                              span, hint="give the whole shape: CxHxW")
        return (old[0], numbers[0], numbers[1])
    return (numbers[0], numbers[1], numbers[2])


Number = int | float
Value = Number | Kind  # what a name may hold: a number, or a layer kind (a block's `act = relu`)
# What a block's expressions may read of its place in the network, beside its parameters.
POSITION = ("block_index", "num_blocks")


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
            raise ResdslError(f"unknown name `{expr.name}`", expr.span, hint=_suggest(expr.name, env))
        return kind
    if isinstance(expr, ast.Neg):
        return -_operand(expr.operand, env)
    lhs, rhs = _operand(expr.lhs, env), _operand(expr.rhs, env)
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
    if isinstance(value, float):
        raise ResdslError(f"{what} must be an integer, not {value!r}", expr.span,
                          hint="integers are written without a decimal point; floats are for rates")
    return value


def _suggest(name: str, names: Iterable[str], what: str = "names defined here") -> str:
    names = sorted(names)
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        return f"did you mean `{close[0]}`?"
    return f"{what}: {', '.join(names)}" if names else f"no {what}"


class _Lowering:
    def __init__(self, program: Program, overrides: dict[str, ast.Expr]) -> None:
        self.program, self.overrides = program, overrides
        self.inserting = False  # lowering a shortcut policy's layers, which own `downsample.*`
        self.net = program.network
        self.note: tuple[str, Span] | None = None  # the block being expanded, for error notes
        self.kind_params: dict[str, dict[str, str]] = {}  # block definition -> `kinds(...)`
        self.slots: dict[str, str] = {}  # the expanded block's kind parameters -> the kind each is written for
        self.slot_vars: dict[int, ast.Var] = {}  # id(layer) -> `_slot_var`; the AST outlives the lowering
        self.constant_defaults: dict[str, dict[str, Value]] = {}  # definition -> `_constant_defaults`
        self.defaults_checked: set[str] = set()  # ops whose default attributes `_attrs` has checked
        self.safe_names: set[str] = set()  # labels `_check_name` has passed (`inserting` is fixed per lowering)

    def run(self) -> Graph:
        net = self.net
        if net.input is None:
            raise ResdslError(f"network `{net.name}` has no input shape", net.span,
                              hint="add a line such as `input 3x224x224` (channels x height x width)")
        LIMITS.check_input(net.input, net.input_span)
        if net.classes is None and not net.outputs:
            raise ResdslError(f"network `{net.name}` does not say how many classes it has", net.span,
                              hint="add a line such as `classes 1000` (or `outputs ...` for a backbone)")
        env: dict[str, Value] = {}
        classes = evaluate_int(net.classes, env, "`classes`") if net.classes is not None else 0
        if classes < 1 and net.classes is not None:
            raise ResdslError(
                "a network needs at least one class", net.classes.span, hint="write `classes N` with N >= 1"
            )
        env["classes"] = classes
        lets = {name for name, _, _ in net.lets}
        for name in self.overrides:
            if name not in lets:
                known = ", ".join(sorted(lets)) or "none"
                raise ResdslError(f"`--set {name}=...`: network `{net.name}` has no `let {name}`", net.span,
                                  hint=f"--set replaces the network's `let` constants: {known}")
        for name, expr, span in net.lets:
            if name in env:
                raise ResdslError(f"`{name}` is already defined", span, hint="choose another name")
            env[name] = evaluate(self.overrides.get(name, expr), env)

        self.check_policy(net.shortcut, net.shortcut_span)
        g = self.graph = Graph(net.name, classes, net.classes.span if net.classes is not None else None)
        g.policies = dict(self.program.policies)
        self.top_names = _Names()
        current = g.add(INPUT, "input", [], span=net.input_span, shape=net.input)
        current = self._body(net.stem, "", current, env, block_input=None, policy=net.shortcut)
        # Stage arguments and block bodies may use the block's index in the network and the
        # network's block count: drop-path rates that grow with depth (Huang et al. 2016).
        self.num_blocks = sum(evaluate_int(s.repeat, env, "a stage's block count") for s in net.stages)
        for stage in net.stages:
            current = self._stage(stage, current, env)
        current = self._body(net.head, "", current, env, block_input=None, policy=net.shortcut)
        g.output = current
        self._outputs(net)
        return g

    def _outputs(self, net: ast.Network) -> None:
        """`outputs a, b`: each a stage (its last block's output) or a stem/head layer."""
        g = self.graph
        seen: set[str] = set()
        for name, span in net.outputs:
            if name in seen:
                raise ResdslError(f"`{name}` is an output twice", span, hint="name each output once")
            seen.add(name)
            if name in g.stages:
                g.outputs.append((name, g.blocks[g.stages[name].blocks[-1]].output))
            elif name in g and not g.node(name)["scope"] and g.node(name)["op"] != "input":
                g.outputs.append((name, name))
            else:
                names = list(g.stages) + [n for kind, n in g.layout if kind == "node"]
                raise ResdslError(f"`{name}` is neither a stage nor a stem or head layer", span,
                                  hint=_suggest(name, names, "stages and layers"))
        if g.outputs and net.head and g.output not in {node for _, node in g.outputs}:
            raise ResdslError("the head's result is not among the outputs", net.outputs_span,
                              hint=f"add `{g.node(g.output)['label']}` to `outputs`, or drop the head")

    # ---- stages and blocks
    def _stage(self, stage: ast.Stage, current: str, env: dict[str, int]) -> str:
        g = self.graph
        self._claim(stage.name, self.top_names, stage.span, "")
        definition = self.program.blocks.get(stage.call.block)
        if definition is None:
            raise ResdslError(f"unknown block `{stage.call.block}`", stage.call.span,
                              hint=_suggest(stage.call.block, self.program.blocks))
        repeat = evaluate_int(stage.repeat, env, "a stage's block count")
        if repeat < 1:
            raise ResdslError(f"a stage needs at least one block, not {repeat}", stage.repeat.span,
                              hint="write `x N` with N >= 1, or drop the stage")
        LIMITS.check_blocks(len(g.blocks) + repeat, stage.repeat.span)
        stride = evaluate_int(stage.stride, env, "a stage's stride") if stage.stride is not None else 1
        if stride < 1:
            raise ResdslError(f"stride must be at least 1, not {stride}", stage.stride.span,
                              hint="`stride 1` keeps the resolution, `stride 2` halves it")
        params = {p.name for p in definition.params}
        if "stride" in {a.name for a in stage.call.args if isinstance(a, ast.Keyword)}:
            raise ResdslError("the stage sets the stride of its first block", stage.call.span,
                              hint=f"write `stage {stage.name}: ... x N stride S` instead")
        if stride != 1 and "stride" not in params:
            raise ResdslError(f"block `{definition.name}` has no `stride` parameter", stage.stride.span,
                              hint=f"add `stride = 1` to the parameters of `{definition.name}` "
                                   "and use it as a conv's `s=stride`")
        policy = (
            self.check_policy(stage.shortcut, stage.shortcut_span) if stage.shortcut else self.net.shortcut
        )
        g.signatures.setdefault(definition.name, BlockSignature(
            definition.name, tuple((p.name, p.default) for p in definition.params),
            tuple((item.name, item.value) for item in definition.body if isinstance(item, ast.Let))))
        g.stages[stage.name] = Stage(stage.name)
        g.layout.append(("stage", stage.name))
        for arg in stage.first:
            if arg.name not in params:
                raise ResdslError(f"block `{definition.name}` has no parameter `{arg.name}`", arg.span,
                                  hint=_suggest(arg.name, params))
            if arg.name == "stride":
                raise ResdslError("`first(stride=...)` is the stage's `stride`", arg.span,
                                  hint=f"write `stage {stage.name}: ... x N stride S`")
        kinds = self.kinds(definition)
        first = {arg.name: self._argument(definition, arg.name, arg.value, env, kinds) for arg in stage.first}
        for index in range(repeat):
            path = f"{stage.name}.{index}"
            extra = {"stride": stride if index == 0 else 1} if "stride" in params else {}
            if index == 0:
                extra.update(first)
            position = {"block_index": len(g.blocks), "num_blocks": self.num_blocks}
            block_env = self._bind(definition, stage.call, {**position, **env}, extra)
            instance = BlockInstance(path, definition.name, stage.name, index, current, span=stage.span,
                                     args={p.name: block_env[p.name] for p in definition.params})
            g.blocks[path] = instance
            g.stages[stage.name].blocks.append(path)
            self.note = (f"block {path} (`{definition.name}`) of stage `{stage.name}`", stage.span)
            self.slots = kinds
            current = self._body(definition.body, path, current, block_env, block_input=current,
                                 policy=policy)
            self.note, self.slots = None, {}
            instance.output = current
        return current

    def kinds(self, definition: ast.BlockDef) -> dict[str, str]:
        """`kinds.kind_params` of a definition, worked out once."""
        if definition.name not in self.kind_params:
            self.kind_params[definition.name] = kind_params(definition)
        return self.kind_params[definition.name]

    def _argument(self, definition: ast.BlockDef, name: str, expr: ast.Expr, env: dict[str, Value],
                  kinds: dict[str, str]) -> Value:
        """A block argument's value, a layer kind where its parameter takes one, else a number."""
        if name in kinds:
            error = unknown_kind(expr, env)
            if error is not None:
                raise error
        value = evaluate(expr, env)
        check_argument(definition.name, name, value, kinds, expr.span)
        return value

    def _bind(self, definition: ast.BlockDef, call: ast.Call, env: dict[str, Value],
              extra: dict[str, Value]) -> dict[str, Value]:
        names = [p.name for p in definition.params]
        kinds = self.kind_params.get(definition.name) or self.kinds(definition)
        values: dict[str, Value] = {}
        positional = [a for a in call.args if isinstance(a, ast.Positional)]
        if len(positional) > len(names):
            raise ResdslError(f"block `{definition.name}` takes {len(names)} parameters, "
                              f"got {len(positional)}", call.span,
                              hint=f"its parameters are ({', '.join(names)})",
                              notes=(("defined here", definition.span),))
        for name, arg in zip(names, positional):
            values[name] = self._argument(definition, name, arg.value, env, kinds)
        for arg in call.args:
            if isinstance(arg, ast.Keyword):
                if arg.name not in names:
                    raise ResdslError(f"block `{definition.name}` has no parameter `{arg.name}`",
                                      arg.span, hint=_suggest(arg.name, names))
                if arg.name in values:
                    raise ResdslError(
                        f"parameter `{arg.name}` is given twice", arg.span, hint="keep one of them"
                    )
                values[arg.name] = self._argument(definition, arg.name, arg.value, env, kinds)
        values.update(extra)
        scope = {
            "classes": env["classes"],
            "block_index": env["block_index"],
            "num_blocks": env["num_blocks"],
        }
        constants = self.constant_defaults.get(definition.name) or self._constant_defaults(definition)
        for param in definition.params:  # defaults may refer to earlier parameters
            if param.name not in values:
                if param.default is None:
                    raise ResdslError(f"block `{definition.name}` needs a value for `{param.name}`",
                                      call.span, notes=(("defined here", definition.span),))
                value = constants.get(param.name)
                values[param.name] = evaluate(param.default, {**scope, **values}) if value is None else value
            scope[param.name] = values[param.name]
        return scope

    def _constant_defaults(self, definition: ast.BlockDef) -> dict[str, Value]:
        """The defaults that read no name but a layer kind's (`stride = 1`, `act = relu`), worked
        out once per definition rather than once per block."""
        if definition.name not in self.constant_defaults:
            kinds = self.kinds(definition)
            self.constant_defaults[definition.name] = {
                p.name: evaluate(p.default, {}) for p in definition.params if p.default is not None
                and all(v.name == kinds.get(p.name) for v in ast.variables(p.default))}
        return self.constant_defaults[definition.name]

    # ---- layers
    def _body(self, layers: tuple, scope: str, current: str, env: dict[str, Value],
              block_input: str | None, policy: str) -> str:
        ctx = _Body(scope, self.top_names if scope == "" else _Names(), block_input, policy)
        if block_input is not None:
            ctx.values["input"] = block_input
        current = self._statements(layers, ctx, current, env, prefix="")
        for label, (node, span) in ctx.branches.items():
            if not self.graph.users(node):
                self._located(
                    ResdslError(
                        f"branch `{label}` is never joined",
                        span,
                        hint=f"join it with `mul {label}`, `add {label}` or `concat {label}`",
                    )
                )
        return current

    def _statements(
        self, layers: tuple, ctx: "_Body", current: str, env: dict[str, Value], prefix: str
    ) -> str:
        for layer in layers:
            try:
                if isinstance(layer, ast.Let):  # for the layers after it
                    env = {**env, layer.name: evaluate_number(layer.value, env, f"`let {layer.name}`")}
                elif isinstance(layer, ast.Branch):
                    self._branch(layer, ctx, current, env, prefix)
                else:
                    current = self._layer(layer, ctx, current, env, prefix)
            except ResdslError as exc:
                self._located(exc)
        return current

    def _located(self, exc: ResdslError) -> None:
        """Re-raise `exc` with a note naming the block being expanded (and, for a statement of the
        prelude, pointing at the user's stage instead)."""
        d = exc.diagnostic
        if self.note is None or d.notes:
            raise exc
        if in_prelude(d.span):
            note = (
                f"in {self.note[0]}, at `{d.span.source_line().strip()}` (prelude line {d.span.line})",
                None,
            )
            raise ResdslError(d.message, self.note[1], d.hint, (note,)) from None
        raise ResdslError(d.message, d.span, d.hint, ((f"in {self.note[0]}", self.note[1]),)) from None

    def _branch(
        self, branch: ast.Branch, ctx: "_Body", current: str, env: dict[str, Value], prefix: str
    ) -> None:
        if ctx.block_input is None:
            raise ResdslError("branches belong in blocks", branch.span,
                              hint="write the branch in a `block`, and join it there")
        source = current
        if branch.source is not None:
            if branch.source not in ctx.values:
                raise ResdslError(f"`{branch.source}` names no value here", branch.source_span,
                                  hint=_suggest(branch.source, ctx.values, "values defined before it"))
            source = ctx.values[branch.source]
        if not branch.body:
            raise ResdslError(
                f"branch `{branch.label}` is empty", branch.span, hint="give it at least one layer"
            )
        label = prefix + branch.label
        self._check_name(label, branch.span)  # its layers may all be unlabeled: check the container
        if label in ctx.used or label in ctx.values:
            self._claim(label, ctx.used, branch.span, ctx.scope)  # reports the collision
        outer, ctx.branch = ctx.branch, label
        end = self._statements(branch.body, ctx, source, env, prefix=label + ".")
        ctx.branch = outer
        ctx.used.containers.setdefault(label, label)
        ctx.used.add(label)
        ctx.values[label] = end
        ctx.branches[label] = (end, branch.span)

    def _layer(
        self, layer: ast.Layer, ctx: "_Body", current: str, env: dict[str, Value], prefix: str
    ) -> str:
        g, scope = self.graph, ctx.scope
        if layer.op in JOINS:
            return self._join(layer, ctx, current, prefix)
        op, exprs = layer.op, {}
        if op in env:  # a parameter: the layer kind it holds
            kind = env[op]
            if kind.__class__ is not Kind or self.slots.get(op, kind.op) != kind.op:
                self._check_slot(layer, kind, env)
            if kind.op == NONE:
                return current
            exprs["op"], op = self.slot_vars.get(id(layer)) or self._slot_var(layer), kind.op
        info = OPS.get(op)
        if info is None or info.kind != LAYER:  # `info.user`, without a call per layer
            known = sorted([op for op, i in OPS.items() if i.user] + list(JOINS))
            hint = _suggest(layer.op, known, "known layers")
            if layer.op in self.program.blocks:
                raise ResdslError(f"`{layer.op}` is a block, and blocks cannot be used as layers",
                                  layer.op_span, hint=f"blocks do not nest; use `{layer.op}` in a stage: "
                                                      f"`stage NAME: {layer.op}(...) x N`")
            raise ResdslError(f"unknown layer `{layer.op}`", layer.op_span, hint=hint)
        attrs = self._attrs(layer, info, env, exprs)
        label = self._label(layer, prefix, ctx, layer.op)
        name = f"{scope}.{label}" if scope else label
        if not scope:
            g.layout.append(("node", name))
        ctx.values[label] = name
        return g.add(name, op, [current], span=layer.span, scope=scope, label=label,
                     exprs=exprs if scope else None, branch=ctx.branch, **attrs)

    def _check_slot(self, layer: ast.Layer, kind: Value, env: dict[str, Value]) -> None:
        """A layer written as a parameter (`act1: act`) needs a layer kind there, one that fits the
        slot where it is not the kind the slot is written for."""
        if kind.__class__ is not Kind:
            raise ResdslError(f"`{layer.op}` is {kind!r} here, a number, not a layer kind", layer.op_span,
                              hint="a parameter stands for a layer where its default is a kind (`act = relu`)")
        self._fits(layer, kind, self.slots[layer.op], env)

    def _slot_var(self, layer: ast.Layer) -> ast.Var:
        """`exprs["op"]` of a kind slot's node: the parameter, as written (made once per slot, not
        once per block: a stage of 20,000 blocks shares them)."""
        var = self.slot_vars[id(layer)] = ast.Var(layer.op, layer.op_span)
        return var

    def _fits(self, layer: ast.Layer, given: Kind, default: str, env: dict[str, Value]) -> None:
        """A kind other than the one a slot is written for must take the slot's arguments and give
        the output shape that one gives (`norm = conv` does neither where `bn` stood)."""
        if given.op == default:
            return
        slot = f"{layer.label or layer.op}: {layer.op}"
        try:
            attrs = None if given.op == NONE else self._attrs(layer, OPS[given.op], env, {})
        except ResdslError as exc:
            raise misfit(given, default, slot, exc.diagnostic.message, layer.span) from None
        try:
            expected = None if default == NONE else self._attrs(layer, OPS[default], env, {})
        except ResdslError:  # the slot does not fit its own kind: its layer reports that
            return
        why = shape_change(given.op, attrs, default, expected)
        if why is not None:
            raise misfit(given, default, slot, why, layer.span)

    def _attrs(self, layer: ast.Layer, info: OpDef, env: dict[str, Value],
               exprs: dict[str, ast.Expr]) -> dict[str, Number]:
        """The layer's attributes (ints, or floats where the op takes a rate); `exprs` gets the
        expressions they were written as."""
        defaults, positional = info.defaults, info.positional
        attrs: dict[str, Number] = {}
        spans: dict[str, Span] = {}
        for arg in layer.args:
            if isinstance(arg, ast.Positional):
                if positional is None or positional in attrs:
                    what = "no" if positional is None else "one"
                    raise ResdslError(f"`{info.name}` takes {what} positional argument", arg.span,
                                      hint=_attr_hint(info))
                key = positional
            else:
                # `s=stride` is `stride=stride`, unless the op has an attribute of that name (lrn's `k`)
                key = info.resolve(arg.name)
                if key is None:
                    written = SHORT_ATTRS.get(arg.name, arg.name)
                    raise ResdslError(f"`{info.name}` has no attribute `{written}`", arg.span,
                                      hint=_attr_hint(info))
                if key in attrs:
                    raise ResdslError(f"attribute `{key}` is given twice", arg.span, hint="keep one of them")
            if key in info.floats:
                attrs[key] = float(evaluate_number(arg.value, env, f"`{key}` of `{info.name}`"))
            else:
                value = evaluate(arg.value, env)
                # Checked (and the message made) only where it is not an int: 240,000 times in a
                # stage of 20,000 blocks.
                attrs[key] = value if value.__class__ is int else evaluate_int(arg.value, env,
                                                                                f"`{key}` of `{info.name}`")
            exprs[key] = arg.value
            spans[key] = arg.span
        for key, default in defaults.items():
            if key not in attrs:
                if default is None:
                    raise ResdslError(f"`{info.name}` needs `{key}`", layer.span,
                                      hint=_attr_hint(info))
                attrs[key] = default
        # An op's defaults are checked the first time it is used; after that only what a layer gives.
        checked = info.name in self.defaults_checked
        self.defaults_checked.add(info.name)
        for key, value in attrs.items():
            if checked and key not in spans:
                continue
            span = spans.get(key, layer.span)
            if key in info.floats:
                bounds = info.attr(key).range
                if bounds is not None and value not in bounds:
                    raise ResdslError(f"`{key}` must be {bounds.describe()}, not {value:g}", span,
                                      hint=f"`{key}` of `{info.name}` is {bounds.why}")
                continue
            if key in info.flags:
                if value not in (0, 1):
                    raise ResdslError(f"`{key}` is 0 or 1, not {value}", span, hint=f"`{key}=1` turns it on")
                continue
            low = info.attr(key).low
            if value < low:
                raise ResdslError(f"`{key}` must be at least {low}, not {value}", span,
                                  hint=_attr_hint(info))
            LIMITS.check_attr(key, value, span)
        if info.complete is not None:
            info.complete(attrs)
        return attrs

    def _label(self, layer: ast.Layer, prefix: str, ctx: "_Body", base: str) -> str:
        if layer.label is None:
            return _fresh(prefix + base, ctx.used)
        label = prefix + layer.label
        self._claim(label, ctx.used, layer.span, ctx.scope)
        return label

    def _check_name(self, label: str, span: Span) -> None:
        """Every part of a (dotted) name must be safe as a PyTorch module attribute. A label found
        safe once is not checked again: every block of a stage repeats its definition's labels."""
        if label in self.safe_names:
            return
        self._check_parts(label, span)
        self.safe_names.add(label)

    def _check_parts(self, label: str, span: Span) -> None:
        parts = label.split(".")
        for i, part in enumerate(parts):
            if i and part.isdigit():  # `features.0`: a position in a container
                continue
            generated = i == 0 and part in SHORTCUT_MODULES and not self.inserting
            if keyword.iskeyword(part) or part in MODULE_MEMBERS or generated:
                raise ResdslError(f"`{part}` cannot name a layer: the generated PyTorch code uses it",
                                  span, hint=f"choose another name, e.g. `{part}_`")
            if i and part in CONTAINER_MEMBERS:  # a key of nn.ModuleDict or nn.Sequential
                container = ".".join(parts[:i])
                raise ResdslError(f"`{part}` cannot name a layer inside `{container}`: PyTorch's containers "
                                  f"have a method `{part}`", span,
                                  hint=f"choose another name, e.g. `{container}.{part}_`")
            if part.startswith("_"):  # nn.Module keeps its state in _modules, _parameters, _version...
                raise ResdslError(f"`{part}` cannot name a layer: names starting with `_` belong to PyTorch",
                                  span, hint=f"choose another name, e.g. `{part.strip('_') or 'layer'}_`")

    def _claim(self, label: str, used: _Names, span: Span, scope: str) -> None:
        """Take `label` in its scope. A dotted label (`conv1.0`) is a module inside containers
        (`conv1`): a container cannot also be a layer, and each part must be a safe name."""
        parts = label.split(".")
        self._check_name(label, span)
        where = f"block {scope}" if scope else "the network"
        if label in used.containers:
            raise ResdslError(
                f"`{label}` names a layer, but also holds `{used.containers[label]}` in {where}",
                span,
                hint="a name is either a layer or a container of layers (`x.0`, `x.1`)",
            )
        if label in used:
            raise ResdslError(f"`{label}` names two layers in {where}", span,
                              hint="every layer in a block (and every stem/head layer and stage) "
                                   "needs its own name")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if prefix in used and prefix not in used.containers:
                raise ResdslError(f"`{label}` would be inside `{prefix}`, which is a layer in {where}", span,
                                  hint="a name is either a layer or a container of layers (`x.0`, `x.1`)")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            used.add(prefix)
            used.containers.setdefault(prefix, label)
        used.add(label)

    def _join(self, layer: ast.Layer, ctx: "_Body", current: str, prefix: str) -> str:
        """`add shortcut [POLICY] [from LABEL]`, or a join of named values: `add NAME`, `mul NAME`,
        `concat NAME...`."""
        if ctx.block_input is None:
            what = "add shortcut" if layer.op == "add" else layer.op
            raise ResdslError(f"`{what}` only works inside a block", layer.span,
                              hint="residual joins belong in a `block` definition")
        words = []
        for arg in layer.args:
            written = _written(arg.span) if isinstance(arg, ast.Keyword) else ""  # reads the whole file
            if SHORT_ATTR.fullmatch(written):
                raise ResdslError(f"`{written}` reads as the attribute `{arg.name}={written[1:]}` here, not as a "
                                  "name", arg.span, hint=f"a join cannot name a label that looks like `k3`, `s2`, "
                                                         f"`p1` or `g32`: rename `{written}`")
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

    def _value(self, word: ast.Var, ctx: "_Body") -> str:
        if word.name not in ctx.values:
            raise ResdslError(f"`{word.name}` names no value here", word.span,
                              hint=_suggest(word.name, ctx.values, "values defined before it"))
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


def _written(span: Span) -> str:
    """The text of a one-line span, as the user wrote it."""
    if span.end_line != span.line:
        return ""
    return span.source_line()[span.column - 1:span.end_column - 1]




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


@dataclass
class _Body:
    """One body being lowered: its scope, its names, and the values statements can name."""
    scope: str
    used: "_Names"
    block_input: str | None
    policy: str
    values: dict[str, str] = field(default_factory=dict)  # label -> node
    branches: dict[str, tuple[str, Span]] = field(default_factory=dict)  # label -> (last node, where)
    branch: str = ""  # the branch being lowered, if any


def lower_policy(graph: Graph, policy: ast.PolicyDef, scope: str, source: str, channels: int,
                 stride: int) -> str:
    """A user-defined policy's layers inside block `scope`, reading `source`, for `channels`
    output channels and `stride`; returns its last node. Its layers are named `downsample.*`, as
    torchvision's and timm's shortcut modules are."""
    lowering = _Lowering(Program(None, {}, policies=graph.policies), {})  # type: ignore[arg-type]
    lowering.graph, lowering.inserting = graph, True
    used = _Names()
    used.update(graph.node(n)["label"] for n in graph.scope_nodes(scope))
    ctx = _Body(scope, used, None, "identity")
    env = {policy.params[0].name: channels, policy.params[1].name: stride}
    current = source
    for layer in policy.body:
        if layer.label is not None and not layer.label.startswith("downsample."):
            raise ResdslError(f"a policy's layers are named `downsample.*`, not `{layer.label}`", layer.span,
                              hint="the block keeps its shortcut module as `downsample`, as torchvision does")
        if layer.label is not None and layer.label.count(".") > 1:  # keys of one nn.Sequential
            raise ResdslError(f"a policy's layers are named `downsample.KEY`, with no `.` in KEY: not "
                              f"`{layer.label}`", layer.span,
                              hint="its layers are one nn.Sequential: `downsample.0`, `downsample.conv`, ...")
        if layer.op in JOINS:
            raise ResdslError(f"`{layer.op}` cannot be part of a shortcut policy", layer.span,
                              hint="a policy is a chain of layers applied to the shortcut")
        current = lowering._layer(layer, ctx, current, env, prefix="" if layer.label else "downsample.")
    if current == source:
        raise ResdslError(
            f"policy `{policy.name}` has no layers", policy.span, hint="give it at least one layer"
        )
    return current


class _Names(set):
    """The labels taken in one scope, with the next free suffix per base name, so that naming
    N unlabeled layers is linear, not quadratic."""

    def __init__(self) -> None:
        super().__init__()
        self.next: dict[str, int] = {}
        self.containers: dict[str, str] = {}  # container path -> the first label inside it


def _fresh(base: str, used: _Names) -> str:
    n = used.next.get(base, 0)
    label = f"{base}_{n}" if n else base
    while label in used:
        n += 1
        label = f"{base}_{n}"
    used.next[base] = n + 1
    used.add(label)
    return label


def _attr_hint(info: OpDef) -> str:
    keys = ", ".join(f"{a.name}=" for a in info.attrs) or "none"
    shorts = " ".join(f"{a.short}{a.example}" for a in info.attrs if a.short)
    return f"`{info.name}` takes: {keys}" + (f" (short forms: {shorts})" if shorts else "")
