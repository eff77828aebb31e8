"""Specs at resdsl's documented limits, timed through the real command line.

Naming layers and drawing the graph used to be quadratic (16,000 unlabeled layers took 17 s,
20,000 blocks in `graph` over a minute); this shows what the limits cost now, and that doubling
a spec roughly doubles the time (the ratio column: linear is ~2).

Usage: python benchmarks/limits.py [--json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe


def blocks(n: int) -> str:
    return (f"network n {{\n input 3x8x8\n classes 10\n stem {{ conv 16 k3 p1 }}\n"
            f" stage s: basic(16) x {n}\n head {{ avgpool; fc classes }}\n}}\n")


def unlabeled(n: int) -> str:
    return "network n {\n input 3x8x8\n classes 10\n stem {\n" + "  relu\n" * n + " }\n head { avgpool; fc classes }\n}\n"


CASES = [("blocks", blocks, 20000, ["check"]), ("blocks", blocks, 20000, ["graph", "-o", "{dir}/g.dot"]),
         ("unlabeled layers", unlabeled, 100000, ["check"])]


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "resdsl", *argv], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for what, make, limit, command in CASES:
            seconds = {}
            for n in (limit // 2, limit):
                spec = Path(tmp) / f"{n}.rds"
                spec.write_text(make(n))
                seconds[n] = timed([c.format(dir=tmp) for c in command] + [str(spec)])
            rows.append({"spec": f"{limit:,} {what}", "command": command[0], "seconds": round(seconds[limit], 2),
                         "half_seconds": round(seconds[limit // 2], 2),
                         "ratio": round(seconds[limit] / seconds[limit // 2], 2)})
    if args.json:
        print(json.dumps({"machine": describe(), "rows": rows}, indent=1))
        return
    print("| spec | command | seconds | at half the size | ratio |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['spec']} | `{r['command']}` | {r['seconds']} | {r['half_seconds']} | {r['ratio']} |")


if __name__ == "__main__":
    main()
