"""Every op, one definition each: the single place an op's meaning is written. Adding an op is
its definition here (or `register(...)`) plus one converter per backend; a backend without one
reports the op as unsupported before it lowers anything."""
from __future__ import annotations

from .rules import (
    affine_weights,
    avgpool_shape,
    blurpool_macs,
    blurpool_shape,
    bn_weights,
    channel_conv_macs,
    channel_conv_shape,
    channel_conv_weights,
    concat_shape,
    conv_macs,
    conv_shape,
    conv_weights,
    equal_shape,
    fc_macs,
    fc_shape,
    fc_weights,
    flatten_shape,
    gn_shape,
    linear_macs,
    linear_shape,
    linear_weights,
    ln_shape,
    lrn_shape,
    map_shape,
    mul_shape,
    pad_shape,
    pool_shape,
    same_shape,
    scale_shape,
    scale_weights,
)
from .schema import FLAG, FLOAT, INTERNAL, JOIN, PROBABILITY, Attr, Attrs, OpDef, Range
from .split import chunk_shape, select_shape, shuffle_shape

# A window's kernel, stride and padding: square (`k3`) or (height, width) pairs (`k1x7 p0x3`, as
# Inception-v3's factorised 7x7s).
KERNEL = Attr("kernel", 1, short="k", example=3, pair=True)
STRIDE = Attr("stride", 1, short="s", example=2, pair=True)
PADDING = Attr("padding", 0, short="p", example=1, low=0, pair=True)


def _stride_is_kernel(attrs: Attrs) -> None:
    if attrs["kernel"] and not attrs["stride"]:
        attrs["stride"] = attrs["kernel"]  # as nn.AvgPool2d


# nn.LocalResponseNorm divides by (k + alpha / size * sum of squares) ** beta.
_LRN_RANGES = {
    "k": Range(0.0, open=True, why="added to the window's squares before the power: at 0 a window of zeros "
                                   "gives 0 / 0 = NaN (AlexNet uses k=2)"),
    "alpha": Range(0.0, why="the weight of the window's squares: a negative one can make the power's base "
                            "negative, and the output NaN (AlexNet uses alpha=1e-4)"),
    "beta": Range(0.0, why="the power the input is divided by: a negative one multiplies instead, and "
                           "overflows (AlexNet uses beta=0.75)"),
}

# nn.BatchNorm2d divides by sqrt(running_var + eps); its default is 1e-5.
_BN_EPS = Range(0.0, open=True, why="added to the variance under the square root: at 0 a channel whose "
                                    "variance is 0 divides by 0 (PyTorch's default is 1e-5, timm's "
                                    "EfficientNet uses 1e-3)")

# nn.GroupNorm divides by sqrt(var + eps), the variance of each sample's group; its default is 1e-5.
_GN_EPS = Range(0.0, open=True, why="added to each group's variance under the square root: at 0 a group of "
                                    "equal values (a constant map) divides by 0 (PyTorch's default is 1e-5)")

# nn.LayerNorm divides by sqrt(var + eps), the variance of each pixel's channels; ConvNeXt's eps is 1e-6.
_LN_EPS = Range(0.0, open=True, why="added to each pixel's variance over its channels under the square root: at "
                                    "0 a pixel whose channels are equal divides by 0 (ConvNeXt uses 1e-6)")

