"""The rows of `resdsl summary`: per layer, or rolled up to a depth as torchinfo does (no printing).

Depth follows torchinfo's convention: it counts the nesting of the dotted layer names, the names
the generated torch module's `named_modules()` has. In ResNet-50 `layer1` is at depth 1,
`layer1.0` (a bottleneck) at 2, `layer1.0.conv1` at 3, `layer1.0.downsample.0` at 4; the stem's
`conv1` and the head's `fc` are at depth 1. `--depth N` shows every name cut to its first N parts:
the layers under one such prefix become one row that sums their parameters, MACs and activation
bytes, and shows the output shape of the group's last layer (in execution order); its op is the
block's definition name, `stage`, or `group`. Depth 0 is one row, the whole network. No depth
(the default) shows every layer.
"""
from __future__ import annotations

from dataclasses import dataclass

from .ir import Graph
from .ops import fmt_shape
from .stats import MB, LayerStats, layer_stats, summary_json


@dataclass(frozen=True)
class Row:
    name: str
    op: str
    shape: tuple[int, ...]
    params: int
    macs: int
    bytes: int  # a layer's output; a group's: the sum of its layers' outputs
    layers: int  # how many layers the row stands for (1: a layer itself)

    def as_json(self) -> dict:
        return {"name": self.name, "op": self.op, "shape": list(self.shape), "params": self.params,
                "macs": self.macs, "bytes": self.bytes, "layers": self.layers}


def rows(graph: Graph, depth: int | None = None, layers: list[LayerStats] | None = None) -> list[Row]:
    """The table's rows at `depth` (None: every layer), in order of each group's first layer."""
    layers = layer_stats(graph) if layers is None else layers
    if depth is None:
        return [Row(r.name, r.op, r.shape, r.params, r.macs, r.bytes, 1) for r in layers]
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    groups: dict[str, list[LayerStats]] = {}
    for r in layers:
        key = graph.name if depth == 0 else ".".join(r.name.split(".")[:depth])
        groups.setdefault(key, []).append(r)
    out = []
    for key, members in groups.items():
        if len(members) == 1 and members[0].name == key:
            op = members[0].op
        elif depth == 0:
            op = "network"
        elif key in graph.blocks:
            op = graph.blocks[key].block
        elif key in graph.stages:
            op = "stage"
        else:
            op = "group"
        out.append(Row(key, op, members[-1].shape, sum(m.params for m in members),
                       sum(m.macs for m in members), sum(m.bytes for m in members), len(members)))
    return out


def summary_data(graph: Graph, depth: int | None = None) -> dict:
    """`summary --json`: `layers` always holds every layer (whatever the depth), `memory` the totals
    in bytes; with a depth, `depth` and `rows` (the roll-ups the table shows) are added."""
    data = summary_json(graph)
    if depth is not None:
        data["depth"] = depth
        data["rows"] = [r.as_json() for r in rows(graph, depth)]
    return data


COLUMNS = ("layer", "op", "output", "params", "MACs", "memory")
NUMERIC = ("params", "MACs", "memory")


def cells(row: Row) -> tuple[str, ...]:
    """A row as the table's strings (memory in bytes, with separators; zero counts left blank)."""
    return (row.name, row.op, fmt_shape(row.shape) if row.shape else "",
            f"{row.params:,}" if row.params else "", f"{row.macs:,}" if row.macs else "", f"{row.bytes:,}")


def memory_lines(mem: dict[str, int]) -> list[str]:
    """The totals as torchinfo prints them (MB = 10^6 bytes), with the sum of every activation."""
    return [f"Input size (MB): {mem['input'] / MB:.2f}",
            f"Forward/backward pass size (MB): {mem['forward_backward'] / MB:.2f}",
            f"Params size (MB): {mem['params'] / MB:.2f}",
            f"Estimated Total Size (MB): {mem['total'] / MB:.2f}",
            f"Activations, every layer's output (MB): {mem['activations'] / MB:.2f}"]


def plain_table(table: list[tuple[str, ...]]) -> list[str]:
    """Aligned plain-text lines, nothing cut: for output that is not a terminal."""
    head = [COLUMNS, *table]
    widths = [max(len(r[i]) for r in head) for i in range(len(COLUMNS))]

    def line(cols: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if COLUMNS[i] in NUMERIC else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cols, widths))).rstrip()
    return [line(COLUMNS), "  ".join("-" * w for w in widths), *(line(r) for r in table)]
