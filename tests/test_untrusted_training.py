"""Files `train` and `plot` read that the user did not write (issue #28): a dataset, a run directory,
a checkpoint. None of them may run code, hang, read without bound or crash; each damaged one is a
message naming the file (and line), exit 1.

Payloads here write a marker file; each test proves the marker never appears.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_bounded
from conftest import run_metrics as metrics
from resdsl import ResdslError
from resdsl.limits import LIMITS

SPEC = str(ROOT / "tests/specs/digits_convnet.rds")
DIGITS = ["--data", "digits", "--epochs", "2", "--batch", "64"]
TINY_CIFAR = ("network tiny {\n input 3x32x32\n classes 10\n stem { conv 4 k3 s2 p1; relu }\n"
              " head { avgpool; fc classes }\n}\n")


def run(argv: list[str], seconds: int = 30) -> tuple[int, str]:
    return run_bounded(argv, seconds)  # a FIFO must never block it


class Payload:
    """Unpickled, it creates `marker`: what a crafted dataset or checkpoint would do."""

    def __init__(self, marker: Path, how: str = "system") -> None:
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "system":
            return os.system, (f"touch {self.marker}",)
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def refused(code: int, err: str, marker: Path, *names: str) -> None:
    assert code == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert not marker.exists(), "the payload ran"
    for name in names:
        assert name in err, err


def hostile_files(path: Path, kind: str) -> None:
    """Put `kind` in place of `path`: a FIFO, a directory or a link to /dev/zero."""
    if path.exists() or path.is_symlink():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to("/dev/zero")


PLACED = {"fifo": "is not a regular file", "directory": "is a directory", "zero": "is not a regular file"}


# ---- CIFAR batches ----------------------------------------------------------------------------------

class Python2Pickler(pickle._Pickler):
    """Writes bytes and str as Python 2's str, as cPickle wrote CIFAR's batches."""
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_python2_str(self, obj) -> None:
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        self.write((pickle.SHORT_BINSTRING + bytes([len(raw)]) if len(raw) < 256
                    else pickle.BINSTRING + struct.pack("<i", len(raw))) + raw)

    dispatch[bytes] = _save_python2_str
    dispatch[str] = _save_python2_str


def python2_pickle(obj) -> bytes:
    """`obj` as the original CIFAR batches hold theirs: protocol 2, Python 2 strings, numpy 1 names."""
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def cifar_batch(n: int, seed: int, key: bytes = b"labels", classes: int = 10) -> dict:
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"training batch 1 of 5", key: [int(v) for v in rng.integers(0, classes, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


def write_cifar(root: Path, per_batch: int = 4, protocol: int | str = "python2") -> Path:
    root.mkdir(parents=True)
    for seed, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        batch = cifar_batch(per_batch, seed)
        (root / name).write_bytes(python2_pickle(batch) if protocol == "python2"
                                  else pickle.dumps(batch, protocol=protocol))
    return root


@pytest.mark.parametrize("protocol", ["python2", 2, 4, 5])
def test_real_format_cifar_batches_still_load(protocol, tmp_path: Path) -> None:
    from resdsl.training.sources import load_dataset
    root = write_cifar(tmp_path / "cifar", protocol=protocol)
    if protocol == "python2":
        assert b"cnumpy.core.multiarray\n_reconstruct\n" in (root / "data_batch_1").read_bytes()
    data = load_dataset(f"cifar10:{root}")
    assert data.train_x.shape == (20, 3, 32, 32) and data.test_x.shape == (4, 3, 32, 32)
    second = cifar_batch(4, 1)
    np.testing.assert_array_equal(data.train_x[4:8], second[b"data"].reshape(-1, 3, 32, 32) / np.float32(255))
    assert list(data.train_y[4:8]) == second[b"labels"]


def test_cifar100_reads_its_fine_labels(tmp_path: Path) -> None:
    from resdsl.training.sources import load_dataset
    (tmp_path / "c100").mkdir()
    for seed, name in enumerate(("train", "test")):
        batch = cifar_batch(3, seed, b"fine_labels", 100) | {b"coarse_labels": [0, 1, 2]}
        (tmp_path / "c100" / name).write_bytes(python2_pickle(batch))
    data = load_dataset(f"cifar100:{tmp_path / 'c100'}")
    assert data.classes == 100 and list(data.test_y) == cifar_batch(3, 1, b"fine_labels", 100)[b"fine_labels"]


@pytest.mark.parametrize("how", ["system", "exec"])
def test_a_payload_in_a_valid_cifar_batch_never_runs(how, tmp_path: Path) -> None:
    root = write_cifar(tmp_path / "cifar")
    marker = tmp_path / "MARKER"
    batch = cifar_batch(4, 0) | {b"extra": Payload(marker, how)}
    (root / "data_batch_2").write_bytes(pickle.dumps(batch, protocol=2))
    spec = tmp_path / "tiny.rds"
    spec.write_text(TINY_CIFAR)
    code, err = run(["train", str(spec), "--data", f"cifar10:{root}", "--out", str(tmp_path / "run"),
                     "--epochs", "1"])
    called = "posix.system" if how == "system" else "__builtin__.exec"  # as protocol 2 names it
    refused(code, err, marker, "data_batch_2 asks to run", f"`{called}`")
    assert not (tmp_path / "run").exists()


def raw_pickle(*ops: bytes) -> bytes:
    return b"\x80\x02" + b"".join(ops) + b"."


@pytest.mark.parametrize("batch, message", [
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2**64]}, "label 1 is a 65-bit number"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2**63]}, "label 1 is 9223372036854775808"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [-1]}, "label 0 is -1, not a class from 0 to 9"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [True]}, "label 0 is True"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": ["3"]}, "label 0 is '3'"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": {1: 2}}, "`labels` is a dict, not a list"),
    ({b"data": np.zeros((1, 3072), np.float64), b"labels": [1]}, "`data` is a <f8 array of 1x3072"),
    ({b"data": np.zeros((1, 3, 32, 32), np.uint8), b"labels": [1]}, "`data` is a |u1 array of 1x3x32x32"),
    ({b"data": [[0] * 3072], b"labels": [1]}, "`data` is a list"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, "has 2 images but 1 labels"),
    ({b"data": np.zeros((1, 3072), np.uint8)}, "has no `labels`"),
    ([1, 2, 3], "holds a list, not a CIFAR batch's dict"),
    (raw_pickle(b"cnosuchmodule\nthing\n"), "asks to run `nosuchmodule.thing`"),
    (raw_pickle(b"cnumpy\nndarray\n", b"J\x00\x00\x00\x10J\x00\x00\x00\x10\x86\x85R"),  # 2**56 elements
     "is not a CIFAR python batch (TypeError)"),
    (raw_pickle(b"c_codecs\nencode\n", b"X\x01\x00\x00\x00xX\x04\x00\x00\x00zlib\x86R"),
     "is not a CIFAR python batch (UnpicklingError)"),
    (b"\x80\x04garbage", "is not a CIFAR python batch"),
])
def test_damaged_cifar_batches_are_refused_by_name(batch, message, tmp_path: Path) -> None:
    from resdsl.training.sources import load_dataset
    root = write_cifar(tmp_path / "cifar")
    (root / "data_batch_3").write_bytes(batch if isinstance(batch, bytes) else pickle.dumps(batch, protocol=2))
    with pytest.raises(ResdslError) as caught:
        load_dataset(f"cifar10:{root}")
    text = caught.value.render()
    assert "data_batch_3" in text and message in text and "= help:" in text, text


@pytest.mark.parametrize("kind", sorted(PLACED))
def test_a_fifo_device_or_directory_batch_is_refused(kind, tmp_path: Path) -> None:
    root = write_cifar(tmp_path / "cifar")
    hostile_files(root / "test_batch", kind)
    code, err = run(["train", SPEC, "--data", f"cifar10:{root}", "--out", str(tmp_path / "run")])
    refused(code, err, tmp_path / "none", "test_batch", PLACED[kind])


# ---- image folders ----------------------------------------------------------------------------------

def image_folder(root: Path, size: tuple[int, int] = (6, 5)) -> Path:
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
                root / split / cls / "0.png")
    return root


def two_class_spec(tmp_path: Path) -> str:
    """A spec that fits image_folder's two classes: streamed images are decoded while training."""
    spec = tmp_path / "two.rds"
    spec.write_text(TINY_CIFAR.replace("classes 10", "classes 2"))
    return str(spec)


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims width x height: Pillow reads the size without decoding."""
    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize("width, height, message", [
    (20000, 20000, "has 400,000,000 pixels, more than resdsl decodes"),  # Pillow's own bomb check
    (5000, 5000, "has 5000x5000 pixels, more than resdsl decodes"),  # between its warning and error
])
def test_a_decompression_bomb_header_is_refused_without_decoding(width, height, message, tmp_path: Path) -> None:
    root = image_folder(tmp_path / "images")
    (root / "train" / "dog" / "bomb.png").write_bytes(png_claiming(width, height))
    code, err = run(["train", two_class_spec(tmp_path), "--data", f"folder:{root}", "--out", str(tmp_path / "run")])
    refused(code, err, tmp_path / "none", "bomb.png", message, "RESDSL_MAX_IMAGE_PIXELS")


def test_a_large_first_image_is_not_imposed_past_the_dataset_bound(tmp_path: Path, monkeypatch) -> None:
    from resdsl.training.sources import load_dataset
    root = image_folder(tmp_path / "images", size=(100, 100))
    monkeypatch.setattr(LIMITS, "max_dataset_bytes", 100_000)  # 4 images of 3x100x100 floats: 480,000
    with pytest.raises(ResdslError, match="4 images of 3x100x100 take 0.5 MiB as float32, more than resdsl "
                                          "holds in memory") as caught:
        load_dataset(f"folder:{root}")
    assert "RESDSL_MAX_DATASET_BYTES" in caught.value.render()


@pytest.mark.parametrize("kind", sorted(PLACED))
def test_a_fifo_device_or_directory_named_like_an_image_is_refused(kind, tmp_path: Path) -> None:
    root = image_folder(tmp_path / "images")
    hostile_files(root / "test" / "dog" / "x.png", kind)
    code, err = run(["train", two_class_spec(tmp_path), "--data", f"folder:{root}", "--out", str(tmp_path / "run")])
    refused(code, err, tmp_path / "none", "x.png", PLACED[kind])


def test_every_suffix_taken_is_read(tmp_path: Path) -> None:
    from PIL import Image
    from resdsl.training.sources import load_dataset
    root = image_folder(tmp_path / "images")
    suffixes = {"jpg": "JPEG", "jpeg": "JPEG", "bmp": "BMP", "gif": "GIF", "webp": "WEBP"}
    for suffix, fmt in suffixes.items():
        Image.new("RGB", (3, 2), (255, 0, 0)).save(root / "train" / "dog" / f"1.{suffix}", format=fmt)
    data = load_dataset(f"folder:{root}")
    assert data.train_x.shape == (2 + len(suffixes), 3, 5, 6)
    assert data.train_x[2:, 0].min() > 0.9 and data.train_x[2:, 1:].max() < 0.1  # red, resized


def test_only_the_image_readers_of_the_suffixes_are_used(tmp_path: Path) -> None:
    from resdsl.training.sources import load_dataset
    root = image_folder(tmp_path / "images")
    # Pillow would identify this as EPS by its bytes and start Ghostscript to decode it.
    (root / "train" / "cat" / "1.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n")
    with pytest.raises(ResdslError, match="1.png is not an image resdsl can read"):
        load_dataset(f"folder:{root}")


# ---- run directories on resume ----------------------------------------------------------------------

class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A run of digits_convnet stopped after epoch 1 of 2, as `train` with DIGITS leaves it."""
    from resdsl.files import read_source
    from resdsl.network import load
    from resdsl.training.sources import load_dataset
    from resdsl.training.loop import train
    from resdsl.training.recipe import Recipe

    def stop(row: dict) -> None:
        raise Stop
    out = tmp_path_factory.mktemp("interrupted") / "run"
    with pytest.raises(Stop):
        train(load(Path(SPEC)), read_source(SPEC), SPEC, load_dataset("digits"), "digits", out,
              Recipe(epochs=2, batch=64, augment=False), on_epoch=stop)
    assert [r["epoch"] for r in metrics(out)] == [1] and not (out / "final.pt").exists()
    return out


