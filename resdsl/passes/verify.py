"""The verifier: every invariant the backends rely on, checked at once.

Requires: shapes and legal adds (so the pass manager has checked them already where it runs
this pass; run alone, it is the whole check). Changes nothing. A failure is a compiler bug,
not a user error: it raises `IRError` naming the node.
"""
from __future__ import annotations

from ..ir import Graph
from .properties import CHECKS, LEGAL_ADDS, SHAPES, IRError, check


class Verify:
    name = "verify"
    requires = frozenset({SHAPES, LEGAL_ADDS})
    provides: frozenset[str] = frozenset()

    def run(self, graph: Graph) -> bool:
        check(graph, set(CHECKS), "verify")
        return False


__all__ = ["IRError", "Verify"]
