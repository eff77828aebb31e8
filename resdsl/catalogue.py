"""`resdsl list`: the bundled models as a table, each one loaded and checked. It sits above
`network` (which resolves a model's name through `zoo`), so the two never import each other."""
from __future__ import annotations

from .diagnostics import ResdslError, printable
from .ir import INPUT
from .network import load
from .ops import fmt_shape
from .zoo import bundled, list_models, peers


def catalogue(pattern: str = "*") -> list[dict]:
    """One row per bundled model matching `pattern`: what `resdsl list` prints (each is checked)."""
    names = list_models(pattern)
    if not names:
        raise ResdslError(f"no bundled model matches {printable(pattern)}",
                          hint=f"`resdsl list` shows all {len(bundled())}; patterns are shell-style, e.g. 'resnet*'")
    reproduces = peers()
    rows = []
    for name in names:
        net = load(bundled()[name])
        rows.append({"name": name, "params": net.params, "macs": net.macs,
                     "input": fmt_shape(net.graph.shape(INPUT)), "reproduces": reproduces.get(name, ""),
                     "spec": str(bundled()[name])})
    return rows


def format_table(rows: list[dict]) -> str:
    """Plain columns, never cut to a terminal width: a pipe gets every name whole."""
    header = ("name", "params", "GMACs", "input", "reproduces")
    cells = [header] + [(r["name"], f"{r['params']:,}", f"{r['macs'] / 1e9:.2f}", r["input"], r["reproduces"])
                        for r in rows]
    if not any(r["reproduces"] for r in rows):  # no peers.json: no empty column
        cells = [c[:-1] for c in cells]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    right = {1, 2}  # numbers line up on their last digit
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
             .rstrip() for row in cells]
    return "\n".join(lines) + "\n"
