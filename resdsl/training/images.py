"""Image folders (`--data folder:DIR`): listed, decoded under resdsl's bounds, streamed from disk.

DIR/train/CLASS/* and DIR/test/CLASS/*, one directory per class: the classes are train/'s
subdirectories, sorted, and an image's label is its directory's place among them.

An image is a file a user did not write, so each is read bounded (files.py), only through Pillow's
readers for the suffixes resdsl takes, and refused by its header when it claims more pixels than
RESDSL_MAX_IMAGE_PIXELS, before anything is decoded.

A FolderDataset holds file names and labels, not pixels: `images` decodes each batch when it is
asked for, at the size `fit` set, in worker processes (torch's DataLoader, the batches as its batch
sampler, so they come back in order and the same whatever the number of workers). Memory is
bounded by batch x workers x prefetch (2 batches a worker), not by the dataset, so the decoded
dataset's bound (RESDSL_MAX_DATASET_BYTES) does not apply; `in_memory` decodes it all, under it.
"""
from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..diagnostics import ResdslError, printable
from ..files import read_bytes
from ..limits import BOUNDS, LIMITS
from .data import ArrayDataset, Dataset, check_dataset_bytes, index_lists, of_split

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# Pillow's readers for those suffixes and no others: a file is identified by its bytes, not its
# name, and some readers run programs (EPS starts Ghostscript). JPEG's also reads MPO.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")


def load_folder(root: Path, stream: bool) -> Dataset:
    """DIR/train/CLASS/* and DIR/test/CLASS/*, at the first image's size until `fit` sets the
    spec's; streamed from disk, or decoded whole into memory where not `stream`."""
    shown = printable(str(root))
    train_dir, test_dir = root / "train", root / "test"
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise ResdslError(f"{shown} has no train/ and test/ directories",
                          hint="lay it out as DIR/train/CLASS/IMAGE and DIR/test/CLASS/IMAGE")
    classes = [p.name for p in _listing(train_dir) if p.is_dir()]
    if len(classes) < 2:
        raise ResdslError(f"{printable(str(train_dir))} needs a directory per class, at least two",
                          hint="lay it out as DIR/train/CLASS/IMAGE")
    (train, train_y), (test, test_y) = (_image_files(split, classes) for split in (train_dir, test_dir))
    with _pixel_cap():
        _, height, width = _decode(train[0]).shape  # also a damaged first image, refused now
    data = FolderDataset(f"folder {root.name}", len(classes), train_y, test_y, train, test, (height, width))
    return data if stream else data.in_memory(f"{shown} at its first image's size")


@dataclass(eq=False)
class FolderDataset(Dataset):
    """An image folder as file names and labels; its pixels are decoded by `images`, per batch."""
    name: str
    classes: int
    train_y: np.ndarray
    test_y: np.ndarray
    train_files: list[Path]
    test_files: list[Path]
    size: tuple[int, int]  # height, width: every image is decoded at this size

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, *self.size)  # Pillow converts every image to RGB

    def fitted(self, shape: tuple[int, int, int]) -> FolderDataset:
        return replace(self, size=shape[1:])

    def images(self, split: str, batches: Iterable, workers: int = 0) -> Iterator:
        from torch.utils.data import DataLoader
        files = of_split(split, self.train_files, self.test_files)
        height, width = self.size
        loader = DataLoader(_Decoder(files, (width, height)), batch_sampler=index_lists(batches),
                            num_workers=workers, collate_fn=_stack)
        for batch in loader:
            if isinstance(batch, _Failure):
                raise ResdslError(batch.message, hint=batch.hint)
            yield batch

    def in_memory(self, what: str) -> ArrayDataset:
        """Every image decoded, once the float32 arrays are known to fit RESDSL_MAX_DATASET_BYTES."""
        check_dataset_bytes(len(self.train_y) + len(self.test_y), self.shape, what,
                            "make the images smaller (every image is read at the first one's size)")
        train_x, test_x = (self._decoded(split) for split in ("train", "test"))
        return ArrayDataset(self.name, train_x, self.train_y, test_x, self.test_y, self.classes)

    def _decoded(self, split: str, batch: int = 256) -> np.ndarray:
        n = len(self.labels(split))
        x = np.empty((n, *self.shape), dtype=np.float32)  # its size was checked by the caller
        starts = range(0, n, batch)
        for start, images in zip(starts, self.images(split, (np.arange(i, min(i + batch, n)) for i in starts))):
            x[start:start + len(images)] = images.numpy()
        return x


