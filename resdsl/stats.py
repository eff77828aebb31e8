"""Parameter and MAC counts read off the checked graph (no torch needed).

MACs count the multiply-accumulates of conv and fc layers only, as He et al. and torchvision do.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .ir import Graph
from .ops import OPS


@dataclass(frozen=True)
class LayerStats:
    name: str
    op: str
    shape: tuple[int, ...]
    params: int
    macs: int


def layer_stats(graph: Graph) -> list[LayerStats]:
    rows = []
    for name in graph.order():
        node = graph.node(name)
        info = OPS[node["op"]]
        ins = [graph.shape(i) for i in graph.inputs(name)]
        rows.append(LayerStats(
            "input" if node["op"] == "input" else name, node["op"], node["shape"],
            info.params(node["attrs"], ins, node["shape"]), info.macs(node["attrs"], ins, node["shape"])))
    return rows


def totals(graph: Graph) -> tuple[int, int]:
    rows = layer_stats(graph)
    return sum(r.params for r in rows), sum(r.macs for r in rows)


def summary_json(graph: Graph) -> dict:
    rows = layer_stats(graph)
    return {
        "network": graph.name,
        "input": list(graph.shape(graph.order()[0])),
        "output": list(graph.shape(graph.output)),
        "outputs": {name: list(graph.shape(node)) for name, node in graph.results()},
        "params": sum(r.params for r in rows),
        "macs": sum(r.macs for r in rows),
        "layers": [{**asdict(r), "shape": list(r.shape)} for r in rows],
    }
