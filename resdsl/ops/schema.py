"""What one op definition holds, as ONNX's OpSchema does: its attributes (with their types,
defaults and bounds), its shape rule, the tensors it owns, its MAC rule and a line saying what it
is. Everything else (the lowering's checks, parameter counts, state_dict keys, the highlighter,
the formatter's short forms) reads these records."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from math import inf, prod
from typing import Any, NamedTuple

Shape = tuple[int, ...]
Attrs = dict[str, Any]

INT, FLOAT, FLAG = "int", "float", "flag"  # an attribute's type; a flag is an int that is 0 or 1
LAYER, JOIN, INTERNAL = "layer", "join", "internal"  # who writes an op: a spec (layer, join), the compiler
PARAMETER, BUFFER, COUNTER = "parameter", "buffer", "counter"  # what a tensor an op owns is


class ShapeError(Exception):
    """Raised by a shape rule; the pass turns it into a located ResdslError."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class Range:
    """Where a float attribute means something: from `low` (left out where `open`) to below `high`.
    `why` says what the attribute is, for the hint of a value outside."""
    low: float
    high: float = inf
    open: bool = False
    why: str = ""

    def __contains__(self, value: float) -> bool:
        return (value > self.low if self.open else value >= self.low) and value < self.high

    def describe(self) -> str:
        if self.high == inf:
            return f"{'greater than' if self.open else 'at least'} {self.low:g}"
        return f"in {'(' if self.open else '['}{self.low:g}, {self.high:g})"


PROBABILITY = Range(0.0, 1.0, why="a probability: at least 0, below 1")


@dataclass(frozen=True)
class Attr:
    """One attribute a spec may set. `default` None: required. `short` is its one-letter form
    (`k3` for kernel=3; the grammar's SHORT_ATTR decides which letters exist), `example` the
    value the hint shows it with. An int must be at least `low`; a float must lie in `range`.
    `pair`: it may be a (height, width) pair (`k1x7`, `kernel=(1, 7)`), each at least `low`."""
    name: str
    default: Any = None
    type: str = INT
    short: str | None = None
    example: int = 1
    low: int = 1
    range: Range | None = None
    pair: bool = False


def hw(value: Any) -> tuple[Any, Any]:
    """A kernel, stride or padding as (height, width): a pair as it is, a square one twice."""
    return value if isinstance(value, tuple) else (value, value)


def pair_text(value: Any) -> str:
    """A kernel, stride or padding as a spec writes it: `3`, or `1x7`."""
    return "x".join(map(str, value)) if isinstance(value, tuple) else str(value)


class Weight(NamedTuple):
    """A tensor a layer owns, its state_dict key `LAYER.name` (`LAYER` where the name is empty:
    a parameter of the enclosing module, as a layer scale's `gamma`): a parameter (counted in the
    summary's params), a buffer (BN's running statistics) or a counter (BN's 0-d int64
    `num_batches_tracked`, which no target computes with, so a weights file may leave it out)."""
    name: str
    shape: Shape
    kind: str = PARAMETER


Rule = Callable[[Attrs, list[Shape]], Shape]
Count = Callable[[Attrs, list[Shape], Shape], int]
Weights = Callable[[Attrs, list[Shape], Shape], list[Weight]]


def no_weights(attrs: Attrs, ins: list[Shape], out: Shape) -> list[Weight]:
    return []


def no_macs(attrs: Attrs, ins: list[Shape], out: Shape) -> int:
    return 0


@dataclass(frozen=True)
class OpDef:
    """One op. `positional` names the attribute a bare expression sets (`conv 64` sets `out`);
    `kind` says who writes it (LAYER: a spec's layer; JOIN: a join statement, `add`/`mul`/
    `concat`; INTERNAL: made by the compiler); `module`: the generated PyTorch holds it as an
    nn.Module under its name; `train_only`: it acts in training only (the identity in eval, ONNX
    and TVM); `complete` fills attributes whose default depends on another (avgpool's stride)."""
    name: str
    description: str
    shape: Rule
    attrs: tuple[Attr, ...] = ()
    positional: str | None = None
    arity: tuple[int, ...] = (1,)
    weights: Weights = no_weights
    macs: Count = no_macs
    kind: str = LAYER
    module: bool = False
    train_only: bool = False
    complete: Callable[[Attrs], None] | None = None
    # Derived from `attrs`, for the lowering's per-layer lookups.
    defaults: dict[str, Any] = field(init=False, repr=False, compare=False)
    floats: frozenset[str] = field(init=False, repr=False, compare=False)
    flags: frozenset[str] = field(init=False, repr=False, compare=False)
    pairs: frozenset[str] = field(init=False, repr=False, compare=False)
    shorts: dict[str, str] = field(init=False, repr=False, compare=False)  # short form -> name
    by_name: dict[str, Attr] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        derived = {"defaults": {a.name: a.default for a in self.attrs},
                   "floats": frozenset(a.name for a in self.attrs if a.type == FLOAT),
                   "flags": frozenset(a.name for a in self.attrs if a.type == FLAG),
                   "pairs": frozenset(a.name for a in self.attrs if a.pair),
                   "shorts": {a.short: a.name for a in self.attrs if a.short},
                   "by_name": {a.name: a for a in self.attrs}}
        for key, value in derived.items():
            object.__setattr__(self, key, value)
        if self.positional is not None and self.positional not in derived["defaults"]:
            raise ValueError(f"{self.name}: positional attribute {self.positional!r} is not one of its attrs")

    @property
    def user(self) -> bool:
        """May a spec write it as a layer?"""
        return self.kind == LAYER

    def attr(self, name: str) -> Attr:
        return self.by_name[name]

    def resolve(self, written: str) -> str | None:
        """The attribute a keyword names: its own name (lrn's `k`), else a short form (`s=2`)."""
        if written in self.defaults:
            return written
        return self.shorts.get(written)

    def with_defaults(self, **given: Any) -> Attrs:
        """The attributes of a node the compiler inserts: `given` over the defaults, in the
        definition's order (as the lowering gives a layer's)."""
        attrs = {**self.defaults, **given}
        missing = [key for key, value in attrs.items() if value is None]
        unknown = sorted(given.keys() - self.defaults.keys())
        if missing or unknown:
            raise ValueError(f"{self.name}: {missing} required, {unknown} unknown")
        return attrs

    def params(self, attrs: Attrs, ins: list[Shape], out: Shape) -> int:
        return sum(prod(w.shape) for w in self.weights(attrs, ins, out) if w.kind == PARAMETER)