@dataclass(frozen=True)
class _Failure:
    """A ResdslError met in a DataLoader worker, sent back as a value: torch re-raises a worker's
    exception as its type built from a traceback's text, which would lose the hint and print
    the traceback."""
    message: str
    hint: str | None


class _Decoder:
    """The map-style dataset a DataLoader reads: image i of `files`, decoded at `size` (width,
    height), or the _Failure that names it."""

    def __init__(self, files: list[Path], size: tuple[int, int]) -> None:
        self.files, self.size = files, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        import torch
        try:
            with _pixel_cap():  # set per image: a worker process may have been started outside it
                return torch.from_numpy(_decode(self.files[i], self.size))
        except ResdslError as exc:
            return _Failure(exc.diagnostic.message, exc.diagnostic.hint)


def _stack(images: list):
    import torch
    failure = next((image for image in images if isinstance(image, _Failure)), None)
    return failure or torch.stack(images)


def _listing(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise ResdslError(f"cannot list {printable(str(folder))}: {exc.strerror}",
                          hint="check the directory's permissions") from None


def _image_files(split: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """The split's images, class by class, and their labels."""
    files = [(path, label) for label, name in enumerate(classes)
             for path in _listing(split / name) if path.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ResdslError(f"{printable(str(split))} holds no images ({', '.join(IMAGE_SUFFIXES)})",
                          hint="put each class's images in its own directory")
    return [path for path, _ in files], np.asarray([label for _, label in files], dtype=np.int64)


@contextlib.contextmanager
def _pixel_cap():
    """Pillow's decompression-bomb check at resdsl's bound. Pillow only warns between one and two
    times its bound; resdsl refuses there itself, by name, from the header (`_decode`)."""
    from PIL import Image
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = LIMITS.max_image_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _decode(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """One image as 3 x H x W floats in [0, 1], resized to `size` (width, height) where given."""
    from PIL import Image
    shown = printable(str(path))
    data = read_bytes(path, "max_data_bytes", what="dataset image",
                      directory_hint="move it out of the class directory, or rename it")
    limit, variable = LIMITS.max_image_pixels, BOUNDS["max_image_pixels"].variable
    too_large = f"shrink it, or raise {variable} if you really mean it"
    try:
        with Image.open(io.BytesIO(data), formats=_readers()) as image:
            width, height = image.size
            if width * height > limit:  # known from the header: nothing is decoded yet
                raise ResdslError(f"{shown} has {width}x{height} pixels, more than resdsl decodes "
                                  f"({limit:,})", hint=too_large)
            image = image.convert("RGB")
    except ResdslError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own check, at twice the bound
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(claimed[1]):,} pixels" if claimed else "more pixels"
        raise ResdslError(f"{shown} has {pixels}, more than resdsl decodes ({limit:,})", hint=too_large) from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a damaged file
        raise ResdslError(f"{shown} is not an image resdsl can read ({type(exc).__name__})",
                          hint="remove it, or convert it to PNG") from None
    if size is not None and image.size != size:
        image = image.resize(size)
    return np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0


def _readers() -> list[str]:
    """IMAGE_FORMATS that this Pillow can read: it fails with a KeyError on one it lacks (WEBP is
    optional when Pillow is built)."""
    from PIL import Image
    Image.init()
    return [name for name in IMAGE_FORMATS if name in Image.OPEN]

