"""BN folding, for inference: a `bn` that only rescales a conv's output becomes part of the conv.

Requires and provides: shapes and legal adds. For each `bn` whose operand is a `conv` that
nothing else reads and that is not a network output, the conv takes the bn's place: it gains a
bias (`bias` 1), everything that read the bn reads the conv, and the bn is removed. The graph
holds no weights, so the pass records on the conv what it absorbed (its fact `folded_bn`, a
`FoldedBN`), and `fold_weights(graph, weights)` computes the conv's new tensors from the
state_dict, per output channel:
    scale = gamma / sqrt(running_var + eps)
    W' = W * scale        b' = (b or 0) * scale + beta - running_mean * scale
in float32, as the backends always folded it. Inference only: in training a BN normalises by the batch.
Idempotent: a folded conv absorbs no second bn.

A backend that wants it runs it on its own copy (`decompose.on_a_copy`): the Relax frontend does;
ONNX keeps BatchNormalization, which ONNX Runtime fuses itself, and torch keeps nn.BatchNorm2d.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..ir import Graph
from .properties import LEGAL_ADDS, SHAPES

if TYPE_CHECKING:  # numpy is imported where weights are folded: `resdsl --help` reads this module
    import numpy as np

BN_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class FoldedBN:
    bn: str  # the removed bn's name: its tensors' state_dict prefix
    eps: float  # its `eps` attribute
    bias: bool  # whether the conv had a bias of its own before


class FoldBatchNorm:
    name = "fold-bn"
    requires = frozenset({SHAPES, LEGAL_ADDS})
    provides = frozenset({SHAPES, LEGAL_ADDS})

    def run(self, graph: Graph) -> bool:
        results = {node for _, node in graph.results()}
        replaced: dict[str, str] = {}  # each removed bn -> the conv that took its place
        for bn in list(graph.nodes_of("bn")):
            (conv,) = graph.inputs(bn)
            node = graph.node(conv)
            if node.op != "conv" or "folded_bn" in node.facts or conv in results or graph.users(conv) != [bn]:
                continue
            node.facts["folded_bn"] = FoldedBN(bn, graph.node(bn).attrs["eps"], bool(node.attrs["bias"]))
            node.attrs = {**node.attrs, "bias": 1}
            for user in graph.users(bn):
                for index, source in enumerate(graph.inputs(user)):
                    if source == bn:
                        graph.set_input(user, index, conv)
            graph.remove(bn)
            replaced[bn] = conv
        if replaced:
            _rename(graph, replaced)
        return bool(replaced)


def bn_scale_shift(weights: dict[str, np.ndarray], bn: str, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Inference-mode BN (its `eps` attribute given) as y = x * scale + shift, per channel, in
    float32: what a folded conv absorbs, and what a backend applies to a BN left unfolded."""
    import numpy as np
    scale = weights[f"{bn}.weight"] / np.sqrt(weights[f"{bn}.running_var"] + eps)
    shift = weights[f"{bn}.bias"] - weights[f"{bn}.running_mean"] * scale
    return scale.astype(np.float32), shift.astype(np.float32)


def fold_weights(graph: Graph, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`weights` (a state_dict of the graph before folding) for the folded `graph`: each folded
    conv's weight and bias computed, its bn's tensors left out, every other tensor as it was."""
    import numpy as np
    folded = dict(weights)
    for name in graph.order():
        record = graph.node(name).facts.get("folded_bn")
        if record is None:
            continue
        # float32, as before this was a pass: folding in float64 measured further from a float64
        # run of plain56 (1.1e-4 relative against 4.0e-5), so the old arithmetic stays.
        scale, shift = bn_scale_shift(weights, record.bn, record.eps)
        weight = np.asarray(weights[f"{name}.weight"], np.float32)
        folded[f"{name}.weight"] = weight * scale.reshape(-1, 1, 1, 1)
        folded[f"{name}.bias"] = np.asarray(weights[f"{name}.bias"], np.float32) * scale + shift \
            if record.bias else shift
        for key in BN_TENSORS:
            folded.pop(f"{record.bn}.{key}", None)
    return folded


def _rename(graph: Graph, replaced: dict[str, str]) -> None:
    """Every reference to a removed node outside the edges (the network's outputs, blocks' ends,
    the top-level layout, a shortcut's source) made one to the node that took its place."""
    def new(name: str) -> str:
        return replaced.get(name, name)

    graph.output = new(graph.output)
    graph.outputs = [(label, new(node)) for label, node in graph.outputs]
    for block in graph.blocks.values():
        block.input, block.output = new(block.input), new(block.output)
    graph.layout = [entry for entry in graph.layout if not (entry[0] == "node" and entry[1] in replaced)]
    for add in graph.nodes_of("add"):
        node = graph.node(add)
        if node.attrs.get("source") in replaced:
            node.attrs = {**node.attrs, "source": new(node.attrs["source"])}


__all__ = ["FoldBatchNorm", "FoldedBN", "fold_weights"]
