"""`resdsl tune`: real MetaSchedule runs on a tiny network, killed and resumed, and measured
through a loopback RPC tracker."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from resdsl.diagnostics import ResdslError
from resdsl.tvm.lowering import Lowering
from resdsl.tvm.tasks import pick_task
from resdsl.tvm.workdir import RECORDS, WorkDir

pytestmark = pytest.mark.tvm

# Four kernels (conv + BN + ReLU, mean, reshape, matmul + bias): each MetaSchedule iteration
# is short on 2 cores.
TINY = """
network tiny {
    input 3x8x8
    classes 4
    stem { conv1: conv 8 k3 p1; bn1: bn; relu }
    head { avgpool; fc classes }
}
"""


def records(work_dir: Path) -> list[str]:
    path = work_dir / RECORDS
    return [l for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


def tune_cmd(spec: Path, work_dir: Path, trials: int, *extra: str) -> list[str]:
    # Direct convs: Winograd candidates (the CPU default, checked in test_a_work_dir_keeps_its_
    # lowering) build several times slower, and these tests are about the tuner, not the kernels.
    return [sys.executable, "-m", "resdsl", "tune", str(spec), "--target", "llvm", "--trials", str(trials),
            "--work-dir", str(work_dir), "--no-winograd", *extra]


@pytest.fixture
def tiny(tmp_path) -> Path:
    spec = tmp_path / "tiny.rds"
    spec.write_text(TINY)
    return spec


def test_trials_go_where_the_time_is() -> None:
    # id -> (weight, trials, best ms)
    assert pick_task({0: (1, 64, 1.0), 1: (2, 0, None), 2: (1, 0, None)}) == 1  # unmeasured first
    assert pick_task({0: (1, 64, 1.0), 1: (2, 64, 3.0), 2: (1, 64, 0.1)}) == 1  # largest weighted share
    assert pick_task({0: (1, 64, 1.0), 1: (2, 640, 3.0)}) == 0  # ... per trial already spent on it
    assert pick_task({0: (1, 64, None), 1: (1, 64, 0.5)}) == 1  # every candidate failed: last resort
    # Simulated: latencies fixed, batches of 64; trials end up in proportion to the shares.
    stats = {0: (1, 64, 8.0), 1: (2, 64, 1.0), 2: (1, 64, 1.0)}  # shares 8 : 2 : 1
    for _ in range(100):
        i = pick_task(stats)
        weight, trials, best = stats[i]
        stats[i] = (weight, trials + 64, best)
    trials = [stats[i][1] for i in range(3)]
    assert trials[0] > trials[1] > trials[2] and abs(trials[0] / trials[1] - 4) < 0.5


def test_a_background_tuning_run_logs_its_progress(monkeypatch, capsys) -> None:
    from resdsl.cli import display
    from resdsl.tvm.search import Progress
    clock = [1000.0]
    monkeypatch.setattr(display.time, "monotonic", lambda: clock[0])
    progress = Progress(total=100, tasks=3, started=1000.0, stage="seeding 1/2")
    with display.tuning_display("net", "llvm") as show:  # capsys: not a terminal
        show(progress)
        progress.stage = "tuning"
        show(progress)
        for done in (10, 20, 30):  # every 30 s: a line a minute
            clock[0] += 30
            progress.done, progress.best_ms = done, 5.0
            show(progress)
        progress.done, progress.stage = 100, "tuned"
        show(progress)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["seeding 1/2 net (llvm): 0/100 trials, 3 tasks, best -, 0:00 elapsed",
                     "tuning net (llvm): 0/100 trials, 3 tasks, best -, 0:00 elapsed",
                     # 20 trials in 60 s since the first line: 80 left take 4 minutes
                     "tuning net (llvm): 20/100 trials, 3 tasks, best 5.00 ms, 1:00 elapsed, "
                     "~4 min left (0.33 trials/s)",
                     "tuned net (llvm): 100/100 trials, 3 tasks, best 5.00 ms, 1:30 elapsed"]


def test_kill_9_then_resume_loses_nothing(tiny, tmp_path) -> None:
    work = tmp_path / "work"
    env = {**os.environ, "TVM_NUM_THREADS": "1"}
    proc = subprocess.Popen(tune_cmd(tiny, work, 8), cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while len(records(work)) < 4 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the tuner and its builder/runner workers
        proc.wait()
    before = records(work)
    assert 4 <= len(before) < 8, "the run was not interrupted mid-way"
    result = subprocess.run(tune_cmd(tiny, work, 8), cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr
    # Not a terminal: the progress comes as log lines, the last where it ended.
    assert re.search(r"^tuned tiny \(llvm\): 8/8 trials, \d+ tasks, best [\d.]+ ms, \d+:\d\d elapsed$",
                     result.stderr, re.M), result.stderr
    after = records(work)
    survivors = [l for l in before if l.endswith("]")]  # all but a torn last line
    assert after[:len(survivors)] == survivors  # nothing measured was lost
    assert 8 <= len(after) < 8 + len(before)  # the budget counted what was already measured
    report = json.loads((work / "report.json").read_text())
    assert sum(t["trials"] for t in report["tasks"]) == len(after)
    assert report["network_latency"]["median_ms"] > 0
    versus = report["versus_onnxruntime"]  # timed in turns with ONNX Runtime: what ranks shipped variants
    assert versus["ratio"] == pytest.approx(versus["tvm_ms"] / versus["onnxruntime_ms"]) and versus["runs"] >= 10
    assert (work / "tiny.so").exists()
    # The lowering the records were tuned for is kept beside them (NHWC and prepacked: the CPU
    # defaults; Winograd off, as tune_cmd asks).
    lowering = {"layout": "NHWC", "winograd": False, "prepack": True, "wide_winograd": False,
                "precision": "fp32"}
    assert json.loads((work / "lowering.json").read_text()) == lowering
    assert report["lowering"] == lowering
    assert report["measurement"] == "cold"  # a new CPU directory times its candidates as the network runs them


def test_a_work_dir_keeps_its_lowering(tiny, tmp_path, capsys) -> None:
    from resdsl.cli import main
    work = WorkDir(tmp_path / "work")
    work.path.mkdir()
    assert Lowering.resolve("llvm", work_dir=work) == Lowering("NHWC", True, True)  # a new directory
    (work.path / RECORDS).write_text('[0, [1]]\n')
    assert Lowering.resolve("llvm", work_dir=work) == Lowering("NCHW")  # records from before lowering.json
    work.save_lowering(Lowering("NHWC", True))
    assert Lowering.resolve("llvm", work_dir=work) == Lowering("NHWC", True)
    # A new directory seeded from another (`--reuse-records`) is lowered as that one was, since its
    # records only apply to kernels lowered alike; a selection as its search was. Options still win.
    fresh, source, wide = WorkDir(tmp_path / "fresh"), WorkDir(tmp_path / "wide"), Lowering("NHWC", True, True, True)
    source.path.mkdir()
    source.save_lowering(wide)
    source.selected.path.mkdir()
    (source.selected.path / RECORDS).write_text('[0, [1]]\n')
    assert Lowering.resolve("llvm", work_dir=fresh, seeds=(source.selected,)) == wide
    assert Lowering.resolve("llvm", work_dir=fresh, seeds=(source,), wide_winograd=False) == Lowering("NHWC", True, True)
    assert Lowering.resolve("llvm", work_dir=work, seeds=(source,)) == Lowering("NHWC", True)  # its own first
    assert Lowering.resolve("cuda", work_dir=fresh, seeds=(source,)) == Lowering()  # Winograd is CPU-only
    out = str(tmp_path / "x.so")
    # The library's errors speak of options; the command line names its flags.
    assert main(["compile", str(tiny), "--target", "llvm", "--tuned", str(work.path), "--layout", "nchw",
                 "-o", out]) == 1
    err = capsys.readouterr().err
    assert "was tuned with layout NHWC with Winograd 3x3 convs up to 128 channels, not layout NCHW" in err
    assert "command-line options: --layout, --winograd, --wide-winograd, --prepack" in err
    assert main(["compile", str(tiny), "--target", "llvm", "--layout", "nchw", "--winograd", "-o", out]) == 1
    err = capsys.readouterr().err
    assert "Winograd convs need the NHWC layout" in err and "options: --winograd, --layout" in err
    assert main(["compile", str(tiny), "--target", "llvm", "--no-winograd", "--wide-winograd", "-o", out]) == 1
    assert "wide Winograd extends Winograd" in capsys.readouterr().err
    assert main(["compile", str(tiny), "--target", "cuda", "--layout", "nhwc", "--winograd", "-o", out]) == 1
    assert "winograd is for CPU (llvm) targets only" in capsys.readouterr().err
    assert main(["compile", str(tiny), "--target", "cuda", "--prepack", "-o", out]) == 1
    err = capsys.readouterr().err
    assert "prepack is for CPU (llvm) targets only" in err and "options: --prepack" in err
    work.save_lowering(Lowering("NHWC", False, True))
    assert main(["compile", str(tiny), "--target", "llvm", "--tuned", str(work.path), "--no-prepack", "-o", out]) == 1
    assert "was tuned with layout NHWC and prepacked weights, not layout NHWC" in capsys.readouterr().err
    assert not (tmp_path / "x.so").exists()


def test_library_messages_name_no_command_line_flags() -> None:
    """The TVM half is a library: its messages speak of options, and the CLI adds its flags."""
    import ast as pyast
    flag = re.compile(r"(?<![\w-])--[a-z]")
    for path in sorted((ROOT / "resdsl" / "tvm").glob("*.py")):
        tree = pyast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in pyast.walk(tree)
                      if isinstance(n, (pyast.Module, pyast.FunctionDef, pyast.ClassDef)) and n.body
                      and isinstance(n.body[0], pyast.Expr) and isinstance(n.body[0].value, pyast.Constant)}
        for node in pyast.walk(tree):
            if isinstance(node, pyast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                assert not flag.search(node.value), f"{path.name}:{node.lineno}: {node.value!r}"


def test_a_work_dir_keeps_how_it_times_candidates(tmp_path) -> None:
    from resdsl.tvm.measuring import evaluator, make_runner
    from resdsl.tvm.target import make_target
    work = WorkDir(tmp_path / "work")
    work.path.mkdir()
    llvm = make_target("llvm")
    assert work.measurement("llvm") == "cold" and work.measurement("cuda") == "hot"
    cold = evaluator("cold")
    assert cold.enable_cpu_cache_flush and cold.number == 1 and cold.min_repeat_ms == 0
    assert evaluator("hot") is None  # MetaSchedule's default: a ~100 ms loop over cached data
    assert make_runner(llvm, None, "cold").inner.evaluator_config.enable_cpu_cache_flush
    (work.path / RECORDS).write_text("")
    assert work.measurement("llvm") == "cold"  # an empty database, as MetaSchedule creates it
    (work.path / RECORDS).write_text('[0, [1]]\n')
    assert work.measurement("llvm") == "hot"  # records from before measurement.json were timed hot
    work.save_measurement("cold")
    assert work.measurement("llvm") == "cold"


@pytest.fixture(scope="module")
def tuned_tiny(tmp_path_factory) -> tuple[Path, Path]:
    """TINY's heaviest kernel tuned (6 trials), prepacked, its best 3 records re-timed."""
    root = tmp_path_factory.mktemp("tuned")
    spec, work = root / "tiny.rds", root / "work"
    spec.write_text(TINY)
    result = subprocess.run(tune_cmd(spec, work, 6, "--prepack", "--max-tasks", "1", "--select-top", "3"),
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    return spec, work


def test_prepacked_weights_are_packed_at_compile_time(tuned_tiny) -> None:
    import numpy as np
    import torch
    import tvm
    from tvm import relax
    from resdsl.backends.weights import load_weights
    from resdsl.network import load
    from resdsl.tvm.build import relax_module, schedule
    from resdsl.tvm.target import make_target
    tiny, work = tuned_tiny
    assert json.loads((work / "lowering.json").read_text())["prepack"] is True
    net = load(tiny)
    weights = load_weights(net.graph)
    lowering = Lowering.resolve("llvm", work_dir=WorkDir(work))
    target = make_target("llvm")
    mod = schedule(relax_module(net.graph, weights, 1, lowering), target, WorkDir(work), lowering)
    # The tuned conv reads its weight in the layout its schedule chose (which, for a conv this
    # small, may happen to be HWIO again), and the repacking ran at compile time: no repacking
    # function is left for run time.
    names = [gv.name_hint for gv in mod.get_global_vars()]
    assert any(n.startswith("fused_conv2d") and n.endswith("_prepacked") for n in names), names
    assert not any(n.endswith("_weight_prepack") for n in names), names
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8), dtype=np.float32)
    out = relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    model = net.to_torch().eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def _traces(database, mod, k: int) -> list[str]:
    return [str(r.trace) for r in database.get_top_k(database.commit_workload(mod), k)]


