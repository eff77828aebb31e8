"""Graph -> readable, standalone PyTorch source (Jinja2), without importing torch: the backend's
entry points (check, generate, instantiate); its parts, one job each, are in `pytorch/`.

One nn.Module class per block definition, as torchvision and timm write theirs: the constructor
takes the block's own parameters (`Bottleneck(in_channels, width, stride=1, groups=1, ...,
downsample=None)`) and every layer is written with the expressions the spec used
(`nn.Conv2d(width, width * expansion, ...)`), so every block of a definition is one class. A
shortcut that a policy inserted is built by the network and handed in as `downsample`, as
torchvision's `_make_layer` does; a highway gate, present in every gated block, is the block's
own. A parameter holding a layer kind (`act = relu`) becomes a constructor argument as timm's
`act_layer=nn.ReLU` where some block gives it another kind (see `kind_arguments`). Each stage is
an nn.Sequential of blocks, so module and state_dict names are the graph's
node names: `layer1.0.conv1`, `layer1.0.downsample.0`, `fc`.

Every expression is checked against the integers of every block it stands for; a definition
whose layers the spec's expressions cannot explain (none among the bundled specs) gets one
class per distinct body instead, with literal integers.
"""
from __future__ import annotations

import hashlib
import linecache
import sys
import types
from functools import lru_cache

import jinja2

from ..diagnostics import ResdslError
from ..ir import INPUT, Graph
from ..ops import fmt_shape
from ..passes.shapes import locate
from ..resources import templates_dir
from ..stats import totals
from .pytorch.classes import Generator
from .pytorch.converters import CONVERTERS, Converter, Expression, Handed, Join, Module
from .pytorch.lines import docstring_text
from .pytorch.network import describe_returned, network_class
from .pytorch.shortcuts import policy_helper
from .support import check_supported

__all__ = ["CONVERTERS", "Converter", "Expression", "Handed", "Join", "Module", "check", "generate",
           "instantiate", "load_source"]


def check(graph: Graph) -> None:
    """Refuse, located and all at once, every op of `graph` this backend has no converter for;
    then a layer it writes as an expression (a chunk) in a shortcut policy's layers."""
    check_supported(graph, "torch", CONVERTERS)
    for name in graph.order():
        node = graph.node(name)
        if isinstance(CONVERTERS.get(node.op), Expression) and node.scope and node.role is not None:
            span, notes = locate(graph, name)
            raise ResdslError(f"the torch backend writes `{node.op}` only among a block's or the network's "
                              "layers, not in a shortcut policy", span, notes=notes,
                              hint=f"write the `{node.op}` in the block, before `add shortcut`")


def generate(graph: Graph, source_name: str | None = None) -> str:
    check(graph)
    gen = Generator(graph)
    gen.run()
    main = network_class(gen)
    params, macs = totals(graph)
    return _template().render(
        network=graph.name, source=docstring_text(source_name) if source_name else f"network `{graph.name}`",
        input=fmt_shape(graph.shape(INPUT)),
        output=describe_returned(graph),
        params=f"{params:,}", macs=f"{macs:,}", blocks=gen.classes, main=main,
        projection="projection" in gen.helpers, zero_pad="ZeroPadShortcut" in gen.helpers,
        drop_path=any(graph.node(n).op == "drop_path" for n in graph.order()),
        policies=[policy_helper(graph, p) for p in gen.policies],
        ordered_dict=any("OrderedDict" in line for p in gen.policies for line in policy_helper(graph, p)))


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, autoescape=False)
    return env.get_template("torch_module.py.j2")


def instantiate(graph: Graph, seed: int | None = None):
    """Build the generated module in memory, as if imported from a file."""
    module = load_source(generate(graph), graph.name)
    return module.build(seed)


def load_source(source: str, name: str) -> types.ModuleType:
    # Register the text with linecache so inspect (and so torch.jit.script) can read it back.
    digest = hashlib.sha1(source.encode()).hexdigest()[:12]
    filename = f"<resdsl:{name}:{digest}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(f"resdsl_generated_{digest}")
    module.__file__ = filename
    sys.modules[module.__name__] = module
    exec(compile(source, filename, "exec"), module.__dict__)  # noqa: S102 - our own generated source
    return module
