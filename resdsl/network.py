"""The in-memory API: `resdsl.load("x.rds")` or `resdsl.load("resnet50")` gives a checked `Network`."""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from .ir import Graph
from .loader import load_file, load_text
from .lower import HeaderOverrides, lower
from .passes import INFERENCE, PIPELINE, pass_names, run_pipeline
from .stats import summary_json, totals

if TYPE_CHECKING:  # torch stays unimported until a model is asked for
    import torch


class Network:
    """A parsed, lowered and checked network."""

    def __init__(self, graph: Graph, files: list[Path] | None = None,
                 overrides: dict[str, str] | None = None) -> None:
        self.graph = graph
        self.files = files or []  # the spec and its includes: never to be written over
        # what replaced the spec's `let`s and header, as `--set` would write it: {"classes": "10"}
        self.overrides = dict(overrides or {})

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def params(self) -> int:
        return self._totals()[0]

    @property
    def macs(self) -> int:
        return self._totals()[1]

    def _totals(self) -> tuple[int, int]:
        if getattr(self, "_cached_totals", None) is None:
            self._cached_totals = totals(self.graph)
        return self._cached_totals

    def summary(self) -> dict:
        return summary_json(self.graph)

    def torch_source(self) -> str:
        from .backends.torch_codegen import generate
        return generate(self.graph)

    def to_torch(self, seed: int | None = None) -> "torch.nn.Module":
        """Build the generated module in memory (weights initialised with `seed` if given)."""
        from .extras import require
        require("torch", purpose="building a PyTorch module")
        from .backends.torch_codegen import instantiate
        return instantiate(self.graph, seed=seed)

    def __repr__(self) -> str:
        params, macs = totals(self.graph)
        return f"<Network {self.name}: {len(self.graph)} nodes, {params:,} params, {macs / 1e9:.2f} GMACs>"


LOWERED = "lower"  # `until` for the graph as lowering leaves it, before any pass
HEADER_KEYS = ("classes", "input")  # `--set` names that replace the header, not a `let`


def load(path: str | Path, overrides: dict[str, str] | None = None, *, classes: int | None = None,
         input: str | tuple[int, ...] | None = None, num_classes: int | None = None,
         in_chans: int | None = None, until: str | None = None) -> Network:
    """A spec file, or a bundled model's name (`resdsl.list_models()`); a file of that name wins.

    `overrides` replace `let` constants: {"n": "18"} (values are expressions), and, as
    `--set classes=10` / `--set input=1x28x28` do, the header's `classes` and `input`.
    `classes=10` and `input=(1, 28, 28)` (or "1x28x28"; two numbers, or "HxW", keep the spec's
    channels) do the same as keywords; `num_classes=` and `in_chans=` are timm's names (for
    `classes` and the input's channels alone). A head that cannot take the new class count (an
    `fc 1000` rather than `fc classes`) or an input too small for the strides is an error located
    in the spec, with a note naming the override.

    `until` stops the pipeline after the pass of that name (`passes.pass_names()`), or before
    the first with "lower", to look at the graph there (`resdsl ir --after`); a pass of
    `passes.INFERENCE` runs the pipeline and the backends' legalization up to it."""
    from .zoo import resolve
    header = _header(overrides, classes, input, num_classes, in_chans)
    program = load_file(resolve(path))
    graph = _lower_checked(program, overrides, header, until)
    return Network(graph, program.files, _applied(overrides, header))


def loads(text: str, filename: str = "<string>", base_dir: str | Path = ".",
          overrides: dict[str, str] | None = None, *, classes: int | None = None,
          input: str | tuple[int, ...] | None = None, num_classes: int | None = None,
          in_chans: int | None = None) -> Network:
    header = _header(overrides, classes, input, num_classes, in_chans)
    program = load_text(text, filename, base_dir)
    return Network(_lower_checked(program, overrides, header), overrides=_applied(overrides, header))


def _applied(overrides: dict[str, str] | None, header: HeaderOverrides) -> dict[str, str]:
    """The `let` overrides as given, and the header's new `classes` / `input` (as CxHxW)."""
    return {**{k: str(v) for k, v in (overrides or {}).items() if k not in HEADER_KEYS}, **header.applied}


def _header(overrides, classes, input, num_classes, in_chans) -> HeaderOverrides:
    from .diagnostics import ResdslError
    if classes is not None and num_classes is not None:
        raise ResdslError("`classes=` and `num_classes=` are one setting: give one of them")
    if num_classes is not None:
        classes, how_classes = num_classes, f"num_classes={num_classes}"
    else:
        how_classes = f"classes={classes}"
    header = HeaderOverrides(in_chans=in_chans, how={"in_chans": f"in_chans={in_chans}"})
    for key, keyword, how in (("classes", classes, how_classes), ("input", input, f"input={input}")):
        given = (overrides or {}).get(key)
        if given is not None and keyword is not None:
            raise ResdslError(f"`{key}` is given twice: `--set {key}={given}` and `{how}`",
                              hint="give one of them")
        if keyword is not None:
            setattr(header, key, keyword)
            header.how[key] = how
        elif given is not None:
            setattr(header, key, given)
            header.how[key] = f"--set {key}={given}"
    return header


def _lower_checked(program, overrides: dict[str, str] | None, header: HeaderOverrides,
                   until: str | None = None) -> Graph:
    """Lower and check `program`; an error after the header was overridden gets a note saying what
    replaced it (the spec alone may be fine)."""
    from .diagnostics import ResdslError
    lets = {k: v for k, v in (overrides or {}).items() if k not in HEADER_KEYS}
    try:
        graph = lower(program, _parse_overrides(lets), header)
        if until == LOWERED:
            return graph
        inference = until is not None and until in pass_names(INFERENCE)
        return run_pipeline(graph, until=until, passes=PIPELINE + INFERENCE if inference else PIPELINE)
    except ResdslError as exc:
        if not header.notes:
            raise
        d = exc.diagnostic
        message = str(exc)
        fixed = _FIXED_HEAD.match(message)
        if fixed and header.classes is not None:  # the head hardcodes its class count
            message = (f"`{header.how['classes']}`: the head cannot take {fixed[2]} classes: it outputs "
                       f"{fixed[1]} values per image whatever `classes` says")
        raise type(exc)(message, d.span, d.hint, d.notes + header.notes) from None


_FIXED_HEAD = re.compile(r"the network outputs (\d+) values per image, but declares `classes (\d+)`")


def _parse_overrides(overrides: dict[str, str] | None):
    from .parser import parse_expr
    return {name: parse_expr(str(value), f"--set {name}") for name, value in (overrides or {}).items()}
