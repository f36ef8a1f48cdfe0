"""The built-in procedural DeepLabCut project: layout, exact labels, determinism, reuse, and the drawing itself."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from tardis_edge.data import split_by_index, synthetic
from tardis_edge.data.dlc import load_dlc_project
from tardis_edge.data.synthetic import (
    BODYPARTS,
    KEYPOINT_PART,
    KEYPOINT_QUANTUM,
    MARKER_NAME,
    SKELETON,
    generate_synthetic_project,
    num_train_frames,
    render_labelled_frame,
)

# Small on purpose: two video clips (12 + 3 frames), a frame size unlike the default.
ARGS = {"num_labelled": 20, "num_unlabelled": 15, "image_wh": (192, 144), "seed": 3}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return generate_synthetic_project(tmp_path_factory.mktemp("synthetic") / "project", **ARGS)


def _read_labels(project) -> pd.DataFrame:
    return pd.read_csv(project.labels_csv, header=[0, 1, 2], index_col=0)


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_config_is_a_dlc_single_animal_config(project):
    config = yaml.safe_load(project.config_path.read_text())
    assert config["Task"] == synthetic.TASK and config["scorer"] == synthetic.SCORER
    assert config["multianimalproject"] is False
    assert tuple(config["bodyparts"]) == BODYPARTS
    assert [tuple(edge) for edge in config["skeleton"]] == list(SKELETON)
    assert all(a in BODYPARTS and b in BODYPARTS for a, b in config["skeleton"])
    w, h = ARGS["image_wh"]
    assert config["video_sets"] == {"videos/arena2.mp4": {"crop": f"0, {w}, 0, {h}"}}
    assert config["TrainingFraction"] == [synthetic.TRAIN_FRACTION]


def test_csv_has_dlc_headers_and_the_exact_drawn_keypoints(project):
    lines = project.labels_csv.read_text().splitlines()
    assert [line.split(",")[0] for line in lines[:3]] == ["scorer", "bodyparts", "coords"]
    labels = _read_labels(project)
    assert labels.shape == (ARGS["num_labelled"], 2 * len(BODYPARTS))
    assert set(labels.columns.get_level_values(0)) == {synthetic.SCORER}
    assert tuple(labels.columns.get_level_values(1)[::2]) == BODYPARTS
    assert list(labels.columns.get_level_values(2)) == ["x", "y"] * len(BODYPARTS)
    assert list(labels.index) == [f"labeled-data/arena1/img{i:04d}.png" for i in range(ARGS["num_labelled"])]
    assert all((project.project_dir / rel).is_file() for rel in labels.index)

    values = labels.to_numpy(dtype=np.float64).reshape(len(labels), len(BODYPARTS), 2)  # (N, K, 2)
    missing = np.isnan(values).any(axis=2)  # (N, K)
    assert (np.isnan(values).all(axis=2) == missing).all(), "x and y must be missing together"
    assert 0 < missing.sum() < 0.15 * missing.size, f"{missing.sum()} of {missing.size} keypoints unlabelled"
    assert (~missing).any(axis=1).all(), "every frame keeps at least one labelled keypoint"
    assert np.array_equal(values[~missing] / KEYPOINT_QUANTUM, np.round(values[~missing] / KEYPOINT_QUANTUM))

    w, h = ARGS["image_wh"]
    for index in range(len(labels)):
        truth = render_labelled_frame(ARGS["seed"], index, ARGS["image_wh"]).keypoints_xy
        kept = ~missing[index]
        np.testing.assert_array_equal(values[index][kept], truth[kept])  # exact: the CSV holds them losslessly
        assert ((truth[:, 0] >= 0) & (truth[:, 0] <= w - 1) & (truth[:, 1] >= 0) & (truth[:, 1] <= h - 1)).all()


def test_pngs_are_the_rendered_frames(project):
    for index in (0, ARGS["num_labelled"] - 1):
        frame = render_labelled_frame(ARGS["seed"], index, ARGS["image_wh"])
        on_disk = cv2.imread(str(project.image_paths[index]), cv2.IMREAD_UNCHANGED)
        assert on_disk.shape == (ARGS["image_wh"][1], ARGS["image_wh"][0], 3)
        np.testing.assert_array_equal(on_disk, frame.image)


def test_video_reads_back_with_every_frame(project):
    capture = cv2.VideoCapture(str(project.video_path))
    assert capture.isOpened(), f"OpenCV cannot read {project.video_path}"
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == ARGS["num_unlabelled"] == project.num_unlabelled
    assert frames[0].shape == (ARGS["image_wh"][1], ARGS["image_wh"][0], 3)
    # a clip is one scene: consecutive frames are alike, the first frame of the next clip is not
    within = np.abs(frames[1].astype(int) - frames[0]).mean()
    across = np.abs(frames[synthetic.CLIP_LENGTH].astype(int) - frames[synthetic.CLIP_LENGTH - 1]).mean()
    assert within < across / 2, (within, across)


def test_split_rule(project):
    n_train = num_train_frames(ARGS["num_labelled"])
    assert project.num_train == n_train == 16
    assert len(project.train_images) == n_train and len(project.test_images) == ARGS["num_labelled"] - n_train
    assert project.train_images[0] == "labeled-data/arena1/img0000.png"
    assert project.test_images[0] == f"labeled-data/arena1/img{n_train:04d}.png"
    assert num_train_frames(120) == 96 and num_train_frames(2) == 1


def test_same_seed_same_bytes_other_seed_other_images(tmp_path, project):
    again = generate_synthetic_project(tmp_path / "again", **ARGS)
    assert _hashes(again.project_dir) == _hashes(project.project_dir)
    other = generate_synthetic_project(tmp_path / "other", **{**ARGS, "seed": ARGS["seed"] + 1})
    first, second = _hashes(project.project_dir), _hashes(other.project_dir)
    pngs = [name for name in first if name.endswith(".png")]
    assert all(first[name] != second[name] for name in pngs)
    assert first["config.yaml"] == second["config.yaml"]


def test_complete_project_is_reused_stale_one_replaced(tmp_path):
    args = {**ARGS, "num_labelled": 3, "num_unlabelled": 2}
    out = tmp_path / "cache"
    generate_synthetic_project(out, **args)
    marker = json.loads((out / MARKER_NAME).read_text())
    assert marker["version"] == synthetic.GENERATOR_VERSION and marker["args"]["seed"] == args["seed"]
    first_image = out / "labeled-data/arena1/img0000.png"
    first_image.write_bytes(first_image.read_bytes())  # same bytes, new mtime: tells a rewrite from a reuse
    stamp = first_image.stat().st_mtime_ns
    generate_synthetic_project(out, **args)
    assert first_image.stat().st_mtime_ns == stamp, "a complete project must be reused, not rewritten"

    (out / "labeled-data/arena1/img0002.png").unlink()  # incomplete: regenerated
    project = generate_synthetic_project(out, **args)
    assert all(p.is_file() for p in project.image_paths)

    project = generate_synthetic_project(out, **{**args, "num_labelled": 4})  # other args: replaced
    assert len(_read_labels(project)) == 4 and len(list(project.image_paths[0].parent.glob("*.png"))) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"], "no temporary folder may be left behind"


def test_foreign_folder_is_not_overwritten(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"mine exists and is not a synthetic project.*remove it"):
        generate_synthetic_project(out, num_labelled=2, num_unlabelled=1)
    assert (out / "notes.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert generate_synthetic_project(empty, num_labelled=2, num_unlabelled=1).labels_csv.is_file()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_labelled": 1}, r"num_labelled=1: need an int >= 2"),
        ({"num_unlabelled": 0}, r"num_unlabelled=0: need an int >= 1"),
        ({"image_wh": (321, 240)}, r"image_wh=\(321, 240\): need two even ints >= 64"),
        ({"image_wh": (32, 32)}, r"image_wh=\(32, 32\)"),
        ({"seed": -1}, r"seed=-1: need an int >= 0"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_synthetic_project(tmp_path / "p", **kwargs)
    assert not (tmp_path / "p").exists()


def test_clean_frame_has_the_part_colour_under_every_keypoint():
    """With no texture, lighting or noise, the pixel under each keypoint is exactly the part drawn there."""
    image_wh = ARGS["image_wh"]
    for index in range(16):
        frame = render_labelled_frame(ARGS["seed"], index, image_wh, clean=True)
        noisy = render_labelled_frame(ARGS["seed"], index, image_wh)
        np.testing.assert_array_equal(frame.keypoints_xy, noisy.keypoints_xy)  # same animal in both modes
        for name, (x, y) in zip(BODYPARTS, frame.keypoints_xy, strict=True):
            pixel = tuple(int(v) for v in frame.image[int(round(y)), int(round(x))])
            expected = frame.part_bgr[KEYPOINT_PART[name]]
            assert pixel == expected, f"frame {index} {name} at ({x}, {y}): {pixel} != {KEYPOINT_PART[name]} {expected}"


def _cross(u: np.ndarray, v: np.ndarray) -> float:
    return float(u[0] * v[1] - u[1] * v[0])


def test_left_ear_is_on_the_animals_left():
    """Seen from above with y down, an animal's left is where (snout - neck) x (ear - neck) is negative."""
    for index in range(16):
        kps = render_labelled_frame(ARGS["seed"], index, ARGS["image_wh"]).keypoints_xy
        snout, left, right, neck = kps[0], kps[1], kps[2], kps[3]
        assert _cross(snout - neck, left - neck) < 0 < _cross(snout - neck, right - neck), (
            f"frame {index}: ears swapped"
        )


