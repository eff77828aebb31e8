"""The datasets `--data` names, read as a user did not write them (none can run code):
    cifar10, cifar100           downloaded once into a cache and unpacked there (download.py)
    cifar10:DIR, cifar100:DIR   the "python version" batches (cifar.py)
    folder:DIR                  DIR/train/CLASS/*.png|jpg and DIR/test/CLASS/*: one directory per
                                class (images.py), streamed from disk with load_dataset(stream=True)
    digits                      scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10
                                classes): real images that need no download, for demos and tests
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..diagnostics import ResdslError, printable
from .data import ArrayDataset, Dataset


def load_dataset(spec: str, *, stream: bool = False) -> Dataset:
    """The dataset `--data` names. A `folder:` dataset is streamed from disk where `stream`, else
    decoded into memory; `cifar10` and `cifar100` without a directory are downloaded (download.py)."""
    kind, _, where = spec.partition(":")
    if kind == "digits" and not where:
        return _digits()
    if kind in ("cifar10", "cifar100"):
        from .cifar import load_cifar
        from .download import cifar_directory
        return load_cifar(kind, Path(where).expanduser() if where else cifar_directory(kind))
    if kind == "folder" and where:
        from .images import load_folder
        return load_folder(Path(where).expanduser(), stream)
    raise ResdslError(f"unknown data `{printable(spec)}`",
                      hint="use cifar10 or cifar100 (downloaded), cifar10:DIR or cifar100:DIR (the "
                           "python-version batches), folder:DIR or digits")


def _digits() -> Dataset:
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None]  # N x 1 x 8 x 8
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))  # a fixed split: 1,437 train, 360 test
    train, test = order[:1437], order[1437:]
    return ArrayDataset("digits", x[train], y[train], x[test], y[test], 10)
