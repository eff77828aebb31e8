"""`resdsl fmt`: idempotent, keeps comments, and never changes what a spec means."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings

import resdsl
from conftest import ROOT, SPECS, TEST_SPECS
from resdsl.cli import main
from resdsl.formatter import format_source
from strategies import networks


def same_network(a: str, b: str, base_dir=ROOT) -> None:
    na, nb = resdsl.loads(a, "a.rds", base_dir), resdsl.loads(b, "b.rds", base_dir)
    assert na.summary() == nb.summary()
    assert na.torch_source() == nb.torch_source()


@pytest.mark.parametrize("spec", SPECS + TEST_SPECS + [ROOT / "resdsl/prelude.rds"], ids=str)
def test_bundled_specs_are_formatted(spec) -> None:
    text = (ROOT / spec).read_text()
    assert format_source(text, str(spec)) == text


MESSY = """# header

block  b( w,stride=1, e=1 ){   # trailing on header
  # lead
  c1 : conv w*(2+e) kernel=3 s=stride p=1  # trail
  bn;relu
  conv2: conv (w - (1 - 2)) // 2 k1 g=1
  # end of block
}
network  n{ stem{conv 8 k3 p1 ; bn}
 classes 10
 input 3x32x32
 stage s1 : b(8, e = 2) x 2 stride 2   shortcut A
 head { avgpool
   # inside head
   fc classes }
}
# trailing file comment
"""


def test_messy_spec_formats_canonically_keeping_comments() -> None:
    out = format_source(MESSY)
    assert format_source(out) == out
    comments = re.findall(r"#[^\n]*", MESSY)
    assert re.findall(r"#[^\n]*", out) == comments  # every comment, in order
    assert "    c1: conv w * (2 + e) k3 s=stride p1  # trail" in out
    assert "    conv2: conv (w - (1 - 2)) // 2 k1 g1" in out
    assert "    stage s1: b(8, e=2) x 2 stride 2 shortcut A" in out
    same_network(MESSY, out)


@settings(max_examples=80, deadline=None)
@given(networks())
def test_formatting_random_networks_is_idempotent_and_meaning_preserving(text: str) -> None:
    out = format_source(text)
    assert format_source(out) == out
    try:
        original = resdsl.loads(text, "a.rds")
    except resdsl.ResdslError as exc:  # then the formatted text fails the same way
        with pytest.raises(resdsl.ResdslError) as again:
            resdsl.loads(out, "a.rds")
        assert again.value.diagnostic.message == exc.diagnostic.message
        return
    formatted = resdsl.loads(out, "a.rds")
    assert original.summary() == formatted.summary()
    assert original.torch_source() == formatted.torch_source()


def test_fmt_check_and_write(tmp_path, capsys) -> None:
    path = tmp_path / "messy.rds"
    path.write_text(MESSY)
    assert main(["fmt", "--check", str(path)]) == 1
    assert "would reformat" in capsys.readouterr().err
    assert path.read_text() == MESSY
    assert main(["fmt", "--write", str(path)]) == 0
    assert main(["fmt", "--check", str(path)]) == 0
    assert path.read_text() == format_source(MESSY)


def test_fmt_of_broken_text_is_a_located_error(tmp_path, capsys) -> None:
    path = tmp_path / "broken.rds"
    path.write_text("network n {\n    input 3x\n}\n")
    assert main(["fmt", str(path)]) == 1
    assert f"{path}:2:11: error:" in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ("block b(w, w) {\n    conv w\n}\n", "two parameters named `w`"),
    ("block b(w) {\n    se: branch {\n        let x = w\n        conv x\n    }\n}\n", "let"),
])
def test_fmt_refuses_a_spec_that_breaks_a_rule(text, message, tmp_path, capsys) -> None:
    # The semantic checks run after parsing (resdsl/checks.py): fmt runs them too, as check does.
    with pytest.raises(resdsl.ResdslError, match=message):
        format_source(text, "bad.rds")
    (tmp_path / "bad.rds").write_text(text)
    assert main(["fmt", str(tmp_path / "bad.rds")]) == 1
    assert "bad.rds:" in capsys.readouterr().err
