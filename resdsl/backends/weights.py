"""Weights for the compiled targets, as numpy arrays keyed by state_dict name.

Either a state_dict saved from the generated torch module (`--weights FILE`), or the torch
backend's own seeded initialisation, so every target computes the same function for the same
seed.

A weights file is a file someone else may have made, so it is read as Pillow or safetensors
read theirs: bounded in size, unpickled only by torch's `weights_only` loader (which builds
tensors and containers and calls nothing else), and checked as strictly as
`load_state_dict(strict=True)` and more: every key the network owns and no other, each a dense
real floating-point tensor of the right shape, finite, with no negative BN variance. What
passes is handed on as contiguous float32, so no target meets a NaN, a complex number or a
sparse tensor it was never written for.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..files import DamagedFile, brief, load_torch
from ..ir import Graph
from ..ops import COUNTER, OPS, Weight, fmt_shape  # COUNTER: a kind of Weight (BN's batch counter)

SAVE_HINT = ("save them with torch.save(model.state_dict(), PATH) from the module resdsl generates "
             "for this spec")
MAX_SHOWN = 120  # characters of a key a message quotes: a key may be a megabyte long


def owned(graph: Graph) -> Iterator[tuple[str, Weight]]:
    """Every tensor the graph's layers own, as (state_dict key, Weight), in graph order: what each
    op's definition says it owns."""
    for name in graph.order():
        node = graph.node(name)
        ins = [graph.shape(i) for i in graph.inputs(name)]
        for weight in OPS[node.op].weights(node.attrs, ins, node.shape):
            yield f"{name}.{weight.name}" if weight.name else name, weight  # a `scale`: the label itself


def expected_shapes(graph: Graph) -> dict[str, tuple[int, ...]]:
    """The state_dict entries (parameters and BN statistics) the graph's layers own."""
    return {key: w.shape for key, w in owned(graph) if w.kind != COUNTER}


def counters(graph: Graph) -> list[str]:
    """The BN layers' `num_batches_tracked` keys: in every state_dict torch saves, used by none."""
    return [key for key, w in owned(graph) if w.kind == COUNTER]


def load_weights(graph: Graph, path: str | Path | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Every key of the generated module's state_dict: the parameters and BN statistics as
    float32, the BN counters as 0-d int64 (0 where the file leaves them out)."""
    if path is None:
        from .torch_codegen import instantiate
        state = instantiate(graph, seed=seed).state_dict()
        return check_state(graph, state, f"the seeded initialisation of {graph.name}")
    return check_state(graph, read_state(path), path)


def read_state(path: str | Path) -> dict:
    """The object a weights file holds, loaded without running any of it."""
    return load_torch(path, what="weights file", hint=SAVE_HINT,
                      missing_hint="check the path; `resdsl train` writes RUN/final.pt")


def check_state(graph: Graph, state: Any, source: str | Path) -> dict[str, np.ndarray]:
    """`state` checked against the graph, as arrays; each refusal names the key and the file."""
    def refuse(problem: str, hint: str | None = SAVE_HINT) -> DamagedFile:
        return DamagedFile(source, problem, hint=hint)

    if not isinstance(state, dict):
        raise refuse(f"holds a {type(state).__name__}, not a state_dict (a dict of tensors)")
    for key, value in state.items():
        if not isinstance(key, str):
            raise refuse(f"has a key that is not a name: {_short(repr(key))}")
        if isinstance(value, dict):  # a training checkpoint: {"model": state_dict, "optimizer": ...}
            raise refuse(f"`{_short(key)}` holds a dict, not a tensor: a checkpoint, not a state_dict",
                         hint=f"pass the state_dict itself (`resdsl train` writes RUN/final.pt), or save "
                              f"one with torch.save(checkpoint[{_short(repr(key))}], PATH)")
    shapes = expected_shapes(graph)
    optional = set(counters(graph))
    extra = [key for key in state if key not in shapes and key not in optional]
    missing = [key for key in shapes if key not in state]
    if missing:
        raise refuse(f"the weights lack `{_short(missing[0])}`" + _more(missing),
                     hint="use a state_dict saved from the module resdsl generates for this spec")
    if extra:
        raise refuse(f"`{_short(extra[0])}` is not a parameter or buffer of {graph.name}" + _more(extra),
                     hint="use a state_dict saved from the module resdsl generates for this spec; "
                          "resdsl takes every key or none, as load_state_dict(strict=True) does")
    weights = {key: _array(state[key], key, shape, refuse) for key, shape in shapes.items()}
    for key in optional:
        weights[key] = _counter(state.get(key), key, refuse)
    return weights


def _array(value: Any, key: str, shape: tuple[int, ...], refuse) -> np.ndarray:
    import torch
    shown = _short(key)
    if not isinstance(value, torch.Tensor):
        raise refuse(f"`{shown}` holds a {type(value).__name__}, not a tensor")
    if value.layout != torch.strided or value.is_nested or value.device.type != "cpu":
        kind = ("nested" if value.is_nested else _name(value.layout) if value.layout != torch.strided
                else value.device.type)
        raise refuse(f"`{shown}` is a {kind} tensor; resdsl takes dense tensors that hold their data")
    if value.is_quantized or value.is_complex() or not value.is_floating_point():
        raise refuse(f"`{shown}` is {_name(value.dtype)}; a weight must be a real "
                     "floating-point tensor (float32, float16, bfloat16 or float64)")
    if tuple(value.shape) != shape:
        raise refuse(f"`{shown}` has shape {_shape(value.shape)}, the network needs {_shape(shape)}",
                     hint=None)
    array = value.detach().to(torch.float32).contiguous().numpy()
    finite = np.isfinite(array)
    if not finite.all():
        at = int(np.flatnonzero(~finite)[0])
        wide = value.dtype == torch.float64 and bool(torch.isfinite(value).all())
        bad = float(array.flat[at])
        what = "a value beyond float32's range" if wide else "NaN" if np.isnan(bad) else f"{bad:+}"
        raise refuse(f"`{shown}` holds {what} at index {_index(at, shape)}; weights must be finite",
                     hint="weights from a run whose loss diverged are not a network; use an earlier "
                          "checkpoint's")
    if key.endswith(".running_var") and (array < 0).any():
        at = int(np.flatnonzero(array < 0)[0])
        raise refuse(f"`{shown}` holds the negative variance {array.flat[at]:g} at channel {at}",
                     hint="a BN layer's running_var is a variance: never negative")
    return array


def _counter(value: Any, key: str, refuse) -> np.ndarray:
    import torch
    if value is None:
        return np.zeros((), np.int64)
    if (not isinstance(value, torch.Tensor) or value.layout != torch.strided or value.device.type != "cpu"
            or value.is_quantized or value.is_floating_point() or value.is_complex()
            or value.dtype == torch.bool or value.shape != ()):
        what = (f"{_name(value.dtype)} tensor of shape {_shape(value.shape)}" if isinstance(value, torch.Tensor)
                else type(value).__name__)
        raise refuse(f"`{_short(key)}` holds a {what}; BN's batch counter is a 0-d integer tensor")
    return value.detach().to(torch.int64).numpy().copy()


def _name(torch_thing) -> str:
    return str(torch_thing).removeprefix("torch.")


def _shape(shape) -> str:
    return fmt_shape(tuple(shape)) if len(shape) else "()"


def _index(flat: int, shape: tuple[int, ...]) -> str:
    return ",".join(map(str, np.unravel_index(flat, shape))) if len(shape) > 1 else str(flat)


def _more(keys: list[str]) -> str:
    return f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""


def _short(text: str) -> str:
    return brief(text, MAX_SHOWN)
