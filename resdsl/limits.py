"""Upper bounds that keep absurd inputs from allocating absurd graphs, tensors or buffers.

Graph bounds are checked while lowering, before anything large exists; file bounds before a
file is read. Each is set by the environment variable named in BOUNDS (e.g.
RESDSL_MAX_BLOCKS=100000) or by assigning to LIMITS (`LIMITS.max_blocks = 10`).

A variable is read when its bound is first used, not at import: a bad value is a user error
naming the variable (exit 1), never a traceback while resdsl is being imported, and never a
silent fall-back to the default.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .diagnostics import ResdslError, Span, printable


@dataclass(frozen=True)
class Bound:
    variable: str
    default: int
    maximum: int  # the largest value a variable may set: past it, a typo (1e9 -> 19) is likelier
    what: str


_GIB = 1 << 30
BOUNDS: dict[str, Bound] = {
    "max_value": Bound("RESDSL_MAX_VALUE", 1 << 20, 1 << 62, "any evaluated integer"),
    "max_channels": Bound("RESDSL_MAX_CHANNELS", 65536, 1 << 24, "channels, groups"),
    "max_kernel": Bound("RESDSL_MAX_KERNEL", 64, 1 << 16, "kernel, stride, padding"),
    "max_resolution": Bound("RESDSL_MAX_RESOLUTION", 8192, 1 << 20, "input resolution, a side"),
    "max_blocks": Bound("RESDSL_MAX_BLOCKS", 20000, 1 << 24, "blocks"),
    "max_spec_bytes": Bound("RESDSL_MAX_SPEC_BYTES", 16 << 20, _GIB, "size of a spec or include"),
    "max_weights_bytes": Bound("RESDSL_MAX_WEIGHTS_BYTES", 4 * _GIB, 1 << 40,
                               "size of a weights file or checkpoint"),
    "max_data_bytes": Bound("RESDSL_MAX_DATA_BYTES", _GIB, 1 << 40, "size of one dataset file"),
    "max_image_pixels": Bound("RESDSL_MAX_IMAGE_PIXELS", 4096 * 4096, 1 << 34,
                              "pixels of one dataset image"),
    "max_dataset_bytes": Bound("RESDSL_MAX_DATASET_BYTES", 8 * _GIB, 1 << 44,
                               "a decoded dataset in memory"),
    "max_download_bytes": Bound("RESDSL_MAX_DOWNLOAD_BYTES", _GIB, 1 << 40,
                                "size of one dataset download (CIFAR's archives are 163 MiB)"),
    "max_record_bytes": Bound("RESDSL_MAX_RECORD_BYTES", 256 << 20, 1 << 40,
                              "size of a tuning database or run file"),
}


def read_bound(bound: Bound) -> int:
    """The bound's value from its environment variable, or its default where the variable is unset."""
    raw = os.environ.get(bound.variable)
    if raw is None:
        return bound.default
    text = raw.strip().replace("_", "")
    # Length first: int() of thousands of digits is slow, and refused past 4300 of them.
    if text.isascii() and text.isdigit() and len(text) <= 20 and 1 <= int(text) <= bound.maximum:
        return int(text)
    shown = printable(repr(raw if len(raw) <= 40 else raw[:40] + "..."))
    raise ResdslError(
        f"environment variable {bound.variable}={shown} is not a whole number "
        f"from 1 to {bound.maximum}",
        hint=f"set {bound.variable} to a positive integer ({bound.what}; default {bound.default}), "
             f"or unset it",
    )


class Limits:
    """The bounds in force. Attributes are BOUNDS' keys; each is read from the environment on
    first use and kept, unless assigned."""

    def __getattr__(self, name: str) -> int:
        bound = BOUNDS.get(name)
        if bound is None:
            raise AttributeError(name)
        value = read_bound(bound)
        setattr(self, name, value)
        return value

    def check_environment(self) -> None:
        """Read every bound now, so a bad variable is reported before any work starts."""
        for name in BOUNDS:
            getattr(self, name)

    def check_value(self, value: int, span: Span | None) -> None:
        if abs(value) > self.max_value:
            raise ResdslError(f"{value} is larger than resdsl allows ({self.max_value})", span,
                              hint="raise RESDSL_MAX_VALUE if you really mean it")

    def check_input(self, shape: tuple[int, int, int], span: Span | None) -> None:
        c, h, w = shape
        if min(shape) < 1:
            raise ResdslError(f"input dimensions must be positive, got {c}x{h}x{w}", span)
        if c > self.max_channels or max(h, w) > self.max_resolution:
            raise ResdslError(f"input {c}x{h}x{w} is larger than resdsl allows "
                              f"({self.max_channels} channels, {self.max_resolution} pixels a side)",
                              span, hint="raise RESDSL_MAX_CHANNELS / RESDSL_MAX_RESOLUTION")

    def check_attr(self, key: str, value: int, span: Span | None) -> None:
        bound = {"out": self.max_channels, "groups": self.max_channels,
                 "kernel": self.max_kernel, "stride": self.max_kernel, "padding": self.max_kernel}.get(key)
        if bound is not None and value > bound:
            env = "RESDSL_MAX_CHANNELS" if key in ("out", "groups") else "RESDSL_MAX_KERNEL"
            raise ResdslError(f"`{key}` = {value} is larger than resdsl allows ({bound})", span,
                              hint=f"raise {env} if you really mean it")

    def check_blocks(self, count: int, span: Span | None) -> None:
        if count > self.max_blocks:
            raise ResdslError(f"the network would have {count} blocks; resdsl allows {self.max_blocks}",
                              span, hint="raise RESDSL_MAX_BLOCKS if you really mean it")


LIMITS = Limits()
