"""Grafting: a kernel tried with the tiles its siblings (the same conv, another epilogue) were
tuned to, as a real schedule of its own that computes what it should."""
from __future__ import annotations

import pytest

from resdsl.tvm.lowering import Lowering
from resdsl.tvm.workdir import WorkDir

pytestmark = pytest.mark.tvm

# The stem and the block's first conv are the same conv + bias + ReLU (one task), the block's
# second conv the same conv with the residual add too: two tasks, one conv.
BLOCK = """
network block {
    input 8x8x8
    classes 4
    stem { conv1: conv 8 k3 p1; bn1: bn; relu }
    stage layer1: basic(8) x 1
    head { avgpool; fc classes }
}
"""


def _decisions(trace) -> list:
    insts, decisions = trace.as_json(remove_postproc=True)
    by_index = dict((i, d) for i, d in decisions)
    return [str(by_index[i]) for i, inst in enumerate(insts) if inst[0] == "SamplePerfectTile"]


def _sampled(mod, target, seed: int):
    """A schedule from `mod`'s search space, its decisions drawn with `seed`."""
    from tvm.s_tir import meta_schedule as ms
    context = ms.TuneContext(mod=mod, target=target, space_generator="post-order-apply",
                             search_strategy="evolutionary", task_name="sampled", rand_state=seed)
    return context.generate_design_space()[0]


def test_a_kernel_takes_its_siblings_tiles(tmp_path) -> None:
    import numpy as np
    import tvm
    from tvm.s_tir import meta_schedule as ms
    from resdsl.backends.weights import load_weights
    from resdsl.network import load
    from resdsl.tvm.build import relax_module
    from resdsl.tvm.grafting import graft_records, siblings
    from resdsl.tvm.target import make_target
    from resdsl.tvm.tasks import extract_tasks
    spec = tmp_path / "block.rds"
    spec.write_text(BLOCK)
    net = load(spec)
    lowering = Lowering("NHWC", winograd=False)  # weights as given: both kernels read the same arguments
    target = make_target("llvm")
    _, tasks = extract_tasks(relax_module(net.graph, load_weights(net.graph), 1, lowering), target, lowering)
    (group,) = siblings(tasks)
    names = sorted(tasks[k].task_name for k in group)
    assert len(names) == 2 and all("conv2d" in n for n in names), names
    plain, residual = sorted(group, key=lambda k: tasks[k].task_name.count("add"))
    assert tasks[residual].task_name.count("add") == tasks[plain].task_name.count("add") + 1

    work = WorkDir(tmp_path / "work")
    work.path.mkdir()
    database = work.database()
    donor_mod, mod = tasks[plain].dispatched[0], tasks[residual].dispatched[0]
    donor = _sampled(donor_mod, target, seed=1)
    seed = next(s for s in range(2, 50)
                if _decisions(_sampled(mod, target, s).trace) != _decisions(donor.trace))
    for kernel, schedule, secs in ((donor_mod, donor, 1e-5), (mod, _sampled(mod, target, seed), 1e-3)):
        database.commit_tuning_record(ms.database.TuningRecord(
            schedule.trace, database.commit_workload(kernel), [secs], target,
            ms.arg_info.ArgInfo.from_prim_func(kernel["main"])))

    assert graft_records(work, tasks, target) >= 1
    database = work.database()  # read again: the grafts were committed through another instance
    records = database.get_top_k(database.commit_workload(mod), 100)
    grafted = [r for r in records if _decisions(r.trace) == _decisions(donor.trace)]
    assert grafted and all(r.run_secs and float(r.run_secs[0]) < 1.0 for r in grafted)  # timed here
    # The graft is the residual kernel's own schedule: it computes the conv, the add and the ReLU.
    rng = np.random.default_rng(0)
    candidate = grafted[0].as_measure_candidate()
    inputs = [rng.standard_normal([int(d) for d in a.shape]).astype(a.dtype) for a in candidate.args_info]
    outputs = []
    for kernel in (candidate.sch.mod, mod):
        args = [tvm.runtime.tensor(a) for a in inputs]
        tvm.compile(kernel, target=target)(*args)
        outputs.append(args[-1].numpy())
    assert np.abs(outputs[1]).max() > 0
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
    assert graft_records(work, tasks, target) == 0  # made once
