"""Semantic checks over a parsed file's AST: what the grammar accepts but a spec may not say.

The transformer (`parser._ToAst`) only builds the AST; the loader runs these over each file it
parses, each definition in the order it is written and, inside one, its parts before itself (as the
transformer used to meet them), so a file with one mistake reports it where it did.
"""
from __future__ import annotations

from . import ast
from .diagnostics import ResdslError


def check_source(source: ast.SourceFile) -> None:
    """Refuse a `let` where none may stand, a policy's wrong parameters or branch, a block's
    repeated parameter, a `let` that rebinds a name or is used above itself."""
    items = sorted(source.blocks + source.policies + source.networks,
                   key=lambda item: (item.span.line, item.span.column))
    for item in items:
        if isinstance(item, ast.BlockDef):
            _check_block(item)
        elif isinstance(item, ast.PolicyDef):
            _check_policy(item)
        else:
            _check_network(item)


def _check_block(block: ast.BlockDef) -> None:
    _branches(block.body)
    params = block.params
    for i, param in enumerate(params):
        if any(p.name == param.name for p in params[:i]):
            raise ResdslError(f"block `{block.name}` has two parameters named `{param.name}`", param.span,
                              hint="give each parameter its own name")
        if param.name == "stride" and param.default is not None and param.default != ast.Int(1, param.default.span):
            raise ResdslError(f"`stride` of block `{block.name}` can only default to 1: its stage sets it", param.default.span,
                              hint="write `stride = 1` (or no default) and give the stride where the block is "
                                   "used: `stage NAME: ... x N stride 2` strides its first block")
    taken = {p.name for p in params} | {"classes", "block_index", "num_blocks"}
    for let in (item for item in block.body if isinstance(item, ast.Let)):
        if let.name in taken:
            what = "a parameter of" if any(p.name == let.name for p in params) else "already a name in"
            raise ResdslError(f"`let {let.name}` would rebind `{let.name}`, {what} block `{block.name}`",
                              let.span, hint="give the value a name of its own")
        taken.add(let.name)
    _lets_before_use(block.body)


def _check_policy(policy: ast.PolicyDef) -> None:
    _branches(policy.body)
    name = policy.name
    if len(policy.params) != 2 or any(p.default is not None for p in policy.params):
        raise ResdslError(f"policy `{name}` must take two parameters: the output channels and the stride",
                          policy.span, hint=f"write `policy {name}(channels, stride) {{ ... }}`")
    _no_let(policy.body, "a policy")
    for layer in policy.body:
        if isinstance(layer, ast.Branch):
            raise ResdslError("a policy is a chain of layers; it cannot hold a branch", layer.span,
                              hint="write the branch in the block, and join it there")


def _check_network(net: ast.Network) -> None:
    parts = [(span, body, where) for span, body, where in ((net.stem_span, net.stem, "a stem"),
                                                            (net.head_span, net.head, "a head")) if span]
    for _, body, where in sorted(parts, key=lambda part: (part[0].line, part[0].column)):
        _branches(body)
        _no_let(body, where, network=True)


def _branches(body: tuple) -> None:
    """No `let` inside a branch, innermost first (the order the transformer met them in)."""
    for item in body:
        if isinstance(item, ast.Branch):
            _branches(item.body)
            _no_let(item.body, "a branch")


def _no_let(body: tuple, where: str, network: bool = False) -> None:
    for item in body:
        if isinstance(item, ast.Let):
            raise ResdslError(f"`let` cannot stand in {where}", item.span,
                              hint="write it in the network, before `stem`" if network
                              else "write it at the top level of the block")


def _lets_before_use(body: tuple) -> None:
    """A layer may only use a `let` written above it: the error names the later one."""
    lets = {item.name: item for item in body if isinstance(item, ast.Let)}
    seen: set[str] = set()

    def check(expr: ast.Expr) -> None:
        for var in ast.variables(expr):
            if var.name in lets and var.name not in seen:
                raise ResdslError(f"`{var.name}` is used before its `let` (line {lets[var.name].span.line})",
                                  var.span, hint=f"move `let {var.name} = ...` above its first use")

    def walk(items: tuple) -> None:
        for item in items:
            if isinstance(item, ast.Let):
                check(item.value)
                seen.add(item.name)
            elif isinstance(item, ast.Branch):
                walk(item.body)
            else:
                for arg in item.args:
                    check(arg.value)

    walk(body)
