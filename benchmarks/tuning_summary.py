"""Per-task analysis of a `resdsl tune` work directory, as a Markdown table.

Each task's best measured latency times its weight (how often the kernel occurs) is its share
of the network; the table shows where the remaining time goes.
Usage: python benchmarks/tuning_summary.py benchmarks/tuning/resnet18-llvm
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(work_dir: Path) -> None:
    report = json.loads((work_dir / "report.json").read_text())
    tasks = sorted(report["tasks"], key=lambda t: -(t["best_ms"] or 0) * t["weight"])
    total = sum((t["best_ms"] or 0) * t["weight"] for t in tasks)
    print(f"{report['network']} on {report['target']}, batch {report['batch']}, "
          f"{sum(t['trials'] for t in tasks)} trials recorded")
    print()
    print("| task | weight | trials | best ms | GFLOP/s | weight x best ms | share |")
    print("|---|---|---|---|---|---|---|")
    for t in tasks:
        if t["best_ms"] is None:
            print(f"| {t['name']} | {t['weight']} | {t['trials']} | - | - | - | - |")
            continue
        part = t["best_ms"] * t["weight"]
        speed = f"{t['flops'] / t['best_ms'] / 1e6:.0f}" if t.get("flops") else "-"
        print(f"| {t['name']} | {t['weight']} | {t['trials']} | {t['best_ms']:.3f} | {speed} | {part:.3f} | "
              f"{part / total:.0%} |")
    print()
    print(f"sum over tuned tasks: {total:.2f} ms", end="")
    latency = report.get("network_latency")
    print(f"; whole network measured: {latency['median_ms']:.2f} ms" if latency else "")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
