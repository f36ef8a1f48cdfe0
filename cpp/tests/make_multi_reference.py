"""Python references for the C++ multi-animal tests (ctest fixture ``multi_reference``).

Writes into OUT_DIR:

* ``finder_decode.npz`` + ``finder_decode.txt``: finder outputs (random maps with Gaussian peaks, plateaus, peaks on
  the border, NaN) and what ``tardis_edge.finder.decode_finder`` finds in them under several decode settings;
* ``multi_units.txt``: ``tardis_edge.multi.deduplicate`` and ``tardis_edge.predict.box_from_prediction`` on random
  poses (near-duplicates, keypoints on the refine grid, scores at the confidence threshold);
* ``assignment.txt``: ``scipy.optimize.linear_sum_assignment`` on random costs with ties (the tracker's assignment);
* ``tiny_multi/``: a tiny multi-animal artifact (unless ARTIFACT_DIR is given): a small conv net for pose
  (``tardis_fp32_heatmaps.onnx``) and one for the finder (``tardis_finder_fp32.onnx``), each with fixed peaks off the
  pixel grid plus an image-dependent part, and a ``model.json`` with a ``finder`` section (two animals);
* ``multi_<config>.txt``: the Python runtime (``tardis_edge.runtime.multi.open_multi``: ONNX Runtime, the NumPy
  decode, the tracker) on the first frames of VIDEO, one block per frame::

      frame <index> <detected> <animals>
      <track_id> <instance score> <box x y w h> <K> <x y score> * K        (nan where not found)

usage: python make_multi_reference.py DATA_DIR OUT_DIR [ARTIFACT_DIR VIDEO FRAMES]
(exit 77: DATA_DIR's openfield video missing and not required)
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from tardis_edge import geometry
from tardis_edge.artifact import METADATA_FILE, OUTPUT_HEATMAPS, ArtifactMetadata, file_fingerprint
from tardis_edge.finder import FinderConfig, decode_finder
from tardis_edge.io import atomic_write_text
from tardis_edge.multi import MultiConfig, deduplicate
from tardis_edge.predict import PredictConfig, box_from_prediction

SKIP = 77
VIDEO = "data/openfield-Pranav-2018-10-30/videos/m3v1mp4.mp4"
FRAMES = 10  # the whole fixture video
# name -> open_multi options: the finder on every frame; every 4th frame only, pose-derived boxes in between (with
# and without the refine pass there)
CONFIGS = {
    "every_frame": {"detect_every": 1},
    "held_boxes": {"detect_every": 4, "expected_animals": 0},
    "held_one_pass": {"detect_every": 4, "expected_animals": 0, "refine_tracked": False},
}
KEYPOINTS = ["head", "left", "right", "body", "tail"]
INPUT, HEATMAP, FINDER_INPUT, FINDER_STRIDE = 64, 16, 64, 4


def fmt(values) -> str:
    return " ".join("nan" if not np.isfinite(v) else repr(float(v)) for v in np.ravel(values))


# ------------------------------------------------------------------------------------------------- finder decode
DECODE_SETTINGS = [  # (min_score, max_animals, min_distance, stride)
    (0.3, 0, 2.0, 4.0),
    (0.1, 3, 1.0, 8.0),
    (0.5, 0, 3.5, 4.0),
    (0.0, 0, 0.0, 2.0),
    (0.3, 1, 2.0, 4.0),
]


def finder_maps(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Finder outputs (N, 3, h, w) float32 with the awkward cases a decoder can get wrong."""
    cases = {}
    for name, (n, h, w) in {"square": (3, 16, 16), "wide": (2, 12, 20)}.items():
        maps = np.zeros((n, 3, h, w), np.float32)
        ys, xs = np.mgrid[0:h, 0:w]
        for i in range(n):
            for _ in range(rng.integers(2, 7)):
                cy, cx = rng.uniform(-0.5, h - 0.5), rng.uniform(-0.5, w - 0.5)  # some on the border
                amp, sigma = rng.uniform(0.2, 1.2), rng.uniform(0.6, 2.0)
                maps[i, 0] += (amp * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))).astype(np.float32)
            maps[i, 0] += rng.normal(0, 0.02, (h, w)).astype(np.float32)
            maps[i, 1:] = rng.uniform(-0.05, 0.6, (2, h, w)).astype(np.float32)  # negative sizes clip to 0
        cases[name] = maps
    plateau = np.zeros((1, 3, 10, 10), np.float32)
    plateau[0, 0, 4, 4:6] = 0.9  # two equal neighbours: both are peaks, the second in row-major order is suppressed
    plateau[0, 0, 0, 0] = 0.7  # a corner
    plateau[0, 0, 9, 5] = 0.7  # equal to the corner: row-major order breaks the tie
    plateau[0, 0, 7, 2] = 0.6
    plateau[0, 0, 7, 1] = np.nan  # a NaN neighbour: not a peak
    plateau[0, 1:] = 0.25
    cases["plateau"] = plateau
    return cases


