"""Layer kinds as values: what a block parameter such as `act = relu` or `norm = bn` holds.

A name in an expression that no parameter, `let` or network constant binds, and that names a
layer a spec may write (`relu`, `silu`, `bn`, ...), or `none`, is a layer kind. A block parameter
whose default is a kind takes kinds; the block's body writes it where a layer's op goes
(`act1: act`), and a stage gives another (`bottleneck(64, act=silu)`), as timm's blocks take
`act_layer=` and `norm_layer=`. `none` leaves its layer out. A block given as a kind
(`attn=se`, or `attn=se(reduction=4)` with arguments) is inlined where its slot stands
(`subblocks`). Kinds are not numbers: arithmetic on
one, or one where a width goes, is an error, and so is a number where a kind goes.
"""
from __future__ import annotations

import difflib
from collections.abc import Collection
from dataclasses import dataclass, field

from . import ast
from .diagnostics import ResdslError, Span
from .ops import OPS, ShapeError, fmt_shape, user_ops

NONE = "none"  # the kind that leaves its layer out

# The input a slot's kinds are tried on, to compare the shapes they give: any C x H x W would do.
PROBE = (24, 12, 12)


@dataclass(frozen=True)
class Kind:
    """A layer kind: an op a spec may write as a layer, NONE, or a block; `args`: the arguments
    a block was given with it (`se(reduction=4)`), as values. `span`: where it was written."""
    op: str
    span: Span | None = field(default=None, compare=False)
    args: tuple[tuple[str, object], ...] = ()

    def __str__(self) -> str:
        given = ", ".join(f"{name}={value}" for name, value in self.args)
        return f"{self.op}({given})" if self.args else self.op


def kind_of(name: str, span: Span | None = None, blocks: Collection[str] = ()) -> Kind | None:
    """The kind `name` names, if it names one: a layer, `none`, or one of `blocks` (a block
    given where a layer goes is inlined there, see `subblocks`)."""
    if name == NONE or (name in OPS and OPS[name].user) or name in blocks:
        return Kind(name, span)
    return None


def kind_names(blocks: Collection[str] = ()) -> list[str]:
    return [*user_ops(), NONE, *sorted(blocks)]


HINT = "a layer kind stands where a layer's op goes (`act1: act`); expressions compute numbers"


def not_a_kind(value: object, what: str, span: Span | None) -> None:
    """Refuse a layer kind where a number goes."""
    if isinstance(value, Kind):
        raise ResdslError(f"{what} must be a number, not the layer kind `{value}`", span, hint=HINT)


def kind_params(definition: ast.BlockDef, blocks: Collection[str] = ()) -> dict[str, str]:
    """The parameters of a block that take layer kinds, with the kind each slot is written for:
    those whose default is a kind (`act = relu`, `attn = none`), or another such parameter
    (`gate_act = act`). A block is no default: give `none` and pass the block (`attn=se`), as
    timm's `attn_layer=None`."""
    kinds: dict[str, str] = {}
    earlier: set[str] = set()
    for param in definition.params:
        default = param.default
        if isinstance(default, ast.Var):
            if default.name in kinds:
                kinds[param.name] = kinds[default.name]
            elif default.name not in earlier and kind_of(default.name) is not None:
                kinds[param.name] = default.name
            elif default.name not in earlier and default.name in blocks:
                raise ResdslError(f"the default of `{param.name}` names block `{default.name}`", default.span,
                                  hint=f"a parameter takes blocks where its default is a layer kind: write "
                                       f"`{param.name} = none` and give `{param.name}={default.name}` in the stage")
        earlier.add(param.name)
    return kinds


def check_argument(block: str, param: str, value: object, kinds: dict[str, str], span: Span | None) -> None:
    """A block argument's type against its parameter's: a kind where the default is one, else a number."""
    if param in kinds and not isinstance(value, Kind):
        raise ResdslError(f"`{param}` of block `{block}` takes a layer kind, not {value!r}", span,
                          hint=f"its default is `{kinds[param]}`; give a layer such as `{param}=silu`, "
                               f"or `{param}=none` to leave it out")
    if param not in kinds and isinstance(value, Kind):
        raise ResdslError(f"`{param}` of block `{block}` takes a number, not the layer kind `{value}`", span,
                          hint="a parameter takes layer kinds where its default is one (`act = relu`)")


def unknown_kind(expr: ast.Expr, env: dict, blocks: Collection[str] = ()) -> ResdslError | None:
    """The error for a bare name given where a kind goes that names nothing (`act=silx`)."""
    if isinstance(expr, ast.Var) and expr.name not in env and kind_of(expr.name, None, blocks) is None:
        names = kind_names(blocks)
        close = difflib.get_close_matches(expr.name, names, n=1)
        hint = f"did you mean `{close[0]}`?" if close else f"layer kinds: {', '.join(names)}"
        return ResdslError(f"unknown layer kind `{expr.name}`", expr.span, hint=hint)
    return None


def misfit(given: Kind, default: str, slot: str, why: str, slot_span: Span | None) -> ResdslError:
    return ResdslError(f"layer kind `{given}` does not fit `{slot}`, written for `{default}`: {why}",
                       given.span or slot_span,
                       hint=f"give a kind that, like `{default}`, works with the slot's arguments and "
                            f"keeps its output shape",
                       notes=(("the slot", slot_span),))


def _probe(op: str, attrs: dict | None) -> tuple[int, ...] | None:
    """What kind `op` (`none`: the identity) makes of PROBE; None where its shape rule refuses it
    (a conv's groups not dividing the channels): then nothing can be judged."""
    if op == NONE:
        return PROBE
    try:
        return OPS[op].shape(attrs, [PROBE])
    except ShapeError:
        return None


def shape_change(given: str, attrs: dict | None, default: str, default_attrs: dict | None) -> str | None:
    """Why kind `given` cannot stand where `default` does, judged by the shapes they give PROBE."""
    have, want = _probe(given, attrs), _probe(default, default_attrs)
    if have is None or want is None or have == want:
        return None
    return f"from {fmt_shape(PROBE)} it gives {fmt_shape(have)}, where `{default}` gives {fmt_shape(want)}"
