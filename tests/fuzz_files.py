"""Fuzz targets for the files resdsl reads besides specs: datasets, run directories, weights,
tuning databases and the environment (`tests/fuzz.py` drives them).

Each target builds a pristine input once (a real CIFAR-format dataset, a real run directory,
a real state_dict, a real tuning database), then each case copies it, damages one file of it
(byte-level, by value inside its structure, by a planted pickle payload, or by putting a FIFO,
a directory or a /dev/zero link in its place) and names the resdsl command that reads it.

A planted payload would create MARKER if it ever ran: the driver fails the case if it exists.
"""
from __future__ import annotations

import gzip
import json
import os
import pickle
import random
import shutil
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mutation import ROOT, mutate_bytes

MARKER = "PWNED"
TINY_CIFAR = ROOT / "tests" / "specs" / "cifar_tiny.rds"
CONVNET = ROOT / "tests" / "specs" / "digits_convnet.rds"
RESNET = ROOT / "tests" / "specs" / "digits_resnet.rds"

# Values that broke readers before: wrong types, out of range, huge, non-finite, mathtext, ESC.
HOSTILE_VALUES = (None, True, -5, 1.5, "1", "", [], {}, [1], 2**63, -2**63, 10**400, 1e308, -1e308,
                  float("nan"), float("inf"), "$\\frac{$", "{" * 5000, "\x1b[2J", "x" * 100_000)


def payload_pickle(work: Path, protocol: int = 2) -> bytes:
    """A pickle that, unpickled without restriction, creates work/MARKER; by hand, so it needs no
    class of ours: `os.system`, `builtins.exec` and `subprocess` are what real payloads use."""
    marker = str(work / MARKER)
    global_name = random.choice([("posix", "system", f"touch {marker}"),
                                 ("builtins", "exec", f"open({marker!r}, 'w').close()"),
                                 ("os", "system", f"touch {marker}")])
    module, name, arg = global_name
    return (f"c{module}\n{name}\n(V{arg}\ntR".encode() if protocol == 0 else
            b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X" + struct.pack("<I", len(arg.encode()))
            + arg.encode() + b"\x85R")


class Payload:
    """An object whose unpickling creates the marker: planted inside otherwise valid files."""

    def __init__(self, work: Path) -> None:
        self.marker = str(work / MARKER)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_value(rng: random.Random):
    return rng.choice(HOSTILE_VALUES)


def replace_somewhere(value, rng: random.Random, new):
    """`value` (parsed JSON) with one randomly chosen sub-value replaced by `new`."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        if rng.random() < 0.1:
            return {k: v for k, v in value.items() if k != key}  # a field missing
        return {**value, key: replace_somewhere(value[key], rng, new)}
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        return value[:i] + [replace_somewhere(value[i], rng, new)] + value[i + 1:]
    return new


def damage_json_text(text: str, rng: random.Random) -> str:
    """A JSON document or JSON-lines file with one value replaced (or one line torn or garbled)."""
    lines = text.splitlines() or [""]
    i = rng.randrange(len(lines))
    kind = rng.randrange(4)
    if kind == 0:  # a value of the wrong type or range
        try:
            value = json.loads(lines[i]) if len(lines) > 1 else json.loads(text)
        except ValueError:
            return text + "\n{"
        new = json.dumps(replace_somewhere(value, rng, hostile_value(rng)))
        return "\n".join(lines[:i] + [new] + lines[i + 1:]) + "\n" if len(lines) > 1 else new
    if kind == 1:  # a whole line replaced by another JSON value
        lines[i] = json.dumps(hostile_value(rng))
    elif kind == 2:  # torn
        lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
    else:
        lines[i] = lines[i] * rng.choice((2, 1000))
    return "\n".join(lines) + ("\n" if rng.random() < 0.7 else "")


def replace_with_special(path: Path, rng: random.Random) -> None:
    """A FIFO, a directory, a /dev/zero link or a dangling link where a file was."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    kind = rng.randrange(4)
    if kind == 0:
        os.mkfifo(path)
    elif kind == 1:
        path.mkdir()
    elif kind == 2:
        path.symlink_to(rng.choice(["/dev/zero", "/dev/urandom", "/dev/null"]))
    else:
        path.symlink_to(path.parent / "nowhere")


