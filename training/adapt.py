"""Video adaptation and memory replay: SuperAnimal's learning tools on a trained run.

``python -m training.adapt RUN VIDEO… [--out=NEW_RUN] [--adapt.epochs=4 ...]`` (or the ``adapt`` stage of
``training.full`` when ``--adapt.videos`` is set):

1. **Predict** every frame of the videos with the run's model and the flip test (multi-animal runs: every animal the
   run's finder finds, through ``tardis_edge.multi.MultiAnimalPredictor``, linked over frames by
   ``tardis_edge.tracking``). Frames of the run's validation and test parts are never used.
2. **Pseudo-label** a keypoint where it is confident (score >= ``min_score``), flip-consistent (the crop's and its
   mirror's own predictions lie within ``flip_tolerance`` x the crop box side) and, with ``temporal_tolerance`` > 0,
   temporally consistent (within that share of the box side of the mean of the previous and next frame's position).
   The other keypoints stay unlabelled: target weight 0, no loss.
3. **Fine-tune** from the run's weights for ``epochs`` epochs (seeded) on every ``train_every``-th pseudo-labelled
   frame, with the run's labelled training part unless ``labelled=false`` (stage 2's loop, ``run_keypoints``).
4. Write a **new run folder** (never the original's): the run's config with the ``adapt`` section, its split, its
   finder, and ``model.pt`` from the evaluate stage of ``training.full`` on the original test part; it exports like
   any other run. ``adapt_report.json`` compares jitter before and after on the same videos.

Jitter (``jitter_report``): the median frame-to-frame displacement of the keypoints on frames where the animal
barely moves (its centre, median-filtered over ``still_window`` frames, moves less than ``still_speed_px`` per frame
over that window, judged on the original model's predictions) and the share of frame pairs with a keypoint jump
above ``jump_px``.

Resumable: the predictions (``adapt/*.npz``) and the fine-tune's checkpoints are kept in the new folder; the same
command continues. A folder holding another run or adaptation (other config) is refused.

Also here, for ``training.full`` (``--init_from=RUN``, ``--keypoints.memory_replay=true``): ``load_init_weights``
starts stage 2 from another run's weights, matching heatmap channels by keypoint name, and ``memory_replay`` gives
the keypoints a sample's dataset does not label (``tardis_edge.data.keypoint_map``) that run's confident,
flip-consistent predictions as labels.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tardis_edge import geometry
from tardis_edge.codec import flip_heatmaps, flip_indices_from_pairs, flip_shift_px
from tardis_edge.data.sample import Sample
from tardis_edge.io import atomic_path
from tardis_edge.predict import PredictConfig, box_from_prediction, crop_batch, predict_frames

LOG = logging.getLogger("tardis")

PSEUDO_DIR = "adapt"  # in the adapted run: predictions before (pseudo-labels) and after, per video
REPORT_FILE = "adapt_report.json"


@dataclass
class AdaptConfig:
    """Video adaptation: pseudo-labels from the run's own confident predictions and a short fine-tune."""

    videos: list[str] = field(default_factory=list)  # videos to adapt to (training.full: the stage runs when set)
    out: str = ""  # the adapted run folder; "" = <run>-adapted beside the run
    source: str = ""  # the run adapted from (training.adapt writes it; not an option)
    frames: str = ""  # "start:stop" or "start:stop:step" of each video's frames; "" = all frames
    min_score: float = 0.5  # a pseudo-label needs a flip-test heatmap maximum of at least this
    flip_tolerance: float = 0.04  # ... its crop's and mirror's own keypoints within this x the crop box side
    temporal_tolerance: float = 0.04  # ... within this x box side of its neighbours' mean position; 0 = no check
    min_keypoints: int = 1  # an animal becomes a training sample with at least this many pseudo-labels
    train_every: int = 4  # fine-tune on every N-th predicted frame (neighbouring frames are near copies)
    labelled: bool = True  # also fine-tune on the run's labelled training part (keeps what it learned)
    epochs: int = 4
    batch_size: int = 16
    lr: float = 2e-4  # a fifth of stage 2's: the model is trained, the video only shifts it
    warmup_steps: int = 10
    seed: int = 0
    predict_after: bool = True  # predict the videos again with the adapted model, for the report
    still_window: int = 9  # frames of the median filter on the animal's centre (jitter report)
    still_speed_px: float = 1.0  # the filtered centre moves less than this per frame: the animal barely moves
    jump_px: float = 10.0  # a keypoint moving more than this between frames is a jump (jitter report)


