"""`resdsl ir`: the graph IR as text, after lowering or after any pass (`printer.format_graph`)."""
from __future__ import annotations

from pathlib import Path

import click

from ..network import LOWERED
from ..passes import INFERENCE, PIPELINE, pass_names
from .app import app
from .options import load, spec_argument


@app.command()
@spec_argument
@click.option("--after", type=click.Choice([LOWERED, *pass_names(PIPELINE + INFERENCE)]), default=None,
              help=f"stop after this pass (`{LOWERED}`: before the first); default: the whole pipeline, "
                   "the graph every backend reads; decompose: what ONNX lowers; fold-bn: what TVM lowers")
@click.option("--locations", is_flag=True, help="end each line with where the spec wrote it: loc(file:line:col)")
def ir(spec: Path, after: str | None, locations: bool) -> None:
    """Print the graph IR: one line per node with its op, attributes, operands, shape and role."""
    from ..printer import format_graph
    print(format_graph(load(spec, until=after).graph, locations=locations), end="")
