"""Hypothesis strategies for random .rds networks, valid and invalid."""
from __future__ import annotations

from hypothesis import strategies as st

from resdsl.ops import FLAG, FLOAT, OPS, user_ops
from resdsl.ops.rules import same_shape

# Every op a spec may write, from the op definitions: a new op is drawn without an edit here.
LAYER_OPS = tuple(user_ops())
# The layer kinds an activation slot (`act1: act`) can take: every op that keeps its input's shape
# and needs no argument; `none` leaves the layer out. A norm slot (`bn1: norm`) takes bn or none:
# gn's default 32 groups divide no width drawn here, so stems and heads draw gn with a group count.
ACT_KINDS = tuple(op.name for op in OPS.values() if op.user and op.shape is same_shape
                  and all(a.default is not None for a in op.attrs)) + ("none",)
NORM_KINDS = ("bn", "none")
KIND_BLOCKS = {"basic", "bottleneck", "bottleneck_v1", "preact_basic", "preact_bottleneck", "highway",
               "grouped"}  # those with `act` and `norm`
# What the bottleneck's `attn` slot takes: the prelude's `se` and `eca` blocks, with or without arguments.
ATTN_KINDS = ("se", "se(reduction=2)", "eca", "eca(kernel=3)", "none")

BLOCKS = ("basic", "bottleneck", "bottleneck", "bottleneck_v1", "preact_basic", "preact_bottleneck", "highway",
          "grouped", "gated_se", "paths", "wide", "convnext", "selective", "shuffled", "factorised")
POLICIES = ("A", "B", "B", "C", "gated", "none", "identity_or_none", "avg_down", "proj_only")
CUSTOM_BLOCK = """
block grouped(width, stride = 1, groups = 2, act = relu, norm = bn) {
    let inner = width * groups
    conv1: conv inner k1
    bn1: norm
    act
    conv2: conv inner k3 s=stride p1 g=groups
    add shortcut
}

# Branches, joins, the newer ops and a user policy, for random networks to combine.
policy proj_only(channels, stride) {
    downsample.0: conv channels s=stride
}

block gated_se(width, stride = 1) {
    conv1: conv width k3 s=stride p2 dilation=2
    bn1: bn
    act: leaky_relu 0.2
    drop_path 0.1 * block_index / num_blocks
    se: branch {
        avgpool
        fc1: conv width bias=1
        sigmoid
    }
    mul se
    add shortcut
}

block paths(width, stride = 1) {
    a: branch {
        conv width k3 s=stride p1
        bn
    }
    b: branch input {
        avgpool k=stride s=stride ceil=1 count_pad=0
        conv width
    }
    concat a b
    dropout 0.1
    add shortcut
}

# ConvNeXt's: LayerNorm over channels, per-pixel linear layers, a layer scale of either shape.
block convnext(width, stride = 1, dims = 1) {
    conv_dw: conv width k3 s=stride p1 bias=1
    norm: ln
    mlp.fc1: linear width * 2
    mlp.act: gelu
    mlp.fc2: linear width
    gamma: scale width dims=dims
    add shortcut
}

# SKNet's and ResNeSt's: a channel split, its paths weighted back by a softmax across them.
block selective(width, stride = 1) {
    conv1: conv width * 2 k3 s=stride p1
    a: branch { chunk 0 }
    chunk 1 n=2
    conv width k3 p1
    c: relu
    add a
    avgpool
    conv width * 2
    select a c
    add shortcut
}

# ShuffleNet V2's unit: half the channels through a path, concatenated back and shuffled.
block shuffled(width, stride = 1) {
    conv1: conv width * 2 k3 s=stride p1
    a: branch { chunk 0 }
    chunk 1
    conv width
    c: relu
    concat a c
    shuffle 2
    add shortcut
}

# Inception-v3's factorised 3x3: a 1x3 then a 3x1, non-square kernels and paddings.
block factorised(width, stride = 1) {
    conv1: conv width k1x3 p0x1
    relu
    conv2: conv width k3x1 s=stride p1x0
    add shortcut
}

block wide(width, stride = 1) {
    bn1: bn
    preact: relu
    conv1: conv width k3 s=stride p1
    dropout 0.3
    conv2: conv width k3 p1
    add shortcut from preact
}
"""


@st.composite
def stems(draw) -> str:
    layers = []
    if draw(st.booleans()):
        k = draw(st.sampled_from([1, 3, 5, 7]))
        kw = draw(st.sampled_from([k, k, 1, 7]))  # at times (height, width), as Inception-v3's 1x7
        out, s = draw(st.integers(1, 12)), draw(st.integers(1, 2))
        window = f"k{k} s{s} p{k // 2}" if kw == k else f"k{k}x{kw} s{s} p{k // 2}x{kw // 2}"
        layers.append(f"conv1: conv {out} {window}")
        groups = draw(st.sampled_from([g for g in range(1, out + 1) if out % g == 0]))
        layers += draw(st.sampled_from([[], ["bn1: bn"], ["bn1: bn", "relu"], [f"bn1: gn {groups}", "relu"]]))
    if draw(st.booleans()):
        layers.append("maxpool k3 s2 p1")
    return f"    stem {{ {'; '.join(layers)} }}\n" if layers else ""


