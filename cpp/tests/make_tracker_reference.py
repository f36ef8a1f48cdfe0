"""Python reference for the C++ tracker test (ctest fixture ``tracker_reference``).

Runs ``tardis_edge.tracking.Tracker`` over simulated detections on the procedural multi-animal scene
(``tardis_edge.data.synthetic.multi_animal_truth``: overtakes, head-on passes, an animal leaving the frame) under
several configurations, and writes OUT_DIR/tracker.txt, one block per configuration and frame::

    config <name> <max_animals (0: None)> <use_motion> <ambiguity_margin> <new_track_after> <smooth> <boxes>
    frame <frame_index> <N> <K>
    <keypoints (N*K*2)> / <scores (N*K)> / <boxes (N*4) or "none">    (three lines, nan where missing)
    ids <track ids (N)> kept <M> <kept (M)> dropped <num_dropped>
    <output keypoints (N*K*2)>

The detections mimic a pose model: true keypoints plus noise, keypoints outside the frame missing, animals in a new
order every frame, some missed, frames with nothing, low and NaN scores, some poses seen only partly, extra poses
beyond the number of animals, and (when boxes are on) a box per pose with some missing.

usage: python make_tracker_reference.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from tardis_edge.data.synthetic import multi_animal_truth
from tardis_edge.io import atomic_write_text
from tardis_edge.tracking import Tracker, TrackerConfig

# name -> (TrackerConfig overrides, boxes, frame step, extra poses per frame)
CONFIGS = {
    "known_three_boxes": ({"max_animals": 3}, True, 1, 0),
    "open_ended": ({}, False, 1, 0),
    "no_motion": ({"max_animals": 3, "use_motion": False, "ambiguity_margin": 0.0}, True, 1, 0),
    "two_of_three_smooth": ({"max_animals": 2, "smooth": True, "new_track_after": 2}, False, 2, 1),
    "sigmas_gaps": ({"max_animals": 3, "oks_sigmas": (0.03, 0.05, 0.05, 0.08, 0.1, 0.2), "max_age": 5}, True, 3, 0),
}


def fmt(values) -> str:
    return " ".join("nan" if not np.isfinite(v) else repr(float(v)) for v in np.ravel(values))


def detections(seed: int, boxes: bool, extra: int):
    """Per frame ``(keypoints (N, K, 2), scores (N, K), boxes (N, 4) or None)``."""
    truth = multi_animal_truth(seed=0)
    rng = np.random.default_rng(seed)
    k = truth.keypoints_xy.shape[2]
    empty = set(rng.choice(truth.num_frames, 3, replace=False).tolist())
    frames = []
    for t in range(truth.num_frames):
        animals = [m for m in range(truth.num_animals) if truth.present[t, m] and rng.random() >= 0.05]
        animals = [] if t in empty else [animals[i] for i in rng.permutation(len(animals))]
        keypoints = truth.keypoints_xy[t, animals] + rng.normal(0, 1.5, (len(animals), k, 2))
        inside = truth.inside[t, animals]
        keypoints[~inside] = np.nan
        scores = np.where(inside, rng.uniform(0.05, 1.0, inside.shape), 0.0)  # some below the threshold
        partly = rng.random(len(animals)) < 0.1  # seen only partly: most keypoints missing
        keypoints[partly, : k - 2] = np.nan
        scores[rng.random(scores.shape) < 0.02] = np.nan
        if extra and len(animals):  # a spurious pose somewhere in the arena
            spurious = rng.uniform(20, 230, (extra, 1, 2)) + rng.normal(0, 10, (extra, k, 2))
            keypoints = np.concatenate([keypoints, spurious])
            scores = np.concatenate([scores, rng.uniform(0.2, 0.6, (extra, k))])
        box = None
        if boxes:
            box = np.full((len(keypoints), 4), np.nan)
            for i, pose in enumerate(keypoints):
                known = pose[np.isfinite(pose).all(axis=-1)]
                if len(known) and rng.random() >= 0.15:  # some poses without a box
                    lo, hi = known.min(axis=0), known.max(axis=0)
                    box[i] = [lo[0] - 5, lo[1] - 5, hi[0] - lo[0] + 10, hi[1] - lo[1] + 10]
        frames.append((keypoints, scores, box))
    return frames


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for seed, (name, (overrides, boxes, step, extra)) in enumerate(CONFIGS.items()):
        config = TrackerConfig(**overrides)
        tracker = Tracker(config)
        lines.append(
            f"config {name} {config.max_animals or 0} {int(config.use_motion)} {config.ambiguity_margin!r} "
            f"{config.new_track_after} {int(config.smooth)} {int(boxes)} {config.max_age} "
            f"{len(config.oks_sigmas or ())} {fmt(config.oks_sigmas or ())}"
        )
        for t, (keypoints, scores, box) in enumerate(detections(seed, boxes, extra)):
            frame = t * step
            result = tracker.update(keypoints, scores, box, frame)
            n, k = keypoints.shape[:2]
            lines.append(f"frame {frame} {n} {k}")
            lines.append(fmt(keypoints))
            lines.append(fmt(scores))
            lines.append(fmt(box) if box is not None else "none")
            lines.append(
                f"ids {' '.join(map(str, result.track_ids.tolist()))} kept {len(result.kept)} "
                f"{' '.join(map(str, result.kept.tolist()))} dropped {result.num_dropped}"
            )
            lines.append(fmt(result.keypoints_xy))
    atomic_write_text(out / "tracker.txt", "\n".join(lines) + "\n")
    print(f"wrote the tracker reference ({len(CONFIGS)} configurations) to {out / 'tracker.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