@dataclass
class Target:
    """One input kind: `build(dir)` makes the pristine input, `case(rng, work)` damages a copy of
    it in `work` and returns the resdsl command line that reads it."""
    name: str
    build: Callable[[Path], None]
    case: Callable[[random.Random, Path], list[str]]
    subprocess: bool = False  # TVM: a crash would take the fuzzer with it
    env: dict[str, str] = field(default_factory=dict)


def _damage_file(path: Path, rng: random.Random, work: Path, pickled: bool = False) -> str:
    """Damage one file in place; returns how (for the failure report)."""
    kind = rng.randrange(5 if pickled else 4)
    if kind == 0:
        replace_with_special(path, rng)
        return "special file"
    data = path.read_bytes()
    if kind == 1:
        path.write_bytes(mutate_bytes(data, rng))
        return "bytes"
    if kind == 2:
        path.write_bytes(data[: rng.randrange(len(data) + 1)])
        return "truncated"
    if kind == 4:
        path.write_bytes(payload_pickle(work, rng.choice((0, 2))))
        return "payload pickle"
    try:
        path.write_text(damage_json_text(data.decode(), rng))
        return "json value"
    except UnicodeDecodeError:
        path.write_bytes(mutate_bytes(data, rng))
        return "bytes"


# ---- datasets
def _cifar_batch(rng: random.Random, n: int) -> dict:
    import numpy as np
    return {b"batch_label": b"training batch 1 of 5", b"labels": [rng.randrange(10) for _ in range(n)],
            b"data": np.random.default_rng(rng.randrange(1 << 30)).integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [b"img%d.png" % i for i in range(n)]}


CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def build_cifar(base: Path) -> None:
    rng = random.Random(0)
    base.mkdir(parents=True)
    for name in CIFAR_FILES:
        (base / name).write_bytes(pickle.dumps(_cifar_batch(rng, 8), protocol=2))


def case_cifar(rng: random.Random, work: Path) -> list[str]:
    data = work / "cifar"
    path = data / rng.choice(CIFAR_FILES)
    kind = rng.randrange(3)
    if kind == 0:  # a field of the batch dict with a hostile value, or a payload hidden in it
        batch = _cifar_batch(rng, 8)
        key = rng.choice(list(batch))
        batch[key] = Payload(work) if rng.random() < 0.3 else replace_somewhere(
            batch[key] if not hasattr(batch[key], "tolist") else batch[key].tolist(), rng, hostile_value(rng))
        path.write_bytes(pickle.dumps(batch, protocol=2))
    else:
        _damage_file(path, rng, work, pickled=True)
    return ["train", str(TINY_CIFAR), "--data", f"cifar10:{data}", "--out", str(work / "run"),
            "--epochs", "1", "--batch", "16"]


