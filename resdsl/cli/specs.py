"""The commands that read specs and build nothing: check, summary, list, show, fmt, graph."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..diagnostics import ResdslError
from .app import app
from .options import follow_option, load, spec_argument


@app.command()
@spec_argument
def check(spec: Path) -> None:
    """Check a spec: parse, infer shapes, legalize shortcuts; print one line of facts."""
    net = load(spec)
    g = net.graph
    from ..ir import INPUT
    from ..ops import fmt_shape
    if g.outputs:
        out = ", ".join(f"{name} {fmt_shape(g.shape(node))}" for name, node in g.outputs)
    else:
        out = f"{g.classes} classes" if g.outputs_classes() else f"{fmt_shape(g.shape(g.output))} feature map"
    print(f"{spec}: OK {net.name}: {fmt_shape(g.shape(INPUT))} -> {out}, "
          f"{_count(len(g.blocks), 'block')} in {_count(len(g.stages), 'stage')}, {net.params:,} params, "
          f"{net.macs / 1e9:.2f} GMACs")


@app.command()
@spec_argument
@click.option("--json", "as_json", is_flag=True,
              help="print JSON for machines: every layer whatever --depth, the memory totals in bytes, "
                   "and with --depth the roll-ups as `rows`")
@click.option("--depth", type=click.IntRange(min=0), default=None, metavar="N",
              help="roll layers up to N levels of their dotted names, as torchinfo does: 0 the network, "
                   "1 stem/stages/head (`layer1`), 2 blocks (`layer1.0`), ... (default: every layer)")
def summary(spec: Path, as_json: bool, depth: int | None) -> None:
    """A per-layer table of shapes, parameters, MACs and activation memory (float32, batch 1)."""
    from ..summary import COLUMNS, NUMERIC, cells, memory_lines, rows, summary_data
    from .display import summary_table
    net = load(spec)
    data = summary_data(net.graph, depth)
    if as_json:
        print(json.dumps(data, indent=1))
        return
    outputs = "; ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in data["outputs"].items())
    title = f"{net.name}: {data['params']:,} params, {data['macs'] / 1e9:.2f} GMACs"
    summary_table(title, COLUMNS, NUMERIC, [cells(r) for r in rows(net.graph, depth)], outputs,
                  memory_lines(data["memory"]))


@app.command("list")
@click.argument("pattern", default="*")
@click.option("--json", "as_json", is_flag=True, help="print JSON for machines")
def list_models(pattern: str, as_json: bool) -> None:
    """The bundled models, each usable by name wherever a SPEC is taken (`resdsl check resnet50`):
    name, params, GMACs, input and the library it reproduces. PATTERN is shell-style: 'resnet*'."""
    from ..catalogue import catalogue, format_table
    rows = catalogue(pattern)
    if as_json:
        print(json.dumps(rows, indent=1))
    else:
        sys.stdout.write(format_table(rows))


@app.command()
@spec_argument
def show(spec: Path) -> None:
    """Print a spec, syntax-highlighted on a colour terminal."""
    from ..files import read_source
    from ..highlight import highlight, use_colour
    text = read_source(spec)
    sys.stdout.write(highlight(text) if use_colour() else text)


@app.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--check", is_flag=True, help="exit 1 if a file would change; write nothing")
@click.option("--write", is_flag=True, help="rewrite the files in place")
def fmt(specs: tuple[Path, ...], check: bool, write: bool) -> None:
    """Format .rds files in the one canonical style (comments kept); print them by default."""
    from ..files import read_source
    from ..formatter import format_source
    from ..output import write_atomic
    changed = []
    for spec in specs:
        text = read_source(spec)
        formatted = format_source(text, str(spec))
        if formatted != text:
            changed.append(spec)
            if write and not check:
                write_atomic(spec, formatted, follow_symlinks=True)  # rewriting the spec is the point
        if not check and not write:
            sys.stdout.write(formatted)
    if check:
        for spec in changed:
            print(f"would reformat {spec}", file=sys.stderr)
        if changed:
            raise click.exceptions.Exit(1)
    elif write:
        print(f"reformatted {len(changed)} of {len(specs)} file(s)", file=sys.stderr)


@app.command()
@spec_argument
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="FILE.svg, FILE.png, FILE.pdf or FILE.dot")
@click.option("--collapse", is_flag=True, help="draw each stage once, with its repeat count")
@follow_option
def graph(spec: Path, output: Path, collapse: bool, follow_symlinks: bool) -> None:
    """A picture of the checked graph (Graphviz)."""
    net = load(spec)
    from functools import partial

    from ..backends.graphviz_render import to_dot
    from ..output import write_atomic
    write_atomic = partial(write_atomic, inputs=net.files, follow_symlinks=follow_symlinks)
    dot = to_dot(net.graph, collapse=collapse)
    fmt = output.suffix.lstrip(".").lower()
    if fmt == "dot":
        write_atomic(output, dot.source)
    elif fmt in ("svg", "png", "pdf"):
        import graphviz
        try:
            write_atomic(output, dot.pipe(format=fmt))
        except graphviz.ExecutableNotFound:
            raise ResdslError("Graphviz's `dot` program is not installed",
                              hint="install it (apt-get install graphviz, brew install graphviz), "
                                   "or write -o FILE.dot and render it elsewhere") from None
    else:
        raise ResdslError(f"cannot tell the picture format from `{output.name}`",
                          hint="end the output name in .svg, .png, .pdf or .dot")
    print(f"wrote {output}", file=sys.stderr)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
