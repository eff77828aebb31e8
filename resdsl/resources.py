"""Where the grammar, the templates and the prelude live.

In a wheel, `grammars/` and `codegen_templates/` are shipped inside the package (see
pyproject.toml); in a source checkout they sit beside it at the top of the repository.
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def cache_root() -> Path:
    """resdsl's directory in the user's cache: $RESDSL_CACHE_DIR, else $XDG_CACHE_HOME/resdsl or
    ~/.cache/resdsl. What an empty RESDSL_CACHE_DIR means is each cache's own choice."""
    import os
    base = os.environ.get("RESDSL_CACHE_DIR")
    return Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "resdsl"


def data_dir(name: str) -> Path:
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise RuntimeError(f"resdsl is installed without its {name}/ directory")


def grammar_path() -> Path:
    return data_dir("grammars") / "resdsl.lark"


def templates_dir() -> Path:
    return data_dir("codegen_templates")


def prelude_path() -> Path:
    return _PACKAGE / "prelude.rds"
