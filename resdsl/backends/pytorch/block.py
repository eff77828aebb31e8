"""One block definition's class body, `__init__` and `forward`, emitted from one of its blocks
(the prototype), with the checks that let it stand for the definition's other blocks."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

from ... import ast
from ...ir import GATE, Graph, Node
from .converters import CONVERTERS, Expression, Join, Layer, is_view, module_call, module_of
from .layout import Step, assemble, layer_step
from .lines import call
from .names import namespace
from .shortcuts import inserted
from .symbols import IN, Inexpressible, Sym, block_env, render


@dataclass
class _Emitted:
    """One block's class body as emitted, and the checks that make it stand for other blocks."""
    init: list[str]
    forward: list[str]
    checks: list[tuple[Sym, Callable[[str], int]]]  # (sym, block path -> the integer it must be there)
    shortcut: str | None  # the name of the shortcut module handed in, if one is
    structure: tuple


OPTIONAL_ADD = "<optional add>"  # the structure entry of an add a flag turns off


class BlockEmitter:
    """Emits a block definition's class body from one of its blocks (the prototype)."""

    def __init__(self, graph: Graph, params: dict[str, str], literal: bool,
                 kinds: dict[str, bool] | None = None, input_returned: bool = False) -> None:
        self.graph, self.params, self.literal = graph, params, literal
        self.kinds = {} if literal or kinds is None else kinds  # see `kind_arguments`
        # Some block of the class gets a value forward returns (a named stage output) as its input:
        # no layer of the class overwrites its input, so every block keeps the one class.
        self.input_returned = input_returned

    def emit(self, path: str, shortcut: str | None, flag: str | None = None) -> _Emitted:
        """The class body of block `path`; `shortcut`: the name it keeps a handed-in shortcut under;
        `flag`: the attribute that says whether its residual add runs (`shortcut identity_or_none`
        with the add in some blocks of the class only, torchvision's `use_res_connect`)."""
        g = self.graph
        block = g.blocks[path]
        self.env = block_env(g, path)
        self.proto = path
        channels = {block.input: self._channels(path)}
        entries, steps, checks, structure = [], [], [], []
        var = {block.input: "x"}
        nodes = g.scope_nodes(path)
        # Gathered once: asking every node whether some add reads it was quadratic in the block's size.
        self.add_sources = {g.node(a).attrs.get("source") for a in nodes if g.node(a).op == "add"}
        self.variables: dict[str, str] = {}  # label (of a kept value or a branch) -> its variable
        self.locals = namespace()
        emitted = [n for n in nodes if g.node(n).role is None]
        self.following = dict(pairwise(emitted))  # the statement after each, where `out` stays live
        for name in nodes:
            node = g.node(name)
            label, op, a = node.label, node.op, node.attrs
            if node.role is not None:  # inserted by shortcut legalization: handed in, or the gate
                continue
            source = g.inputs(name)[0]
            target = self._target(name, path)
            made = self._statement(name, shortcut, flag, var, target, channels, checks)
            if made is not None:
                lines, label = made
                steps.append(Step(None, lines, name, source))
                var[name] = target
                if op == "concat":
                    channels[name] = _concat_channels([channels[i] for i in g.inputs(name)], g.shape(name)[0])
                elif op != "chunk":  # `_expression` gave a chunk's
                    channels[name] = channels[source]
                structure.append((label, op, tuple(lines)))
                continue
            layer = Layer(self._attr_sym(node), channels[source], g.shape(source))
            kind = node.exprs.get("op")  # the parameter its kind came from, if a class argument
            kind = kind.name if kind is not None and kind.name in self.kinds else None
            inplace = self.kinds[kind] if kind else None
            if source == block.input and self.input_returned:
                inplace = False
            ctor, args = module_call(g, op, layer, a, source, inplace)
            if kind:
                ctor = self.params[kind]
            entries.append((label, ctor, args))
            steps.append(layer_step(label, op, name, source, var[source], target, layer.in_shape))
            var[name] = target
            channels[name] = layer.sym("out") if op in ("conv", "fc", "linear") else channels[source]
            checks += self._checks(label, op, layer, source)
            structure.append((label, f"<{kind}>" if kind else op, tuple(args), target))
        init, forward = assemble(g, entries, steps)
        gate = self._gate(path, channels, checks)
        if gate:
            init += gate
        forward.append(f"return {var[block.output]}")
        return _Emitted(init, forward, checks, shortcut, tuple(structure))

    def _statement(self, name: str, shortcut: str | None, flag: str | None, var: dict, target: str,
                   channels: dict, checks: list) -> tuple[list[str], str] | None:
        """A node the class writes as statements, not as a module (an add, another join, a chunk):
        its lines and the label its structure entry takes; None for a module."""
        g = self.graph
        node, source = g.node(name), g.inputs(name)[0]
        op, a, label = node.op, node.attrs, node.label
        if op == "add" and a["policy"] != "join":
            lines = self._add(name, var[source], shortcut, var.get(a.get("source"), "x"), target)
            if flag is not None and g.blocks[node.scope].residual is not None:
                if target != var[source]:  # skipped, its result must already be where it goes
                    raise Inexpressible(f"{name}: an optional add writes {target}, not {var[source]}")
                lines, label = [f"if self.{flag}:", *(f"    {line}" for line in lines)], OPTIONAL_ADD
        elif isinstance(CONVERTERS[op], Join):
            join, operands = CONVERTERS[op], [var[i] for i in g.inputs(name)]
            lines = join.write(operands, target) if join.statements else [f"{target} = " + join.write(operands)]
        elif isinstance(CONVERTERS[op], Expression):
            lines = self._expression(name, source, var[source], target, channels, checks)
        else:
            return None
        return lines, label

    def _expression(self, name: str, source: str, x: str, target: str, channels: dict, checks: list) -> list[str]:
        """A layer written as an expression of its input (a chunk), its attributes checked against
        every block the class stands for, as a module's are."""
        node = self.graph.node(name)
        converter = CONVERTERS[node.op]
        layer = Layer(self._attr_sym(node), channels[source], self.graph.shape(source))
        channels[name] = converter.channels(layer, node.attrs)
        checks.append((channels[name], lambda p, label=node.label: self.graph.shape(f"{p}.{label}")[0]))
        for key in converter.written:  # literal in `forward`, which sees no constructor argument
            checks.append((Sym.literal(node.attrs[key]),
                           lambda p, k=key, label=node.label: self.graph.node(f"{p}.{label}").attrs[k]))
        return [f"{target} = {converter.write(x, layer, node.attrs)}"]

    def _target(self, name: str, path: str) -> str:
        """The variable a node's value goes to: `out` along the block's chain; a branch's own name
        (`se`) along a branch; its label where it is read again later (SE's input, the
        pre-activation a projection reads)."""
        g = self.graph
        node = g.node(name)
        readers = [u for u in g.users(name) if g.node(u).scope == path]
        # A value read after other statements, outside any branch (SqueezeNet's unlabeled paths),
        # would be overwritten in `out` before its reader runs.
        later = len(readers) == 1 and not node.branch and readers[0] != self.following.get(name)
        kept = len(readers) > 1 or name in self.add_sources or later
        if kept:
            return self._variable(node.label)
        if node.branch:
            return self._variable(node.branch)
        return "out"

    def _variable(self, label: str) -> str:
        """One variable per label, never another label's: `out` and `out_` would both be `out_`."""
        if label not in self.variables:
            self.variables[label] = self.locals.create_name(label)  # se.fc1 -> se_fc1
        return self.variables[label]

    def _channels(self, path: str) -> Sym:
        block = self.graph.blocks[path]
        if self.literal:
            return Sym.literal(self.graph.shape(block.input)[0])
        return Sym(self.params[IN], 4, ast.Var(IN, None))

    def _attr_sym(self, node: Node) -> Callable[[str], Sym]:
        def sym(key: str) -> Sym:
            expr = node.exprs.get(key)
            if expr is None or self.literal:
                return Sym.literal(node.attrs[key])
            return render(expr, self.params, self.env)
        return sym

    def _checks(self, label: str, op: str, layer: Layer, source: str) -> list:
        g = self.graph
        out = [(layer.channels, lambda p, s=source, proto=self.proto: g.shape(_peer(g, s, p, proto))[0])]
        for key in module_of(op).written:
            out.append((layer.sym(key), lambda p, k=key: g.node(f"{p}.{label}").attrs.get(k)))
        return out

    def _add(self, name: str, residual: str, shortcut: str | None, source: str, target: str) -> list[str]:
        """`add shortcut`: the block input, or what the handed-in shortcut (`downsample`) makes of `source`."""
        g = self.graph
        lines, identity = [], "x"
        if shortcut:
            lines, identity = ["identity = x", f"if self.{shortcut} is not None:",
                               f"    identity = self.{shortcut}({source})"], "identity"
        if g.node(name).attrs["gated"]:
            return lines + ["t = torch.sigmoid(self.gate(x))",
                            f"{target} = {residual} * t + {identity} * (1.0 - t)"]
        if residual == "out" == target and len(g.users(g.inputs(name)[0])) == 1 and not is_view(g, g.inputs(name)[0]):
            return lines + [f"out += {identity}"]  # in place, as torchvision does: the branch's value is dead
        return lines + [f"{target} = {residual} + {identity}"]

    def _gate(self, path: str, channels: dict, checks: list) -> list[str]:
        """The highway gate, a 1x1 conv of the block input with a bias, its stride the shortcut's."""
        g = self.graph
        gates = inserted(g, path, GATE)
        if not gates:
            return []
        gate = gates[0]
        add = next(u for u in g.users(gate) if g.node(u).op == "add")
        residual = channels[g.inputs(add)[0]]
        stride = self._stride_sym(g.node(gate).attrs["stride"])
        checks += [(residual, lambda p: g.node(inserted(g, p, GATE)[0]).attrs["out"]),
                   (stride, lambda p: g.node(inserted(g, p, GATE)[0]).attrs["stride"])]
        args = [self._channels(path).text, residual.text, "kernel_size=1"] + ([f"stride={stride.text}"]
                                                                              if stride.text != "1" else [])
        return call("self.gate = nn.Conv2d", args, 8)

    def _stride_sym(self, value: int) -> Sym:
        # A stride the shortcut derived from shapes: the block's own `stride` where it has one.
        if not self.literal and "stride" in self.params:
            return Sym(self.params["stride"], 4, ast.Var("stride", None))
        return Sym.literal(value)