@st.composite
def stages(draw, index: int, label: str | None = None) -> str:
    """A stage; `label`: a container it shares with the other stages (numbered on)."""
    block = draw(st.sampled_from(BLOCKS))
    width = draw(st.integers(1, 8))
    repeat = draw(st.integers(1, 2))
    # How its blocks are named: numbered (s0.0), by a pattern (s0.b1), or one block named s0.
    naming = "numbered" if label else draw(st.sampled_from(["numbered", "numbered", "pattern", "single"]))
    stride = draw(st.sampled_from([1, 1, 2, 3]))
    policy = draw(st.sampled_from((None,) + POLICIES))
    kinds = ""
    if block in KIND_BLOCKS and draw(st.booleans()):
        kinds += f", act={draw(st.sampled_from(ACT_KINDS))}"
        kinds += f", norm={draw(st.sampled_from(NORM_KINDS))}" if draw(st.booleans()) else ""
    if block == "bottleneck" and draw(st.booleans()):
        kinds += f", attn={draw(st.sampled_from(ATTN_KINDS))}"
    line = f"    stage {label or f's{index}'}: {block}({width}{kinds})"
    line += {"numbered": f" x {repeat}", "pattern": f' x {repeat} named "b{{i + 1}}"', "single": ""}[naming]
    line += f" stride {stride}" if stride != 1 else ""
    line += f" shortcut {policy}" if policy else ""
    return line + "\n"


@st.composite
def networks(draw) -> str:
    """A random network that may be invalid only through option A shrinking channels."""
    c = draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    text = CUSTOM_BLOCK + f"network random {{\n    input {c}x{h}x{w}\n    classes {draw(st.integers(1, 12))}\n"
    text += f"    shortcut {draw(st.sampled_from(POLICIES))}\n"
    text += draw(stems())
    shared = draw(st.sampled_from([None, None, "features"]))  # torchvision's flat features.N
    for i in range(draw(st.integers(0, 3))):
        text += draw(stages(i, shared))
    head = draw(st.sampled_from(["avgpool; fc classes", "fc classes", "bn; relu; avgpool; fc classes",
                                 "gn g1; relu; avgpool; fc classes", "ln eps=0.01; avgpool; ln; fc classes",
                                 "scale dims=3; avgpool; linear 5; scale; fc classes",
                                 "avgpool; flatten; dropout 0.5; fc classes; softmax", "sigmoid; fc classes"]))
    return text + f"    head {{ {head} }}\n}}\n"


@st.composite
def layers(draw, ops: tuple[str, ...] = LAYER_OPS) -> str:
    """One layer of a random op, each attribute (every required one, some optional ones) drawn
    within the bounds its definition gives, written positionally, in short form or as `name=`."""
    op = OPS[draw(st.sampled_from(ops))]
    args = []
    for attr in op.attrs:
        if attr.default is not None and not draw(st.booleans()):
            continue
        if attr.type == FLAG:
            value = str(draw(st.integers(0, 1)))
        elif attr.type == FLOAT:
            bounds = attr.range
            low = bounds.low + (0.001 if bounds.open else 0.0) if bounds else -1.0
            high = min(bounds.high, low + 2.0) - 0.001 if bounds else 1.0  # kept inside once rounded
            value = f"{draw(st.floats(low, high)):.4f}"
        else:
            value = str(draw(st.integers(attr.low, attr.low + 3)))
        if attr.name == op.positional:
            args.insert(0, value)
        elif attr.short and attr.type != FLOAT and draw(st.booleans()):
            args.append(f"{attr.short}{value}")
        else:
            args.append(f"{attr.name}={value}")
    return " ".join([op.name, *args])


MISTAKES = [
    ("mul se", "mul sse"),  # a name that names no value
    ("let inner = width * groups", "let groups = width * groups"),  # a let rebinding a parameter
    ("    conv1: conv inner k1\n", "    conv1: conv inner2 k1\n"),  # a name no let binds
    ("concat a b", "concat a"),
    ("concat a b", "concat a b a"),  # a value joined with itself
    ("select a c", "select a"),  # one branch: nothing to weigh it against
    ("chunk 1 n=2", "chunk 2 n=2"),  # a chunk past the last
    ("shuffle 2", "shuffle 2 * width + 1"),  # groups that cannot divide 2 * width channels
    ("let inner = width * groups", "let __inner = width * groups"),  # a name Python mangles in a class
    ("    conv2: conv width k3 p1\n", "    conv2.keys: conv width k3 p1\n"),  # a container method
    ("add shortcut from preact", "add shortcut from nothing"),
    ("dropout 0.3", "dropout 1.3"),
    ("conv1: conv width k3 s=stride p2", "conv1: conv width * 1.5 k3 s=stride p2"),
    ("shortcut B", "shortcut identity"),  # shapes that cannot be joined (when some stage changes them)
    ("classes", "classes 0 +"),
    ("fc classes", "fc classes k3"),
    ("stage s0: ", "stage s0: nosuchblock"),
    ("input ", "input 0"),
    ("}\n", "} }\n"),
    ("stem { ", "stem { conv 8 k99 p0; "),
    ("stem { ", "stem { conv 7 g2; "),
    ("groups = 2, act = relu", "groups = 2, act = 3"),  # a number where a layer kind goes
    ("    conv1: conv inner k1\n", "    conv1: conv inner * act k1\n"),  # arithmetic on a layer kind
    ("    act\n", "    inner\n"),  # a number where a layer goes
    ("act = relu, norm = bn) {\n    let inner", "act = relu, norm = conv) {\n    let inner"),  # a kind that misfits
]
