"""Where training data comes from (issue #30): CIFAR downloaded into a cache, checked and unpacked
as torchvision does, from a local HTTP server here; image folders streamed from disk by worker
processes, batch by batch, the same whatever the number of workers."""
from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from test_untrusted_training import cifar_batch, python2_pickle

from resdsl import ResdslError
from resdsl.cli import main
from resdsl.limits import LIMITS
from resdsl.training.data import fit, normalizer
from resdsl.training.sources import load_dataset

CIFAR10 = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


# ---- downloads --------------------------------------------------------------------------------------

class Server:
    """An HTTP server on 127.0.0.1 serving `files` by path, counting the requests it gets."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = server.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args) -> None:
                pass
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"


@pytest.fixture
def server(tmp_path: Path, monkeypatch):
    """The server, with resdsl's data directory in tmp_path and CIFAR's URLs pointing at it."""
    serving = Server()
    thread = threading.Thread(target=serving.http.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("RESDSL_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RESDSL_CIFAR10_URL", f"{serving.url}/cifar-10-python.tar.gz")
    monkeypatch.setenv("RESDSL_CIFAR100_URL", f"{serving.url}/cifar-100-python.tar.gz")
    yield serving
    serving.http.shutdown()
    serving.http.server_close()


def archive(members: dict[str, bytes | str], links: dict[str, str] | None = None) -> bytes:
    """A .tar.gz of `members` (name: bytes, or "dir" for a directory) and symbolic `links`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


def cifar10_members() -> dict[str, bytes | str]:
    """What the published archive holds, with batches of 3 images."""
    members: dict[str, bytes | str] = {"cifar-10-batches-py": "dir"}
    for seed, name in enumerate(CIFAR10):
        members[f"cifar-10-batches-py/{name}"] = python2_pickle(cifar_batch(3, seed))
    members["cifar-10-batches-py/readme.html"] = b"<html></html>"
    return members


def serve(server: Server, monkeypatch, data: bytes, kind: str = "cifar10", md5: str | None = None) -> None:
    name = "cifar-10-python.tar.gz" if kind == "cifar10" else "cifar-100-python.tar.gz"
    server.files[f"/{name}"] = data
    monkeypatch.setenv(f"RESDSL_{kind.upper()}_MD5", md5 or hashlib.md5(data).hexdigest())