@pytest.fixture
def run_dir(interrupted: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(interrupted, out)
    return out


def resume(out: Path) -> tuple[int, str]:
    return run(["train", SPEC, *DIGITS, "--out", str(out)])


def test_a_resdsl_checkpoint_resumes_with_weights_only(run_dir: Path) -> None:
    code, err = resume(run_dir)
    assert code == 0, err
    assert "epoch 1/2" not in err and "epoch 2/2" in err  # resumed, not retrained
    assert [r["epoch"] for r in metrics(run_dir)] == [1, 2] and (run_dir / "final.pt").exists()
    code, err = resume(run_dir)  # a finished run resumes to nothing
    assert code == 0 and "epoch 2/2" not in err, err


def test_a_planted_checkpoint_never_runs(run_dir: Path, tmp_path: Path) -> None:
    import torch
    marker = tmp_path / "MARKER"
    torch.save({"model": Payload(marker), "optimizer": {}, "schedule": {}, "epoch": 1}, run_dir / "checkpoint.pt")
    code, err = resume(run_dir)
    refused(code, err, marker, "checkpoint.pt", "asks to run `posix.system`")


def _tamper(state: dict, change: str) -> None:
    import torch
    if change == "epoch bool":
        state["epoch"] = True
    elif change == "epoch text":
        state["epoch"] = "1"
    elif change == "epoch negative":
        state["epoch"] = -1
    elif change == "epoch past the recipe":
        state["epoch"] = 3
    elif change == "model list":
        state["model"] = [1]
    elif change == "schedule method":
        state["schedule"]["step"] = 5
    elif change == "schedule gamma":
        state["schedule"]["gamma"] = "0.1"
    elif change == "optimizer lr":
        state["optimizer"]["param_groups"][0]["lr"] = "fast"
    elif change == "momentum shape":
        state["optimizer"]["state"][0]["momentum_buffer"] = torch.zeros(3)
    elif change == "weights shape":
        state["model"]["conv1.weight"] = torch.zeros(1)


@pytest.mark.parametrize("change, message", [
    ("epoch bool", "`epoch` is True, not an epoch from 0 to 2"),
    ("epoch text", "`epoch` is '1'"),
    ("epoch negative", "`epoch` is -1"),
    ("epoch past the recipe", "`epoch` is 3"),
    ("model list", "`model` is a list, not a state dict"),
    ("schedule method", "the schedule would replace its `step`"),
    ("schedule gamma", "the schedule's `gamma` is '0.1'"),
    ("optimizer lr", "the optimizer's `lr` is 'fast'"),
    ("momentum shape", "where a momentum of shape (8, 1, 3, 3) should be"),
    ("weights shape", "cannot resume from"),
])
def test_a_damaged_checkpoint_is_refused_by_field(change, message, run_dir: Path) -> None:
    import torch
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    _tamper(state, change)
    torch.save(state, run_dir / "checkpoint.pt")
    code, err = resume(run_dir)
    refused(code, err, run_dir / "none", "checkpoint.pt", message)
    assert len(metrics(run_dir)) == 1  # nothing retrained over it


@pytest.mark.parametrize("form, message", [
    ("deflated", "checkpoint.pt: holds compressed records"),  # torch would inflate them to any size
    ("legacy", "checkpoint.pt: not a file torch.save writes"),  # allocates what its pickle names
    ("truncated", "checkpoint.pt: a damaged zip archive"),
])
def test_a_checkpoint_in_another_form_is_refused_before_torch_reads_it(form, message, run_dir: Path) -> None:
    import zipfile
    import torch
    path = run_dir / "checkpoint.pt"
    if form == "deflated":
        with zipfile.ZipFile(path) as old:
            records = [(info.filename, old.read(info)) for info in old.infolist()]
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as new:
            for name, data in records:
                new.writestr(name, data)
    elif form == "legacy":
        torch.save(torch.load(path, weights_only=True), path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(path.read_bytes()[:200])
    code, err = resume(run_dir)
    refused(code, err, run_dir / "none", message)


@pytest.mark.parametrize("name", ["checkpoint.pt", "config.json", "metrics.jsonl"])
@pytest.mark.parametrize("kind", sorted(PLACED))
def test_a_fifo_device_or_directory_in_a_run_is_refused(name, kind, run_dir: Path) -> None:
    hostile_files(run_dir / name, kind)
    code, err = resume(run_dir)
    refused(code, err, run_dir / "none", name, PLACED[kind])


@pytest.mark.parametrize("config, message", [
    ([], "config.json: holds a list, not the object resdsl writes"),
    ({}, "config.json: has no `network`"),
    ("damaged", "config.json: not valid JSON"),
    ({"network": 5}, "config.json: `network` is 5, not a str"),
    ({"recipe": []}, "config.json: `recipe` is a list, not a dict"),
])
def test_a_damaged_config_is_named(config, message, run_dir: Path) -> None:
    path = run_dir / "config.json"
    if config == "damaged":
        path.write_text('{"network": ')
    else:
        value = config if not isinstance(config, dict) or not config else json.loads(path.read_text()) | config
        path.write_text(json.dumps(value))
    code, err = resume(run_dir)
    refused(code, err, run_dir / "none", message)


@pytest.mark.parametrize("row, message", [
    ('{"epoch": "1", "test_error": 0.5}', "metrics.jsonl:1: `epoch` is '1', not an epoch number"),
    ('{"epoch": null, "test_error": 0.5}', "metrics.jsonl:1: `epoch` is None"),
    ('{"epoch": 1.5, "test_error": 0.5}', "metrics.jsonl:1: `epoch` is 1.5"),
    ('{"epoch": -5, "test_error": 0.5}', "metrics.jsonl:1: `epoch` is -5"),
    ('{"epoch": true, "test_error": 0.5}', "metrics.jsonl:1: `epoch` is True"),
    ('{"test_error": 0.5}', "metrics.jsonl:1: the row has no `epoch`"),
    ('{"epoch": 1}', "metrics.jsonl:1: the row has no `test_error`"),
    ('{"epoch": 1, "test_error": NaN}', "metrics.jsonl:1: `test_error` is nan"),
    ("[1]", "metrics.jsonl:1: holds a list, not a row of metrics"),
    ("{torn", "metrics.jsonl:1: not valid JSON"),
])
def test_a_damaged_metrics_row_is_named_never_retrained(row, message, run_dir: Path) -> None:
    path = run_dir / "metrics.jsonl"
    good = path.read_text()
    path.write_text(row + "\n" + good)  # damage on line 1, a good row after it
    code, err = resume(run_dir)
    refused(code, err, run_dir / "none", message)
    assert path.read_text() == row + "\n" + good


def test_missing_rows_before_the_checkpoint_are_refused(run_dir: Path) -> None:
    (run_dir / "metrics.jsonl").write_text("")
    code, err = resume(run_dir)
    refused(code, err, run_dir / "none", "metrics.jsonl: has no row for epoch 1, though checkpoint.pt is at epoch 1")
    (run_dir / "metrics.jsonl").unlink()
    code, err = resume(run_dir)
    refused(code, err, run_dir / "none", "metrics.jsonl is missing")


def test_a_torn_last_line_is_dropped(run_dir: Path) -> None:
    path = run_dir / "metrics.jsonl"
    path.write_text(path.read_text() + '{"epoch": 2, "train_loss": 0.')  # killed mid-write
    code, err = resume(run_dir)
    assert code == 0, err
    assert [r["epoch"] for r in metrics(run_dir)] == [1, 2]


# ---- plot -------------------------------------------------------------------------------------------

def fake_run(root: Path, network: str = "net", rows: list | None = None, config=None) -> Path:
    root.mkdir(parents=True)
    config = config if config is not None else {
        "network": network, "spec_file": "x.rds", "spec": "", "spec_sha256": "0", "data": "digits", "recipe": {}}
    (root / "config.json").write_text(json.dumps(config))
    rows = rows if rows is not None else [{"epoch": e, "iteration": 10 * e, "train_error": 0.5 / e,
                                           "test_error": 0.6 / e} for e in (1, 2)]
    (root / "metrics.jsonl").write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return root


@pytest.mark.parametrize("config, rows, message", [
    ([], None, "config.json: holds a list, not the object resdsl writes"),
    ({}, None, "config.json: has no `network`"),
    (None, [{"epoch": 1, "train_error": 0.1, "test_error": 0.1}], "metrics.jsonl:1: the row has no `iteration`"),
    (None, [{"epoch": 1, "iteration": 1e308, "train_error": 0.1, "test_error": 0.1}],
     "metrics.jsonl:1: `iteration` is 1e+308, not a count of iterations"),
    (None, [{"epoch": 1, "iteration": 5, "train_error": 0.1, "test_error": 0.1},
            '{"epoch": 2, "iteration": -1e308, "train_error": 0.1, "test_error": 0.1}'],
     "metrics.jsonl:2: `iteration` is -1e+308"),
    (None, ['{"epoch": 1, "iteration": 5, "train_error": Infinity, "test_error": 0.1}'],
     "metrics.jsonl:1: `train_error` is inf, not an error rate from 0 to 1"),
    (None, [{"epoch": 1, "iteration": "5", "train_error": 0.1, "test_error": 0.1}], "`iteration` is '5'"),
    (None, ["nonsense", {"epoch": 1, "iteration": 5, "train_error": 0.1, "test_error": 0.1}],
     "metrics.jsonl:1: not valid JSON"),
])
def test_plot_names_each_damaged_field(config, rows, message, tmp_path: Path) -> None:
    root = fake_run(tmp_path / "run", rows=rows, config=config)
    code, err = run(["plot", str(root), "-o", str(tmp_path / "out.png")])
    refused(code, err, tmp_path / "none", message)
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("name", sorted(PLACED))
def test_plot_refuses_a_fifo_in_a_run(name, tmp_path: Path) -> None:
    root = fake_run(tmp_path / "run")
    hostile_files(root / "metrics.jsonl", name)
    code, err = run(["plot", str(root), "-o", str(tmp_path / "out.png")])
    refused(code, err, tmp_path / "none", "metrics.jsonl", PLACED[name])


def test_plot_draws_names_as_plain_bounded_text(tmp_path: Path, monkeypatch) -> None:
    import matplotlib
    monkeypatch.setitem(matplotlib.rcParams, "svg.fonttype", "none")  # text stays text in the SVG
    names = [r"$\frac{$", "$" + "{" * 5000 + "}" * 5000 + "$", "x" * 5_000_000, "_hidden", "red\x1b[31m$a$"]
    runs = [str(fake_run(tmp_path / f"run{i}", network=name)) for i, name in enumerate(names)]
    out = tmp_path / "out.svg"
    code, err = run(["plot", *runs, "-o", str(out)], seconds=60)
    assert code == 0, err
    svg = out.read_text()
    assert r"$\frac{$" in svg and "_hidden" in svg and r"red\x1b[31m$a$" in svg and "\x1b" not in svg
    assert "x" * 59 + "…" in svg and "x" * 61 not in svg
    assert "{" * 61 not in svg


def test_plot_warnings_never_carry_raw_control_characters(tmp_path: Path) -> None:
    # A glyph the font lacks makes matplotlib warn with the text's characters: ESC must come escaped.
    root = fake_run(tmp_path / "run", network="\x1b]0;owned\x07\U0001F600")
    done = subprocess.run([sys.executable, "-m", "resdsl", "plot", str(root), "-o", str(tmp_path / "o.png")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stderr and "\x07" not in done.stderr


def test_a_negative_local_rank_is_a_clear_error(monkeypatch) -> None:
    from resdsl.training.distributed import World
    for name, value in (("WORLD_SIZE", "2"), ("RANK", "0"), ("LOCAL_RANK", "-1")):
        monkeypatch.setenv(name, value)
    with pytest.raises(ResdslError, match="LOCAL_RANK -1 is negative"):
        World.from_env()
