"""Multi-animal tracking (runtime stage, torch-free): each frame's poses in, one stable identity per animal out.

``Tracker.update`` takes the poses found in one frame (``(N, K, 2)`` keypoints in image pixels, NaN where missing,
``(N, K)`` scores, optional ``(N, 4)`` xywh boxes) and returns a track id per pose. Each track predicts where its
keypoints will be with a constant-velocity model (an alpha-beta filter per keypoint; each keypoint's velocity is
blended with the animal's mean velocity, which averages out the keypoints' noise), so two animals that cross are
told apart by where each is heading, not by where each was. A pose is matched to a track by the similarity of the
pose to that prediction (OKS, ``tardis_edge.metrics.keypoint_similarity``, on the tracker's rotation-free scale
``pose_area``; weighted with box IoU where both have a box), one Hungarian assignment per frame
(``scipy.optimize.linear_sum_assignment``). Two matches that could as well be exchanged (animals on top of each
other) do not move their tracks: both coast on their motion until the animals part. A track that finds no pose is
kept ``max_age`` frames and can be matched again (occlusions, an animal leaving the frame and coming back).

With a known number of animals (``max_animals=M``, e.g. two flies) identities are ``0 .. M-1`` and no other: once
M tracks exist, a pose that matches no track by similarity takes over the identity of the nearest lost track
(re-identification by position) instead of starting an (M+1)-th; poses beyond the M most confident are dropped and
counted (``TrackedFrame.num_dropped``), so the caller can warn. Without ``max_animals`` new tracks get new ids.

Frame order: ``frame_index`` must grow from call to call (gaps are fine: motion is per frame index, so a tracker
that sees every 3rd frame predicts 3 frames ahead). Output keypoints can be smoothed with a one-euro filter
(``TrackerConfig.smooth``); matching always uses the raw keypoints, which the filter's lag would blur.

Boxes for the frames between detector runs come from the poses: ``pose_boxes`` (the refine-pass box of
``tardis_edge.predict``), applied to ``Tracker.predict``'s motion-predicted poses or to the last frame's poses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from tardis_edge import geometry, predict
from tardis_edge.metrics import DEFAULT_OKS_SIGMA, keypoint_similarity

_FORBIDDEN = 1e6  # assignment cost of a pair that may not match (scipy needs finite costs)


@dataclass
class TrackerConfig:
    """How poses are linked into tracks. The defaults suit 25-60 fps video of a few animals."""

    max_animals: int | None = None  # known number of animals: ids stay in 0..max_animals-1; None: open-ended
    min_keypoint_score: float = 0.2  # keypoints scored at or below this (or NaN) are ignored for matching and motion
    min_similarity: float = 0.3  # a pose joins a track by similarity only if (weighted OKS/IoU) >= this
    oks_weight: float = 1.0  # weight of the pose similarity: OKS of the detection against the track's prediction
    iou_weight: float = 0.5  # weight of box IoU, for the pairs where detection and track both have a box
    oks_sigmas: tuple[float, ...] | None = None  # per keypoint; None: uniform metrics.DEFAULT_OKS_SIGMA
    use_motion: bool = True  # False: compare with the last seen pose (an ablation: the tests' naive baseline)
    position_gain: float = 0.7  # alpha-beta filter: share of a keypoint's residual taken into its position, (0, 1]
    velocity_rigidity: float = 0.5  # 0: each keypoint moves with its own velocity; 1: all with their mean
    velocity_gain: float = 0.3  # alpha-beta filter: share of the residual (per frame) taken into the velocity, (0, 1]
    motion_horizon: int = 10  # frames a lost track's prediction extrapolates; it stops there (animals stop, turn)
    lost_scale_growth: float = 0.1  # a lost track's OKS scale widens by this fraction per frame lost
    ambiguity_margin: float = 0.05  # two matches this close to their exchange (in similarity) coast on motion
    max_age: int = 30  # frames a track may go unmatched and still be re-identified; then its id is freed
    new_track_after: int = 1  # consecutive frames an unmatched pose must be seen before it becomes a track
    smooth: bool = False  # one-euro filter on the output keypoints (off: the keypoints pass through unchanged)
    fps: float = 30.0  # frame rate of frame_index, for the one-euro filter's cutoffs (Hz)
    min_cutoff: float = 1.0  # one-euro: cutoff frequency at rest (Hz); lower smooths more, lags more
    beta: float = 0.2  # one-euro: cutoff increase (Hz) per px/s of speed; higher lags less when the animal moves
    d_cutoff: float = 1.0  # one-euro: cutoff of the speed estimate (Hz)

    def __post_init__(self) -> None:
        if self.max_animals is not None and (not isinstance(self.max_animals, int) or self.max_animals < 1):
            raise ValueError(f"max_animals must be a positive int or None, got {self.max_animals!r}")
        if not 0 <= self.min_similarity <= 1:
            raise ValueError(f"min_similarity must be in [0, 1], got {self.min_similarity}")
        if self.oks_weight < 0 or self.iou_weight < 0 or self.oks_weight + self.iou_weight <= 0:
            raise ValueError(
                f"oks_weight {self.oks_weight} and iou_weight {self.iou_weight} must be >= 0 and not both 0"
            )
        if self.oks_sigmas is not None and (len(self.oks_sigmas) == 0 or min(self.oks_sigmas) <= 0):
            raise ValueError(f"oks_sigmas must be positive numbers, one per keypoint, got {self.oks_sigmas}")
        for name in ("position_gain", "velocity_gain"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not 0 <= self.velocity_rigidity <= 1:
            raise ValueError(f"velocity_rigidity must be in [0, 1], got {self.velocity_rigidity}")
        for name in ("motion_horizon", "max_age"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 frames, got {getattr(self, name)}")
        if self.new_track_after < 1:
            raise ValueError(f"new_track_after must be >= 1 frame, got {self.new_track_after}")
        if self.ambiguity_margin < 0:
            raise ValueError(f"ambiguity_margin must be >= 0 (0: off), got {self.ambiguity_margin}")
        if self.lost_scale_growth < 0:
            raise ValueError(f"lost_scale_growth must be >= 0, got {self.lost_scale_growth}")
        if self.fps <= 0 or self.min_cutoff <= 0 or self.d_cutoff <= 0 or self.beta < 0:
            raise ValueError(
                f"one-euro settings need fps, min_cutoff, d_cutoff > 0 and beta >= 0; got fps={self.fps}, "
                f"min_cutoff={self.min_cutoff}, d_cutoff={self.d_cutoff}, beta={self.beta}"
            )


@dataclass(frozen=True)
class TrackedFrame:
    """The tracker's answer for one frame, row for row with the poses it was given.

    Attributes:
        frame_index: the frame.
        track_ids: ``(N,)`` int64 track id per pose; -1 for a pose dropped (beyond ``max_animals``), without any
            usable keypoint or box, or not yet a track (``new_track_after``).
        kept: indices of the poses that took part in tracking, most confident first (at most ``max_animals``).
        num_dropped: usable poses dropped because more than ``max_animals`` were found.
        keypoints_xy: ``(N, K, 2)`` the input keypoints, one-euro smoothed for tracked poses when enabled.
        scores: ``(N, K)`` the input scores.
    """

    frame_index: int
    track_ids: np.ndarray
    kept: np.ndarray
    num_dropped: int
    keypoints_xy: np.ndarray
    scores: np.ndarray

    def by_track(self, num_tracks: int) -> tuple[np.ndarray, np.ndarray]:
        """``(keypoints (num_tracks, K, 2) NaN-filled, scores (num_tracks, K) 0-filled)``: row ``i`` is track ``i``.

        For a fixed number of animals (ids ``0 .. max_animals-1``): one row per identity, whether seen or not.
        """
        keypoints = np.full((num_tracks, *self.keypoints_xy.shape[1:]), np.nan)
        scores = np.zeros((num_tracks, *self.scores.shape[1:]), dtype=np.float64)
        for row, track_id in enumerate(self.track_ids):
            if track_id >= num_tracks:
                raise ValueError(f"track id {track_id} does not fit in {num_tracks} rows; pass num_tracks > {track_id}")
            if track_id >= 0:
                keypoints[track_id] = self.keypoints_xy[row]
                scores[track_id] = self.scores[row]
        return keypoints, scores


class OneEuroFilter:
    """The one-euro filter (Casiez et al., CHI 2012) on ``(K, 2)`` keypoints: an adaptive low-pass per keypoint.

    Time comes from frame indices and ``fps``, so a gap of 3 frames is filtered as 3 / fps seconds. A missing keypoint
    (NaN) passes through as NaN and leaves its state as it was.
    """

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float, fps: float) -> None:
        self.min_cutoff, self.beta, self.d_cutoff, self.fps = min_cutoff, beta, d_cutoff, fps
        self._value: np.ndarray | None = None  # (K, 2) filtered position
        self._speed: np.ndarray | None = None  # (K, 2) filtered derivative, px/s
        self._frame: np.ndarray | None = None  # (K,) frame of each keypoint's last sample

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: np.ndarray) -> np.ndarray:
        tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff))
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, keypoints_xy: np.ndarray, frame_index: int) -> np.ndarray:
        x = np.asarray(keypoints_xy, dtype=np.float64)
        if self._value is None:
            self._value = np.full_like(x, np.nan)
            self._speed = np.zeros_like(x)
            self._frame = np.full(x.shape[0], -1, dtype=np.int64)
        assert self._speed is not None and self._frame is not None
        seen = np.asarray(np.isfinite(x).all(axis=-1))  # (K,)
        first = seen & ~np.isfinite(self._value).all(axis=-1)
        self._value[first] = x[first]
        update = seen & ~first
        if update.any():
            dt = ((frame_index - self._frame[update]) / self.fps)[:, None]  # (U, 1) seconds
            derivative = (x[update] - self._value[update]) / dt
            speed = self._speed[update] + self._alpha(self.d_cutoff, dt) * (derivative - self._speed[update])
            cutoff = self.min_cutoff + self.beta * np.linalg.norm(speed, axis=-1, keepdims=True)
            self._value[update] += self._alpha(cutoff, dt) * (x[update] - self._value[update])
            self._speed[update] = speed
        self._frame[seen] = frame_index
        return np.where(seen[:, None], self._value, np.nan)


@dataclass
class _Track:
    """One animal's state: the keypoints at its last match and their velocities (px per frame)."""

    track_id: int  # -1 while tentative
    keypoints: np.ndarray  # (K, 2) image px at last_frame, NaN where never seen
    velocity: np.ndarray  # (K, 2) px / frame
    scores: np.ndarray  # (K,) last scores
    box: np.ndarray | None  # (4,) xywh at last_frame, or None
    area: float  # OKS scale s² (px²): running mean of pose_area over its well-seen poses
    last_frame: int
    hits: int = 1  # consecutive frames matched (for new_track_after)
    smoother: OneEuroFilter | None = field(default=None, repr=False)


