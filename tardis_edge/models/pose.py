"""The student pose model used by both training stages and by export.

``PoseModel`` = input normalisation (a buffer, so the exported graph takes RGB 0..255) + backbone + neck on the
stride-4 map + optional feature decoder (stage 1, output ``features``) + optional heatmap head (stage 2, output
``heatmaps``). ``ModelConfig`` describes it completely and travels inside every checkpoint (as a plain dict
under ``"model_config"``, next to the state dict under ``"model"``); ``build_model`` rebuilds it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from tardis_edge.artifact import IMAGENET_MEAN, IMAGENET_STD
from tardis_edge.models.heads import FeatureDecoder, HeatmapHead, TopDownNeck
from tardis_edge.models.hrnet import hrnet_w32
from tardis_edge.models.repvgg import repvgg_a0
from tardis_edge.models.resnet import resnet18, resnet50

HEAD_FINAL_CONV = "head.final"  # the layer export keeps in higher precision (ONNX node "/head/final/Conv")


class BackboneSpec(NamedTuple):
    build: Callable[[], nn.Module]
    neck_levels: tuple[int, ...]  # which maps of forward_features the neck fuses (finest first)


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec(resnet18, (0, 1, 2, 3)),
    "resnet50": BackboneSpec(resnet50, (0, 1, 2, 3)),
    # The pose HRNet's last module already fuses every resolution into the stride-4 branch.
    "hrnet_w32": BackboneSpec(hrnet_w32, (0,)),
    "repvgg_a0": BackboneSpec(repvgg_a0, (0, 1, 2, 3)),
}


@dataclass
class ModelConfig:
    """Everything needed to rebuild a ``PoseModel`` (saved in checkpoints with ``dataclasses.asdict``)."""

    backbone: str = "resnet50"  # one of BACKBONES
    neck_channels: int = 128  # width of the shared stride-4 map the decoder and the head read
    teacher_channels: int = 1024  # the teacher's embedding dim (DINOv2 ViT-L/14 1024, ViT-S/14 384): set from it
    num_keypoints: int = 17
    head_depth: int = 2  # 3x3 conv + BN + ReLU layers before the final 1x1 conv
    input_size: tuple[int, int] = (256, 256)  # (height, width) of the crops; multiples of the backbone's stride
    use_decoder: bool = True  # stage 1: output "features" (N, teacher_channels, H/4, W/4)
    use_head: bool = False  # stage 2: output "heatmaps" (N, num_keypoints, H/4, W/4)
    mean: tuple[float, float, float] = IMAGENET_MEAN  # RGB, on the 0..1 scale (the model's input is 0..255)
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, _checked(field.name, getattr(self, field.name), getattr(ModelConfig, field.name)))
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; known backbones: {', '.join(BACKBONES)}")
        for name in ("neck_channels", "teacher_channels", "num_keypoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"model config {name} must be >= 1, got {getattr(self, name)}")
        if self.head_depth < 0:
            raise ValueError(f"model config head_depth must be >= 0, got {self.head_depth}")
        if min(self.input_size) < 1 or min(self.std) <= 0:
            raise ValueError(f"model config needs positive input_size and std; got {self.input_size}, {self.std}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "model config") -> ModelConfig:
        """Build from a checkpoint/YAML mapping; unknown keys and wrongly typed values are errors."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"{source} has unknown key(s) {', '.join(unknown)}; known keys: {', '.join(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _checked(name: str, value: Any, default: Any) -> Any:
    """``value`` in the type of the field's default (lists from YAML/JSON become tuples), or a TypeError."""
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            raise TypeError(f"model config {name} must be a list of {len(default)} numbers, got {value!r}")
        return tuple(_checked(name, v, d) for v, d in zip(value, default, strict=True))
    if isinstance(default, bool) or isinstance(value, bool):
        if type(value) is not type(default):
            raise TypeError(f"model config {name} must be of type {type(default).__name__}, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if not isinstance(value, type(default)):
        raise TypeError(f"model config {name} must be of type {type(default).__name__}, got {value!r}")
    return value


class PoseModel(nn.Module):
    """Student: normalisation + backbone + stride-4 neck + decoder (stage 1) and/or heatmap head (stage 2).

    Input: ``(N, 3, H, W)`` float RGB in 0..255, H and W multiples of ``max_stride``. ``forward`` returns a dict
    with ``"features"`` ``(N, teacher_channels, H/4, W/4)`` when the decoder is present and ``"heatmaps"``
    ``(N, num_keypoints, H/4, W/4)`` when the head is present (heatmap pixel u <-> input pixel 4u, see
    ``tardis_edge.geometry``).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        spec = BACKBONES[config.backbone]
        self.backbone = spec.build()
        self.neck_levels = spec.neck_levels
        self.neck = TopDownNeck([self.backbone.feature_info[i] for i in spec.neck_levels], config.neck_channels)
        self.max_stride = max(int(info["reduction"]) for info in self.backbone.feature_info)
        self.out_stride = self.neck.reduction
        for side in config.input_size:
            if side % self.max_stride:
                raise ValueError(
                    f"model config input_size {config.input_size} has a side not divisible by {self.max_stride}, "
                    f"the largest stride of {config.backbone}; use multiples of {self.max_stride}, e.g. 256"
                )
        # Normalisation lives in the model (and so in the exported graph): (x / 255 - mean) / std.
        mean = torch.tensor(config.mean, dtype=torch.float32).reshape(1, 3, 1, 1) * 255.0
        std = torch.tensor(config.std, dtype=torch.float32).reshape(1, 3, 1, 1) * 255.0
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self.config = dataclasses.replace(config)
        self.decoder: FeatureDecoder | None = None
        self.head: HeatmapHead | None = None
        if config.use_decoder:
            self.decoder = FeatureDecoder(config.neck_channels, config.teacher_channels)
        if config.use_head:
            self.head = HeatmapHead(config.neck_channels, config.num_keypoints, config.head_depth)
        self.encoder_frozen = False
        self.reparameterized = False

    # ----------------------------------------------------------------------------------------------- forward
    def check_input(self, images: torch.Tensor) -> None:
        """Raise a ValueError naming the problem if ``images`` is not ``(N, 3, H, W)`` with H, W % max_stride == 0."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"PoseModel expects RGB images (N, 3, H, W) in 0..255; got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"PoseModel expects a float tensor (RGB 0..255); got {images.dtype}; use images.float()")
        for side_name, side in (("height", int(images.shape[2])), ("width", int(images.shape[3]))):
            if side % self.max_stride or side == 0:
                fixed = max(self.max_stride, math.ceil(side / self.max_stride) * self.max_stride)
                raise ValueError(
                    f"input {side_name} {side} is not a multiple of {self.max_stride}, the largest stride of "
                    f"{self.config.backbone}; resize or pad the crops to a multiple of {self.max_stride} (e.g. {fixed})"
                )

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """RGB 0..255 ``(N, 3, H, W)`` -> neck map ``(N, neck_channels, H/4, W/4)``."""
        if not torch.jit.is_tracing():  # under ONNX export the shapes are traced values, checked by the exporter
            self.check_input(images)
        x = (images - self.pixel_mean) / self.pixel_std
        features = self.backbone.forward_features(x)
        return self.neck([features[i] for i in self.neck_levels])

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.decoder is None and self.head is None:
            raise RuntimeError("PoseModel has neither a feature decoder nor a heatmap head; call add_head() first")
        neck = self.encode(images)  # (N, C_neck, H/4, W/4)
        outputs = {}
        if self.decoder is not None:
            outputs["features"] = self.decoder(neck)  # (N, C_teacher, H/4, W/4)
        if self.head is not None:
            outputs["heatmaps"] = self.head(neck)  # (N, K, H/4, W/4)
        return outputs

    # ------------------------------------------------------------------------------- stage transitions
    def drop_decoder(self) -> None:
        """Remove the stage-1 feature decoder (the config follows, so checkpoints stay loadable)."""
        self.decoder = None
        self.config.use_decoder = False

    def add_head(self, num_keypoints: int | None = None, head_depth: int | None = None) -> HeatmapHead:
        """Attach a freshly initialised heatmap head (stage 2) on the neck; returns it."""
        if num_keypoints is not None:
            self.config.num_keypoints = num_keypoints
        if head_depth is not None:
            self.config.head_depth = head_depth
        self.config.__post_init__()
        reference = next(self.neck.parameters())
        self.head = HeatmapHead(self.config.neck_channels, self.config.num_keypoints, self.config.head_depth)
        self.head.to(device=reference.device, dtype=reference.dtype)
        self.config.use_head = True
        return self.head

    def encoder_modules(self) -> tuple[nn.Module, nn.Module]:
        return self.backbone, self.neck

    def freeze_encoder(self) -> None:
        """Stop training backbone + neck: no gradients, and BatchNorm statistics stay fixed (eval mode)."""
        for module in self.encoder_modules():
            module.requires_grad_(False)
        self.encoder_frozen = True
        self.encoder_eval()

    def unfreeze_encoder(self) -> None:
        for module in self.encoder_modules():
            module.requires_grad_(True)
        self.encoder_frozen = False
        self.train(self.training)

    def encoder_eval(self) -> None:
        """Put backbone + neck in eval mode (the rest keeps its mode)."""
        for module in self.encoder_modules():
            module.eval()

    def train(self, mode: bool = True) -> PoseModel:
        super().train(mode)
        if self.encoder_frozen:
            self.encoder_eval()
        return self

    # ----------------------------------------------------------------------------------------- deployment
    def reparameterize(self) -> PoseModel:
        """Switch to the deployment form in place (RepVGG blocks -> single 3x3 convs); sets eval mode.

        Other backbones are unchanged. The result is for export/inference only: its state dict no longer
        matches ``build_model(config)``.
        """
        self.eval()
        fold = getattr(self.backbone, "reparameterize", None)
        if fold is not None:
            fold()
        self.reparameterized = True
        return self

    def checkpoint(self) -> dict[str, Any]:
        """``{"model_config": dict, "model": state_dict}`` - the two entries every checkpoint carries."""
        if self.reparameterized:
            raise RuntimeError("a reparameterized (deployment-form) model cannot be checkpointed; save it before")
        return {"model_config": self.config.to_dict(), "model": self.state_dict()}


def build_model(config: ModelConfig | Mapping[str, Any]) -> PoseModel:
    """A freshly initialised ``PoseModel`` for ``config`` (a ``ModelConfig`` or its dict form)."""
    if not isinstance(config, ModelConfig):
        config = ModelConfig.from_dict(config)
    return PoseModel(config)


def model_from_checkpoint(checkpoint: str | Path | Mapping[str, Any]) -> PoseModel:
    """Rebuild a ``PoseModel`` from a checkpoint file or dict holding ``"model_config"`` and ``"model"``."""
    source = "checkpoint dict"
    if isinstance(checkpoint, (str, Path)):
        source = str(checkpoint)
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    missing = [key for key in ("model_config", "model") if key not in checkpoint]
    if missing:
        raise KeyError(
            f"{source} lacks {', '.join(missing)}; a PoseModel checkpoint holds 'model_config' (ModelConfig as a "
            f"dict) and 'model' (state dict); found keys {sorted(checkpoint)}"
        )
    model = build_model(ModelConfig.from_dict(checkpoint["model_config"], source=f"{source} model_config"))
    model.load_state_dict(checkpoint["model"])
    return model
