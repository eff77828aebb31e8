"""`avgpool size=S` on a map smaller than S: PyTorch's adaptive pooling repeats each pixel over
the bins it falls in, so torchvision's VGG and AlexNet run below 224x224 (their 7x7 head on a 1x1
map, at 32x32); ONNX writes it as a reshape and expand where the map divides the size, TVM as
Relax's adaptive pool. Checked against numpy's repeat."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import resdsl
from resdsl.backends.onnx_export import to_onnx

SPEC = "network up {\n    input 3x2x2\n    outputs pooled\n    stem { pooled: avgpool size=6 }\n}\n"


@pytest.fixture(scope="module")
def case():
    net = resdsl.loads(SPEC, "up.rds")
    x = np.random.default_rng(0).standard_normal((2, 3, 2, 2)).astype(np.float32)
    return net, x, np.repeat(np.repeat(x, 3, axis=2), 3, axis=3)


def test_torch_repeats_each_pixel(case) -> None:
    net, x, expected = case
    assert net.graph.shape("pooled") == (3, 6, 6)
    np.testing.assert_allclose(net.to_torch()(torch.from_numpy(x))["pooled"].numpy(), expected, rtol=0, atol=0)


def test_onnxruntime_repeats_each_pixel(case) -> None:
    net, x, expected = case
    session = ort.InferenceSession(to_onnx(net.graph, {}).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=0, atol=0)


def test_onnx_refuses_a_size_and_map_neither_dividing_the_other() -> None:
    net = resdsl.loads(SPEC.replace("3x2x2", "3x4x4"), "up.rds")
    with pytest.raises(resdsl.ResdslError) as caught:
        to_onnx(net.graph, {})
    assert caught.value.render().startswith("up.rds:4:12: error: ONNX cannot express `pooled`: adaptive pooling "
                                            "of 4x4 to 6x6, where neither divides the other")


@pytest.mark.tvm
def test_tvm_llvm_repeats_each_pixel(case) -> None:
    import tvm

    from resdsl.tvm import build as tvm_build
    from resdsl.tvm.lowering import Lowering
    from resdsl.tvm.target import make_target
    net, x, expected = case
    executable = tvm_build.build(tvm_build.relax_module(net.graph, {}, 2, Lowering("NCHW")), make_target("llvm"))
    out = tvm.relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_vgg16_runs_at_32x32_as_torchvision_does() -> None:
    net = resdsl.load("specs/vgg16.rds", input=(3, 32, 32))
    assert net.params == 138_357_544  # the classifier still reads 512x7x7
    assert net.graph.shape("avgpool") == (512, 7, 7)
