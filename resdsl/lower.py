"""AST -> graph IR: evaluates expressions, expands stages into blocks and blocks into layers.

Shapes are not known here; `passes.shapes` infers them. Each residual `add` is lowered with the
block's input as its shortcut operand and the shortcut policy recorded; `passes.shortcuts`
legalizes it (projection, zero-pad or gate) once shapes are known, instantiating a user
`policy` from the template lowering stores on the graph (`templates.PolicyTemplate`).

By job: `expressions` evaluates, `attributes` checks a layer's attributes, `labels` names
layers safely, `blocks` expands stages into blocks, `joins` lowers joins, `header` applies
`--set classes/input`; this module walks bodies and annotates errors with the block.
"""
from __future__ import annotations

from itertools import islice

from . import ast
from .attributes import layer_attrs, unknown_layer
from .blocks import BlockLowering
from .diagnostics import ResdslError, Span, in_prelude
from .expressions import POSITION, Number, Value, evaluate, evaluate_int, evaluate_number, suggest
from .header import HeaderOverrides
from .ir import INPUT, Graph
from .joins import Body, JoinLowering
from .kinds import NONE, Kind, misfit, shape_change
from .labels import Labeler, Names
from .limits import LIMITS
from .loader import Program
from .ops import LAYER, OPS, OpDef, ShapeError
from .passes.shapes import locate
from .subblocks import SubBlockLowering
from .templates import PolicyTemplate

__all__ = ["POSITION", "HeaderOverrides", "Number", "Value", "evaluate", "evaluate_int", "evaluate_number",
           "lower"]


def lower(program: Program, overrides: dict[str, ast.Expr] | None = None,
          header: HeaderOverrides | None = None) -> Graph:
    """The graph of `program`'s network; `overrides` replace its `let` constants by name
    (`resdsl --set n=18`), `header` its `classes` and `input` (`--set classes=10`)."""
    if header is not None and not header.empty():
        header.apply(program.network)
    return _Lowering(program, overrides or {}).run()



