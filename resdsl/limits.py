"""Upper bounds that keep absurd specs from allocating absurd graphs or tensors.

They are checked while lowering, before anything large exists. Change them with the
environment variables named below (e.g. RESDSL_MAX_BLOCKS=100000) or by assigning to LIMITS.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .diagnostics import ResdslError, Span


def _env(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass
class Limits:
    max_value: int = _env("RESDSL_MAX_VALUE", 1 << 20)  # any evaluated integer (widths, counts...)
    max_channels: int = _env("RESDSL_MAX_CHANNELS", 65536)
    max_kernel: int = _env("RESDSL_MAX_KERNEL", 64)
    max_resolution: int = _env("RESDSL_MAX_RESOLUTION", 8192)
    max_blocks: int = _env("RESDSL_MAX_BLOCKS", 20000)

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
