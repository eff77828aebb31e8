"""Weights files are untrusted input: nothing in one runs, and whatever is wrong with one is a user
error naming the file and the key, for every command and target that takes `--weights`."""
from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import resdsl
from resdsl.backends.weights import load_weights
from resdsl.cli import main
from resdsl.diagnostics import ResdslError
from resdsl.limits import LIMITS

ROOT = Path(__file__).resolve().parent.parent
SPEC = str(ROOT / "tests" / "specs" / "digits_resnet.rds")  # conv, bn, fc and a shortcut: every kind of key


@pytest.fixture(scope="module")
def net():
    return resdsl.load(SPEC)


@pytest.fixture(scope="module")
def state(net) -> dict[str, torch.Tensor]:
    """A genuine state_dict of the generated module, BN statistics not at their init."""
    model = net.to_torch(seed=3)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buffer.uniform_(0.5, 2.0)
    return model.state_dict()


class Payload:
    """Unpickled by anything that runs pickles, it creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def saved(path: Path, obj, **kwargs) -> Path:
    torch.save(obj, path, **kwargs)
    return path


def refusal(net, path: Path) -> str:
    with pytest.raises(ResdslError) as info:
        load_weights(net.graph, path)
    message = info.value.render()
    assert str(path) in message  # every refusal names the file
    return message


def test_a_genuine_state_dict_passes_as_the_modules_own_keys(net, state, tmp_path) -> None:
    weights = load_weights(net.graph, saved(tmp_path / "w.pt", state))
    assert set(weights) == set(state)  # the BN counters too, so a module can load them strictly
    for key, value in state.items():
        assert np.array_equal(weights[key], value.numpy())
        assert weights[key].dtype == (np.int64 if key.endswith("num_batches_tracked") else np.float32)
    model = net.to_torch()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)


def test_counters_may_be_left_out_and_half_precision_is_widened(net, state, tmp_path) -> None:
    light = {k: v.half() for k, v in state.items() if not k.endswith("num_batches_tracked")}
    weights = load_weights(net.graph, saved(tmp_path / "w.pt", light))
    assert weights["bn1.num_batches_tracked"].shape == () and weights["bn1.num_batches_tracked"] == 0
    assert weights["conv1.weight"].dtype == np.float32


@pytest.mark.parametrize("change, expected", [
    ({"bn1.running_mean": lambda t: torch.full_like(t, float("nan"))},
     "`bn1.running_mean` holds NaN at index 0"),
    ({"conv1.weight": lambda t: t.index_fill(3, torch.tensor([2]), float("-inf"))},
     "`conv1.weight` holds -inf at index 0,0,0,2"),
    ({"fc.weight": lambda t: t.double().index_fill(0, torch.tensor([1]), 1e300)},
     "`fc.weight` holds a value beyond float32's range"),
    ({"layer1.0.bn2.running_var": lambda t: t.index_fill(0, torch.tensor([5]), -0.5)},
     "`layer1.0.bn2.running_var` holds the negative variance -0.5 at channel 5"),
    ({"bn1.weight": lambda t: t.to(torch.complex64)}, "`bn1.weight` is complex64"),
    ({"bn1.weight": lambda t: t.to(torch.int8)}, "`bn1.weight` is int8"),
    ({"bn1.bias": lambda t: t.bool()}, "`bn1.bias` is bool"),
    ({"bn1.weight": lambda t: t.to_sparse()}, "`bn1.weight` is a sparse_coo tensor"),
    ({"bn1.weight": lambda t: torch.empty_like(t, device="meta")}, "`bn1.weight` is a meta tensor"),
    ({"bn1.weight": lambda t: [1.0, 2.0]}, "`bn1.weight` holds a list, not a tensor"),
    ({"conv1.weight": lambda t: t.reshape(-1)}, "`conv1.weight` has shape 72, the network needs 8x1x3x3"),
    ({"bn1.num_batches_tracked": lambda t: t.float()}, "`bn1.num_batches_tracked` holds a float32 tensor"),
    ({"fc.bias": None}, "the weights lack `fc.bias`"),
    ({"fc2.weight": lambda t: torch.zeros(1)}, "`fc2.weight` is not a parameter or buffer of digits_resnet"),
    ({"model": lambda t: {}}, "`model` holds a dict, not a tensor: a checkpoint"),
])
def test_damaged_weights_are_refused_naming_the_key(net, state, tmp_path, change, expected) -> None:
    damaged = dict(state)
    for key, fn in change.items():
        if fn is None:
            del damaged[key]
        else:
            damaged[key] = fn(state.get(key, torch.zeros(1)))
    assert expected in refusal(net, saved(tmp_path / "w.pt", damaged))


def test_what_is_not_a_state_dict_is_refused(net, state, tmp_path) -> None:
    assert "holds a list, not a state_dict" in refusal(net, saved(tmp_path / "a.pt", [state]))
    numbered = {**state, 7: torch.zeros(1)}
    assert "has a key that is not a name: 7" in refusal(net, saved(tmp_path / "b.pt", numbered))
    # A key is quoted escaped and cut short: it may be a megabyte of terminal escapes.
    message = refusal(net, saved(tmp_path / "c.pt", {**state, "\x1b[2J" + "k" * 10**6: torch.zeros(1)}))
    assert "\x1b" not in message and len(message) < 1000
    for name, data in (("empty", b""), ("text", b"hello"), ("zip", b"PK\x03\x04 and then nothing")):
        path = tmp_path / f"{name}.pt"
        path.write_bytes(data)
        assert "torch.save" in refusal(net, path)


def test_archives_that_would_inflate_are_refused_before_torch_reads_them(net, state, tmp_path) -> None:
    plain = saved(tmp_path / "plain.pt", state).read_bytes()
    # The same records deflated: torch.load would inflate each to the size the archive claims.
    deflated = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(plain)) as source, zipfile.ZipFile(deflated, "w") as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info), compress_type=zipfile.ZIP_DEFLATED)
    (tmp_path / "deflated.pt").write_bytes(deflated.getvalue())
    assert "compressed records" in refusal(net, tmp_path / "deflated.pt")
    # A record whose central directory entry claims 4 GiB more than the file holds.
    at = plain.rindex(b"PK\x01\x02")
    claims = plain[:at + 24] + struct.pack("<I", 0xFFFFFFF0) + plain[at + 28:]
    (tmp_path / "claims.pt").write_bytes(claims)
    assert "damaged zip archive" in refusal(net, tmp_path / "claims.pt")
    # The pre-1.6 format allocates the sizes its pickle names before reading any data.
    legacy = saved(tmp_path / "legacy.pt", state, _use_new_zipfile_serialization=False)
    assert "saved again" in refusal(net, legacy)


def test_weights_files_are_bounded_and_regular(net, state, tmp_path, monkeypatch) -> None:
    path = saved(tmp_path / "w.pt", state)
    monkeypatch.setattr(LIMITS, "max_weights_bytes", path.stat().st_size - 1)
    assert "larger than resdsl reads" in refusal(net, path)
    monkeypatch.undo()
    os.mkfifo(tmp_path / "fifo.pt")
    assert "not a regular file" in refusal(net, tmp_path / "fifo.pt")  # and did not block
    assert "is a directory" in refusal(net, tmp_path)
    assert "file not found" in refusal(net, tmp_path / "nowhere.pt")


# ---- through the command line: payloads run nowhere -----------------------------------------------------

def payloads(tmp_path: Path, state: dict, marker: Path) -> dict[str, Path]:
    """A code-running object inside a state_dict, as torch.save and its legacy format write it,
    and in a bare pickle."""
    inside = {**state, "bn1.weight": Payload(marker)}
    bare = tmp_path / "bare.pt"
    bare.write_bytes(pickle.dumps(inside))
    return {"zip": saved(tmp_path / "zip.pt", inside),
            "legacy": saved(tmp_path / "legacy.pt", inside, _use_new_zipfile_serialization=False),
            "pickle": bare}


@pytest.mark.parametrize("command", [
    ["compile", "--target", "onnx", "-o", "{tmp}/net.onnx"],
    ["compile", "--target", "torch", "-o", "{tmp}/net.py"],
    ["compile", "--target", "llvm", "-o", "{tmp}/net.so"],
    ["bench", "--engines", "torch", "--budget", "0.01", "--rounds", "1"],
    ["tune", "--trials", "1", "--work-dir", "{tmp}/tune"],
], ids=lambda c: " ".join(c[:3]))
def test_a_planted_payload_never_runs(state, tmp_path, capsys, command) -> None:
    marker = tmp_path / "MARKER"
    files = payloads(tmp_path, state, marker)
    argv = [command[0], SPEC] + [a.format(tmp=tmp_path) for a in command[1:]]
    for kind, path in files.items():
        assert main(argv + ["--weights", str(path)]) == 1, kind
        err = capsys.readouterr().err
        assert str(path) in err and "Traceback" not in err and "weights_only=False" not in err, err
        assert not marker.exists(), f"the {kind} payload ran"
    assert "asks to run `posix.system`" in refusal(resdsl.load(SPEC), files["zip"])
    assert not any(tmp_path.glob("net.*")) and not (tmp_path / "tune").exists()  # nothing written


def test_torch_target_checks_the_weights_and_says_how_to_load_them(net, state, tmp_path, capsys) -> None:
    good = saved(tmp_path / "w.pt", state)
    assert main(["compile", SPEC, "--weights", str(good), "-o", str(tmp_path / "net.py")]) == 0
    err = capsys.readouterr().err
    assert f"checked {good}" in err and "weights_only=True" in err
    bad = saved(tmp_path / "bad.pt", {**state, "bn1.running_var": -state["bn1.running_var"]})
    assert main(["compile", SPEC, "--weights", str(bad), "-o", str(tmp_path / "bad.py")]) == 1
    assert "`bn1.running_var` holds the negative variance" in capsys.readouterr().err
    assert not (tmp_path / "bad.py").exists()


def test_bench_runs_the_weights_it_was_given(net, state, tmp_path, capsys) -> None:
    import json
    good = saved(tmp_path / "w.pt", state)
    assert main(["bench", SPEC, "--engines", "torch,onnxruntime", "--budget", "0.01", "--rounds", "1",
                 "--threads", "1", "--json", "--weights", str(good)]) == 0
    rows = {r["engine"]: r for r in json.loads(capsys.readouterr().out)["results"]}
    assert rows["onnxruntime"]["rel_err"] < 1e-4


@pytest.mark.parametrize("argv, message", [
    (["compile", SPEC, "--seed", "3", "-o", "{tmp}/net.py"], "--seed does not apply to --target torch"),
    (["compile", SPEC, "--target", "onnx", "--seed", "3", "--weights", "{tmp}/w.pt", "-o", "{tmp}/net.onnx"],
     "--seed and --weights both set the weights"),
    (["compile", SPEC, "--target", "torch", "-o", "{tmp}/net.onnx"], "-o net.onnx asks for an ONNX model, but --target torch"),
    (["compile", SPEC, "--target", "onnx", "-o", "{tmp}/net.SO"], "pass --target llvm or --target cuda"),
    (["compile", SPEC, "--target", "llvm", "-o", "{tmp}/net.py"], "--target llvm writes a shared library"),
])
def test_flags_that_would_be_ignored_are_refused(state, tmp_path, capsys, argv, message) -> None:
    saved(tmp_path / "w.pt", state)
    assert main([a.format(tmp=tmp_path) for a in argv]) == 1
    assert message in capsys.readouterr().err
    assert not any(tmp_path.glob("net.*"))