def _png(width: int, height: int, colour: int) -> bytes:
    from io import BytesIO

    from PIL import Image
    out = BytesIO()
    Image.new("RGB", (width, height), (colour, 0, 255 - colour)).save(out, "PNG")
    return out.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims width x height (the IHDR's CRC fixed, so it parses)."""
    data = bytearray(_png(1, 1, 0))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    return bytes(data)


def build_folder(base: Path) -> None:
    for split in ("train", "test"):
        for label, colour in (("cat", 30), ("dog", 200)):
            folder = base / split / label
            folder.mkdir(parents=True)
            for i in range(2):
                (folder / f"{i}.png").write_bytes(_png(8, 8, colour + i))


def case_folder(rng: random.Random, work: Path) -> list[str]:
    data = work / "folder"
    folder = data / rng.choice(("train", "test")) / rng.choice(("cat", "dog"))
    kind = rng.randrange(4)
    if kind == 0:
        (folder / "bomb.png").write_bytes(bomb_png(rng.choice((20000, 65535, (1 << 31) - 1)),
                                                   rng.choice((1, 20000, 65535))))
    elif kind == 1:
        (folder / "0.png").write_bytes(_png(rng.choice((1, 3, 300)), rng.choice((1, 5, 300)), 9))
    else:
        _damage_file(folder / "1.png", rng, work)
    return ["train", str(TINY_CIFAR), "--data", f"folder:{data}", "--out", str(work / "run"),
            "--epochs", "1", "--batch", "4"]


# ---- run directories
RUN_FILES = ("config.json", "metrics.jsonl", "checkpoint.pt", "final.pt")


def build_run(base: Path) -> None:
    from resdsl.cli import main
    assert main(["train", str(CONVNET), "--data", "digits", "--out", str(base), "--epochs", "1",
                 "--batch", "256"]) == 0


def case_run(rng: random.Random, work: Path) -> list[str]:
    run = work / "run"
    name = rng.choice(RUN_FILES)
    path = run / name
    if name.endswith(".pt") and rng.random() < 0.3:
        import torch
        torch.save({"model": Payload(work), "epoch": 1}, path)
    else:
        _damage_file(path, rng, work, pickled=name.endswith(".pt"))
    if rng.random() < 0.5:
        return ["plot", str(run), "-o", str(work / "plot.png")]
    return ["train", str(CONVNET), "--data", "digits", "--out", str(run), "--epochs", "2", "--batch", "256"]


# ---- weights
def build_weights(base: Path) -> None:
    import torch

    import resdsl
    base.mkdir(parents=True)
    torch.save(resdsl.load(RESNET).to_torch(seed=0).state_dict(), base / "weights.pt")


def case_weights(rng: random.Random, work: Path) -> list[str]:
    import torch
    path = work / "weights" / "weights.pt"
    if rng.random() < 0.6:  # a real state_dict with one entry made hostile
        state = torch.load(path, weights_only=True)
        key = rng.choice(list(state))
        kind = rng.randrange(7)
        if kind == 0:
            state[key] = state[key].to(rng.choice((torch.complex64, torch.int8, torch.bool, torch.float16)))
        elif kind == 1:
            state[key] = state[key].float().fill_(rng.choice((float("nan"), float("inf"), -1.0)))
        elif kind == 2:
            state[key] = state[key].reshape(-1)[:-1] if state[key].numel() > 1 else torch.zeros(2, 0)
        elif kind == 3:
            state[rng.choice(("extra.weight", key + "x", "__class__"))] = torch.zeros(1)
        elif kind == 4:
            del state[key]
        elif kind == 5:
            state[key] = rng.choice(([1, 2], "x", None, {"nested": torch.zeros(1)}))
        else:
            state[key] = Payload(work)
        torch.save(state, path)
    else:
        _damage_file(path, rng, work, pickled=True)
    target = rng.choice(("onnx", "torch"))
    return ["compile", str(RESNET), "--target", target, "--weights", str(path),
            "-o", str(work / ("net.onnx" if target == "onnx" else "net.py"))]


# ---- tuning databases
def build_database(base: Path) -> None:
    """A shipped database, unpacked into a work directory as `resdsl tune` leaves one."""
    shipped = ROOT / "resdsl" / "tvm" / "databases" / "resnet18-llvm-znver5"
    base.mkdir(parents=True)
    for item in shipped.iterdir():
        if item.name.endswith(".gz"):
            (base / item.name[:-3]).write_bytes(gzip.decompress(item.read_bytes()))
        else:
            shutil.copy(item, base / item.name)


def case_database(rng: random.Random, work: Path) -> list[str]:
    db = work / "database"
    names = sorted(p.name for p in db.iterdir())
    path = db / rng.choice(names)
    if path.name.startswith("database_") and rng.random() < 0.7:  # JSON lines: damage one value
        lines = path.read_text().splitlines()
        i = rng.randrange(len(lines))
        if rng.random() < 0.5:
            lines[i] = json.dumps(hostile_value(rng))
        else:
            lines[i] = json.dumps(replace_somewhere(json.loads(lines[i]), rng, hostile_value(rng)))
        path.write_text("\n".join(lines) + "\n")
    else:
        _damage_file(path, rng, work)
    return ["compile", str(CONVNET), "--target", "llvm", "--tuned", str(db), "-o", str(work / "net.so")]


# ---- the environment
ENV_VALUES = ("abc", "", "1e9", "-1", "0", "99999999999999999999999", " 7", "0x10", "\x1b[2J", "1_000")


def case_environment(rng: random.Random, work: Path) -> list[str]:
    from resdsl.limits import BOUNDS
    variable = rng.choice([b.variable for b in BOUNDS.values()])
    os.environ[variable] = rng.choice(ENV_VALUES)
    return ["check", str(ROOT / "specs" / "resnet18.rds")]


TARGETS = {
    "cifar": Target("cifar", build_cifar, case_cifar),
    "folder": Target("folder", build_folder, case_folder),
    "run": Target("run", build_run, case_run),
    "weights": Target("weights", build_weights, case_weights),
    "database": Target("database", build_database, case_database, subprocess=True),
    "environment": Target("environment", lambda base: None, case_environment),
}
