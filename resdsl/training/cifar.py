"""CIFAR-10/100's "python version" batches, read as files a user did not write: the pickles go
through an unpickler that builds only arrays, lists and numbers (any other global is refused by
name, before anything is called), every file is read bounded (files.py), and the decoded bytes
are checked before they are allocated (limits.py).
"""
from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path

import numpy as np

from ..diagnostics import ResdslError, printable
from ..files import DamagedFile, open_bytes
from .data import ArrayDataset, Dataset, check_dataset_bytes, described

REDOWNLOAD = "download the python version again; it may be damaged"


def load_cifar(kind: str, root: Path) -> Dataset:
    if not root.is_dir():
        raise ResdslError(f"{printable(str(root))} is not a directory",
                          hint=f"give the directory of the extracted {kind} python batches")
    if kind == "cifar10":
        train_files, test_files, key, classes = (
            [f"data_batch_{i}" for i in range(1, 6)],
            ["test_batch"],
            "labels",
            10,
        )
    else:
        train_files, test_files, key, classes = ["train"], ["test"], "fine_labels", 100
    train_x, train_y = _batches(root, train_files, key, classes, kind)
    test_x, test_y = _batches(root, test_files, key, classes, kind)
    check_dataset_bytes(len(train_y) + len(test_y), (3, 32, 32), f"{kind} in {printable(str(root))}",
                        "train on fewer batches")
    return ArrayDataset(kind, train_x.astype(np.float32) / 255.0, train_y, test_x.astype(np.float32) / 255.0,
                   test_y, classes)


def _batches(root: Path, names: list[str], key: str, classes: int,
             kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The batches' images (uint8, N x 3 x 32 x 32) and labels, each batch checked for shape."""
    xs, ys = [], []
    for name in names:
        path = root / name
        fields = _batch_fields(path, _unpickle(path))
        for field in ("data", key):
            if field not in fields:
                raise DamagedFile(path, f"has no `{field}`", hint=f"is this the python version of {kind}?")
        data = fields["data"]
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape[1:] == (3072,)):
            raise DamagedFile(path, f"`data` is {described(data)}, not N x 3072 bytes (N images of 3x32x32)",
                              hint=REDOWNLOAD)
        labels = _labels(path, key, fields[key], classes, kind)
        if len(data) != len(labels):
            raise DamagedFile(path, f"has {len(data)} images but {len(labels)} labels", hint=REDOWNLOAD)
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    return np.concatenate(xs), np.concatenate(ys)


def _unpickle(path: Path):
    stream = open_bytes(path, "max_data_bytes", what="CIFAR batch",
                        missing_hint="extract the whole python-version archive there")
    try:
        return _BatchUnpickler(stream, path).load()
    except ResdslError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged pickle raises nearly any type; none may crash
        raise ResdslError(f"{printable(str(path))} is not a CIFAR python batch ({type(exc).__name__})",
                          hint=REDOWNLOAD) from None


def _batch_fields(path: Path, batch) -> dict:
    """The batch's dict, keyed by text: Python 2 wrote its keys as bytes, a re-saved batch may not."""
    if not isinstance(batch, dict):
        raise DamagedFile(path, f"holds {described(batch)}, not a CIFAR batch's dict", hint=REDOWNLOAD)
    return {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _labels(path: Path, key: str, value, classes: int, kind: str) -> np.ndarray:
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "iu":
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise DamagedFile(path, f"`{key}` is {described(value)}, not a list of classes", hint=REDOWNLOAD)
    for i, label in enumerate(value):
        # Checked here, as Python ints: numpy would overflow at 2**63 rather than say which label.
        label = int(label) if isinstance(label, np.integer) else label
        if type(label) is not int or not 0 <= label < classes:
            raise DamagedFile(path, f"label {i} is {described(label)}, not a class from 0 to {classes - 1}",
                              hint=f"is this {kind}, not another dataset?")
    return np.asarray(value, dtype=np.int64)


def _latin1(text, encoding="latin1"):
    """_codecs.encode as Python 3 pickles bytes at protocol 2, and only that: latin-1 text."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode of anything but latin-1 text")
    return codecs.encode(text, "latin-1")


# Stands for numpy.ndarray inside a batch: _reconstruct takes it, nothing can call it. Handing
# out ndarray itself would let a pickle allocate an array of any shape.
_NDARRAY = object()


def _reconstruct(subtype, shape, dtype):
    """numpy's _reconstruct, of an empty ndarray only: its data comes with the state, bounded by
    the file."""
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError("_reconstruct of something other than numpy.ndarray")
    return _NUMPY_RECONSTRUCT(np.ndarray, (0,), dtype)


_NUMPY_RECONSTRUCT = np.ndarray(0).__reduce__()[0]


def _cifar_globals() -> dict[tuple[str, str], object]:
    """What a real CIFAR batch names (numpy's array and dtype reconstruction), plus what numpy and
    Python 3 write when a batch is saved again; nothing that acts on the world."""
    frombuffer = np.ndarray(0).__reduce_ex__(5)[0]  # numpy's own, wherever this numpy keeps it
    scalar = np.int64(0).__reduce__()[0]
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1}
    for package in ("numpy.core", "numpy._core"):  # numpy 1 wrote the first, numpy 2 the second
        allowed[(f"{package}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = frombuffer
    return allowed


_CIFAR_GLOBALS = _cifar_globals()


class _BatchUnpickler(pickle.Unpickler):
    """pickle.load for CIFAR batches: a batch that names any other global is refused, by name,
    before anything is called. Python 2 strings come back as bytes, as CIFAR's own reader asks."""

    def __init__(self, stream: io.BytesIO, path: Path) -> None:
        super().__init__(stream, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str):
        found = _CIFAR_GLOBALS.get((module, name))
        if found is None:
            wanted = f"{module}.{name}"
            wanted = wanted if len(wanted) <= 80 else wanted[:79] + "…"
            raise ResdslError(
                f"{printable(str(self.path))} asks to run `{printable(wanted)}`; a CIFAR batch holds "
                f"only arrays, lists and numbers",
                hint="this is not a CIFAR batch (it may be made to run code): delete it, and download "
                     "the python version from the CIFAR page")
        return found
