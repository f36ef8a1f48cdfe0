"""Crop boxes for the edge runtime without a detector (single animal), and boxes from the user's own detector.

Detector-free, as evaluation does it (the two passes of ``tardis_edge.predict``): a frame with no box yet is run
on the whole frame (``geometry.box_from_image``), then on a padded box around the confident keypoints (the
*refine* pass, ``tardis_edge.predict.box_from_prediction``). On video, ``BoxFollower`` carries the box from frame
to frame: the next frame starts from a box around this frame's confident keypoints — padded 1.6 to leave room for
motion, moved on by the animal's recent velocity, its size (optionally its centre) smoothed by an exponential
moving average — and is refined at the trained padding 1.25. It drops back to the whole frame when the animal is
lost (mean score below a threshold, or too few confident keypoints).

A followed box can lose part of the animal (a fast move, a cut in the video): the first pass then sees the head
only, the refine box shrinks around it, and the next frame starts from that small box; with high scores the animal
never counts as lost. So the follower remembers the animal's recent size and scores: the followed box never gets
smaller than a fraction of that size, and a followed frame whose keypoints span far less than it, or whose scores
drop far below the recent ones, is *doubtful*: ``Runner.track`` searches it again on the whole frame and takes that
answer (evaluation's two passes).
"""

from __future__ import annotations

import csv
import math
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tardis_edge import geometry
from tardis_edge.predict import PredictConfig, confident

BOX_COLUMNS = ("frame", "x", "y", "w", "h")


@dataclass
class FollowConfig:
    """How boxes are found and followed without a detector."""

    min_score: float = 0.2  # a keypoint is confident above this score (PredictConfig.box_min_score)
    min_keypoints: int = 2  # lost with fewer confident keypoints than this (capped at K)
    lost_mean_score: float = 0.1  # lost when the mean score of all keypoints falls below this
    smoothing: float = 0.5  # EMA weight of the newest box size (1: no smoothing): steadies the zoom
    # EMA weight of the newest box centre. 1 (no smoothing) by default: a smoothed centre lags a moving animal by
    # speed * (1 - w) / w per frame, and jitter of the start box does not matter when the refine pass recentres.
    centre_smoothing: float = 1.0
    predict_motion: bool = True  # move the start box by the recent velocity (see BoxFollower)
    # Velocity is extrapolated at most this many frames ahead: the box centre's velocity is noisy (the keypoint
    # extent changes as the animal turns), and over a whole batch the noise would carry the box off the animal.
    max_predict_frames: int = 3
    velocity_smoothing: float = 0.5  # EMA weight of the newest frame-to-frame centre motion
    padding: float = geometry.DEFAULT_PADDING  # refine box = keypoint extent x padding (the trained framing)
    # The box a video frame starts from is wider, so the motion since the previous frame stays inside it and the
    # first pass sees the whole animal; the refine pass then crops at ``padding``.
    track_padding: float = 1.6
    min_size: float = 16.0  # image pixels; lower bound of the unpadded box side (PredictConfig.box_min_size)
    # The animal's recent size is the largest extent (longer side of the confident keypoints' box, image pixels) over
    # this many updates; its recent score the mean of the frames' mean scores. Both restart when the box does.
    memory_frames: int = 30
    # The followed box holds at least a square of this fraction of the recent size (before track_padding), so an
    # animal that turns, or a prediction that bunched up on one part, does not shrink the next frame's crop.
    min_size_fraction: float = 0.8
    # A followed frame is doubtful, and searched again on the whole frame, when its confident keypoints span less than
    # this fraction of the recent size (they bunched up on part of the animal) ...
    collapse_fraction: float = 0.5
    # ... or when its mean score falls below this fraction of the recent score (the box holds part of the animal, or
    # another scene after a cut). 0 turns the check off.
    score_drop_fraction: float = 0.5

    def __post_init__(self) -> None:
        for name in ("smoothing", "centre_smoothing", "velocity_smoothing"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1] (1 = no smoothing), got {getattr(self, name)}")
        if self.min_keypoints < 1 or self.max_predict_frames < 0:
            raise ValueError(
                f"min_keypoints must be >= 1 and max_predict_frames >= 0, got {self.min_keypoints} and "
                f"{self.max_predict_frames}"
            )
        if self.memory_frames < 1:
            raise ValueError(f"memory_frames must be >= 1, got {self.memory_frames}")
        for name in ("min_size_fraction", "collapse_fraction", "score_drop_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1] (0 turns it off), got {getattr(self, name)}")
        if self.padding < 1 or self.track_padding < 1:
            raise ValueError(
                f"padding and track_padding must be >= 1 ({geometry.DEFAULT_PADDING} is the trained crop), got "
                f"{self.padding} and {self.track_padding}"
            )

    def refine_config(self, predict: PredictConfig) -> PredictConfig:
        """``predict`` with this follower's refine-box rule (confidence threshold, padding, minimum size)."""
        return replace(predict, box_min_score=self.min_score, padding=self.padding, box_min_size=self.min_size)


