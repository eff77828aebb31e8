"""Hand-written ResNets in the style of torchvision's resnet.py (which cannot be imported beside
torch 2.13 here). They are the independent reference the generated code is compared against:
state_dict names and shapes, outputs, and (in benchmarks/) speed.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, dilation, dilation=dilation, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, block, layers: list[int], num_classes: int = 1000, groups: int = 1,
                 width_per_group: int = 64, replace_stride_with_dilation: tuple[bool, bool, bool] = (False,) * 3
                 ) -> None:
        super().__init__()
        self.inplanes, self.groups, self.base_width, self.dilation = 64, groups, width_per_group, 1
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2, replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, 256, layers[2], 2, replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, 512, layers[3], 2, replace_stride_with_dilation[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        _init(self)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        downsample = None
        previous_dilation = self.dilation
        if dilate:  # torchvision: keep the resolution, dilate instead; block 0 keeps the old dilation
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        extra = {"dilation": previous_dilation} if previous_dilation != 1 or dilate else {}
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width, **extra)]
        self.inplanes = planes * block.expansion
        extra = {"dilation": self.dilation} if self.dilation != 1 else {}
        layers += [block(self.inplanes, planes, groups=self.groups, base_width=self.base_width, **extra)
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class CifarBlock(nn.Module):
    """He et al. 2015's CIFAR block with the option-A shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride, self.pad = stride, (planes - inplanes) // 2

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.stride != 1 or self.pad:
            shortcut = F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    def __init__(self, n: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, inplanes = [], 16
        for i, planes in enumerate((16, 32, 64)):
            blocks = [CifarBlock(inplanes, planes, 1 if i == 0 else 2)]
            blocks += [CifarBlock(planes, planes) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            inplanes = planes
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class VGG(nn.Module):
    """torchvision's VGG: `features` (3x3 convs with bias, optional BN, ReLU, 2x2 max pools),
    adaptive average pooling to 7x7, and the 4096-4096-classes `classifier` with dropout."""

    def __init__(self, config: list, batch_norm: bool = False, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            layers.append(nn.Conv2d(channels, v, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(p=0.5),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(p=0.5),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


VGG_CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class AlexNet(nn.Module):
    """torchvision's AlexNet (one tower, no LRN)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(p=0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class SEModule(nn.Module):
    """timm's squeeze-excitation (layers/squeeze_excite.py): mean, fc1, ReLU, fc2, sigmoid gate."""

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_divisor: int = 8) -> None:
        super().__init__()
        rd = max(rd_divisor, int(channels * rd_ratio + rd_divisor / 2) // rd_divisor * rd_divisor)
        self.fc1 = nn.Conv2d(channels, rd, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        x_se = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * x_se.sigmoid()


class TimmBasic(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 cardinality: int = 1, base_width: int = 64, se: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = SEModule(planes) if se else None
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        if self.se is not None:
            x = self.se(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.act2(x + shortcut)


class TimmBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 cardinality: int = 1, base_width: int = 64, se: bool = False) -> None:
        super().__init__()
        width = int(planes * (base_width / 64)) * cardinality
        outplanes = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width, outplanes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(outplanes)
        self.se = SEModule(outplanes) if se else None
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        if self.se is not None:
            x = self.se(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.act3(x + shortcut)


class TimmResNet(nn.Module):
    """timm's ResNet (models/resnet.py) with the options its resnet*d / seresnet* use: the deep
    stem (three 3x3 convs, 32-32-64), the average-pool shortcut (`avg_down`), SE in every block."""

    def __init__(self, block, layers: list[int], deep_stem: bool = False, avg_down: bool = False,
                 se: bool = False, cardinality: int = 1, base_width: int = 64, num_classes: int = 1000) -> None:
        super().__init__()
        if deep_stem:
            self.conv1 = nn.Sequential(
                nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
                nn.Conv2d(32, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
                nn.Conv2d(32, 64, 3, 1, 1, bias=False))
        else:
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes, stages = 64, []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes * block.expansion:
                out = planes * block.expansion
                if avg_down:  # timm's downsample_avg: the pool is the identity at stride 1
                    pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride != 1 \
                        else nn.Identity()
                    downsample = nn.Sequential(pool, nn.Conv2d(inplanes, out, 1, bias=False), nn.BatchNorm2d(out))
                else:
                    downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
            blocks = [block(inplanes, planes, stride, downsample, cardinality, base_width, se)]
            inplanes = planes * block.expansion
            blocks += [block(inplanes, planes, 1, None, cardinality, base_width, se) for _ in range(1, n)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean((2, 3)))


class WideBasic(nn.Module):
    """Zagoruyko & Komodakis 2016's block: pre-activation, dropout between the convs, and a 1x1
    projection (no BN) of the pre-activated input where the shape changes."""

    def __init__(self, inplanes: int, planes: int, stride: int, drop: float = 0.3) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.drop = nn.Dropout(drop)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.downsample = None if inplanes == planes and stride == 1 else \
            nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        preact = F.relu(self.bn1(x))
        out = self.conv2(self.drop(F.relu(self.bn2(self.conv1(preact)))))
        return out + (x if self.downsample is None else self.downsample(preact))


class WideResNet(nn.Module):
    def __init__(self, depth: int = 28, k: int = 10, num_classes: int = 10) -> None:
        super().__init__()
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        inplanes, stages = 16, []
        for i, planes in enumerate((16 * k, 32 * k, 64 * k)):
            blocks = [WideBasic(inplanes, planes, 1 if i == 0 else 2)]
            blocks += [WideBasic(planes, planes, 1) for _ in range(1, n)]
            stages.append(nn.Sequential(*blocks))
            inplanes = planes
        self.block1, self.block2, self.block3 = stages
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.fc = nn.Linear(inplanes, num_classes)
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(F.relu(self.bn1(x)).mean((2, 3)))


class BatchNormAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d: BN then ReLU, one module (so one state_dict name)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(super().forward(x))


class DownsampleConv(nn.Module):
    """timm's resnetv2 projection of the pre-activated input: a 1x1 conv, no norm."""

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class PreActBottleneck(nn.Module):
    """timm's resnetv2.PreActBottleneck."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, project: bool) -> None:
        super().__init__()
        mid = out_chs // 4
        self.downsample = DownsampleConv(in_chs, out_chs, stride) if project else None
        self.norm1 = BatchNormAct(in_chs)
        self.conv1 = nn.Conv2d(in_chs, mid, 1, bias=False)
        self.norm2 = BatchNormAct(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.norm3 = BatchNormAct(mid)
        self.conv3 = nn.Conv2d(mid, out_chs, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x_preact = self.norm1(x)
        shortcut = x if self.downsample is None else self.downsample(x_preact)
        x = self.conv1(x_preact)
        x = self.conv2(self.norm2(x))
        x = self.conv3(self.norm3(x))
        return x + shortcut


class ResNetStage(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int, depth: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[PreActBottleneck(in_chs if i == 0 else out_chs, out_chs,
                                                       stride if i == 0 else 1, i == 0) for i in range(depth)])

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class ClassifierHead(nn.Module):
    """timm's resnetv2 head (use_conv=True): global average pool, a 1x1 conv with bias as the
    classifier (`head.fc.weight` is 1000x2048x1x1, not a Linear's 1000x2048), then flatten."""

    def __init__(self, in_chs: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(in_chs, num_classes, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.mean((2, 3), keepdim=True)).flatten(1)


class ResNetV2(nn.Module):
    """timm's resnetv2_50 (models/resnetv2.py, preact=True): stem.conv + max pool, stages of
    pre-activation bottlenecks, a final BN-ReLU `norm`, `head.fc`."""

    def __init__(self, layers: list[int], num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(OrderedDict([("conv", nn.Conv2d(3, 64, 7, 2, 3, bias=False)),
                                               ("pool", nn.MaxPool2d(3, 2, 1))]))
        in_chs, stages = 64, []
        for i, (out_chs, depth) in enumerate(zip((256, 512, 1024, 2048), layers)):
            stages.append(ResNetStage(in_chs, out_chs, 1 if i == 0 else 2, depth))
            in_chs = out_chs
        self.stages = nn.Sequential(*stages)
        self.norm = BatchNormAct(in_chs)
        self.head = ClassifierHead(in_chs, num_classes)
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.norm(self.stages(self.stem(x))))


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


TORCHVISION = {
    "resnet18": lambda: ResNet(BasicBlock, [2, 2, 2, 2]),
    "resnet34": lambda: ResNet(BasicBlock, [3, 4, 6, 3]),
    "resnet50": lambda: ResNet(Bottleneck, [3, 4, 6, 3]),
    "resnet101": lambda: ResNet(Bottleneck, [3, 4, 23, 3]),
    "resnet152": lambda: ResNet(Bottleneck, [3, 8, 36, 3]),
    "resnext50_32x4d": lambda: ResNet(Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4),
    "wide_resnet50_2": lambda: ResNet(Bottleneck, [3, 4, 6, 3], width_per_group=128),
    "resnet50_os8": lambda: ResNet(Bottleneck, [3, 4, 6, 3], replace_stride_with_dilation=(False, True, True)),
    "vgg11": lambda: VGG(VGG_CONFIGS["vgg11"]),
    "vgg16": lambda: VGG(VGG_CONFIGS["vgg16"]),
    "vgg19": lambda: VGG(VGG_CONFIGS["vgg19"]),
    "vgg16_bn": lambda: VGG(VGG_CONFIGS["vgg16"], batch_norm=True),
    "alexnet": AlexNet,
}
# timm's (and the WRN paper's) modules, by spec name: their state_dict names are the spec's.
TIMM = {
    "resnet18d": lambda: TimmResNet(TimmBasic, [2, 2, 2, 2], deep_stem=True, avg_down=True),
    "resnet50d": lambda: TimmResNet(TimmBottleneck, [3, 4, 6, 3], deep_stem=True, avg_down=True),
    "seresnet50": lambda: TimmResNet(TimmBottleneck, [3, 4, 6, 3], se=True),
    "seresnext50_32x4d": lambda: TimmResNet(TimmBottleneck, [3, 4, 6, 3], se=True, cardinality=32, base_width=4),
    "resnetv2_50": lambda: ResNetV2([3, 4, 6, 3]),
    "cifar/wrn28_10": WideResNet,
}
