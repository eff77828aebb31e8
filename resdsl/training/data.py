"""Datasets for `resdsl train`: what each holds, how it hands out batches, and its augmentation.

Every Dataset hands out its images in batches (`Dataset.images`): CIFAR and digits from float32
arrays in memory (cifar.py, sources.py), an image folder decoded from disk as each batch is asked
for (images.py). Images are resized to the spec's input resolution and grayscale is repeated to
three channels where the spec wants three; any other mismatch is an error naming both shapes. A
decoded dataset's bytes are checked before they are allocated (limits.py).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..diagnostics import ResdslError, printable
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
