"""Hostile input: no crash, no hang, no leak, nothing overwritten, no record lost.

Each test is one class of failure found by trying resdsl as an attacker would; tests/hostile/
holds the crafted specs, and tests/fuzz.py runs the same checks on mutants for as long as you like.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import resdsl
from conftest import ROOT, run_bounded
from mutation import hostile_corpus
from resdsl import ResdslError

LOCATED = re.compile(r"^(\S+:\d+:\d+: )?error: ", re.M)
RESNET18 = ROOT / "specs" / "resnet18.rds"
TINY = "network {name} {{\n    input 3x8x8\n    classes 3\n    stem {{ {stem} }}\n    head {{ avgpool; fc classes }}\n}}\n"


def run(argv: list[str], seconds: int = 60) -> tuple[int, str]:
    return run_bounded(argv, seconds)


def cli(*argv: str, cwd: Path = ROOT, timeout: int = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resdsl", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


# ---- the corpus: every command, exit 0 or 1, a located message, no traceback ----------------------
COMMANDS = (["check"], ["summary", "--json"], ["compile", "--target", "torch", "-o", "{tmp}/net.py"],
            ["graph", "-o", "{tmp}/net.dot"], ["fmt"])


@pytest.mark.parametrize("spec", sorted((ROOT / "tests" / "hostile").glob("*.rds")), ids=lambda p: p.stem)
def test_hostile_corpus(spec: Path, tmp_path: Path) -> None:
    for command in COMMANDS:
        code, err = run([a.format(tmp=tmp_path) for a in command] + [str(spec)])
        assert code in (0, 1), err
        assert "Traceback" not in err
        if code == 1:
            assert LOCATED.search(err), err


def test_corpus_covers_specs_bad_too() -> None:
    assert len(hostile_corpus()) > len(list((ROOT / "tests" / "hostile").glob("*.rds")))


# ---- inputs are bounded before they are read -------------------------------------------------------
def test_include_of_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.rds")
    (tmp_path / "net.rds").write_text('include "pipe.rds"\n' + TINY.format(name="n", stem="relu"))
    result = cli("check", str(tmp_path / "net.rds"), timeout=30)
    assert result.returncode == 1
    assert "pipe.rds is not a regular file" in result.stderr


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_include_of_a_device_is_refused(device: str, tmp_path: Path) -> None:
    (tmp_path / "net.rds").write_text(f'include "{device}"\n')
    code, err = run(["check", str(tmp_path / "net.rds")], seconds=20)
    assert code == 1 and "is not a regular file" in err


def test_oversized_spec_is_refused_before_it_is_parsed(tmp_path: Path, monkeypatch) -> None:
    from resdsl.limits import LIMITS
    monkeypatch.setattr(LIMITS, "max_spec_bytes", 1000)
    (tmp_path / "big.rds").write_text("# padding\n" * 200)
    code, err = run(["check", str(tmp_path / "big.rds")])
    assert code == 1 and "larger than resdsl reads" in err


@pytest.mark.parametrize("target, secret", [("/proc/self/environ", "PATH="), ("secret.txt", "hunter2")])
def test_errors_never_echo_a_file_that_is_not_a_spec(target: str, secret: str, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("password: hunter2\n")
    (tmp_path / "net.rds").write_text(f'include "{target}"\n')
    code, err = run(["check", str(tmp_path / "net.rds")])
    assert code == 1
    assert secret not in err
    assert "is not a" in err  # "is not a spec" / "is not a resdsl spec"


def test_terminal_escapes_are_never_written_raw(tmp_path: Path) -> None:
    (tmp_path / "net.rds").write_text('include "x\x1b]0;pwned\x07\x1b[2J.rds"\n# \x1b[31m\n' + TINY.format(name="n", stem="relu"))
    code, err = run(["check", str(tmp_path / "net.rds")])
    assert code == 1
    assert "\x1b" not in err and "\x07" not in err
    assert "\\x1b" in err


def test_excerpt_shows_the_right_line_after_form_feeds_and_line_separators() -> None:
    with pytest.raises(ResdslError) as info:
        resdsl.loads("# a\x0cb\u2028c\u2029d\x1ce\n" + TINY.format(name="n", stem="rleu"), "ff.rds")
    rendered = info.value.render()
    assert rendered.startswith("ff.rds:5:12: error: unknown layer `rleu`")
    assert "\n 5 |     stem { rleu }\n" in rendered


# ---- no recursion depth or size depends on the input -----------------------------------------------
@pytest.mark.parametrize("expr", ["1" + " + 1" * 499, "-" * 10000 + "1", "(" * 5000 + "1" + ")" * 5000])
def test_deep_expressions_are_bounded(expr: str) -> None:
    text = f"network n {{\n input 3x8x8\n let w = {expr}\n classes 3\n head {{ avgpool; fc classes }}\n}}\n"
    try:
        resdsl.loads(text)
    except ResdslError as exc:
        assert "nests more than" in str(exc)


NESTED = ("block b(w) {{\n conv1: conv w k3 p1\n{body} mul b0\n add shortcut\n}}\n"
          "network n {{\n input 3x8x8\n classes 3\n stem {{ conv 4 k3 p1 }}\n stage layer1: b(4) x 1\n"
          " head {{ avgpool; fc classes }}\n}}\n")


def nested_branches(depth: int, expr: str = "w") -> str:
    body = "".join(f" b{i}: branch {{\n" for i in range(depth)) + f" conv {expr} k1\n" + " }\n" * depth
    return NESTED.format(body=body)


def test_branches_nested_past_the_bound_are_located_errors(tmp_path: Path) -> None:
    from resdsl.depth import MAX_BRANCH_DEPTH
    spec = tmp_path / "deep.rds"
    spec.write_text(nested_branches(250))
    for command in COMMANDS:
        code, err = run([a.format(tmp=tmp_path) for a in command] + [str(spec)])
        assert code == 1, err
        assert err.startswith(f"{spec}:{MAX_BRANCH_DEPTH + 3}:2: error: branches nest more than "
                              f"{MAX_BRANCH_DEPTH} levels deep here"), err


def test_at_every_bound_at_once_nothing_recurses_too_deep(tmp_path: Path) -> None:
    # Branches as deep as they may nest, holding an expression as deep as it may nest: every
    # command answers (the nested branches are never joined: a located error), none overflows.
    from resdsl.depth import MAX_BRANCH_DEPTH, MAX_EXPR_DEPTH
    spec = tmp_path / "deep.rds"
    spec.write_text(nested_branches(MAX_BRANCH_DEPTH, "w" + " + 0" * MAX_EXPR_DEPTH))
    for command in COMMANDS:
        code, err = run([a.format(tmp=tmp_path) for a in command] + [str(spec)])
        assert code in (0, 1) and "Traceback" not in err, err
        if code == 1:
            assert LOCATED.search(err) and "nests more than" not in err, err


def _lines_run(work) -> int:
    """How many lines of Python `work()` runs: a measure of its work that no machine's load changes."""
    count = 0

    def trace(frame, event, arg):
        nonlocal count
        count += event == "line"
        return trace
    sys.settrace(trace)
    try:
        work()
    finally:
        sys.settrace(None)
    return count


