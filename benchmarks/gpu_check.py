"""GPU checks for the CUDA target, in one run that fits a short lease on a GPU machine.

1. numerics: TVM-CUDA (dlight default schedules) vs PyTorch on the GPU (fp32, TF32 off) for
   CIFAR ResNet-20, ResNet-18 and ResNet-50;
2. ResNet-50 latency at batch 1 and 32: TVM dlight defaults vs PyTorch eager;
3. a short MetaSchedule run on the GPU (`resdsl tune --target cuda`), then TVM tuned latency;
4. torch.compile latency at batch 1 and 32, if time is left.

Results are written after every step to OUT/gpu_results.json, so a run cut short keeps what it
measured. Usage: python benchmarks/gpu_check.py --out DIR [--budget SECONDS] [--trials N]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

T0 = time.monotonic()
RESULTS: dict = {"steps": {}}


def save(out: Path) -> None:
    RESULTS["elapsed_s"] = round(time.monotonic() - T0, 1)
    (out / "gpu_results.json").write_text(json.dumps(RESULTS, indent=1) + "\n")


def step(name: str, out: Path, budget: float, enabled: bool = True):
    def wrap(fn):
        if not enabled:
            return fn
        if time.monotonic() - T0 > budget:
            RESULTS["steps"][name] = {"skipped": "out of time"}
        else:
            t = time.monotonic()
            try:
                RESULTS["steps"][name] = fn() | {"seconds": round(time.monotonic() - t, 1)}
            except Exception as exc:  # keep going: later steps may still work
                RESULTS["steps"][name] = {"error": f"{type(exc).__name__}: {exc}",
                                          "traceback": traceback.format_exc()[-2000:]}
        print(name, json.dumps(RESULTS["steps"][name])[:600], flush=True)
        save(out)
        return fn
    return wrap


def cuda_timer(fn, warmup: int = 5, runs: int = 30) -> dict:
    import torch
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return {"median_ms": times[len(times) // 2], "min_ms": times[0], "max_ms": times[-1], "runs": runs}


def tvm_cuda_vm(net, weights, batch: int, work_dir: Path | None = None):
    import tvm
    from resdsl.tvm import build as tvm_build
    from resdsl.tvm.target import make_target
    from resdsl.tvm.workdir import WorkDir
    target = make_target("cuda", arch=RESULTS["arch"])
    executable = tvm_build.build(tvm_build.relax_module(net.graph, weights, batch), target,
                                 WorkDir(work_dir) if work_dir else None)
    dev = tvm.cuda()
    return tvm.relax.VirtualMachine(executable, dev), dev


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("gpu_out"))
    parser.add_argument("--budget", type=float, default=420, help="seconds after which steps are skipped")
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--max-tasks", type=int, default=None, help="tune only the N heaviest kernels")
    parser.add_argument("--steps", default="numerics,latency,tuning,tuned,compile",
                        help="comma-separated subset of the steps to run")
    args = parser.parse_args()
    steps = set(args.steps.split(","))
    args.out.mkdir(parents=True, exist_ok=True)

    import numpy as np
    import torch
    import tvm

    import resdsl
    from resdsl.backends.weights import load_weights

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    major, minor = torch.cuda.get_device_capability()
    RESULTS.update(device=torch.cuda.get_device_name(), arch=f"sm_{major}{minor}", torch=torch.__version__,
                   tvm=tvm.__version__, python=platform.python_version(), cpus=os.cpu_count())
    save(args.out)
    nets = {name: resdsl.load(ROOT / f"specs/{name}.rds") for name in ("cifar/resnet20", "resnet18", "resnet50")}

    @step("numerics_cuda_vs_torch", args.out, args.budget, "numerics" in steps)
    def numerics():
        errors = {}
        for name, net in nets.items():
            model = net.to_torch(seed=0).eval().cuda()
            weights = load_weights(net.graph, seed=0)
            x = np.random.default_rng(0).standard_normal((2, *net.graph.shape("<input>")), dtype=np.float32)
            with torch.no_grad():
                expected = model(torch.from_numpy(x).cuda()).cpu().numpy()
            vm, dev = tvm_cuda_vm(net, weights, 2)
            got = vm["main"](tvm.runtime.tensor(x, dev)).numpy()
            errors[name] = float(np.abs(got - expected).max() / np.abs(expected).max())
        return {"max_rel_err": errors, "ok": all(e < 1e-4 for e in errors.values())}

    net50 = nets["resnet50"]
    weights50 = load_weights(net50.graph, seed=0)
    model50 = net50.to_torch(seed=0).eval().cuda()

    @step("resnet50_latency_tvm_dlight_vs_torch_eager", args.out, args.budget, "latency" in steps)
    def latency():
        rows = {}
        for batch in (1, 32):
            x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
            vm, dev = tvm_cuda_vm(net50, weights50, batch)
            tx = tvm.runtime.tensor(x, dev)
            tvm_ms = cuda_timer(lambda: vm["main"](tx))
            xt = torch.from_numpy(x).cuda()
            with torch.no_grad():
                eager_ms = cuda_timer(lambda: model50(xt))
            rows[f"batch{batch}"] = {"tvm_dlight": tvm_ms, "torch_eager": eager_ms}
        return rows

    work = args.out / "tune-resnet50-cuda"

    @step("resnet50_short_tuning", args.out, args.budget - 120, "tuning" in steps)
    def tuning():
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        cmd = [sys.executable, "-m", "resdsl", "tune", str(ROOT / "specs/resnet50.rds"), "--target", "cuda",
               "--arch", RESULTS["arch"], "--trials", str(args.trials), "--work-dir", str(work)]
        cmd += ["--max-tasks", str(args.max_tasks)] if args.max_tasks else []
        remaining = max(60, args.budget - (time.monotonic() - T0) - 60)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=remaining)
        report = json.loads((work / "report.json").read_text()) if (work / "report.json").exists() else None
        return {"returncode": proc.returncode, "stderr_tail": proc.stderr[-1500:], "report": report}

    @step("resnet50_latency_tvm_tuned", args.out, args.budget, "tuned" in steps)
    def tuned():
        rows = {}
        for batch in (1,):  # the database is specialised to the tuned batch size
            x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
            tx = None
            for label, directory in (("tvm_dlight", None), ("tvm_tuned", work)):
                vm, dev = tvm_cuda_vm(net50, weights50, batch, directory)
                tx = tvm.runtime.tensor(x, dev)
                rows[f"batch{batch}_{label}"] = cuda_timer(lambda: vm["main"](tx))
                out = vm["main"](tx).numpy()
                with torch.no_grad():
                    ref = model50(torch.from_numpy(x).cuda()).cpu().numpy()
                rows[f"batch{batch}_{label}"]["max_rel_err"] = float(np.abs(out - ref).max() / np.abs(ref).max())
        return rows

    @step("resnet50_latency_torch_compile", args.out, args.budget + 120, "compile" in steps)
    def compiled():
        rows = {}
        fn = torch.compile(model50)
        for batch in (1, 32):
            xt = torch.randn(batch, 3, 224, 224, device="cuda")
            with torch.no_grad():
                rows[f"batch{batch}"] = cuda_timer(lambda: fn(xt))
        return rows


if __name__ == "__main__":
    main()
