"""Multi-animal datasets: SLEAP's flies clip (../shared; a few of its frames go through the frame cache), small
SLEAP files written with sleap-io into tmp_path (predicted instances, legacy coordinates, moved videos), a
multi-animal DeepLabCut project and a two-animal COCO file built in tmp_path, and the frame-range split of the
issue."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import data_path

from tardis_edge.data import load_dataset
from tardis_edge.data.dataset import animals_per_image, image_key

CLIP = "data/sleap-flies-clip"


@pytest.fixture(scope="module")
def clip_dir() -> Path:
    return data_path(CLIP, full=True)


@pytest.fixture(scope="module")
def clip(clip_dir):
    return load_dataset(clip_dir / "clip.slp")


def raw_slp_points(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SLEAP's own tables, read with h5py: user points ``(N, 2)``, instances (frame id, track, point range), and
    frames (frame id -> frame index)."""
    import h5py

    with h5py.File(path, "r") as f:
        points = f["points"][:]
        return np.stack([points["x"], points["y"]], axis=1), f["instances"][:], f["frames"][:]


def test_sleap_clip_counts(clip, clip_dir):
    raw_xy, instances, frames = raw_slp_points(clip_dir / "clip.slp")
    assert len(clip) == len(instances) == 3000
    assert clip.summary.num_images == len(frames) == 1500
    assert clip.schema.num_keypoints == 13
    assert clip.schema.names[3:5] == ("wingL", "wingR")
    missing = int(np.isnan(raw_xy[:, 0]).sum())
    assert clip.summary.unlabelled_keypoints == missing and 0.01 < missing / raw_xy.shape[0] < 0.02
    assert sum(int((s.visible == 0).sum()) for s in clip) == missing
    assert all(np.isnan(s.keypoints_xy[s.visible == 0]).all() for s in clip)
    assert {s.track for s in clip} == {"female", "male"}
    assert clip.summary.identities == {"female": 1500, "male": 1500}
    assert clip.summary.max_animals_per_image == 2 and clip.summary.mean_animals_per_image == 2.0
    assert set(animals_per_image(clip).values()) == {2}
    assert clip.summary.skipped == []
    assert "SLEAP" in str(clip.summary) and "animals per image: max 2" in str(clip.summary)


def test_sleap_clip_samples_match_the_file(clip, clip_dir):
    raw_xy, instances, frames = raw_slp_points(clip_dir / "clip.slp")
    track_names = ["female", "male"]  # tracks_json order in the file
    by_id = {s.sample_id: s for s in clip}
    frame_index = {int(f["frame_id"]): int(f["frame_idx"]) for f in frames}
    for row in instances[[0, 1, 1777, 2999]]:
        sid = f"clip#{frame_index[int(row['frame_id'])]:06d}/{track_names[row['track']]}"
        sample = by_id[sid]
        expected = raw_xy[row["point_id_start"] : row["point_id_end"]]  # format 1.1: pixel centres, unchanged
        np.testing.assert_array_equal(sample.keypoints_xy, expected.astype(np.float32))
        assert sample.keypoints_xy.dtype == np.float32 and sample.keypoints_xy.shape == (13, 2)
        assert sample.frame_index == frame_index[int(row["frame_id"])]
    s = clip[0]
    assert s.sample_id == "clip#000000/female" and s.image_path is None
    assert s.video_path == clip_dir / "clip.mp4" and s.image_wh == (1024, 1024) and s.bbox_xywh is None
    assert clip.sample_ids == sorted(clip.sample_ids)  # ordered by frame, then track
    assert len({image_key(s) for s in clip[:4]}) == 2  # two animals per frame share the frame's key


def test_sleap_flip_pairs_and_skeleton(clip):
    names = clip.schema.names
    pairs = {(names[i], names[j]) for i, j in clip.schema.flip_pairs}
    assert pairs == {("wingL", "wingR"), ("forelegL4", "forelegR4"), ("midlegL4", "midlegR4"),
                     ("hindlegL4", "hindlegR4"), ("eyeL", "eyeR")}  # fmt: skip
    edges = {(names[a], names[b]) for a, b in clip.schema.skeleton}
    assert ("head", "eyeL") in edges and ("thorax", "abdomen") in edges and len(edges) == 12


