"""The built-in procedural dataset (data stage): a small DeepLabCut project of drawn top-view animals.

``python -m training.full`` with no data trains on this, so a fresh machine runs the whole pipeline (teacher
features, distillation, keypoint training, evaluation) end to end through the real DeepLabCut loader.

``generate_synthetic_project(out_dir)`` writes a single-animal DeepLabCut project:

    out_dir/
        config.yaml                                   Task, scorer, bodyparts, skeleton (name pairs), video_sets
        labeled-data/arena1/img0000.png ...           labelled frames
        labeled-data/arena1/CollectedData_tardis.csv  DLC's three header rows (scorer, bodyparts, coords);
                                                      first column the image path relative to the project;
                                                      empty cells for unlabelled keypoints
        videos/arena2.mp4                             unlabelled frames for distillation (mp4v, short clips)
        tardis_synthetic.json                         marker: generator version and arguments (written last)

Each frame shows one top-view "mouse" on a random texture (gradients, low-frequency noise, blobs, lines): an
elongated body ellipse, a head ellipse turned against the body, two ears, a nose, eyes, paws and a tapered
tail, with a soft shadow, lighting gradients, blur and sensor noise. The six keypoints (snout, left_ear,
right_ear, neck, tail_base, tail_tip) are the exact points the drawing is built on, in the pixel-centre
convention of ``tardis_edge.geometry``: snout, ears and tail tip are the centres of the nose disc, the ear
discs and the tail's round tip, neck is the pivot of the head, tail_base the first point of the tail's
centre line. Keypoints are quantised to 1/16 px so the CSV holds them exactly.

Drawing is supersampled: parts are filled without antialiasing at ``SUPERSAMPLE`` times the resolution, with
OpenCV's fixed-point ``shift`` for sub-pixel vertices, and area-averaged back down. Image pixel ``x`` covers
supersampled pixels ``k x .. k x + k - 1``, so the image point ``x`` is the supersampled point
``k x + (k - 1) / 2``; the average keeps every part's centroid where it was drawn (to ~0.05 px), which
OpenCV's own LINE_AA fill does not (it widens shapes by about a pixel and shifts small ones by up to 0.2 px).

Everything is a function of ``seed``: frame ``i`` is drawn from ``np.random.default_rng([seed, stream, i])``,
so the same arguments give bit-identical files.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tardis_edge.io import atomic_write_bytes, strict_json

GENERATOR = "tardis_edge.data.synthetic"
GENERATOR_VERSION = 2  # bump whenever the drawing or the layout changes: old folders are then regenerated
MARKER_NAME = "tardis_synthetic.json"

TASK = "synthetic"
SCORER = "tardis"
LABELLED_VIDEO = "arena1"  # labeled-data/<this>/
UNLABELLED_VIDEO = "arena2"  # videos/<this>.mp4
VIDEO_FOURCC = "mp4v"  # MPEG-4 part 2: encodes and decodes with opencv-python-headless's bundled FFmpeg
VIDEO_FPS = 30
CLIP_LENGTH = 12  # unlabelled frames come as short clips: one scene, the animal walking

BODYPARTS = ("snout", "left_ear", "right_ear", "neck", "tail_base", "tail_tip")
SKELETON = (
    ("snout", "left_ear"),
    ("snout", "right_ear"),
    ("left_ear", "neck"),
    ("right_ear", "neck"),
    ("neck", "tail_base"),
    ("tail_base", "tail_tip"),
)
# The drawn part whose colour lies under each keypoint (no-noise mode): what the sanity tests check.
KEYPOINT_PART = {
    "snout": "nose",
    "left_ear": "ear",
    "right_ear": "ear",
    "neck": "head",
    "tail_base": "body",
    "tail_tip": "tail",
}

TRAIN_FRACTION = 0.8  # the fixed split: the first round(0.8 * num_labelled) frames train, the rest test
MISSING_LABEL_RATE = 0.03  # fraction of keypoints left unlabelled (empty CSV cells), as annotators do
ANIMAL_SIZE_RANGE = (0.15, 0.30)  # snout-to-tail-base length as a fraction of the frame width
KEYPOINT_QUANTUM = 1.0 / 16.0  # keypoints are multiples of this (exact in the CSV and in fixed point)
SUPERSAMPLE = 4  # supersampling factor of the animal layer
DRAW_SHIFT = 4  # fractional bits of OpenCV's fixed-point vertices (1/16 supersampled pixel)

# Body plan, in units of the body's semi-major axis a (see _animal_geometry).
_NECK_AT = 0.75  # neck (head pivot) on the body axis, in front of the body centre
_TAIL_BASE_AT = 0.85  # tail base on the body axis, behind the centre (inside the body, tail drawn under it)
_HEAD_PIVOT = 0.6  # head centre = neck + 0.6 * head semi-major axis along the head direction
_SNOUT_TO_TAIL_BASE = _NECK_AT + _TAIL_BASE_AT  # + (1 + _HEAD_PIVOT) * head_length: see _AnimalShape.sample

# Fur colours (BGR) the animals are drawn from; ears, nose, paws and tail are blends with skin pink.
_FUR_BGR = (
    (232, 232, 236),  # white
    (168, 170, 175),  # light grey
    (92, 92, 98),  # dark grey
    (42, 40, 44),  # black
    (58, 88, 138),  # brown
    (92, 158, 204),  # golden
    (70, 100, 124),  # agouti
)
_SKIN_BGR = np.array([168, 160, 232], dtype=np.float64)
_EYE_BGR = (18, 18, 22)
_CLEAN_GREY = 128.0  # background of clean mode


@dataclass(frozen=True)
class SyntheticProject:
    """A generated DeepLabCut project and its fixed train/test split.

    Attributes:
        project_dir: the project folder (load it with ``tardis_edge.data.load_dlc_project``).
        config_path: ``project_dir / "config.yaml"``.
        labels_csv: ``labeled-data/arena1/CollectedData_tardis.csv``.
        video_path: the unlabelled video (``videos/arena2.mp4``).
        image_paths: the labelled frames, in CSV order (absolute paths).
        num_train: the first ``num_train`` labelled frames train, the rest test.
        bodyparts: keypoint names, in CSV order.
        image_wh: frame size ``(W, H)``.
        num_unlabelled: frames in the video.
    """

    project_dir: Path
    config_path: Path
    labels_csv: Path
    video_path: Path
    image_paths: tuple[Path, ...]
    num_train: int
    bodyparts: tuple[str, ...]
    image_wh: tuple[int, int]
    num_unlabelled: int

    @property
    def train_images(self) -> tuple[str, ...]:
        """Training frames as project-relative paths (the CSV's first column: ``labeled-data/arena1/img0000.png``)."""
        return tuple(_relative(p, self.project_dir) for p in self.image_paths[: self.num_train])

    @property
    def test_images(self) -> tuple[str, ...]:
        """Test frames as project-relative paths."""
        return tuple(_relative(p, self.project_dir) for p in self.image_paths[self.num_train :])


@dataclass(frozen=True)
class SyntheticFrame:
    """One drawn frame and the truth behind it.

    Attributes:
        image: ``(H, W, 3)`` uint8, BGR (OpenCV order).
        keypoints_xy: ``(K, 2)`` float64, image pixels (pixel-centre convention), in ``BODYPARTS`` order, every
            keypoint (none dropped); multiples of ``KEYPOINT_QUANTUM``.
        part_bgr: colour of each drawn part (``"body"``, ``"head"``, ``"ear"``, ``"nose"``, ``"tail"``, ...)
            before lighting and noise; in clean mode the pixels under ``KEYPOINT_PART`` have exactly these.
    """

    image: np.ndarray
    keypoints_xy: np.ndarray
    part_bgr: dict[str, tuple[int, int, int]]


def num_train_frames(num_labelled: int) -> int:
    """The fixed split rule: the first ``round(TRAIN_FRACTION * num_labelled)`` frames train (at least one each)."""
    return max(1, min(num_labelled - 1, round(TRAIN_FRACTION * num_labelled)))


def generate_synthetic_project(
    out_dir: str | Path,
    num_labelled: int = 120,
    num_unlabelled: int = 120,
    image_wh: tuple[int, int] = (320, 240),
    seed: int = 0,
) -> SyntheticProject:
    """Write (or reuse) the procedural DeepLabCut project in ``out_dir``.

    The project is built in a temporary folder beside ``out_dir`` and renamed into place, so ``out_dir`` is
    either absent or complete. If ``out_dir`` already holds a project of this generator version with the same
    arguments it is reused as is; one from another version or other arguments is replaced; any other
    non-empty folder is an error (nothing of the user's is deleted).

    Args:
        out_dir: the project folder to create.
        num_labelled: labelled frames (``labeled-data/arena1/img%04d.png``), at least 2.
        num_unlabelled: frames of the unlabelled video ``videos/arena2.mp4``, at least 1.
        image_wh: frame size ``(W, H)``; even numbers (MPEG-4) of at least 64 px.
        seed: everything drawn is a function of it.

    Returns:
        The project's paths and its fixed split (``num_train`` first frames train).
    """
    _check_args(num_labelled, num_unlabelled, image_wh, seed)
    out_dir = Path(out_dir).absolute()
    image_wh = (int(image_wh[0]), int(image_wh[1]))
    args = {"num_labelled": num_labelled, "num_unlabelled": num_unlabelled, "image_wh": list(image_wh), "seed": seed}
    marker = {"generator": GENERATOR, "version": GENERATOR_VERSION, "args": args}

    if out_dir.exists():
        state = _existing_state(out_dir, marker)
        if state == "complete":
            return _project(out_dir, num_labelled, num_unlabelled, image_wh)
        if state == "foreign":
            raise FileExistsError(
                f"{out_dir} exists and is not a synthetic project written by {GENERATOR} (no {MARKER_NAME}); "
                "remove it or pass another output folder"
            )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    os.chmod(tmp, 0o755)  # mkdtemp's 0o700 would follow the folder into place
    try:
        _write_project(tmp, num_labelled, num_unlabelled, image_wh, seed)
        (tmp / MARKER_NAME).write_text(strict_json(marker, indent=1) + "\n", encoding="utf-8")
        _move_into_place(tmp, out_dir, marker)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _project(out_dir, num_labelled, num_unlabelled, image_wh)


def render_labelled_frame(seed: int, index: int, image_wh: tuple[int, int], clean: bool = False) -> SyntheticFrame:
    """Labelled frame ``index`` of the project generated with ``seed`` (bit-identical to its PNG unless ``clean``).

    Args:
        clean: draw the same animal on a uniform grey background without shadow, lighting, blur or noise, so
            the pixels under the keypoints have exactly the part colours (for tests and debugging).
    """
    return _render_scene_frames(_labelled_rng(seed, index), image_wh, num_frames=1, clean=clean)[0]


def render_video_frames(seed: int, num_frames: int, image_wh: tuple[int, int]) -> Iterator[SyntheticFrame]:
    """The frames of the unlabelled video ``videos/arena2.mp4`` with their true keypoints, in order.

    The images are the ones the video encodes (before the lossy mp4v compression), so a frame's ``keypoints_xy`` is
    the truth for the decoded video frame of the same number. Clips of ``CLIP_LENGTH`` frames, each a new scene.
    """
    for clip, start in enumerate(range(0, num_frames, CLIP_LENGTH)):
        rng = np.random.default_rng([seed, 1, clip])
        yield from _render_scene_frames(rng, image_wh, min(CLIP_LENGTH, num_frames - start), clean=False)


def _labelled_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, 0, index])  # stream 0: labelled frames; stream 1: video clips


