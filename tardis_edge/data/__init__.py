"""Data stage: DeepLabCut projects, COCO keypoint files and SLEAP labels -> ``PoseDataset`` -> top-down crops.

Importing this package does not import torch; ``TopDownDataset`` and ``CropConfig`` (``tardis_edge.data.crops``)
are loaded on first use.
"""

from __future__ import annotations

from tardis_edge.data.coco import load_coco_keypoints
from tardis_edge.data.dataset import (
    LoadSummary,
    PoseDataset,
    Skipped,
    animals_per_image,
    few_shot,
    flip_pairs_from_names,
    load_dataset,
    read_image_rgb,
    read_sample_image,
    split_by_index,
)
from tardis_edge.data.dlc import load_dlc_project
from tardis_edge.data.sample import KeypointSchema, Sample
from tardis_edge.data.sleap import load_sleap

_LAZY = {"TopDownDataset", "CropConfig"}

__all__ = [
    "CropConfig",
    "KeypointSchema",
    "LoadSummary",
    "PoseDataset",
    "Sample",
    "Skipped",
    "TopDownDataset",
    "animals_per_image",
    "few_shot",
    "flip_pairs_from_names",
    "load_coco_keypoints",
    "load_dataset",
    "load_dlc_project",
    "load_sleap",
    "read_image_rgb",
    "read_sample_image",
    "split_by_index",
]


def __getattr__(name: str):
    if name in _LAZY:
        from tardis_edge.data import crops

        return getattr(crops, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
