"""Every user mistake gets `file:line:col: error:`, the source line with a caret, a hint, exit 1.

specs/bad/NAME.rds holds one mistake each; specs/bad/NAME.expected its exact message
(regenerate with `pytest --regen-golden`).
"""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import BAD_SPECS, ROOT, check_golden
from resdsl.cli import main

LOCATED = re.compile(r"^\S+:\d+:\d+: error: .+\n +\d+ \| .*\n +\| +\^+", re.M)


@pytest.mark.parametrize("spec", BAD_SPECS, ids=lambda p: p.stem)
def test_bad_spec_message(spec, capsys, regen) -> None:
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if spec.stem != "no_network":  # a file without a network points at its first line, no caret needed
        assert LOCATED.search(err), err
    assert "= help:" in err or "= note:" in err
    check_golden(ROOT / spec.with_suffix(".expected"), err, regen)


def test_bad_spec_through_the_real_cli_exits_1_without_traceback() -> None:
    result = subprocess.run([sys.executable, "-m", "resdsl", "compile", "specs/bad/identity_shapes.rds",
                             "--target", "torch", "-o", "/dev/null"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("specs/bad/identity_shapes.rds:7:5: error: residual add needs equal shapes")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("argv", [["compile", "--target", "nope", "specs/resnet18.rds"],
                                  ["check"], ["frobnicate"], ["check", "specs/does-not-exist.rds"],
                                  ["check", "specs"]])
def test_bad_command_lines_are_user_errors(argv, capsys) -> None:
    assert main(argv) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_internal_errors_exit_2(monkeypatch, capsys) -> None:
    import resdsl.network
    monkeypatch.setattr(resdsl.network, "lower", lambda program: 1 / 0)
    assert main(["check", "specs/resnet18.rds"]) == 2
    assert "internal error" in capsys.readouterr().err


def test_a_coloured_error_is_the_plain_one_with_ansi_colours() -> None:
    from resdsl import ResdslError, loads
    from resdsl.highlight import highlight
    with pytest.raises(ResdslError) as caught:
        loads("block b(w, w) {\n    conv w\n}\n", "bad.rds")
    plain, coloured = caught.value.render(), caught.value.render(highlight)
    assert coloured != plain and "\x1b[1;31merror\x1b[0m" in coloured
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == plain  # the same text, carets where they were
