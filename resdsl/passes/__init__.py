"""Graph passes. Each is a class with a `name`, a contract in its docstring, and `run(graph)`.

`PIPELINE` is what `resdsl check` and every backend run, in this order.
"""
from __future__ import annotations

from ..ir import Graph
from .shapes import InferShapes
from .shortcuts import LegalizeShortcuts
from .verify import Verify

PIPELINE = (InferShapes(), LegalizeShortcuts(), Verify())


def run_pipeline(graph: Graph) -> Graph:
    for p in PIPELINE:
        p.run(graph)
    return graph


__all__ = ["PIPELINE", "run_pipeline", "InferShapes", "LegalizeShortcuts", "Verify"]
