"""The PyTorch backend: every bundled spec builds, runs, and its real shapes equal the IR's."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import resdsl
from conftest import ROOT, SPECS, TEST_SPECS
from handwritten import TIMM, TORCHVISION, CifarResNet
from resdsl.backends.pytorch.layout import ELEMENTWISE
from resdsl.ir import INPUT, Graph
from resdsl.ops import OPS

# What the generated module holds as modules: a layer scale is a parameter of its block (timm's `gamma`).
MODULE_OPS = {op for op, d in OPS.items() if d.module} - {"scale"}


def _module_shape(graph: Graph, name: str, batch: int) -> tuple[int, ...]:
    """What a node's module returns: its shape, but channel_conv's nn.Conv1d runs on the pooled vector
    viewed as (N, 1, C), and ln's and linear's modules on a map's channels last (forward turns each back)."""
    op, shape = graph.node(name).op, graph.shape(name)
    if op == "channel_conv":
        return (batch, 1, shape[0])
    if len(shape) == 3 and (op in PER_PIXEL or op in ELEMENTWISE and _between_per_pixel(graph, name)):
        return (batch, *shape[1:], shape[0])
    return (batch, *shape)


PER_PIXEL = ("ln", "linear")


def _between_per_pixel(graph: Graph, name: str) -> bool:
    """An elementwise layer the generated forward runs on the channels-last view: per-pixel layers
    before and after it, through elementwise ones only (ConvNeXt's GELU between its Linears)."""
    def reaches(node: str, step) -> bool:
        while True:
            nxt = step(node)
            if len(nxt) != 1:
                return False
            node = nxt[0]
            if graph.node(node).op in PER_PIXEL:
                return True
            if graph.node(node).op not in ELEMENTWISE:
                return False
    return reaches(name, graph.inputs) and reaches(name, graph.users)


def check_forward_shapes(graph: Graph, model: torch.nn.Module, batch: int = 1) -> torch.Tensor:
    """Run a forward pass with a hook on the module of every node; compare with the IR."""
    seen: dict[str, tuple[int, ...]] = {}
    modules = dict(model.named_modules())
    handles = []
    for name in graph.order():
        if graph.node(name).op in MODULE_OPS:
            handles.append(modules[name].register_forward_hook(
                lambda mod, args, out, name=name: seen.__setitem__(name, tuple(out.shape))))
    for path, block in graph.blocks.items():  # block outputs check the adds and shortcuts too
        handles.append(modules[path].register_forward_hook(
            lambda mod, args, out, name=block.output: seen.__setitem__(name, tuple(out.shape))))
    x = torch.randn(batch, *graph.shape(INPUT))
    with torch.no_grad():
        y = model.eval()(x)
    for h in handles:
        h.remove()
    expected = {n: _module_shape(graph, n, batch) for n in seen}
    assert seen == expected
    assert len(seen) >= sum(graph.node(n).op in MODULE_OPS for n in graph.order())
    if graph.outputs:  # a dict of named feature maps, in order
        assert [(k, tuple(v.shape)) for k, v in y.items()] == [(k, (batch, *graph.shape(n))) for k, n in graph.outputs]
    else:
        assert tuple(y.shape) == (batch, *graph.shape(graph.output))
    return y


@pytest.mark.parametrize("spec", SPECS + TEST_SPECS, ids=str)
def test_bundled_spec_forward_shapes_and_params(spec) -> None:
    net = resdsl.load(spec)
    assert sum(p.numel() for p in net.to_torch(seed=0).parameters()) == net.params
    # Shapes at 64x64 where the spec takes more: the same layers and shape rules at a twelfth of
    # the work (the full-size outputs of the library networks are checked by test_peers.py). A
    # spec whose head fixes its input size (an `fc` after `flatten`) keeps its own.
    if net.graph.shape(INPUT)[1] > 64:
        try:
            net = resdsl.load(spec, input="64x64")
        except resdsl.ResdslError:
            pass
    check_forward_shapes(net.graph, net.to_torch(seed=0))


# Where a fixture of the real library covers a spec (specs/peers.json), test_peers.py checks it;
# the modules written from the libraries' source stay for the specs no fixture covers.
PEER_SPECS = {str(Path(spec).relative_to("specs").with_suffix(""))
              for spec in json.loads((ROOT / "specs" / "peers.json").read_text()).values()}
REFERENCES = {name: build for name, build in {**TORCHVISION, **TIMM}.items() if name not in PEER_SPECS}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_torchvision_state_dict_loads_strict(name: str) -> None:
    """torchvision's and timm's modules, written from their source (tests/handwritten.py): their
    state_dicts load into the spec's module with strict=True and give the same outputs."""
    torch.manual_seed(1)
    reference = REFERENCES[name]().eval()
    with torch.no_grad():  # non-trivial BN statistics so a misplaced BN would show
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    model = resdsl.load(f"specs/{name}.rds").to_torch().eval()
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert ours == theirs
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, *resdsl.load(f"specs/{name}.rds").graph.shape(INPUT))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", [3, 5])
def test_option_a_matches_handwritten_cifar_resnet(n: int) -> None:
    reference = CifarResNet(n).eval()
    model = resdsl.load(f"specs/cifar/resnet{6 * n + 2}.rds").to_torch().eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


