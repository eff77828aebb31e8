"""`--set classes=N`, `--set input=CxHxW` and the API's `classes=`, `input=`, `in_chans=`: a
network's header replaced before lowering, each value checked where the line it replaces is."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import ast
from .diagnostics import ResdslError, Span
from .labels import written as _written
from .limits import LIMITS


@dataclass
class HeaderOverrides:
    """`--set classes=N` / `--set input=CxHxW` (or `HxW`, keeping the channels), and the API's
    `classes=`, `input=`, `in_chans=`: values as given (strings or ints, a tuple for `input`),
    checked against the spec so that a bad one is an error at the header line it replaces.
    `how` names each as the user wrote it (`--set classes=10`, `classes=10`), for messages."""

    classes: object = None
    input: object = None
    in_chans: object = None
    how: dict[str, str] = field(default_factory=dict)
    notes: tuple[tuple[str, Span | None], ...] = ()  # set by `apply`: what was replaced, and where
    applied: dict[str, str] = field(default_factory=dict)  # set by `apply`: {"classes": "10", "input": "1x28x28"}

    def empty(self) -> bool:
        return self.classes is None and self.input is None and self.in_chans is None

    def _flag(self, key: str, value: object) -> str:
        return self.how.get(key, f"--set {key}={value}")

    def apply(self, net: ast.Network) -> None:
        """Replace `net`'s header in place (the network is the loaded program's own copy)."""
        notes = []
        if self.classes is not None:
            flag = self._flag("classes", self.classes)
            if net.classes is None:
                raise ResdslError(f"`{flag}`: network `{net.name}` has no class vector to resize: it returns "
                                  "its `outputs` (a backbone)", net.outputs_span or net.span,
                                  hint="`classes` applies to a network whose head ends in `fc classes`")
            span = net.classes.span
            classes = _positive(self.classes)
            if classes is None:
                raise ResdslError(f"`{flag}`: the number of classes must be a positive whole number", span,
                                  hint="e.g. --set classes=10 (it replaces this `classes` line)")
            notes.append((f"`{flag}` replaced the spec's `classes {_written(span) or '...'}`", span))
            net.classes = ast.Int(classes, span)
            self.applied["classes"] = str(classes)
        if self.input is not None or self.in_chans is not None:
            span = net.input_span or net.span
            old = net.input
            shape = old
            if self.input is not None:
                shape = _input_shape(self.input, old, self._flag("input", self.input), span)
            if self.in_chans is not None:
                flag = self._flag("in_chans", self.in_chans)
                channels = _positive(self.in_chans)
                if channels is None:
                    raise ResdslError(f"`{flag}`: the number of input channels must be a positive whole number",
                                      span, hint="e.g. in_chans=1 for grayscale images")
                if shape is None:
                    raise ResdslError(f"`{flag}`: network `{net.name}` has no input shape to change", net.span,
                                      hint="give the whole shape instead: input=(3, 224, 224)")
                shape = (channels, shape[1], shape[2])
            LIMITS.check_input(shape, span)
            what = "x".join(map(str, old)) if old else "none"
            flags = " and ".join(self._flag(k, v) for k, v in (("input", self.input), ("in_chans", self.in_chans))
                                 if v is not None)
            shown = "x".join(map(str, shape))
            notes.append((f"`{flags}` replaced the spec's `input {what}` with {shown}", span))
            net.input = shape
            self.applied["input"] = shown
        self.notes = tuple(notes)


_SHAPE = re.compile(r"\s*(\d+)\s*[xX]\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?")


def _positive(value: object) -> int | None:
    """`value` as a positive int (an int, or a string of digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 1 else None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        number = int(value.strip())
        return number if number >= 1 else None
    return None


def _input_shape(value: object, old: tuple[int, int, int] | None, flag: str, span: Span) -> tuple[int, int, int]:
    """`CxHxW`, or `HxW` keeping the spec's channels; a tuple or list of 3 (or 2) ints likewise."""
    if isinstance(value, str):
        match = _SHAPE.fullmatch(value)
        parts = [g for g in match.groups() if g is not None] if match else None
    elif isinstance(value, (tuple, list)):
        parts = list(value)
    else:
        parts = None
    numbers = [_positive(p) for p in parts] if parts is not None and len(parts) in (2, 3) else None
    if numbers is None or None in numbers:
        raise ResdslError(f"`{flag}`: expected CxHxW (channels x height x width) or HxW (keeping the channels), "
                          "each a positive whole number", span,
                          hint="e.g. --set input=1x28x28, or --set input=32x32 (it replaces this `input` line)")
    if len(numbers) == 2:
        if old is None:
            raise ResdslError(f"`{flag}` gives no channels, and the spec has no input shape to keep them from",
                              span, hint="give the whole shape: CxHxW")
        return (old[0], numbers[0], numbers[1])
    return (numbers[0], numbers[1], numbers[2])


Number = int | float
