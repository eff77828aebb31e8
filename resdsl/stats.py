"""Parameter, MAC and memory counts read off the checked graph (no torch needed).

MACs count the multiply-accumulates of conv and fc layers only, as He et al. and torchvision do.
Memory assumes float32 (4 bytes an element) and a batch of 1: a layer's activation is its output
tensor, C x H x W x 4 bytes. `memory` gives the totals torchinfo prints, computed as torchinfo
computes them (so the figures agree with it), and beside them the sum of every layer's output.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .ir import Graph
from .ops import OPS

BYTES_PER_ELEMENT = 4  # float32
MB = 1e6  # torchinfo's megabyte


@dataclass(frozen=True)
class LayerStats:
    name: str
    op: str
    shape: tuple[int, ...]
    params: int
    macs: int
    bytes: int  # this layer's output (its activation): prod(shape) x 4, batch 1


def layer_stats(graph: Graph) -> list[LayerStats]:
    rows = []
    for name in graph.order():
        node = graph.node(name)
        info = OPS[node.op]
        ins = [graph.shape(i) for i in graph.inputs(name)]
        rows.append(LayerStats(
            "input" if node.op == "input" else name, node.op, node.shape,
            info.params(node.attrs, ins, node.shape), info.macs(node.attrs, ins, node.shape),
            math.prod(node.shape) * BYTES_PER_ELEMENT))
    return rows


def totals(graph: Graph) -> tuple[int, int]:
    rows = layer_stats(graph)
    return sum(r.params for r in rows), sum(r.macs for r in rows)


def memory(rows: list[LayerStats]) -> dict[str, int]:
    """Bytes, float32, batch 1:

    - `input`: the input tensor.
    - `activations`: every layer's output summed (the input excluded; adds, ReLUs and pools
      included), i.e. what a forward pass would hold if it kept every intermediate tensor.
    - `forward_backward`: torchinfo's "Forward/backward pass size": the outputs of the layers
      that have parameters (conv, bn, fc, ...), x2 for their gradients. Parameter-free layers
      (ReLU, pooling, add) are not counted, exactly as torchinfo does not count them, so the
      figure matches torchinfo's for the same network (ResNet-152: 360.87 MB).
    - `params`: parameters x 4 (BatchNorm's running statistics are buffers, not counted).
    - `total`: input + forward_backward + params (torchinfo's "Estimated Total Size").
    """
    inputs = sum(r.bytes for r in rows if r.op == "input")
    activations = sum(r.bytes for r in rows if r.op != "input")
    forward_backward = 2 * sum(r.bytes for r in rows if r.op != "input" and r.params > 0)
    params = BYTES_PER_ELEMENT * sum(r.params for r in rows)
    return {"input": inputs, "activations": activations, "forward_backward": forward_backward,
            "params": params, "total": inputs + forward_backward + params}


def summary_json(graph: Graph) -> dict:
    rows = layer_stats(graph)
    return {
        "network": graph.name,
        "input": list(graph.shape(graph.order()[0])),
        "output": list(graph.shape(graph.output)),
        "outputs": {name: list(graph.shape(node)) for name, node in graph.results()},
        "params": sum(r.params for r in rows),
        "macs": sum(r.macs for r in rows),
        "memory": memory(rows),
        "layers": [{**asdict(r), "shape": list(r.shape)} for r in rows],
    }