def test_seed_gives_reproducible_weights() -> None:
    net = resdsl.load("specs/cifar/resnet20.rds")
    a, b = net.to_torch(seed=7).state_dict(), net.to_torch(seed=7).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = net.to_torch(seed=8).state_dict()
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


SMALL_PREACT = """
network preact {
    input 3x32x32
    classes 10
    stem { conv1: conv 16 k3 p1 }
    stage layer1: preact_bottleneck(16) x 2
    stage layer2: preact_basic(32) x 1 stride 2
    head { bn; relu; avgpool; fc classes }
}
"""


@pytest.mark.parametrize("spec", ["specs/cifar/resnet20.rds", "specs/cifar/highway20.rds", SMALL_PREACT])
def test_jit_script_export_and_compile_accept_it(spec: str) -> None:
    net = resdsl.loads(spec) if "network" in spec else resdsl.load(spec)
    model = net.to_torch(seed=0).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), expected)
        exported = torch.export.export(model, (x,))
        torch.testing.assert_close(exported.module()(x), expected)
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")  # no graph breaks allowed
        torch.testing.assert_close(compiled(x), expected)


def test_gated_shortcut_computes_highway_formula() -> None:
    net = resdsl.load("specs/cifar/highway20.rds")
    model = net.to_torch(seed=0).eval()
    block = model.layer2[0]  # 16x32x32 -> 32x16x16: gate and projection
    x = torch.randn(1, 16, 32, 32)
    with torch.no_grad():
        f = block.act2(block.bn2(block.conv2(block.act1(block.bn1(block.conv1(x))))))
        t = torch.sigmoid(block.gate(x))
        expected = f * t + block.downsample(x) * (1 - t)
        torch.testing.assert_close(block(x), expected)


def test_generated_file_imports_and_builds(tmp_path) -> None:
    out = tmp_path / "resnet20.py"
    subprocess.run([sys.executable, "-m", "resdsl", "compile", "specs/cifar/resnet20.rds", "-o", str(out)],
                   check=True, cwd=ROOT, capture_output=True)
    code = "import resnet20; m = resnet20.build(0); print(sum(p.numel() for p in m.parameters()))"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "269722"


def test_fc_on_a_spatial_map_flattens_everything() -> None:
    # Found by the property tests: fc's in_features must be C*H*W, not C, without avgpool.
    net = resdsl.loads("network n {\n input 2x5x7\n classes 3\n stem { conv1: conv 4 k3 p1 }\n head { fc classes }\n}\n")
    model = net.to_torch(seed=0)
    assert model.fc.in_features == 4 * 5 * 7
    assert sum(p.numel() for p in model.parameters()) == net.params
    check_forward_shapes(net.graph, model)


def test_backbone_returns_torchvisions_feature_maps() -> None:
    """resnet50_backbone with torchvision ResNet-50's weights (but its fc): the four stage outputs
    a detection backbone reads, equal to the reference's own intermediate values."""
    reference = TORCHVISION["resnet50"]().eval()
    model = resdsl.load("specs/resnet50_backbone.rds").to_torch().eval()
    weights = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    model.load_state_dict(weights, strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ours = model(x)
        y = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        theirs = {}
        for name in ("layer1", "layer2", "layer3", "layer4"):
            y = theirs[name] = getattr(reference, name)(y)
    assert list(ours) == list(theirs)
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name])
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x)["layer4"], theirs["layer4"])


# ---- training-only layers: dropout and stochastic depth -------------------------------------------
def test_stochastic_depth_rates_grow_linearly_and_vanish_in_eval() -> None:
    net = resdsl.load("specs/cifar/resnet110_stochastic_depth.rds")
    model = net.to_torch(seed=0)
    rates = [m.rate for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates == pytest.approx([0.5 * (i + 1) / 54 for i in range(54)])
    # In eval it is ResNet-110: the hand-written CIFAR ResNet's weights give the same outputs.
    reference = CifarResNet(18).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference(x))


def test_drop_path_drops_whole_samples_at_its_rate_and_keeps_the_mean() -> None:
    net = resdsl.load("specs/cifar/resnet110_stochastic_depth.rds")
    model = net.to_torch(seed=0).train()
    drop = model.layer3[-1].drop_path  # rate 0.5
    torch.manual_seed(0)
    x = torch.ones(20000, 2, 3, 3)
    y = drop(x)
    per_sample = y.flatten(1)
    assert torch.all((per_sample == 0).all(1) | (per_sample == 2.0).all(1))  # whole samples, scaled by 1/0.5
    assert abs((per_sample[:, 0] == 0).float().mean().item() - 0.5) < 0.02
    assert abs(y.mean().item() - 1.0) < 0.03
    assert torch.equal(drop.eval()(x), x)