def test_selection_re_times_each_kernels_best_records(tuned_tiny, monkeypatch) -> None:
    from tvm.s_tir import meta_schedule as ms
    from resdsl.tvm import selection
    _, work = tuned_tiny
    report = json.loads((work / "report.json").read_text())
    tuned = [t for t in report["tasks"] if t["trials"]]
    assert len(tuned) == 1 and tuned[0]["selected_rank"] in range(3) and tuned[0]["selected_ms"] > 0
    searched = ms.database.JSONDatabase(work_dir=str(work))
    chosen = ms.database.JSONDatabase(work_dir=str(work / "selected"))
    assert WorkDir(work).selected.has_records()  # what builds apply
    # Every candidate is kept with its cold time, so the database's best is the one chosen.
    retimed = chosen.get_all_tuning_records()
    assert len(retimed) == 3 and json.loads((work / "selected" / "measurement.json").read_text())["cache"] == "cold"
    (record,) = chosen.get_top_k(chosen.commit_workload(retimed[0].workload.mod), 1)
    top = _traces(searched, record.workload.mod, 3)
    assert str(record.trace) == top[tuned[0]["selected_rank"]]
    assert sorted(map(str, (r.trace for r in retimed))) == sorted(top)

    # The fastest re-timed median wins, whatever the search recorded: make the last one fastest.
    monkeypatch.setattr(selection, "_time_records",
                        lambda records, *_: [(i, 1.0 / (i + 1)) for i in range(len(records))])
    from resdsl.backends.weights import load_weights
    from resdsl.network import load
    from resdsl.tvm.build import relax_module
    from resdsl.tvm.target import make_target
    from resdsl.tvm.tasks import extract_tasks, heaviest
    net = load(tuned_tiny[0])
    lowering = Lowering.resolve("llvm", work_dir=WorkDir(work))
    _, tasks = extract_tasks(relax_module(net.graph, load_weights(net.graph), 1, lowering),
                             make_target("llvm"), lowering)
    (choice,) = selection.select(WorkDir(work), make_target("llvm"), heaviest(tasks, 1), top_k=3)
    assert choice.rank == len(top) - 1 and choice.selected_ms == pytest.approx(1e3 / len(top))
    rechosen = ms.database.JSONDatabase(work_dir=str(work / "selected"))
    assert _traces(rechosen, record.workload.mod, 1) == [top[-1]]
    assert not (work / "selected.tmp").exists()