class _Lowering(BlockLowering, JoinLowering, SubBlockLowering):
    def __init__(self, program: Program, overrides: dict[str, ast.Expr]) -> None:
        self.program, self.overrides = program, overrides
        self.net = program.network
        self.note: tuple[str, Span] | None = None  # the block being expanded, for error notes
        self.kind_params: dict[str, dict[str, str]] = {}  # block definition -> `kinds(...)`
        self.slots: dict[str, str] = {}  # the expanded block's kind parameters -> the kind each is written for
        self.block_slots: dict[str, str] = {}  # the stage's block's, which its generated class may take
        self.slot_vars: dict[int, ast.Var] = {}  # id(layer) -> `_slot_var`; the AST outlives the lowering
        self.constant_defaults: dict[str, dict[str, Value]] = {}  # definition -> `_constant_defaults`
        self.defaults_checked: set[str] = set()  # ops whose default attributes `_attrs` has checked
        self.labeler = Labeler()  # the spec's labels; a policy's `downsample.*` only `templates` inserts
        self.inlining: list[str] = []  # the blocks being inlined as layers, outermost first (`subblocks`)
        self.substitution: dict[str, ast.Expr] = {}  # their names in the stage's block's terms
        self.reads_in: dict[tuple[str, str], bool] = {}  # (block, stage) -> reads `in_channels`
        self.shaped = 0  # how many nodes, in creation order, `channels` has inferred shapes for


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
        g.policies = {name: PolicyTemplate.of(p) for name, p in self.program.policies.items()}
        self.top_names = Names()
        current = g.add(INPUT, "input", [], span=net.input_span, shape=net.input)
        current = self._body(net.stem, "", current, env, block_input=None, policy=net.shortcut)
        # Stage arguments and block bodies may use the block's index in the network and the
        # network's block count: drop-path rates that grow with depth (Huang et al. 2016).
        self.num_blocks = sum(evaluate_int(s.repeat, env, "a stage's block count") if s.repeat is not None else 1
                              for s in net.stages)
        for stage in net.stages:
            current = self._stage(stage, current, env)
        current = self._body(net.head, "", current, env, block_input=None, policy=net.shortcut)
        g.output = current
        self._outputs(net)
        return g

    def _outputs(self, net: ast.Network) -> None:
        """`outputs a, b`: each a stage (its last block's output), a block or a stem/head layer."""
        g = self.graph
        seen: set[str] = set()
        for name, span in net.outputs:
            if name in seen:
                raise ResdslError(f"`{name}` is an output twice", span, hint="name each output once")
            seen.add(name)
            if name in g.stages:
                g.outputs.append((name, g.blocks[g.stages[name].blocks[-1]].output))
            elif name in g.blocks:  # one block of a stage: torchvision's `features.6`
                g.outputs.append((name, g.blocks[name].output))
            elif name in g and not g.node(name).scope and g.node(name).op != "input":
                g.outputs.append((name, name))
            else:
                names = list(g.stages) + [n for kind, n in g.layout if kind == "node"]
                raise ResdslError(f"`{name}` is neither a stage, a block nor a stem or head layer", span,
                                  hint=suggest(name, names, "stages and layers"))
        if g.outputs and net.head and g.output not in {node for _, node in g.outputs}:
            raise ResdslError("the head's result is not among the outputs", net.outputs_span,
                              hint=f"add `{g.node(g.output).label}` to `outputs`, or drop the head")

    def _body(self, layers: tuple, scope: str, current: str, env: dict[str, Value],
              block_input: str | None, policy: str) -> str:
        ctx = Body(scope, self.top_names if scope == "" else Names(), block_input, policy)
        if block_input is not None:
            ctx.values["input"] = block_input
        current = self._statements(layers, ctx, current, env, prefix="")
        self._all_joined(ctx, current)
        return current

    def channels(self, node: str, stage: ast.Stage) -> int:
        """The channels of `node`'s value, for a block that reads `in_channels`."""
        shape = self.shape_of(node)
        if len(shape) != 3:
            raise ResdslError(f"`in_channels` reads a feature map's channels, but this block's input is "
                              f"{'x'.join(map(str, shape))}", stage.span, hint="use it in blocks before the head")
        return shape[0]

    def shape_of(self, node: str) -> tuple[int, ...]:
        """`node`'s shape, for what lowering decides by shapes (`in_channels`, `shortcut
        identity_or_none`): the shapes of the nodes made since the last call, inferred in creation
        order (a topological one). The shape pass infers them all again after lowering."""
        g = self.graph
        for name in islice(g.nx.nodes, self.shaped, None):
            node_ = g.node(name)
            try:
                node_.shape = OPS[node_.op].shape(node_.attrs, [g.shape(i) for i in g.inputs(name)])
            except ShapeError as exc:
                span, notes = locate(g, name)
                raise ResdslError(str(exc), span, hint=exc.hint, notes=notes) from None
            self.shaped += 1
        return g.shape(node)

    def _all_joined(self, ctx: Body, end: str) -> None:
        """Every value of a body reaches its end: a branch is joined, and a join that names other
        values does not drop the current one (`conv2; concat a b` leaves conv2 unused)."""
        g = self.graph
        for label, (node, span) in ctx.branches.items():
            if not g.users(node):
                self._located(ResdslError(f"branch `{label}` is never joined", span,
                                          hint=f"join it with `mul {label}`, `add {label}` or `concat {label}`"))
        for label, node in ctx.values.items():
            if node != end and label not in ctx.branches and node in g and not g.users(node):
                self._located(ResdslError(f"the value of `{label}` is never used",
                                          ctx.slots.get(label) or g.node(node).span,
                                          hint=f"a join after it names other values: name `{label}` in it "
                                               f"(`concat {label} ...`), or remove the layer"))

    def _statements(
        self, layers: tuple, ctx: Body, current: str, env: dict[str, Value], prefix: str
    ) -> str:
        for layer in layers:
            try:
                if isinstance(layer, ast.Let):  # for the layers after it
                    env = {**env, layer.name: evaluate_number(layer.value, env, f"`let {layer.name}`")}
                elif isinstance(layer, ast.Branch):
                    self._branch(layer, ctx, current, env, prefix)
                elif isinstance(layer, ast.Join):
                    current = self._join(layer, ctx, current, prefix)
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
        self, branch: ast.Branch, ctx: Body, current: str, env: dict[str, Value], prefix: str
    ) -> None:
        if ctx.block_input is None:
            raise ResdslError("branches belong in blocks", branch.span,
                              hint="write the branch in a `block`, and join it there")
        source = current
        if branch.source is not None:
            if branch.source not in ctx.values:
                raise ResdslError(f"`{branch.source}` names no value here", branch.source_span,
                                  hint=suggest(branch.source, ctx.values, "values defined before it"))
            source = ctx.values[branch.source]
        if not branch.body:
            raise ResdslError(
                f"branch `{branch.label}` is empty" if branch.label else "this branch is empty", branch.span,
                hint="give it at least one layer")
        if branch.label is None:
            self._path(branch, ctx, source, env, prefix)
            return
        label = prefix + branch.label
        self.labeler.check_name(label, branch.span)  # its layers may all be unlabeled: check the container
        if label in ctx.used or label in ctx.values:
            self.labeler.claim(label, ctx.used, branch.span, ctx.scope)  # reports the collision
        outer, ctx.branch = ctx.branch, label
        end = self._statements(branch.body, ctx, source, env, prefix=label + ".")
        ctx.branch = outer
        ctx.used.containers.setdefault(label, label)
        ctx.used.add(label)
        ctx.values[label] = end
        ctx.branches[label] = (end, branch.span)

    def _path(self, branch: ast.Branch, ctx: Body, source: str, env: dict[str, Value], prefix: str) -> None:
        """An unlabeled branch: its layers named as the body's own (SqueezeNet's `expand3x3` beside
        `expand1x1`), its value the label of its last layer."""
        last = branch.body[-1]
        if isinstance(last, (ast.Branch, ast.Let)) or last.label is None:
            raise ResdslError("an unlabeled branch is joined by its last layer's label, and this one has none",
                              branch.span, hint="label its last layer (`e3: relu`), or label the branch "
                                                "(`b: branch { ... }`, its layers then inside `b`)")
        end = self._statements(branch.body, ctx, source, env, prefix)
        ctx.branches[prefix + last.label] = (end, branch.span)

    def _layer(
        self, layer: ast.Layer, ctx: Body, current: str, env: dict[str, Value], prefix: str
    ) -> str:
        g, scope = self.graph, ctx.scope
        op, exprs = layer.op, {}
        if op in env:  # a parameter: the layer kind it holds
            kind = env[op]
            if kind.__class__ is not Kind or self.slots.get(op, kind.op) != kind.op:
                self._check_slot(layer, kind, env)
            if kind.op == NONE:
                return current
            if kind.op in self.program.blocks:
                return self._inline(layer, kind, ctx, current, env, prefix)
            exprs["op"], op = self.slot_vars.get(id(layer)) or self._slot_var(layer), kind.op
        info = OPS.get(op)
        if info is None or info.kind != LAYER:  # `info.user`, without a call per layer
            if layer.op in self.program.blocks:
                raise ResdslError(f"`{layer.op}` is a block, and blocks cannot be used as layers",
                                  layer.op_span, hint=f"blocks do not nest; use `{layer.op}` in a stage: "
                                                      f"`stage NAME: {layer.op}(...) x N`")
            raise unknown_layer(layer.op, layer.op_span)
        attrs = layer_attrs(layer, info, env, exprs, self.defaults_checked)
        if self.substitution:  # inside a block used as a layer: written in the enclosing block's terms
            exprs = self._enclosing_terms(exprs)
        label = self.labeler.label(layer.label, prefix, ctx.used, layer.span, scope, layer.op)
        name = f"{scope}.{label}" if scope else label
        if not scope:
            g.layout.append(("node", name))
        ctx.values[label] = name
        return g.add(name, op, [current], span=layer.span, scope=scope, label=label,
                     exprs=exprs if scope else None, branch=ctx.branch, **attrs)

    def _enclosing_terms(self, exprs: dict[str, ast.Expr]) -> dict[str, ast.Expr]:
        terms = {name: ast.substitute(expr, self.substitution) for name, expr in exprs.items()}
        op = terms.get("op")
        if op is not None and not (isinstance(op, ast.Var) and op.name in self.block_slots):
            del terms["op"]  # a kind the inlined block fixes, not one the enclosing block's class takes
        return terms

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
        the output shape that one gives (`norm = conv` does neither where `bn` stood). A block's
        shape is known once shapes are inferred: the join after it reports a mismatch."""
        if given.op == default or given.op in self.program.blocks:
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
        return layer_attrs(layer, info, env, exprs, self.defaults_checked)

    def _label(self, layer: ast.Layer | ast.Join, prefix: str, ctx: Body, base: str) -> str:
        return self.labeler.label(layer.label, prefix, ctx.used, layer.span, ctx.scope, base)
