"""The generated module's names: classes named as torchvision names them, and the namespaces
(`naming.Namespace`) its classes, parameters and locals come from."""
from __future__ import annotations

from collections.abc import Iterable

from ...naming import Namespace
from ...reserved import GENERATED


def namespace(taken: Iterable[str] = ()) -> Namespace:
    """Names for one scope of the generated module (its classes, a signature's parameters, a
    method's locals): identifiers that shadow nothing the module uses (`self` -> `self_`,
    `se.fc1` -> `se_fc1`), unique by the one rule (`BasicBlock`, `BasicBlock_1`)."""
    return Namespace(GENERATED, taken, identifiers=True)


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


def policy_function(policy: str) -> str:
    """A user policy's helper: `avg_down` as itself, kept clear of Python's names (the module's
    own, HELPERS, are refused as policy names when the spec is loaded)."""
    return policy + "_" if policy in GENERATED else policy
