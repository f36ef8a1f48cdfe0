"""Label sanity on load (issue 13, finding 4): a truncated labels file is refused; labels outside their image, CSV/H5
files that disagree and body parts never labelled are reported in the load summary — never accepted silently."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import pytest
from conftest import data_path

from tardis_edge.data import load_dlc_project

OPENFIELD = "data/openfield-Pranav-2018-10-30"
LABELS = Path("labeled-data/m4s1/CollectedData_Pranav.csv")


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the committed openfield subset (10 frames, CSV and H5 labels)."""
    copy = tmp_path / "project"
    shutil.copytree(data_path(OPENFIELD), copy)
    return copy


def test_clean_project_has_no_warnings_and_counts_labels_per_keypoint(project):
    dataset = load_dlc_project(project)
    assert dataset.summary.warnings == []
    assert dataset.summary.keypoint_counts == {"snout": 10, "leftear": 10, "rightear": 10, "tailbase": 10}
    assert "labels per keypoint: snout 10, leftear 10, rightear 10, tailbase 10" in str(dataset.summary)


def test_csv_cut_mid_row_is_refused(project):
    (project / LABELS.with_suffix(".h5")).unlink()
    text = (project / LABELS).read_text()
    (project / LABELS).write_text(text[: text.rindex(",") - 3])  # the last row loses its last cells and line end
    with pytest.raises(
        ValueError, match=r"row 13 of .*CollectedData_Pranav.csv is cut short \(\d of 9 cells.*truncated"
    ):
        load_dlc_project(project)


def test_csv_without_trailing_empty_cells_still_loads(project):
    """Spreadsheets drop trailing empty cells but end the line: that is not a truncation."""
    (project / LABELS.with_suffix(".h5")).unlink()
    lines = (project / LABELS).read_text().splitlines()
    lines[-1] = ",".join(lines[-1].split(",")[:-2])  # tailbase unlabelled in the last frame
    (project / LABELS).write_text("\n".join(lines) + "\n")
    dataset = load_dlc_project(project)
    assert dataset.summary.keypoint_counts["tailbase"] == 9 and dataset.summary.warnings == []


def test_labels_outside_a_shrunk_image_are_reported(project):
    image = project / "labeled-data/m4s1/img0003.png"
    cv2.imwrite(str(image), cv2.resize(cv2.imread(str(image)), (320, 240)))
    dataset = load_dlc_project(project)
    (warning,) = dataset.summary.warnings
    assert warning.startswith("4 labelled keypoint(s) lie outside their image")  # img0003: every y > 240
    assert "img0003.png" in warning and "320x240 image" in warning and "resized" in warning


def test_csv_and_h5_that_disagree_are_reported_with_the_file_used(project):
    lines = (project / LABELS).read_text().splitlines(keepends=True)
    lines[4] = lines[4].replace("10.248", "110.248")  # img0001 snout edited in the CSV only
    (project / LABELS).write_text("".join(lines))
    from_h5 = load_dlc_project(project)  # the default: DeepLabCut's own .h5
    (warning,) = from_h5.summary.warnings
    assert "disagree on 1 frame(s) (first: labeled-data/m4s1/img0001.png); using CollectedData_Pranav.h5" in warning
    assert from_h5[1].keypoints_xy[0, 0] == pytest.approx(10.248)
    from_csv = load_dlc_project(project, prefer="csv")
    assert "using CollectedData_Pranav.csv" in from_csv.summary.warnings[0]
    assert from_csv[1].keypoints_xy[0, 0] == pytest.approx(110.248)


def test_body_part_never_labelled_is_reported(project):
    (project / LABELS.with_suffix(".h5")).unlink()
    rows = [line.split(",") for line in (project / LABELS).read_text().splitlines()]
    for row in rows[3:]:
        row[7:9] = ["", ""]  # tailbase never labelled
    (project / LABELS).write_text("\n".join(",".join(r) for r in rows) + "\n")
    dataset = load_dlc_project(project)
    assert dataset.summary.keypoint_counts["tailbase"] == 0
    assert any("['tailbase'] are labelled in no sample" in w for w in dataset.summary.warnings)
    train_only = load_dlc_project(data_path(OPENFIELD)).subset([0, 1], "train")
    assert train_only.summary.warnings == []
