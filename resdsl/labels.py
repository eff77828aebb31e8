"""Layer labels: each scope's names (a `naming.Namespace` that also knows its containers), fresh
names for unlabeled layers, and the safety of a label as a PyTorch module attribute (`conv1`,
`layer1.0.downsample.0`).

Below the front end: lowering names every layer with it, and the shortcut pass a user policy's
layers, which alone may own `downsample.*` (`inserting`).
"""
from __future__ import annotations

import keyword

from .diagnostics import ResdslError, Span
from .naming import Namespace
from .reserved import CONTAINER_MEMBERS, MODULE_MEMBERS, SHORTCUT_MODULES


class Names(Namespace):
    """The labels taken in one scope; unlabeled layers named by its one rule (`relu`, `relu_1`),
    which state_dict keys follow. `containers`: each container path and the first label in it."""

    def __init__(self) -> None:
        super().__init__()
        self.containers: dict[str, str] = {}
        self.numbered: dict[str, int] = {}  # container -> one past the highest number it holds

    def next_number(self, container: str) -> int:
        """The number a stage's first block takes in `container` (0 in a new one)."""
        return self.numbered.get(container, 0)


class Labeler:
    """Checks and takes labels; `inserting`: labelling a shortcut policy's layers."""

    def __init__(self, inserting: bool = False) -> None:
        self.inserting = inserting
        self.safe: set[str] = set()  # labels `check_name` has passed

    def label(self, written: str | None, prefix: str, used: Names, span: Span, scope: str, base: str) -> str:
        """A layer's label: `prefix` + its own, taken in `used`, or a fresh one from `base`."""
        if written is None:
            return used.create_name(prefix + base)
        label = prefix + written
        self.claim(label, used, span, scope)
        return label

    def check_name(self, label: str, span: Span) -> None:
        """Every part of a (dotted) name must be safe as a PyTorch module attribute. A label found
        safe once is not checked again: every block of a stage repeats its definition's labels."""
        if label in self.safe:
            return
        self._check_parts(label, span)
        self.safe.add(label)

    def _check_parts(self, label: str, span: Span) -> None:
        parts = label.split(".")
        for i, part in enumerate(parts):
            if part.isdigit():  # `features.0`, or `0` in a block: a position in a container
                continue
            generated = i == 0 and part in SHORTCUT_MODULES and not self.inserting
            if keyword.iskeyword(part) or part in MODULE_MEMBERS or generated:
                raise ResdslError(f"`{part}` cannot name a layer: the generated PyTorch code uses it",
                                  span, hint=f"choose another name, e.g. `{part}_`")
            if i and part in CONTAINER_MEMBERS:  # a key of nn.ModuleDict or nn.Sequential
                container = ".".join(parts[:i])
                raise ResdslError(f"`{part}` cannot name a layer inside `{container}`: PyTorch's containers "
                                  f"have a method `{part}`", span,
                                  hint=f"choose another name, e.g. `{container}.{part}_`")
            if part.startswith("_"):  # nn.Module keeps its state in _modules, _parameters, _version...
                raise ResdslError(f"`{part}` cannot name a layer: names starting with `_` belong to PyTorch",
                                  span, hint=f"choose another name, e.g. `{part.strip('_') or 'layer'}_`")

    def claim(self, label: str, used: Names, span: Span, scope: str) -> None:
        """Take `label` in its scope. A dotted label (`conv1.0`) is a module inside containers
        (`conv1`): a container cannot also be a layer, and each part must be a safe name."""
        parts = label.split(".")
        self.check_name(label, span)
        where = f"block {scope}" if scope else "the network"
        if label in used.containers:
            raise ResdslError(
                f"`{label}` names a layer, but also holds `{used.containers[label]}` in {where}",
                span,
                hint="a name is either a layer or a container of layers (`x.0`, `x.1`)",
            )
        if label in used:
            raise ResdslError(f"`{label}` names two layers in {where}", span,
                              hint="every layer in a block (and every stem/head layer and stage) "
                                   "needs its own name")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if prefix in used and prefix not in used.containers:
                raise ResdslError(f"`{label}` would be inside `{prefix}`, which is a layer in {where}", span,
                                  hint="a name is either a layer or a container of layers (`x.0`, `x.1`)")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            used.add(prefix)
            used.containers.setdefault(prefix, label)
            if parts[i].isdigit():
                used.numbered[prefix] = max(used.numbered.get(prefix, 0), int(parts[i]) + 1)
        used.add(label)


def written(span: Span) -> str:
    """The text of a one-line span, as the user wrote it (a label that reads as `k3`, a header
    line `--set` replaces)."""
    if span.end_line != span.line:
        return ""
    return span.source_line()[span.column - 1:span.end_column - 1]