def test_sleap_video_found_next_to_moved_labels(clip_dir, tmp_path):
    moved = tmp_path / "labels" / "clip.slp"
    moved.parent.mkdir()
    shutil.copy(clip_dir / "clip.slp", moved)
    with pytest.raises(FileNotFoundError, match=r"video 'clip.mp4' not found .*video_root="):
        load_dataset(moved)
    ds = load_dataset(moved, video_root=clip_dir)
    assert ds[0].video_path == clip_dir / "clip.mp4" and len(ds) == 3000
    ds = load_dataset(moved, check_videos=False)  # labels only: sizes unknown, the video path as it would be
    assert ds[0].image_wh is None and ds[0].video_path == moved.parent / "clip.mp4"


def _small_slp(tmp_path: Path, video: Path, name: str = "small.slp") -> tuple[Path, np.ndarray]:
    """Two frames: frame 5 with a user instance ('a') and its prediction, frame 2 with one untracked user instance,
    one all-missing user instance, and a predicted one."""
    import sleap_io as sio

    skeleton = sio.Skeleton(["head", "eyeL", "eyeR"], edges=[("head", "eyeL"), ("head", "eyeR")])
    track = sio.Track("a")
    vid = sio.Video(filename=str(video), open_backend=False)
    xy = np.array([[10.0, 20.0], [12.5, 18.0], [np.nan, np.nan]])
    frames = [
        sio.LabeledFrame(
            vid,
            5,
            [
                sio.Instance.from_numpy(xy, skeleton, track=track),
                sio.PredictedInstance.from_numpy(xy + 1, skeleton, score=0.9, track=track),
            ],
        ),
        sio.LabeledFrame(
            vid,
            2,
            [
                sio.Instance.from_numpy(xy + 100, skeleton),
                sio.Instance.from_numpy(np.full((3, 2), np.nan), skeleton),
                sio.PredictedInstance.from_numpy(xy + 3, skeleton, score=0.5),
            ],
        ),
    ]
    path = tmp_path / name
    sio.save_slp(sio.Labels(frames, videos=[vid], skeletons=[skeleton], tracks=[track]), str(path))
    return path, xy


def test_sleap_predicted_and_empty_instances_are_skipped(clip_dir, tmp_path):
    path, xy = _small_slp(tmp_path, clip_dir / "clip.mp4")
    ds = load_dataset(path)
    assert ds.sample_ids == ["clip#000002/0", "clip#000005/a"]  # sorted by frame; untracked: position in frame
    assert [s.track for s in ds] == [None, "a"]
    np.testing.assert_array_equal(ds[1].keypoints_xy, xy.astype(np.float32))
    np.testing.assert_array_equal(ds[1].visible, [2, 2, 0])
    whats = [s.what for s in ds.summary.skipped]
    assert whats[0].startswith("2 predicted instance(s) in 2 frame(s)")
    assert whats[1].startswith("1 user instance(s) (first: clip#000002/1)")
    assert ds.summary.identities == {"a": 1}
    assert "a 1" in str(ds.summary)


def test_sleap_legacy_corner_coordinates_are_shifted(clip_dir, tmp_path):
    import h5py

    legacy = tmp_path / "clip.slp"
    shutil.copy(clip_dir / "clip.slp", legacy)
    with h5py.File(legacy, "r+") as f:
        f["metadata"].attrs["format_id"] = 1.0  # SLEAP < 1.1 wrote pixel-corner coordinates
    raw_xy, _, _ = raw_slp_points(legacy)
    ds = load_dataset(legacy, video_root=clip_dir)
    male = next(s for s in ds if s.sample_id == "clip#000000/male")  # instance 0 of the file: points 0..12
    np.testing.assert_allclose(male.keypoints_xy, raw_xy[:13] - 0.5)
    assert any("shifted by -0.5 px" in n for n in ds.summary.notes)