def is_lost(scores: np.ndarray, keypoints: np.ndarray, cfg: FollowConfig) -> bool:
    """Whether one frame's prediction has lost the animal (mean score or confident-keypoint count too low)."""
    needed = min(cfg.min_keypoints, len(scores))
    return bool(np.mean(scores) < cfg.lost_mean_score or confident(keypoints, scores, cfg.min_score).sum() < needed)


def animal_size(keypoints: np.ndarray, scores: np.ndarray, min_score: float) -> float:
    """Longer side of the box around one frame's confident keypoints (image pixels; 0 when none is confident)."""
    ok = confident(keypoints, scores, min_score)
    if not ok.any():
        return 0.0
    return float(np.ptp(keypoints[ok], axis=0).max())


class BoxFollower:
    """The crop box of the next video frames, from the previous frames' keypoints.

    The followed box moves with the animal's recent velocity (box centre per frame, smoothed): the box for the frame
    ``n`` frames after the last update is shifted by ``min(n, max_predict_frames)`` times that velocity. With
    batched inference a whole batch starts from the state after the previous batch, so this keeps the later frames
    of a batch on a moving animal.

    Args:
        input_wh: network input ``(W_in, H_in)`` (boxes get its aspect ratio).
        cfg: thresholds, smoothing and padding.
    """

    def __init__(self, input_wh: tuple[int, int], cfg: FollowConfig | None = None) -> None:
        self.input_wh = input_wh
        self.cfg = cfg or FollowConfig()
        self._track: geometry.CropBox | None = None
        self._velocity = np.zeros(2)  # box centre motion per frame, image pixels
        # (animal size in image pixels, mean score) of the last memory_frames updates since the box (re)started
        self._recent: deque[tuple[float, float]] = deque(maxlen=self.cfg.memory_frames)
        self.last_frame: int | None = None  # frame number of the last update, when the caller gives them
        self.lost_frames = 0  # frames on which the animal was lost (the box fell back to the whole frame)
        # frames the followed box missed (or held part of: doubtful) and a whole-frame search found (Runner.track)
        self.recovered_frames = 0

    @property
    def tracking(self) -> bool:
        """True while a box is being followed, False while searching the whole frame."""
        return self._track is not None

    def box(self, image_wh: tuple[int, int], frames_ahead: int = 1) -> geometry.CropBox:
        """The box to start a frame from: the followed box moved ``frames_ahead`` frames on (1: the next frame), or
        the whole frame while searching."""
        if self._track is None:
            return geometry.box_from_image(image_wh, self.input_wh)
        ahead = min(frames_ahead, self.cfg.max_predict_frames) if self.cfg.predict_motion else 0
        dx, dy = self._velocity * ahead
        t = self._track
        return geometry.CropBox(t.cx + float(dx), t.cy + float(dy), t.width, t.height)

    def reset(self) -> None:
        """Forget the followed box (the next frame is searched whole): at a cut or a new video."""
        self._track = None
        self._velocity = np.zeros(2)
        self._recent.clear()

    def doubtful(self, keypoints: np.ndarray, scores: np.ndarray) -> bool:
        """Whether a frame predicted from the followed box may have missed (part of) the animal: lost, or its
        confident keypoints span less than ``collapse_fraction`` of the recent size, or its mean score is below
        ``score_drop_fraction`` of the recent score. Such a frame is searched again on the whole frame.

        Args:
            keypoints: ``(K, 2)`` image pixels (NaN: not found).
            scores: ``(K,)``.
        """
        if is_lost(scores, keypoints, self.cfg):
            return True
        if not self._recent:
            return False
        sizes, means = zip(*self._recent, strict=True)
        collapsed = animal_size(keypoints, scores, self.cfg.min_score) < self.cfg.collapse_fraction * max(sizes)
        return bool(collapsed or np.mean(scores) < self.cfg.score_drop_fraction * np.mean(means))

    def frames_ahead(self, frame: int | None, position: int) -> int:
        """How many frames ``frame`` lies after the last update (``position + 1`` without frame numbers), so
        skipped or unreadable frames count in the motion."""
        if frame is None or self.last_frame is None:
            return position + 1
        return max(1, frame - self.last_frame)

    def update(self, keypoints: np.ndarray, scores: np.ndarray, frame: int | None = None) -> None:
        """Take one frame's final prediction (``(K, 2)`` image pixels, ``(K,)`` scores) into the followed box.

        Args:
            keypoints: ``(K, 2)`` image pixels (NaN: not found).
            scores: ``(K,)``.
            frame: the frame number, when known: the velocity is then per real frame across gaps.
        """
        gap = 1 if frame is None or self.last_frame is None else max(1, frame - self.last_frame)
        self.last_frame = frame
        if is_lost(scores, keypoints, self.cfg):
            self.reset()
            self.lost_frames += 1
            return
        ok = confident(keypoints, scores, self.cfg.min_score)
        new = geometry.box_from_keypoints(
            keypoints, ok, self.input_wh, padding=self.cfg.track_padding, min_size=self.cfg.min_size
        )
        self._recent.append((animal_size(keypoints, scores, self.cfg.min_score), float(np.mean(scores))))
        old = self._track
        if old is None:
            self._track = self._at_least_recent_size(new)
            return
        a, c, v = self.cfg.smoothing, self.cfg.centre_smoothing, self.cfg.velocity_smoothing
        self._velocity = v * np.array([new.cx - old.cx, new.cy - old.cy]) / gap + (1 - v) * self._velocity
        self._track = self._at_least_recent_size(
            geometry.CropBox(
                cx=c * new.cx + (1 - c) * old.cx,
                cy=c * new.cy + (1 - c) * old.cy,
                width=a * new.width + (1 - a) * old.width,
                height=a * new.height + (1 - a) * old.height,
            )
        )

    def _at_least_recent_size(self, box: geometry.CropBox) -> geometry.CropBox:
        """``box`` widened about its centre to hold a square of ``min_size_fraction`` of the recent size (the animal
        may turn its longer side any way), padded by ``track_padding``."""
        side = self.cfg.min_size_fraction * max(size for size, _ in self._recent)
        floor = geometry.box_from_center_size(box.cx, box.cy, side, side, self.input_wh, self.cfg.track_padding)
        return geometry.CropBox(box.cx, box.cy, max(box.width, floor.width), max(box.height, floor.height))


