"""Training throughput of the degradation experiment's networks: one process against data-parallel
processes under torchrun, on this machine.

One process uses every core through torch's intra-op threads; N processes (torchrun's default of
one thread each) split every global batch of 128. Each measurement is a 2-epoch `resdsl train` run on
scikit-learn's digits upsampled to the networks' 32x32 input; the figure is the images/s of the second
(warm) epoch. The two launchers alternate within each round, so a change in the machine's load
during the run shows in both.

Usage: python benchmarks/distributed.py [--rounds 3] [--nproc 2] [--networks resnet56 ...]
           [--json benchmarks/results/distributed.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import describe

ROOT = Path(__file__).resolve().parent.parent


def images_per_s(launcher: list[str], spec: Path, env: dict) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(launcher + ["train", str(spec), "--data", "digits", "--epochs", "2", "--batch", "128",
                                   "--out", f"{tmp}/run"], check=True, env=env, stderr=subprocess.DEVNULL)
        rows = [json.loads(line) for line in Path(f"{tmp}/run/metrics.jsonl").read_text().splitlines()]
    return rows[-1]["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--networks", nargs="+", default=["plain20", "plain56", "resnet20", "resnet56"])
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "distributed.json")
    args = parser.parse_args()
    one = [sys.executable, "-m", "resdsl"]
    many = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.nproc),
            "-m", "resdsl"]
    env_one = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env_many = {**env_one, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // args.nproc))}
    table = {"machine": describe(),
             "data": "digits at 32x32, 2 epochs, batch 128 (global), second epoch",
             "processes": args.nproc, "rounds": args.rounds, "networks": {}}
    for name in args.networks:
        spec = ROOT / "specs" / "cifar" / f"{name}.rds"
        single, parallel = [], []
        for _ in range(args.rounds):
            single.append(images_per_s(one, spec, env_one))
            parallel.append(images_per_s(many, spec, env_many))
        ratios = [p / s for p, s in zip(parallel, single)]
        table["networks"][name] = {
            "one_process_images_per_s": round(statistics.median(single), 1),
            f"{args.nproc}_processes_images_per_s": round(statistics.median(parallel), 1),
            "speedup_median": round(statistics.median(ratios), 3),
            "speedup_range": [round(min(ratios), 3), round(max(ratios), 3)],
        }
        print(name, json.dumps(table["networks"][name]), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