def left_in(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_cifar10_is_downloaded_verified_unpacked_and_then_cached(server: Server, tmp_path: Path,
                                                                 monkeypatch, capsys) -> None:
    serve(server, monkeypatch, archive(cifar10_members()))
    data = load_dataset("cifar10")
    assert data.train_x.shape == (15, 3, 32, 32) and data.test_x.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(data.train_x[3:6], cifar_batch(3, 1)[b"data"].reshape(-1, 3, 32, 32) / np.float32(255))
    assert "downloading http://127.0.0.1" in capsys.readouterr().err
    cache = tmp_path / "cache"
    assert left_in(cache) == ["cifar-10-batches-py"]  # no .part, no archive, no temporary directory
    assert sorted(p.name for p in (cache / "cifar-10-batches-py").iterdir()) == sorted(CIFAR10)
    assert len(server.requests) == 1
    again = load_dataset("cifar10")
    assert len(server.requests) == 1 and np.array_equal(again.train_x, data.train_x)


def test_cifar100_is_downloaded_with_its_fine_labels(server: Server, monkeypatch) -> None:
    members: dict[str, bytes | str] = {"cifar-100-python": "dir", "cifar-100-python/file.txt~": b""}
    for seed, name in enumerate(("train", "test", "meta")):
        members[f"cifar-100-python/{name}"] = python2_pickle(cifar_batch(2, seed, b"fine_labels", 100))
    serve(server, monkeypatch, archive(members), "cifar100")
    data = load_dataset("cifar100")
    assert data.classes == 100 and list(data.test_y) == cifar_batch(2, 1, b"fine_labels", 100)[b"fine_labels"]


def test_a_wrong_checksum_is_refused_and_leaves_nothing(server: Server, tmp_path: Path, monkeypatch) -> None:
    data = archive(cifar10_members())
    serve(server, monkeypatch, data, md5="0" * 32)
    with pytest.raises(ResdslError) as caught:
        load_dataset("cifar10")
    text = caught.value.render()
    for expected in (f"{server.url}/cifar-10-python.tar.gz", "0" * 32, hashlib.md5(data).hexdigest(),
                     "RESDSL_CIFAR10_MD5", "nothing was unpacked"):
        assert expected in text, text
    assert left_in(tmp_path / "cache") == []


@pytest.mark.parametrize("change, message", [
    ({"cifar-10-batches-py/../../escaped": b"x"}, "holds `cifar-10-batches-py/../../escaped`"),
    ({"/tmp/absolute": b"x"}, "holds `/tmp/absolute`"),
    ({"cifar-10-batches-py/extra.py": b"import os"}, "holds `cifar-10-batches-py/extra.py`"),
    ({"cifar-10-batches-py/test_batch": None}, "lacks cifar-10-batches-py/test_batch"),
    ({"cifar-10-batches-py/data_batch_1": "link"}, "holds cifar-10-batches-py/data_batch_1 as a link"),
])
def test_an_archive_with_other_members_is_refused(change, message, server: Server, tmp_path: Path,
                                                  monkeypatch) -> None:
    members, links = cifar10_members(), {}
    for name, value in change.items():
        members.pop(name, None)
        if value == "link":
            links[name] = "/etc/passwd"
        elif value is not None:
            members[name] = value
    serve(server, monkeypatch, archive(members, links))  # its checksum matches: the content is refused
    with pytest.raises(ResdslError, match="nothing was unpacked") as caught:
        load_dataset("cifar10")
    assert message in caught.value.render()
    assert left_in(tmp_path / "cache") == [] and not (tmp_path / "escaped").exists()


def test_a_missing_archive_is_a_clear_error(server: Server, tmp_path: Path, capsys) -> None:
    spec = tmp_path / "tiny.rds"
    spec.write_text((ROOT / "tests/specs/cifar_tiny.rds").read_text())
    assert main(["train", str(spec), "--data", "cifar10", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "cannot download" in err and "HTTP 404" in err and "RESDSL_CIFAR10_URL" in err, err
    assert "Traceback" not in err and left_in(tmp_path / "cache") == []


def test_an_unreachable_server_is_a_clear_error(server: Server, tmp_path: Path, monkeypatch) -> None:
    server.http.server_close()  # nothing listens on the port any more
    with pytest.raises(ResdslError, match="cannot download http://127.0.0.1"):
        load_dataset("cifar10")
    assert left_in(tmp_path / "cache") == []


def test_a_download_past_the_bound_is_refused(server: Server, tmp_path: Path, monkeypatch) -> None:
    serve(server, monkeypatch, archive(cifar10_members()))
    monkeypatch.setattr(LIMITS, "max_download_bytes", 1000)
    with pytest.raises(ResdslError, match="larger than resdsl downloads") as caught:
        load_dataset("cifar10")
    assert "RESDSL_MAX_DOWNLOAD_BYTES" in caught.value.render()
    assert left_in(tmp_path / "cache") == []


@pytest.mark.parametrize("variable, value", [("RESDSL_CIFAR10_URL", "file:///etc/passwd"),
                                             ("RESDSL_CIFAR10_MD5", "not-a-checksum")])
def test_a_bad_override_names_its_variable(variable, value, server: Server, monkeypatch) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ResdslError, match=variable):
        load_dataset("cifar10")
    assert server.requests == []


# ---- image folders, streamed -------------------------------------------------------------------------

def image_folder(root: Path) -> Path:
    """Images of several sizes and modes; classes created out of order, to be sorted."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("dog", "cat"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (9 + i, 11 + 2 * i, 3), dtype=np.uint8)
                image = Image.fromarray(pixels).convert("L" if i == 1 else "RGB")
                image.save(root / split / cls / f"{i}.png")
    return root


def pillow(path: Path, size: tuple[int, int]) -> np.ndarray:
    """The image decoded alone, as an independent reader would: RGB, resized to (width, height)."""
    from PIL import Image
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize(size), dtype=np.float32).transpose(2, 0, 1) / 255


@pytest.fixture
def streamed(tmp_path: Path):
    return fit(load_dataset(f"folder:{image_folder(tmp_path / 'images')}", stream=True), (3, 8, 6))


def test_a_folder_streams_the_same_with_any_workers(streamed, tmp_path: Path) -> None:
    import torch
    assert streamed.shape == (3, 8, 6) and list(streamed.train_y) == [0, 0, 0, 0, 1, 1, 1, 1]  # cat, dog
    batches = [torch.tensor([5, 0, 7]), np.array([2]), torch.tensor([1, 3, 4, 6])]
    alone, parallel = ([x.clone() for x in streamed.images("train", batches, workers)] for workers in (0, 2))
    order = [i for batch in batches for i in batch.tolist()]
    files = sorted((tmp_path / "images/train/cat").iterdir()) + sorted((tmp_path / "images/train/dog").iterdir())
    expected = np.stack([pillow(files[i], (6, 8)) for i in order])
    for got in (alone, parallel):
        assert [x.dtype for x in got] == [torch.float32] * 3
        np.testing.assert_array_equal(torch.cat(got).numpy(), expected)
    (test,) = streamed.images("test", [torch.arange(4)])
    assert test.shape == (4, 3, 8, 6) and list(streamed.test_y) == [0, 0, 1, 1]


def test_a_damaged_image_in_a_worker_is_the_clear_error(streamed, tmp_path: Path) -> None:
    import torch
    (tmp_path / "images/train/dog/3.png").write_bytes(b"not a png")
    with pytest.raises(ResdslError) as caught:
        list(streamed.images("train", [torch.arange(4), torch.arange(4, 8)], workers=2))
    assert type(caught.value) is ResdslError
    text = caught.value.render()
    assert "train/dog/3.png is not an image resdsl can read (UnidentifiedImageError)" in text, text
    assert "= help: remove it, or convert it to PNG" in text and "Traceback" not in text


def test_a_streamed_folder_normalizes_over_an_even_sample(streamed, monkeypatch) -> None:
    import torch

    from resdsl.training import data
    (every,) = (x.numpy() for x in streamed.images("train", [torch.arange(8)]))
    for sample, taken in ((every, "all 8"), (every[[0, 4, 7]], "3")):  # 3.5 rounds to 4
        if taken == "3":
            monkeypatch.setattr(data, "NORMALIZER_SAMPLE", 3)
        mean, std = normalizer(streamed, workers=2 if taken == "3" else 0)
        np.testing.assert_allclose(mean, sample.mean(axis=(0, 2, 3)), rtol=1e-5)
        np.testing.assert_allclose(std, sample.std(axis=(0, 2, 3)) + 1e-6, rtol=1e-5)


def test_fit_of_a_streamed_folder_checks_channels_not_memory(streamed, monkeypatch) -> None:
    monkeypatch.setattr(LIMITS, "max_dataset_bytes", 1)  # streaming holds no decoded dataset
    assert fit(streamed, (3, 300, 300)).shape == (3, 300, 300)
    with pytest.raises(ResdslError, match=r"the spec takes 1x8x8 inputs, folder images has 3x8x6 images"):
        fit(streamed, (1, 8, 8))


def test_in_memory_datasets_hand_out_batches_too() -> None:
    import torch
    digits = load_dataset("digits")
    batches = [torch.tensor([3, 1]), np.array([0])]
    got = list(digits.images("train", batches))
    np.testing.assert_array_equal(torch.cat(got).numpy(), digits.train_x[[3, 1, 0]])
    assert digits.shape == (1, 8, 8) and fit(digits, (3, 16, 16)).shape == (3, 16, 16)


def test_training_on_a_folder_streams_it_and_workers_change_no_result(tmp_path: Path, monkeypatch) -> None:
    import json

    import resdsl.training.data as data
    root = image_folder(tmp_path / "images")
    # Streamed, the decoded dataset is never held: a bound far below it does not matter.
    monkeypatch.setattr(data, "check_dataset_bytes", lambda *a: pytest.fail("the folder was decoded whole"))
    spec = tmp_path / "two.rds"
    spec.write_text("network two {\n input 3x8x8\n classes 2\n stem { conv 4 k3 p1; relu }\n"
                    " head { avgpool; fc classes }\n}\n")
    rows = []
    for workers in ("0", "2"):
        out = tmp_path / f"run{workers}"
        assert main(["train", str(spec), "--data", f"folder:{root}", "--out", str(out), "--epochs", "2",
                     "--batch", "3", "--workers", workers]) == 0
        rows.append([{k: v for k, v in json.loads(line).items() if k not in ("images_per_s", "wall_s")}
                     for line in (out / "metrics.jsonl").read_text().splitlines()])
    assert len(rows[0]) == 2 and rows[0] == rows[1]
