"""The pass manager: runs passes in order and checks each one's contract around it.

A pass is a class with a `name`, the properties it `requires` and `provides`
(`passes.properties`), and `run(graph) -> changed`. Before a pass runs, what it requires must
hold; after it, what it provides, and the graph must still be well-formed. A property a pass
does not re-provide is forgotten once a pass changed the graph, so a later pass cannot rely on
a fact an earlier edit invalidated.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..ir import Graph
from .properties import WELL_FORMED, IRError, check


class Pass(Protocol):
    name: str
    requires: frozenset[str]
    provides: frozenset[str]

    def run(self, graph: Graph) -> bool: ...


@dataclass
class PassManager:
    passes: Sequence[Pass]
    verify: bool = True  # check contracts around every pass (linear in the graph; on by default)
    held: set[str] = field(default_factory=set)  # properties known to hold now
    # Called after each pass with its name and the graph (checked, when verifying): to print the
    # IR between passes (`printer.format_graph`), time them, or keep snapshots.
    after_each: Callable[[str, Graph], None] | None = None

    def run(self, graph: Graph) -> Graph:
        if self.verify:
            check(graph, {WELL_FORMED}, "the lowered graph")
        for p in self.passes:
            missing = set(p.requires) - self.held
            if missing and self.verify:
                check(graph, missing, f"before pass `{p.name}`, which requires it")
                self.held |= missing
            changed = p.run(graph)
            if changed:
                self.held &= set(p.provides)
            self.held |= set(p.provides)
            if self.verify:
                check(graph, set(p.provides) | {WELL_FORMED}, f"after pass `{p.name}`, which provides it")
            if self.after_each is not None:
                self.after_each(p.name, graph)
        return graph


__all__ = ["IRError", "Pass", "PassManager"]
