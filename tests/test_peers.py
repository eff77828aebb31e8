"""Every bundled spec that reproduces a timm or torchvision network, against that network itself.

tests/peers/ holds fixtures dumped from the real library modules (tests/peers/README.md: state_dict
keys, shapes and dtypes, parameter count, eval output under a weight recipe rebuilt from the keys),
copied from ../shared/peers so that a clean clone runs them. specs/peers.json maps a fixture's name
to the spec that reproduces it; a spec reproduces its peer when the generated module's state_dict
has the same keys, shapes and dtypes in the same order, the recipe weights load with strict=True,
the eval output equals the fixture's within 1e-5 of its largest magnitude, and the parameter count
is exact. A fixture no spec reproduces yet is in NOT_YET with the construct the language lacks.
"""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import pytest

import resdsl

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
PEERS = Path(__file__).resolve().parent / "peers"
MANIFEST = json.loads((ROOT / "specs" / "peers.json").read_text(encoding="utf-8"))
FIXTURES = sorted(p.stem for p in PEERS.glob("*.json"))

# Fixtures no spec reproduces yet, each with what the language lacks to write it exactly (issue #31).
NOT_YET = {
    # The ResNet family.
    # The rest of the classification zoo.
}

# Specs that reproduce their peer's keys, shapes, dtypes, weights and outputs, but whose state_dict
# lists the keys in another order, with what the language lacks to match it.
ORDER_NOT_YET = {
    "timm_resnetv2_50": "a policy's projection is registered after the block's layers (torchvision's "
                        "Bottleneck order); timm's PreActBottleneck registers downsample.conv before norm1",
    "tv_regnet_y_400mf": "torchvision's ResBottleneckBlock registers its shortcut (proj) before its "
                         "branch (f); a block's handed-in shortcut is registered after the block's layers",
}

DTYPES = {"float32": torch.float32, "int64": torch.int64}  # the fixtures' spelling of a dtype


def fixture(name: str) -> dict:
    return json.loads((PEERS / f"{name}.json").read_text(encoding="utf-8"))


def recipe(entries: list) -> dict:
    """The fixtures' weights, every tensor from its own key (tests/peers/README.md)."""
    state = {}
    for key, shape, dtype in entries:
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        if DTYPES[dtype] == torch.int64:
            value = torch.zeros(shape, dtype=torch.long)
        elif key.endswith("running_var"):
            value = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_mean"):
            value = torch.randn(shape, generator=g) * 0.1
        elif len(shape) <= 1 and key.endswith("weight"):
            value = 1.0 + torch.randn(shape, generator=g) * 0.1
        elif len(shape) <= 1:
            value = 0.0 + torch.randn(shape, generator=g) * 0.1
        else:
            value = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        state[key] = value
    return state


def built(name: str):
    """The spec's network and its module, built on the meta device: the fixture's weights replace
    every tensor anyway, and ResNet-152-D or WRN-101-2 would spend seconds on an initialisation."""
    net = resdsl.load(ROOT / MANIFEST[name])
    with torch.device("meta"):
        return net, net.to_torch()


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_spec_reproduces_its_peer(name: str) -> None:
    peer = fixture(name)
    net, module = built(name)
    got = [[key, list(t.shape), str(t.dtype).removeprefix("torch.")] for key, t in module.state_dict().items()]
    if name in ORDER_NOT_YET:  # the same entries; once the order matches, drop it from ORDER_NOT_YET
        assert sorted(got) == sorted(peer["state_dict"])
        assert got != peer["state_dict"], f"{name} now lists its keys in the peer's order: not ORDER_NOT_YET"
    else:
        assert got == peer["state_dict"]
    assert net.params == peer["params"]
    assert sum(p.numel() for p in module.parameters()) == peer["params"]
    module.load_state_dict(recipe(peer["state_dict"]), strict=True, assign=True)  # assign: off the meta device
    assert not any(t.is_meta for t in [*module.parameters(), *module.buffers()])
    x = torch.randn(*peer["input"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = module.eval()(x).flatten()
    want = torch.tensor(peer["output"], dtype=torch.float32)
    assert out.shape == want.shape
    err = (out - want).abs().max().item()
    assert err <= 1e-5 * want.abs().max().item(), f"max |error| {err:.3g} over {want.abs().max().item():.3g}"


def test_every_fixture_is_reproduced_or_listed_as_not_yet() -> None:
    assert not set(MANIFEST) & set(NOT_YET), "a fixture is both reproduced and NOT_YET"
    assert set(ORDER_NOT_YET) <= set(MANIFEST)
    assert sorted(set(MANIFEST) | set(NOT_YET)) == FIXTURES


def test_manifest_names_bundled_specs() -> None:
    for name, spec in MANIFEST.items():
        assert (ROOT / spec).is_file(), f"{name}: {spec} does not exist"
        assert (ROOT / spec).parent.name == "specs", f"{name}: {spec} is not a bundled ImageNet spec"


SHARED = ROOT.parent / "shared" / "peers"  # where the fixtures are dumped; CI's clean clone has no ../shared


@pytest.mark.skipif(not SHARED.is_dir(), reason="no ../shared/peers beside this checkout")
def test_the_copy_in_tests_is_the_shared_one() -> None:
    ours = {p.name: p.read_bytes() for p in PEERS.iterdir() if p.is_file()}
    theirs = {p.name: p.read_bytes() for p in SHARED.iterdir() if p.is_file()}
    assert sorted(ours) == sorted(theirs), "copy ../shared/peers/* into tests/peers/ again"
    assert [name for name in sorted(ours) if ours[name] != theirs[name]] == []