@pytest.mark.parametrize("statement", ["b{i}: branch {{ relu }}\n add b{i}", "c{i}.0: relu"])
def test_compile_to_torch_is_linear_in_the_size_of_a_block(statement: str) -> None:
    # Scanning the block per node made 4000 branches take 37 s; benchmarks/branches.py times it.
    # (Work done inside one C call, such as splitting the whole text, counts one line: the
    # benchmark's CPU ratio is the check for that.)
    def lines(n: int) -> int:
        body = "".join(" " + statement.format(i=i) + "\n" for i in range(n))
        text = NESTED.format(body=body).replace(" mul b0\n", "")
        return _lines_run(lambda: resdsl.loads(text).torch_source())
    lines(1)  # what is done once (the grammar and the template loaded) is not the block's cost
    small, large = lines(100), lines(200)
    assert large < 2.2 * small, (small, large)


def test_naming_many_unlabeled_layers_is_linear_and_skips_taken_names() -> None:
    net = resdsl.loads(TINY.format(name="n", stem="relu; relu_2: relu; relu; relu; relu"))
    relus = [n for n in net.graph.order() if net.graph.node(n).op == "relu"]
    assert relus == ["relu", "relu_2", "relu_1", "relu_3", "relu_4"]


# ---- outputs: nothing overwritten that should not be ----------------------------------------------
@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "net.rds"
    path.write_text(TINY.format(name="tiny", stem="conv 4 k3 p1; relu"))
    return path


