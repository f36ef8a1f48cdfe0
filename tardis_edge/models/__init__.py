"""Student networks (stages 1 and 2): backbones publishing ``feature_info``, the stride-4 neck, the feature
decoder, the heatmap head and the ``PoseModel`` that assembles them from a ``ModelConfig``."""

from tardis_edge.models.heads import FeatureDecoder, HeatmapHead, TopDownNeck
from tardis_edge.models.hrnet import HRNet, hrnet_w32
from tardis_edge.models.pose import (
    BACKBONES,
    HEAD_FINAL_CONV,
    ModelConfig,
    PoseModel,
    build_model,
    model_from_checkpoint,
)
from tardis_edge.models.repvgg import QARepVGGBlock, RepVGG, repvgg_a0
from tardis_edge.models.resnet import ResNet, resnet18, resnet50

__all__ = [
    "BACKBONES",
    "HEAD_FINAL_CONV",
    "FeatureDecoder",
    "HRNet",
    "HeatmapHead",
    "ModelConfig",
    "PoseModel",
    "QARepVGGBlock",
    "RepVGG",
    "ResNet",
    "TopDownNeck",
    "build_model",
    "hrnet_w32",
    "model_from_checkpoint",
    "repvgg_a0",
    "resnet18",
    "resnet50",
]