def test_another_work_dirs_records_seed_a_new_one(tuned_tiny, tmp_path) -> None:
    tiny, work = tuned_tiny
    measured = [l for l in records(work) if (secs := json.loads(l)[1][1]) and float(secs[0]) < 1e9]  # not failed
    seeded = tmp_path / "seeded"
    # As many trials as the copied records: nothing left to search, only to select and build.
    result = subprocess.run(tune_cmd(tiny, seeded, len(measured), "--max-tasks", "1", "--select-top", "2",
                                     "--reuse-records", str(work)), cwd=ROOT, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr
    assert len(records(seeded)) == len(measured)
    report = json.loads((seeded / "report.json").read_text())
    assert sum(t["trials"] for t in report["tasks"]) == len(measured)
    assert report["network_latency"]["median_ms"] > 0 and (seeded / "selected").is_dir()
    # Kernels that already have records keep them: a second copy adds nothing.
    from resdsl.backends.weights import load_weights
    from resdsl.network import load
    from resdsl.tvm.build import relax_module
    from resdsl.tvm.reuse import reuse_records
    from resdsl.tvm.target import make_target
    from resdsl.tvm.tasks import extract_tasks
    net = load(tiny)
    lowering = Lowering.resolve("llvm", work_dir=WorkDir(seeded))
    _, tasks = extract_tasks(relax_module(net.graph, load_weights(net.graph), 1, lowering), make_target("llvm"),
                             lowering)
    assert reuse_records(WorkDir(seeded), [WorkDir(work)], tasks, make_target("llvm")).copied == 0
    from resdsl.cli import main
    assert main(["tune", str(tiny), "--work-dir", str(tmp_path / "x"), "--reuse-records", str(tmp_path)]) == 1
    # Records timed hot (a directory from before measurement.json) would skew a cold one's ranking;
    # its selection, re-timed cold, may seed it.
    hot = tmp_path / "hot"
    hot.mkdir()
    (tmp_path / "fresh").mkdir()
    (hot / RECORDS).write_text((work / RECORDS).read_text())
    (hot / "database_workload.json").write_text((work / "database_workload.json").read_text())
    with pytest.raises(ResdslError, match="timed with the cache hot") as error:
        reuse_records(WorkDir(tmp_path / "fresh"), [WorkDir(hot)], tasks, make_target("llvm"))
    assert "selected" in error.value.diagnostic.hint
    # Every source is checked before anything is copied: a refusal leaves the directory as it was.
    with pytest.raises(ResdslError, match="timed with the cache hot"):
        reuse_records(WorkDir(tmp_path / "fresh"), [WorkDir(work).selected, WorkDir(hot)], tasks,
                      make_target("llvm"))
    assert not records(tmp_path / "fresh")
    assert reuse_records(WorkDir(tmp_path / "fresh"), [WorkDir(work).selected], tasks,
                         make_target("llvm")).copied == len(records(work / "selected"))


def test_records_tuned_at_batch_1_seed_a_batch_2_search(tuned_tiny, tmp_path) -> None:
    """A kernel's schedule replays on the same kernel at another batch, MetaSchedule sampling
    the batch loop's tiles again: the batch-1 search's best seed the batch-2 one, timed here."""
    from resdsl.tvm.reuse import RETIME_TOP
    tiny, work = tuned_tiny
    source = [json.loads(l) for l in records(work)]
    seeded = tmp_path / "b2"
    # As many trials as the seeds: nothing left to search, only to build and time.
    copies = min(RETIME_TOP, len([r for r in source if float(r[1][1][0]) < 1e9]))
    result = subprocess.run(tune_cmd(tiny, seeded, copies, "--batch", "2", "--max-tasks", "1",
                                     "--select-top", "0", "--reuse-records", str(work)),
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    copied = [json.loads(l) for l in records(seeded)]
    assert len(copied) == copies
    instructions = {len(r[1][0][0]) for r in source}
    for _, (trace, secs, _, args) in copied:
        assert 0 < float(secs[0]) < 1.0  # timed here, at batch 2
        assert args[0][2][0] == 2  # the activation's shape: two images
        assert len(trace[0]) in instructions  # a replayed schedule, not a fresh sample
    report = json.loads((seeded / "report.json").read_text())
    assert report["batch"] == 2 and report["network_latency"]["median_ms"] > 0


def test_a_schedule_replays_on_the_same_kernel_under_other_block_names() -> None:
    """A reduction's block is named after its input's Relax variable (`lv66_red`), which another
    lowering or batch renumbers; MetaSchedule still matches the kernels by structure, so a seed
    from such a record must translate the names its trace finds blocks by."""
    import numpy as np
    import tvm
    from tvm import s_tir, te, topi

    from resdsl.tvm.reuse import replay

    def mean(name: str):
        x = te.placeholder((1, 7, 7, 64), "float32", name=name)
        return tvm.IRModule({"main": te.create_prim_func([x, topi.sum(x, axis=[1, 2], keepdims=True)])})
    theirs, ours = mean("lv66"), mean("lv65")
    sch = s_tir.Schedule(theirs)
    rfactored = sch.rfactor(sch.get_loops(sch.get_sblock("lv66_red"))[-1], 0)
    sch.parallel(sch.get_loops(rfactored)[0])
    with pytest.raises(Exception):  # noqa: B017 - TVM's ScheduleError: the plain trace names lv66_red
        sch.trace.apply_to_schedule(s_tir.Schedule(ours), remove_postproc=False)
    replayed = replay(sch.trace, theirs, ours)
    script = replayed.mod.script()
    assert 'sblock("lv65_red_rf")' in script and 'sblock("lv65_red")' in script and "T.parallel" in script
    assert "lv66" not in script
    x = np.random.default_rng(0).standard_normal((1, 7, 7, 64)).astype(np.float32)
    out = tvm.runtime.empty((1, 1, 1, 64), "float32", tvm.cpu())
    tvm.compile(replayed.mod, target="llvm")(tvm.runtime.tensor(x), out)
    np.testing.assert_allclose(out.numpy(), x.sum(axis=(1, 2), keepdims=True), rtol=1e-5)
    v = te.placeholder((4,), "float32", name="v")
    other = tvm.IRModule({"main": te.create_prim_func([v, te.compute((4,), lambda i: v[i] * 2, name="d")])})
    assert replay(sch.trace, theirs, other) is None  # another kernel: no translation makes it apply


def test_records_from_another_cpu_are_timed_again_here(tuned_tiny, tmp_path, capsys) -> None:
    from resdsl.backends.weights import load_weights
    from resdsl.network import load
    from resdsl.tvm.build import relax_module
    from resdsl.tvm.reuse import RETIME_TOP, Reused, reuse_records
    from resdsl.tvm.target import make_target
    from resdsl.tvm.tasks import extract_tasks
    tiny, work = tuned_tiny
    host = make_target("llvm")
    cpu = str(host.attrs["mcpu"])
    other = "znver3" if cpu != "znver3" else "skylake"
    # The same schedules as if measured on another CPU, with times no schedule takes here, and
    # hot (no measurement.json): copied as they are, they would rank schedules by another clock.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    lines = []
    for line in records(work):
        workload, (trace, secs, target, args) = json.loads(line)
        assert target["mcpu"] == cpu
        lines.append(json.dumps([workload, [trace, [100.0] * len(secs), {**target, "mcpu": other}, args]]))
    (foreign / RECORDS).write_text("\n".join(lines) + "\n")
    (foreign / "database_workload.json").write_text((work / "database_workload.json").read_text())
    assert WorkDir(foreign).tuned_for().attrs["mcpu"] == other and WorkDir(work).tuned_for().attrs["mcpu"] == cpu
    net = load(tiny)
    lowering = Lowering.resolve("llvm", work_dir=WorkDir(work))
    _, tasks = extract_tasks(relax_module(net.graph, load_weights(net.graph), 1, lowering), host, lowering)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    # Measuring through an RPC tracker, this host cannot stand in for the devices: left out, and counted.
    (tmp_path / "remote").mkdir()
    remote = WorkDir(tmp_path / "remote")
    assert reuse_records(remote, [WorkDir(foreign)], tasks, host, retime=False) == Reused(0, len(lines))
    assert not records(tmp_path / "remote")
    copied = reuse_records(WorkDir(fresh), [WorkDir(foreign)], tasks, host).copied
    assert 0 < copied <= min(RETIME_TOP, len(lines))
    for line in records(fresh):
        _, (_, secs, target, _) = json.loads(line)
        assert target["mcpu"] == cpu and 0 < float(secs[0]) < 1.0  # re-timed: a tiny conv, well under 1 s
    # bench says when a database's schedules were chosen on another CPU, and how to tune for this one.
    from resdsl.cli import main
    assert main(["bench", str(tiny), "--engines", "tvm-tuned", "--tuned", str(foreign), "--budget", "0.05",
                 "--rounds", "1", "--json"]) == 0
    err = capsys.readouterr().err
    threads = os.cpu_count() or 1
    assert f"{foreign} was tuned on {other} with {threads} thread" in err and f"--reuse-records {foreign}" in err
    # The thread count shapes a schedule too (its parallel loops); the fix is then to bench with it.
    assert main(["bench", str(tiny), "--engines", "tvm-tuned", "--tuned", str(work), "--threads", str(threads + 1),
                 "--budget", "0.05", "--rounds", "1", "--json"]) == 0
    err = capsys.readouterr().err
    assert f"{work} was tuned on {cpu} with {threads} thread" in err and f"--threads {threads} to run" in err


def tuned_dir(root: Path, name: str, cpu: str, report: dict | None = None) -> Path:
    """A stand-in for a shipped database: one record measured on `cpu`, and a report."""
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    target = {"kind": "llvm", "mcpu": cpu, "num-cores": 2}
    (path / RECORDS).write_text(json.dumps([0, [[], ["0.001"], target, []]]) + "\n")
    if report is not None:
        (path / "report.json").write_text(json.dumps(report))
    return path


def measured(ms: float, ratio: float | None = None) -> dict:
    """A tuning run's report with its whole-network latency, and its ratio to ONNX Runtime."""
    return {"network": "net", "target": "llvm", "batch": 1, "trials_budget": 1, "lowering": {},
            "measurement": "cold", "library": "net.so", "network_latency": {"median_ms": ms},
            **({"versus_onnxruntime": {"ratio": ratio}} if ratio else {})}


def test_bench_prefers_the_database_tuned_on_this_cpu(tmp_path, monkeypatch) -> None:
    from resdsl.tvm.databases import choose
    monkeypatch.setenv("RESDSL_DATABASES", str(tmp_path))
    assert choose("net", "znver3") is None
    ours = tuned_dir(tmp_path, "net-llvm-znver3", "znver3")
    (tmp_path / "net-llvm-znver2").mkdir()
    (tmp_path / "net-llvm-znver2" / RECORDS).write_text("")  # created by a run that measured nothing
    assert choose("net", "znver3") == WorkDir(ours)
    assert choose("net", "znver2") == WorkDir(ours)  # tuned elsewhere beats none
    # A variant tuned on this CPU takes the default only by measuring the faster whole network.
    wide = tuned_dir(tmp_path, "wide-net-llvm-znver3", "znver3", measured(30.7))
    tuned_dir(tmp_path, "nchw-net-llvm-znver3", "znver3", {"network": "net"})  # unreadable: never the default
    tuned_dir(tmp_path, "net-llvm-znver3", "znver3", measured(34.2))
    assert choose("net", "znver3") == WorkDir(wide)
    tuned_dir(tmp_path, "net-llvm-znver3", "znver3", measured(29.0))
    assert choose("net", "znver3") == WorkDir(ours)
    # Timed beside ONNX Runtime, the ratio ranks: the plain one's faster latency was a quieter day.
    tuned_dir(tmp_path, "wide-net-llvm-znver3", "znver3", measured(30.7, 0.99))
    assert choose("net", "znver3") == WorkDir(wide)
    tuned_dir(tmp_path, "net-llvm-znver3", "znver3", measured(29.0, 1.15))
    assert choose("net", "znver3") == WorkDir(wide)
    tuned_dir(tmp_path, "net-llvm-znver3", "znver3", measured(34.0, 0.98))
    assert choose("net", "znver3") == WorkDir(ours)
    assert choose("et", "znver3") is None  # "wide-net" is not a variant of "et"


def test_a_database_applies_only_at_the_batch_it_was_tuned_at(tmp_path, monkeypatch) -> None:
    """Records are specialised to the shapes they were tuned at: a batch-8 build from a batch-1
    database would run every kernel untuned, so each batch has its own, chosen by its report."""
    from resdsl.tvm.databases import choose, counterpart, tuned_batch
    monkeypatch.setenv("RESDSL_DATABASES", str(tmp_path))
    one = tuned_dir(tmp_path, "net-llvm-znver3", "znver3", measured(30.0, 0.90))
    eight = tuned_dir(tmp_path, "net-llvm-znver3-b8", "znver3", {**measured(200.0, 0.80), "batch": 8})
    assert (tuned_batch(WorkDir(one)), tuned_batch(WorkDir(eight))) == (1, 8)
    assert choose("net", "znver3") == WorkDir(one)  # faster against ONNX Runtime, but at batch 8
    assert choose("net", "znver3", 8) == WorkDir(eight)
    assert choose("net", "znver1", 8) == WorkDir(eight)  # another CPU's, at this batch
    assert choose("net", "znver3", 32) is None
    assert choose("net", "znver3", None) == WorkDir(eight)  # any batch: the best measured
    assert counterpart(WorkDir(eight), "net", "znver1") == "net-llvm-znver1-b8"
    assert counterpart(WorkDir(one), "net", "znver1") == "net-llvm-znver1"


def test_bench_falls_back_to_the_closest_cpu(tmp_path, monkeypatch) -> None:
    from resdsl.tvm import databases
    from resdsl.tvm.databases import choose, closeness
    monkeypatch.setenv("RESDSL_DATABASES", str(tmp_path))
    avx2 = WorkDir(tuned_dir(tmp_path, "net-llvm-znver3", "znver3", measured(25.0)))
    avx512 = WorkDir(tuned_dir(tmp_path, "net-llvm-rocketlake", "rocketlake", measured(12.0, 1.10)))
    # znver5 has more LLVM features in common with znver3, but its vectors are rocketlake's:
    # 16 floats wide. Measured on a znver5, rocketlake's databases ran 1.30x and 1.09x ONNX
    # Runtime, znver3's 1.59x and 1.61x.
    zen5, zen3, rocket = (databases._features(c) for c in ("znver5", "znver3", "rocketlake"))
    assert closeness(zen5, zen3)[1] > closeness(zen5, rocket)[1] and closeness(zen5, rocket) > closeness(zen5, zen3)
    assert choose("net", "znver5") == avx512
    assert choose("net", "skylake-avx512") == avx512
    assert choose("net", "znver2") == avx2
    assert choose("net", "haswell") == avx2
    # Among the closest CPU's variants, the one that measured the lowest ratio.
    wide = WorkDir(tuned_dir(tmp_path, "wide-net-llvm-rocketlake", "rocketlake", measured(13.0, 0.97)))
    assert choose("net", "znver5") == wide
    # The CPU is read from the records, not the name: these two now hold znver3's.
    tuned_dir(tmp_path, "net-llvm-rocketlake", "znver3", measured(12.0, 1.10))
    tuned_dir(tmp_path, "wide-net-llvm-rocketlake", "znver3", measured(13.0, 0.97))
    assert choose("net", "znver2") == wide
    assert choose("net", "znver3") == wide  # this CPU's own, whatever their names say
    tuned_dir(tmp_path, "wide-net-llvm-znver4", "znver4", measured(13.0))
    assert choose("net", "znver5") == WorkDir(tmp_path / "wide-net-llvm-znver4")


def test_bench_says_how_to_tune_a_database_for_this_cpu(tmp_path, monkeypatch) -> None:
    from resdsl.cli.tuning import _retune_command
    (tmp_path / "shipped").mkdir()  # elsewhere than these work directories
    monkeypatch.setenv("RESDSL_DATABASES", str(tmp_path / "shipped"))
    wide = WorkDir(tuned_dir(tmp_path, "wide-net-llvm-rocketlake", "rocketlake"))
    wide.save_lowering(Lowering("NHWC", winograd=True, prepack=True, wide_winograd=True))
    # The same variant name and lowering: records apply only to kernels lowered alike.
    assert _retune_command(Path("net.rds"), "net", "znver5", wide) == (
        f"resdsl tune net.rds --wide-winograd --work-dir wide-net-llvm-znver5 --reuse-records {wide.path}")
    tuned_dir(wide.path, "selected", "rocketlake")  # a selection re-timed cold seeds better than the search's order
    assert _retune_command(Path("net.rds"), "net", "znver5", wide).endswith(
        f"--reuse-records {wide.path}/selected")
    nchw = WorkDir(tuned_dir(tmp_path, "net-llvm", "znver3"))
    nchw.save_lowering(Lowering("NCHW"))
    assert _retune_command(Path("net.rds"), "net", "znver5", nchw) == (
        f"resdsl tune net.rds --layout nchw --no-winograd --no-prepack --work-dir net-llvm-znver5 "
        f"--reuse-records {nchw.path}")
    # A shipped database is named, not pathed: it is found wherever resdsl is installed.
    shipped = WorkDir(tuned_dir(tmp_path / "shipped", "net-llvm-rocketlake", "rocketlake"))
    assert _retune_command(Path("net.rds"), "net", "znver5", shipped).endswith(
        "--reuse-records net-llvm-rocketlake")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tuning_through_a_loopback_rpc_tracker(tiny, tmp_path) -> None:
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                               "--port", str(port), "--port-end", str(port + 1)], start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(3)
        for _ in range(2):
            procs.append(subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1",
                                           "--tracker", f"127.0.0.1:{port}", "--key", "resdsl-test"],
                                          start_new_session=True, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        _wait_for_servers(port, "resdsl-test", 2)
        work = tmp_path / "work"
        result = subprocess.run(tune_cmd(tiny, work, 4, "--rpc-tracker", f"127.0.0.1:{port}",
                                         "--rpc-key", "resdsl-test"),
                                cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr
        report = json.loads((work / "report.json").read_text())
        measured = [t for t in report["tasks"] if t["best_ms"] is not None]
        assert measured and all(t["best_ms"] > 0 for t in measured)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _wait_for_servers(port: int, key: str, count: int) -> None:
    from tvm import rpc
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            summary = rpc.connect_tracker("127.0.0.1", port).summary()
            free = sum(q.get("free", 0) for k, q in summary["queue_info"].items() if k == key)
            if free >= count:
                return
        except Exception:  # the tracker may still be starting
            pass
        time.sleep(1)
    raise TimeoutError("RPC servers did not register")


def test_cuda_tuning_without_a_gpu_says_what_to_do(tiny, capsys) -> None:
    import tvm
    if tvm.cuda().exist:
        pytest.skip("this machine has a GPU")
    from resdsl.cli import main
    assert main(["tune", str(tiny), "--target", "cuda", "--trials", "4", "--work-dir", "/tmp/resdsl-no-gpu"]) == 1
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "--rpc-tracker" in err


def test_tuning_registers_only_its_targets_tensor_intrinsics() -> None:
    # In a fresh process: the test process may have imported every intrinsic already.
    script = """
import sys
from resdsl.tvm.target import make_target
from resdsl.tvm.measuring import register_intrinsics
from tvm.s_tir import TensorIntrin
register_intrinsics(make_target("llvm"))
import tvm.s_tir.tensor_intrin  # what every TuneContext does: now a no-op
assert TensorIntrin.get("dot_16x4_vnni") is not None and TensorIntrin.get("dot_16x4_avx512") is not None
assert "tvm.s_tir.tensor_intrin.cuda" not in sys.modules
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "ok", result.stderr


def test_bench_at_another_batch_skips_a_database_tuned_at_one(tiny, tmp_path, monkeypatch, capsys) -> None:
    from resdsl.cli import main
    monkeypatch.setenv("RESDSL_DATABASES", str(tmp_path / "shipped"))
    tuned_dir(tmp_path / "shipped", "tiny-llvm-znver3", "znver3", measured(1.0, 0.9))
    assert main(["bench", str(tiny), "--batch", "2", "--engines", "tvm-tuned", "--budget", "0.05",
                 "--rounds", "1", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "no shipped database for tiny at batch 2 (they are tuned at batch 1)" in err
    assert "resdsl tune" in err and "--batch 2" in err
    assert json.loads(out)["results"][0]["note"] == "skipped: needs --tuned"