def _concat_channels(parts: list[Sym], total: int) -> Sym:
    """A concat's channels in the class's terms: its operands' summed (`width * 4` where all four
    are `width`, as Res2Net's chunks), or the literal where some operand's is one."""
    if any(part.expr is None for part in parts):
        return Sym.literal(total)
    if len({part.text for part in parts}) == 1:
        one = parts[0]
        text = one.text if one.prec >= 2 else f"({one.text})"
        return Sym(f"{text} * {len(parts)}", 2, ast.BinOp("*", one.expr, ast.Int(len(parts), None), None))
    expr = parts[0].expr
    for part in parts[1:]:
        expr = ast.BinOp("+", expr, part.expr, None)
    return Sym(" + ".join(part.text for part in parts), 1, expr)


def _peer(graph: Graph, node: str, path: str, prototype: str) -> str:
    """The node of block `path` that is to it what `node`, a node of block `prototype` or that
    block's input, is to `prototype`."""
    if graph.node(node).scope != prototype:
        return graph.blocks[path].input  # the prototype's input: it comes from outside its block
    peer = f"{path}.{graph.node(node).label}"
    if peer not in graph and graph.node(node).op == "add":  # an optional add `path` leaves out
        return _peer(graph, graph.inputs(node)[0], path, prototype)
    return peer
