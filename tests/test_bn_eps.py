"""BatchNorm's `eps` (timm's EfficientNet uses 1e-3) reaches every backend: the torch module,
ONNX's BatchNormalization, and TVM both where BN folds into the conv before it and where it
stays a per-channel multiply-add. Running variances near eps make a dropped eps show."""
from __future__ import annotations

import copy

import numpy as np
import onnxruntime as ort
import pytest
import torch

import resdsl
from resdsl.backends.onnx_export import to_onnx

SPEC = """
block unit(width, eps = 1e-3) {
    conv1: conv width k3 p1
    bn1: bn eps=eps
    relu
}

network bn_eps {
    input 3x6x6
    stem { conv1: conv 4 k3 p1; bn1: bn eps=1e-3; relu; bn2: bn eps=0.1 }
    stage layer1: unit(4) x 2 first(eps=0.01)
    outputs layer1
}
"""
EPS = {"bn1": 1e-3, "bn2": 0.1, "layer1.0.bn1": 0.01, "layer1.1.bn1": 1e-3}


@pytest.fixture(scope="module")
def case():
    net = resdsl.loads(SPEC, "bn_eps.rds")
    model = net.to_torch(seed=0).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1e-3 + 1e-4)
                m.running_mean.uniform_(-0.05, 0.05, generator=g)
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6), dtype=np.float32) * 0.05
    with torch.no_grad():
        expected = model(torch.from_numpy(x))["layer1"].numpy()
    return net, model, weights, x, expected


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_each_bn_has_its_eps_in_the_graph_and_the_module(case) -> None:
    net, model, _, _, _ = case
    assert {n: net.graph.node(n).attrs["eps"] for n in net.graph.nodes_of("bn")} == EPS
    modules = dict(model.named_modules())
    assert {n: modules[n].eps for n in EPS} == EPS
    source = net.torch_source()
    assert "nn.BatchNorm2d(4, eps=0.001)" in source and "nn.BatchNorm2d(width, eps=eps)" in source
    # The default is PyTorch's, and not written (the bundled specs' generated code is unchanged).
    plain = resdsl.loads(SPEC.replace("eps=1e-3;", ";"), "plain.rds")
    assert plain.graph.node("bn1").attrs["eps"] == 1e-5
    assert "nn.BatchNorm2d(4)" in plain.torch_source()


def test_the_eps_matters_here(case) -> None:
    """With every eps at the default the output differs by far more than the tolerances below."""
    _, model, _, x, expected = case
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = 1e-5
    with torch.no_grad():
        changed = model(torch.from_numpy(x))["layer1"].numpy()
    assert _rel_err(changed, expected) > 1e-2


def test_onnxruntime_uses_each_eps(case) -> None:
    net, _, weights, x, expected = case
    model = to_onnx(net.graph, weights)
    eps = {n.name: n.attribute[0].f for n in model.graph.node if n.op_type == "BatchNormalization"}
    assert eps == pytest.approx(EPS)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert _rel_err(session.run(None, {"input": x})[0], expected) < 1e-4


@pytest.mark.tvm
def test_tvm_llvm_folds_and_applies_each_eps(case) -> None:
    import tvm

    from resdsl.tvm import build as tvm_build
    from resdsl.tvm.lowering import Lowering
    from resdsl.tvm.target import make_target
    net, _, weights, x, expected = case
    for lowering in (Lowering("NCHW"), Lowering.default("llvm")):
        executable = tvm_build.build(tvm_build.relax_module(net.graph, weights, 2, lowering), make_target("llvm"))
        vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
        assert _rel_err(vm["main"](tvm.runtime.tensor(x)).numpy(), expected) < 1e-4
