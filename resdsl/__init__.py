"""resdsl: a compiler for residual networks.

    >>> import resdsl
    >>> net = resdsl.load("resnet50")           # a bundled model, or any .rds file
    >>> resdsl.list_models("resnet*")
    >>> net.params, net.macs
    >>> model = net.to_torch(seed=0)
"""
from .diagnostics import ResdslError
from .network import Network, load, loads
from .zoo import list_models

__all__ = ["Network", "ResdslError", "list_models", "load", "loads"]
__version__ = "0.1.0"
