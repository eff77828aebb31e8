"""Graph passes. Each is a class with a `name`, the properties it `requires` and `provides`
(`properties`), a contract in its docstring, and `run(graph) -> changed`.

`PIPELINE` is what `resdsl check` and every backend run, in this order, under the
`PassManager`, which checks each pass's contract around it.
"""
from __future__ import annotations

from ..ir import Graph
from .manager import Pass, PassManager
from .properties import IRError
from .shapes import InferShapes
from .shortcuts import LegalizeShortcuts
from .verify import Verify

PIPELINE = (InferShapes(), LegalizeShortcuts())


def run_pipeline(graph: Graph, verify: bool = True) -> Graph:
    return PassManager(PIPELINE, verify=verify).run(graph)


__all__ = ["PIPELINE", "run_pipeline", "IRError", "InferShapes", "LegalizeShortcuts", "Pass", "PassManager",
           "Verify"]
