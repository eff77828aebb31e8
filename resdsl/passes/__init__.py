"""Graph passes. Each is a class with a `name`, the properties it `requires` and `provides`
(`properties`), a contract in its docstring, and `run(graph) -> changed`.

`PIPELINE` is what `resdsl check` and every backend run, in this order, under the
`PassManager`, which checks each pass's contract around it. `run_pipeline(until=NAME)` stops
after the pass of that name, to look at the graph there (`printer.format_graph`); a
`PassManager(after_each=...)` sees the graph after every pass. `INFERENCE` are the backends'
own legalizations (decompose, fold-bn), which they run on a copy of the pipeline's graph.
"""
from __future__ import annotations

from collections.abc import Sequence

from ..ir import Graph
from .decompose import Decompose
from .fold_bn import FoldBatchNorm
from .manager import Pass, PassManager
from .properties import IRError
from .shapes import InferShapes
from .shortcuts import LegalizeShortcuts
from .verify import Verify

PIPELINE = (InferShapes(), LegalizeShortcuts())
# What the inference backends run after it, on a copy: ONNX decompose, Relax both. The torch
# backend reads the pipeline's graph as written. `resdsl ir --after fold-bn` shows Relax's input.
INFERENCE = (Decompose(), FoldBatchNorm())


def pass_names(passes: Sequence[Pass] = PIPELINE) -> list[str]:
    return [p.name for p in passes]


def run_pipeline(graph: Graph, verify: bool = True, *, until: str | None = None,
                 passes: Sequence[Pass] = PIPELINE) -> Graph:
    """Run `passes` (the standard pipeline) on `graph`, all of them or up to and including the
    one named `until`; an `until` that names none of them is a ValueError listing the names."""
    if until is not None:
        names = pass_names(passes)
        if until not in names:
            raise ValueError(f"no pass named {until!r}; the passes are {', '.join(names)}")
        passes = passes[:names.index(until) + 1]
    return PassManager(passes, verify=verify).run(graph)


__all__ = ["INFERENCE", "PIPELINE", "Decompose", "FoldBatchNorm", "IRError", "InferShapes", "LegalizeShortcuts",
           "Pass", "PassManager", "Verify", "pass_names", "run_pipeline"]
