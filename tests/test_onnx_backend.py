"""The ONNX target computes what the torch backend computes, for the same weights."""
from __future__ import annotations

import hashlib
import os
from importlib.metadata import version as installed_version
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import SPECS, TEST_SPECS

import resdsl
from resdsl.backends.onnx_export import OPSET, max_opset, spec_metadata, to_onnx
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


# value_info, metadata, opsets -------------------------------------------------------------------

SHAPE_SPECS = ["specs/resnet18.rds", "specs/resnet50.rds", "specs/cifar/highway20.rds", "specs/cifar/resnet20.rds",
               "tests/specs/branches.rds", "tests/specs/every_op.rds", "tests/specs/outputs.rds"]


def _dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("spec", SHAPE_SPECS)
def test_value_info_is_what_onnx_infers(spec) -> None:
    """resdsl's shapes, written into the file, are the ones ONNX's own inference finds: the same
    values, shapes, dtypes and the same symbolic batch dimension as the input's."""
    net = resdsl.load(spec)
    model = to_onnx(net.graph, load_weights(net.graph, None, 0))
    ours = {v.name: v for v in model.graph.value_info}
    assert len(ours) == len(model.graph.value_info)  # each named once
    made = [v for n in model.graph.node for v in n.output]
    ends = {o.name for o in model.graph.output}
    assert len(ours) == len(made) - len(ends) and set(ours) == set(made) - ends  # every intermediate tensor
    batch = model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert batch and all(_dims(v)[0] == batch for v in ours.values())
    del model.graph.value_info[:]
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model, strict_mode=True).graph.value_info}
    assert set(inferred) == set(ours)
    for name, value in ours.items():
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert (_dims(value), value.type) == (_dims(inferred[name]), inferred[name].type), name


@pytest.fixture(scope="module")
def resnet18_reference():
    return reference("specs/resnet18.rds")


@pytest.mark.parametrize("opset", range(OPSET, max_opset() + 1))
def test_every_offered_opset_runs_in_onnxruntime(opset, resnet18_reference) -> None:
    net, weights, x, expected = resnet18_reference
    model = to_onnx(net.graph, weights, opset=opset)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", opset)]
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert rel_err(session.run(None, {"input": x})[0], expected) < 1e-4


def test_max_opset_is_the_newest_onnx_and_onnxruntime_share() -> None:
    newest = max_opset()
    assert OPSET <= newest <= onnx.defs.onnx_opset_version()
    g = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
                               [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                               [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    if newest < onnx.defs.onnx_opset_version():  # ONNX Runtime, not onnx, is the limit: it refuses the next
        model = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", newest + 1)])
        with pytest.raises(Exception, match=f"opset|Opset|{newest + 1}"):
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_opset_out_of_range_is_refused_with_the_range(tmp_path, capsys) -> None:
    from resdsl.cli import main
    args = ["compile", "specs/cifar/resnet20.rds", "--target", "onnx", "-o", str(tmp_path / "x.onnx")]
    for opset in (OPSET - 1, max_opset() + 1):
        assert main([*args, "--opset", str(opset)]) == 1
        assert f"opsets {OPSET} to {max_opset()}" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
    assert main(["compile", "specs/cifar/resnet20.rds", "--opset", "18", "-o", str(tmp_path / "x.py")]) == 1
    assert "--opset applies to --target onnx" in capsys.readouterr().err
    with pytest.raises(resdsl.ResdslError, match="out of range"):
        to_onnx(resdsl.load("specs/cifar/resnet20.rds").graph, {}, opset=OPSET - 1)


def test_metadata_names_the_spec_and_the_network(tmp_path, monkeypatch) -> None:
    from resdsl.cli import main
    spec = Path("specs/cifar/resnet20.rds").resolve()
    out = tmp_path / "a.onnx"
    assert main(["compile", str(spec), "--target", "onnx", "--opset", str(max_opset()), "-o", str(out)]) == 0
    model = onnx.load(out)
    props = {p.key: p.value for p in model.metadata_props}
    assert props == {
        "resdsl.version": installed_version("resdsl"), "resdsl.network": "resnet20", "resdsl.input": "3x32x32",
        "resdsl.classes": "10", "resdsl.outputs": "logits", "resdsl.spec": "resnet20.rds",
        "resdsl.spec_sha256": hashlib.sha256(spec.read_bytes()).hexdigest(),
    }
    assert (model.producer_name, model.producer_version) == ("resdsl", installed_version("resdsl"))
    assert "resnet20.rds" in model.doc_string and model.opset_import[0].version == max_opset()
    # The same spec from another directory, by another path, is the same file, byte for byte.
    monkeypatch.chdir(tmp_path)
    assert main(["compile", os.path.relpath(spec), "--target", "onnx", "--opset", str(max_opset()),
                 "-o", "b.onnx"]) == 0
    assert (tmp_path / "b.onnx").read_bytes() == out.read_bytes()
    # --set changes the network but not the text: the overrides say so.
    assert main(["compile", str(spec), "--set", "n=2", "--target", "onnx", "-o", "c.onnx"]) == 0
    props = {p.key: p.value for p in onnx.load(tmp_path / "c.onnx").metadata_props}
    assert props["resdsl.overrides"] == "n=2" and props["resdsl.network"] == "resnet20"


def test_metadata_of_a_network_without_classes() -> None:
    net = resdsl.load("tests/specs/outputs.rds")
    model = to_onnx(net.graph, load_weights(net.graph, None, 0),
                    metadata=spec_metadata("x/outputs.rds", text="network outputs {}"))
    props = {p.key: p.value for p in model.metadata_props}
    assert "resdsl.classes" not in props
    assert props["resdsl.outputs"] == ",".join(name for name, _ in net.graph.outputs)
    assert props["resdsl.spec"] == "outputs.rds"
    assert props["resdsl.spec_sha256"] == hashlib.sha256(b"network outputs {}").hexdigest()


def test_export_is_deterministic() -> None:
    net = resdsl.load("tests/specs/branches.rds")
    weights = load_weights(net.graph, None, 0)
    a, b = (to_onnx(net.graph, weights, metadata=spec_metadata("tests/specs/branches.rds")).SerializeToString()
            for _ in range(2))
    assert a == b


def test_metadata_hashes_what_the_spec_includes(tmp_path) -> None:
    """An include decides the network as much as the spec's own text, so it is hashed too."""
    from resdsl.cli import main
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "blocks.rds").write_text("block unused(w) {\n    conv1: conv w k3 p1\n}\n")
    (tmp_path / "net.rds").write_text('include "lib/blocks.rds"\nnetwork tiny {\n    input 3x8x8\n    classes 3\n'
                                      "    stem { conv 4 k3 p1; relu }\n    head { avgpool; fc classes }\n}\n")
    assert main(["compile", str(tmp_path / "net.rds"), "--target", "onnx", "-o", str(tmp_path / "n.onnx")]) == 0
    props = {p.key: p.value for p in onnx.load(tmp_path / "n.onnx").metadata_props}
    digest = hashlib.sha256((tmp_path / "lib" / "blocks.rds").read_bytes()).hexdigest()
    assert props["resdsl.includes"] == f"lib/blocks.rds={digest}"
    assert props["resdsl.spec"] == "net.rds" and props["resdsl.classes"] == "3"
