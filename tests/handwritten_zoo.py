"""Hand-written MobileNetV2, EfficientNet-B0 and ConvNeXt-T in the style of torchvision's
mobilenetv2.py, efficientnet.py and convnext.py (torchvision cannot be imported beside torch 2.13
here). Like tests/handwritten.py's ResNets they are the independent reference the generated code is
timed against (benchmarks/torch_backend.py); tests/test_handwritten_zoo.py holds them to the real
library's fixtures in tests/peers/, so the two sides of a benchmark compute the same network.

Kept beside handwritten.py, not in it, so that neither file grows past the style's ~400 lines.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_norm_act(inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                  act: type[nn.Module] | None = nn.ReLU6) -> nn.Sequential:
    """torchvision's Conv2dNormActivation with BatchNorm: indices 0, 1 (and 2 when activated)."""
    layers = [nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(out)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: expand 1x1 (left out at ratio 1), depthwise 3x3, linear 1x1 projection."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        layers = [conv_norm_act(inp, hidden, 1)] if expand_ratio != 1 else []
        layers += [conv_norm_act(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1))  # expansion t, channels c, blocks n, first stride s

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        features: list[nn.Module] = [conv_norm_act(3, 32, stride=2)]
        inp = 32
        for t, c, n, s in self.SETTING:
            for i in range(n):
                features.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        features.append(conv_norm_act(inp, 1280, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation: 1x1 convs with biases, the scale multiplied in."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.SiLU(inplace=True)
        self.scale_activation = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class MBConv(nn.Module):
    """EfficientNet's block; SE squeezes to a quarter of the block's *input* channels. Stochastic
    depth is the identity in eval, so it is left out."""

    def __init__(self, inp: int, out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = inp * expand
        self.use_res_connect = stride == 1 and inp == out
        layers = [conv_norm_act(inp, mid, 1, act=nn.SiLU)] if expand != 1 else []
        layers += [conv_norm_act(mid, mid, kernel, stride, groups=mid, act=nn.SiLU),
                   SqueezeExcitation(mid, max(1, inp // 4)),
                   conv_norm_act(mid, out, 1, act=None)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        result = self.block(x)
        return result + x if self.use_res_connect else result


class EfficientNetB0(nn.Module):
    SETTING = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
               (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))  # expansion, kernel, first stride, channels, blocks

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_norm_act(3, 32, stride=2, act=nn.SiLU)]
        inp = 32
        for expand, kernel, stride, out, n in self.SETTING:
            stage = [MBConv(inp if i == 0 else out, out, kernel, stride if i == 0 else 1, expand) for i in range(n)]
            layers.append(nn.Sequential(*stage))
            inp = out
        layers.append(conv_norm_act(inp, 4 * inp, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2, inplace=True), nn.Linear(4 * inp, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor, by permuting to NHWC and back."""

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(self.dims)


class CNBlock(nn.Module):
    """ConvNeXt's block: depthwise 7x7, then LayerNorm and the two linears on NHWC, a per-channel
    layer scale. Stochastic depth is the identity in eval, so it is left out."""

    def __init__(self, dim: int, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim), Permute([0, 2, 3, 1]), nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), Permute([0, 3, 1, 2]))
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)

    def forward(self, x: Tensor) -> Tensor:
        result = self.layer_scale * self.block(x)
        result += x
        return result


class ConvNeXtTiny(nn.Module):
    SETTING = ((96, 192, 3), (192, 384, 3), (384, 768, 9), (768, None, 3))  # width, next width, blocks

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, 96, 4, 4), LayerNorm2d(96, eps=1e-6))]
        for dim, nxt, n in self.SETTING:
            layers.append(nn.Sequential(*[CNBlock(dim) for _ in range(n)]))
            if nxt is not None:
                layers.append(nn.Sequential(LayerNorm2d(dim, eps=1e-6), nn.Conv2d(dim, nxt, 2, 2)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(LayerNorm2d(768, eps=1e-6), nn.Flatten(1), nn.Linear(768, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.avgpool(self.features(x)))


# torchvision's modules, by the name of their fixture in tests/peers/ (and specs/peers.json).
ZOO = {"tv_mobilenet_v2": MobileNetV2, "tv_efficientnet_b0": EfficientNetB0, "tv_convnext_tiny": ConvNeXtTiny}
