"""Neck, feature decoder (stage 1) and heatmap head (stage 2) on top of a student backbone.

* ``TopDownNeck`` brings the backbone's maps to one stride-4 map of ``out_channels`` (128 by default): an
  FPN-style top-down path (Lin et al. 2017) - 1x1 lateral conv + BN per level, nearest upsampling and
  addition from the coarsest level down, then a 3x3 conv + BN + ReLU. It is chosen over SimpleBaseline's
  three 256-channel deconvolutions from stride 32 because it reuses the stride-4..16 maps the backbone
  already computed (finer localisation), costs ~0.6M parameters instead of ~10M for ResNet-50, and exports
  as Conv/Add/Resize only. Given a single level (HRNet's fused stride-4 branch) it is a 1x1 + 3x3 projection.
* ``FeatureDecoder`` is the 1x1 conv from the neck to the teacher's channel count (sized from the teacher,
  never assumed), used only while distilling.
* ``HeatmapHead`` is ``depth`` 3x3 conv + BN + ReLU layers and a separate, named 1x1 conv ``final`` to the
  K heatmaps, so that export can keep that last layer in higher precision.
"""

from __future__ import annotations

import torch
from torch import nn

from tardis_edge.models.resnet import conv_bn, init_conv_bn


class TopDownNeck(nn.Module):
    """Fuse backbone maps (finest first) into one map at the finest map's resolution.

    Args:
        feature_info: the backbone's ``feature_info`` entries for the maps this neck receives, finest first;
            consecutive reductions must differ by an integer factor.
        out_channels: channels of the output map.
    """

    def __init__(self, feature_info: list[dict], out_channels: int = 128) -> None:
        super().__init__()
        if not feature_info:
            raise ValueError("TopDownNeck needs at least one backbone level")
        reductions = [int(info["reduction"]) for info in feature_info]
        self.upsample_factors: list[int] = []
        for fine, coarse in zip(reductions[:-1], reductions[1:], strict=True):
            if coarse <= fine or coarse % fine:
                raise ValueError(
                    f"neck levels must be ordered finest first with integer stride ratios; got reductions {reductions}"
                )
            self.upsample_factors.append(coarse // fine)
        self.reduction = reductions[0]
        self.out_channels = out_channels
        self.laterals = nn.ModuleList(
            [conv_bn(int(info["num_chs"]), out_channels, 1, relu=False) for info in feature_info]
        )
        self.upsamples = nn.ModuleList([nn.Upsample(scale_factor=f, mode="nearest") for f in self.upsample_factors])
        self.fuse = conv_bn(out_channels, out_channels, 3)
        init_conv_bn(self)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """``[(N, C_i, H_i, W_i)]`` finest first -> ``(N, out_channels, H_0, W_0)``."""
        x = self.laterals[-1](features[-1])
        for level in range(len(features) - 2, -1, -1):
            x = self.laterals[level](features[level]) + self.upsamples[level](x)
        return self.fuse(x)


class FeatureDecoder(nn.Module):
    """1x1 conv from the neck to the teacher's feature channels: ``(N, C_neck, h, w) -> (N, C_teacher, h, w)``."""

    def __init__(self, in_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, teacher_channels, kernel_size=1)
        nn.init.kaiming_normal_(self.proj.weight, mode="fan_in", nonlinearity="linear")
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class HeatmapHead(nn.Module):
    """``depth`` x (3x3 conv + BN + ReLU) then the 1x1 conv ``final``: ``(N, C, h, w) -> (N, K, h, w)``.

    Args:
        in_channels: channels of the neck map.
        num_keypoints: K, the number of heatmaps.
        depth: number of 3x3 conv layers before ``final`` (0 gives a lone 1x1 conv, as SimpleBaseline's head).
        channels: width of those layers (defaults to ``in_channels``).
    """

    def __init__(self, in_channels: int, num_keypoints: int, depth: int = 2, channels: int | None = None) -> None:
        super().__init__()
        if num_keypoints < 1 or depth < 0:
            raise ValueError(f"HeatmapHead needs num_keypoints >= 1 and depth >= 0; got {num_keypoints}, {depth}")
        channels = in_channels if channels is None else channels
        self.layers = nn.Sequential(*[conv_bn(in_channels if i == 0 else channels, channels, 3) for i in range(depth)])
        self.final = nn.Conv2d(channels if depth else in_channels, num_keypoints, kernel_size=1)
        init_conv_bn(self.layers)
        # Small initial heatmaps (as mmpose/HRNet): the first losses are dominated by the targets, not noise.
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.layers(x))
