"""Ship a tuned work directory with resdsl: each kernel's chosen record, gzipped, as package data.

    python benchmarks/ship_database.py tune-resnet18-llvm [NAME]

NAME defaults to the work directory's name; `bench` and `compile --tuned` find the database by
the network and the CPU its records were measured on (`resdsl.tvm.databases`). The raw search
stays where it is: keep it out of the repository (tuning logs run to tens of MB).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from resdsl.tvm import databases
from resdsl.tvm.workdir import WorkDir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("name", nargs="?")
    args = parser.parse_args()
    source = WorkDir(args.work_dir)
    if not source.has_records():
        parser.error(f"{source.path} holds no tuning records")
    shipped = source.ship(databases.root() / (args.name or source.name))
    size = sum(p.stat().st_size for p in shipped.path.iterdir())
    print(f"shipped {shipped.count_records()} records to {shipped.path} ({size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
