"""Video prediction against the truth: PCK of the followed box (``Runner.track``, what ``tardis-edge predict`` does
on a video) and of each frame alone (``Runner``, evaluation's two passes), on the demo run's synthetic video.

    python benchmarks/follow_demo.py runs/demo-b
    python benchmarks/follow_demo.py RUN --batch-size 1 --modes follow --out follow.json

The demo video ``builtin-data/videos/arena2.mp4`` is drawn by ``tardis_edge.data.synthetic`` with known keypoints:
the generator's arguments are in ``builtin-data/tardis_synthetic.json``, and ``render_video_frames`` draws the same
frames again with their true keypoints. The predictions of the decoded (mp4v) frames are scored with
``tardis_edge.metrics.evaluate_predictions`` (PCK normalised by the keypoint box diagonal, as on DeepLabCut data).
Modes: ``frames`` (each frame alone: whole frame, then refine) and ``follow`` (one ``BoxFollower`` over the video,
``--batch-size`` frames per ``track`` call, 8 as in ``tardis-edge predict``), each with and without the flip test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file from anywhere
    sys.path.insert(0, str(ROOT))

from tardis_edge.data import synthetic  # noqa: E402
from tardis_edge.data.sample import KeypointSchema, Sample  # noqa: E402
from tardis_edge.io import atomic_write_text, strict_json  # noqa: E402
from tardis_edge.metrics import evaluate_predictions  # noqa: E402
from tardis_edge.provenance import measurement  # noqa: E402
from tardis_edge.runtime import open_runner  # noqa: E402
from tardis_edge.runtime.runner import Runner  # noqa: E402

MODES = ("frames", "follow")


def read_video_bgr(path: Path) -> list[np.ndarray]:
    """Every frame of ``path``, BGR uint8 ``(H, W, 3)``."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FileNotFoundError(f"OpenCV cannot open {path}; is it the demo run's builtin-data/videos/arena2.mp4?")
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        capture.release()
    return frames


def true_samples(data_dir: Path, num_frames: int) -> list[Sample]:
    """The video frames' true keypoints as samples (every keypoint labelled), from the generator's arguments."""
    marker = json.loads((data_dir / synthetic.MARKER_NAME).read_text())
    args = marker["args"]
    if marker.get("version") != synthetic.GENERATOR_VERSION:
        raise ValueError(
            f"{data_dir} was drawn by synthetic generator version {marker.get('version')}, this code draws version "
            f"{synthetic.GENERATOR_VERSION}: the true keypoints would not match; regenerate the demo run's data"
        )
    if args["num_unlabelled"] != num_frames:
        raise ValueError(f"the video has {num_frames} frames but the generator drew {args['num_unlabelled']}")
    frames = synthetic.render_video_frames(args["seed"], num_frames, tuple(args["image_wh"]))
    return [
        Sample(f"video{i:04d}", None, f.keypoints_xy.astype(np.float32), np.full(len(f.keypoints_xy), 2.0))
        for i, f in enumerate(frames)
    ]


def predict(runner: Runner, frames: list[np.ndarray], mode: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(keypoints (N, K, 2), scores (N, K))`` of every frame, each alone or with the box followed."""
    follower = runner.new_follower() if mode == "follow" else None
    keypoints, scores = [], []
    for start in range(0, len(frames), batch_size):
        chunk = frames[start : start + batch_size]
        if follower is None:
            result = runner(chunk, color="BGR")
        else:
            numbers = list(range(start, start + len(chunk)))
            result = runner.track(chunk, follower, color="BGR", frame_numbers=numbers)
        keypoints.append(result.keypoints)
        scores.append(result.scores)
    return np.concatenate(keypoints), np.concatenate(scores)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="the demo run folder (with export/ and builtin-data/)")
    p.add_argument("--batch-size", type=int, default=8, help="frames per call (tardis-edge predict's default 8)")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--out", type=Path, help="also write the record as JSON here")
    args = p.parse_args(argv)
    modes = args.modes.split(",")
    if unknown := sorted(set(modes) - set(MODES)):
        raise ValueError(f"unknown modes {unknown}; choose from {', '.join(MODES)}")
    frames = read_video_bgr(args.run / "builtin-data" / "videos" / f"{synthetic.UNLABELLED_VIDEO}.mp4")
    samples = true_samples(args.run / "builtin-data", len(frames))
    schema = KeypointSchema(names=synthetic.BODYPARTS)
    truth = np.stack([s.keypoints_xy for s in samples])  # (N, K, 2)
    results = []
    for flip_test in (True, False):
        with open_runner(args.run / "export", decode="numpy", flip_test=flip_test) as runner:
            for mode in modes:
                start = time.perf_counter()
                keypoints, scores = predict(runner, frames, mode, args.batch_size)
                seconds = time.perf_counter() - start
                metrics = evaluate_predictions(samples, keypoints, scores, schema, pck_normalizer="keypoint_box_diag")
                per_frame = np.nanmean(np.linalg.norm(keypoints - truth, axis=-1), axis=1)  # (N,) pixels
                row = {
                    "mode": mode,
                    "flip_test": flip_test,
                    "PCK@0.1": round(metrics["PCK@0.1"], 4),
                    "mean_px": round(metrics["mean_px"], 2),
                    "worst_frames": [int(i) for i in np.argsort(-np.nan_to_num(per_frame, nan=np.inf))[:5]],
                    "fps": round(len(frames) / seconds, 1),
                }
                results.append(row)
                print(
                    f"{mode:>6} flip_test={flip_test!s:<5} PCK@0.1 {row['PCK@0.1']:.3f}  mean {row['mean_px']:.2f} px  "
                    f"worst frames {row['worst_frames']}  {row['fps']} fps"
                )
    record = {
        "measured": measurement(["python", "benchmarks/follow_demo.py", *(sys.argv[1:] if argv is None else argv)]),
        "run": str(args.run),
        "frames": len(frames),
        "batch_size": args.batch_size,
        "results": results,
    }
    if args.out is not None:
        atomic_write_text(args.out, strict_json(record))
    return record


if __name__ == "__main__":
    main()
