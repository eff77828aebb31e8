"""How a graph becomes Relax: layout, Winograd, prepacked weights.

Tuning records only apply to kernels lowered the same way, so a work directory remembers its
lowering (`WorkDir.lowering`) and every later build from it reuses it. A work directory stores a
lowering, so `workdir` imports this module and never the reverse: here one is anything with a
`path` and a `lowering()`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Protocol

from ..diagnostics import OptionError, printable


PRECISIONS = ("fp32", "bf16")


class LoweringSource(Protocol):
    """What `resolve` reads of a `workdir.WorkDir`."""
    path: Path

    def lowering(self) -> Lowering | None: ...


@dataclass(frozen=True)
class Lowering:
    layout: str = "NCHW"
    winograd: bool = False
    # Weights stored in the order each tuned kernel reads them (MetaSchedule's RewriteLayout).
    prepack: bool = False
    # With `winograd`, also the 3x3 convs of up to 256x256 channels, as F(2x2, 3x3).
    wide_winograd: bool = False
    # "bf16": the direct convs multiply bf16 weights and activations into fp32 sums (`bf16.py`).
    precision: str = "fp32"

    @classmethod
    def default(cls, target_kind: str) -> "Lowering":
        # Tuned CPU convs vectorise over channels, and NHWC, prepacked weights and Winograd on
        # the narrow 3x3 convs each won in measured comparisons (benchmarks/RESULTS.md, "Lowering").
        # On CUDA the untuned dlight schedules are written for NCHW.
        return cls("NHWC", winograd=True, prepack=True) if target_kind == "llvm" else cls()

    @classmethod
    def resolve(cls, target_kind: str, layout: str | None = None, winograd: bool | None = None,
                work_dir: LoweringSource | None = None, prepack: bool | None = None,
                wide_winograd: bool | None = None, seeds: Iterable[LoweringSource] = (),
                precision: str | None = None) -> "Lowering":
        """Options given (not None), else the work directory's, else that of the first
        directory it is seeded from, else the target's default."""
        saved = work_dir.lowering() if work_dir is not None else None
        base = saved or cls.seeded(target_kind, seeds) or cls.default(target_kind)
        layout = layout.upper() if layout else base.layout
        if winograd is None:
            winograd = base.winograd and layout == "NHWC"
        if prepack is None:
            prepack = base.prepack and target_kind == "llvm"
        if wide_winograd is None:
            wide_winograd = base.wide_winograd and winograd
        precision = precision.lower() if precision else base.precision
        lowering = cls(layout, winograd, prepack, wide_winograd, precision)
        if precision not in PRECISIONS:
            raise OptionError(f"unknown precision `{printable(precision)}`", ("precision",),
                              hint=f"use one of {', '.join(PRECISIONS)}")
        if precision == "bf16" and (target_kind != "llvm" or layout != "NHWC"):
            raise OptionError("bf16 convs are for CPU (llvm) targets in the NHWC layout",
                              ("precision", "layout"),
                              hint="build in fp32, or for llvm with the NHWC layout")
        if lowering.winograd and lowering.layout != "NHWC":
            raise OptionError("Winograd convs need the NHWC layout", ("winograd", "layout"),
                              hint="lower to NHWC, or without Winograd")
        if lowering.wide_winograd and not lowering.winograd:
            raise OptionError("wide Winograd extends Winograd to wider convs", ("wide_winograd", "winograd"),
                              hint="turn Winograd on, or wide Winograd off")
        for option, on in (("winograd", lowering.winograd), ("prepack", lowering.prepack)):
            if on and target_kind != "llvm":
                raise OptionError(f"{option} is for CPU (llvm) targets only", (option,),
                                  hint=f"turn {option} off for this target")
        if saved is not None and saved != lowering:
            raise OptionError(f"{work_dir.path} was tuned with {saved.describe()}, not {lowering.describe()}",
                              ("layout", "winograd", "wide_winograd", "prepack", "precision"),
                              hint="leave the lowering options unset to use the work directory's, "
                                   "or tune into a new one")
        return lowering

    @classmethod
    def seeded(cls, target_kind: str, seeds: Iterable[LoweringSource]) -> "Lowering | None":
        """The lowering of the first seed that has one: its records only apply to kernels lowered
        the same way, so a directory seeded from a Winograd one and lowered without it would
        tune those kernels from nothing. None where it does not suit this target."""
        lowering = next((s for s in (seed.lowering() for seed in seeds) if s is not None), None)
        if lowering is not None and target_kind != "llvm" and (lowering.winograd or lowering.prepack):
            return None  # a CPU directory seeding a CUDA one: only its NCHW direct kernels could match
        return lowering

    def to_json(self) -> str:
        return json.dumps(asdict(self)) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Lowering":
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: object) -> "Lowering":
        """A lowering as `to_json` writes it; a field left out (a directory from before it
        existed) takes its default. ValueError says what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("a lowering is an object of layout, winograd, prepack, wide_winograd "
                             "and precision")
        known = {f.name: f for f in fields(cls)}
        for key, value in data.items():
            if key not in known:
                raise ValueError(f"{printable(repr(key)[:40])} is not a lowering option")
            if key == "layout" and value not in ("NCHW", "NHWC"):
                raise ValueError('its layout is neither "NCHW" nor "NHWC"')
            if key == "precision" and value not in PRECISIONS:
                raise ValueError(f"its precision is not one of {', '.join(PRECISIONS)}")
            if key not in ("layout", "precision") and not isinstance(value, bool):
                raise ValueError(f"its {key} is not true or false")
        return cls(**data)

    def options(self, target_kind: str = "llvm") -> dict[str, object]:
        """The options (`layout`, `winograd`, ...) that differ from the target's default."""
        default = self.default(target_kind)
        return {k: v for k, v in asdict(self).items() if asdict(default)[k] != v}

    def describe(self) -> str:
        winograd = " with Winograd 3x3 convs" + (
            " up to 256 channels" if self.wide_winograd else " up to 128 channels"
        )
        return (f"layout {self.layout}" + (winograd if self.winograd else "")
                + (" and prepacked weights" if self.prepack else "")
                + (", direct convs in bf16" if self.precision == "bf16" else ""))
