"""Every shipped database schedules every kernel of its network, as today's lowering makes them.

A record names the blocks of the kernel it was tuned on, and MetaSchedule finds a kernel's record
by its structure. A change to the frontend or the lowering that reshapes a kernel, or renames a
block its schedule refers to, leaves the record unapplied, and that kernel then runs its default
schedule (~50-100x slower for a conv) with no error anywhere. These tests catch that before a
user's build does.
"""
from __future__ import annotations

import pytest

from resdsl.tvm import databases

pytestmark = pytest.mark.tvm

SHIPPED = sorted(p.name for p in databases.root().iterdir() if (p / "report.json").is_file())


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_database_schedules_every_kernel_of_its_network(name: str) -> None:
    import tvm
    from tvm import relax

    from resdsl.backends.weights import load_weights
    from resdsl.network import load
    from resdsl.tvm.build import kernels, relax_module
    from resdsl.tvm.lowering import Lowering
    from resdsl.zoo import bundled
    work_dir = databases.shipped(name)
    report = work_dir.report()
    net = load(bundled()[report.network])
    lowering = Lowering.resolve("llvm", work_dir=work_dir)
    target = work_dir.tuned_for()  # its CPU, which a bf16 lowering needs to have AVX512-BF16
    mod = kernels(relax_module(net.graph, load_weights(net.graph), databases.tuned_batch(work_dir), lowering),
                  target, lowering)
    with target, work_dir.build_database():
        scheduled = relax.transform.MetaScheduleApplyDatabase()(mod)
    untuned = [gv.name_hint for gv, func in scheduled.functions.items()
               if isinstance(func, tvm.tirx.PrimFunc) and not func.attrs.get("tirx.is_scheduled")]
    assert not untuned, f"{name}'s records no longer apply to these kernels: {untuned}"
