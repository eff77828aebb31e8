"""The command line: the only package that prints or exits (`main`, the `resdsl` entry point).

    app.py      the `resdsl` group, and `main`: errors to exit codes
    options.py  the SPEC argument with --set, loading it, the weight, TVM and output options
    specs.py    check, summary, list, show, fmt, graph
    ir.py       ir: the graph IR as text, after any pass
    compile.py  compile, through the target registry (`resdsl.targets`)
    tuning.py   tune, bench
    train.py    train, plot
    display.py  tables and live progress: rich on a terminal, plain lines otherwise

A new command is a module here with `@app.command()` functions, imported below to register them.
Every module imports only click and resdsl's light modules at the top: `resdsl --help` loads them all.
"""
from . import compile, ir, specs, train, tuning  # noqa: F401  (each registers its commands on `app`)
from .app import app, main

__all__ = ["app", "main"]
