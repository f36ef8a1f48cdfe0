"""HRNet-W32 student backbone (stage 1 and 2 encoder): Sun et al., CVPR 2019, as in mmpose's ``hrnet_w32``.

Topology: a stem of two stride-2 3x3 convs (stride 4), then four stages with 1/2/3/4 parallel branches
(strides 4/8/16/32, widths 32/64/128/256) made of 1/1/4/3 multi-resolution modules; stage 1 is four
Bottlenecks (256 channels), the branches of stages 2-4 are four BasicBlocks each. Every module ends with a
fusion that sums all branches into each output resolution (1x1 conv + nearest upsampling from lower
resolutions, strided 3x3 convs from higher ones). As in the pose HRNet, the last module fuses into the
stride-4 branch only; with a 1x1 conv to 17 heatmaps the model has the published ~28.5M parameters.

``forward_features`` returns four maps: the fused stride-4 output (what the pose HRNet's head reads) and the
outputs of the last module's three lower-resolution branches (after their residual blocks, before the fusion
that feeds the stride-4 map).
"""

from __future__ import annotations

import torch
from torch import nn

from tardis_edge.models.resnet import BasicBlock, Bottleneck, conv3x3, conv_bn, init_conv_bn, make_res_layer


class HRModule(nn.Module):
    """Parallel BasicBlock branches followed by the exchange unit that fuses them.

    Args:
        channels: width of each branch (branch i works at stride 4 * 2**i).
        num_blocks: BasicBlocks per branch.
        num_fused_outputs: how many of the highest-resolution outputs the exchange produces; the remaining
            branches are returned as they leave their blocks (the pose HRNet's last module fuses into 1).
    """

    def __init__(self, channels: list[int], num_blocks: int, num_fused_outputs: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList([make_res_layer(BasicBlock, c, c, num_blocks) for c in channels])
        self.fuse_layers = nn.ModuleList()
        for i in range(num_fused_outputs):
            row = nn.ModuleList()
            for j, c_in in enumerate(channels):
                if j > i:  # lower resolution: 1x1 to the target width, then nearest upsampling
                    row.append(
                        nn.Sequential(
                            conv_bn(c_in, channels[i], 1, relu=False),
                            nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
                        )
                    )
                elif j == i:
                    row.append(nn.Identity())
                else:  # higher resolution: i - j strided 3x3 convs, the last one changes width, no ReLU
                    steps = [conv_bn(c_in, c_in, 3, stride=2) for _ in range(i - j - 1)]
                    steps.append(conv_bn(c_in, channels[i], 3, stride=2, relu=False))
                    row.append(nn.Sequential(*steps))
            self.fuse_layers.append(row)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        branch_outputs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]
        fused = []
        for row in self.fuse_layers:
            total = row[0](branch_outputs[0])
            for j in range(1, len(row)):
                total = total + row[j](branch_outputs[j])
            fused.append(self.relu(total))
        return fused + branch_outputs[len(fused) :]


class HRNet(nn.Module):
    """HRNet backbone publishing its four branches.

    Args:
        width: channels of the stride-4 branch (32 for W32); branch i has ``width * 2**i``.
        modules_per_stage: multi-resolution modules in stages 2, 3 and 4.

    Attributes:
        feature_info: one dict per map of ``forward_features`` (``num_chs``, ``reduction``, ``module``).
    """

    def __init__(self, width: int = 32, modules_per_stage: tuple[int, int, int] = (1, 4, 3)) -> None:
        super().__init__()
        self.conv1 = conv3x3(3, 64, stride=2)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = conv3x3(64, 64, stride=2)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_res_layer(Bottleneck, 64, 64, 4)  # (N, 256, H/4, W/4)

        previous = [64 * Bottleneck.expansion]
        self.transitions = nn.ModuleList()
        self.stages = nn.ModuleList()
        for stage_index, num_modules in enumerate(modules_per_stage):
            channels = [width * 2**i for i in range(stage_index + 2)]
            self.transitions.append(self._transition(previous, channels))
            last_stage = stage_index == len(modules_per_stage) - 1
            self.stages.append(
                nn.Sequential(
                    *[
                        HRModule(channels, 4, 1 if last_stage and m == num_modules - 1 else len(channels))
                        for m in range(num_modules)
                    ]
                )
            )
            previous = channels
        self.feature_info = [
            {"num_chs": c, "reduction": 4 * 2**i, "module": f"stages.{len(self.stages) - 1}"}
            for i, c in enumerate(previous)
        ]
        init_conv_bn(self)

    @staticmethod
    def _transition(previous: list[int], channels: list[int]) -> nn.ModuleList:
        """Adapt the existing branches' widths and open a new, half-resolution branch from the last one."""
        layers = nn.ModuleList()
        for i, c in enumerate(channels):
            if i < len(previous):
                layers.append(nn.Identity() if previous[i] == c else conv_bn(previous[i], c, 3))
            else:
                layers.append(conv_bn(previous[-1], c, 3, stride=2))
        return layers

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Normalised images ``(N, 3, H, W)`` -> ``[(N, 32 * 2**i, H / r_i, W / r_i)]`` for r = 4, 8, 16, 32."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]  # (N, 256, H/4, W/4)
        for transition, stage in zip(self.transitions, self.stages, strict=True):
            # Existing branches pass through (adapted); the new branch grows from the lowest resolution.
            xs = [layer(xs[min(i, len(xs) - 1)]) for i, layer in enumerate(transition)]
            xs = stage(xs)
        return xs

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(x)


def hrnet_w32() -> HRNet:
    """HRNet-W32: branches 32/64/128/256 at strides 4/8/16/32, 1/4/3 modules in stages 2/3/4."""
    return HRNet(width=32, modules_per_stage=(1, 4, 3))
