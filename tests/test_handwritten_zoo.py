"""The hand-written MobileNetV2, EfficientNet-B0 and ConvNeXt-T of tests/handwritten_zoo.py are the
networks torchvision builds: held to the fixtures dumped from torchvision itself (tests/peers/), as
test_peers holds the specs. So the benchmark that times generated against hand-written code
(benchmarks/torch_backend.py) compares two modules computing the same thing, each checked from
outside rather than against the other.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from handwritten_zoo import ZOO
from test_peers import fixture, recipe


@pytest.mark.parametrize("name", sorted(ZOO))
def test_handwritten_module_is_the_peer(name: str) -> None:
    peer = fixture(name)
    with torch.device("meta"):  # the recipe replaces every tensor: skip the initialisation
        module = ZOO[name]()
    got = [[key, list(t.shape), str(t.dtype).removeprefix("torch.")] for key, t in module.state_dict().items()]
    assert got == peer["state_dict"]
    assert sum(p.numel() for p in module.parameters()) == peer["params"]
    module.load_state_dict(recipe(peer["state_dict"]), strict=True, assign=True)
    x = torch.randn(*peer["input"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = module.eval()(x).flatten()
    want = torch.tensor(peer["output"], dtype=torch.float32)
    err = (out - want).abs().max().item()
    assert err <= 1e-5 * want.abs().max().item(), f"max |error| {err:.3g} over {want.abs().max().item():.3g}"