def write_finder_decode(out: Path, rng: np.random.Generator) -> None:
    cases = finder_maps(rng)
    np.savez(out / "finder_decode.npz", **cases)
    lines = []
    for name, maps in cases.items():
        for min_score, max_animals, min_distance, stride in DECODE_SETTINGS:
            cfg = FinderConfig(min_score=min_score, max_animals=max_animals, min_distance=min_distance)
            lines.append(f"case {name} {min_score!r} {max_animals} {min_distance!r} {stride!r} {len(maps)}")
            for peaks in decode_finder(maps, stride, cfg):
                lines.append(f"frame {len(peaks)}")
                lines += [fmt(p) for p in peaks]
    atomic_write_text(out / "finder_decode.txt", "\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------- multi building blocks
def random_poses(rng: np.random.Generator, m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(M, K, 2) keypoints (some near-duplicates, NaN where not found, some on the 0.5 px grid), (M, K) scores."""
    centres = rng.uniform(50, 400, (m, 2))
    if m > 1 and rng.random() < 0.6:
        centres[1] = centres[0] + rng.normal(0, 3, 2)  # a second box on the first animal
    keypoints = centres[:, None] + rng.normal(0, 25, (m, k, 2))
    on_grid = rng.random((m, k)) < 0.2
    keypoints[on_grid] = np.round(keypoints[on_grid] * 2) / 2
    scores = rng.uniform(-0.1, 1.1, (m, k)).astype(np.float32)
    scores[rng.random((m, k)) < 0.1] = np.float32(0.2)  # exactly at the threshold (float32 0.2 > 0.2 in double)
    lost = scores <= 0
    keypoints[lost] = np.nan
    return keypoints, scores


def write_multi_units(out: Path, rng: np.random.Generator) -> None:
    lines = []
    k = 6
    input_wh = (48, 64)
    cfg = PredictConfig()
    for case in range(60):
        m = int(rng.integers(1, 6))
        keypoints, scores = random_poses(rng, m, k)
        multi = MultiConfig(
            min_keypoints=int(rng.integers(1, 5)),
            duplicate_distance=float(rng.choice([0.1, 0.25, 0.6])),
            max_animals=int(rng.integers(0, 4)),
        )
        kept, dropped = deduplicate(keypoints, scores, multi, cfg.box_min_score)
        fallback = geometry.CropBox(*rng.uniform(10, 300, 2), *rng.uniform(20, 90, 2))
        boxes = [box_from_prediction(keypoints[i], scores[i], fallback, input_wh, cfg) for i in range(m)]
        lines.append(
            f"case {case} {m} {k} {multi.min_keypoints} {multi.duplicate_distance!r} {multi.max_animals} "
            f"{cfg.box_min_score!r} {input_wh[0]} {input_wh[1]} {cfg.padding!r} {cfg.box_min_size!r}"
        )
        lines.append(fmt(keypoints))
        lines.append(fmt(scores))
        lines.append(f"{fmt([fallback.cx, fallback.cy, fallback.width, fallback.height])}")
        lines.append(f"kept {len(kept)} {' '.join(map(str, kept))} dropped {dropped}")
        lines += [fmt([b.cx, b.cy, b.width, b.height]) for b in boxes]
    atomic_write_text(out / "multi_units.txt", "\n".join(lines) + "\n")


def write_assignments(out: Path, rng: np.random.Generator) -> None:
    """scipy.optimize.linear_sum_assignment on random rectangular costs, many with ties (small integers, and the
    tracker's 1e6 for forbidden pairs): the C++ solver must pick the same pairs."""
    from scipy.optimize import linear_sum_assignment

    lines = []
    for case in range(300):
        rows, cols = (int(v) for v in rng.integers(1, 8, 2))
        kind = case % 3
        if kind == 0:
            cost = rng.integers(0, 4, (rows, cols)).astype(np.float64)
        elif kind == 1:
            cost = rng.uniform(0, 1, (rows, cols))
        else:
            cost = np.where(rng.random((rows, cols)) < 0.5, 1e6, np.round(rng.uniform(0, 1, (rows, cols)), 2))
        r, c = linear_sum_assignment(cost)
        lines.append(f"{rows} {cols} {fmt(cost)}")
        lines.append(" ".join(f"{a} {b}" for a, b in zip(r, c, strict=True)))
    atomic_write_text(out / "assignment.txt", "\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------- tiny artifact
def build_tiny_multi_artifact(folder: Path) -> Path:
    """Pose and finder graphs small enough to run in milliseconds, with answers away from ties (fixed peaks off the
    pixel grid) that still depend on the image, and a model.json as tardis-export writes it for two animals."""
    import torch
    from torch import nn

    mean = ArtifactMetadata.__dataclass_fields__["mean"].default_factory()
    std = ArtifactMetadata.__dataclass_fields__["std"].default_factory()

    def bumps(side: int, centres, amplitudes, sigma: float) -> torch.Tensor:
        v, u = torch.meshgrid(torch.arange(float(side)), torch.arange(float(side)), indexing="ij")
        c = torch.tensor(centres)
        d2 = (u - c[:, 0, None, None]) ** 2 + (v - c[:, 1, None, None]) ** 2
        return torch.tensor(amplitudes)[:, None, None] * torch.exp(-d2 / (2 * sigma**2))  # (C, side, side)

    class TinyNet(nn.Module):
        def __init__(self, channels: int, prior: torch.Tensor, gain: float):
            super().__init__()
            self.register_buffer("mean", torch.tensor(mean))
            self.register_buffer("std", torch.tensor(std))
            self.body = nn.Sequential(
                nn.Conv2d(3, 8, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(8, 8, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(8, channels, 3, padding=1),
            )
            self.register_buffer("prior", prior[None])
            self.gain = gain

        def forward(self, image: torch.Tensor) -> torch.Tensor:  # (N, 3, S, S) RGB 0..255 -> (N, C, S/4, S/4)
            x = (image / 255.0 - self.mean.view(1, 3, 1, 1)) / self.std.view(1, 3, 1, 1)
            return self.gain * self.body(x) + self.prior

    torch.manual_seed(0)
    # pose: one bump per keypoint, spanning 0.8 of the crop (0.8 x padding 1.25 = 1: the refine box keeps its size);
    # "body" weak (not confident)
    pose_prior = bumps(
        HEATMAP, [[8.0, 1.6], [1.6, 6.3], [14.4, 7.1], [8.3, 9.2], [7.6, 14.4]], [2.0, 1.6, 1.5, 0.15, 1.2], 2.0
    )
    # finder: two animals, one near the top left and one right of centre; sizes ~ a quarter of the input
    centre = bumps(HEATMAP, [[4.3, 5.7], [11.4, 9.2]], [1.0, 0.8], 1.5)
    finder_prior = torch.cat([centre.amax(0, keepdim=True), torch.full((2, HEATMAP, HEATMAP), 0.25)])
    nets = {
        "tardis_fp32_heatmaps.onnx": (TinyNet(len(KEYPOINTS), pose_prior, 0.2), INPUT),
        "tardis_finder_fp32.onnx": (TinyNet(3, finder_prior, 0.05), FINDER_INPUT),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, (net, side) in nets.items():
        torch.onnx.export(
            net.eval(),
            (torch.zeros(1, 3, side, side),),
            str(folder / name),
            dynamo=False,
            opset_version=17,
            input_names=["image"],
            output_names=[OUTPUT_HEATMAPS],
            dynamic_axes={"image": {0: "n"}, OUTPUT_HEATMAPS: {0: "n"}},
        )
    pose = {"file": "tardis_fp32_heatmaps.onnx", "outputs": [OUTPUT_HEATMAPS], "precision": "fp32"}
    finder_graph = {"file": "tardis_finder_fp32.onnx", "precision": "fp32"}
    meta = ArtifactMetadata(
        keypoint_names=KEYPOINTS,
        skeleton=[[0, 3], [1, 3], [2, 3], [3, 4]],
        flip_pairs=[[1, 2]],
        input_width=INPUT,
        input_height=INPUT,
        heatmap_width=HEATMAP,
        heatmap_height=HEATMAP,
        models={"fp32_heatmaps": {**pose, **file_fingerprint(folder / pose["file"])}},
        finder={
            "input_size": FINDER_INPUT,
            "stride": float(FINDER_STRIDE),
            "sigma": 2.0,
            "min_score": 0.3,
            "max_animals": 2,
            "min_distance": 2.0,
            "min_box": 8.0,
            "models": {"fp32": {**finder_graph, **file_fingerprint(folder / finder_graph["file"])}},
        },
        oks_sigmas=[0.05, 0.08, 0.08, 0.1, 0.12],
        oks_sigmas_source="tiny test artifact",
        versions={"torch": torch.__version__},
    )
    atomic_write_text(folder / METADATA_FILE, meta.to_json())
    # the same pose model without a finder: a single-animal artifact, which multi-animal calls must refuse
    single = folder.parent / "tiny_single"
    single.mkdir(exist_ok=True)
    shutil.copyfile(folder / pose["file"], single / pose["file"])
    atomic_write_text(single / METADATA_FILE, replace(meta, finder=None).to_json())
    return folder


# -------------------------------------------------------------------------------------------- runtime reference
def runtime_reference(artifact: Path, video: Path, frames: int, options: dict) -> str:
    """The Python runtime's animals, frame by frame (``open_multi`` as ``tardis-edge predict`` opens it)."""
    from tardis_edge.runtime.multi import open_multi

    capture = cv2.VideoCapture(str(video))
    lines = []
    with open_multi(artifact, "onnxruntime", "fp32", decode="numpy", threads=1, **options) as multi:
        stream = multi.stream()
        for index in range(frames):
            ok, frame = capture.read()
            if not ok:
                raise RuntimeError(f"{video}: could not read frame {index}")
            poses, tracked = stream(frame, index, color="BGR")
            lines.append(f"frame {index} {int(poses.detected)} {poses.num_animals}")
            for i in range(poses.num_animals):
                xywh = poses.boxes[i].as_xywh()
                kp = np.concatenate([tracked.keypoints_xy[i], tracked.scores[i][:, None]], axis=1)  # (K, 3)
                lines.append(
                    f"{int(tracked.track_ids[i])} {fmt([poses.instance_scores[i]])} {fmt(xywh)} {len(kp)} {fmt(kp)}"
                )
    return "\n".join(lines) + "\n"


def main() -> int:
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(12)
    write_finder_decode(out, rng)
    write_multi_units(out, rng)
    write_assignments(out, rng)
    if len(sys.argv) > 3 and sys.argv[3]:
        artifact, video, frames = Path(sys.argv[3]).resolve(), Path(sys.argv[4]), int(sys.argv[5])
    else:
        artifact, video, frames = build_tiny_multi_artifact(out / "tiny_multi"), data / VIDEO, FRAMES
    if not video.is_file():
        if os.environ.get("TARDIS_REQUIRE_SHARED") == "1":
            print(f"FAILED: {video} is missing but TARDIS_REQUIRE_SHARED=1", file=sys.stderr)
            return 1
        print(f"SKIPPED: {video} not found (the decode and unit references were written)", file=sys.stderr)
        return 0
    for name, options in CONFIGS.items():
        atomic_write_text(out / f"multi_{name}.txt", runtime_reference(artifact, video, frames, options))
    atomic_write_text(out / "multi_source.txt", f"{artifact}\n{video}\n{frames}\n")
    print(f"wrote the multi-animal references for {artifact} on {frames} frames of {video} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
