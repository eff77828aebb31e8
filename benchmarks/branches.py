"""`compile --target torch` of one block holding many branches, timed through the real command line.

The generator used to scan the whole block once per node (1000 branches took 2.5 s, 4000 took
37 s) and every container's steps once per container; both are now gathered once. Linear time
makes the ratio column ~4: it compares the time beyond the start-up's (the same command on a
block of one branch: importing, reading the grammar's tables), which every run pays once.

Usage: python benchmarks/branches.py [--rounds N] [--json]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe

SIZES = (1000, 4000)
NETWORK = ("network n {{\n input 3x8x8\n classes 3\n stem {{ conv 4 k3 p1 }}\n stage layer1: wide(4) x 1\n"
           " head {{ avgpool; fc classes }}\n}}\n")


def branches(n: int) -> str:
    """One block of `n` side paths, each joined as soon as it ends (SE-like, repeated)."""
    body = "".join(f" b{i}: branch {{ relu }}\n add b{i}\n" for i in range(n))
    return f"block wide(w) {{\n conv1: conv w k3 p1\n{body} add shortcut\n}}\n" + NETWORK.format()


def containers(n: int) -> str:
    """One block of `n` one-layer containers (`c0.0`, `c1.0`, ...), each a candidate nn.Sequential."""
    body = "".join(f" c{i}.0: relu\n" for i in range(n))
    return f"block wide(w) {{\n conv1: conv w k3 p1\n{body} add shortcut\n}}\n" + NETWORK.format()


CASES = [("branches", branches), ("one-layer containers", containers)]


def timed(argv: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one resdsl process. CPU time (user + system) barely moves when other
    work shares the machine, wall time does: the ratio is taken of CPU time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "resdsl", *argv], capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3, help="runs per size; the median is kept")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    specs = {("start-up", 1): branches(1)}
    specs.update({(what, n): make(n) for what, make in CASES for n in SIZES})
    runs: dict[tuple[str, int], list[tuple[float, float]]] = {key: [] for key in specs}
    with tempfile.TemporaryDirectory() as tmp:
        files = {key: Path(tmp) / f"{i}.rds" for i, key in enumerate(specs)}
        for key, text in specs.items():
            files[key].write_text(text)
        for _ in range(args.rounds):  # in turns, so that a drift in the machine's speed hits all alike
            for key in specs:
                runs[key].append(timed(["compile", "--target", "torch", "-o", f"{tmp}/net.py", str(files[key])]))
    wall = {key: statistics.median(w for w, _ in times) for key, times in runs.items()}
    cpu = {key: statistics.median(c for _, c in times) for key, times in runs.items()}
    start_up = cpu["start-up", 1]
    small, large = SIZES
    rows = [{"spec": what, "wall": [round(wall[what, n], 2) for n in SIZES],
             "cpu": [round(cpu[what, n], 2) for n in SIZES],
             "ratio": round((cpu[what, large] - start_up) / (cpu[what, small] - start_up), 2)}
            for what, _ in CASES]
    if args.json:
        print(json.dumps({"machine": describe(), "sizes": SIZES, "start_up_cpu": round(start_up, 2), "rows": rows},
                         indent=1))
        return
    print(f"{describe()}; medians of {args.rounds} runs; start-up {start_up:.2f} s CPU\n")
    print(f"| one block of | {small:,}: wall, CPU | {large:,}: wall, CPU | CPU ratio beyond start-up |\n"
          "|---|---|---|---|")
    for r in rows:
        print(f"| {r['spec']} | {r['wall'][0]} s, {r['cpu'][0]} s | {r['wall'][1]} s, {r['cpu'][1]} s | {r['ratio']} |")

if __name__ == "__main__":
    main()
