"""The pre-flight check every backend runs before it lowers anything: which of the graph's ops it
has no converter for, all reported at once at the layers that use them (as TVM's frontends find
unsupported ops before converting), so a missing converter is a located error and never a
KeyError halfway through a lowering."""
from __future__ import annotations

from collections.abc import Collection

from ..diagnostics import ResdslError
from ..ir import Graph
from ..ops import OPS
from ..passes.shapes import locate


def unsupported(graph: Graph, converters: Collection[str], *, inference: bool = False) -> dict[str, str]:
    """Each op of `graph` outside `converters`, with the first node that uses it (in graph order).
    With `inference`, train-only ops (dropout, drop-path: the identity at inference) need none."""
    first: dict[str, str] = {}
    for name in graph.order():
        op = graph.node(name).op
        if op == "input" or op in converters or op in first:
            continue
        if inference and op in OPS and OPS[op].train_only:
            continue
        first[op] = name
    return first


def check_supported(graph: Graph, backend: str, converters: Collection[str], *,
                    inference: bool = False) -> None:
    """Raise one ResdslError naming every op of `graph` that `backend` cannot lower, located at
    the first layer using the first of them, with a note at the first layer using each other."""
    missing = unsupported(graph, converters, inference=inference)
    if not missing:
        return
    ops = list(missing)
    span, notes = locate(graph, missing[ops[0]])
    for op in ops[1:]:
        other, more = locate(graph, missing[op])
        notes += ((f"`{op}` is used here", other), *more)
    listed = ", ".join(f"`{op}`" for op in ops)
    what = "op" if len(ops) == 1 else f"{len(ops)} ops:"
    raise ResdslError(f"the {backend} backend cannot lower {what} {listed}", span, notes=notes,
                      hint=f"compile to another target, or give the {backend} backend a converter for "
                           f"{'it' if len(ops) == 1 else 'them'}")

