"""Names the compiler makes, from one namespace with one suffix rule, as torch.fx's `_Namespace`.

Layer labels (state_dict keys), the generated PyTorch's classes, parameters and local variables,
and ONNX values all come from a `Namespace`: a candidate is given as it is while free, else with
the first free `_N` from 1 (`relu`, `relu_1`, `relu_2`), as fx names its nodes. What a namespace
never hands out is its caller's `reserved` set (`reserved.GENERATED` for the generated module).

A namespace of Python identifiers (`identifiers=True`, the torch emitter's) also makes each name
safe before making it unique, as fx does: what cannot be in an identifier becomes `_`
(`se.fc1` -> `se_fc1`), and a reserved name takes a trailing `_` (`self` -> `self_`, PEP 8's
`class_`) rather than a number. Labels and ONNX values are not identifiers (`layer1.0.conv1`):
a label the user writes is checked where it is written (`labels.Labeler`), never rewritten.

Below the front end: lowering, the torch backend and the ONNX exporter import it.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

_NOT_IN_IDENTIFIER = re.compile(r"\W", re.ASCII)


class Namespace:
    """The names taken in one scope, with the next suffix to try per candidate, so that naming
    N layers alike is linear, not quadratic."""

    def __init__(self, reserved: Iterable[str] = (), taken: Iterable[str] = (), *,
                 identifiers: bool = False) -> None:
        self.reserved = frozenset(reserved)
        self.used: set[str] = set(taken)
        self.identifiers = identifiers
        self._next: dict[str, int] = {}

    def create_name(self, candidate: str) -> str:
        """`candidate` (made safe, in a namespace of identifiers), else it with the first free
        `_N`; taken from now on."""
        base = self.safe(candidate) if self.identifiers else candidate
        n = self._next.get(base, 0)
        name = f"{base}_{n}" if n else base
        while name in self:
            n += 1
            name = f"{base}_{n}"
        self._next[base] = n + 1
        self.used.add(name)
        return name

    def safe(self, candidate: str) -> str:
        """A Python identifier for `candidate` that is not reserved."""
        name = _NOT_IN_IDENTIFIER.sub("_", candidate) or "_"
        if name[0].isdigit():
            name = "_" + name
        return name + "_" if name in self.reserved else name

    def add(self, name: str) -> None:
        """Take `name` as it is (one the user wrote, checked by the caller)."""
        self.used.add(name)

    def update(self, names: Iterable[str]) -> None:
        self.used.update(names)

    def __contains__(self, name: object) -> bool:
        return name in self.used or name in self.reserved
