"""RepVGG-A0 student backbone, the edge option (stage 1 and 2 encoder).

Why this net for edge GPUs: after training, every block re-parameterises into a single 3x3 conv + bias + ReLU
(Ding et al., "RepVGG: Making VGG-style ConvNets Great Again", CVPR 2021), so the deployed graph is a plain
stack of dense 3x3 convolutions - the op TensorRT's implicit-GEMM/Winograd kernels run fastest, in FP16 and
INT8, with no depthwise convs (memory-bound on GPUs), no branches to keep alive and no activation other than
ReLU. The training-time blocks follow QARepVGG (Chu et al., "Make RepVGG Greater Again: A Quantization-aware
Approach", AAAI 2023): ``BN(BN(conv3x3(x)) + conv1x1(x) + x)`` with no BatchNorm on the 1x1 and identity
branches and one BatchNorm after the sum. Plain RepVGG's branch BatchNorms produce fused kernels whose weight
and activation ranges ruin post-training INT8 quantisation; the QARepVGG form keeps them INT8-friendly.

Widths and depths are RepVGG-A0's (48/48/96/192/1280 channels, 1/2/4/14/1 blocks at strides 2..32), so the
deployed network with an ImageNet classifier has the published 8.31M parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tardis_edge.models.resnet import init_conv_bn


def _fold_bn(kernel: torch.Tensor, bias: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm that follows ``conv(kernel, bias)`` into the conv: returns the new kernel, bias."""
    assert bn.running_mean is not None and bn.running_var is not None
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias + (bias - bn.running_mean) * scale


class QARepVGGBlock(nn.Module):
    """``ReLU(BN(BN(conv3x3(x)) + conv1x1(x) [+ x]))`` for training; one 3x3 conv + ReLU after ``reparameterize``.

    The identity branch exists only when the block keeps width and resolution.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.conv3x3 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn3x3 = nn.BatchNorm2d(out_channels)
        self.conv1x1 = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
        self.has_identity = in_channels == out_channels and stride == 1
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.relu(self.fused(x))
        out = self.bn3x3(self.conv3x3(x)) + self.conv1x1(x)
        if self.has_identity:
            out = out + x
        return self.relu(self.bn(out))

    @torch.no_grad()
    def equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single 3x3 kernel ``(C_out, C_in, 3, 3)`` and bias ``(C_out,)`` equal to the eval-mode block."""
        zeros = torch.zeros(self.out_channels, device=self.conv3x3.weight.device)
        kernel, bias = _fold_bn(self.conv3x3.weight, zeros, self.bn3x3)
        kernel = kernel + F.pad(self.conv1x1.weight, [1, 1, 1, 1])  # the 1x1 is the centre tap of a 3x3
        if self.has_identity:
            kernel = kernel.clone()
            channel = torch.arange(self.in_channels)
            kernel[channel, channel, 1, 1] += 1.0
        return _fold_bn(kernel, bias, self.bn)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Switch to the deployment form (one 3x3 conv with bias); uses the BatchNorms' running statistics."""
        if self.fused is not None:
            return
        kernel, bias = self.equivalent_kernel_bias()
        fused = nn.Conv2d(self.in_channels, self.out_channels, 3, self.stride, padding=1, bias=True)
        fused.to(device=kernel.device, dtype=kernel.dtype)
        fused.weight.copy_(kernel)
        assert fused.bias is not None
        fused.bias.copy_(bias)
        self.fused = fused
        for name in ("conv3x3", "bn3x3", "conv1x1", "bn"):
            delattr(self, name)


class RepVGG(nn.Module):
    """RepVGG backbone publishing stages 1-4 (strides 4, 8, 16, 32).

    Args:
        widths: channels of stages 0..4 (stage 0 is the single stride-2 stem block).
        depths: blocks per stage; the first block of every stage has stride 2.
        num_classes: >0 adds the ImageNet-style classifier (only for parameter-count parity).

    Attributes:
        feature_info: one dict per map of ``forward_features`` (``num_chs``, ``reduction``, ``module``).
    """

    def __init__(
        self,
        widths: tuple[int, int, int, int, int] = (48, 48, 96, 192, 1280),
        depths: tuple[int, int, int, int, int] = (1, 2, 4, 14, 1),
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        in_channels = 3
        self.feature_info: list[dict] = []
        for i, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            blocks = [QARepVGGBlock(in_channels if b == 0 else width, width, 2 if b == 0 else 1) for b in range(depth)]
            self.add_module(f"stage{i}", nn.Sequential(*blocks))
            in_channels = width
            if i > 0:
                self.feature_info.append({"num_chs": width, "reduction": 2 ** (i + 1), "module": f"stage{i}"})
        self.fc = nn.Linear(in_channels, num_classes) if num_classes > 0 else None
        init_conv_bn(self)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Normalised images ``(N, 3, H, W)`` -> ``[(N, C_i, H / r_i, W / r_i)]`` for r = 4, 8, 16, 32."""
        x = self.stage0(x)  # (N, 48, H/2, W/2)
        features = []
        for info in self.feature_info:
            x = getattr(self, info["module"])(x)
            features.append(x)
        return features

    def forward_head(self, features: list[torch.Tensor]) -> torch.Tensor:
        """ImageNet logits ``(N, num_classes)`` from the last stage (only with ``num_classes > 0``)."""
        if self.fc is None:
            raise RuntimeError("this RepVGG was built without a classifier; pass num_classes > 0 to get one")
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(features[-1], 1), 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(x)

    def reparameterize(self) -> None:
        """Fold every block into one 3x3 conv + ReLU (deployment form; call in eval mode, after training)."""
        for module in self.modules():
            if isinstance(module, QARepVGGBlock):
                module.reparameterize()


def repvgg_a0(num_classes: int = 0) -> RepVGG:
    """RepVGG-A0 with QARepVGG blocks: stage channels 48/96/192/1280 at strides 4/8/16/32."""
    return RepVGG((48, 48, 96, 192, 1280), (1, 2, 4, 14, 1), num_classes)
