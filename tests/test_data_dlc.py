"""DeepLabCut project loading on the openfield project (whole in ../shared, a subset in tests/fixtures), and its errors
on broken copies in tmp_path."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from tardis_edge.data import (
    PoseDataset,
    flip_pairs_from_names,
    load_dataset,
    load_dlc_project,
    read_sample_image,
)

LABELS = Path("labeled-data/m4s1/CollectedData_Pranav.csv")


@pytest.fixture(scope="module")
def openfield_csv(openfield_dir: Path) -> PoseDataset:
    return load_dlc_project(openfield_dir, prefer="csv")


@pytest.fixture(scope="module")
def openfield_h5(openfield_dir: Path) -> PoseDataset:
    return load_dlc_project(openfield_dir, prefer="h5")


def read_rows(openfield_dir: Path) -> list[list[str]]:
    with open(openfield_dir / LABELS, newline="") as f:
        return list(csv.reader(f))


def make_project(tmp_path: Path, openfield_dir: Path, frames=(0, 1, 2), layout: str = "one", rows=None) -> Path:
    """A small copy of the openfield project: config.yaml, the label rows of ``frames`` and their images."""
    project = tmp_path / "project"
    folder = project / "labeled-data" / "m4s1"
    folder.mkdir(parents=True)
    shutil.copy(openfield_dir / "config.yaml", project / "config.yaml")
    original = read_rows(openfield_dir)
    rows = rows if rows is not None else original[:3] + [original[3 + i] for i in frames]
    for i in frames:
        shutil.copy(openfield_dir / f"labeled-data/m4s1/img{i:04d}.png", folder / f"img{i:04d}.png")
    if layout == "three":  # DeepLabCut >= 2.3: labeled-data,<video>,<img> as three index columns
        rows = [[r[0], "", ""] + r[1:] for r in rows[:3]] + [r[0].split("/") + r[1:] for r in rows[3:]]
    with open(folder / LABELS.name, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return project


def test_openfield_loads_116_frames_of_4_keypoints(openfield_csv):
    ds = openfield_csv
    assert len(ds) == 116
    assert ds.schema.names == ("snout", "leftear", "rightear", "tailbase")
    assert ds.schema.flip_pairs == ((1, 2),)  # leftear <-> rightear, found from the names
    assert ds.schema.skeleton == ()  # config.yaml: skeleton: []
    assert ds.sample_ids[0] == "labeled-data/m4s1/img0000.png"
    assert all(s.keypoints_xy.shape == (4, 2) and s.bbox_xywh is None for s in ds)
    assert ds.summary.num_samples == 116 and ds.summary.labelled_keypoints == 464 and ds.summary.skipped == []
    # first row of the CSV, read by hand: snout at (21.521, 265.428), tailbase at (87.11, 152.698)
    np.testing.assert_allclose(ds[0].keypoints_xy[[0, 3]], [[21.521, 265.428], [87.11, 152.698]], rtol=1e-6)
    # the labels sit inside the 640x480 frames
    xy = np.stack([s.keypoints_xy for s in ds])
    assert np.nanmin(xy) >= 0 and np.nanmax(xy[..., 0]) < 640 and np.nanmax(xy[..., 1]) < 480


def test_openfield_csv_and_h5_give_identical_arrays(openfield_csv, openfield_h5):
    assert openfield_csv.sample_ids == openfield_h5.sample_ids
    assert openfield_csv.schema == openfield_h5.schema
    np.testing.assert_array_equal(
        np.stack([s.keypoints_xy for s in openfield_csv]), np.stack([s.keypoints_xy for s in openfield_h5])
    )
    np.testing.assert_array_equal(
        np.stack([s.visible for s in openfield_csv]), np.stack([s.visible for s in openfield_h5])
    )


def test_three_index_column_csv_layout(tmp_path, openfield_subset_dir):
    ds = load_dlc_project(make_project(tmp_path, openfield_subset_dir, layout="three"), prefer="csv")
    one_column = load_dlc_project(openfield_subset_dir, prefer="csv")
    assert ds.sample_ids == one_column.sample_ids[:3]
    np.testing.assert_array_equal(np.stack([s.keypoints_xy for s in ds]), [s.keypoints_xy for s in one_column[:3]])


def test_h5_with_three_level_row_index(tmp_path, openfield_subset_dir):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("tables")
    project = make_project(tmp_path, openfield_subset_dir)
    table = pd.read_hdf(openfield_subset_dir / LABELS.with_suffix(".h5"), "df_with_missing").iloc[:3]
    table.index = pd.MultiIndex.from_tuples([tuple(p.split("/")) for p in table.index])
    (project / LABELS).unlink()
    table.to_hdf(project / LABELS.with_suffix(".h5"), key="df_with_missing", mode="w")
    ds = load_dlc_project(project)
    assert ds.sample_ids == [f"labeled-data/m4s1/img{i:04d}.png" for i in range(3)]
    np.testing.assert_array_equal(ds[2].keypoints_xy, table.iloc[2].to_numpy(np.float32).reshape(4, 2))


def test_empty_cells_are_unlabelled_and_counted(tmp_path, openfield_subset_dir):
    original = read_rows(openfield_subset_dir)
    partly = original[3][:3] + ["", ""] + original[3][5:]  # leftear left empty
    nothing = [original[4][0]] + [""] * 8
    project = make_project(tmp_path, openfield_subset_dir, frames=(0, 1), rows=original[:3] + [partly, nothing])
    ds = load_dlc_project(project, prefer="csv")
    np.testing.assert_array_equal(ds[0].visible, [2, 0, 2, 2])
    assert np.isnan(ds[0].keypoints_xy[1]).all() and np.isfinite(ds[0].keypoints_xy[[0, 2, 3]]).all()
    assert ds[0].labelled and not ds[1].labelled
    assert (ds.summary.labelled_keypoints, ds.summary.unlabelled_keypoints, ds.summary.unlabelled_samples) == (3, 5, 1)
    assert "without any labelled keypoint" in str(ds.summary)
    assert len(ds.labelled_only()) == 1


def test_folder_without_labels_is_listed_as_skipped(tmp_path, openfield_subset_dir):
    project = make_project(tmp_path, openfield_subset_dir)
    (project / "labeled-data" / "m4s1_labeled").mkdir()  # what DeepLabCut's check_labels leaves behind
    ds = load_dlc_project(project, prefer="csv")
    assert [s.what for s in ds.summary.skipped] == ["labeled-data/m4s1_labeled"]
    assert "m4s1_labeled: no CollectedData_Pranav.h5/.csv" in str(ds.summary)


def test_given_flip_pairs_by_name(tmp_path, openfield_subset_dir):
    ds = load_dlc_project(
        make_project(tmp_path, openfield_subset_dir), prefer="csv", flip_pairs=[("rightear", "leftear")]
    )
    assert ds.schema.flip_pairs == ((1, 2),)
    with pytest.raises(ValueError, match=r"flip pair \('leftear', 'nose'\) names 'nose'"):
        load_dlc_project(ds.root, prefer="csv", flip_pairs=[("leftear", "nose")])


def test_skeleton_from_config_names(tmp_path, openfield_subset_dir):
    project = make_project(tmp_path, openfield_subset_dir)
    config = project / "config.yaml"
    config.write_text(config.read_text().replace("skeleton: []", "skeleton:\n- [snout, leftear]\n- [snout, tailbase]"))
    assert load_dlc_project(project, prefer="csv").schema.skeleton == ((0, 1), (0, 3))
    config.write_text(config.read_text().replace("- [snout, tailbase]", "- [snout, tail]"))
    with pytest.raises(ValueError, match=r"config.yaml: skeleton edge \['snout', 'tail'\] must be a pair"):
        load_dlc_project(project, prefer="csv")


@pytest.mark.parametrize(
    ("names", "pairs"),
    [
        (["snout", "leftear", "rightear", "tailbase"], ((1, 2),)),
        (["left_eye", "right_eye", "nose", "left_front_paw", "right_front_paw"], ((0, 1), (3, 4))),
        (["L_Eye", "R_Eye", "Nose", "L_F_Paw", "R_F_Paw", "R_B_Paw"], ((0, 1), (3, 4))),
        (["LeftEar", "RightEar", "Tail", "l-paw", "r-paw"], ((0, 1), (3, 4))),
        (["Left_Hip", "right_hip", "tail_l2", "tail_r1"], ((0, 1),)),  # case ignored; unmatched l/r stays alone
        (["head", "neck", "tail"], ()),
        # mmpose's fly / locust / zebra: an upper-case side letter as a suffix, before a number, or as a prefix
        (["head", "eyeL", "eyeR", "wingL", "wingR"], ((1, 2), (3, 4))),
        (["forelegL1", "forelegR1", "forelegL2", "forelegR2", "neck"], ((0, 1), (2, 3))),
        (["LEye", "REye", "eye_l", "eye_r"], ((0, 1), (2, 3))),
        (["Leg", "ELbowR", "Reg_x"], ()),  # "Leg" has no "Reg"; a capital after a capital is no side letter
    ],
)
def test_flip_pairs_from_names(names, pairs):
    assert flip_pairs_from_names(names) == pairs


def test_flip_pairs_are_printed_by_name(tmp_path, openfield_subset_dir):
    project = make_project(tmp_path, openfield_subset_dir)
    assert "flip pairs (leftear, rightear) (from names)" in str(load_dlc_project(project, prefer="csv").summary)


def test_load_dataset_detects_the_project(openfield_dir, tmp_path):
    assert len(load_dataset(openfield_dir, prefer="csv")) == 116
    assert len(load_dataset(openfield_dir / "config.yaml", prefer="csv")) == 116
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"cannot tell the dataset format of .*notes.txt"):
        load_dataset(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")


# ---- bad input: each error names the file and the row / value and says what to do ----


def test_missing_image_names_the_row(tmp_path, openfield_subset_dir):
    project = make_project(tmp_path, openfield_subset_dir)
    (project / "labeled-data/m4s1/img0001.png").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"image labeled-data/m4s1/img0001.png \(row 5 of .*CollectedData_Pranav.csv\) does not exist.*"
        r"restore the image or delete its row",
    ):
        load_dlc_project(project, prefer="csv")


def test_unreadable_image_fails_at_read_time_with_its_name(tmp_path, openfield_subset_dir):
    project = make_project(tmp_path, openfield_subset_dir)
    (project / "labeled-data/m4s1/img0002.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    ds = load_dlc_project(project, prefer="csv")  # existence is checked at load, decoding at read time
    assert read_sample_image(ds[0]).shape == (480, 640, 3)
    with pytest.raises(ValueError, match=r"image .*img0002.png \(18 bytes\) cannot be decoded.*corrupt"):
        read_sample_image(ds[2])


def test_header_bodyparts_not_matching_config(tmp_path, openfield_subset_dir):
    project = make_project(tmp_path, openfield_subset_dir)
    config = project / "config.yaml"
    config.write_text(config.read_text().replace("- tailbase\n", "- tailtip\n"))
    with pytest.raises(
        ValueError,
        match=r"CollectedData_Pranav.csv: header bodyparts \['snout', 'leftear', 'rightear', 'tailbase'\] do not "
        r"match config.yaml bodyparts .*missing from the labels: \['tailtip'\]; not in config.yaml: \['tailbase'\]",
    ):
        load_dlc_project(project, prefer="csv")


def test_non_numeric_cell_names_row_and_column(tmp_path, openfield_subset_dir):
    original = read_rows(openfield_subset_dir)
    broken = original[3][:5] + ["12,5"] + original[3][6:]  # a decimal comma in rightear/x
    project = make_project(tmp_path, openfield_subset_dir, frames=(0,), rows=original[:3] + [broken])
    with pytest.raises(ValueError, match=r"row 4 of .*CollectedData_Pranav.csv, column rightear/x: '12,5' is not a"):
        load_dlc_project(project, prefer="csv")


def test_empty_dataset(tmp_path, openfield_subset_dir):
    project = make_project(tmp_path, openfield_subset_dir, frames=(), rows=read_rows(openfield_subset_dir)[:3])
    with pytest.raises(ValueError, match=r"empty dataset: no labelled frames for scorer 'Pranav' under .*labeled-data"):
        load_dlc_project(project, prefer="csv")
    with pytest.raises(ValueError, match=r"empty dataset.*m4s1: no CollectedData_Someone.h5/.csv \(found"):
        load_dlc_project(project, scorer="Someone")


def test_multi_animal_project_is_refused(tmp_path, openfield_subset_dir):
    project = make_project(tmp_path, openfield_subset_dir)
    config = project / "config.yaml"
    config.write_text(config.read_text().replace("multianimalproject:", "multianimalproject: true"))
    with pytest.raises(ValueError, match=r"config.yaml is a multi-animal DeepLabCut project"):
        load_dlc_project(project)
