"""tardis-edge: targeted distillation of self-supervised ViT features for animal pose, built for the edge.

Stages (one module each): ``teacher`` (DINOv2 features), ``training.distill`` (stage 1),
``training.keypoints`` (stage 2), ``metrics`` (evaluation), ``export`` (ONNX/TensorRT), ``runtime``
(torch-free inference). Coordinate conventions live in ``tardis_edge.geometry``.
"""

__version__ = "0.1.0"
