"""The degradation experiment of He et al. 2015 (Fig. 6) at the scale this machine allows.

Trains plain-20, plain-56, ResNet-20 and ResNet-56 with one recipe and one budget through
`resdsl train` (so every run resumes from disk if interrupted), draws their training and test
error with `resdsl plot` and writes a table of final errors, with the machine and budget.

Usage: python benchmarks/degradation.py [--data digits] [--epochs 80] [--runs runs/degradation]
           [--figure docs/degradation.png] [--table benchmarks/results/degradation.json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from machine import describe

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = ("plain20", "plain56", "resnet20", "resnet56")


def arguments(doc: str, name: str, epochs: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / name)
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / f"{name}.png")
    parser.add_argument("--table", type=Path, default=ROOT / "benchmarks" / "results" / f"{name}.json")
    return parser.parse_args()


def experiment(specs: dict[str, Path], args: argparse.Namespace) -> dict:
    """Train each spec with one recipe, plot them together, and return (and write) the table."""
    resdsl = [sys.executable, "-m", "resdsl"]
    runs = {}
    for name, spec in specs.items():
        runs[name] = args.runs / name
        subprocess.run(resdsl + ["train", str(spec), "--data", args.data, "--epochs", str(args.epochs),
                                 "--batch", str(args.batch), "--out", str(runs[name])], check=True)
    subprocess.run(resdsl + ["plot", *map(str, runs.values()), "-o", str(args.figure)], check=True)
    table = {"machine": describe(), "data": args.data, "epochs": args.epochs, "batch": args.batch, "networks": {}}
    for name, run in runs.items():
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        last = rows[-1]
        table["networks"][name] = {
            "train_error": round(last["train_error"], 4), "test_error": round(last["test_error"], 4),
            "train_loss": round(last["train_loss"], 4), "iterations": last["iteration"],
            "images_per_s": round(sum(r["images_per_s"] for r in rows) / len(rows), 1)}
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.write_text(json.dumps(table, indent=1) + "\n")
    print(json.dumps(table, indent=1))
    return table


def main() -> None:
    args = arguments(__doc__, "degradation", 80)
    experiment({name: ROOT / f"specs/cifar/{name}.rds" for name in NETWORKS}, args)


if __name__ == "__main__":
    main()
