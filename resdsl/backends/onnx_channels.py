"""ONNX converters of the layers that act on the channels at each pixel: ConvNeXt's `ln`,
`linear`, `scale` and ShuffleNet's `shuffle`. Each takes onnx_export's builder (`b`, not imported here: onnx_export imports
this module), the node, its inputs and attributes."""
from __future__ import annotations

from typing import Any

import numpy as np

Builder = Any  # onnx_export._Builder


def ln(b: Builder, name: str, ins: list[str], a: dict) -> str:
    """LayerNormalization (opset 17) normalises the trailing axes: a map's channels are moved last
    and back, as torch.onnx writes LayerNorm2d."""
    params = [b.weight(f"{name}.{key}") for key in ("weight", "bias")]
    shape = b.in_shape(name)
    if len(shape) == 1:
        return b.op("LayerNormalization", [ins[0], *params], name, axis=-1, epsilon=a["eps"])
    c, h, w = shape
    last = b.op("Transpose", ins, f"{name}.nhwc", shape=(h, w, c), perm=[0, 2, 3, 1])
    normed = b.op("LayerNormalization", [last, *params], f"{name}.normed", shape=(h, w, c), axis=-1,
                  epsilon=a["eps"])
    return b.op("Transpose", [normed], name, perm=[0, 3, 1, 2])


def linear(b: Builder, name: str, ins: list[str], a: dict) -> str:
    """On a map, a 1x1 Conv (the same sums, with no transposes), its weight (out, in, 1, 1) under
    the state_dict key; on a vector, a Gemm."""
    bias = b.weight(f"{name}.bias")
    key, shape = f"{name}.weight", b.in_shape(name)
    if len(shape) == 1:
        return b.op("Gemm", [ins[0], b.weight(key), bias], name, transB=1)
    b.initializers.append(b.numpy_helper.from_array(
        np.ascontiguousarray(b.weights[key].astype(np.float32).reshape(a["out"], shape[0], 1, 1)), key))
    return b.op("Conv", [ins[0], key, bias], name, kernel_shape=[1, 1])


def scale(b: Builder, name: str, ins: list[str], a: dict) -> str:
    """Its key is its label, which a spec's `outputs` may name too: a constant of a fresh name."""
    shape = b.in_shape(name)
    factor = b.const(name, b.weights[name].astype(np.float32).reshape((shape[0],) + (1,) * (len(shape) - 1)))
    return b.op("Mul", [ins[0], factor], name)


def shuffle(b: Builder, name: str, ins: list[str], a: dict) -> str:
    """Reshape (N, g, C / g, ...), Transpose the two, Reshape back: as torch.onnx writes
    torchvision's channel_shuffle."""
    c, *rest = shape = b.in_shape(name)
    g = a["groups"]
    grouped = b.op("Reshape", [ins[0], b.const(f"{name}.groups", np.array([0, g, c // g, *rest], np.int64))],
                   f"{name}.grouped", shape=(g, c // g, *rest))
    swapped = b.op("Transpose", [grouped], f"{name}.swapped", shape=(c // g, g, *rest),
                   perm=[0, 2, 1, *range(3, 3 + len(rest))])
    return b.op("Reshape", [swapped, b.const(f"{name}.shape", np.array([0, *shape], np.int64))], name)


CONVERTERS = {"ln": ln, "linear": linear, "scale": scale, "shuffle": shuffle}
