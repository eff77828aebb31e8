"""Lowering's stages and blocks: a stage's arguments bound to its block definition's parameters,
once per block it repeats, and the block's body lowered in its scope (`layer1.0`)."""
from __future__ import annotations

import re

from . import ast
from .diagnostics import ResdslError
from .expressions import IN_CHANNELS, Value, evaluate, evaluate_int, suggest
from .ir import BlockInstance, BlockSignature, Stage
from .kinds import Kind, check_argument, kind_params, unknown_kind
from .limits import LIMITS


class BlockLowering:
    """The stage and block half of `lower._Lowering` (which holds the state it reads)."""

    # ---- stages and blocks
    def _stage(self, stage: ast.Stage, current: str, env: dict[str, int]) -> str:
        g = self.graph
        definition = self.program.blocks.get(stage.call.block)
        if definition is None:
            raise ResdslError(f"unknown block `{stage.call.block}`", stage.call.span,
                              hint=suggest(stage.call.block, self.program.blocks))
        repeat = self._repeat(stage, env)
        LIMITS.check_blocks(len(g.blocks) + repeat, (stage.repeat or stage.call).span)
        paths = self._block_paths(stage, repeat, env)
        stride = self._stride(stage, definition, env)
        params = {p.name for p in definition.params}
        policy = (
            self.check_policy(stage.shortcut, stage.shortcut_span) if stage.shortcut else self.net.shortcut
        )
        g.signatures.setdefault(definition.name, BlockSignature(
            definition.name, tuple((p.name, p.default) for p in definition.params),
            tuple((item.name, item.value) for item in definition.body if isinstance(item, ast.Let))))
        if stage.name not in g.stages:
            g.stages[stage.name] = Stage(stage.name)
            g.layout.append(("stage", stage.name))
        _check_first(stage, definition.name, params)
        kinds = self.kinds(definition)
        first = {arg.name: self._argument(definition, arg.name, arg.value, env, kinds) for arg in stage.first}
        for index, path in enumerate(paths):
            extra = {"stride": stride if index == 0 else 1} if "stride" in params else {}
            if index == 0:
                extra.update(first)
            position = {"block_index": len(g.blocks), "num_blocks": self.num_blocks}
            if self._reads_in_channels(definition, stage):
                position[IN_CHANNELS] = self.channels(current, stage)
            block_env = self._bind(definition, stage.call, {**position, **env}, extra)
            instance = BlockInstance(path, definition.name, stage.name, index, current, span=stage.span,
                                     args={p.name: block_env[p.name] for p in definition.params})
            g.blocks[path] = instance
            g.stages[stage.name].blocks.append(path)
            self.note = (f"block {path} (`{definition.name}`) of stage `{stage.name}`", stage.span)
            self.slots = self.block_slots = kinds
            current = self._body(definition.body, path, current, block_env, block_input=current,
                                 policy=policy)
            self.note, self.slots = None, {}
            instance.output = current
        return current

    def _repeat(self, stage: ast.Stage, env: dict[str, int]) -> int:
        if stage.repeat is None:
            if stage.named is not None:
                raise ResdslError("a stage of one block is named by its label, not by a pattern",
                                  stage.named.span, hint=f"drop `named ...`, or write `x 1` to key the block "
                                                         f"inside `{stage.name}`")
            return 1
        repeat = evaluate_int(stage.repeat, env, "a stage's block count")
        if repeat < 1:
            raise ResdslError(f"a stage needs at least one block, not {repeat}", stage.repeat.span,
                              hint="write `x N` with N >= 1, or drop the stage")
        return repeat

    def _block_paths(self, stage: ast.Stage, repeat: int, env: dict[str, int]) -> list[str]:
        """Each block's path, taken among the network's labels: the stage's label for a stage
        of one block; else its label and the key `named` makes, or the next numbers in it."""
        g, names = self.graph, self.top_names
        previous = g.layout[-1][1] if g.layout and g.layout[-1][0] == "stage" else None
        if stage.name in g.stages and previous != stage.name:
            raise ResdslError(f"stage `{stage.name}` goes on with blocks of an earlier stage, but "
                              f"`{previous or 'the stem'}` comes between", stage.span,
                              hint="stages that number blocks in one container follow one another")
        if stage.repeat is None:
            paths = [stage.name]
        elif stage.named is None:
            start = names.next_number(stage.name)
            paths = [f"{stage.name}.{start + i}" for i in range(repeat)]
        else:
            paths = [f"{stage.name}.{block_key(stage.named, i, env)}" for i in range(repeat)]
            first = {}
            for i, path in enumerate(paths):
                if first.setdefault(path, i) != i:
                    raise ResdslError(f"the pattern keys blocks {first[path]} and {i} both "
                                      f"`{path.rpartition('.')[2]}`", stage.named.span,
                                      hint='make each key differ by the block\'s index: `named "b{i + 1}"`')
        for path in paths:
            self.labeler.claim(path, names, (stage.named or stage).span, "")
        return paths

    def _stride(self, stage: ast.Stage, definition: ast.BlockDef, env: dict[str, int]) -> int:
        """The stage's stride, which its first block takes as its `stride` parameter."""
        stride = evaluate_int(stage.stride, env, "a stage's stride") if stage.stride is not None else 1
        if stride < 1:
            raise ResdslError(f"stride must be at least 1, not {stride}", stage.stride.span,
                              hint="`stride 1` keeps the resolution, `stride 2` halves it")
        if "stride" in {a.name for a in stage.call.args if isinstance(a, ast.Keyword)}:
            raise ResdslError("the stage sets the stride of its first block", stage.call.span,
                              hint=f"write `stage {stage.name}: ... x N stride S` instead")
        if stride != 1 and all(p.name != "stride" for p in definition.params):
            raise ResdslError(f"block `{definition.name}` has no `stride` parameter", stage.stride.span,
                              hint=f"add `stride = 1` to the parameters of `{definition.name}` "
                                   "and use it as a conv's `s=stride`")
        return stride

    def _reads_in_channels(self, definition: ast.BlockDef, stage: ast.Stage) -> bool:
        """Whether a block or its stage's arguments read `in_channels`, which costs inferring the
        shapes before it (worked out once per definition and stage)."""
        key = (definition.name, stage.name)
        if key not in self.reads_in:
            exprs = [p.default for p in definition.params if p.default is not None]
            exprs += [a.value for a in (*stage.call.args, *stage.first) if not isinstance(a.value, ast.Partial)]
            exprs += _body_exprs(definition.body)
            for inlined in self._blocks_given(stage):  # `in_channels` there is this block's too
                exprs += [p.default for p in inlined.params if p.default is not None] + _body_exprs(inlined.body)
            self.reads_in[key] = any(v.name == IN_CHANNELS for e in exprs for v in ast.variables(e)) and \
                all(p.name != IN_CHANNELS for p in definition.params)
        return self.reads_in[key]

    def _blocks_given(self, stage: ast.Stage) -> list[ast.BlockDef]:
        """The blocks a stage passes as layer kinds (`attn=se`, `attn=se(reduction=4)`)."""
        names = [a.value.block if isinstance(a.value, ast.Partial) else getattr(a.value, "name", None)
                 for a in (*stage.call.args, *stage.first)]
        return [self.program.blocks[n] for n in names if n in self.program.blocks]

    def kinds(self, definition: ast.BlockDef) -> dict[str, str]:
        """`kinds.kind_params` of a definition, worked out once."""
        if definition.name not in self.kind_params:
            self.kind_params[definition.name] = kind_params(definition, self.program.blocks)
        return self.kind_params[definition.name]

    def _argument(self, definition: ast.BlockDef, name: str, expr: ast.Expr, env: dict[str, Value],
                  kinds: dict[str, str]) -> Value:
        """A block argument's value, a layer kind where its parameter takes one, else a number."""
        if isinstance(expr, ast.Partial):
            return self._partial(definition, name, expr, env, kinds)
        if name in kinds:
            error = unknown_kind(expr, env, self.program.blocks)
            if error is not None:
                raise error
            if isinstance(expr, ast.Var) and expr.name not in env and expr.name in self.program.blocks:
                return Kind(expr.name, expr.span)  # a block, inlined where the slot stands
        value = evaluate(expr, env)
        check_argument(definition.name, name, value, kinds, expr.span)
        return value

    def _partial(self, definition: ast.BlockDef, name: str, partial: ast.Partial, env: dict[str, Value],
                 kinds: dict[str, str]) -> Kind:
        """`attn=se(reduction=4)`: block `se` as a layer kind, with those arguments evaluated here."""
        if name not in kinds:
            raise ResdslError(f"`{name}` of block `{definition.name}` takes a number, not a block", partial.span,
                              hint="a parameter takes blocks and layer kinds where its default is one (`attn = none`)")
        block = self.program.blocks.get(partial.block)
        if block is None:
            raise ResdslError(f"unknown block `{partial.block}`", partial.span,
                              hint=suggest(partial.block, self.program.blocks))
        params = [p.name for p in block.params]
        args: dict[str, Value] = {}
        for arg in partial.args:
            if arg.name not in params:
                raise ResdslError(f"block `{block.name}` has no parameter `{arg.name}`", arg.span,
                                  hint=suggest(arg.name, params))
            if arg.name in args:
                raise ResdslError(f"parameter `{arg.name}` is given twice", arg.span, hint="keep one of them")
            args[arg.name] = self._argument(block, arg.name, arg.value, env, self.kinds(block))
        return Kind(block.name, partial.span, tuple(args.items()))

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
                                      arg.span, hint=suggest(arg.name, names))
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
        if IN_CHANNELS in env:
            scope[IN_CHANNELS] = env[IN_CHANNELS]
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