# ----------------------------------------------------------------------------------------------- the project


def _check_args(num_labelled: int, num_unlabelled: int, image_wh: tuple[int, int], seed: int) -> None:
    if not isinstance(num_labelled, int) or num_labelled < 2:
        raise ValueError(f"num_labelled={num_labelled!r}: need an int >= 2 (one train and one test frame at least)")
    if not isinstance(num_unlabelled, int) or num_unlabelled < 1:
        raise ValueError(f"num_unlabelled={num_unlabelled!r}: need an int >= 1 (the distillation video)")
    if (
        len(image_wh) != 2
        or not all(isinstance(v, int | np.integer) for v in image_wh)
        or min(image_wh) < 64
        or any(int(v) % 2 for v in image_wh)
    ):
        raise ValueError(f"image_wh={tuple(image_wh)!r}: need two even ints >= 64 (MPEG-4 needs even sizes)")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r}: need an int >= 0")


def _image_name(index: int) -> str:
    return f"img{index:04d}.png"


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _project(out_dir: Path, num_labelled: int, num_unlabelled: int, image_wh: tuple[int, int]) -> SyntheticProject:
    labelled_dir = out_dir / "labeled-data" / LABELLED_VIDEO
    return SyntheticProject(
        project_dir=out_dir,
        config_path=out_dir / "config.yaml",
        labels_csv=labelled_dir / f"CollectedData_{SCORER}.csv",
        video_path=out_dir / "videos" / f"{UNLABELLED_VIDEO}.mp4",
        image_paths=tuple(labelled_dir / _image_name(i) for i in range(num_labelled)),
        num_train=num_train_frames(num_labelled),
        bodyparts=BODYPARTS,
        image_wh=image_wh,
        num_unlabelled=num_unlabelled,
    )