# ---------------------------------------------------------------- prediction with the flip agreement
@torch.no_grad()
def flip_pair_keypoints(
    model: torch.nn.Module,
    frames_rgb: Sequence[np.ndarray],
    boxes: Sequence[geometry.CropBox],
    input_wh: tuple[int, int],
    cfg: PredictConfig,
    flip_indices: Sequence[int],
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass of the flip test on the given boxes, plus how far the crop's and its mirror's own keypoints lie apart.

    The keypoints and scores are those of the predictor with the flip test (``tardis_edge.predict.predict_boxes``
    through ``kernels.predict.model_crop_runner``: the same crops, the same average of the heatmaps, the same decode);
    the plain and the un-mirrored heatmaps are decoded on their own as well.

    Returns:
        ``(keypoints (N, K, 2) image px, NaN where score <= 0; scores (N, K); flip_px (N, K) image px between the
        two single-view keypoints, inf where either view finds nothing)``.
    """
    from kernels.decode import decode_heatmaps

    beta = cfg.softargmax_beta if cfg.decode == "softargmax" else None
    all_kp, all_scores, all_flip = [], [], []
    for start in range(0, len(frames_rgb), cfg.batch_size):
        chunk = slice(start, start + cfg.batch_size)
        crops, affines = crop_batch(frames_rgb[chunk], boxes[chunk], input_wh)
        input_to_image = geometry.invert_affine(affines)
        x = torch.from_numpy(crops).to(device)  # (n, 3, H_in, W_in)
        plain = model(x)["heatmaps"].float()  # (n, K, H_hm, W_hm)
        mirrored = model(torch.flip(x, dims=[-1]))["heatmaps"].float()
        mirrored = flip_heatmaps(mirrored, flip_indices, shift_px=flip_shift_px(x.shape[-1], plain.shape[-1]))
        average = 0.5 * (plain + mirrored)
        stride = geometry.heatmap_stride((x.shape[-1], x.shape[-2]), (plain.shape[-1], plain.shape[-2]))
        heatmap_to_image = np.stack([geometry.compose(m, geometry.scale_affine(stride)) for m in input_to_image])
        crop_to_image = torch.from_numpy(np.concatenate([heatmap_to_image] * 3)).float().to(plain.device)
        keypoints, scores = decode_heatmaps(
            torch.cat([average, plain, mirrored]).contiguous(), cfg.decode, beta, crop_to_image
        )
        keypoints, scores = keypoints.cpu().numpy().astype(np.float64), scores.cpu().numpy()
        n = len(x)
        kp, s = keypoints[:n], scores[:n].astype(np.float32)
        kp[s <= 0] = np.nan
        apart = np.linalg.norm(keypoints[n : 2 * n] - keypoints[2 * n :], axis=-1)
        apart[(scores[n : 2 * n] <= 0) | (scores[2 * n :] <= 0)] = np.inf
        all_kp.append(kp)
        all_scores.append(s)
        all_flip.append(apart.astype(np.float32))
    return np.concatenate(all_kp), np.concatenate(all_scores), np.concatenate(all_flip)


@dataclass
class VideoPoses:
    """Every animal predicted on the frames of one video, one row per (frame, animal).

    Attributes:
        frame_index: ``(R,)`` video frame of each row, ascending.
        track: ``(R,)`` the animal's identity over frames (0 for a single animal; the tracker's id, -1 unassigned).
        keypoints: ``(R, K, 2)`` image px, NaN where not found; ``scores`` ``(R, K)``.
        flip_px: ``(R, K)`` distance between the crop's and its mirror's own keypoints (image px, inf: not found).
        box_xywh: ``(R, 4)`` the crop box the keypoints were predicted in (padded), image px.
    """

    frame_index: np.ndarray
    track: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray
    flip_px: np.ndarray
    box_xywh: np.ndarray

    FIELDS = ("frame_index", "track", "keypoints", "scores", "flip_px", "box_xywh")

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **{name: getattr(self, name) for name in self.FIELDS})

    @classmethod
    def load(cls, path: Path) -> VideoPoses:
        with np.load(path) as data:
            return cls(**{name: data[name] for name in cls.FIELDS})

    @property
    def box_side(self) -> np.ndarray:
        """``(R,)`` the longer side of each crop box (the scale of the tolerances)."""
        return self.box_xywh[:, 2:].max(axis=1)


def _box_xywh(boxes: Sequence[geometry.CropBox]) -> np.ndarray:
    return np.array([b.as_xywh() for b in boxes], dtype=np.float64).reshape(-1, 4)


def predict_single(
    model: torch.nn.Module,
    frames_rgb: Sequence[np.ndarray],
    input_wh: tuple[int, int],
    cfg: PredictConfig,
    flip_indices: Sequence[int],
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Detector-free two-pass prediction with the flip test (``predict_frames``'s boxes), and the flip agreement.

    Returns:
        ``(keypoints (N, K, 2), scores (N, K), flip_px (N, K), box_xywh (N, 4))``.
    """
    from kernels.predict import model_crop_runner

    cfg = dataclasses.replace(cfg, flip_test=True)
    run = model_crop_runner(model, cfg, flip_indices, device)
    keypoints, scores, boxes = predict_frames(
        run, frames_rgb, input_wh, dataclasses.replace(cfg, two_pass=False), flip_indices
    )
    if cfg.two_pass:
        boxes = [box_from_prediction(k, s, b, input_wh, cfg) for k, s, b in zip(keypoints, scores, boxes, strict=True)]
    keypoints, scores, flip_px = flip_pair_keypoints(model, frames_rgb, boxes, input_wh, cfg, flip_indices, device)
    return keypoints, scores, flip_px, _box_xywh(boxes)


