"""Property tests over random networks: the generated module runs, and every node's real shape
and the parameter count equal what the IR inferred; broken specs give clean errors."""
from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import resdsl
from resdsl import ResdslError
from strategies import MISTAKES, networks
from test_torch_backend import check_forward_shapes


def _load_or_reject(text: str) -> resdsl.Network:
    try:
        return resdsl.loads(text, "random.rds")
    except ResdslError as exc:
        # The mistakes the strategy can make: option A asked to shrink channels, and a width too
        # small for the SE of `bottleneck(w, attn=se)`, which squeezes by 16.
        expected = ("option A cannot shrink", "no shortcut can map", "`out` must be at least 1, not 0")
        assert any(e in str(exc) for e in expected), exc.render()
        assume(False)
        raise


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_random_networks_run_with_inferred_shapes(text: str) -> None:
    net = _load_or_reject(text)
    model = net.to_torch(seed=0)
    assert sum(p.numel() for p in model.parameters()) == net.params
    check_forward_shapes(net.graph, model, batch=2)


@settings(max_examples=40, deadline=None)
@given(networks())
def test_generation_is_deterministic(text: str) -> None:
    net = _load_or_reject(text)
    assert net.torch_source() == resdsl.loads(text, "random.rds").torch_source()
    compile(net.torch_source(), "<generated>", "exec")


@settings(max_examples=60, deadline=None)
@given(networks(), st.sampled_from(MISTAKES))
def test_broken_networks_give_located_errors(text: str, mistake: tuple[str, str]) -> None:
    old, new = mistake
    assume(old in text)
    broken = text.replace(old, new, 1)
    try:
        resdsl.loads(broken, "broken.rds")
    except ResdslError as exc:
        rendered = exc.render()
        assert rendered.startswith("broken.rds:"), rendered
        assert ": error: " in rendered
    # Some mutations stay valid (identity where no shape changes): then there is nothing to check.


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes(text: str) -> None:
    try:
        resdsl.loads(text, "fuzz.rds")
    except ResdslError:
        pass
