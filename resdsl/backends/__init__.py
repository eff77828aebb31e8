"""Backends: one module per target, each a converter table keyed by op name."""