def test_output_onto_the_input_spec_is_refused(spec: Path) -> None:
    before = spec.read_bytes()
    for target in ("torch", "onnx"):
        code, err = run(["compile", str(spec), "--target", target, "-o", str(spec)])
        assert code == 1 and "is an input of this command" in err
    assert spec.read_bytes() == before


def test_output_onto_an_included_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "blocks.rds").write_text("block b(w) {\n conv w k3 p1\n add shortcut\n}\n")
    (tmp_path / "net.rds").write_text('include "blocks.rds"\n' + TINY.format(name="n", stem="relu"))
    code, err = run(["compile", str(tmp_path / "net.rds"), "--target", "torch", "-o", str(tmp_path / "blocks.rds")])
    assert code == 1 and "is an input" in err


def test_symlinks_are_not_replaced_or_followed_unless_asked(spec: Path, tmp_path: Path) -> None:
    target, link = tmp_path / "target.py", tmp_path / "link.py"
    target.write_text("old")
    link.symlink_to(target)
    code, err = run(["compile", str(spec), "-o", str(link)])
    assert code == 1 and "symbolic link" in err and "--follow-symlinks" in err
    assert link.is_symlink() and target.read_text() == "old"
    code, err = run(["compile", str(spec), "-o", str(link), "--follow-symlinks"])
    assert code == 0, err
    assert link.is_symlink() and "def build" in target.read_text()


@pytest.mark.parametrize("where", ["/dev/null", "DIR", "FIFO", "FILE/under-a-file.py", "/proc/x.py"])
def test_outputs_that_are_not_regular_files_are_refused(where: str, spec: Path, tmp_path: Path) -> None:
    if where == "FIFO":
        os.mkfifo(tmp_path / "fifo")
    path = {"DIR": str(tmp_path), "FIFO": str(tmp_path / "fifo"),
            "FILE/under-a-file.py": str(spec) + "/under-a-file.py"}.get(where, where)
    code, err = run(["compile", str(spec), "-o", path])
    assert code == 1, err
    assert err.startswith("error: ") and "Traceback" not in err
    if where == "/dev/null":
        assert Path("/dev/null").is_char_device()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory_is_a_user_error(spec: Path, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    code, err = run(["compile", str(spec), "-o", str(ro / "x.py")])
    assert code == 1 and "cannot write" in err


def test_full_stdout_is_exit_1(spec: Path) -> None:
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "resdsl", "summary", "--json", str(spec)], stdout=full,
                                stderr=subprocess.PIPE, text=True, timeout=60)
    assert result.returncode == 1
    assert "No space left on device" in result.stderr and "Traceback" not in result.stderr


def test_default_output_name_never_shadows_a_module(tmp_path: Path) -> None:
    (tmp_path / "torch.rds").write_text(TINY.format(name="torch", stem="relu"))
    result = cli("compile", "torch.rds", cwd=tmp_path)
    assert result.returncode == 1 and "would shadow the Python module `torch`" in result.stderr
    assert not (tmp_path / "torch.py").exists()
    # Its own earlier output is not a module to protect: compiling twice works.
    (tmp_path / "mynet.rds").write_text(TINY.format(name="mynet", stem="relu"))
    for _ in range(2):
        assert cli("compile", "mynet.rds", cwd=tmp_path).returncode == 0


