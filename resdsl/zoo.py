"""The bundled models, by name: `resdsl check resnet50`, `resdsl.load("resnet50")`, `resdsl list`.

A model's name is its spec's file stem (specs/resnet50.rds, specs/cifar/resnet20.rds), so the name
a user types is the file they would open. In a source checkout the specs are read from the top-level
specs/ folder; a wheel ships them inside the package (pyproject.toml), found by `data_dir`.
"""
from __future__ import annotations

import difflib
import fnmatch
import json
import os
from pathlib import Path

from .diagnostics import ResdslError, printable
from .resources import data_dir

# specs/bad holds the error corpus: specs that fail on purpose, not models.
_MODEL_GLOBS = ("*.rds", "cifar/*.rds")


def specs_root() -> Path:
    return data_dir("specs")


def bundled() -> dict[str, Path]:
    """name -> spec file, sorted by name."""
    try:
        root = specs_root()
    except RuntimeError:
        return {}
    found: dict[str, Path] = {}
    for pattern in _MODEL_GLOBS:
        for path in root.glob(pattern):
            if path.stem in found:  # one name must mean one file; a test keeps the stems unique
                raise RuntimeError(f"two bundled specs are named {path.stem}: {found[path.stem]} and {path}")
            found[path.stem] = path
    return dict(sorted(found.items()))


def list_models(pattern: str = "*") -> list[str]:
    """Bundled model names matching a shell-style pattern, as timm's list_models("resnet*")."""
    return [name for name in bundled() if fnmatch.fnmatchcase(name, pattern)]


def resolve(spec: str | os.PathLike) -> Path:
    """A spec file, or the bundled model of that name. A file that exists always wins, so a local
    resnet50 (a file or a directory, whose error is the file reader's) shadows the bundled one."""
    path = Path(spec)
    if path.exists() or path.is_symlink():
        return path
    text = str(spec)
    models = bundled()
    if text in models:
        from .loader import display_path  # messages name the file as short as the user could type it
        return Path(display_path(models[text]))
    if _looks_like_a_path(text):  # the reader's own "file not found", with its hint
        return path
    close = _close_names(text, list(models))
    hint = (f"did you mean {' or '.join(close)}? " if close else "") + "`resdsl list` shows the bundled models"
    raise ResdslError(f"no file {printable(text)}, and no bundled model of that name", hint=hint)


# Letters read as digits (resnet5O, resnet1B), so the model meant ranks first among the near ones.
_LOOKALIKE = str.maketrans("oOlIiB", "001118")


def _close_names(text: str, names: list[str]) -> list[str]:
    folded = {name.translate(_LOOKALIKE): name for name in names}
    close = difflib.get_close_matches(text.lower().translate(_LOOKALIKE), list(folded), n=3, cutoff=0.6)
    return [folded[name] for name in close]


def _looks_like_a_path(text: str) -> bool:
    return os.sep in text or (os.altsep or os.sep) in text or text.endswith(".rds") or not text


# Fixture names in specs/peers.json say the library first (tests/peers/README.md).
_LIBRARIES = {"timm": "timm", "tv": "torchvision"}


def peers() -> dict[str, str]:
    """name -> the library models it reproduces ("timm resnet18, torchvision resnet18"), from
    specs/peers.json: fixture name -> spec path, each checked against the real library's module
    by tests/test_peers.py."""
    try:
        data = json.loads((specs_root() / "peers.json").read_text(encoding="utf-8"))
    except (OSError, RuntimeError, ValueError):
        return {}
    found: dict[str, list[str]] = {}
    for fixture, spec in data.items() if isinstance(data, dict) else ():
        library, _, model = fixture.partition("_")
        if isinstance(spec, str) and library in _LIBRARIES and model:
            found.setdefault(Path(spec).stem, []).append(f"{_LIBRARIES[library]} {model}")
    return {name: ", ".join(sorted(models)) for name, models in found.items()}
