"""The paper's Table 3 (shortcut options A, B and C) at the scale this machine allows.

Trains ResNet-20 three times with one recipe and one budget, changing only the shortcut policy:
A zero-pads a strided identity (no parameters), B projects where the shape changes, C projects
every shortcut. Writes a figure and a table of final errors with each network's parameters.

Usage: python benchmarks/shortcut_options.py [--data digits] [--epochs 80] [--runs runs/shortcut_options]
           [--figure docs/shortcut_options.png] [--table benchmarks/results/shortcut_options.json]
"""
from __future__ import annotations

import json
import re

from degradation import ROOT, arguments, experiment


def main() -> None:
    import resdsl
    args = arguments(__doc__, "shortcut_options", 80)
    base = (ROOT / "specs/cifar/resnet20.rds").read_text()
    (args.runs / "specs").mkdir(parents=True, exist_ok=True)
    specs, params = {}, {}
    for option in "ABC":
        name = f"resnet20_{option}"
        text = re.sub(r"(?m)^    shortcut A$", f"    shortcut {option}", base).replace("network resnet20", f"network {name}")
        specs[name] = args.runs / "specs" / f"{name}.rds"
        if not specs[name].exists() or specs[name].read_text() != text:
            specs[name].write_text(text)
        params[name] = resdsl.load(specs[name]).params
    table = experiment(specs, args)
    for name, row in table["networks"].items():
        row["params"] = params[name]
    args.table.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
