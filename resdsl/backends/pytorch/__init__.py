"""The PyTorch backend's parts, one job each; `resdsl.backends.torch_codegen` is its entry point
(generate, instantiate, check).

  converters.py  op -> the module or expression a layer becomes (CONVERTERS), and the in-place rule
  symbols.py     spec expressions as Python (`Sym`, `render`), checked against every block's integers
  names.py       the generated module's names: classes, variables, parameters, policy helpers
  lines.py       the line formatter: calls, nn.Sequential, signatures within the line limit
  block.py       one block definition's class body (`__init__` and `forward`) from one of its blocks
  layout.py      a class's containers: dotted labels nested, runs of layers as one nn.Sequential
  shortcuts.py   the `downsample` the network builds and hands to a block (projection, zero-pad, policy)
  classes.py     which blocks share a class (the symbolic-class search) and the classes' signatures
  network.py     the network's own class: stem, stages, head and named outputs
"""
