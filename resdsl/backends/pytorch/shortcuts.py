"""The shortcut a block is handed as `downsample`, as torchvision's `_make_layer` builds it (or
under the container a user policy names, `proj` in torchvision's RegNet): the call that makes it
(projection(), ZeroPadShortcut(), a policy's helper), the name it goes by, and each user policy's
helper function."""
from __future__ import annotations

from ... import ast
from ...ir import PAD, PROJECTION, Graph
from ...reserved import DEFAULT_SHORTCUT
from .converters import Layer, module_of
from .lines import call, sequential_of
from .names import namespace, policy_function
from .symbols import IN, Sym, render


def inserted(graph: Graph, path: str, role: str) -> list[str]:
    """The nodes shortcut legalization inserted into block `path` with `role`, in order."""
    return [n for n in graph.scope_nodes(path) if graph.node(n).role == role]


def shortcut_name(graph: Graph, path: str) -> str:
    """What block `path` calls the shortcut it is handed: its policy's container."""
    for add in graph.scope_nodes(path):
        node = graph.node(add)
        if node.op == "add" and node.attrs.get("applied"):
            return graph.policies[node.attrs["policy"]].container
    return DEFAULT_SHORTCUT


def shortcut_call(graph: Graph, path: str) -> str | None:
    """The module a policy inserted for this block, as the network builds it."""
    for add in graph.scope_nodes(path):
        applied = graph.node(add).attrs.get("applied") if graph.node(add).op == "add" else None
        if applied:  # a user-defined policy: its helper, named after it
            c_in, channels, stride = applied
            return f"{policy_function(graph.node(add).attrs['policy'])}({c_in}, {channels}, {stride})"
    projection = inserted(graph, path, PROJECTION)
    if projection:  # B or C: its conv, then its bn
        conv = graph.node(projection[0]).attrs
        c_in = graph.shape(graph.inputs(projection[0])[0])[0]
        stride = f", stride={conv['stride']}" if conv["stride"] != 1 else ""
        return f"projection({c_in}, {conv['out']}{stride})"
    pad = inserted(graph, path, PAD)
    if pad:
        a = graph.node(pad[0]).attrs
        return f"ZeroPadShortcut({a['stride']}, {a['pad_before']}, {a['pad_after']})"
    return None



def policy_helper(graph: Graph, name: str) -> list[str]:
    """`def NAME(in_channels, channels, stride) -> nn.Sequential`, its layers written with the
    policy's own expressions, keyed as its labels say (`downsample.0` -> 0, `proj.conv` -> conv)."""
    policy = graph.policies[name]
    names = namespace({"in_channels"})
    params = {p.name: names.create_name(p.name) for p in policy.params}
    params[IN] = "in_channels"
    # One instance, to give each layer its attributes and labels (the body is one chain).
    path, add = next((n, a) for n in graph.blocks for a in graph.scope_nodes(n)
                     if graph.node(a).op == "add" and graph.node(a).attrs.get("policy") == name
                     and graph.node(a).attrs.get("applied"))
    chain = inserted(graph, path, PROJECTION)
    env = {policy.params[0].name: graph.node(add).attrs["applied"][1],
           policy.params[1].name: graph.node(add).attrs["applied"][2]}
    channels = Sym("in_channels", 4, ast.Var(IN, None))
    ctors, keys = [], []
    for n in chain:
        node = graph.node(n)

        def sym(key: str, node=node) -> Sym:
            expr = node.exprs.get(key)
            return Sym.literal(node.attrs[key]) if expr is None else render(expr, params, env)
        layer = Layer(sym, channels, graph.shape(graph.inputs(n)[0]))
        ctors.append(module_of(node.op).build(layer, node.attrs))
        keys.append(node.label.split(".", 1)[1])
        channels = layer.sym("out") if node.op in ("conv", "fc") else channels
    head = (f"def {policy_function(name)}(in_channels: int, {params[policy.params[0].name]}: int, "
            f"{params[policy.params[1].name]}: int) -> nn.Sequential:")
    lines = [head, f'    """The shortcut of policy `{name}` where the shape changes."""']
    if keys == [str(i) for i in range(len(keys))]:
        body = sequential_of("return", ctors)
        body[0] = "return nn.Sequential("
    else:
        body = ["return nn.Sequential(OrderedDict(["]
        for key, (ctor, args) in zip(keys, ctors):
            inner = call(ctor, args, 12 + len(key) + 6)
            body += [f'    ("{key}", {inner[0]}'] + [f"    {line}" for line in inner[1:-1]] + \
                    ([f"    {inner[-1]})," ] if len(inner) > 1 else [])
            if len(inner) == 1:
                body[-1] += "),"
        body.append("]))")
    return lines + [f"    {line}" for line in body]
