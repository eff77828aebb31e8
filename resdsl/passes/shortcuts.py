"""Shortcut legalization: make every residual add join two tensors of one shape.

Requires: shapes. Provides: shapes and legal adds. For each `add`, by its policy:
  identity  shapes must already agree, else a located error;
  A         where shapes differ, a parameter-free `pad` (subsample, zero-pad channels);
  B         where shapes differ, a 1x1 conv + BN projection named `downsample.0/.1` (torchvision's
            names, so checkpoints load);
  C         that projection on every block;
  gated     a 1x1 conv `gate` (with bias) whose sigmoid mixes the branches, plus the B projection
            where shapes differ;
  a `policy` the spec defines: its layers (`downsample.*`, or the keys of another container the
            policy names, torchvision's RegNet `proj.*`) where shapes differ, written for the
            output channels and the stride.
(`none` never reaches it: lowering leaves such an add out, so a plain network is the residual one
without its adds.)
Every node it inserts carries its `role` (ir.PROJECTION, PAD or GATE), which backends read
instead of labels.
`add shortcut from LABEL` makes the inserted layers read LABEL's value (a pre-activated input)
while the identity still reads the block input. An `add NAME` of two values of a block (no
shortcut) must already join equal shapes.
After it, shapes are re-inferred and every add's operands agree. Idempotent: an add whose
shortcut is already legal is left alone.
"""
from __future__ import annotations

from ..diagnostics import ResdslError
from ..ir import GATE, PAD, PROJECTION, Graph
from ..ops import OPS, fmt_shape
from ..ops.schema import hw, pair_text
from ..templates import instantiate
from .properties import LEGAL_ADDS, SHAPES
from .shapes import InferShapes, locate


class LegalizeShortcuts:
    name = "legalize-shortcuts"
    requires = frozenset({SHAPES})
    provides = frozenset({SHAPES, LEGAL_ADDS})

    def run(self, graph: Graph) -> bool:
        changed = False
        for add in list(graph.nodes_of("add")):
            node = graph.node(add)
            if node.facts.get("legal"):
                continue
            residual, shortcut = graph.inputs(add)[:2]
            if node.attrs["policy"] == "join":
                _check_join(graph, add, residual, shortcut)
            else:
                changed |= self._legalize(graph, add, graph.shape(residual), shortcut)
            node.facts["legal"] = True
        if changed:
            InferShapes().run(graph)
        return changed

    def _legalize(self, graph: Graph, add: str, want: tuple, shortcut: str) -> bool:
        node = graph.node(add)
        policy, scope, span = node.attrs["policy"], node.scope, node.span
        where, notes = locate(graph, add)
        have = graph.shape(shortcut)
        differ = have != want
        if policy == "identity" and differ:
            raise ResdslError(f"residual add needs equal shapes: {fmt_shape(want)} (residual) vs "
                              f"{fmt_shape(have)} (shortcut)", where, notes=notes,
                              hint="use `shortcut B` (1x1 projection) or `shortcut A` (zero-padding) "
                                   "for this stage or network")
        residual = graph.inputs(add)[0]
        source = node.attrs.get("source") or shortcut  # what inserted layers read
        stride = _branch_stride(graph, source, residual)
        if stride is None or _subsampled(have, stride) != want[1:]:
            # The shortcut must sample the pixels the branch does (its strides' product); a
            # resolution the strides do not explain (a global pool, padding that trims) has
            # no shortcut that matches it pixel for pixel.
            by = f"its strides multiply to {pair_text(stride)}" if stride is not None else "it is not a chain of layers"
            raise ResdslError(f"the residual branch maps {fmt_shape(have)} to {fmt_shape(want)}, which no "
                              f"shortcut can match: {by}", where, notes=notes,
                              hint="a block's branch may change the resolution only by its strides "
                                   "(pad each conv by kernel // 2); a squeeze (global avgpool) needs its "
                                   "multiply before the add")
        if policy in graph.policies:
            if differ:
                end = instantiate(graph, graph.policies[policy], scope, source, want[0], stride)
                InferShapes().run(graph)
                if graph.shape(end) != want:
                    raise ResdslError(
                        f"policy `{policy}` makes {fmt_shape(graph.shape(end))} of the shortcut, "
                        f"the residual branch {fmt_shape(want)}",
                        where,
                        notes=notes,
                        hint="its layers must map the input to `channels` channels at `stride`",
                    )
                node.attrs["applied"] = (graph.shape(source)[0], want[0], stride)
                graph.set_input(add, 1, end)
        elif policy == "A" and differ:
            if isinstance(stride, tuple):
                raise ResdslError(f"option A subsamples by one stride in both dimensions, not {pair_text(stride)}",
                                  where, notes=notes, hint="use `shortcut B` (a 1x1 projection at that stride) here")
            if want[0] < have[0]:
                raise ResdslError(f"option A cannot shrink channels ({have[0]} -> {want[0]})", where,
                                  notes=notes, hint="use `shortcut B` here")
            extra = want[0] - have[0]
            pad = graph.add(f"{scope}.shortcut", "pad", [source], span=span, scope=scope,
                            label="shortcut", role=PAD, stride=stride, pad_before=extra // 2,
                            pad_after=extra - extra // 2)
            graph.set_input(add, 1, pad)
        elif (policy in ("B", "gated") and differ) or policy == "C":
            graph.set_input(add, 1, _projection(graph, scope, source, want[0], stride, span))
        if policy == "gated":
            gate = graph.add(f"{scope}.gate", "conv", [shortcut], span=span, scope=scope, label="gate",
                             role=GATE, **OPS["conv"].with_defaults(out=want[0], stride=stride, bias=1))
            graph.set_input(add, 2, gate)
        return policy == "gated" or graph.inputs(add)[1] != shortcut


def _projection(graph: Graph, scope: str, source: str, channels: int, stride: int, span) -> str:
    conv = graph.add(f"{scope}.downsample.0", "conv", [source], span=span, scope=scope, label="downsample.0",
                     role=PROJECTION, **OPS["conv"].with_defaults(out=channels, stride=stride))
    return graph.add(f"{scope}.downsample.1", "bn", [conv], span=span, scope=scope, label="downsample.1",
                     role=PROJECTION, **OPS["bn"].with_defaults())


def _check_join(graph: Graph, add: str, a: str, b: str) -> None:
    if graph.shape(a) != graph.shape(b):
        where, notes = locate(graph, add)
        raise ResdslError(
            f"add needs equal shapes: {fmt_shape(graph.shape(a))} and {fmt_shape(graph.shape(b))}",
            where,
            notes=notes,
            hint="make the branches agree, or use `add shortcut` and a policy",
        )


def _branch_stride(graph: Graph, source: str, residual: str) -> int | None:
    """The product of the strides along the residual branch from `source` (the block input, or
    the value a shortcut reads), following each join's first operand, or None if it does not lead
    back to `source`."""
    (sh, sw), current = (1, 1), residual
    while current != source:
        inputs = graph.inputs(current)
        if not inputs:
            return None
        h, w = hw(graph.node(current).attrs.get("stride") or 1)  # adaptive pools: no stride
        sh, sw, current = sh * h, sw * w, inputs[0]
    return sh if sh == sw else (sh, sw)  # a (height, width) pair where a layer's stride is one


def _subsampled(shape: tuple, stride: int | tuple[int, int]) -> tuple | None:
    """The resolution of every stride-th pixel of `shape`."""
    if len(shape) != 3:
        return None
    (_, h, w), (sh, sw) = shape, hw(stride)
    return ((h - 1) // sh + 1, (w - 1) // sw + 1)
