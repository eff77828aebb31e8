"""Tuned TVM's latency against ONNX Runtime's, as tuning time goes on: how long `resdsl tune`
takes on the CPU in front of you to beat ONNX Runtime, and to beat OpenVINO.

Each step runs `resdsl tune` to a larger trial budget in one work directory (a step resumes
where the last stopped, as a user's second `tune` would), so every point is a real tuned library
timed in turns with ONNX Runtime by `tune` itself. The x axis is the steps' summed wall time: it
includes each step's selection, build and timing, which one long run would pay once, so the
curve is if anything late. OpenVINO's line is its latency over ONNX Runtime's, from one
interleaved `resdsl bench` at the start. A curve resumes from its JSON: steps already there
are not run again.

Usage:
  python benchmarks/tuning_curve.py SPEC --work-dir DIR --steps 1,200,400 [--reuse-records NAME]
      [--batch 1] [--curve benchmarks/results/tuning_curve_NET.json]
  python benchmarks/tuning_curve.py --plot CURVE.json [CURVE.json ...] --figure docs/tuning_curve.png
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from machine import describe

ROOT = Path(__file__).resolve().parent.parent
RESDSL = [sys.executable, "-m", "resdsl"]


def host_cpu() -> str:
    from resdsl.tvm.target import host_cpu as llvm_host_cpu
    return llvm_host_cpu()


def openvino_ratio(spec: str, batch: int, rounds: int, reuse: list[str]) -> dict:
    """OpenVINO's and PyTorch's latency over ONNX Runtime's, from one interleaved bench; with the
    database the curve starts from (`tvm-tuned`: the curve's point at 0 minutes)."""
    tuned = [f"--tuned={reuse[0]}"] if reuse else []
    engines = "torch,onnxruntime,openvino" + (",tvm-tuned" if reuse else "")
    out = subprocess.run([*RESDSL, "bench", spec, "--batch", str(batch), "--engines", engines, *tuned,
                          "--rounds", str(rounds), "--json"],
                         check=True, capture_output=True, text=True).stdout
    rows = {r["engine"]: r for r in json.loads(out)["results"]}
    return {engine: {"median_ms": r["median_ms"], "vs_onnxruntime": r["vs_onnxruntime"]}
            for engine, r in rows.items()}


def tune_step(spec: str, work_dir: Path, trials: int, batch: int, reuse: list[str]) -> dict:
    """One `resdsl tune` to `trials` in all; its wall time and what its report measured."""
    command = [*RESDSL, "tune", spec, "--work-dir", str(work_dir), "--trials", str(trials),
               "--batch", str(batch)]
    for source in reuse:
        command += ["--reuse-records", source]
    started = time.monotonic()
    subprocess.run(command, check=True)
    seconds = time.monotonic() - started
    report = json.loads((work_dir / "report.json").read_text())
    versus = report["versus_onnxruntime"]
    return {"trials": trials, "records": sum(t["trials"] for t in report["tasks"]), "seconds": round(seconds, 1),
            "tvm_ms": versus["tvm_ms"], "onnxruntime_ms": versus["onnxruntime_ms"], "ratio": versus["ratio"]}


def run_curve(args: argparse.Namespace) -> None:
    curve_path = args.curve or ROOT / "benchmarks" / "results" / f"tuning_curve_{Path(args.spec).stem}.json"
    curve = json.loads(curve_path.read_text()) if curve_path.exists() else {
        "spec": args.spec, "batch": args.batch, "reuse": args.reuse_records, "work_dir": str(args.work_dir),
        "machine": describe(), "cpu": host_cpu(), "threads": os.cpu_count(), "date": date.today().isoformat(),
        "steps": [],
    }
    if "engines" not in curve:
        curve["engines"] = openvino_ratio(args.spec, args.batch, args.rounds, args.reuse_records)
        write(curve_path, curve)
    done = {s["trials"] for s in curve["steps"]}
    for trials in args.steps:
        if trials in done:
            continue
        # Records are seeded once: a later step resumes from the directory, which already has them.
        step = tune_step(args.spec, args.work_dir, trials, args.batch, args.reuse_records if not done else [])
        curve["steps"].append(step)
        done.add(trials)
        write(curve_path, curve)
        print(f"{trials} trials: {step['ratio']:.3f}x ONNX Runtime after {elapsed(curve) / 60:.1f} min",
              file=sys.stderr)


def elapsed(curve: dict) -> float:
    return sum(s["seconds"] for s in curve["steps"])


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=1) + "\n")
    temporary.replace(path)


def plot(curves: list[Path], figure: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for path in curves:
        curve = json.loads(path.read_text())
        minutes, ratios, total = [], [], 0.0
        start = curve["engines"].get("tvm-tuned", {}).get("vs_onnxruntime")
        if start:  # the database it was seeded from, as it ships
            minutes.append(0.0)
            ratios.append(start)
        for step in curve["steps"]:
            total += step["seconds"]
            minutes.append(total / 60)
            ratios.append(step["ratio"])
        name = Path(curve["spec"]).stem
        line, = ax.plot(minutes, ratios, marker="o", label=f"{name}, batch {curve['batch']}: tuned TVM")
        openvino = curve["engines"].get("openvino", {}).get("vs_onnxruntime")
        if openvino:
            ax.axhline(openvino, color=line.get_color(), linestyle=":", label=f"{name}: OpenVINO")
    ax.axhline(1.0, color="black", linewidth=0.8, label="ONNX Runtime")
    ax.axhline(0.85, color="grey", linestyle="--", linewidth=0.8, label="goal: 0.85x ONNX Runtime")
    ax.set_xlabel("minutes of `resdsl tune` on this machine (cumulative)")
    ax.set_ylabel("latency / ONNX Runtime's")
    first = json.loads(curves[0].read_text())
    cpu = f" (LLVM `{first['cpu']}`)" if "cpu" in first else ""
    ax.set_title(f"{first['machine'].split(',')[0]}{cpu}, {first['threads']} threads, {first['date']}", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", nargs="?")
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")], default=[1, 200, 400])
    parser.add_argument("--reuse-records", action="append", default=[])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--curve", type=Path)
    parser.add_argument("--plot", type=Path, nargs="+")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "tuning_curve.png")
    args = parser.parse_args()
    if args.plot:
        plot(args.plot, args.figure)
    elif args.spec and args.work_dir:
        run_curve(args)
    else:
        parser.error("give SPEC and --work-dir, or --plot CURVE.json")


if __name__ == "__main__":
    main()
