"""The generated module's names: classes named as torchvision names them, local variables and
parameters that shadow nothing the module uses."""
from __future__ import annotations

from itertools import chain, count

from ...reserved import HELPERS, LOCALS, PYTHON

# Names generated code uses or Python reserves: no class, parameter or variable may take them.
RESERVED = PYTHON | LOCALS | HELPERS | {"downsample"}


class Namespace:
    """Hands out names that are unique and shadow nothing the generated module uses."""

    def __init__(self, taken=()) -> None:
        self.used = set(RESERVED) | set(taken)

    def fresh(self, base: str, sep: str = "") -> str:
        """`base`, else the first free of `base{sep}2`, `base{sep}3`, ..., taken from now on."""
        candidates = chain([base], (f"{base}{sep}{n}" for n in count(2)))
        name = next(c for c in candidates if c not in self.used)
        self.used.add(name)
        return name


def camel(name: str) -> str:
    """`se_resnet` -> SeResnet, `resnet_50` -> Resnet_50 (the underscore kept before a digit)."""
    parts = [p for p in name.split("_") if p]
    out = ""
    for part in parts:
        out += ("_" if out and part[0].isdigit() else "") + part[0].upper() + part[1:]
    return out or "Net"


def class_name(definition: str) -> str:
    """`bottleneck` -> Bottleneck and `basic` -> BasicBlock, as torchvision names them."""
    name = camel(definition)
    return name if "Bottleneck" in name or name.endswith("Block") else name + "Block"


def variable_name(label: str) -> str:
    """A local variable for a label: `se.fc1` -> `se_fc1`; never one the generated code uses."""
    name = label.replace(".", "_")
    return name + "_" if name in RESERVED or not name.isidentifier() else name


def policy_function(policy: str) -> str:
    """A user policy's helper: `avg_down` as itself, kept clear of Python's names (the module's
    own, HELPERS, are refused as policy names when the spec is loaded)."""
    return policy + "_" if policy in RESERVED else policy