# ---- generated source: everything from outside is escaped where it lands ---------------------------
AUDIT = r'''
import importlib.util, sys, torch
names = sys.argv[1:]
seen = []
BAD = ("os.system", "subprocess.Popen", "os.exec", "os.spawn", "os.posix_spawn", "socket.", "os.remove",
       "os.rename", "os.unlink", "shutil.", "os.rmdir", "os.mkdir", "os.chmod", "os.symlink", "ctypes.")
def hook(event, args):
    if event.startswith(BAD) or (event == "open" and isinstance(args[1], str) and set(args[1]) & set("wax+")):
        seen.append((event, repr(args)[:200]))
sys.addaudithook(hook)
for path in names:
    spec = importlib.util.spec_from_file_location("generated", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build(0)
print(repr(seen))
'''


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(file_name=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
                         min_size=1, max_size=40),
       label=st.one_of(st.text(min_size=1, max_size=12), st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,8}", fullmatch=True)),
       comment=st.text(max_size=40))
def test_names_from_anywhere_in_unicode_never_inject_code(tmp_path_factory, file_name: str, label: str,
                                                          comment: str) -> None:
    directory = tmp_path_factory.mktemp("names")
    try:
        spec = directory / (file_name + ".rds")
        spec.write_text(f"# {comment.replace(chr(10), ' ')}\n" + TINY.format(name="n", stem=f"{label}: relu"))
    except (OSError, UnicodeEncodeError, ValueError):
        return  # not a name this filesystem takes
    out = directory / "generated.py"
    code, err = run(["compile", str(spec), "-o", str(out)])
    assert code in (0, 1), err
    if code == 1:
        assert re.search(r":\d+:\d+: error: ", err) and not re.search(r"[\x00-\x1f\x7f]", err.replace("\n", "")), err
        return
    result = subprocess.run([sys.executable, "-c", AUDIT, str(out)], cwd=directory, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout
    assert sorted(p.name for p in directory.iterdir()) == sorted([spec.name, out.name]), "a side effect"


# ---- ONNX: any label, any head --------------------------------------------------------------------
def _onnx_equals_torch(text: str, tmp_path: Path) -> tuple[str, tuple]:
    import numpy as np
    import onnxruntime as ort
    import torch
    from resdsl.backends.onnx_export import to_onnx
    from resdsl.backends.weights import load_weights
    net = resdsl.loads(text)
    model = to_onnx(net.graph, load_weights(net.graph, None, 0))  # to_onnx runs the full checker
    session = ort.InferenceSession(model.SerializeToString())
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8), dtype=np.float32)
    (got,) = session.run(None, {"input": x})
    with torch.no_grad():
        want = net.to_torch(seed=0).eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    return session.get_outputs()[0].name, got.shape


def test_onnx_takes_layers_labelled_input_and_logits(tmp_path: Path) -> None:
    name, shape = _onnx_equals_torch(TINY.format(name="n", stem="input: conv 4 k3 p1; logits: relu; features: bn"),
                                     tmp_path)
    assert (name, shape) == ("logits", (2, 3))


def test_a_network_ending_in_a_feature_map_is_reported_and_exported_as_one(tmp_path: Path) -> None:
    text = "network n {\n    input 3x8x8\n    classes 3\n    stem { conv 5 k3 s2 p1; relu }\n}\n"
    (tmp_path / "n.rds").write_text(text)
    result = cli("check", str(tmp_path / "n.rds"))
    assert "3x8x8 -> 5x4x4 feature map" in result.stdout
    assert _onnx_equals_torch(text, tmp_path) == ("features", (2, 5, 4, 4))


# ---- records: a damaged work directory is repaired or named, never lost ----------------------------
# Damaged records and workloads: tests/test_untrusted_databases.py, which knows their format.
@pytest.mark.parametrize("damage", ['{"layout": "NH', "[]", '{"nonsense": 1}', "\xff"])
def test_a_damaged_lowering_json_is_named(damage: str, tmp_path: Path) -> None:
    from resdsl.tvm.workdir import LOWERING, WorkDir
    (tmp_path / LOWERING).write_text(damage, encoding="latin-1")
    with pytest.raises(ResdslError, match=re.escape(str(tmp_path / LOWERING)) + "(: | is not UTF-8)"):
        WorkDir(tmp_path).lowering()