def boxes_from_xywh(
    boxes_xywh: np.ndarray, input_wh: tuple[int, int], padding: float = geometry.DEFAULT_PADDING
) -> list[geometry.CropBox]:
    """Crop boxes from detector boxes ``(N, 4)`` COCO ``(x, y, w, h)`` in image pixels (padded, aspect-corrected)."""
    arr = np.asarray(boxes_xywh, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must be an (N, 4) array of (x, y, w, h) in image pixels, got shape {arr.shape}")
    return [geometry.box_from_xywh(row, input_wh, padding) for row in arr]


def read_boxes_csv(path: str | Path) -> dict[int | str, tuple[float, float, float, float]]:
    """Detector boxes from a CSV with the header ``frame,x,y,w,h`` (one box per frame, image pixels).

    ``frame`` is a video frame number (0-based) or, for image inputs, the image's file name. Frames missing from
    the file are run detector-free.

    Returns:
        ``{frame: (x, y, w, h)}`` with integer keys for numeric frames.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"boxes file {p} does not exist; write a CSV with the header {','.join(BOX_COLUMNS)}")
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [c.strip().lower() for c in next(reader, [])]
        if header != list(BOX_COLUMNS):
            raise ValueError(f"{p}: header must be {','.join(BOX_COLUMNS)}, got {','.join(header) or '(empty file)'}")
        boxes: dict[int | str, tuple[float, float, float, float]] = {}
        for line_no, row in enumerate(reader, start=2):
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(BOX_COLUMNS):
                raise ValueError(f"row {line_no} of {p} has {len(row)} cells, expected 5 ({','.join(BOX_COLUMNS)})")
            name = row[0].strip()
            key: int | str = int(name) if name.isdigit() else name
            try:
                x, y, w, h = (float(c) for c in row[1:])
            except ValueError:
                raise ValueError(f"row {line_no} of {p}: {row[1:]} are not all numbers (x, y, w, h)") from None
            if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
                raise ValueError(
                    f"row {line_no} of {p}: box (x={x}, y={y}, w={w}, h={h}) must be finite with w, h > 0; "
                    "drop the row to run that frame detector-free"
                )
            if key in boxes:
                raise ValueError(f"row {line_no} of {p}: frame {name} has a second box; tardis-edge takes one animal")
            boxes[key] = (x, y, w, h)
    return boxes
