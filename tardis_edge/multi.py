"""Many animals per frame: find, pose and (with ``tardis_edge.tracking``) track every animal — for any backend.

Per frame:

1. **Boxes.** On a detection frame (every ``detect_every`` frames, and whenever fewer animals are held than
   ``expected_animals``) the finder (``tardis_edge.finder``) runs on the whole frame; the boxes of animals held from
   the previous frame that no found animal overlaps are kept too, so a missed detection does not lose an animal. In
   between, each animal's box comes from its own previous pose (``predict.box_from_prediction``), as mmdeploy's
   PoseTracker and DLC-live's ``SkipFrames`` do.
2. **Pose.** Top-down pose on all boxes of the frame in one batch (``predict.predict_boxes``), then, with
   ``two_pass``, again on a box around each animal's own confident keypoints (on frames between finder runs only
   with ``refine_tracked``: the held box already frames the animal's previous pose).
3. **Duplicates.** Two boxes on one animal converge on the same pose: poses whose confident keypoints lie within
   ``duplicate_distance`` x the animal's size of each other are one animal (the stronger is kept); an animal with
   fewer than ``min_keypoints`` confident keypoints is dropped (lost). At most ``max_animals`` are kept.

The crop runner and the finder runner are the only model-specific parts (PyTorch in training evaluation, ONNX
Runtime or TensorRT at the edge), so every path poses animals alike. An external detector
(``tardis_edge.runtime.detector``, any ``AnimalDetector``) can stand in for the finder: only where the found animals
come from changes. No torch here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tardis_edge import geometry
from tardis_edge.finder import FinderConfig, FinderRunner, FoundAnimal, find_animals
from tardis_edge.predict import CropRunner, PredictConfig, box_from_prediction, confident, predict_boxes

# An animal detector in place of the finder: RGB uint8 (H, W, 3) frames -> per frame, the animals' unpadded boxes in
# image pixels (pixel-centre convention) and scores, strongest first.
AnimalDetector = Callable[[Sequence[np.ndarray]], list[list[FoundAnimal]]]


@dataclass
class MultiConfig:
    """How animals are found and kept between frames."""

    detect_every: int = 1  # run the finder every N frames (1: every frame); pose-derived boxes in between
    expected_animals: int = 0  # > 0: run the finder on every frame that holds fewer animals than this
    max_animals: int = 0  # keep at most this many animals per frame (highest instance scores); 0: no limit
    min_keypoints: int = 3  # an animal needs this many confident keypoints, or all if it has fewer (else it is lost)
    duplicate_distance: float = 0.25  # median keypoint distance / animal size below which two poses are one animal
    keep_iou: float = 0.3  # a held box overlapping a found box by less than this IoU is kept on detection frames
    refine_tracked: bool = True  # frames without a finder run: also the refine pass (False: one pass in the held box,
    # which already frames the animal's previous pose, as mmdeploy's PoseTracker does; about half the pose cost)

    def __post_init__(self) -> None:
        if self.detect_every < 1 or self.max_animals < 0 or self.expected_animals < 0 or self.min_keypoints < 1:
            raise ValueError(
                "multi-animal config needs detect_every >= 1, max_animals >= 0, expected_animals >= 0 and "
                f"min_keypoints >= 1; got {self.detect_every}, {self.max_animals}, {self.expected_animals}, "
                f"{self.min_keypoints}"
            )


@dataclass
class FramePoses:
    """The animals of one frame (``M`` of them).

    Attributes:
        keypoints: ``(M, K, 2)`` image pixels, NaN where not found.
        scores: ``(M, K)`` keypoint scores.
        instance_scores: ``(M,)`` mean of the keypoint scores clipped to [0, 1].
        boxes: ``M`` crop boxes the final poses were predicted in.
        detected: whether the finder ran on this frame.
        dropped: animals found beyond ``max_animals`` (the caller warns).
        track_ids: ``(M,)`` identities when a tracker assigned them, else -1.
    """

    keypoints: np.ndarray
    scores: np.ndarray
    instance_scores: np.ndarray
    boxes: list[geometry.CropBox]
    detected: bool
    dropped: int = 0
    track_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        if len(self.track_ids) != len(self.keypoints):
            self.track_ids = np.full(len(self.keypoints), -1, np.int64)

    @property
    def num_animals(self) -> int:
        return len(self.keypoints)


def instance_score(scores: np.ndarray) -> np.ndarray:
    """``(M, K) -> (M,)`` the mean keypoint score clipped to [0, 1] (an animal's confidence)."""
    return np.clip(np.asarray(scores, np.float64), 0.0, 1.0).mean(axis=-1) if len(scores) else np.zeros(0)


def _animal_size(keypoints: np.ndarray, ok: np.ndarray) -> float:
    """The diagonal of the confident keypoints' extent (1 for fewer than two)."""
    extent = geometry.keypoint_extent(keypoints, ok)
    return float(np.linalg.norm(extent[1] - extent[0])) if extent is not None and ok.sum() > 1 else 1.0


def deduplicate(keypoints: np.ndarray, scores: np.ndarray, cfg: MultiConfig, min_score: float) -> tuple[list[int], int]:
    """Which poses to keep (strongest first) and how many were dropped beyond ``cfg.max_animals``.

    A pose with fewer than ``cfg.min_keypoints`` confident keypoints is lost; of two poses whose shared confident
    keypoints lie closer than ``duplicate_distance`` x the stronger animal's size (median), the weaker goes.
    """
    strength = instance_score(scores)
    kept: list[int] = []
    sizes: dict[int, tuple[np.ndarray, float]] = {}  # kept pose -> (its confident keypoints, its size)
    for i in np.argsort(-strength, kind="stable"):
        ok = confident(keypoints[i], scores[i], min_score)
        if ok.sum() < min(cfg.min_keypoints, len(ok)):  # a model with fewer keypoints needs all of them
            continue
        duplicate = False
        for j in kept:
            ok_j, size_j = sizes[j]
            both = ok & ok_j
            if both.any():
                distance = np.median(np.linalg.norm(keypoints[i][both] - keypoints[j][both], axis=-1))
                if distance < cfg.duplicate_distance * size_j:
                    duplicate = True
                    break
        if not duplicate:
            kept.append(int(i))
            sizes[int(i)] = (ok, _animal_size(keypoints[i], ok))
    dropped = 0
    if cfg.max_animals and len(kept) > cfg.max_animals:
        dropped = len(kept) - cfg.max_animals
        kept = kept[: cfg.max_animals]
    return kept, dropped


class MultiAnimalPredictor:
    """Frame-by-frame multi-animal pose for one video or camera (holds the previous frame's animals).

    Args:
        crop_runner: the pose model (``tardis_edge.predict.CropRunner``).
        finder_runner: the finder model (``tardis_edge.finder.FinderRunner``); None: ``boxes`` must be given.
        input_wh: the pose model's input ``(W, H)``.
        predict: decode, flip test, two passes, box rule.
        finder: the finder's input size and decode; ``finder_stride`` its heatmap stride.
        multi: detection schedule, duplicates, maximum number of animals.
        flip_indices: left/right channel permutation for the flip test on heatmaps.
        detector: an external detector used instead of the finder (``finder_runner`` is then not run).
    """

    def __init__(
        self,
        crop_runner: CropRunner,
        finder_runner: FinderRunner | None,
        input_wh: tuple[int, int],
        predict: PredictConfig,
        finder: FinderConfig,
        finder_stride: float,
        multi: MultiConfig,
        flip_indices: Sequence[int] | None = None,
        detector: AnimalDetector | None = None,
    ) -> None:
        self.crop_runner, self.finder_runner, self.detector = crop_runner, finder_runner, detector
        self.input_wh, self.predict, self.finder, self.finder_stride = tuple(input_wh), predict, finder, finder_stride
        self.multi, self.flip_indices = multi, flip_indices
        self.held: list[geometry.CropBox] = []  # pose-derived boxes of the animals of the previous frame
        self.frames_seen = 0

    def reset(self) -> None:
        """Forget the held animals (a new video, or a cut)."""
        self.held = []
        self.frames_seen = 0

    def _needs_detection(self) -> bool:
        if self.frames_seen % self.multi.detect_every == 0 or not self.held:
            return True
        return bool(self.multi.expected_animals and len(self.held) < self.multi.expected_animals)

    def _detect(self, frame_rgb: np.ndarray) -> list[geometry.CropBox]:
        if self.detector is not None:
            found = self.detector([frame_rgb])[0]
        elif self.finder_runner is not None:
            found = find_animals(self.finder_runner, [frame_rgb], self.finder, self.finder_stride)[0]
        else:
            raise ValueError("this model has no finder: pass boxes for every frame (--boxes) or a detector")
        boxes = [a.crop_box(self.input_wh, self.predict.padding) for a in found]
        if boxes and self.held:
            from tardis_edge.tracking import box_iou  # here: tracking -> metrics -> multi would be a cycle at import

            overlap = box_iou(np.array([h.as_xywh() for h in self.held]), np.array([b.as_xywh() for b in boxes]))
            boxes += [h for h, row in zip(self.held, overlap, strict=True) if (row < self.multi.keep_iou).all()]
        else:
            boxes += self.held
        return boxes

    def __call__(self, frame_rgb: np.ndarray, boxes: Sequence[geometry.CropBox] | None = None) -> FramePoses:
        """The animals of the next frame (RGB uint8 ``(H, W, 3)``); ``boxes`` (image pixels) replace the finder or
        detector."""
        detected = boxes is None and self._needs_detection()
        if boxes is not None:
            first = list(boxes)
        else:
            first = self._detect(frame_rgb) if detected else list(self.held)
        self.frames_seen += 1
        k = len(self.flip_indices) if self.flip_indices is not None else 0
        if not first:
            self.held = []
            return FramePoses(np.zeros((0, k, 2)), np.zeros((0, k), np.float32), np.zeros(0), [], detected)
        cfg = self.predict
        frames = [frame_rgb] * len(first)
        keypoints, scores = predict_boxes(self.crop_runner, frames, first, self.input_wh, cfg, self.flip_indices)
        final = first
        if cfg.two_pass and (detected or boxes is not None or self.multi.refine_tracked):
            final = [
                box_from_prediction(kp, s, b, self.input_wh, cfg)
                for kp, s, b in zip(keypoints, scores, first, strict=True)
            ]
            keypoints, scores = predict_boxes(self.crop_runner, frames, final, self.input_wh, cfg, self.flip_indices)
        kept, dropped = deduplicate(keypoints, scores, self.multi, cfg.box_min_score)
        keypoints, scores = keypoints[kept], scores[kept]
        final = [final[i] for i in kept]
        self.held = [
            box_from_prediction(kp, s, b, self.input_wh, cfg) for kp, s, b in zip(keypoints, scores, final, strict=True)
        ]
        return FramePoses(keypoints, scores, instance_score(scores), final, detected, dropped)
