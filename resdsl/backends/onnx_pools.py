"""ONNX for adaptive average pooling to `size`, which ONNX has no operator for: a window where
the size divides the map (torchvision's 7x7 head at 224x224), a nearest upsample where the map
divides the size (the same head on a map smaller than 7x7, which nn.AdaptiveAvgPool2d computes
by repeating each pixel), else a located error. Takes onnx_export's builder (`b`, not imported
here: onnx_export imports this module)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..diagnostics import ResdslError
from ..passes.shapes import locate

Builder = Any  # onnx_export._Builder


def adaptive_avgpool(b: Builder, name: str, ins: list[str], a: dict) -> str:
    c, h, w = b.in_shape(name)
    size = a["size"]
    if h % size == 0 and w % size == 0:
        return b.op("AveragePool", ins, name, kernel_shape=[h // size, w // size], strides=[h // size, w // size])
    if size % h == 0 and size % w == 0:  # every output pixel's bin is one input pixel, repeated
        m, n = size // h, size // w
        split = b.op("Reshape", [ins[0], b.const(f"{name}.split", np.array([0, c, h, 1, w, 1], np.int64))],
                     f"{name}.split", shape=(c, h, 1, w, 1))
        spread = b.op("Expand", [split, b.const(f"{name}.spread", np.array([1, c, h, m, w, n], np.int64))],
                      f"{name}.spread", shape=(c, h, m, w, n))
        return b.op("Reshape", [spread, b.const(f"{name}.map", np.array([0, c, size, size], np.int64))], name)
    span, notes = locate(b.graph, name)
    raise ResdslError(f"ONNX cannot express `{name}`: adaptive pooling of {h}x{w} to {size}x{size}, where "
                      "neither divides the other", span, notes=notes,
                      hint="choose an input whose map the size divides, or one that divides the size")
