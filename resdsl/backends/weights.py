"""Weights for the compiled targets, as numpy arrays keyed by state_dict name.

Either a state_dict saved from the generated torch module (`--weights FILE`), checked against
the graph name by name and shape, or the torch backend's own seeded initialisation, so every
target computes the same function for the same seed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..diagnostics import ResdslError
from ..ir import Graph
from ..ops import fmt_shape

BN_EPS = 1e-5  # nn.BatchNorm2d's default, which the torch backend uses


def expected_shapes(graph: Graph) -> dict[str, tuple[int, ...]]:
    """The state_dict entries (parameters and BN statistics) the graph's layers own."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name in graph.order():
        node, a = graph.node(name), graph.node(name)["attrs"]
        ins = [graph.shape(i) for i in graph.inputs(name)]
        if node["op"] == "conv":
            shapes[f"{name}.weight"] = (a["out"], ins[0][0] // a["groups"], a["kernel"], a["kernel"])
            if a["bias"]:
                shapes[f"{name}.bias"] = (a["out"],)
        elif node["op"] == "bn":
            for key in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{name}.{key}"] = (ins[0][0],)
        elif node["op"] == "fc":
            shapes[f"{name}.weight"] = (a["out"], int(np.prod(ins[0])))
            shapes[f"{name}.bias"] = (a["out"],)
    return shapes


def load_weights(graph: Graph, path: str | Path | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    import torch
    if path is None:
        from .torch_codegen import instantiate
        state = instantiate(graph, seed=seed).state_dict()
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise ResdslError(f"weights file not found: {path}") from None
        except Exception as exc:  # torch raises many types for a file that is not a checkpoint
            raise ResdslError(f"cannot read weights from {path}: {exc}",
                              hint="save them with torch.save(model.state_dict(), PATH)") from None
        if not isinstance(state, dict):
            raise ResdslError(f"{path} does not hold a state_dict",
                              hint="save them with torch.save(model.state_dict(), PATH)")
    weights = {k: v.detach().float().numpy() for k, v in state.items() if hasattr(v, "numpy")}
    for key, shape in expected_shapes(graph).items():
        if key not in weights:
            raise ResdslError(f"the weights lack `{key}`",
                              hint="use a state_dict saved from the module resdsl generates for this spec")
        if tuple(weights[key].shape) != shape:
            raise ResdslError(f"`{key}` has shape {fmt_shape(weights[key].shape)}, the network needs "
                              f"{fmt_shape(shape)}")
    return weights


def bn_scale_shift(weights: dict[str, np.ndarray], bn: str) -> tuple[np.ndarray, np.ndarray]:
    """Inference-mode BN as y = x * scale + shift, per channel."""
    scale = weights[f"{bn}.weight"] / np.sqrt(weights[f"{bn}.running_var"] + BN_EPS)
    return scale.astype(np.float32), (weights[f"{bn}.bias"] - weights[f"{bn}.running_mean"] * scale).astype(
        np.float32
    )
