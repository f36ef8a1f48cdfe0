"""ResNet-18 / ResNet-50 student backbones (stage 1 and 2 encoders), torchvision's topology written out.

The layout (7x7 stem + max-pool, four stages, stride on the 3x3 conv of the bottleneck, "ResNet v1.5") and
the parameter names match torchvision's, so with ``num_classes=1000`` the counts are the published 11,689,512
(ResNet-18) and 25,557,032 (ResNet-50), and a torchvision ImageNet state dict loads unchanged.

The pose students use the backbone without its classifier (``num_classes=0``, the default): ``forward_features``
returns the four stage outputs at strides 4, 8, 16 and 32, described by ``feature_info``.
"""

from __future__ import annotations

import torch
from torch import nn


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """Conv (no bias, "same" padding) + BatchNorm (+ ReLU): the unit of the necks, heads and HRNet fusions."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34, HRNet branches)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, with a residual connection."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(in_channels, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def make_res_layer(
    block: type[BasicBlock] | type[Bottleneck], in_channels: int, planes: int, num_blocks: int, stride: int = 1
) -> nn.Sequential:
    """``num_blocks`` residual blocks; the first one changes stride/width through a 1x1 conv + BN shortcut."""
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
    layers = [block(in_channels, planes, stride, downsample)]
    layers += [block(out_channels, planes) for _ in range(num_blocks - 1)]
    return nn.Sequential(*layers)


def init_conv_bn(module: nn.Module) -> None:
    """He (fan-out) init for convs, unit-scale/zero-shift BatchNorm: the torchvision/timm defaults."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ResNet(nn.Module):
    """ResNet backbone publishing its four stages.

    Attributes:
        feature_info: one dict per map of ``forward_features``: ``num_chs`` (channels), ``reduction``
            (input pixels per map pixel) and ``module`` (the producing submodule's name).
    """

    def __init__(
        self, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, int, int, int], num_classes: int = 0
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.feature_info: list[dict] = []
        in_channels = 64
        for i, (planes, num_blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stride = 1 if i == 0 else 2
            self.add_module(f"layer{i + 1}", make_res_layer(block, in_channels, planes, num_blocks, stride))
            in_channels = planes * block.expansion
            self.feature_info.append({"num_chs": in_channels, "reduction": 4 * 2**i, "module": f"layer{i + 1}"})
        # Classifier only for parity with the published ImageNet models (parameter counts, weight loading).
        self.num_classes = num_classes
        self.fc = nn.Linear(in_channels, num_classes) if num_classes > 0 else None
        init_conv_bn(self)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Normalised images ``(N, 3, H, W)`` -> stage outputs ``[(N, C_i, H / r_i, W / r_i)]``, r = 4, 8, 16, 32."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, H/4, W/4)
        features = []
        for info in self.feature_info:
            x = getattr(self, info["module"])(x)
            features.append(x)
        return features

    def forward_head(self, features: list[torch.Tensor]) -> torch.Tensor:
        """ImageNet logits ``(N, num_classes)`` from the last stage (only with ``num_classes > 0``)."""
        if self.fc is None:
            raise RuntimeError("this ResNet was built without a classifier; pass num_classes > 0 to get one")
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(features[-1], 1), 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(x)


def resnet18(num_classes: int = 0) -> ResNet:
    """ResNet-18: BasicBlocks (2, 2, 2, 2); stage channels 64/128/256/512 at strides 4/8/16/32."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes)


def resnet50(num_classes: int = 0) -> ResNet:
    """ResNet-50: Bottlenecks (3, 4, 6, 3); stage channels 256/512/1024/2048 at strides 4/8/16/32."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes)