DEFINITIONS: tuple[OpDef, ...] = (
    OpDef("input", "the network's input, batch dimension left out", lambda a, i: a["shape"], arity=(0,),
          kind=INTERNAL),
    OpDef("conv", "2-D convolution", conv_shape, positional="out", module=True,
          attrs=(Attr("out"), KERNEL, STRIDE, PADDING, Attr("groups", 1, short="g", example=32),
                 Attr("dilation", 1), Attr("bias", 0, FLAG)),
          weights=conv_weights, macs=conv_macs),
    OpDef("bn", "batch normalisation over channels", map_shape("bn"), module=True, weights=bn_weights,
          attrs=(Attr("eps", 1e-5, FLOAT, range=_BN_EPS),)),
    # Wu & He 2018: statistics of each sample's channel groups, not of the batch; timm's resnet50_gn
    # uses 32 groups in place of every BN.
    OpDef("gn", "group normalisation: each sample's channels in `groups` groups, each group normalised "
                "over its channels and the map, then a weight and bias per channel", gn_shape,
          positional="groups", module=True, weights=affine_weights,
          attrs=(Attr("groups", 32, short="g", example=32), Attr("eps", 1e-5, FLOAT, range=_GN_EPS))),
    # ConvNeXt (Liu et al. 2022): timm's and torchvision's LayerNorm2d, nn.LayerNorm on the
    # channels-last map; on a vector (a pooled head's), over its features.
    OpDef("ln", "layer normalisation over channels: each pixel's channels normalised by their mean and "
                "variance, then a weight and bias per channel", ln_shape, module=True, weights=affine_weights,
          attrs=(Attr("eps", 1e-6, FLOAT, range=_LN_EPS),)),
    OpDef("relu", "rectifier", same_shape, module=True),
    OpDef("leaky_relu", "leaky rectifier: `slope` times x below 0", same_shape, positional="slope",
          attrs=(Attr("slope", 0.01, FLOAT),), module=True),
    OpDef("sigmoid", "logistic sigmoid", same_shape, module=True),
    # The activations of MobileNet, EfficientNet and ConvNeXt, each PyTorch's module of the name.
    OpDef("relu6", "rectifier clipped at 6: min(max(x, 0), 6)", same_shape, module=True),
    OpDef("silu", "x * sigmoid(x) (swish)", same_shape, module=True),
    OpDef("gelu", "x * Phi(x), Phi the standard normal CDF (the exact erf form)", same_shape, module=True),
    OpDef("hardsigmoid", "relu6(x + 3) / 6", same_shape, module=True),
    OpDef("hardswish", "x * relu6(x + 3) / 6", same_shape, module=True),
    OpDef("softmax", "softmax over channels", same_shape, module=True),
    OpDef("maxpool", "max pooling", pool_shape, module=True,
          attrs=(Attr("kernel", None, short="k", example=3, pair=True),
                 Attr("stride", None, short="s", example=2, pair=True),
                 PADDING, Attr("ceil", 0, FLAG))),
    # `avgpool`: global; `avgpool size=7`: adaptive to 7x7; `avgpool k2 s2`: windows.
    OpDef("avgpool", "average pooling: global, adaptive to `size`, or in windows", avgpool_shape, module=True,
          attrs=(Attr("kernel", 0, short="k", example=3, low=0, pair=True),
                 Attr("stride", 0, short="s", example=2, low=0, pair=True),
                 PADDING, Attr("ceil", 0, FLAG), Attr("count_pad", 1, FLAG), Attr("size", 1)),
          complete=_stride_is_kernel),
    # ECA (Wang et al. 2020), timm's EcaModule.conv: a pooled vector's channels convolved as a
    # sequence, one weight vector shared by every channel, so attention costs k weights, not C^2 / 8.
    OpDef("channel_conv", "a 1-D convolution across a pooled Cx1x1 vector's channels: an odd `kernel` "
                          "zero-padded by k // 2 at both ends, one input and one output channel, no bias "
                          "(kernel 0: ECA's for C channels, int((log2 C + 1) / 2) made odd, at least 3)",
          channel_conv_shape, module=True, weights=channel_conv_weights, macs=channel_conv_macs,
          attrs=(Attr("kernel", 0, short="k", example=5, low=0),)),
    # Anti-aliased downsampling (Zhang 2019), timm's BlurPool2d: a fixed filter, held in no
    # state_dict key, so a blurred network loads the unblurred one's weights.
    OpDef("blurpool", "blur, then subsample: each channel convolved with the k x k binomial filter "
                      "(outer square of C(k-1, i) / 2^(k-1); [1, 2, 1] / 4 at k3) at `stride`, the map "
                      "reflect-padded by ((s - 1) + (k - 1)) // 2; no parameters", blurpool_shape, module=True,
          macs=blurpool_macs, attrs=(Attr("kernel", 3, short="k", example=3, low=2),
                                     Attr("stride", 2, short="s", example=2))),
    # A channel split (Res2Net's, SKNet's split input, ShuffleNet's): several chunks of one value,
    # each a layer reading it (`x1: branch act1 { chunk 1 n=4 }`); no weights, a view in PyTorch.
    OpDef("chunk", "chunk `index` (from 0) of the channels cut into `n` equal chunks, as torch.chunk",
          chunk_shape, positional="index", attrs=(Attr("index", None, low=0, example=1), Attr("n", 2, example=4))),
    # ShuffleNet's channel shuffle (Zhang et al. 2018; V2's after every block's concat): no
    # weights and no MACs, so information crosses the groups that grouped convs keep apart.
    OpDef("shuffle", "channel shuffle: the channels as `groups` groups of C / groups, interleaved (channel "
                     "j of group i goes to j * groups + i), as x.view(N, g, C / g, H, W).transpose(1, 2)",
          shuffle_shape, positional="groups", attrs=(Attr("groups", 2, short="g", example=2),)),
    OpDef("lrn", "local response normalisation across `size` channels", lrn_shape, positional="size",
          module=True,
          attrs=(Attr("size"), *(Attr(key, default, FLOAT, range=_LRN_RANGES[key])
                                 for key, default in (("alpha", 1e-4), ("beta", 0.75), ("k", 1.0))))),
    OpDef("dropout", "dropout with rate `p` (training only)", same_shape, positional="p", module=True,
          attrs=(Attr("p", 0.5, FLOAT, range=PROBABILITY),), train_only=True),
    # Stochastic depth: drops a sample's whole branch in training, with rate `rate`.
    OpDef("drop_path", "stochastic depth: a sample's branch dropped with rate `rate` (training only)",
          same_shape, positional="rate", module=True,
          attrs=(Attr("rate", None, FLOAT, range=PROBABILITY),), train_only=True),
    OpDef("flatten", "flatten to a vector", flatten_shape, module=True),
    OpDef("fc", "flatten, then a fully-connected layer", fc_shape, positional="out", module=True,
          attrs=(Attr("out"),), weights=fc_weights, macs=fc_macs),
    # ConvNeXt's pointwise MLP: nn.Linear at every pixel, so its weight is (out, in), not a 1x1
    # conv's (out, in, 1, 1).
    OpDef("linear", "a fully-connected layer over channels at every pixel (nn.Linear on the channels-last "
                    "map), with a bias", linear_shape, positional="out", module=True,
          attrs=(Attr("out"),), weights=linear_weights, macs=linear_macs),
    # ConvNeXt's layer scale (Touvron et al. 2021): one learnable factor per channel, its key the
    # label itself; timm's gamma is (C,), torchvision's layer_scale (C, 1, 1).
    OpDef("scale", "a learnable factor per channel, held as the parameter named by its label: shaped (C,) "
                   "or, with dims=3, (C, 1, 1); initialised to `init` (`width` 0: the input's channels)",
          scale_shape, positional="width", module=True, weights=scale_weights,
          attrs=(Attr("width", 0, low=0), Attr("dims", 1), Attr("init", 1e-6, FLOAT))),
    OpDef("add", "join by sum: operand 0 the residual branch, operand 1 the shortcut (a gated add's "
                 "operand 2: its gate's logits)", same_shape, arity=(2, 3), kind=JOIN),
    OpDef("mul", "join by product, broadcast either way (an SE gate on the current value or its input)", mul_shape,
          arity=(2,), kind=JOIN),
    OpDef("concat", "join along channels", concat_shape, arity=tuple(range(2, 65)), kind=JOIN),
    # SKNet's attention over its kernels, ResNeSt's rSoftMax (one cardinal group): each branch
    # weighted per channel by a softmax across the branches of the current value, the logits.
    OpDef("select", "join by a softmax across branches: the named values (P of one shape CxHxW) weighted "
                    "per channel by the softmax over P of the current value's (P*C)x1x1 logits, branch-major, "
                    "and summed", select_shape, arity=tuple(range(3, 66)), kind=JOIN),
    OpDef("pad", "option-A shortcut: subsample by `stride`, zero-pad channels", pad_shape, kind=INTERNAL),
    # Made only by the decompose pass (a highway gate's mix as x + T * (F(x) - x)), for the
    # backends that lower the decomposed graph.
    OpDef("sub", "operand 0 minus operand 1, of one shape", equal_shape, arity=(2,), kind=INTERNAL),
)