_KEY = re.compile(r"[A-Za-z0-9_-]+")


def block_key(pattern: ast.NamePattern, index: int, env: dict[str, Value]) -> str:
    """The key `named "b{i + 1}"` gives a stage's block `index`: `b1`."""
    scope = {**env, "i": index}
    key = "".join(p if isinstance(p, str) else str(evaluate_int(p, scope, "a name pattern's `{...}`"))
                  for p in pattern.parts)
    if not _KEY.fullmatch(key):
        raise ResdslError(f"the pattern names block {index} `{key}`, which cannot key a module",
                          pattern.span, hint="a block's key is letters, digits, `_` and `-` (`b1`, `block1-0`)")
    return key


def _check_first(stage: ast.Stage, block: str, params: set[str]) -> None:
    """`first(name=value)`: parameters of the block, other than the stage's own `stride`."""
    for arg in stage.first:
        if arg.name not in params:
            raise ResdslError(f"block `{block}` has no parameter `{arg.name}`", arg.span,
                              hint=suggest(arg.name, params))
        if arg.name == "stride":
            raise ResdslError("`first(stride=...)` is the stage's `stride`", arg.span,
                              hint=f"write `stage {stage.name}: ... x N stride S`")


def _body_exprs(body: tuple) -> list[ast.Expr]:
    """Every expression a body writes: its lets and its layers' arguments, branches included."""
    exprs: list[ast.Expr] = []
    for item in body:
        if isinstance(item, ast.Let):
            exprs.append(item.value)
        elif isinstance(item, ast.Branch):
            exprs += _body_exprs(item.body)
        else:
            exprs += [a.value for a in item.args if not isinstance(a.value, ast.Partial)]
    return exprs