def _existing_state(out_dir: Path, marker: dict) -> str:
    """``"complete"`` (reuse), ``"stale"`` (ours, other version/args or files missing: replace) or ``"foreign"``."""
    if not out_dir.is_dir():
        return "foreign"
    marker_path = out_dir / MARKER_NAME
    if not marker_path.is_file():
        return "stale" if not any(out_dir.iterdir()) else "foreign"
    try:
        found = json.loads(marker_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "foreign"
    if not isinstance(found, dict) or found.get("generator") != GENERATOR:
        return "foreign"
    if found != marker:
        return "stale"
    args = marker["args"]
    project = _project(out_dir, args["num_labelled"], args["num_unlabelled"], tuple(args["image_wh"]))
    needed = [project.config_path, project.labels_csv, project.video_path, *project.image_paths]
    return "complete" if all(p.is_file() for p in needed) else "stale"


def _move_into_place(tmp: Path, out_dir: Path, marker: dict) -> None:
    """Rename the finished ``tmp`` onto ``out_dir``; a stale project of ours is swapped out and deleted."""
    if out_dir.exists():
        state = _existing_state(out_dir, marker)
        if state == "complete":  # another process finished the same project first
            return
        if state == "foreign":
            raise FileExistsError(f"{out_dir} appeared while generating and is not ours; remove it or pick another")
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
        os.replace(out_dir, old / "project")
        try:
            os.replace(tmp, out_dir)
        finally:
            shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.replace(tmp, out_dir)
    except OSError:
        if _existing_state(out_dir, marker) != "complete":
            raise


def _write_project(root: Path, num_labelled: int, num_unlabelled: int, image_wh: tuple[int, int], seed: int) -> None:
    import cv2

    labelled_dir = root / "labeled-data" / LABELLED_VIDEO
    labelled_dir.mkdir(parents=True)
    (root / "videos").mkdir()
    rows = []
    for index in range(num_labelled):
        rng = _labelled_rng(seed, index)
        frame = _render_scene_frames(rng, image_wh, num_frames=1, clean=False)[0]
        name = _image_name(index)
        if not cv2.imwrite(str(labelled_dir / name), frame.image):
            raise OSError(f"OpenCV could not write {labelled_dir / name}")
        labels = _drop_labels(rng, frame.keypoints_xy, image_wh)
        rows.append((f"labeled-data/{LABELLED_VIDEO}/{name}", labels))
    (labelled_dir / f"CollectedData_{SCORER}.csv").write_text(_labels_csv(rows), encoding="utf-8")
    _write_video(root / "videos" / f"{UNLABELLED_VIDEO}.mp4", num_unlabelled, image_wh, seed)
    (root / "config.yaml").write_text(_config_yaml(image_wh), encoding="utf-8")


def _drop_labels(rng: np.random.Generator, keypoints_xy: np.ndarray, image_wh: tuple[int, int]) -> np.ndarray:
    """``(K, 2)`` labels: NaN for keypoints outside the frame and for a random ``MISSING_LABEL_RATE`` of the rest."""
    w, h = image_wh
    inside = (
        (keypoints_xy[:, 0] >= -0.5)
        & (keypoints_xy[:, 0] <= w - 0.5)
        & (keypoints_xy[:, 1] >= -0.5)
        & (keypoints_xy[:, 1] <= h - 0.5)
    )
    keep = inside & (rng.random(len(keypoints_xy)) >= MISSING_LABEL_RATE)
    if not keep.any() and inside.any():  # every frame keeps at least one label (DLC drops empty rows)
        keep[np.flatnonzero(inside)[0]] = True
    labels = keypoints_xy.copy()
    labels[~keep] = np.nan
    return labels


def _labels_csv(rows: list[tuple[str, np.ndarray]]) -> str:
    """DeepLabCut's CSV: three header rows (scorer, bodyparts, coords), then one row per image, empty = unlabelled."""
    lines = [
        ",".join(["scorer"] + [SCORER] * (2 * len(BODYPARTS))),
        ",".join(["bodyparts"] + [name for name in BODYPARTS for _ in "xy"]),
        ",".join(["coords"] + ["x", "y"] * len(BODYPARTS)),
    ]
    for image, labels in rows:
        cells = ["" if math.isnan(v) else repr(float(v)) for v in labels.reshape(-1)]
        lines.append(",".join([image, *cells]))
    return "\n".join(lines) + "\n"


def _config_yaml(image_wh: tuple[int, int]) -> str:
    """config.yaml in DeepLabCut's layout (the fields a DLC single-animal project has; values for this data)."""
    w, h = image_wh
    bodyparts = "\n".join(f"- {name}" for name in BODYPARTS)
    skeleton = "\n".join(f"- - {a}\n  - {b}" for a, b in SKELETON)
    return f"""# Project definitions (do not edit)
Task: {TASK}
scorer: {SCORER}
date: Jan1
multianimalproject: false
identity:


# Project path (change when moving around): DeepLabCut resets it to the folder holding this file
project_path: .

# Default DeepLabCut engine to use for shuffle creation (either pytorch or tensorflow)
engine: pytorch


# Annotation data set configuration (and individual video cropping parameters)
video_sets:
  videos/{UNLABELLED_VIDEO}.mp4:
    crop: 0, {w}, 0, {h}
bodyparts:
{bodyparts}


# Fraction of video to start/stop when extracting frames for labeling/refinement
start: 0
stop: 1
numframes2pick: 20


# Plotting configuration
skeleton:
{skeleton}
skeleton_color: black
pcutoff: 0.6
dotsize: 4
alphavalue: 0.7
colormap: rainbow


# Training,Evaluation and Analysis configuration
TrainingFraction:
- {TRAIN_FRACTION}
iteration: 0
default_net_type: resnet_50
default_augmenter: imgaug
snapshotindex: -1
detector_snapshotindex: -1
batch_size: 8
detector_batch_size: 1


# Cropping Parameters (for analysis and outlier frame detection)
cropping: false
#if cropping is true for analysis, then set the values here:
x1: 0
x2: {w}
y1: 0
y2: {h}


# Refinement configuration (parameters from annotation dataset configuration also relevant in this stage)
corner2move2:
- 50
- 50
move2corner: true
"""


def _write_video(path: Path, num_frames: int, image_wh: tuple[int, int], seed: int) -> None:
    """The unlabelled video: clips of ``CLIP_LENGTH`` frames, each a new scene with the animal walking."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), VIDEO_FPS, image_wh)
    if not writer.isOpened():
        raise RuntimeError(
            f"OpenCV cannot write {VIDEO_FOURCC!r} video to {path}; install opencv-python-headless (bundles FFmpeg)"
        )
    try:
        for frame in render_video_frames(seed, num_frames, image_wh):
            writer.write(frame.image)
    finally:
        writer.release()


# ----------------------------------------------------------------------------------------------- the animal


@dataclass(frozen=True)
class _AnimalShape:
    """Sizes (pixels) and colours of one animal; fixed for a clip."""

    body_a: float  # body semi-major axis
    body_b: float  # body semi-minor axis
    head_a: float  # head semi-major axis
    head_b: float
    ear_r: float
    nose_r: float
    eye_r: float
    tail_length: float
    tail_width: float  # at the base; the tip is half as wide (at least 3 px: thin tails are hard to learn)
    paw_r: float
    colours: dict[str, tuple[int, int, int]]

    @staticmethod
    def sample(rng: np.random.Generator, image_wh: tuple[int, int], background_bgr: np.ndarray) -> _AnimalShape:
        snout_to_tail_base = rng.uniform(*ANIMAL_SIZE_RANGE) * image_wh[0]
        head_ratio = rng.uniform(0.40, 0.50)
        body_a = snout_to_tail_base / (_SNOUT_TO_TAIL_BASE + (1 + _HEAD_PIVOT) * head_ratio)
        head_a = head_ratio * body_a
        head_b = head_a * rng.uniform(0.70, 0.85)
        return _AnimalShape(
            body_a=body_a,
            body_b=body_a * rng.uniform(0.45, 0.60),
            head_a=head_a,
            head_b=head_b,
            ear_r=max(2.5, head_b * rng.uniform(0.45, 0.55)),
            nose_r=max(1.8, head_b * 0.22),
            eye_r=max(0.8, head_b * 0.13),
            tail_length=body_a * rng.uniform(1.4, 2.0),
            tail_width=max(4.0, body_a * rng.uniform(0.2, 0.28)),
            paw_r=max(1.5, body_a * 0.12),
            colours=_sample_colours(rng, background_bgr),
        )


@dataclass(frozen=True)
class _Pose:
    """Where the animal is and how it bends; changes from frame to frame in a clip."""

    centre: tuple[float, float]  # body centre, image pixels
    heading: float  # body axis direction, tail to head, radians (image axes, y down)
    head_turn: float  # head direction relative to the body axis, radians
    tail_bend: float  # total turn of the tail along its length, radians
    gait_phase: float  # radians; paws swing with its sine


def _sample_colours(rng: np.random.Generator, background_bgr: np.ndarray) -> dict[str, tuple[int, int, int]]:
    """Fur and skin colours with enough luminance contrast to the background to be learnable."""
    luma = np.array([0.114, 0.587, 0.299])
    bg_luma = float(background_bgr @ luma)
    order = rng.permutation(len(_FUR_BGR))
    fur = np.array(_FUR_BGR[order[0]], dtype=np.float64)
    for i in order:
        candidate = np.array(_FUR_BGR[i], dtype=np.float64)
        if abs(candidate @ luma - bg_luma) >= 55:
            fur = candidate
            break
    fur = np.clip(fur + rng.uniform(-14, 14, 3), 0, 255)

    def blend(t: float, gain: float = 1.0) -> tuple[int, int, int]:
        c = np.clip(((1 - t) * fur + t * _SKIN_BGR) * gain, 0, 255)
        return (int(round(c[0])), int(round(c[1])), int(round(c[2])))

    return {
        "body": blend(0.0),
        "head": blend(0.0, rng.uniform(1.04, 1.12)),
        "ear": blend(0.55, 0.92),
        "nose": blend(0.8, 0.85),
        "tail": blend(0.4, 0.9),
        "paw": blend(0.6),
        "eye": _EYE_BGR,
    }


def _unit(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)])


def _quantise(xy: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(xy, dtype=np.float64) / KEYPOINT_QUANTUM) * KEYPOINT_QUANTUM


def _ellipse(centre: np.ndarray, axis: np.ndarray, a: float, b: float, n: int = 64) -> np.ndarray:
    """``(n, 2)`` polygon of the ellipse with semi-axes ``a`` along the unit vector ``axis`` and ``b`` across."""
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    across = np.array([-axis[1], axis[0]])
    return centre + np.outer(a * np.cos(t), axis) + np.outer(b * np.sin(t), across)


def _animal_geometry(shape: _AnimalShape, pose: _Pose) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """Keypoints ``(K, 2)`` and the parts to fill, back to front, as ``(colour name, (n, 2) polygon)``.

    The animal's left is on its left seen from above: with y down, left of the direction ``d`` is ``(d_y, -d_x)``.
    """
    c = np.asarray(pose.centre, dtype=np.float64)
    d = _unit(pose.heading)
    left = np.array([d[1], -d[0]])
    d_head = _unit(pose.heading + pose.head_turn)
    left_head = np.array([d_head[1], -d_head[0]])

    neck = _quantise(c + _NECK_AT * shape.body_a * d)
    head_centre = neck + _HEAD_PIVOT * shape.head_a * d_head
    snout = _quantise(head_centre + shape.head_a * d_head)
    ear_centre = head_centre - 0.25 * shape.head_a * d_head
    left_ear = _quantise(ear_centre + 0.95 * shape.head_b * left_head)
    right_ear = _quantise(ear_centre - 0.95 * shape.head_b * left_head)
    tail_base = _quantise(c - _TAIL_BASE_AT * shape.body_a * d)

    # The tail's centre line turns by tail_bend in total, a constant curvature, starting straight backwards.
    steps = 10
    seg = shape.tail_length / steps
    angles = pose.heading + math.pi + pose.tail_bend * (np.arange(steps) + 0.5) / steps
    centre_line = tail_base + np.concatenate(
        [[[0.0, 0.0]], np.cumsum(seg * np.stack([np.cos(angles), np.sin(angles)], 1), 0)]
    )
    tail_tip = _quantise(centre_line[-1])
    centre_line[-1] = tail_tip
    tip_width = max(3.0, 0.5 * shape.tail_width)
    widths = np.linspace(shape.tail_width, tip_width, steps + 1)
    tangents = np.gradient(centre_line, axis=0)
    normals = np.stack([-tangents[:, 1], tangents[:, 0]], 1) / np.linalg.norm(tangents, axis=1, keepdims=True)
    tail_strip = np.concatenate(
        [centre_line + normals * widths[:, None] / 2, (centre_line - normals * widths[:, None] / 2)[::-1]]
    )

    parts: list[tuple[str, np.ndarray]] = [
        ("tail", tail_strip),
        ("tail", _ellipse(tail_tip, d, tip_width / 2, tip_width / 2)),
    ]
    for along, side, phase in ((0.45, 1, 1), (0.45, -1, -1), (-0.5, 1, -1), (-0.5, -1, 1)):
        paw = (
            c
            + (along + 0.12 * phase * math.sin(pose.gait_phase)) * shape.body_a * d
            + side * 1.02 * shape.body_b * left
        )
        parts.append(("paw", _ellipse(paw, d, 1.4 * shape.paw_r, shape.paw_r)))
    parts.append(("body", _ellipse(c, d, shape.body_a, shape.body_b)))
    parts.append(("head", _ellipse(head_centre, d_head, shape.head_a, shape.head_b)))
    parts.append(("ear", _ellipse(left_ear, d_head, shape.ear_r, shape.ear_r)))
    parts.append(("ear", _ellipse(right_ear, d_head, shape.ear_r, shape.ear_r)))
    for side in (1, -1):
        eye = head_centre + 0.3 * shape.head_a * d_head + side * 0.55 * shape.head_b * left_head
        parts.append(("eye", _ellipse(eye, d_head, shape.eye_r, shape.eye_r)))
    parts.append(("nose", _ellipse(snout, d_head, shape.nose_r, shape.nose_r)))

    keypoints = np.stack([snout, left_ear, right_ear, neck, tail_base, tail_tip])  # BODYPARTS order
    return keypoints, parts


def _inside(points_xy: np.ndarray, image_wh: tuple[int, int], margin: float) -> bool:
    w, h = image_wh
    return bool(
        (points_xy[:, 0] >= margin).all()
        and (points_xy[:, 0] <= w - 1 - margin).all()
        and (points_xy[:, 1] >= margin).all()
        and (points_xy[:, 1] <= h - 1 - margin).all()
    )


def _sample_pose(rng: np.random.Generator, shape: _AnimalShape, image_wh: tuple[int, int]) -> _Pose:
    """A random pose with every keypoint in the frame (rejection sampling; the last try is kept regardless)."""
    w, h = image_wh
    pose = None
    for _ in range(100):
        pose = _Pose(
            centre=(float(rng.uniform(0, w - 1)), float(rng.uniform(0, h - 1))),
            heading=float(rng.uniform(-math.pi, math.pi)),
            head_turn=float(rng.uniform(-0.6, 0.6)),
            tail_bend=float(rng.uniform(-1.5, 1.5)),
            gait_phase=float(rng.uniform(0, 2 * math.pi)),
        )
        keypoints, _ = _animal_geometry(shape, pose)
        if _inside(keypoints, image_wh, margin=4.0):
            break
    assert pose is not None
    return pose


def _next_pose(rng: np.random.Generator, shape: _AnimalShape, pose: _Pose, image_wh: tuple[int, int]) -> _Pose:
    """The pose one video frame later: a step forward with some wandering; turn back at the frame's edge."""
    heading = pose.heading + rng.normal(0, 0.12)
    step = shape.body_a * rng.uniform(0.05, 0.2)
    for _ in range(8):
        centre = np.asarray(pose.centre) + step * _unit(heading)
        candidate = _Pose(
            centre=(float(centre[0]), float(centre[1])),
            heading=heading,
            head_turn=float(np.clip(pose.head_turn + rng.normal(0, 0.12), -0.6, 0.6)),
            tail_bend=float(np.clip(pose.tail_bend + rng.normal(0, 0.2), -1.5, 1.5)),
            gait_phase=pose.gait_phase + step / shape.body_a * 4.0,
        )
        if _inside(_animal_geometry(shape, candidate)[0], image_wh, margin=4.0):
            return candidate
        heading += rng.uniform(0.5, 1.5)  # bumped into the edge: turn
    return pose  # cornered: stand still this frame


# ----------------------------------------------------------------------------------------------- the drawing


def _render_scene_frames(
    rng: np.random.Generator, image_wh: tuple[int, int], num_frames: int, clean: bool
) -> list[SyntheticFrame]:
    """``num_frames`` frames of one scene (background, lighting, animal) with the animal walking."""
    # clean mode draws the same random numbers as the real frame, so it shows the same animal
    background = _background(rng, image_wh)
    shape = _AnimalShape.sample(rng, image_wh, background.reshape(-1, 3).mean(0).astype(np.float64))
    pose = _sample_pose(rng, shape, image_wh)
    lighting = _Lighting.sample(rng)
    frames = []
    for i in range(num_frames):
        if i:
            pose = _next_pose(rng, shape, pose, image_wh)
        keypoints, parts = _animal_geometry(shape, pose)
        colour, alpha = _draw_supersampled(parts, shape.colours, image_wh)
        shadowed = _cast_shadow(rng, background, alpha)
        image = lighting.apply(rng, shadowed * (1 - alpha[..., None]) + colour)
        if clean:
            image = np.float32(_CLEAN_GREY) * (1 - alpha[..., None]) + colour
        frames.append(SyntheticFrame(np.clip(np.rint(image), 0, 255).astype(np.uint8), keypoints, dict(shape.colours)))
    return frames


def _draw_supersampled(
    parts: list[tuple[str, np.ndarray]], colours: dict[str, tuple[int, int, int]], image_wh: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Fill the parts back to front at ``SUPERSAMPLE``x and area-average down (only over the animal's box).

    Returns:
        ``(colour, alpha)``: ``(H, W, 3)`` float32 premultiplied colour and ``(H, W)`` float32 coverage in [0, 1].
    """
    import cv2

    k = SUPERSAMPLE
    w, h = image_wh
    colour = np.zeros((h, w, 3), dtype=np.float32)
    alpha = np.zeros((h, w), dtype=np.float32)
    points = np.concatenate([polygon for _, polygon in parts])
    x0, y0 = (max(0, math.floor(v) - 1) for v in points.min(axis=0))
    x1, y1 = min(w, math.ceil(points[:, 0].max()) + 2), min(h, math.ceil(points[:, 1].max()) + 2)
    if x0 >= x1 or y0 >= y1:
        return colour, alpha
    roi_w, roi_h = x1 - x0, y1 - y0
    colour_hi = np.zeros((roi_h * k, roi_w * k, 3), dtype=np.uint8)
    mask_hi = np.zeros((roi_h * k, roi_w * k), dtype=np.uint8)
    for name, polygon in parts:
        # image point x is supersampled point k (x - x0) + (k - 1) / 2 (pixel centres on both grids)
        fixed = np.round(((polygon - (x0, y0)) * k + (k - 1) / 2) * (1 << DRAW_SHIFT)).astype(np.int32)
        cv2.fillPoly(colour_hi, [fixed], colours[name], cv2.LINE_8, DRAW_SHIFT)
        cv2.fillPoly(mask_hi, [fixed], 255, cv2.LINE_8, DRAW_SHIFT)
    area = cv2.INTER_AREA
    colour[y0:y1, x0:x1] = cv2.resize(colour_hi.astype(np.float32), (roi_w, roi_h), interpolation=area)
    alpha[y0:y1, x0:x1] = cv2.resize(mask_hi.astype(np.float32), (roi_w, roi_h), interpolation=area) / 255.0
    return colour, alpha


def _background(rng: np.random.Generator, image_wh: tuple[int, int]) -> np.ndarray:
    """``(H, W, 3)`` float32 BGR texture: a two-colour gradient, low- and mid-frequency noise, blobs and lines."""
    import cv2

    w, h = image_wh
    base = rng.uniform(40, 215)
    tint = rng.normal(0, 25, 3)
    c1 = np.clip(base + tint, 0, 255)
    c2 = np.clip(c1 + rng.normal(0, 35, 3), 0, 255)
    angle = rng.uniform(0, 2 * math.pi)
    xs, ys = np.arange(w, dtype=np.float32)[None, :], np.arange(h, dtype=np.float32)[:, None]
    t = (xs * math.cos(angle) + ys * math.sin(angle)) / max(w, h) * 0.5 + 0.5  # (H, W)
    image = (1 - t)[..., None] * c1.astype(np.float32) + t[..., None] * c2.astype(np.float32)

    for cells, amplitude, interpolation in ((rng.integers(3, 9), 28, cv2.INTER_CUBIC), (None, 10, cv2.INTER_LINEAR)):
        gw = int(cells) if cells is not None else w // 4
        gh = max(2, round(gw * h / w))
        grid = rng.normal(0, 1, (gh, gw, 1)) * rng.uniform(0.2, 1.0) * amplitude
        grid = grid + rng.normal(0, 0.3 * amplitude, (gh, gw, 3)) * rng.uniform(0, 1)  # some colour variation
        image += cv2.resize(grid.astype(np.float32), (w, h), interpolation=interpolation)

    for _ in range(int(rng.integers(2, 11))):
        overlay = image.copy()
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        axes = (int(rng.uniform(4, w / 5)), int(rng.uniform(4, h / 5)))
        cv2.ellipse(overlay, centre, axes, float(rng.uniform(0, 180)), 0, 360, rng.uniform(0, 255, 3).tolist(), -1)
        image = cv2.addWeighted(image, 1 - (a := float(rng.uniform(0.15, 0.6))), overlay, a, 0)
    for _ in range(int(rng.integers(0, 6))):
        overlay = image.copy()
        p1 = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        p2 = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        cv2.line(overlay, p1, p2, rng.uniform(0, 255, 3).tolist(), int(rng.integers(1, 4)))
        image = cv2.addWeighted(image, 1 - (a := float(rng.uniform(0.2, 0.7))), overlay, a, 0)
    sigma = float(rng.uniform(0.0, 1.5))
    if sigma > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    return np.clip(image, 0, 255).astype(np.float32)


def _cast_shadow(rng: np.random.Generator, background: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Darken the background under a blurred, offset copy of the animal's silhouette."""
    import cv2

    h, w = alpha.shape
    shift = np.array([[1.0, 0.0, rng.uniform(-4, 4)], [0.0, 1.0, rng.uniform(-4, 4)]])
    shadow = cv2.warpAffine(alpha, shift, (w, h))
    shadow = cv2.GaussianBlur(shadow, (0, 0), float(rng.uniform(1.5, 4.0)))
    return background * (1 - float(rng.uniform(0.15, 0.45)) * shadow)[..., None]


@dataclass(frozen=True)
class _Lighting:
    """Camera and light: gain, a gain gradient across the frame, offset, blur and sensor noise (fixed per scene)."""

    gain: float
    gradient: tuple[float, float]
    offset: float
    blur_sigma: float
    noise_sigma: float

    @staticmethod
    def sample(rng: np.random.Generator) -> _Lighting:
        return _Lighting(
            gain=float(rng.uniform(0.75, 1.2)),
            gradient=(float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.3, 0.3))),
            offset=float(rng.uniform(-15, 15)),
            blur_sigma=float(rng.uniform(0.0, 1.0)),
            noise_sigma=float(rng.uniform(1.0, 6.0)),
        )

    def apply(self, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
        """Light a ``(H, W, 3)`` float32 image; blur is symmetric, so keypoints stay where they were drawn."""
        import cv2

        h, w = image.shape[:2]
        xs, ys = np.arange(w, dtype=np.float32)[None, :], np.arange(h, dtype=np.float32)[:, None]
        gain = self.gain * (1 + self.gradient[0] * (xs / w - 0.5) + self.gradient[1] * (ys / h - 0.5))  # (H, W)
        image = image * gain[..., None] + self.offset
        if self.blur_sigma > 0.3:
            image = cv2.GaussianBlur(image, (0, 0), self.blur_sigma)
        # the difference of two uniform bytes: triangular noise of std 104.5, five times cheaper than a Gaussian
        pair = np.frombuffer(rng.bytes(2 * image.size), dtype=np.uint8).reshape(2, *image.shape)
        return image + (pair[0].astype(np.float32) - pair[1]) * np.float32(self.noise_sigma / 104.5)


# ----------------------------------------------------------------------------------------------- many animals

MULTI_VIDEO_NAME = "multi_animal.mp4"
MULTI_TRUTH_NAME = "multi_animal_truth.npz"
_PASS_ANGLE = math.radians(45)  # headings within this of each other: an overtake; of opposite directions: head-on
_CROSSING_DISTANCE = 0.5  # body centres closer than this x the snout-to-tail-base length: the animals cross


@dataclass(frozen=True)
class Crossing:
    """Two animals meeting: the frame where their body centres come closest (< half a body length).

    Attributes:
        frame: the frame of the closest approach.
        animals: the two identities, ascending.
        distance: body-centre distance at that frame, image pixels.
        kind: ``"overtake"`` (headings within 45 degrees: one passes over the other going the same way; only motion
            tells them apart), ``"head-on"`` (within 45 degrees of opposite) or ``"cross"`` (at an angle between).
    """

    frame: int
    animals: tuple[int, int]
    distance: float
    kind: str


@dataclass(frozen=True)
class MultiAnimalTruth:
    """Ground truth of the multi-animal video: identity ``i`` is index ``i`` of the animal axis in every frame.

    Attributes:
        keypoints_xy: ``(T, M, K, 2)`` float64 image pixels (pixel-centre convention), ``BODYPARTS`` order, every
            keypoint (also those outside the frame); multiples of ``KEYPOINT_QUANTUM``.
        inside: ``(T, M, K)`` bool: the keypoint lies in the image (``-0.5 .. W - 0.5``). Animals overlap freely
            (a top view of animals walking over each other); only leaving the frame hides a keypoint.
        headings: ``(T, M)`` body direction, tail to head, radians (image axes, y down).
        crossings: every meeting of two animals, by frame.
        image_wh: frame size ``(W, H)``.
        fps: frame rate of the video.
        length_px: the animals' snout-to-tail-base length (they are alike: one body plan and one colour).
    """

    keypoints_xy: np.ndarray
    inside: np.ndarray
    headings: np.ndarray
    crossings: tuple[Crossing, ...]
    image_wh: tuple[int, int]
    fps: float
    length_px: float

    @property
    def num_frames(self) -> int:
        return int(self.keypoints_xy.shape[0])

    @property
    def num_animals(self) -> int:
        return int(self.keypoints_xy.shape[1])

    @property
    def present(self) -> np.ndarray:
        """``(T, M)`` bool: some keypoint of the animal is in the frame."""
        return np.asarray(self.inside.any(axis=-1))


@dataclass(frozen=True)
class MultiAnimalFrame:
    """One frame of the multi-animal video: the image (BGR uint8) and ``(M, K, 2)`` true keypoints."""

    image: np.ndarray
    keypoints_xy: np.ndarray


@dataclass(frozen=True)
class MultiAnimalVideo:
    """The written multi-animal video and its ground truth (``read_multi_animal_truth(truth_path)`` reads it back)."""

    video_path: Path
    truth_path: Path
    truth: MultiAnimalTruth


@dataclass(frozen=True)
class _MultiScene:
    background: np.ndarray
    shape: _AnimalShape
    lighting: _Lighting
    poses: list[list[_Pose]]  # [frame][animal]
    truth: MultiAnimalTruth


def multi_animal_truth(
    seed: int = 0,
    num_animals: int = 3,
    num_frames: int = 120,
    image_wh: tuple[int, int] = (256, 256),
    leaving_animal: int | None = -1,
) -> MultiAnimalTruth:
    """The ground truth of ``generate_multi_animal_video`` with the same arguments, without drawing a frame.

    The animals run around an elliptic track along the arena's wall at different, slowly varying speeds. With
    three or more, the last identity runs the other way (head-on passes) and the others overtake one another
    (the same place and heading: only motion tells them apart). ``leaving_animal`` (if not None) runs out of the
    frame once, in the second half of the video, and comes back (-1: the last identity; None: nobody leaves).
    """
    return _multi_scene(seed, num_animals, num_frames, image_wh, leaving_animal).truth


def render_multi_animal_frames(
    seed: int = 0,
    num_animals: int = 3,
    num_frames: int = 120,
    image_wh: tuple[int, int] = (256, 256),
    leaving_animal: int | None = -1,
    clean: bool = False,
) -> Iterator[MultiAnimalFrame]:
    """The frames of ``generate_multi_animal_video`` (before mp4 compression) with their true keypoints.

    Args:
        clean: uniform grey background, no shadow, lighting, blur or noise: pixels under an animal's keypoints have
            exactly its part colours where no animal drawn later (higher identity) covers them.
    """
    scene = _multi_scene(seed, num_animals, num_frames, image_wh, leaving_animal)
    rng = np.random.default_rng([seed, 3])  # stream 3: per-frame shadow and sensor noise of the multi-animal video
    w, h = image_wh
    for t, poses in enumerate(scene.poses):
        colour = np.zeros((h, w, 3), dtype=np.float32)
        alpha = np.zeros((h, w), dtype=np.float32)
        for pose in poses:  # identity order: a higher identity is drawn over a lower one
            _, parts = _animal_geometry(scene.shape, pose)
            top_colour, top_alpha = _draw_supersampled(parts, scene.shape.colours, image_wh)
            colour = top_colour + colour * (1 - top_alpha[..., None])  # premultiplied "over"
            alpha = top_alpha + alpha * (1 - top_alpha)
        if clean:
            image = np.float32(_CLEAN_GREY) * (1 - alpha[..., None]) + colour
        else:
            shadowed = _cast_shadow(rng, scene.background, alpha)
            image = scene.lighting.apply(rng, shadowed * (1 - alpha[..., None]) + colour)
        yield MultiAnimalFrame(np.clip(np.rint(image), 0, 255).astype(np.uint8), scene.truth.keypoints_xy[t])


def generate_multi_animal_video(
    out_dir: str | Path,
    seed: int = 0,
    num_animals: int = 3,
    num_frames: int = 120,
    image_wh: tuple[int, int] = (256, 256),
    leaving_animal: int | None = -1,
) -> MultiAnimalVideo:
    """Write ``out_dir/multi_animal.mp4`` (mp4v, ``VIDEO_FPS``) and its ground truth ``multi_animal_truth.npz``.

    The npz holds ``keypoints_xy (T, M, K, 2)``, ``inside (T, M, K)``, ``headings (T, M)``, ``bodyparts``,
    ``crossing_frames (C,)``, ``crossing_animals (C, 2)``, ``crossing_distances (C,)``, ``crossing_kinds (C,)``,
    ``image_wh``, ``fps`` and ``length_px``. Both files are written to temporary names and renamed into place.
    See ``multi_animal_truth`` for the motion.
    """
    import cv2

    scene_truth = multi_animal_truth(seed, num_animals, num_frames, image_wh, leaving_animal)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    video_path, truth_path = out_dir / MULTI_VIDEO_NAME, out_dir / MULTI_TRUTH_NAME
    fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=f".{MULTI_VIDEO_NAME}.", suffix=".mp4")  # OpenCV needs .mp4
    os.close(fd)
    try:
        writer = cv2.VideoWriter(tmp_name, cv2.VideoWriter_fourcc(*VIDEO_FOURCC), VIDEO_FPS, tuple(image_wh))
        if not writer.isOpened():
            raise RuntimeError(
                f"OpenCV cannot write {VIDEO_FOURCC!r} video to {video_path}; install opencv-python-headless "
                "(bundles FFmpeg)"
            )
        try:
            for frame in render_multi_animal_frames(seed, num_animals, num_frames, image_wh, leaving_animal):
                writer.write(frame.image)
        finally:
            writer.release()
        os.replace(tmp_name, video_path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    buffer = io.BytesIO()
    crossings = scene_truth.crossings
    np.savez(
        buffer,
        keypoints_xy=scene_truth.keypoints_xy,
        inside=scene_truth.inside,
        headings=scene_truth.headings,
        bodyparts=np.array(BODYPARTS),
        crossing_frames=np.array([c.frame for c in crossings], dtype=np.int64),
        crossing_animals=np.array([c.animals for c in crossings], dtype=np.int64).reshape(-1, 2),
        crossing_distances=np.array([c.distance for c in crossings], dtype=np.float64),
        crossing_kinds=np.array([c.kind for c in crossings], dtype=str),
        image_wh=np.array(image_wh, dtype=np.int64),
        fps=np.float64(VIDEO_FPS),
        length_px=np.float64(scene_truth.length_px),
    )
    atomic_write_bytes(truth_path, buffer.getvalue())
    return MultiAnimalVideo(video_path, truth_path, scene_truth)


def read_multi_animal_truth(path: str | Path) -> MultiAnimalTruth:
    """The ground truth ``generate_multi_animal_video`` wrote (``multi_animal_truth.npz``)."""
    with np.load(path, allow_pickle=False) as data:
        crossings = tuple(
            Crossing(int(f), (int(a[0]), int(a[1])), float(d), str(k))
            for f, a, d, k in zip(
                data["crossing_frames"],
                data["crossing_animals"],
                data["crossing_distances"],
                data["crossing_kinds"],
                strict=True,
            )
        )
        return MultiAnimalTruth(
            keypoints_xy=data["keypoints_xy"],
            inside=data["inside"],
            headings=data["headings"],
            crossings=crossings,
            image_wh=(int(data["image_wh"][0]), int(data["image_wh"][1])),
            fps=float(data["fps"]),
            length_px=float(data["length_px"]),
        )


def _multi_scene(
    seed: int, num_animals: int, num_frames: int, image_wh: tuple[int, int], leaving_animal: int | None
) -> _MultiScene:
    """Background, the one body plan, lighting and every animal's pose per frame (stream 2 of ``seed``)."""
    _check_args(2, num_frames, image_wh, seed)
    if not isinstance(num_animals, int) or not 1 <= num_animals <= 8:
        raise ValueError(f"num_animals={num_animals!r}: need an int from 1 to 8 (they share one track)")
    if leaving_animal is not None:
        if not -num_animals <= leaving_animal < num_animals:
            raise ValueError(
                f"leaving_animal={leaving_animal!r}: need None or an identity in 0..{num_animals - 1} (-1: the last)"
            )
        leaving_animal %= num_animals
    rng = np.random.default_rng([seed, 2])
    w, h = image_wh
    background = _background(rng, image_wh)
    shape = _AnimalShape.sample(rng, image_wh, background.reshape(-1, 3).mean(0).astype(np.float64))
    lighting = _Lighting.sample(rng)
    length = _SNOUT_TO_TAIL_BASE * shape.body_a + (1 + _HEAD_PIVOT) * shape.head_a  # snout to tail base, px

    # The track: an ellipse around the arena (animals running along the wall), tabulated by arc length.
    cx, cy = (w - 1) / 2, (h - 1) / 2
    ax, ay = max(w / 2 - 0.7 * length, 0.2 * w), max(h / 2 - 0.7 * length, 0.2 * h)
    u = np.linspace(0.0, 2 * math.pi, 4097)
    track = np.stack([cx + ax * np.cos(u), cy + ay * np.sin(u)], axis=1)  # (4097, 2)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(track, axis=0), axis=1))])
    perimeter = float(arc[-1])

    # With three animals or more the last one runs the other way (head-on passes); the others start in a queue,
    # the slowest (highest identity) in front, and animal i catches up with animal i + 1 around frame
    # (k + 1) T / (queue length) for the k-th catch-up (the speeds' wobble moves it a little): one animal passes
    # over another going the same way, where only motion tells them apart. Identity 0 is the fastest.
    queue = num_animals - 1 if num_animals >= 3 else num_animals
    base = rng.uniform(2.2, 2.8)  # px per frame of the slowest
    speeds = np.full(num_animals, 1.5 * base)
    speeds[:queue] = base * (1 + 2 * np.arange(queue)[::-1])
    direction = np.where(np.arange(num_animals) < queue, 1.0, -1.0)
    start = np.zeros(num_animals)
    for i in range(queue - 2, -1, -1):  # animal i queues behind animal i + 1
        catch_up = num_frames * ((queue - 1 - i) / queue + rng.uniform(-0.05, 0.05))
        start[i] = start[i + 1] - (speeds[i] - speeds[i + 1]) * catch_up
    start[queue:] = rng.uniform(0, perimeter, num_animals - queue)
    start += rng.uniform(0, perimeter)  # where on the track the queue starts
    frames = np.arange(num_frames, dtype=np.float64)
    centres = np.zeros((num_frames, num_animals, 2))
    for i in range(num_animals):
        wobble = 0.1 * np.sin(2 * math.pi * frames / rng.uniform(40, 80) + rng.uniform(0, 2 * math.pi))
        steps = direction[i] * speeds[i] * (1 + wobble[1:])
        s = np.mod(start[i] + np.concatenate([[0.0], np.cumsum(steps)]), perimeter)
        centres[:, i] = np.stack([np.interp(s, arc, track[:, 0]), np.interp(s, arc, track[:, 1])], axis=1)

    if leaving_animal is not None and num_frames >= 24:
        # run out of the arena once and come back: a smooth, flat-topped outward bump, centred where the animal is
        # nearest the frame's edge in the second half of the video
        outward = centres[:, leaving_animal] - (cx, cy)  # (T, 2)
        radius = np.linalg.norm(outward, axis=1)
        direction_out = outward / radius[:, None]
        with np.errstate(divide="ignore"):
            to_edge = np.minimum(w / 2 / np.abs(direction_out[:, 0]), h / 2 / np.abs(direction_out[:, 1])) - radius
        late = slice(num_frames // 2, num_frames - num_frames // 6)
        peak = late.start + int(np.argmin(to_edge[late]))
        reach = to_edge[peak] + 1.4 * length  # the body centre 1.4 lengths beyond the edge: every keypoint out
        ramp, hold = max(num_frames // 4, 3), max(num_frames // 24, 2)
        bump = np.clip((ramp + hold - np.abs(frames - peak)) / ramp, 0.0, 1.0)
        bump = 0.5 - 0.5 * np.cos(math.pi * bump)  # smooth ramps
        centres[:, leaving_animal] += reach * bump[:, None] * direction_out

    velocity = np.asarray(np.gradient(centres, axis=0))  # (T, M, 2) px / frame
    headings = np.arctan2(velocity[..., 1], velocity[..., 0])  # (T, M)
    turn = np.gradient(np.unwrap(headings, axis=0), axis=0) / np.maximum(np.linalg.norm(velocity, axis=-1), 1e-6)
    # the posture follows the path's curvature (rad / px) smoothly: a Gaussian over +-3 frames, soft limits
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    padded = np.pad(turn, ((6, 6), (0, 0)), mode="edge")
    turn = np.stack([np.convolve(padded[:, i], kernel / kernel.sum(), mode="valid") for i in range(num_animals)], 1)
    head_turns = 0.6 * np.tanh(turn * 2 * shape.body_a / 0.6)  # the head turns into the curve
    tail_bends = 1.5 * np.tanh(-turn * shape.tail_length / 1.5)  # the tail trails
    poses: list[list[_Pose]] = []
    keypoints = np.zeros((num_frames, num_animals, len(BODYPARTS), 2))
    walked = np.cumsum(np.linalg.norm(velocity, axis=-1), axis=0)  # (T, M) px
    for t in range(num_frames):
        row = []
        for i in range(num_animals):
            pose = _Pose(
                centre=(float(centres[t, i, 0]), float(centres[t, i, 1])),
                heading=float(headings[t, i]),
                head_turn=float(head_turns[t, i]),
                tail_bend=float(tail_bends[t, i]),
                gait_phase=float(walked[t, i] / shape.body_a * 4.0),
            )
            keypoints[t, i] = _animal_geometry(shape, pose)[0]
            row.append(pose)
        poses.append(row)

    inside = (
        (keypoints[..., 0] >= -0.5)
        & (keypoints[..., 0] <= w - 0.5)
        & (keypoints[..., 1] >= -0.5)
        & (keypoints[..., 1] <= h - 0.5)
    )
    truth = MultiAnimalTruth(
        keypoints_xy=keypoints,
        inside=inside,
        headings=headings,
        crossings=_crossings(centres, headings, length),
        image_wh=(int(w), int(h)),
        fps=float(VIDEO_FPS),
        length_px=float(length),
    )
    return _MultiScene(background, shape, lighting, poses, truth)


def _crossings(centres: np.ndarray, headings: np.ndarray, length: float) -> tuple[Crossing, ...]:
    """Closest approaches (local minima of the centre distance below half a body length) of every pair."""
    found = []
    num_frames, num_animals = centres.shape[:2]
    for a in range(num_animals):
        for b in range(a + 1, num_animals):
            d = np.linalg.norm(centres[:, a] - centres[:, b], axis=-1)  # (T,)
            for t in range(num_frames):
                before = d[t - 1] if t > 0 else np.inf
                after = d[t + 1] if t + 1 < num_frames else np.inf
                if d[t] < _CROSSING_DISTANCE * length and d[t] < before and d[t] <= after:
                    angle = abs(math.remainder(float(headings[t, a] - headings[t, b]), 2 * math.pi))
                    kind = "overtake" if angle <= _PASS_ANGLE else "cross"
                    kind = "head-on" if angle >= math.pi - _PASS_ANGLE else kind
                    found.append(Crossing(t, (a, b), float(d[t]), kind))
    return tuple(sorted(found, key=lambda c: (c.frame, c.animals)))