@pytest.mark.parametrize("radius", [1.8, 3.0, 7.5])
def test_drawing_is_centred_on_the_pixel_centre_convention(radius):
    """A disc drawn at a sub-pixel centre has its coverage centroid there (geometry.py: pixel (c, r) is (c, r))."""
    rng = np.random.default_rng(0)
    colours = {"nose": (200, 100, 50)}
    for _ in range(20):
        centre = np.round(rng.uniform(12, 36, 2) / KEYPOINT_QUANTUM) * KEYPOINT_QUANTUM
        disc = synthetic._ellipse(centre, np.array([1.0, 0.0]), radius, radius)
        colour, alpha = synthetic._draw_supersampled([("nose", disc)], colours, (48, 48))
        ys, xs = np.mgrid[0:48, 0:48]
        centroid = np.array([(alpha * xs).sum(), (alpha * ys).sum()]) / alpha.sum()
        assert np.abs(centroid - centre).max() < 0.06, (centre, centroid)
        # OpenCV's fill also takes the supersampled pixels the edge touches: about +0.4 of them on the radius
        assert abs(alpha.sum() / (math.pi * radius**2) - 1) < 0.2
        np.testing.assert_allclose(colour, alpha[..., None] * np.array(colours["nose"], dtype=np.float32), atol=1e-3)


def test_project_loads_with_the_dlc_loader(project):
    dataset = load_dlc_project(project.project_dir)
    assert dataset.schema.names == BODYPARTS
    assert set(dataset.schema.flip_pairs) == {(1, 2)}
    labels = _read_labels(project).to_numpy(dtype=np.float64).reshape(-1, len(BODYPARTS), 2)
    assert len(dataset.samples) == len(labels)
    for sample, expected in zip(dataset.samples, labels, strict=True):
        np.testing.assert_array_equal(sample.keypoints_xy, expected.astype(np.float32))
        np.testing.assert_array_equal(sample.visible, np.where(np.isnan(expected[:, 0]), 0.0, 2.0))
    train, test = split_by_index(dataset, project.num_train)
    assert tuple(train.sample_ids) == project.train_images and tuple(test.sample_ids) == project.test_images
