"""The rules of a channel split, a channel shuffle and a join that weights branches by a softmax
across them: Res2Net's, SKNet's and ShuffleNet's split input, ShuffleNet's shuffle, SKNet's and
ResNeSt's attention over their branches."""
from __future__ import annotations

from .rules import fmt_shape
from .schema import Attrs, Shape, ShapeError


def chunk_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    """Chunk `index` of the input's channels cut into `n` equal chunks (torch.chunk's, every one
    the same width)."""
    c, *rest = ins[0]
    i, n = attrs["index"], attrs["n"]
    if c % n:
        raise ShapeError(f"chunk n={n} does not divide the channels ({c})",
                         hint=f"split into a number of chunks that divides {c}: every chunk is equally wide")
    if i >= n:
        raise ShapeError(f"chunk {i} of {n}: chunks are numbered 0 to {n - 1}",
                         hint=f"`chunk 0 n={n}` is the first, `chunk {n - 1} n={n}` the last")
    return (c // n, *rest)


def shuffle_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    """The input's channels reordered: as `groups` rows of C / groups, read column by column
    (channel i * C / g + j goes to j * g + i), so that each group after it holds channels of
    every group before it."""
    c, *rest = ins[0]
    g = attrs["groups"]
    if c % g:
        raise ShapeError(f"shuffle groups={g} does not divide the channels ({c})",
                         hint=f"shuffle in a number of groups that divides {c}: every group is equally wide")
    return (c, *rest)


def select_shape(attrs: Attrs, ins: list[Shape]) -> Shape:
    """P branches of one shape CxHxW, and the logits (P*C)x1x1 laid out branch-major (timm's view
    (N, P, C, 1, 1)): branch p's weight for channel c is softmax over p of logits[p * C + c]."""
    *branches, logits = ins
    if any(len(s) != 3 for s in branches) or len(set(branches)) != 1:
        raise ShapeError("select needs branches of one shape, not " + " and ".join(fmt_shape(s) for s in branches),
                         hint="give every branch the same channels and resolution")
    c = branches[0][0]
    want = (len(branches) * c, 1, 1)
    if logits != want:
        raise ShapeError(f"select's logits (the current value) must be {fmt_shape(want)}: {len(branches)} "
                         f"branches of {c} channels, not {fmt_shape(logits)}",
                         hint=f"end the attention with a conv to {len(branches)} times the branches' "
                              f"channels on a pooled map (`conv {want[0]}` after `avgpool`)")
    return branches[0]

