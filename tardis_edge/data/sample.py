"""The one sample record every dataset format loads into (DeepLabCut, COCO keypoints, SLEAP, video frames)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class KeypointSchema:
    """What the keypoints are: names, skeleton edges, left/right flip pairs, OKS sigmas."""

    names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...] = ()
    flip_pairs: tuple[tuple[int, int], ...] = ()
    sigmas: tuple[float, ...] | None = None  # per-keypoint OKS sigmas; None -> evaluator default

    @property
    def num_keypoints(self) -> int:
        return len(self.names)


@dataclass
class Sample:
    """One animal instance in one image (or one unlabelled frame).

    Attributes:
        sample_id: stable id, unique in the dataset (used as cache key and in error messages).
        image_path: image file; None for frames held in memory (``frame_index`` into ``video_path``).
        keypoints_xy: ``(K, 2)`` float32, original image pixels (pixel-centre convention), NaN where unlabelled.
        visible: ``(K,)`` float32; 0 unlabelled, 1 labelled but occluded (COCO v=1), 2 labelled and visible.
        bbox_xywh: ``(4,)`` float32 COCO box (x, y, w, h) in image pixels, or None (DeepLabCut: derived later).
        category: species / class name (few-shot sampling draws N images per category).
        image_wh: ``(W, H)`` when known without opening the image.
        labelled: False for unlabelled frames (distillation only).
        track: the animal's identity where the format has one (SLEAP track name, DeepLabCut ``individuals`` name,
            COCO ``track_id`` as a string or an ``identity`` / ``track`` field); None otherwise. Several samples of
            one image (``dataset.image_key``) are several animals; the track says which is which across frames.
    """

    sample_id: str
    image_path: Path | None
    keypoints_xy: np.ndarray
    visible: np.ndarray
    bbox_xywh: np.ndarray | None = None
    category: str = "animal"
    image_wh: tuple[int, int] | None = None
    labelled: bool = True
    video_path: Path | None = None
    frame_index: int | None = None
    annotation_id: int | None = None
    image_id: int | None = None
    track: str | None = None
    extra: dict = field(default_factory=dict)
