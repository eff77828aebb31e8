"""Datasets for `resdsl train`, as uint8-free float tensors in memory, and their augmentation.

`--data` names one:
    cifar10:DIR, cifar100:DIR   the "python version" batches (data_batch_1..5 / train, test_batch / test)
    folder:DIR                  DIR/train/CLASS/*.png|jpg and DIR/test/CLASS/*: one directory per class
    digits                      scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10
                                classes): real images that need no download, for demos and tests
Images are resized to the spec's input resolution and grayscale is repeated to three channels
where the spec wants three; any other mismatch is an error naming both shapes.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..diagnostics import ResdslError, printable


@dataclass
class Dataset:
    name: str
    train_x: np.ndarray  # N x C x H x W, float32 in [0, 1]
    train_y: np.ndarray  # N, int64
    test_x: np.ndarray
    test_y: np.ndarray
    classes: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]


def load_dataset(spec: str) -> Dataset:
    kind, _, where = spec.partition(":")
    if kind == "digits" and not where:
        return _digits()
    if kind in ("cifar10", "cifar100") and where:
        return _cifar(kind, Path(where).expanduser())
    if kind == "folder" and where:
        return _folder(Path(where).expanduser())
    raise ResdslError(f"unknown data `{printable(spec)}`",
                      hint="use cifar10:DIR, cifar100:DIR (the python-version batches), folder:DIR or digits")


def _digits() -> Dataset:
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None]  # N x 1 x 8 x 8
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))  # a fixed split: 1,437 train, 360 test
    train, test = order[:1437], order[1437:]
    return Dataset("digits", x[train], y[train], x[test], y[test], 10)


def _cifar(kind: str, root: Path) -> Dataset:
    if not root.is_dir():
        raise ResdslError(f"{printable(str(root))} is not a directory",
                          hint=f"give the directory of the extracted {kind} python batches")
    if kind == "cifar10":
        train_files, test_files, key, classes = (
            [f"data_batch_{i}" for i in range(1, 6)],
            ["test_batch"],
            b"labels",
            10,
        )
    else:
        train_files, test_files, key, classes = ["train"], ["test"], b"fine_labels", 100
    train_x, train_y = _batches(root, train_files, key)
    test_x, test_y = _batches(root, test_files, key)
    for labels in (train_y, test_y):
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            raise ResdslError(f"{printable(str(root))}: labels outside 0..{classes - 1}",
                              hint=f"is this {kind}, not another dataset?")
    return Dataset(kind, train_x, train_y, test_x, test_y, classes)


def _batches(root: Path, names: list[str], key: bytes) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for name in names:
        path = root / name
        shown = printable(str(path))
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")  # noqa: S301 - the dataset's own format
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(batch[key], dtype=np.int64)
        except FileNotFoundError:
            raise ResdslError(
                f"missing {shown}", hint="extract the whole python-version archive there"
            ) from None
        except (
            OSError,
            pickle.UnpicklingError,
            EOFError,
            KeyError,
            ValueError,
            TypeError,
            AttributeError,
            IndexError,
        ) as exc:
            raise ResdslError(
                f"{shown} is not a CIFAR python batch ({type(exc).__name__})",
                hint="download the python version again; it may be damaged",
            ) from None
        if len(data) != len(labels):
            raise ResdslError(f"{shown} has {len(data)} images but {len(labels)} labels",
                              hint="the file is damaged")
        xs.append(data.astype(np.float32) / 255.0)
        ys.append(labels)
    return np.concatenate(xs), np.concatenate(ys)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def _folder(root: Path) -> Dataset:
    """DIR/train/CLASS/* and DIR/test/CLASS/*; classes are the train directory's subdirectories,
    sorted; every image is read as RGB at the first image's size."""
    from PIL import Image, UnidentifiedImageError
    shown = printable(str(root))
    train_dir, test_dir = root / "train", root / "test"
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise ResdslError(f"{shown} has no train/ and test/ directories",
                          hint="lay it out as DIR/train/CLASS/IMAGE and DIR/test/CLASS/IMAGE")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise ResdslError(f"{printable(str(train_dir))} needs a directory per class, at least two",
                          hint="lay it out as DIR/train/CLASS/IMAGE")
    size: tuple[int, int] | None = None

    def read(split: Path) -> tuple[np.ndarray, np.ndarray]:
        nonlocal size
        xs, ys = [], []
        for label, name in enumerate(classes):
            folder = split / name
            files = (
                sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                if folder.is_dir()
                else []
            )
            for path in files:
                try:
                    with Image.open(path) as image:
                        image = image.convert("RGB")
                        size = size or image.size
                        xs.append(np.asarray(image.resize(size), dtype=np.float32).transpose(2, 0, 1) / 255.0)
                except (OSError, UnidentifiedImageError):
                    raise ResdslError(f"{printable(str(path))} is not an image resdsl can read",
                                      hint="remove it, or convert it to PNG") from None
                ys.append(label)
        if not xs:
            raise ResdslError(f"{printable(str(split))} holds no images ({', '.join(IMAGE_SUFFIXES)})",
                              hint="put each class's images in its own directory")
        return np.stack(xs), np.asarray(ys, dtype=np.int64)
    train_x, train_y = read(train_dir)
    test_x, test_y = read(test_dir)
    return Dataset(f"folder {root.name}", train_x, train_y, test_x, test_y, len(classes))


def fit(data: Dataset, shape: tuple[int, int, int]) -> Dataset:
    """The dataset resized to the spec's input (C x H x W), grayscale made RGB where asked."""
    c, h, w = shape
    have = data.shape
    if have[0] != c and not (have[0] == 1 and c == 3):
        raise ResdslError(
            f"the spec takes {c}x{h}x{w} inputs, {data.name} has {'x'.join(map(str, have))} images",
            hint="change the spec's `input` channels to the data's",
        )

    def resize(x: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F
        t = torch.from_numpy(x)
        if t.shape[2:] != (h, w):
            t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
        if t.shape[1] != c:
            t = t.repeat(1, c, 1, 1)
        return t.numpy()

    return Dataset(
        data.name, resize(data.train_x), data.train_y, resize(data.test_x), data.test_y, data.classes
    )


def normalizer(data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of the training images."""
    mean = data.train_x.mean(axis=(0, 2, 3))
    std = data.train_x.std(axis=(0, 2, 3)) + 1e-6
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
