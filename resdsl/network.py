"""The in-memory API: `resdsl.load("x.rds")` or `resdsl.load("resnet50")` gives a checked `Network`."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .ir import Graph
from .loader import load_file, load_text
from .lower import lower
from .passes import run_pipeline
from .stats import summary_json, totals

if TYPE_CHECKING:  # torch stays unimported until a model is asked for
    import torch


class Network:
    """A parsed, lowered and checked network."""

    def __init__(self, graph: Graph, files: list[Path] | None = None) -> None:
        self.graph = graph
        self.files = files or []  # the spec and its includes: never to be written over

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


def load(path: str | Path, overrides: dict[str, str] | None = None) -> Network:
    """A spec file, or a bundled model's name (`resdsl.list_models()`); a file of that name wins.
    `overrides` replace `let` constants: {"n": "18"} (values are expressions)."""
    from .zoo import resolve
    program = load_file(resolve(path))
    return Network(run_pipeline(lower(program, _parse_overrides(overrides))), program.files)


def loads(text: str, filename: str = "<string>", base_dir: str | Path = ".",
          overrides: dict[str, str] | None = None) -> Network:
    return Network(run_pipeline(lower(load_text(text, filename, base_dir), _parse_overrides(overrides))))


def _parse_overrides(overrides: dict[str, str] | None):
    from .parser import parse_expr
    return {name: parse_expr(str(value), f"--set {name}") for name, value in (overrides or {}).items()}
