"""The ONNX target computes what the torch backend computes, for the same weights."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import resdsl
from conftest import SPECS, TEST_SPECS
from resdsl.backends.onnx_export import to_onnx
from resdsl.backends.weights import load_weights

NUMERIC_SPECS = ([s for s in SPECS if s.parts[1] == "cifar"] + [p for p in SPECS if p.name == "resnet18.rds"]
                 + TEST_SPECS)

def randomize_bn(model: torch.nn.Module, input_shape: tuple[int, ...], seed: int = 0) -> None:
    """Weights like a trained network's: BN statistics measured on a batch (so activations stay
    finite through 1000 layers, as in a trained net) and affine parameters far from the identity,
    so a misfolded BN cannot hide."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.momentum = None  # running stats := this batch's statistics
    with torch.no_grad():
        model.train()(torch.randn(8, *input_shape, generator=g))
        model.eval()
        for m in bns:
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.uniform_(-0.5, 0.5, generator=g)

def rel_err(a, b) -> float:
    """The largest relative error over outputs (arrays, or lists of them for named outputs)."""
    if isinstance(b, list):
        assert len(a) == len(b)
        return max(rel_err(x, y) for x, y in zip(a, b))
    return float(np.abs(a - b).max() / np.abs(b).max())

@pytest.mark.parametrize("spec", NUMERIC_SPECS, ids=str)
def test_onnxruntime_computes_what_torch_does(spec) -> None:
    net, weights, x, expected = reference(spec)
    session = ort.InferenceSession(to_onnx(net.graph, weights).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x})
    if net.graph.outputs:
        assert [o.name for o in session.get_outputs()] == [name for name, _ in net.graph.outputs]
    assert rel_err(got if net.graph.outputs else got[0], expected) < 1e-4


def reference(spec, batch: int = 1, seed: int = 0):
    """(network, weights like a trained one's, input, torch's output) for a bundled spec; the
    output is a list of arrays, in order, where the spec names `outputs`."""
    net = resdsl.load(spec)
    model = net.to_torch(seed=seed).eval()
    randomize_bn(model, net.graph.shape("<input>"), seed=seed)
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    x = np.random.default_rng(seed).standard_normal((batch, *net.graph.shape("<input>")), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x))
    expected = [v.numpy() for v in expected.values()] if isinstance(expected, dict) else expected.numpy()
    return net, weights, x, expected

@pytest.mark.parametrize("tile", [2, 4])
def test_winograd_matrices_compute_a_correlation(tile) -> None:
    """F(m,3) from the transforms equals a direct 3x3 correlation, in 2-D, in float64."""
    from resdsl.tvm.winograd import MATRICES, transform_weight
    b_t, g_mat, a_t = MATRICES[tile]
    alpha = tile + 2
    rng = np.random.default_rng(0)
    d, g = rng.standard_normal((alpha, alpha)), rng.standard_normal((3, 3))
    direct = np.array([[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(tile)] for i in range(tile)])
    winograd = a_t @ ((g_mat @ g @ g_mat.T) * (b_t @ d @ b_t.T)) @ a_t.T
    np.testing.assert_allclose(winograd, direct, rtol=1e-12, atol=1e-12)
    u = transform_weight(g[None, None].astype(np.float32), tile)
    assert u.shape == (alpha, alpha, 1, 1)
    np.testing.assert_allclose(u[:, :, 0, 0], g_mat @ g @ g_mat.T, rtol=1e-5, atol=1e-6)

def test_seeded_init_is_the_torch_backends(tmp_path) -> None:
    net = resdsl.load("specs/cifar/resnet20.rds")
    weights = load_weights(net.graph, seed=5)
    reference = net.to_torch(seed=5).state_dict()
    assert all(np.array_equal(weights[k], reference[k].numpy()) for k in reference)

def test_wrong_weights_are_a_user_error(tmp_path, capsys) -> None:
    from resdsl.cli import main
    other = resdsl.load("specs/cifar/resnet32.rds").to_torch(seed=0)
    torch.save(other.state_dict(), tmp_path / "w.pt")
    torch.save(resdsl.load("specs/cifar/resnet20.rds").to_torch().state_dict() | {"conv1.weight": torch.zeros(1)},
               tmp_path / "bad.pt")
    assert main(["compile", "specs/cifar/resnet44.rds", "--target", "onnx", "--weights", str(tmp_path / "w.pt"),
                 "-o", str(tmp_path / "x.onnx")]) == 1
    assert "the weights lack" in capsys.readouterr().err
    assert main(["compile", "specs/cifar/resnet20.rds", "--target", "onnx", "--weights", str(tmp_path / "bad.pt"),
                 "-o", str(tmp_path / "x.onnx")]) == 1
    assert "has shape 1, the network needs 16x3x3x3" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