class PoseSource:
    """A deployed model (``model.pt``) ready to predict video frames: single-animal or, with a finder, every animal."""

    def __init__(self, checkpoint_path: Path, multi_config, device: torch.device) -> None:
        from tardis_edge.checkpoint import DeployCheckpoint
        from tardis_edge.config import from_dict

        ck = DeployCheckpoint.load(checkpoint_path)
        self.checkpoint = ck
        self.device = device
        self.model = ck.build_model(str(checkpoint_path)).to(device).eval()
        self.schema = ck.schema
        self.input_wh = ck.input_size
        self.predict = dataclasses.replace(from_dict(PredictConfig, ck.predict), flip_test=True)
        self.flip_indices = flip_indices_from_pairs(ck.schema.num_keypoints, ck.schema.flip_pairs)
        self.multi = None
        if ck.finder is not None:
            from tardis_edge.finder import FinderConfig
            from training.multi_eval import pytorch_predictor

            finder = ck.build_finder(str(checkpoint_path)).to(device).eval()
            self.multi = pytorch_predictor(
                self.model,
                finder,
                from_dict(FinderConfig, ck.finder["config"]),
                float(ck.finder["stride"]),
                self.input_wh,
                self.predict,
                multi_config,
                self.flip_indices,
                device,
            )

    def predict_video(self, video: Path, frames: Sequence[int], desc: str, chunk: int = 64) -> VideoPoses:
        """Predict ``frames`` (ascending) of ``video``; consecutive frames form one sequence for the tracker."""
        from tqdm import tqdm

        from tardis_edge.data.video import FrameReader

        rows: dict[str, list] = {name: [] for name in VideoPoses.FIELDS}
        with FrameReader() as reader, tqdm(total=len(frames), desc=desc, leave=False) as bar:
            if self.multi is None:
                for start in range(0, len(frames), chunk):
                    indices = list(frames[start : start + chunk])
                    images = [reader.read_frame(video, i) for i in indices]
                    kp, s, fp, box = predict_single(
                        self.model, images, self.input_wh, self.predict, self.flip_indices, self.device
                    )
                    for name, value in zip(
                        VideoPoses.FIELDS, (indices, [0] * len(indices), kp, s, fp, box), strict=True
                    ):
                        rows[name].extend(value)
                    bar.update(len(indices))
            else:
                self._predict_animals(reader, video, frames, rows, bar)
        k = self.schema.num_keypoints
        shapes = {"keypoints": (0, k, 2), "scores": (0, k), "flip_px": (0, k), "box_xywh": (0, 4)}
        return VideoPoses(
            **{
                name: np.asarray(values) if values else np.zeros(shapes.get(name, (0,)))
                for name, values in rows.items()
            }
        )

    def _predict_animals(self, reader, video: Path, frames: Sequence[int], rows: dict, bar) -> None:
        from tardis_edge.tracking import Tracker, TrackerConfig

        tracker = Tracker(TrackerConfig(max_animals=self.multi.multi.max_animals or None))
        previous = None
        for index in frames:
            if previous is None or index != previous + 1:  # a gap (held-out frames): a new sequence
                self.multi.reset()
                tracker.reset()
            previous = index
            image = reader.read_frame(video, index)
            poses = self.multi(image)
            bar.update(1)
            if not poses.num_animals:
                continue
            # the predictor's own keypoints again, on its final boxes, with the flip agreement
            kp, s, fp = flip_pair_keypoints(
                self.model,
                [image] * poses.num_animals,
                poses.boxes,
                self.input_wh,
                self.predict,
                self.flip_indices,
                self.device,
            )
            ids = tracker.update(kp, s, frame_index=int(index)).track_ids
            for m in range(poses.num_animals):
                for name, value in zip(
                    VideoPoses.FIELDS,
                    (index, int(ids[m]), kp[m], s[m], fp[m], _box_xywh([poses.boxes[m]])[0]),
                    strict=True,
                ):
                    rows[name].append(value)


# ---------------------------------------------------------------- pseudo-labels
def _neighbour_rows(poses: VideoPoses, step: int) -> np.ndarray:
    """``(R,)`` row of the same animal ``step`` frames away (-1: none)."""
    where = {(int(t), int(f)): r for r, (t, f) in enumerate(zip(poses.track, poses.frame_index, strict=True)) if t >= 0}
    return np.array(
        [
            where.get((int(t), int(f) + step), -1) if t >= 0 else -1
            for t, f in zip(poses.track, poses.frame_index, strict=True)
        ],
        dtype=np.int64,
    )


def temporal_deviation(poses: VideoPoses) -> np.ndarray:
    """``(R, K)`` distance (image px) of each keypoint from the mean of its positions one frame before and after
    (same animal); NaN where a neighbour frame or keypoint is missing."""
    before, after = _neighbour_rows(poses, -1), _neighbour_rows(poses, 1)
    k = poses.keypoints.shape[1]
    out = np.full((len(poses.frame_index), k), np.nan)
    both = (before >= 0) & (after >= 0)
    mean = 0.5 * (poses.keypoints[before[both]] + poses.keypoints[after[both]])
    out[both] = np.linalg.norm(poses.keypoints[both] - mean, axis=-1)
    return out


def select_pseudo_labels(poses: VideoPoses, cfg: AdaptConfig) -> tuple[np.ndarray, dict[str, int]]:
    """Which predicted keypoints become labels: ``(R, K)`` mask, and how many each rule turned away."""
    found = np.isfinite(poses.keypoints).all(-1)
    confident_ = found & (poses.scores >= cfg.min_score)
    side = poses.box_side[:, None]
    agrees = confident_ & (poses.flip_px <= cfg.flip_tolerance * side)
    keep = agrees
    if cfg.temporal_tolerance > 0:
        deviation = temporal_deviation(poses)
        with np.errstate(invalid="ignore"):
            keep = agrees & (deviation <= cfg.temporal_tolerance * side)
    keep &= (keep.sum(axis=1) >= cfg.min_keypoints)[:, None]
    counts = {
        "keypoints": int(found.size),
        "below_min_score": int((~confident_).sum()),
        "flip_inconsistent": int((confident_ & ~agrees).sum()),
        "temporally_inconsistent": int((agrees & ~keep).sum()),
        "kept": int(keep.sum()),
    }
    return keep, counts


def pseudo_samples(
    poses: VideoPoses, keep: np.ndarray, video: Path, image_wh: tuple[int, int], train_every: int, padding: float
) -> list[Sample]:
    """Training samples of every ``train_every``-th predicted frame: kept keypoints labelled (``visible`` 1), the rest
    unlabelled (weight 0); the crop box is the one the model predicted in (stored unpadded as ``bbox_xywh``)."""
    frames = np.unique(poses.frame_index)
    chosen = set(frames[::train_every].tolist())
    several = len(frames) < len(poses.frame_index)  # some frame holds several animals: ids say which
    out = []
    position = 0
    for r in range(len(poses.frame_index)):
        frame = int(poses.frame_index[r])
        position = position + 1 if r > 0 and poses.frame_index[r - 1] == frame else 0
        if frame not in chosen or not keep[r].any():
            continue
        x, y, w, h = poses.box_xywh[r]
        core_w, core_h = w / padding, h / padding  # box_from_xywh pads it back to the predicted box
        bbox = np.array([x + (w - core_w) / 2, y + (h - core_h) / 2, core_w, core_h], dtype=np.float32)
        keypoints = np.where(keep[r][:, None], poses.keypoints[r], np.nan).astype(np.float32)
        out.append(
            Sample(
                sample_id=f"{video.name}#{frame:06d}" + (f"/{position}" if several else ""),
                image_path=None,
                keypoints_xy=keypoints,
                visible=keep[r].astype(np.float32),
                bbox_xywh=bbox,
                image_wh=image_wh,
                video_path=video,
                frame_index=frame,
                extra={"pseudo_label": True},
            )
        )
    return out


