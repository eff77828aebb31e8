"""The optional parts of resdsl, and the one error a command gives when its part is missing.

A plain `pip install resdsl` checks, summarises and writes PyTorch source; the rest come as extras
(pyproject.toml). A missing module would otherwise surface as an ImportError traceback that blames
resdsl, so each command asks here first, before anything heavy is imported.
"""
from __future__ import annotations

import importlib.util

from .diagnostics import ResdslError

# The module each distribution installs under: what find_spec must see.
EXTRAS = {
    "torch": ("torch",),
    "onnx": ("torch", "onnx", "onnxruntime"),
    "openvino": ("torch", "onnx", "openvino"),
    "tvm": ("torch", "tvm"),
    "train": ("torch", "sklearn", "matplotlib", "PIL", "tensorboardX"),
}


def missing(*modules: str) -> list[str]:
    out = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent that fails to import, or a module set to None
            found = False
        if not found:
            out.append(module)
    return out


def install_line(extra: str) -> str:
    return f"pip install 'resdsl[{extra}]'"


def require(extra: str, *modules: str, purpose: str) -> None:
    """Raise the user error naming `extra` unless every module (default: the extra's own) imports.

    find_spec, not import: tvm and torch take seconds to import, and the command imports them next."""
    absent = missing(*(modules or EXTRAS[extra]))
    if absent:
        raise ResdslError(f"{purpose} needs {', '.join(absent)}, which {'is' if len(absent) == 1 else 'are'} "
                          f"not installed", hint=install_line(extra))
