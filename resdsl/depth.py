"""Bounds on how deep a parse tree nests, checked before anything recurses over it.

LALR parsing keeps its own stack, but the transformer, the evaluator, the lowering and the
emitters recurse once per level: the bounds keep every later stage far from Python's recursion
limit, both at once included.
"""
from __future__ import annotations

from lark import Tree

from .diagnostics import ResdslError, Span

MAX_EXPR_DEPTH = 100
MAX_BRANCH_DEPTH = 32  # far beyond any network's (Inception's nest two deep)
_EXPR_RULES = frozenset({"add", "sub", "mul", "floordiv", "exactdiv", "neg"})


def check_depth(tree: Tree, text: str, filename: str) -> None:
    """Refuse expressions nested deeper than MAX_EXPR_DEPTH and branches deeper than
    MAX_BRANCH_DEPTH."""
    stack: list[tuple[Tree, int, int]] = [(tree, 0, 0)]
    while stack:
        node, depth, branches = stack.pop()
        if node.data in _EXPR_RULES:
            depth += 1
            if depth > MAX_EXPR_DEPTH:
                raise ResdslError(f"this expression nests more than {MAX_EXPR_DEPTH} levels deep",
                                  _at(node.meta, text, filename),
                                  hint="split it with `let` constants")
        elif node.data == "branch":
            branches += 1
            if branches > MAX_BRANCH_DEPTH:
                raise ResdslError(f"branches nest more than {MAX_BRANCH_DEPTH} levels deep here",
                                  _at(node.meta, text, filename),
                                  hint="write some of them side by side, each joined before the next")
        # Reversed, so that the first offender in the text is the one reported.
        stack.extend((child, depth, branches) for child in reversed(node.children) if isinstance(child, Tree))


def _at(meta, text: str, filename: str) -> Span:
    return Span(filename, meta.line, meta.column, meta.end_line, meta.end_column, text)
