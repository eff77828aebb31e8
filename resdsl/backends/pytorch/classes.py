"""Which blocks share a class: the symbolic-class search. A definition gets one class whose
constructor takes the block's parameters where the spec's expressions, checked against every
block's integers, explain every block; else one class per distinct body, with literal integers.
Also each class's signature, defaults, lets and the call that makes each block."""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

from ... import ast
from ...diagnostics import ResdslError
from ...expressions import IN_CHANNELS
from ...ir import Graph
from ...kinds import Kind, kind_of
from ...lower import POSITION, evaluate
from ...ops import fmt_shape
from .block import OPTIONAL_ADD, BlockEmitter
from .converters import constructor, kind_arguments
from .lines import LINE_LIMIT, pack
from .names import class_name, namespace, policy_function
from .shortcuts import shortcut_call, shortcut_name
from .symbols import IN, Inexpressible, block_env, render


@dataclass
class GeneratedClass:
    """One class of the generated module, as the template writes it."""
    name: str
    doc: str
    signature: list[str] = field(default_factory=list)  # physical lines, relative to the class body
    init: list[str] = field(default_factory=list)  # physical lines, relative to the method body
    forward: list[str] = field(default_factory=list)
    returns: str = "Tensor"


class Generator:
    """The blocks' classes (`classes`) and the call that makes each block (`calls`), found by
    `run`; `network.network_class` then writes the network's own class from them."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.names = namespace({policy_function(p) for p in graph.policies})
        self.classes: list[GeneratedClass] = []
        self.calls: dict[str, tuple[str, list[str]]] = {}  # block path -> (class, constructor arguments)
        self.helpers: set[str] = set()
        self.kinds: dict[str, tuple[set[str], dict[str, bool]]] = {}  # definition -> `kind_arguments`

    def run(self) -> None:
        by_definition: dict[str, list[str]] = {}
        for stage in self.graph.stages.values():
            for path in stage.blocks:
                by_definition.setdefault(self.graph.blocks[path].block, []).append(path)
        for definition, paths in by_definition.items():
            self.kinds[definition] = kind_arguments(self.graph, paths)
            if not self._symbolic(definition, paths):
                self._literal(definition, paths)
        for path in self.calls:
            made = shortcut_call(self.graph, path)
            if made:
                self.helpers.add(made.split("(")[0])
        self.policies = sorted(
            {
                self.graph.node(a).attrs["policy"]
                for p in self.calls
                for a in self.graph.scope_nodes(p)
                if self.graph.node(a).op == "add" and self.graph.node(a).attrs.get("applied")
            }
        )

    def _params(self, definition: str) -> dict[str, str]:
        names = namespace({t.container for t in self.graph.policies.values()})  # what a block is handed
        params = {}
        signature = self.graph.signatures[definition]
        for name, _ in signature.params + signature.lets:  # `self` -> `self_`, `print` -> `print_`
            base = name + "_layer" if name in self.kinds[definition][1] else name  # timm's `act_layer`
            params[name] = names.create_name(base)
        params[IN] = names.create_name("in_channels")
        params.setdefault(IN_CHANNELS, params[IN])  # what the spec calls the input's channels
        if "classes" not in params:
            params["classes"] = str(self.graph.classes)  # a network-level name: its value
        return params

    def _symbolic(self, definition: str, paths: list[str]) -> bool:
        """One class whose constructor takes the block's parameters; False where some block's
        integers are not what the spec's expressions give for it."""
        g = self.graph
        params = self._params(definition)
        handed = {shortcut_name(g, p) for p in paths if shortcut_call(g, p)}
        if len(handed) > 1:  # policies naming their modules apart: one class cannot take both
            return False
        shortcut = handed.pop() if handed else None
        gated = {g.node(n).attrs["gated"] for p in paths for n in g.scope_nodes(p)
                 if g.node(n).op == "add"}
        if len(gated) > 1:
            return False
        returned = {node for _, node in g.outputs}
        emitter = BlockEmitter(g, params, literal=False, kinds=self.kinds[definition][1],
                               input_returned=any(g.blocks[p].input in returned for p in paths))
        # `shortcut identity_or_none` with the add made in some blocks only: one class, its add
        # behind a flag the network passes (torchvision's use_res_connect), from a block that has it.
        flag = params["residual"] = self._flag(definition) if _mixed(g, paths) else None
        prototype = next((p for p in paths if g.blocks[p].residual is not False), paths[0])
        try:
            emitted = emitter.emit(prototype, shortcut, flag)
            without = tuple(s for s in emitted.structure if s[0] != OPTIONAL_ADD)
            for path in paths:
                env = block_env(g, path)
                wanted = without if g.blocks[path].residual is False else emitted.structure
                if emitter.emit(path, shortcut, flag).structure != wanted:
                    return False
                if any(sym.value(env) != actual(path) for sym, actual in emitted.checks):
                    return False
        except (Inexpressible, ResdslError):  # unexplained by the spec's expressions: literal classes
            return False
        signature = self._signature(definition, params, shortcut, flag)
        lets = self._lets(definition, params, prototype)
        cls = GeneratedClass(self.names.create_name(class_name(definition)), self._doc(definition, paths),
                     signature=signature, init=self._defaults(definition, params) + lets + emitted.init
                     + ([f"self.{shortcut} = {shortcut}"] if shortcut else [])
                     + ([f"self.{flag} = {flag}"] if flag else []), forward=emitted.forward)
        self.classes.append(cls)
        for path in paths:
            self.calls[path] = self._call(cls.name, definition, params, path, shortcut, flag)
        return True

    def _flag(self, definition: str) -> str:
        """The flag's name, one no parameter of the definition takes."""
        taken = {name for name, _ in self.graph.signatures[definition].params}
        return next(name for name in ("residual", "use_residual", "residual_flag") if name not in taken)

    def _signature(self, definition: str, params: dict[str, str], shortcut: str | None,
                   flag: str | None = None) -> list[str]:
        parts = ["self", f"{params[IN]}: int"]
        keyword_only = False
        for name, default in self._class_params(definition):
            earlier = self._before(definition, name)
            if default is None and not keyword_only and any(d is not None for _, d in earlier):
                parts.append("*")  # a required parameter after one with a default: keyword-only
                keyword_only = True
            kind = "float" if self._real_param(definition, name) else "int"
            if name in self.kinds[definition][1]:
                kind = "type[nn.Module]"
            if default is None:
                parts.append(f"{params[name]}: {kind}")
            elif self._kind_default(definition, default):
                parts.append(f"{params[name]}: {kind} = {constructor(default.name)}")
            elif _constant(default):
                parts.append(f"{params[name]}: {kind} = {render(default, params).text}")
            else:
                parts.append(f"{params[name]}: {kind} | None = None")
        if shortcut:
            parts.append(f"{shortcut}: nn.Module | None = None")
        if flag:
            parts.append(f"{flag}: bool = True")
        head = f"def __init__({', '.join(parts)}) -> None:"
        if 4 + len(head) <= LINE_LIMIT:
            return [head]
        return ["def __init__("] + ["    " + line.strip() for line in pack(parts, 8)] + [") -> None:"]

    def _class_params(self, definition: str) -> tuple[tuple[str, ast.Expr | None], ...]:
        """The definition's parameters as its class takes them. A default that reads the block's
        place in the network (`rate = 0.2 * block_index / num_blocks`) is no default there: the
        class cannot know its place, so the network passes that value to every block."""
        kinds, taken = self.kinds[definition]
        return tuple((name, None if default is not None and _reads_position(default) else default)
                     for name, default in self.graph.signatures[definition].params
                     if name not in kinds or name in taken)

    def _kind_default(self, definition: str, default: ast.Expr) -> bool:
        """Whether a parameter's default is a layer kind itself (`act = relu`), not another's."""
        return (isinstance(default, ast.Var) and kind_of(default.name) is not None
                and default.name not in dict(self.graph.signatures[definition].params))

    def _real_param(self, definition: str, name: str) -> bool:
        """Whether a block parameter holds a float (a rate) in any block of the definition."""
        return any(
            isinstance(b.args.get(name), float) for b in self.graph.blocks.values() if b.block == definition
        )

    def _before(self, definition: str, name: str):
        params = self._class_params(definition)
        return params[:[n for n, _ in params].index(name)]

    def _defaults(self, definition: str, params: dict[str, str]) -> list[str]:
        """`if p is None: p = <expr>` for defaults that use earlier parameters."""
        lines = []
        for name, default in self._class_params(definition):
            if default is not None and not _constant(default) and not self._kind_default(definition, default):
                lines += [f"if {params[name]} is None:",
                          f"    {params[name]} = {render(default, params).text}"]
        return lines

    def _lets(self, definition: str, params: dict[str, str], prototype: str) -> list[str]:
        """`mid = width * groups` for each `let` the class's layers use, in the spec's order."""
        g = self.graph
        used = {v.name for n in g.scope_nodes(prototype) for e in g.node(n).exprs.values()
                for v in ast.variables(e)}
        lets = g.signatures[definition].lets
        for name, expr in reversed(lets):  # a let used makes the lets it reads used
            if name in used:
                used |= {v.name for v in ast.variables(expr)}
        env = block_env(g, prototype)
        return [f"{params[name]} = {render(expr, params, env).text}" for name, expr in lets if name in used]

    def _call(self, cls: str, definition: str, params: dict[str, str], path: str, shortcut: str | None,
              flag: str | None = None) -> str:
        g = self.graph
        block = g.blocks[path]
        args = [str(g.shape(block.input)[0])]
        scope = {"classes": g.classes, IN_CHANNELS: g.shape(block.input)[0]}  # defaults may read it
        keyword = False
        for name, default in self._class_params(definition):
            value = block.args[name]
            if default is not None:
                keyword = True
                if evaluate(default, scope) != value:
                    given = constructor(value.op) if isinstance(value, Kind) else value
                    args.append(f"{params[name]}={given}")
            else:
                args.append(f"{params[name]}={value}" if keyword else str(value))
            scope[name] = value
        made = shortcut_call(g, path)
        if made:
            args.append(f"{shortcut}={made}")
        if flag and block.residual is False:
            args.append(f"{flag}=False")
        return cls, args

    def _literal(self, definition: str, paths: list[str]) -> None:
        """One class per distinct body, its integers written out."""
        g = self.graph
        emitter = BlockEmitter(g, self._params(definition), literal=True)
        bodies: dict[tuple, tuple[GeneratedClass, list[str]]] = {}
        for path in paths:
            made = shortcut_call(g, path)
            shortcut = shortcut_name(g, path) if made else None
            emitted = emitter.emit(path, shortcut)
            key = (tuple(emitted.init), tuple(emitted.forward))
            if key not in bodies:
                handed = f", {shortcut}: nn.Module | None = None" if shortcut else ""
                signature = [f"def __init__(self{handed}) -> None:"]
                cls = GeneratedClass(self.names.create_name(class_name(definition)), "", signature=signature,
                             init=emitted.init + ([f"self.{shortcut} = {shortcut}"] if shortcut else []),
                             forward=emitted.forward)
                bodies[key] = (cls, [])
                self.classes.append(cls)
            bodies[key][1].append(path)
            self.calls[path] = bodies[key][0].name, [f"{shortcut}={made}"] if made else []
        for cls, members in bodies.values():
            cls.doc = self._doc(definition, members)

    def _doc(self, definition: str, paths: list[str]) -> str:
        g = self.graph
        shapes = {(fmt_shape(g.shape(g.blocks[p].input)), fmt_shape(g.shape(g.blocks[p].output)))
                  for p in paths}
        if len(paths) > 4:
            where = f"{paths[0]}, {paths[1]}, ... {paths[-1]} ({len(paths)} blocks)"
            if len(where) > 60:
                where = f"{paths[0]} ... {paths[-1]} ({len(paths)} blocks)"
        else:
            where = ", ".join(paths)
        shape = f", {' -> '.join(shapes.pop())}" if len(shapes) == 1 else ""
        return docstring(f"`{definition}` block{shape}; used at {where}.")


def docstring(text: str) -> str:
    """A class docstring's text, wrapped to the line limit where a long block name needs it (the
    template writes it after four spaces and three quotes)."""
    if 4 + 6 + len(text) <= LINE_LIMIT:
        return text
    return "\n    ".join(textwrap.wrap(text, LINE_LIMIT - 7, break_long_words=False)) + "\n    "


def _mixed(graph: Graph, paths: list[str]) -> bool:
    """Whether `shortcut identity_or_none` made the add in some of the blocks and not in others."""
    made = {graph.blocks[p].residual for p in paths}
    return True in made and False in made


def _reads_position(expr: ast.Expr) -> bool:
    return any(var.name in POSITION for var in ast.variables(expr))


def _constant(expr: ast.Expr) -> bool:
    """Whether a default needs no other parameter (so it can be Python's default)."""
    return next(ast.variables(expr), None) is None
