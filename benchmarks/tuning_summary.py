"""Per-task analysis of a `resdsl tune` work directory, as a Markdown table.

Each task's latency times its weight (how often the kernel occurs) is its share of the network;
the table shows where the remaining time goes. A task's latency is the chosen record re-timed
with cold weights where `tune` made a selection, else the search's best (hot) measurement.
Usage: python benchmarks/tuning_summary.py WORKDIR
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def latency(task: dict) -> float | None:
    return task.get("selected_ms") or task["best_ms"]


def main(work_dir: Path) -> None:
    report = json.loads((work_dir / "report.json").read_text())
    tasks = sorted(report["tasks"], key=lambda t: -(latency(t) or 0) * t["weight"])
    total = sum((latency(t) or 0) * t["weight"] for t in tasks)
    print(f"{report['network']} on {report['target']}, batch {report['batch']}, "
          f"{sum(t['trials'] for t in tasks)} trials recorded")
    print()
    print("| task | weight | trials | recorded best ms | chosen (rank) | chosen ms, cold | GFLOP/s | weight x ms | share |")
    print("|---|---|---|---|---|---|---|---|---|")
    for t in tasks:
        ms = latency(t)
        if ms is None:
            print(f"| {t['name']} | {t['weight']} | {t['trials']} | - | - | - | - | - | - |")
            continue
        part = ms * t["weight"]
        speed = f"{t['flops'] / ms / 1e6:.0f}" if t.get("flops") else "-"
        rank = t.get("selected_rank")
        chosen = (f"{rank} | {t['selected_ms']:.3f}" if rank is not None else "- | -")
        print(f"| {t['name']} | {t['weight']} | {t['trials']} | {t['best_ms']:.3f} | {chosen} | {speed} | "
              f"{part:.3f} | {part / total:.0%} |")
    print()
    print(f"sum over tuned tasks: {total:.2f} ms", end="")
    measured = report.get("network_latency")
    print(f"; whole network measured: {measured['median_ms']:.2f} ms" if measured else "")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