# ---------------------------------------------------------------- jitter
def row_centres(poses: VideoPoses, min_score: float) -> np.ndarray:
    """``(R, 2)`` mean of each animal's found keypoints (NaN where none is found)."""
    found = np.isfinite(poses.keypoints).all(-1) & (poses.scores > min_score)
    pts = np.where(found[..., None], poses.keypoints, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an animal with no keypoint found: NaN, as documented
        return np.nanmean(pts, axis=1)


def still_rows(poses: VideoPoses, min_score: float, window: int, speed_px: float) -> np.ndarray:
    """``(R,)`` rows where the animal barely moves: its centre, median-filtered over ``window`` frames (same track),
    moves less than ``speed_px`` per frame between half a window before and half a window after (a baseline that
    keypoint jitter alone cannot fake; rows without frames there are not still)."""
    centres = row_centres(poses, min_score)
    half = max(1, window // 2)
    smooth = np.full_like(centres, np.nan)
    for track in np.unique(poses.track[poses.track >= 0]):
        rows = np.flatnonzero(poses.track == track)
        frames = poses.frame_index[rows]
        for i, r in enumerate(rows):
            values = centres[rows[np.abs(frames - frames[i]) <= half]]
            values = values[np.isfinite(values).all(1)]
            if len(values):
                smooth[r] = np.median(values, axis=0)
    earlier, later = _neighbour_rows(poses, -half), _neighbour_rows(poses, half)
    speed = np.full(len(centres), np.inf)
    has = (earlier >= 0) & (later >= 0)
    speed[has] = np.linalg.norm(smooth[later[has]] - smooth[earlier[has]], axis=-1) / (2 * half)
    return np.nan_to_num(speed, nan=np.inf) < speed_px


def transfer_rows(before: VideoPoses, flags: np.ndarray, after: VideoPoses, min_score: float) -> np.ndarray:
    """``flags`` of ``before``'s rows carried to ``after``'s, frame by frame: a frame of one animal in both takes its
    flag; with several, each animal takes the flag of the nearest animal (by centre) of ``before`` in that frame, and
    False when none lies within half its box side."""
    centres_b, centres_a = row_centres(before, min_score), row_centres(after, min_score)
    by_frame: dict[int, list[int]] = {}
    for r, f in enumerate(before.frame_index):
        by_frame.setdefault(int(f), []).append(r)
    frames_a, counts_a = np.unique(after.frame_index, return_counts=True)
    alone = {int(f) for f, c in zip(frames_a, counts_a, strict=True) if c == 1}
    out = np.zeros(len(after.frame_index), dtype=bool)
    for r, f in enumerate(after.frame_index):
        candidates = by_frame.get(int(f), [])
        if len(candidates) == 1 and int(f) in alone:
            out[r] = flags[candidates[0]]
            continue
        if not candidates or not np.isfinite(centres_a[r]).all():
            continue
        distance = np.linalg.norm(centres_b[candidates] - centres_a[r], axis=-1)
        distance = np.where(np.isfinite(distance), distance, np.inf)
        best = int(np.argmin(distance))
        if distance[best] < 0.5 * after.box_side[r]:
            out[r] = flags[candidates[best]]
    return out


def frame_displacements(poses: VideoPoses, min_score: float) -> np.ndarray:
    """``(R, K)`` distance each keypoint moved since the same animal's previous frame (NaN: not found in both)."""
    previous = _neighbour_rows(poses, -1)
    found = np.isfinite(poses.keypoints).all(-1) & (poses.scores > min_score)
    out = np.full(poses.scores.shape, np.nan)
    has = previous >= 0
    moved = np.linalg.norm(poses.keypoints[has] - poses.keypoints[previous[has]], axis=-1)
    both = found[has] & found[previous[has]]
    out[has] = np.where(both, moved, np.nan)
    return out


def jitter_report(poses: VideoPoses, still: np.ndarray, min_score: float, jump_px: float, names) -> dict:
    """Jitter of one video's predictions.

    Args:
        poses: the predictions.
        still: ``(R,)`` rows where the animal barely moves (``still_rows``, judged on one model for both).
        min_score: a keypoint above this score is found (the predictor's ``box_min_score``).
        jump_px: a keypoint moving more than this between consecutive frames jumps.

    Returns:
        ``still_jitter_px`` (median displacement of the found keypoints on still rows, px per frame; also their
        mean and 90th percentile: a resting animal in a still video can give identical crops, so a median of 0), per
        keypoint,
        ``jump_share`` (share of consecutive-frame pairs of an animal in which some keypoint jumps), ``missing_share``
        (share of keypoints not found), and the counts behind them.
    """
    moved = frame_displacements(poses, min_score)
    pairs = np.isfinite(moved).any(axis=1)
    jumps = (np.nan_to_num(moved, nan=0.0) > jump_px).any(axis=1) & pairs
    still_moves = moved[still]
    finite = np.isfinite(still_moves)
    per_keypoint = {
        name: float(np.median(still_moves[finite[:, k], k])) if finite[:, k].any() else None
        for k, name in enumerate(names)
    }
    found = np.isfinite(poses.keypoints).all(-1) & (poses.scores > min_score)
    return {
        "rows": len(poses.frame_index),
        "still_rows": int(still.sum()),
        "still_jitter_px": float(np.median(still_moves[finite])) if finite.any() else None,
        "still_jitter_mean_px": float(np.mean(still_moves[finite])) if finite.any() else None,
        "still_jitter_p90_px": float(np.percentile(still_moves[finite], 90)) if finite.any() else None,
        "still_jitter_px_per_keypoint": per_keypoint,
        "frame_pairs": int(pairs.sum()),
        "jump_share": float(jumps.sum() / max(1, pairs.sum())),
        "jump_px": jump_px,
        "missing_share": float(1.0 - found.mean()) if found.size else None,
    }


def describe_jitter(before: dict, after: dict) -> str:
    """One line comparing two ``jitter_report`` results."""

    def px(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    return (
        f"jitter on {before['still_rows']} still frames {px(before['still_jitter_px'])} -> "
        f"{px(after['still_jitter_px'])} px (mean {px(before['still_jitter_mean_px'])} -> "
        f"{px(after['still_jitter_mean_px'])} px); frame pairs with a jump > {before['jump_px']:g} px "
        f"{100 * before['jump_share']:.2f}% -> {100 * after['jump_share']:.2f}%; keypoints missing "
        f"{100 * (before['missing_share'] or 0):.2f}% -> {100 * (after['missing_share'] or 0):.2f}%"
    )


# ---------------------------------------------------------------- the adapted run
def parse_frames(spec: str, num_frames: int) -> list[int]:
    """``"start:stop[:step]"`` (Python slice rules) of ``range(num_frames)``; ``""`` = all."""
    if not spec:
        return list(range(num_frames))
    parts = spec.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        bounds = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise ValueError(
            f"--adapt.frames={spec!r} must look like start:stop or start:stop:step (e.g. 0:1000)"
        ) from None
    if len(bounds) == 3 and bounds[2] is not None and bounds[2] < 1:
        raise ValueError(f"--adapt.frames={spec!r}: the step must be >= 1")
    return list(range(num_frames))[slice(*bounds)]


def held_out_frames(video: Path, samples: Sequence[Sample]) -> set[int]:
    """Frames of ``video`` that some of ``samples`` (the run's validation and test parts) are labelled on."""
    target = video.resolve()
    return {
        int(s.frame_index)
        for s in samples
        if s.video_path is not None and s.frame_index is not None and Path(s.video_path).resolve() == target
    }


def finetune_config(cfg):
    """Stage 2's recipe for the fine-tune: the run's, with the adapt section's epochs, batch, LR and seed."""
    a = cfg.adapt
    return dataclasses.replace(
        cfg.keypoints,
        epochs=a.epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        warmup_steps=a.warmup_steps,
        seed=a.seed,
        time_budget_s=0.0,
        few_shot_per_category=0,
        memory_replay=False,
    )


def claim_adapt_folder(cfg, out: Path, source: Path) -> None:
    """``out`` is new, or holds this very adaptation (which then resumes); never the source run."""
    from training.full import RERUN_FREE_KEYS, RunFolderError, config_changes

    if out.resolve() == source.resolve():
        raise RunFolderError(f"--out={out} is the run being adapted; the adapted model goes to a new folder")
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out={out} is a file, not a folder; pick a folder for the adapted run")
    saved = out / "config.yaml"
    if not saved.is_file():
        if out.is_dir() and any(out.iterdir()):
            raise RunFolderError(f"--out={out} is not empty and holds no run; pick a new folder for the adapted run")
        return
    changes = config_changes(cfg, saved, RERUN_FREE_KEYS - {"adapt"} | {"threads", "device", "out"})
    if changes:
        shown = "; ".join(changes[:4])
        raise RunFolderError(f"{out} holds another run or adaptation ({shown}); pick a new --out folder")


def _copy_if_missing(src: Path, dst: Path) -> None:
    if src.is_file() and not dst.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)


def adapted_config(source: Path, videos: Sequence[str], adapt: AdaptConfig, out: Path | None):
    """The adapted run's ``FullConfig``: the source run's, with this ``adapt`` section and ``out``."""
    from tardis_edge.checkpoint import checkpoint_file
    from tardis_edge.config import load_config
    from training.full import FullConfig

    _, run_dir = checkpoint_file(source)
    if run_dir is None or not source.is_dir():
        raise ValueError(f"{source} is not a run folder of training.full (config.yaml + model.pt); pass the folder")
    cfg = load_config(FullConfig, run_dir / "config.yaml")
    if cfg.data.path is None:  # the built-in data lives in the source run: name it, so the new run reads the same
        cfg.data.path = str((run_dir / "builtin-data").resolve())
    missing = [v for v in videos if not Path(v).is_file()]
    if missing:
        raise FileNotFoundError(f"video {missing[0]} does not exist; pass the videos to adapt to")
    if not videos:
        raise ValueError("no video to adapt to: pass one or more videos (python -m training.adapt RUN VIDEO...)")
    out = Path(out) if out else run_dir.resolve().with_name(f"{run_dir.resolve().name}-adapted")
    cfg.out = str(out)
    cfg.adapt = dataclasses.replace(
        adapt, videos=[str(Path(v).resolve()) for v in videos], source=str(run_dir.resolve()), out=str(out)
    )
    cfg.stages = ["adapt"]
    return cfg


def _check(cfg: AdaptConfig) -> None:
    if cfg.epochs < 1 or cfg.train_every < 1 or cfg.min_keypoints < 1 or cfg.still_window < 1:
        raise ValueError(
            "--adapt.epochs, --adapt.train_every, --adapt.min_keypoints and --adapt.still_window must be >= 1; got "
            f"{cfg.epochs}, {cfg.train_every}, {cfg.min_keypoints}, {cfg.still_window}"
        )
    if min(cfg.flip_tolerance, cfg.temporal_tolerance, cfg.min_score) < 0:
        raise ValueError("--adapt.min_score, --adapt.flip_tolerance and --adapt.temporal_tolerance must be >= 0")


def adapt_run(cfg, device: torch.device) -> dict:
    """Run the adaptation described by ``cfg`` (an ``adapted_config``): predict, pseudo-label, fine-tune, evaluate,
    report. Resumable; returns the report."""
    from tardis_edge.config import save_config
    from tardis_edge.data.dataset import group_by_image
    from tardis_edge.data.frame_cache import cache_video_frames
    from tardis_edge.data.video import video_info
    from tardis_edge.multi import MultiConfig
    from tardis_edge.provenance import versions
    from tardis_edge.splits import SPLIT_FILE
    from training.common import Dist, mark_stage_done, read_stage_summary, setup_logging, stage_is_done, write_json
    from training.full import load_data, stage_evaluate
    from training.keypoints import run_keypoints

    a: AdaptConfig = cfg.adapt
    _check(a)
    source, out = Path(a.source), Path(cfg.out)
    claim_adapt_folder(cfg, out, source)
    out.mkdir(parents=True, exist_ok=True)
    setup_logging(out)
    save_config(cfg, out / "config.yaml")
    write_json(out / "versions.json", versions())
    if (out / REPORT_FILE).is_file() and stage_is_done(out, "adapt"):
        report = json.loads((out / REPORT_FILE).read_text())
        LOG.info("adapt: already finished in %s (%s)", out, REPORT_FILE)
        return report
    t0, cpu0 = time.time(), time.process_time()
    _copy_if_missing(source / SPLIT_FILE, out / SPLIT_FILE)
    for name in ("finder_last.pt", "stages/finder.done.json", "finder_history.json"):
        _copy_if_missing(source / name, out / name)
    dataset, split, train, val, test, _ = load_data(cfg, out)
    most = max((len(g) for g in group_by_image([s for s in train.samples if s.labelled])), default=1)
    multi = MultiConfig(
        detect_every=cfg.multi.detect_every,
        expected_animals=cfg.multi.expected_animals or most,
        max_animals=cfg.multi.max_animals or most,
    )
    before_model = PoseSource(source / "model.pt", multi, device)
    min_found = before_model.predict.box_min_score
    names = before_model.schema.names
    pseudo_dir = out / PSEUDO_DIR
    pseudo_dir.mkdir(exist_ok=True)
    held_out = list(val.samples) + list(test.samples)
    per_video, samples = [], []
    for video in map(Path, a.videos):
        count, image_wh, fps = video_info(video)
        excluded = held_out_frames(video, held_out)
        frames = [f for f in parse_frames(a.frames, count) if f not in excluded]
        if not frames:
            raise ValueError(f"{video}: no frame left to adapt to ({len(excluded)} are the run's val/test frames)")
        stem = f"{len(per_video):02d}-{video.stem}"
        LOG.info("adapt: %s: %d frames (%d of the run's val/test frames held out)", video, len(frames), len(excluded))
        poses, timing = predicted(before_model, video, frames, pseudo_dir / f"{stem}.before.npz", "original")
        keep, counts = select_pseudo_labels(poses, a)
        chosen = pseudo_samples(poses, keep, video, image_wh, a.train_every, before_model.predict.padding)
        samples += chosen
        kept_share = {n: float(keep[:, k].mean()) if len(keep) else 0.0 for k, n in enumerate(names)}
        LOG.info(
            "adapt: %s: %d animals on %d frames; pseudo-labels kept %d of %d keypoints (%s); %d training samples",
            video.name,
            len(poses.frame_index),
            len(frames),
            counts["kept"],
            counts["keypoints"],
            ", ".join(f"{n} {v:.0%}" for n, v in kept_share.items()),
            len(chosen),
        )
        per_video.append(
            {
                "video": str(video),
                "stem": stem,
                "frames": len(frames),
                "frames_held_out": len(excluded),
                "fps": fps,
                "pseudo_labels": counts,
                "kept_share_per_keypoint": kept_share,
                "training_samples": len(chosen),
                "predict_before": timing,
            }
        )
    if not samples:
        raise ValueError("no pseudo-label passed the rules; lower --adapt.min_score or widen the tolerances")
    ft = finetune_config(cfg)
    labelled = [s for s in train.samples if s.labelled] if a.labelled else []
    if not stage_is_done(out, "keypoints"):
        report = cache_video_frames(samples)
        LOG.info("adapt: frame cache: %s", report)
        model = before_model.checkpoint.build_model().to(device)
        LOG.info(
            "adapt: fine-tuning from %s for %d epochs on %d pseudo-labelled + %d labelled samples",
            source,
            ft.epochs,
            len(samples),
            len(labelled),
        )
        size = before_model.input_wh
        run_keypoints(
            model,
            samples + labelled,
            [s for s in val.samples if s.labelled],
            dataset.schema,
            ft,
            out,
            size,
            before_model.checkpoint.heatmap_size,
            device,
            Dist(),
            dict(before_model.checkpoint.model_config),
        )
    t_eval = time.time()
    metrics = stage_evaluate(cfg, out, dataset, split, test, device)
    result = {
        "source": str(source),
        "out": str(out),
        "test_before": _scalar_metrics(source / "metrics_test.json"),
        "test_after": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        "fine_tune": {
            "epochs": ft.epochs,
            "lr": ft.lr,
            "batch_size": ft.batch_size,
            "seed": ft.seed,
            "pseudo_samples": len(samples),
            "labelled_samples": len(labelled),
            "seconds_training": read_stage_summary(out, "keypoints").get("seconds_training"),
        },
        "evaluate_seconds": time.time() - t_eval,
        "videos": per_video,
    }
    if a.predict_after:
        after_model = PoseSource(out / "model.pt", multi, device)
        for entry in per_video:
            video = Path(entry["video"])
            before = VideoPoses.load(pseudo_dir / f"{entry['stem']}.before.npz")
            frames = np.unique(before.frame_index).tolist()
            after, entry["predict_after"] = predicted(
                after_model, video, frames, pseudo_dir / f"{entry['stem']}.after.npz", "adapted"
            )
            still = still_rows(before, min_found, a.still_window, a.still_speed_px)
            entry["jitter_before"] = jitter_report(before, still, min_found, a.jump_px, names)
            entry["jitter_after"] = jitter_report(
                after, transfer_rows(before, still, after, min_found), min_found, a.jump_px, names
            )
            LOG.info("adapt: %s: %s", video.name, describe_jitter(entry["jitter_before"], entry["jitter_after"]))
    result.update(
        seconds=time.time() - t0,
        cpu_s=time.process_time() - cpu0,
        load_average=list(os.getloadavg()),
        command=" ".join(sys.argv),
        versions=versions(),
    )
    write_json(out / REPORT_FILE, result)
    mark_stage_done(out, "adapt", {"report": REPORT_FILE})
    LOG.info("adapt: the adapted run is %s (model.pt, %s); export it with tardis-export %s", out, REPORT_FILE, out)
    return result


def predicted(
    source: PoseSource, video: Path, frames: Sequence[int], path: Path, which: str
) -> tuple[VideoPoses, dict]:
    """``source``'s predictions of ``frames``, kept in ``path`` (read back on a rerun), and how long they took
    (``path`` with ``.json``: seconds, CPU seconds, load average when they were made)."""
    from training.common import write_json

    sidecar = path.with_suffix(".json")
    if path.is_file():
        LOG.info("adapt: %s: predictions of the %s model read from %s", video.name, which, path)
        return VideoPoses.load(path), json.loads(sidecar.read_text()) if sidecar.is_file() else {"seconds": None}
    t0, cpu0 = time.time(), time.process_time()
    poses = source.predict_video(video, frames, f"predict {video.name} ({which})")
    timing = {"frames": len(frames), "seconds": time.time() - t0, "cpu_s": time.process_time() - cpu0,
              "load_average": list(os.getloadavg())}  # fmt: skip
    poses.save(path)
    write_json(sidecar, timing)
    return poses, timing


def _scalar_metrics(path: Path) -> dict | None:
    """The numbers of a ``metrics_test.json`` as the evaluate stage returns them (a multi-animal run's tracking
    metrics as ``tracking_<name>``)."""
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    out = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    out.update({f"tracking_{k}": v for k, v in (metrics.get("tracking") or {}).items() if isinstance(v, (int, float))})
    return out


def stage_adapt(cfg, run_dir: Path, device: torch.device) -> dict:
    """The ``adapt`` stage of ``training.full``: adapt the run just evaluated to ``cfg.adapt.videos``."""
    target = adapted_config(run_dir, cfg.adapt.videos, cfg.adapt, Path(cfg.adapt.out) if cfg.adapt.out else None)
    target.threads, target.device = cfg.threads, cfg.device
    return adapt_run(target, device)


# ---------------------------------------------------------------- init_from and memory replay (training.full)
def load_init_weights(model: torch.nn.Module, run: str | Path, names: Sequence[str]) -> list[str]:
    """Load another run's ``model.pt`` weights into a stage-2 ``model`` of keypoints ``names``.

    The encoder and the shared head layers are copied as they are; the last head conv's channels are matched by
    keypoint name (a keypoint the run does not know keeps its fresh initialisation).

    Returns:
        The keypoint names taken over from the run.
    """
    from tardis_edge.checkpoint import DeployCheckpoint, checkpoint_file

    path, _ = checkpoint_file(run)
    ck = DeployCheckpoint.load(path)
    theirs = {n: i for i, n in enumerate(ck.schema.names)}
    state = model.state_dict()
    mismatched = [
        k
        for k, v in ck.model.items()
        if not k.startswith("head.final.") and k in state and tuple(v.shape) != tuple(state[k].shape)
    ]
    missing = [k for k in state if not k.startswith("head.final.") and k not in ck.model]
    if mismatched or missing:
        raise ValueError(
            f"--init_from={run}: its model ({ck.model_config.get('backbone')}, head depth "
            f"{ck.model_config.get('head_depth')}) does not fit this one (shapes differ: {mismatched[:3]}, missing: "
            f"{missing[:3]}); set --model.backbone / --model.head_depth / --model.neck_channels to the run's"
        )
    shared = [n for n in names if n in theirs]
    for key in ("head.final.weight", "head.final.bias"):
        for k, name in enumerate(names):
            if name in theirs:
                state[key][k] = ck.model[key][theirs[name]]
    state.update({k: v for k, v in ck.model.items() if not k.startswith("head.final.") and k in state})
    model.load_state_dict(state)
    new = [n for n in names if n not in theirs]
    dropped = [n for n in ck.schema.names if n not in names]
    LOG.info(
        "init_from %s: weights loaded; keypoints %s taken over%s%s",
        path,
        shared,
        f", {new} new (fresh head channels)" if new else "",
        f"; the run's {dropped} are not in this data's keypoints and are dropped (list them in a keypoint map, "
        "--data=map.yaml, to keep them)"
        if dropped
        else "",
    )
    return shared


def memory_replay(
    samples: Sequence[Sample],
    run: str | Path,
    names: Sequence[str],
    dataset_counts: dict[str, int] | None,
    adapt: AdaptConfig,
    device: torch.device | str = "cpu",
) -> tuple[list[Sample], dict]:
    """Give the keypoints a sample's dataset does not label the previous model's confident predictions as labels.

    The previous model (``run``'s ``model.pt``) predicts each training image as inference does (whole frame, then a
    crop around its keypoints; on an image of several animals, from each sample's own box), with the flip test. A
    keypoint absent from the sample's dataset (``keypoint_map.absent_keypoints``) and known to that model becomes a
    label when it passes the pseudo-label rules of adaptation (``adapt.min_score``, ``adapt.flip_tolerance``), and
    only when the model's prediction of the keypoints the sample does label agrees with them (median distance within
    ``adapt.flip_tolerance`` x 2 x the crop box side: the same animal). Keypoints the dataset labels but this sample
    leaves unlabelled stay unlabelled.

    Returns:
        ``(samples with replayed labels (copies; the others unchanged), counts)``.
    """
    from tqdm import tqdm

    from tardis_edge.checkpoint import DeployCheckpoint, checkpoint_file
    from tardis_edge.config import from_dict
    from tardis_edge.data.dataset import animals_per_image, image_key, read_sample_image
    from tardis_edge.data.keypoint_map import absent_keypoints

    path, _ = checkpoint_file(run)
    ck = DeployCheckpoint.load(path)
    model = ck.build_model(str(path)).to(device).eval()
    cfg = dataclasses.replace(from_dict(PredictConfig, ck.predict), flip_test=True)
    flip = flip_indices_from_pairs(ck.schema.num_keypoints, ck.schema.flip_pairs)
    theirs = {n: i for i, n in enumerate(ck.schema.names)}
    per_image = animals_per_image(samples)
    out, counts = (
        [],
        {
            "samples": len(samples),
            "replayed_samples": 0,
            "replayed_keypoints": 0,
            "rejected_keypoints": 0,
            "rejected_samples_other_animal": 0,
        },
    )
    for s in tqdm(samples, desc="memory replay", leave=False):
        absent = [k for k in absent_keypoints(s, dataset_counts, names) if names[k] in theirs]
        if not absent or not s.labelled:
            out.append(s)
            continue
        image = read_sample_image(s)
        if per_image.get(image_key(s), 1) > 1:  # several animals: from this one's labelled keypoints, widened
            first = geometry.box_from_keypoints(
                s.keypoints_xy, s.visible, ck.input_size, 2 * cfg.padding, cfg.box_min_size
            )
            keypoints, scores, _ = flip_pair_keypoints(model, [image], [first], ck.input_size, cfg, flip, device)
            boxes = [box_from_prediction(keypoints[0], scores[0], first, ck.input_size, cfg)]
            keypoints, scores, flip_px = flip_pair_keypoints(model, [image], boxes, ck.input_size, cfg, flip, device)
            box_xywh = _box_xywh(boxes)
        else:  # one animal: as inference finds it, from the whole frame
            keypoints, scores, flip_px, box_xywh = predict_single(model, [image], ck.input_size, cfg, flip, device)
        side = float(box_xywh[0, 2:].max())
        labelled = [k for k in range(len(names)) if s.visible[k] > 0 and names[k] in theirs]
        if labelled:
            predicted = keypoints[0, [theirs[names[k]] for k in labelled]]
            distance = np.linalg.norm(predicted - s.keypoints_xy[labelled], axis=-1)
            if not np.nanmedian(np.where(np.isfinite(distance), distance, np.inf)) <= 2 * adapt.flip_tolerance * side:
                counts["rejected_samples_other_animal"] += 1
                out.append(s)
                continue
        xy, visible = s.keypoints_xy.copy(), s.visible.copy()
        replayed = []
        for k in absent:
            j = theirs[names[k]]
            if scores[0, j] >= adapt.min_score and flip_px[0, j] <= adapt.flip_tolerance * side:
                xy[k], visible[k] = keypoints[0, j], 1.0
                replayed.append(k)
            else:
                counts["rejected_keypoints"] += 1
        if replayed:
            counts["replayed_samples"] += 1
            counts["replayed_keypoints"] += len(replayed)
            s = dataclasses.replace(
                s, keypoints_xy=xy, visible=visible, extra={**s.extra, "replayed_keypoints": tuple(replayed)}
            )
        out.append(s)
    LOG.info(
        "memory replay from %s: %d of %d samples got %d replayed keypoint labels (%d keypoints turned away, "
        "%d samples where the model found another animal)",
        path,
        counts["replayed_samples"],
        len(samples),
        counts["replayed_keypoints"],
        counts["rejected_keypoints"],
        counts["rejected_samples_other_animal"],
    )
    return out, counts


# ---------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    from tardis_edge.config import from_dict, merge, options_help, parse_overrides, to_dict
    from tardis_edge.errors import ArgumentParser
    from training.common import pick_device

    parser = ArgumentParser(
        prog="python -m training.adapt",
        usage="python -m training.adapt [-h] [--debug] RUN VIDEO [VIDEO ...] [--out=NEW_RUN] [--adapt.key=VALUE ...]",
        description="Adapt a trained run to videos without labels: predict them (flip test), keep confident, "
        "flip- and temporally consistent keypoints as pseudo-labels, fine-tune a few epochs from the run's weights "
        "and write a NEW run folder (model.pt, export it with tardis-export) with adapt_report.json (jitter before "
        "and after, test metrics of the original test part). Resumable: run the same command again.",
        epilog="adapt options (--adapt.key=VALUE):\n" + options_help(AdaptConfig(), prefix="adapt."),
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", help="the run folder of training.full to adapt (it is not modified)")
    parser.add_argument("videos", nargs="+", help="videos to adapt to")
    parser.add_argument("--out", default=None, help="the adapted run folder (default: RUN-adapted)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args, rest = parser.parse_known_args(argv)
    stray = [o for o in rest if not o.startswith("--adapt.")]
    if stray:
        parser.error(f"unknown option(s) {stray}; adapt options are --adapt.KEY=VALUE (see --help)")
    overrides = parse_overrides(rest).get("adapt", {})
    adapt = from_dict(AdaptConfig, merge(to_dict(AdaptConfig()), overrides), prefix="adapt.")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = adapted_config(Path(args.run), args.videos, adapt, Path(args.out) if args.out else None)
    cfg.threads, cfg.device = args.threads, args.device
    report = adapt_run(cfg, pick_device(args.device))
    print(json.dumps({k: report[k] for k in ("out", "test_before", "test_after")}, indent=1, default=str))
    return 0


def cli(argv: list[str] | None = None) -> int:
    from tardis_edge.errors import run_cli

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    return run_cli("python -m training.adapt", lambda: main(argv), debug=True if debug else None)


if __name__ == "__main__":
    sys.exit(cli())