def test_sleap_package_with_embedded_images_is_refused(clip_dir, tmp_path):
    import sleap_io as sio

    labels = sio.load_slp(str(clip_dir / "clip.slp"))
    labels.labeled_frames = labels.labeled_frames[:2]
    package = tmp_path / "clip.pkg.slp"
    sio.save_slp(labels, str(package), embed="user")
    with pytest.raises(ValueError, match=r"frames embedded as images .*embed=False"):
        load_dataset(package)


def test_frame_cache_gives_the_decoded_frames(clip, tmp_path):
    from tardis_edge.data import read_sample_image
    from tardis_edge.data.dataset import read_video_frame
    from tardis_edge.data.frame_cache import cache_video_frames, frame_cache_dir, read_cached_frame

    wanted = [s for s in clip if s.frame_index in (0, 1, 3, 1000)]  # 8 samples in 4 frames; 1000 needs a seek
    video = wanted[0].video_path
    assert read_cached_frame(video, 0, tmp_path) is None
    report = cache_video_frames(wanted, tmp_path)
    assert (report.videos, report.written, report.already_cached) == (1, 4, 0)
    folder = frame_cache_dir(video, tmp_path)
    assert sorted(f.name for f in folder.iterdir()) == ["000000.npy", "000001.npy", "000003.npy", "001000.npy"]
    for frame in (0, 3, 1000):
        cached = read_cached_frame(video, frame, tmp_path)
        assert cached.shape == (1024, 1024, 3) and cached.dtype == np.uint8
        np.testing.assert_array_equal(cached, read_video_frame(video, frame))
    assert cache_video_frames(wanted, tmp_path).written == 0

    # read_sample_image takes the cached frame: a marked cache file shows it was read
    marked = np.full((1024, 1024), 7, np.uint8)
    np.save(folder / "000001.npy", marked)
    sample = next(s for s in wanted if s.frame_index == 1)
    assert (read_sample_image(sample, tmp_path) == 7).all()
    # a damaged cache file is dropped and the frame decoded from the video again
    (folder / "000001.npy").write_bytes(b"\x93NUMPY broken")
    np.testing.assert_array_equal(read_sample_image(sample, tmp_path), read_video_frame(video, 1))
    assert not (folder / "000001.npy").exists()


def test_frame_cache_refuses_frames_past_the_end(clip, tmp_path):
    from dataclasses import replace

    from tardis_edge.data.frame_cache import cache_video_frames

    past = replace(clip[0], frame_index=1500, sample_id="clip#001500/female")
    with pytest.raises(ValueError, match=r"frame 1500 of video .*clip.mp4 cannot be read"):
        cache_video_frames([past], tmp_path)


def test_issue_split_of_the_clip_by_frame_ranges(clip, tmp_path):
    from tardis_edge.splits import Split, SplitConfig, SplitError, resolve_split

    config = SplitConfig(method="ranges", train=["0:1000:4"], test=["1000:1500"])
    split = resolve_split(clip, config)
    assert split.sizes() == {"train": 500, "val": 0, "test": 1000}  # 250 and 500 frames, two flies each
    assert len(split.unused) == 1500 and "750 images in no part (unused)" in split.describe
    frame = {s.sample_id: s.frame_index for s in clip}
    assert sorted({frame[i] for i in split.train}) == list(range(0, 1000, 4))
    assert sorted({frame[i] for i in split.test}) == list(range(1000, 1500))
    assert {frame[i] for i in split.unused} == set(range(1000)) - set(range(0, 1000, 4))
    train, val, test = split.apply(clip)
    assert train.summary.max_animals_per_image == 2 and test.summary.identities == {"female": 500, "male": 500}

    split.write(tmp_path / "split.json")  # the recorded split, unused frames included, reads back whole
    again = resolve_split(clip, SplitConfig(method="file", file=str(tmp_path / "split.json")))
    assert (again.train, again.test, again.unused) == (split.train, split.test, split.unused)
    assert Split.read(tmp_path / "split.json").unused == split.unused

    with pytest.raises(SplitError, match=r"'0:1000:0' has step 0"):
        resolve_split(clip, SplitConfig(method="ranges", train=["0:1000:0"], test=["1000:1500"]))
    with pytest.raises(SplitError, match=r"not a start:stop or start:stop:step range"):
        resolve_split(clip, SplitConfig(method="ranges", test=["1000:1500:2:1"]))
    with pytest.raises(SplitError, match=r"--data.split.train and --data.split.test both hold"):
        resolve_split(clip, SplitConfig(method="ranges", train=["0:1200"], test=["1000:1500"]))
    with pytest.raises(SplitError, match=r"not for method=fraction"):
        resolve_split(clip, SplitConfig(train=["0:10"]))


