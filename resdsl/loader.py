"""Files -> one program: the chosen network plus every block it can see.

Blocks come from the prelude (the standard blocks, written in .rds), then from includes in the
order they appear, then from the file itself; a later definition may shadow a prelude block but
two user definitions of one name are an error.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from . import ast
from .checks import check_source
from .diagnostics import PRELUDE, ResdslError, Span
from .files import read_source
from .keywords import leading_keywords
from .parser import POLICIES as BUILT_IN_POLICIES
from .parser import parse
from .reserved import HELPERS, python_private
from .resources import prelude_path

MAX_INCLUDE_DEPTH = 64


@lru_cache(maxsize=1)
def _looks_like_a_spec() -> re.Pattern[str]:
    """Comments and separators, then a word a file may start with (or nothing): checked before
    an include is parsed, so that its syntax error cannot quote some other file's first line."""
    words = "|".join(leading_keywords())
    return re.compile(rf"\A\ufeff?(?:[ \t\f\r\n;]|#[^\n]*)*(?:(?:{words})\b|\Z)")


@dataclass
class Program:
    network: ast.Network
    blocks: dict[str, ast.BlockDef] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)  # the spec and every file it includes
    policies: dict[str, ast.PolicyDef] = field(default_factory=dict)  # user-defined shortcut policies


def load_file(path: str | Path) -> Program:
    program = _build(str(path), read_source(path), Path(path).resolve().parent)
    program.files.insert(0, Path(path))
    return program


def load_text(text: str, filename: str = "<string>", base_dir: str | Path = ".") -> Program:
    return _build(filename, text, Path(base_dir).resolve())


def _build(filename: str, text: str, base_dir: Path) -> Program:
    blocks: dict[str, ast.BlockDef] = {}
    _add_blocks(blocks, _prelude().blocks, user=False)
    prelude_policies = {p.name: p for p in _prelude().policies}
    user_blocks: dict[str, ast.BlockDef] = {}
    policies: dict[str, ast.PolicyDef] = {}
    main = _parse(text, filename)
    networks: list[ast.Network] = []
    seen: set[str] = set()
    _collect(main, base_dir, user_blocks, networks, stack=[str(Path(filename).resolve())], seen=seen,
             policies=policies)
    blocks.update(user_blocks)
    if not networks:
        raise ResdslError(f"{filename} defines no network", Span(filename, 1, 1, 1, 1, text),
                          hint="add `network NAME { input 3x224x224 ... }`")
    if len(networks) > 1:
        extra = networks[1]
        raise ResdslError(f"more than one network: `{networks[0].name}` and `{extra.name}`",
                          extra.span, hint="put each network in its own file; share blocks with `include`")
    return Program(networks[0], blocks, [Path(p) for p in sorted(seen)], {**prelude_policies, **policies})


def _collect(source: ast.SourceFile, base_dir: Path, blocks: dict[str, ast.BlockDef],
             networks: list[ast.Network], stack: list[str], seen: set[str],
             policies: dict[str, ast.PolicyDef]) -> None:
    for include in source.includes:
        target = (base_dir / include.path).resolve()
        if str(target) in stack:
            raise ResdslError(f"include cycle: {include.path} includes itself", include.span,
                              hint="remove one of the includes in the cycle")
        if str(target) in seen:  # a diamond: the blocks are already here
            continue
        seen.add(str(target))
        if len(stack) >= MAX_INCLUDE_DEPTH:
            raise ResdslError(f"includes nest deeper than {MAX_INCLUDE_DEPTH} files", include.span)
        text = read_source(display_path(target), include.span)
        if not _looks_like_a_spec().match(text):
            # Its syntax error would quote its first line: an include must not be a way to print
            # another file (/etc/passwd, a key) into an error message.
            words = [f"`{word}`" for word in leading_keywords()]
            raise ResdslError(f"{display_path(target)} is not a resdsl spec", include.span,
                              hint=f"a spec starts with {', '.join(words[:-1])} or {words[-1]} "
                                   "(after comments)")
        child = _parse(text, display_path(target))
        _collect(child, target.parent, blocks, networks, stack + [str(target)], seen, policies)
    _add_blocks(blocks, source.blocks, user=True)
    for policy in source.policies:
        _check_policy_name(policy)
        if policy.name in policies:
            raise ResdslError(
                f"policy `{policy.name}` is defined twice",
                policy.span,
                notes=(("first defined here", policies[policy.name].span),),
                hint="rename one of them",
            )
        policies[policy.name] = policy
    networks.extend(source.networks)


def _check_policy_name(policy: ast.PolicyDef) -> None:
    """A policy becomes a function of the generated module, named after it: it must not replace
    one of the module's own names (the option-A `ZeroPadShortcut` taking over every option-A
    shortcut) or be one that Python mangles inside the network's class."""
    name = policy.name
    if name in BUILT_IN_POLICIES:
        raise ResdslError(f"`{name}` is a built-in shortcut policy", policy.span,
                          hint="give your policy another name")
    if name in HELPERS:
        raise ResdslError(f"`{name}` cannot name a policy: the generated PyTorch module has its own `{name}`",
                          policy.span, hint=f"give your policy another name, e.g. `{name}_`")
    if python_private(name):
        raise ResdslError(f"`{name}` cannot name a policy: names starting with `__` are Python's", policy.span,
                          hint=f"give your policy another name, e.g. `{name.strip('_') or 'policy'}_`")


def display_path(path: Path) -> str:
    """Relative to the working directory when below it, so messages stay short and stable."""
    try:
        return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
    except ValueError:  # another drive
        return str(path)


def _add_blocks(blocks: dict[str, ast.BlockDef], new: list[ast.BlockDef], user: bool) -> None:
    for block in new:
        previous = blocks.get(block.name)
        if previous is not None and user:
            raise ResdslError(f"block `{block.name}` is defined twice", block.span,
                              notes=(("first defined here", previous.span),),
                              hint="rename one of them")
        blocks[block.name] = block


_PRELUDE: ast.SourceFile | None = None


def _prelude() -> ast.SourceFile:
    global _PRELUDE
    if _PRELUDE is None:
        path = prelude_path()
        _PRELUDE = _parse(path.read_text(encoding="utf-8"), PRELUDE)
    return _PRELUDE


def _parse(text: str, filename: str) -> ast.SourceFile:
    """One file's AST, checked (`checks`: what the grammar accepts but a spec may not say)."""
    source = parse(text, filename)
    check_source(source)
    return source
