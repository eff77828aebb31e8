"""The op registry: every node kind's definition, by name (see `definitions`).

Shape inference, the lowering's attribute checks, the summary's parameters and MACs, the weights'
state_dict keys, the verifier, the highlighter and the formatter all read it; each backend keeps
one converter table keyed by the same names and checks it against the graph before lowering.
"""
from __future__ import annotations

from .definitions import DEFINITIONS
from .rules import fmt_shape
from .schema import (
    BUFFER,
    COUNTER,
    FLAG,
    FLOAT,
    INT,
    INTERNAL,
    JOIN,
    LAYER,
    PARAMETER,
    PROBABILITY,
    Attr,
    Attrs,
    OpDef,
    Range,
    Shape,
    ShapeError,
    Weight,
)

OPS: dict[str, OpDef] = {op.name: op for op in DEFINITIONS}

# The joins (`add`, `mul`, `concat`): statements the lowering handles itself, not layers.
JOINS: tuple[str, ...] = tuple(name for name, op in OPS.items() if op.kind == JOIN)


def register(op: OpDef) -> OpDef:
    """Add an op (a plugin's, a test's); its name must be new."""
    if op.name in OPS:
        raise ValueError(f"op {op.name!r} is already defined")
    OPS[op.name] = op
    return op


def unregister(name: str) -> None:
    """Remove an op `register` added; the built-in ones stay."""
    if any(op.name == name for op in DEFINITIONS):
        raise ValueError(f"op {name!r} is built in")
    del OPS[name]


def user_ops() -> list[str]:
    """The ops a spec may write as layers, in definition order."""
    return [name for name, op in OPS.items() if op.kind == LAYER]


__all__ = ["BUFFER", "COUNTER", "FLAG", "FLOAT", "INT", "INTERNAL", "JOIN", "JOINS", "LAYER", "OPS",
           "PARAMETER", "PROBABILITY", "Attr", "Attrs", "OpDef", "Range", "Shape", "ShapeError", "Weight",
           "fmt_shape", "register", "unregister", "user_ops"]
