"""The activations of the CNN zoo (relu6, silu, gelu, hardsigmoid, hardswish) compute their
formulas, written here in numpy, in every backend: torch, ONNX Runtime at the oldest and the
newest opset (and at Gelu's first, where ONNX's own op replaces the erf formula), TVM llvm.
The input runs from -8 to 8, through every piece of each one (the clips at -3, 0, 3 and 6)."""
from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch

import resdsl
from resdsl.backends.onnx_export import GELU_OPSET, OPSET, max_opset, to_onnx

SPEC = """
block acts(width) {
    a: branch input { relu6 }
    b: branch input { silu }
    c: branch input { gelu }
    d: branch input { hardsigmoid }
    e: branch input { hardswish }
    concat a b c d e
}

network activations {
    input 2x9x9
    stage all: acts(2) x 1
    outputs all
}
"""

_erf = np.vectorize(math.erf)


def _relu6(x: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(x, 0.0), 6.0)


FORMULAS = {  # in the order the block concatenates them
    "relu6": _relu6,
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "hardsigmoid": lambda x: _relu6(x + 3.0) / 6.0,
    "hardswish": lambda x: x * _relu6(x + 3.0) / 6.0,
}


@pytest.fixture(scope="module")
def case():
    net = resdsl.loads(SPEC, "activations.rds")
    x = np.linspace(-8.0, 8.0, 2 * 2 * 9 * 9, dtype=np.float32).reshape(2, 2, 9, 9)
    x64 = x.astype(np.float64)
    expected = np.concatenate([f(x64) for f in FORMULAS.values()], axis=1)
    return net, x, expected


def _close(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_the_spec_uses_each_activation_once(case) -> None:
    net, _, _ = case
    ops = [net.graph.node(n).op for n in net.graph.order()]
    assert [op for op in ops if op in FORMULAS] == list(FORMULAS)
    assert net.params == 0 and net.macs == 0


def test_torch_computes_the_formulas(case) -> None:
    net, x, expected = case
    model = net.to_torch(seed=0).eval()
    with torch.no_grad():
        got = model(torch.from_numpy(x))["all"].numpy()
    _close(got, expected)
    # And PyTorch's own functions agree (gelu the exact erf form, not the tanh one).
    t = torch.from_numpy(x)
    functional = [torch.nn.functional.relu6(t), torch.nn.functional.silu(t), torch.nn.functional.gelu(t),
                  torch.nn.functional.hardsigmoid(t), torch.nn.functional.hardswish(t)]
    _close(torch.cat(functional, 1).numpy(), expected)


def test_the_block_input_is_read_by_every_branch_so_none_is_in_place(case) -> None:
    net, _, _ = case
    source = net.torch_source()
    for module in ("ReLU6", "SiLU", "Hardsigmoid", "Hardswish"):
        assert f"nn.{module}()" in source
    assert "nn.GELU()" in source and "inplace=True" not in source


@pytest.mark.parametrize("opset", sorted({OPSET, GELU_OPSET - 1, GELU_OPSET, max_opset()}))
def test_onnxruntime_computes_the_formulas(case, opset) -> None:
    if opset > max_opset():
        pytest.skip(f"this ONNX Runtime runs opsets up to {max_opset()}")
    net, x, expected = case
    model = to_onnx(net.graph, {}, opset=opset)
    types = {node.op_type for node in model.graph.node}
    assert ("Gelu" in types) == (opset >= GELU_OPSET) and ("Erf" in types) == (opset < GELU_OPSET)
    assert {"Clip", "HardSigmoid", "HardSwish", "Sigmoid"} <= types
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    _close(session.run(None, {"input": x})[0], expected)


@pytest.mark.tvm
def test_tvm_llvm_computes_the_formulas(case) -> None:
    import tvm

    from resdsl.tvm import build as tvm_build
    from resdsl.tvm.lowering import Lowering
    from resdsl.tvm.target import make_target
    net, x, expected = case
    for lowering in (Lowering("NCHW"), Lowering.default("llvm")):
        executable = tvm_build.build(tvm_build.relax_module(net.graph, {}, 2, lowering), make_target("llvm"))
        vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
        got = vm["main"](tvm.runtime.tensor(x))
        _close(got.numpy(), expected)  # one output: a tensor, not a tuple
