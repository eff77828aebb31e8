"""resdsl: a compiler for residual networks.

    >>> import resdsl
    >>> net = resdsl.load("specs/resnet50.rds")
    >>> net.params, net.macs
    >>> model = net.to_torch(seed=0)
"""
from .diagnostics import ResdslError
from .network import Network, load, loads

__all__ = ["Network", "ResdslError", "load", "loads"]
__version__ = "0.1.0"
