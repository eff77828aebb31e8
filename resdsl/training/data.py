"""Datasets for `resdsl train`: what each holds, how it is read, and its augmentation.

`--data` names one:
    cifar10, cifar100           downloaded once into a cache and unpacked there (download.py)
    cifar10:DIR, cifar100:DIR   the "python version" batches (data_batch_1..5 / train, test_batch / test)
    folder:DIR                  DIR/train/CLASS/*.png|jpg and DIR/test/CLASS/*: one directory per
                                class (images.py), streamed from disk with load_dataset(stream=True)
    digits                      scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10
                                classes): real images that need no download, for demos and tests
Every Dataset hands out its images in batches (`Dataset.images`): CIFAR and digits from float32
arrays in memory, an image folder decoded from disk as each batch is asked for. Images are
resized to the spec's input resolution and grayscale is repeated to three channels where the
spec wants three; any other mismatch is an error naming both shapes.

A dataset is a file a user did not write (a download, a colleague's folder), so none of it can
run code: CIFAR's pickles go through an unpickler that builds only arrays, lists and numbers, and
images only through Pillow's readers for the suffixes resdsl takes. Every file is read bounded
(files.py), every image's pixels and a decoded dataset's bytes in memory are checked before they
are allocated (limits.py).
"""
from __future__ import annotations

import codecs
import io
import pickle
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..diagnostics import ResdslError, printable
from ..files import DamagedFile, open_bytes
from ..limits import BOUNDS, LIMITS


class Dataset:
    """What `train` reads: labels in memory, images in batches, from memory or from disk.

    name      shown in messages ("cifar10", "folder pets")
    classes   how many; train_y and test_y are int64 labels from 0 to classes - 1
    shape     C x H x W of the images `images` yields
    """
    name: str
    classes: int
    train_y: np.ndarray
    test_y: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        raise NotImplementedError

    def images(self, split: str, batches: Iterable, workers: int = 0) -> Iterator:
        """For each batch of indices (an iterable of 1-D int tensors or arrays) into `split`
        ("train" or "test"), in order: a float32 torch tensor N x C x H x W in [0, 1]. `workers`
        processes decode them where the images are on disk."""
        raise NotImplementedError

    def fitted(self, shape: tuple[int, int, int]) -> Dataset:
        """The dataset at the spec's input (C x H x W); the channels are `fit`'s to check."""
        raise NotImplementedError

    def labels(self, split: str) -> np.ndarray:
        return of_split(split, self.train_y, self.test_y)


def of_split(split: str, train, test):
    if split not in ("train", "test"):
        raise ValueError(f"split {split!r} is neither 'train' nor 'test'")
    return train if split == "train" else test


def index_lists(batches: Iterable) -> Iterator[list[int]]:
    """Each batch of indices as a list of ints, lazily: a DataLoader's batch sampler."""
    import torch
    return (torch.as_tensor(batch).tolist() for batch in batches)


@dataclass(eq=False)
class ArrayDataset(Dataset):
    """A dataset held in memory: every image decoded, as float32 arrays."""
    name: str
    train_x: np.ndarray  # N x C x H x W, float32 in [0, 1]
    train_y: np.ndarray  # N, int64
    test_x: np.ndarray
    test_y: np.ndarray
    classes: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    def images(self, split: str, batches: Iterable, workers: int = 0) -> Iterator:
        import torch
        x = torch.from_numpy(of_split(split, self.train_x, self.test_x))
        return (x[torch.as_tensor(batch, dtype=torch.long)] for batch in batches)

    def fitted(self, shape: tuple[int, int, int]) -> ArrayDataset:
        check_dataset_bytes(len(self.train_y) + len(self.test_y), shape, f"{self.name} at the spec's input",
                            "give the spec a smaller `input`")
        return ArrayDataset(self.name, _resized(self.train_x, shape), self.train_y,
                            _resized(self.test_x, shape), self.test_y, self.classes)


def load_dataset(spec: str, *, stream: bool = False) -> Dataset:
    """The dataset `--data` names. A `folder:` dataset is streamed from disk where `stream`, else
    decoded into memory; `cifar10` and `cifar100` without a directory are downloaded (download.py)."""
    kind, _, where = spec.partition(":")
    if kind == "digits" and not where:
        return _digits()
    if kind in ("cifar10", "cifar100"):
        from .download import cifar_directory
        return _cifar(kind, Path(where).expanduser() if where else cifar_directory(kind))
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


