"""Training throughput with `--amp bf16` against float32, on this machine's CPU.

(a) digits: `resdsl train tests/specs/digits_resnet.rds --data digits --epochs 2 --batch 128`, with and
    without --amp bf16; the figure is the second (warm) epoch's images/s from metrics.jsonl.
(b) ResNet-56 (specs/cifar/resnet56.rds) at batch 128 on synthetic 32x32 images: forward, backward
    and an SGD step, timed over a few iterations after one warm-up, in this process.

Autocast to bfloat16 on a CPU runs everywhere, but only CPUs with AVX512-BF16 or AMX-BF16 have
instructions for it; elsewhere oneDNN converts and computes in float32, so bf16 is expected to be
slower. The flags are read from /proc/cpuinfo and written beside the figures. Wall and CPU time are
both kept: this machine is shared, and CPU time moves less with other work. `--threads N` sets
torch's threads (OMP_NUM_THREADS for the `resdsl train` runs): on a machine busy with other work, N
threads that spin-wait for each other while one is descheduled can slow float32 far more than bf16.

Usage: python benchmarks/amp.py [--iterations 3] [--rounds 2] [--threads N] [--json benchmarks/results/amp.json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe

ROOT = Path(__file__).resolve().parent.parent


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def digits_images_per_s(amp: list[str], env: dict) -> float:
    spec = ROOT / "tests/specs/digits_resnet.rds"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "resdsl", "train", str(spec), "--data", "digits", "--epochs", "2",
                        "--batch", "128", *amp, "--out", f"{tmp}/run"], check=True, stderr=subprocess.DEVNULL, env=env)
        rows = [json.loads(line) for line in Path(f"{tmp}/run/metrics.jsonl").read_text().splitlines()]
    return rows[-1]["images_per_s"]


def resnet56_images_per_s(bf16: bool, iterations: int, batch: int = 128) -> tuple[float, float]:
    """(images per wall second, images per CPU second) of training steps."""
    import torch
    import torch.nn.functional as F

    import resdsl
    module = resdsl.load(ROOT / "specs/cifar/resnet56.rds").to_torch(seed=0).train()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            logits = module(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    step()  # warm-up: oneDNN picks and caches its kernels
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(iterations):
        step()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return batch * iterations / wall, batch * iterations / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch's threads (default: torch's own)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "amp.json")
    args = parser.parse_args()
    import torch
    env = dict(os.environ)
    if args.threads:
        torch.set_num_threads(args.threads)
        env["OMP_NUM_THREADS"] = str(args.threads)
    flags = cpu_flags()
    table = {"machine": describe(), "torch": torch.__version__, "threads": torch.get_num_threads(),
             "load_average_at_start": os.getloadavg()[0],
             "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
             "avx512f": "avx512f" in flags, "rounds": args.rounds}
    print(json.dumps(table), flush=True)
    fp32, bf16 = [], []
    for _ in range(args.rounds):  # alternating, so a change in the machine's load shows in both
        fp32.append(digits_images_per_s([], env))
        bf16.append(digits_images_per_s(["--amp", "bf16"], env))
    table["digits"] = {"spec": "tests/specs/digits_resnet.rds", "batch": 128,
                       "fp32_images_per_s": round(statistics.median(fp32), 1),
                       "bf16_images_per_s": round(statistics.median(bf16), 1),
                       "bf16_over_fp32": round(statistics.median(b / f for b, f in zip(bf16, fp32)), 3)}
    print("digits", json.dumps(table["digits"]), flush=True)
    runs = {"fp32": [], "bf16": []}
    for _ in range(args.rounds):
        for name, results in runs.items():
            results.append(resnet56_images_per_s(name == "bf16", args.iterations))
    wall = {name: statistics.median(r[0] for r in rs) for name, rs in runs.items()}
    cpu = {name: statistics.median(r[1] for r in rs) for name, rs in runs.items()}
    table["resnet56"] = {"spec": "specs/cifar/resnet56.rds", "batch": 128, "data": "synthetic 3x32x32",
                         "iterations": args.iterations,
                         "fp32_images_per_s": round(wall["fp32"], 1), "bf16_images_per_s": round(wall["bf16"], 1),
                         "bf16_over_fp32": round(wall["bf16"] / wall["fp32"], 3),
                         "fp32_images_per_cpu_s": round(cpu["fp32"], 1),
                         "bf16_images_per_cpu_s": round(cpu["bf16"], 1),
                         "bf16_over_fp32_cpu": round(cpu["bf16"] / cpu["fp32"], 3)}
    print("resnet56", json.dumps(table["resnet56"]), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