# --- DeepLabCut multi-animal: a synthetic project written the way DeepLabCut writes one (pandas to_csv / to_hdf) ---

DLC_MA_CONFIG = """\
Task: mice
scorer: Jessy
date: Jan1
multianimalproject: true
identity: false
individuals:
- mus1
- mus2
- mus3
uniquebodyparts:
- feeder
multianimalbodyparts:
- snout
- leftear
- rightear
- tailbase
bodyparts: MULTI!
skeleton:
- [snout, leftear]
- [snout, rightear]
- [snout, feeder]
"""
INDIVIDUALS = ("mus1", "mus2", "mus3")
BODYPARTS = ("snout", "leftear", "rightear", "tailbase")


def dlc_ma_table(rng: np.random.Generator):
    """5 frames of 3 mice + a feeder as DeepLabCut's DataFrame: mus3 absent in frame 1, mus2 absent and mus1's
    leftear unlabelled in frame 2, no mouse (only the feeder) in frame 3, the feeder unlabelled in frame 4."""
    import pandas as pd

    names = ["scorer", "individuals", "bodyparts", "coords"]
    columns = pd.MultiIndex.from_product([["Jessy"], INDIVIDUALS, BODYPARTS, ["x", "y"]], names=names).append(
        pd.MultiIndex.from_product([["Jessy"], ["single"], ["feeder"], ["x", "y"]], names=names)
    )
    values = rng.uniform(5, 75, size=(5, len(columns))).round(2)  # inside 100 x 80 frames
    animal = values[:, :24].reshape(5, 3, 4, 2)  # (frame, individual, bodypart, xy) view
    animal[1, 2] = np.nan
    animal[2, 1] = np.nan
    animal[2, 0, 1] = np.nan
    animal[3] = np.nan
    values[4, 24:] = np.nan
    index = pd.MultiIndex.from_tuples([("labeled-data", "cage1", f"img{i:04d}.png") for i in range(5)])
    return pd.DataFrame(values, index=index, columns=columns)


@pytest.fixture
def dlc_ma_project(tmp_path):
    import cv2

    project = tmp_path / "mice-Jessy"
    folder = project / "labeled-data" / "cage1"
    folder.mkdir(parents=True)
    (project / "config.yaml").write_text(DLC_MA_CONFIG)
    table = dlc_ma_table(np.random.default_rng(12))
    table.to_csv(folder / "CollectedData_Jessy.csv")
    table.to_hdf(folder / "CollectedData_Jessy.h5", key="df_with_missing", mode="w")
    for i in range(5):
        cv2.imwrite(str(folder / f"img{i:04d}.png"), np.zeros((80, 100, 3), np.uint8))
    return project, table