REDOWNLOAD = "download the python version again; it may be damaged"


def _cifar(kind: str, root: Path) -> Dataset:
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


def described(value) -> str:
    """A value from a file, shown briefly: itself where it is a number or short text, else its
    type (a file's int may have a million digits, its text control characters)."""
    if isinstance(value, np.ndarray):
        return printable(f"a {value.dtype.str[:20]} array of {'x'.join(map(str, value.shape[:8]))}")
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 64 else f"a {value.bit_length()}-bit number"
    if isinstance(value, str):
        return printable(repr(value if len(value) <= 40 else value[:40] + "…"))
    return f"a {printable(type(value).__name__)}"


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


def check_dataset_bytes(images: int, shape: tuple[int, ...], what: str, advice: str) -> None:
    """Refuse, before allocating, a decoded dataset larger than RESDSL_MAX_DATASET_BYTES."""
    need, limit = images * int(np.prod(shape, dtype=object)) * 4, LIMITS.max_dataset_bytes
    if need > limit:
        raise ResdslError(
            f"{what}: {images:,} images of {'x'.join(map(str, shape))} take {_gib(need)} as float32, "
            f"more than resdsl holds in memory ({_gib(limit)})",
            hint=f"{advice}, or raise {BOUNDS['max_dataset_bytes'].variable} if you really mean it")


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def fit(data: Dataset, shape: tuple[int, int, int]) -> Dataset:
    """The dataset at the spec's input (C x H x W), grayscale made RGB where asked."""
    c, h, w = shape
    have = data.shape
    if have[0] != c and not (have[0] == 1 and c == 3):
        raise ResdslError(
            f"the spec takes {c}x{h}x{w} inputs, {data.name} has {'x'.join(map(str, have))} images",
            hint="change the spec's `input` channels to the data's",
        )
    return data.fitted(shape)


def _resized(x: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    import torch
    import torch.nn.functional as F
    c, h, w = shape
    t = torch.from_numpy(x)
    if t.shape[2:] != (h, w):
        t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
    if t.shape[1] != c:
        t = t.repeat(1, c, 1, 1)
    return t.numpy()


NORMALIZER_SAMPLE = 1024


def normalizer(data: Dataset, workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of the training images: of all of them where they
    are in memory; of NORMALIZER_SAMPLE evenly spaced ones (the first, the last and equal steps
    between, the same every run) where they are decoded from disk."""
    if isinstance(data, ArrayDataset):
        mean = data.train_x.mean(axis=(0, 2, 3))
        std = data.train_x.std(axis=(0, 2, 3)) + 1e-6
        return mean.astype(np.float32), std.astype(np.float32)
    n = len(data.train_y)
    sample = np.unique(np.linspace(0, n - 1, min(n, NORMALIZER_SAMPLE)).round().astype(np.int64))
    sums, squares, count = 0.0, 0.0, 0
    for x in data.images("train", np.array_split(sample, -(-len(sample) // 128)), workers):
        x = x.double()
        sums, squares = sums + x.sum((0, 2, 3)).numpy(), squares + (x * x).sum((0, 2, 3)).numpy()
        count += x.numel() // x.shape[1]
    mean = sums / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0)) + 1e-6
    return mean.astype(np.float32), std.astype(np.float32)


def crop_flip(n: int, generator, pad: int = 4):
    """The random draws of the paper's CIFAR augmentation for a batch of n images: a shift in each
    direction and whether to flip. Drawn for the whole batch, then sharded, so that processes
    splitting a batch augment each image as one process would."""
    import torch
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    return dy, dx, flip


def augment(x, draws, pad: int = 4):
    """Pad 4 pixels with zeros, crop back at the drawn shift, flip where drawn."""
    import torch
    import torch.nn.functional as F
    dy, dx, flip = draws
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(n, x.shape[1], h, w + 2 * pad)
    cropped = torch.gather(padded, 2, rows)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, x.shape[1], h, w)
    cropped = torch.gather(cropped, 3, cols)
    return torch.where(flip[:, None, None, None], cropped.flip(3), cropped)
