"""Start-up of the commands people type first, against `python -c "import torch"`.

`resdsl --help`, `resdsl list` and `resdsl check resnet50` (a bundled spec by name) never import
torch, so each should take a fraction of torch's import. Fresh processes, run from a temporary
directory (as an installed tool is), interleaved with torch's import; medians of the ratios.

Usage: python benchmarks/startup.py [--rounds N] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from machine import describe
from torch_backend import interleaved, wall

COMMANDS = {"resdsl --help": ["--help"], "resdsl list": ["list"], "resdsl check resnet50": ["check", "resnet50"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch = [sys.executable, "-c", "import torch"]
    results = {"machine": describe(), "rounds": args.rounds, "versus": 'python -c "import torch"', "commands": {}}
    with tempfile.TemporaryDirectory() as cwd:
        for name, argv in COMMANDS.items():
            command = [sys.executable, "-m", "resdsl", *argv]
            row = interleaved(lambda: wall(command, Path(cwd)), lambda: wall(torch, Path(cwd)), args.rounds)
            results["commands"][name] = row
            print(f"{name:24} {row['a_median_s']:.2f} s vs import torch {row['b_median_s']:.2f} s: "
                  f"ratio {row['ratio_median']:.2f} ({row['ratio_min']:.2f}-{row['ratio_max']:.2f})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
