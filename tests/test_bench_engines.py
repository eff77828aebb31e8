"""`resdsl bench`'s ONNX rows: ONNX Runtime and OpenVINO run resdsl's ONNX model with the same
weights and input as PyTorch eager, and give its answer."""
from __future__ import annotations

import json

import pytest

from resdsl.cli import main

pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def _threads_restored(monkeypatch):
    """bench sets the process's torch threads (and TVM's) to --threads; later tests in this process
    compare an in-process training run with a subprocess's, bit for bit, at the default count."""
    import torch
    threads = torch.get_num_threads()
    monkeypatch.setenv("TVM_NUM_THREADS", "1")  # undone (unset) after the test
    yield
    torch.set_num_threads(threads)


def _bench(capsys, engines: str, batch: int = 1) -> dict:
    assert main(["bench", "specs/cifar/resnet20.rds", "--engines", engines, "--budget", "0.2",
                 "--rounds", "2", "--threads", "1", "--batch", str(batch), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["batch"] == batch
    return {r["engine"]: r for r in report["results"]}


@pytest.mark.parametrize("batch", [1, 3])
def test_openvino_gives_pytorchs_answer(capsys, batch) -> None:
    pytest.importorskip("openvino")
    rows = _bench(capsys, "torch,onnxruntime,openvino", batch)
    assert set(rows) == {"torch", "onnxruntime", "openvino"}
    for engine in ("onnxruntime", "openvino"):
        assert rows[engine]["median_ms"] > 0 and rows[engine]["runs"] >= 2
        assert rows[engine]["rel_err"] < 1e-4, rows[engine]  # float32: f32 precision hint honoured
    assert rows["openvino"]["vs_onnxruntime"] == pytest.approx(rows["openvino"]["median_ms"]
                                                               / rows["onnxruntime"]["median_ms"])
    for row in rows.values():  # throughput at the median latency: what a batch beyond 1 is for
        assert row["images_per_s"] == pytest.approx(batch * 1e3 / row["median_ms"])


def test_a_row_whose_engine_is_not_installed_says_how_to_get_it(capsys, monkeypatch) -> None:
    from resdsl import extras
    real = extras.missing
    monkeypatch.setattr(extras, "missing", lambda *m: ["openvino"] if "openvino" in m else real(*m))
    rows = _bench(capsys, "torch,onnxruntime,openvino")
    assert rows["openvino"]["median_ms"] is None
    assert rows["openvino"]["note"] == "skipped: needs pip install 'resdsl[openvino]'"
    assert rows["onnxruntime"]["rel_err"] < 1e-4