class Tracker:
    """Frame-by-frame multi-animal tracker; one per video (``reset`` for the next)."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.reset()

    def reset(self) -> None:
        """Forget every track (a new video)."""
        self._tracks: list[_Track] = []  # confirmed: they hold an id
        self._tentative: list[_Track] = []  # unmatched poses waiting new_track_after frames
        self._next_id = 0
        self._last_frame: int | None = None
        self._num_keypoints: int | None = None

    @property
    def track_ids(self) -> list[int]:
        """Ids of the live tracks (seen within ``max_age`` frames), ascending."""
        return sorted(t.track_id for t in self._tracks)

    def predict(self, frame_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where the live tracks' keypoints should be at ``frame_index`` (the motion model's guess).

        Returns:
            ``(track_ids (T,), keypoints (T, K, 2) image px, NaN where unknown, scores (T, K) last seen)``, ids
            ascending; crop around them with ``pose_boxes`` between detector runs.
        """
        tracks = sorted(self._tracks, key=lambda t: t.track_id)
        k = self._num_keypoints or 0
        ids = np.array([t.track_id for t in tracks], dtype=np.int64)
        keypoints = np.stack([self._predicted(t, frame_index) for t in tracks]) if tracks else np.zeros((0, k, 2))
        scores = np.stack([t.scores for t in tracks]) if tracks else np.zeros((0, k))
        return ids, keypoints, scores

    def update(
        self,
        keypoints_xy: np.ndarray,
        scores: np.ndarray,
        boxes_xywh: np.ndarray | None = None,
        frame_index: int | None = None,
    ) -> TrackedFrame:
        """Link one frame's poses to the tracks.

        Args:
            keypoints_xy: ``(N, K, 2)`` image pixels, NaN where not found; N may be 0.
            scores: ``(N, K)`` keypoint scores (NaN counts as 0).
            boxes_xywh: ``(N, 4)`` boxes ``(x, y, w, h)`` in image pixels (a detector's, or ``pose_boxes``' as
                ``CropBox.as_xywh()``), NaN rows where a pose has none; None: no boxes.
            frame_index: this frame's number, greater than the last call's; None: the last call's + 1.

        Returns:
            The track id of each pose, and the output keypoints.
        """
        cfg = self.config
        if frame_index is None:
            frame_index = 0 if self._last_frame is None else self._last_frame + 1
        if self._last_frame is not None and frame_index <= self._last_frame:
            raise ValueError(
                f"frame_index {frame_index} does not come after the last frame {self._last_frame}; feed one video's "
                "frames in order (Tracker.reset() before the next video)"
            )
        keypoints, scores, boxes = self._check(keypoints_xy, scores, boxes_xywh)
        n, k = keypoints.shape[:2]
        valid = np.isfinite(keypoints).all(axis=-1) & (np.nan_to_num(scores, nan=0.0) > cfg.min_keypoint_score)
        has_box = np.isfinite(boxes).all(axis=1) if boxes is not None else np.zeros(n, dtype=bool)
        confidence = np.where(valid, np.nan_to_num(scores, nan=0.0), 0.0).mean(axis=1) if n else np.zeros(0)
        order = [int(i) for i in np.argsort(-confidence, kind="stable") if valid[i].any() or has_box[i]]
        kept = order if cfg.max_animals is None else order[: cfg.max_animals]
        observed = np.where(valid[..., None], keypoints, np.nan)  # (N, K, 2) what matching and motion see
        poses = _Poses(
            keypoints=observed,
            scores=np.nan_to_num(scores, nan=0.0),
            boxes=boxes if boxes is not None else np.full((n, 4), np.nan),
            area=np.array([pose_area(p) for p in observed]) if n else np.zeros(0),
            well_seen=valid.sum(axis=1) >= max(1, (k + 1) // 2),
        )
        track_ids = np.full(n, -1, dtype=np.int64)

        # 1. tracks by similarity of each pose to their motion prediction
        matches, lost, detections = self._assign(self._tracks, kept, poses, frame_index)
        ambiguous = self._ambiguous(matches, poses, frame_index)
        # 2. known number of animals, every identity taken: the poses nobody claimed are the lost animals
        # (a track seen in the last frame is sure where its animal is: if no pose resembles it, none is its animal)
        lost = [t for t in lost if frame_index - t.last_frame > 1]
        extra: list[tuple[_Track, int]] = []
        if cfg.max_animals is not None and len(self._tracks) == cfg.max_animals and lost and detections:
            extra, _, detections = self._reidentify(lost, detections, poses, frame_index)
        for track, det in matches:
            if id(track) in ambiguous:  # keep to the motion model until the animals part
                track.keypoints, track.last_frame = self._predicted(track, frame_index), frame_index
            else:
                self._absorb(track, poses, det, frame_index)
            track_ids[det] = track.track_id
        for track, det in extra:  # found again far from where it was lost: its motion starts afresh
            self._restart(track, poses, det, frame_index)
            track_ids[det] = track.track_id
        # 3. tentative tracks, then new ones; a tentative track becomes a track after new_track_after frames
        pending, _, detections = self._assign(self._tentative, detections, poses, frame_index)
        for track, det in pending:
            self._absorb(track, poses, det, frame_index)
            track.hits += 1
        pending += [(self._new_track(poses, det, frame_index), det) for det in detections]
        rank = {det: i for i, det in enumerate(kept)}
        self._tentative = []  # a tentative track not seen this frame is forgotten: its frames must be consecutive
        for track, det in sorted(pending, key=lambda pair: rank[pair[1]]):
            room = cfg.max_animals is None or len(self._tracks) < cfg.max_animals
            if track.hits >= cfg.new_track_after and room:
                track.track_id = self._free_id()
                self._tracks.append(track)
                track_ids[det] = track.track_id
            else:
                self._tentative.append(track)
        # 4. forget tracks lost for more than max_age frames (their ids are free again)
        self._tracks = [t for t in self._tracks if frame_index - t.last_frame <= cfg.max_age]

        out_keypoints = keypoints.copy()
        if cfg.smooth:
            by_id = {t.track_id: t for t in self._tracks}
            for row in np.flatnonzero(track_ids >= 0):
                track = by_id[int(track_ids[row])]
                if track.smoother is None:
                    track.smoother = OneEuroFilter(cfg.min_cutoff, cfg.beta, cfg.d_cutoff, cfg.fps)
                smoothed = track.smoother(observed[row], frame_index)
                out_keypoints[row] = np.where(valid[row][:, None], smoothed, keypoints[row])
        self._last_frame = frame_index
        return TrackedFrame(
            frame_index=frame_index,
            track_ids=track_ids,
            kept=np.asarray(kept, dtype=np.int64),
            num_dropped=len(order) - len(kept),
            keypoints_xy=out_keypoints,
            scores=scores,
        )

    # ------------------------------------------------------------------------------------------- internals

    def _check(
        self, keypoints_xy: np.ndarray, scores: np.ndarray, boxes_xywh: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        keypoints = np.asarray(keypoints_xy, dtype=np.float64)
        score_arr = np.asarray(scores, dtype=np.float64)
        if keypoints.ndim != 3 or keypoints.shape[-1] != 2 or score_arr.shape != keypoints.shape[:2]:
            raise ValueError(
                f"poses must be keypoints (N, K, 2) and scores (N, K); got {keypoints.shape} and {score_arr.shape}"
            )
        n, k = keypoints.shape[:2]
        if n:
            if self._num_keypoints is None:
                self._num_keypoints = k
            elif k != self._num_keypoints:
                raise ValueError(f"poses have {k} keypoints, earlier frames {self._num_keypoints}; one model per video")
            sigmas = self.config.oks_sigmas
            if sigmas is not None and len(sigmas) != k:
                raise ValueError(f"TrackerConfig.oks_sigmas has {len(sigmas)} values for {k} keypoints")
        boxes = None
        if boxes_xywh is not None:
            boxes = np.asarray(boxes_xywh, dtype=np.float64)
            if boxes.shape != (n, 4):
                raise ValueError(f"boxes must be (N, 4) = ({n}, 4) xywh, one per pose; got {boxes.shape}")
        return keypoints, score_arr, boxes

    def _sigmas(self) -> np.ndarray:
        k = self._num_keypoints or 0
        sigmas = self.config.oks_sigmas
        return np.full(k, DEFAULT_OKS_SIGMA) if sigmas is None else np.asarray(sigmas, dtype=np.float64)

    def _steps(self, track: _Track, frame_index: int) -> int:
        """Frames the motion model extrapolates ``track`` to reach ``frame_index``."""
        if not self.config.use_motion:
            return 0
        return min(frame_index - track.last_frame, max(self.config.motion_horizon, 1))

    def _predicted(self, track: _Track, frame_index: int) -> np.ndarray:
        mean = _mean_velocity(track)
        own = np.where(np.isfinite(track.velocity), track.velocity, mean)  # a keypoint never measured: the mean
        rigid = self.config.velocity_rigidity
        return track.keypoints + ((1 - rigid) * own + rigid * mean) * self._steps(track, frame_index)

    def _predicted_box(self, track: _Track, frame_index: int) -> np.ndarray:
        if track.box is None:
            return np.full(4, np.nan)
        return track.box + np.concatenate([_mean_velocity(track) * self._steps(track, frame_index), [0.0, 0.0]])

    def _scale(self, track: _Track, frame_index: int) -> float:
        """The track's OKS scale s² at ``frame_index``: wider the longer it has been lost, and while its velocity
        is unknown (seen once) as wide as after ``motion_horizon`` frames lost."""
        uncertain_for = frame_index - track.last_frame - 1
        if self.config.use_motion and not np.isfinite(track.velocity).any():
            uncertain_for += self.config.motion_horizon
        return track.area * (1.0 + self.config.lost_scale_growth * uncertain_for) ** 2

    def _similarity(self, tracks: Sequence[_Track], dets: Sequence[int], poses: _Poses, frame_index: int) -> np.ndarray:
        """``(T, D)`` weighted OKS/IoU similarity of each track's prediction to each pose, 0 where unknown."""
        cfg = self.config
        predicted = np.stack([self._predicted(t, frame_index) for t in tracks])  # (T, K, 2)
        area = np.array([self._scale(t, frame_index) for t in tracks])  # (T,)
        observed = poses.keypoints[dets]  # (D, K, 2)
        per_keypoint = keypoint_similarity(predicted[:, None], observed[None], area[:, None], self._sigmas())
        common = np.isfinite(per_keypoint)  # (T, D, K): known to the track and seen in the pose
        oks = np.where(common, per_keypoint, 0.0).sum(-1) / np.maximum(common.sum(-1), 1)
        oks = np.where(common.any(-1), oks, np.nan)
        iou = box_iou(np.stack([self._predicted_box(t, frame_index) for t in tracks]), poses.boxes[dets])  # (T, D)
        weighted = np.nan_to_num(oks) * cfg.oks_weight + np.nan_to_num(iou) * cfg.iou_weight
        weight = np.isfinite(oks) * cfg.oks_weight + np.isfinite(iou) * cfg.iou_weight
        return np.where(weight > 0, weighted / np.where(weight > 0, weight, 1.0), 0.0)

    def _assign(
        self, tracks: list[_Track], dets: list[int], poses: _Poses, frame_index: int
    ) -> tuple[list[tuple[_Track, int]], list[_Track], list[int]]:
        """Hungarian assignment by similarity: ``(matches, unmatched tracks, unmatched poses)``."""
        if not tracks or not dets:
            return [], list(tracks), list(dets)
        similarity = self._similarity(tracks, dets, poses, frame_index)
        allowed = similarity >= max(self.config.min_similarity, 1e-9)
        return _hungarian(tracks, dets, np.where(allowed, 1.0 - similarity, np.nan))

    def _ambiguous(self, matches: list[tuple[_Track, int]], poses: _Poses, frame_index: int) -> set[int]:
        """``id()`` of the matched tracks that could as well have each other's pose: exchanging the poses of two
        matches would lower their total similarity by less than ``ambiguity_margin`` (animals on top of each other)."""
        margin = self.config.ambiguity_margin
        if len(matches) < 2 or margin <= 0:
            return set()
        tracks = [track for track, _ in matches]
        similarity = self._similarity(tracks, [det for _, det in matches], poses, frame_index)  # (M, M)
        own = np.diag(similarity)
        loss = own[:, None] + own[None, :] - similarity - similarity.T  # (M, M): what exchanging i and j costs
        np.fill_diagonal(loss, np.inf)
        return {id(tracks[i]) for i in np.flatnonzero((loss < margin).any(axis=1))}

    def _reidentify(
        self, lost: list[_Track], dets: list[int], poses: _Poses, frame_index: int
    ) -> tuple[list[tuple[_Track, int]], list[_Track], list[int]]:
        """Lost tracks take the unclaimed poses by least total distance of centres, each in units of the track's
        (growing) scale: a track lost a moment ago is sure where its animal is, one lost for long is not."""
        centres = np.stack(
            [_centre(self._predicted(t, frame_index), self._predicted_box(t, frame_index)) for t in lost]
        )
        scale = np.sqrt([self._scale(t, frame_index) for t in lost])  # (T,) px
        det_centres = np.stack([_centre(poses.keypoints[d], poses.boxes[d]) for d in dets])
        distance = np.linalg.norm(centres[:, None] - det_centres[None], axis=-1) / scale[:, None]  # (T, D)
        return _hungarian(lost, dets, distance)

    def _new_track(self, poses: _Poses, det: int, frame_index: int) -> _Track:
        observed = poses.keypoints[det]
        area = poses.area[det]
        if not poses.well_seen[det]:  # a partial view (entering the frame) says little about the animal's size
            sizes = [t.area for t in self._tracks]
            area = max(area, float(np.median(sizes))) if sizes and np.isfinite(area) else area
        box = poses.boxes[det]
        if not np.isfinite(area):  # a pose with a box and no keypoint
            area = box[2] * box[3] if np.isfinite(box).all() else 1.0
        return _Track(
            track_id=-1,
            keypoints=observed.copy(),
            velocity=np.full_like(observed, np.nan),  # unknown until a second sighting
            scores=poses.scores[det].copy(),
            box=box.copy() if np.isfinite(box).all() else None,
            area=max(float(area), 1.0),
            last_frame=frame_index,
        )

    def _restart(self, track: _Track, poses: _Poses, det: int, frame_index: int) -> None:
        """Put ``track`` on the pose it was re-identified with, velocity unknown (as a new track's)."""
        fresh = self._new_track(poses, det, frame_index)
        fresh.track_id, fresh.smoother = track.track_id, track.smoother
        fresh.area = track.area if not poses.well_seen[det] else fresh.area
        track.__dict__.update(fresh.__dict__)

    def _absorb(self, track: _Track, poses: _Poses, det: int, frame_index: int) -> None:
        """Move ``track`` to the pose it matched: new keypoints, updated velocities (constant-velocity model)."""
        observed, box = poses.keypoints[det], poses.boxes[det]
        steps = frame_index - track.last_frame
        seen = np.isfinite(observed).all(axis=-1)  # (K,)
        known = seen & np.isfinite(track.keypoints).all(axis=-1)
        # the alpha-beta filter of each keypoint: prediction, then a share of the residual to position and velocity
        predicted = self._predicted(track, frame_index)  # (K, 2); keypoints not seen now stay there
        residual = observed - predicted
        cfg = self.config
        first = known & ~np.isfinite(track.velocity).all(axis=-1)  # a second sighting: the velocity it shows
        velocity = np.where(known[:, None], track.velocity + cfg.velocity_gain * residual / steps, track.velocity)
        velocity[first] = ((observed - track.keypoints) / steps)[first]
        position = np.where(known[:, None], predicted + cfg.position_gain * residual, observed)
        position[first] = observed[first]
        track.keypoints = np.where(seen[:, None], position, predicted)
        track.velocity = velocity
        track.scores = np.where(seen, poses.scores[det], track.scores)
        if poses.well_seen[det]:
            track.area = 0.5 * track.area + 0.5 * max(float(poses.area[det]), 1.0)
        if np.isfinite(box).all():
            track.box = box.copy()
        elif track.box is not None:
            track.box = self._predicted_box(track, frame_index)
        track.last_frame = frame_index

    def _free_id(self) -> int:
        if self.config.max_animals is None:
            self._next_id += 1
            return self._next_id - 1
        taken = {t.track_id for t in self._tracks}
        return next(i for i in range(self.config.max_animals) if i not in taken)


@dataclass(frozen=True)
class _Poses:
    """One frame's poses as the tracker sees them."""

    keypoints: np.ndarray  # (N, K, 2) image px; NaN where missing or scored too low
    scores: np.ndarray  # (N, K), NaN -> 0
    boxes: np.ndarray  # (N, 4) xywh, NaN rows where none
    area: np.ndarray  # (N,) pose_area (px²), NaN without keypoints
    well_seen: np.ndarray  # (N,) at least half the keypoints seen: the area is the animal's size


def _hungarian(
    tracks: list[_Track], dets: list[int], cost: np.ndarray
) -> tuple[list[tuple[_Track, int]], list[_Track], list[int]]:
    """Least-cost one-to-one assignment (NaN cost: may not match): ``(matches, unmatched tracks, unmatched poses)``."""
    allowed = np.isfinite(cost)
    rows, cols = linear_sum_assignment(np.where(allowed, cost, _FORBIDDEN))
    pairs = [(r, c) for r, c in zip(rows, cols, strict=True) if allowed[r, c]]
    matched_rows, matched_cols = {r for r, _ in pairs}, {c for _, c in pairs}
    return (
        [(tracks[r], dets[c]) for r, c in pairs],
        [t for i, t in enumerate(tracks) if i not in matched_rows],
        [d for j, d in enumerate(dets) if j not in matched_cols],
    )


def _mean_velocity(track: _Track) -> np.ndarray:
    """``(2,)`` the mean velocity of the track's keypoints (0 before any was measured)."""
    known = np.isfinite(track.velocity).all(axis=-1)
    return track.velocity[known].mean(axis=0) if known.any() else np.zeros(2)


def pose_area(keypoints_xy: np.ndarray) -> float:
    """The tracker's OKS scale s² of one pose (px²): ``(w² + h²) / 2`` of its keypoints' box, at least 1; NaN if
    no keypoint is known.

    Equal to the box area ``w h`` for a square box, but unlike it the same for an animal at any heading (a straight
    one walking along x has a box of height ~0), so a track's scale does not swing as the animal turns.
    """
    extent = geometry.keypoint_extent(keypoints_xy)
    if extent is None:
        return float("nan")
    w, h = extent[1] - extent[0]
    return max(float(w * w + h * h) / 2.0, 1.0)


def _centre(keypoints: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Mean of the known keypoints, else the box centre, else NaN."""
    known = np.isfinite(keypoints).all(axis=-1)
    if known.any():
        return keypoints[known].mean(axis=0)
    return np.array([box[0] + box[2] / 2, box[1] + box[3] / 2])


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """``(A, B)`` IoU of xywh boxes (image pixels); NaN where either box is NaN."""
    a = np.asarray(boxes_a, dtype=np.float64)[:, None]  # (A, 1, 4)
    b = np.asarray(boxes_b, dtype=np.float64)[None]  # (1, B, 4)
    width = np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    height = np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), np.where(np.isnan(union), np.nan, 0.0))


def pose_boxes(
    keypoints_xy: np.ndarray,
    scores: np.ndarray,
    input_wh: tuple[int, int],
    cfg: predict.PredictConfig | None = None,
) -> list[geometry.CropBox | None]:
    """The crop box around each pose, for frames between detector runs: ``predict.box_from_prediction``'s box.

    Args:
        keypoints_xy: ``(N, K, 2)`` image pixels (e.g. ``Tracker.predict``'s keypoints); NaN where unknown.
        scores: ``(N, K)``; keypoints above ``cfg.box_min_score`` define the box.
        input_wh: network input ``(W_in, H_in)``: the box has its aspect and the model's padding.
        cfg: the predict config (padding, minimum size, score threshold); default ``PredictConfig()``.

    Returns:
        One ``CropBox`` per pose, None where no keypoint is confident.
    """
    cfg = cfg or predict.PredictConfig()
    boxes: list[geometry.CropBox | None] = []
    for keypoints, score in zip(np.asarray(keypoints_xy), np.asarray(scores), strict=True):
        if predict.confident(keypoints, score, cfg.box_min_score).any():
            # the fallback is used only when no keypoint is confident, which was just excluded
            boxes.append(predict.box_from_prediction(keypoints, score, None, input_wh, cfg))  # type: ignore[arg-type]
        else:
            boxes.append(None)
    return boxes