def test_dlc_multianimal_one_sample_per_labelled_individual(dlc_ma_project):
    project, table = dlc_ma_project
    ds = load_dataset(project, prefer="csv")
    values = table.to_numpy()
    animal = values[:, :24].reshape(5, 3, 4, 2)
    expected_ids = []
    for frame in range(5):
        image = f"labeled-data/cage1/img{frame:04d}.png"
        present = [INDIVIDUALS[i] for i in range(3) if np.isfinite(animal[frame, i]).any()]
        expected_ids += [f"{image}#{who}" for who in present] or [image]
    assert ds.sample_ids == expected_ids  # frame 3 (no mouse) is one unlabelled sample
    assert len(ds) == 11 and ds.summary.num_images == 5 and ds.summary.unlabelled_samples == 1
    assert ds.schema.names == BODYPARTS and ds.schema.flip_pairs == ((1, 2),)
    assert ds.schema.skeleton == ((0, 1), (0, 2))  # the edge to the feeder draws nothing on a mouse
    by_id = {s.sample_id: s for s in ds}
    mus1 = by_id["labeled-data/cage1/img0002.png#mus1"]
    np.testing.assert_allclose(mus1.keypoints_xy, animal[2, 0].astype(np.float32), equal_nan=True)
    np.testing.assert_array_equal(mus1.visible, [2, 0, 2, 2])
    assert mus1.track == "mus1" and by_id["labeled-data/cage1/img0003.png"].track is None
    assert ds.summary.max_animals_per_image == 3 and ds.summary.mean_animals_per_image == 10 / 5
    assert ds.summary.identities == {"mus1": 4, "mus2": 3, "mus3": 3}
    assert animals_per_image(ds)[image_key(mus1)] == 2
    text = str(ds.summary)
    assert "identities absent from some of the 4 labelled images (fewer animals there): mus2 1, mus3 1" in text
    feeder_points = int(np.isfinite(values[:, 24]).sum())
    assert [s.what for s in ds.summary.skipped] == [
        f"unique bodyparts ['feeder']: {feeder_points} labelled point(s) in {feeder_points} frame(s)"
    ]


def test_dlc_multianimal_csv_and_h5_agree(dlc_ma_project):
    project, _ = dlc_ma_project
    from_csv, from_h5 = load_dataset(project, prefer="csv"), load_dataset(project, prefer="h5")
    assert from_csv.sample_ids == from_h5.sample_ids
    for a, b in zip(from_csv, from_h5, strict=True):
        np.testing.assert_allclose(a.keypoints_xy, b.keypoints_xy, atol=1e-6, equal_nan=True)
        assert a.track == b.track and (a.visible == b.visible).all()
    assert from_h5.summary.warnings == []  # the two files were compared and agree


def test_dlc_multianimal_split_keeps_a_frame_together(dlc_ma_project):
    from tardis_edge.splits import SplitConfig, resolve_split

    project, _ = dlc_ma_project
    ds = load_dataset(project, prefer="csv")
    split = resolve_split(ds, SplitConfig(method="names", test=["img0002.png"]))
    assert split.test == ["labeled-data/cage1/img0002.png#mus1", "labeled-data/cage1/img0002.png#mus3"]
    split = resolve_split(ds, SplitConfig(train_fraction=0.6))  # 3 of 5 images train, whole
    assert split.sizes() == {"train": 7, "val": 0, "test": 4}


def test_dlc_multianimal_header_errors(dlc_ma_project):
    project, table = dlc_ma_project
    folder = project / "labeled-data" / "cage1"
    config = project / "config.yaml"
    config.write_text(DLC_MA_CONFIG.replace("- mus3\n", ""))
    with pytest.raises(ValueError, match=r"individuals \['mus3'\] are not in config.yaml's individuals"):
        load_dataset(project, prefer="csv")
    config.write_text(DLC_MA_CONFIG.replace("feeder", "food"))
    with pytest.raises(ValueError, match=r"individual 'single' \['feeder'\] do not match config.yaml uniquebodyparts"):
        load_dataset(project, prefer="csv")
    config.write_text("Task: mice\nscorer: Jessy\nbodyparts: [snout, leftear, rightear, tailbase]\n")
    with pytest.raises(ValueError, match=r"is a multi-animal labels file .* single-animal project"):
        load_dataset(project, prefer="csv")
    config.write_text(DLC_MA_CONFIG)
    single = table.loc[:, table.columns.get_level_values(1) == "mus1"].droplevel(1, axis=1)
    single.to_csv(folder / "CollectedData_Jessy.csv")
    with pytest.raises(ValueError, match=r"has no 'individuals' header row, but .* is a multi-animal project"):
        load_dataset(project, prefer="csv")


# --- COCO keypoints with several animals per image ---


def two_animal_coco(tmp_path: Path, track_key: str = "track_id") -> tuple[Path, dict]:
    """Two 64x48 frames: frame 1 holds animals 0 and 1, frame 2 only animal 1 (identity 0 absent)."""
    import cv2

    for name in ("f1.png", "f2.png"):
        cv2.imwrite(str(tmp_path / name), np.zeros((48, 64, 3), np.uint8))

    def ann(ann_id, image_id, track, x0):
        keypoints = [x0, 10, 2, x0 + 4, 12, 2, 0, 0, 0]
        return {"id": ann_id, "image_id": image_id, "category_id": 1, "keypoints": keypoints, "num_keypoints": 2,
                "bbox": [x0 - 2, 8, 10, 8], "iscrowd": 0, track_key: track}  # fmt: skip

    data = {
        "images": [{"id": 1, "file_name": "f1.png", "width": 64, "height": 48},
                   {"id": 2, "file_name": "f2.png", "width": 64, "height": 48}],
        "annotations": [ann(10, 1, 0, 5.0), ann(11, 1, 1, 30.0), ann(12, 2, 1, 31.0)],
        "categories": [{"id": 1, "name": "mouse", "keypoints": ["nose", "left_ear", "right_ear"],
                        "skeleton": [[1, 2], [1, 3]]}],
    }  # fmt: skip
    path = tmp_path / "two.json"
    path.write_text(json.dumps(data))
    return path, data


def test_coco_two_animals_per_image(tmp_path):
    path, data = two_animal_coco(tmp_path)
    ds = load_dataset(path)
    assert ds.sample_ids == ["f1.png#10", "f1.png#11", "f2.png#12"]
    assert [s.track for s in ds] == ["0", "1", "1"]
    assert image_key(ds[0]) == image_key(ds[1]) != image_key(ds[2])
    assert animals_per_image(ds) == {"image id 1": 2, "image id 2": 1}
    assert ds.summary.max_animals_per_image == 2 and ds.summary.mean_animals_per_image == 1.5
    assert ds.summary.identities == {"0": 1, "1": 2}
    assert "identities absent from some of the 2 labelled images (fewer animals there): 0 1" in str(ds.summary)
    np.testing.assert_array_equal(ds[1].keypoints_xy[:2], [[30, 10], [34, 12]])

    from tardis_edge.splits import SplitConfig, resolve_split

    split = resolve_split(ds, SplitConfig(method="ranges", test=["1:"]))
    assert split.train == ["f1.png#10", "f1.png#11"] and split.test == ["f2.png#12"]


def test_coco_identity_fields(tmp_path):
    path, _ = two_animal_coco(tmp_path, track_key="identity")
    assert [s.track for s in load_dataset(path)] == ["0", "1", "1"]
    path, data = two_animal_coco(tmp_path, track_key="track")
    for a, name in zip(data["annotations"], ("female", "male", "male"), strict=True):
        a["track"] = name
    path.write_text(json.dumps(data))
    assert [s.track for s in load_dataset(path)] == ["female", "male", "male"]
    data["annotations"][1]["track"] = 1.5
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"annotation 11 \(image 1\): track 1.5 must be a whole number or a name"):
        load_dataset(path)
    without = {**data, "annotations": [{k: v for k, v in a.items() if k != "track"} for a in data["annotations"]]}
    path.write_text(json.dumps(without))
    single = load_dataset(path)
    assert [s.track for s in single] == [None, None, None] and single.summary.identities == {}
