"""COCO keypoint loading on ../shared's mmpose fixtures (AP-10K, Animal-Pose), few-shot sampling, and the
errors on broken copies of the JSON written to tmp_path (images are read in place through image_root)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from tardis_edge.data import few_shot, load_coco_keypoints, load_dataset
from tardis_edge.data.coco import ANIMALPOSE_SIGMAS, AP10K_SIGMAS

AP10K = "ap10k/test_ap10k.json"
ANIMALPOSE = "animalpose/test_animalpose.json"
# AP-10K's published OKS sigmas, as the issue lists them (mmpose configs/_base_/datasets/ap10k.py)
PUBLISHED_AP10K = [0.025, 0.025, 0.026, 0.035, 0.035, 0.079, 0.072, 0.062, 0.079, 0.072, 0.062, 0.107, 0.087, 0.089]
PUBLISHED_AP10K += [0.107, 0.087, 0.089]


@pytest.fixture
def ap10k_json(fixtures_dir: Path) -> dict:
    return json.loads((fixtures_dir / AP10K).read_text())


def write_json(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data))  # json.dumps writes float('nan') as NaN, which json.loads reads back
    return path


def test_ap10k_fixture(fixtures_dir):
    ds = load_coco_keypoints(fixtures_dir / AP10K)
    raw = json.loads((fixtures_dir / AP10K).read_text())
    assert len(ds) == 2 and ds.schema.num_keypoints == 17
    assert ds.schema.names[:3] == ("left_eye", "right_eye", "nose")
    assert [s.category for s in ds] == ["jaguar", "antelope"]  # category_id 26 and 1
    assert [s.annotation_id for s in ds] == [9284, 6] and [s.image_id for s in ds] == [37516, 4]
    assert ds.schema.sigmas == tuple(PUBLISHED_AP10K) == AP10K_SIGMAS
    assert ds.schema.skeleton[:4] == ((0, 1), (0, 2), (1, 2), (2, 3))  # COCO's [[1, 2], [1, 3], [2, 3], [3, 4]]
    assert (0, 1) in ds.schema.flip_pairs and (5, 8) in ds.schema.flip_pairs and len(ds.schema.flip_pairs) == 7
    first = ds[0]
    np.testing.assert_array_equal(first.bbox_xywh, [66, 192, 1092, 512])
    assert first.extra["area"] == 559104 and first.image_wh == (1200, 867)
    assert first.image_path == fixtures_dir / "ap10k/000000037516.jpg"
    # keypoint 1 (right_eye) is (0, 0, 0) in the file: unlabelled -> NaN, visible 0
    assert first.visible[1] == 0 and np.isnan(first.keypoints_xy[1]).all()
    triples = np.asarray(raw["annotations"][0]["keypoints"], dtype=np.float32).reshape(17, 3)
    labelled = triples[:, 2] > 0
    np.testing.assert_array_equal(first.keypoints_xy[labelled], triples[labelled, :2])
    np.testing.assert_array_equal(first.visible, triples[:, 2])
    assert ds.summary.categories == {"antelope": 1, "jaguar": 1}
    assert (ds.summary.labelled_keypoints, ds.summary.unlabelled_keypoints) == (32, 2)


def test_animalpose_fixture(fixtures_dir):
    ds = load_dataset(fixtures_dir / ANIMALPOSE)  # format recognised from the .json
    assert len(ds) == 2 and ds.schema.num_keypoints == 20
    assert ds.schema.names[:2] == ("L_Eye", "R_Eye")
    assert ds.schema.sigmas == ANIMALPOSE_SIGMAS and len(ANIMALPOSE_SIGMAS) == 20
    names = ds.schema.names
    assert {(names[i], names[j]) for i, j in ds.schema.flip_pairs} == {
        ("L_Eye", "R_Eye"),
        ("L_EarBase", "R_EarBase"),
        ("L_F_Elbow", "R_F_Elbow"),
        ("L_B_Elbow", "R_B_Elbow"),
        ("L_F_Knee", "R_F_Knee"),
        ("L_B_Knee", "R_B_Knee"),
        ("L_F_Paw", "R_F_Paw"),
        ("L_B_Paw", "R_B_Paw"),
    }
    assert ds.summary.unlabelled_keypoints == 8  # 3 + 5 zero triples in the two annotations


def test_given_sigmas_and_their_check(fixtures_dir):
    ds = load_coco_keypoints(fixtures_dir / AP10K, sigmas=[0.05] * 17)
    assert ds.schema.sigmas == (0.05,) * 17
    with pytest.raises(ValueError, match=r"sigmas must be 17 positive numbers"):
        load_coco_keypoints(fixtures_dir / AP10K, sigmas=[0.05] * 16)


def test_unknown_names_have_no_sigmas_and_say_so(tmp_path, fixtures_dir, ap10k_json):
    for cat in ap10k_json["categories"]:
        cat["keypoints"] = [f"kp{i}" for i in range(17)]
    ds = load_coco_keypoints(write_json(tmp_path, ap10k_json), image_root=fixtures_dir / "ap10k")
    assert ds.schema.sigmas is None and ds.schema.flip_pairs == ()
    assert "no OKS sigmas known" in str(ds.summary)


def test_crowd_and_empty_annotations_are_skipped_and_reported(tmp_path, fixtures_dir, ap10k_json):
    crowd = copy.deepcopy(ap10k_json["annotations"][0]) | {"id": 100, "iscrowd": 1}
    empty = copy.deepcopy(ap10k_json["annotations"][1]) | {"id": 101, "keypoints": [0] * 51, "num_keypoints": 0}
    ap10k_json["annotations"] += [crowd, empty]
    path = write_json(tmp_path, ap10k_json)
    ds = load_coco_keypoints(path, image_root=fixtures_dir / "ap10k")
    assert len(ds) == 2
    assert [(s.what, s.reason.split(" (")[0]) for s in ds.summary.skipped] == [
        ("annotation 100", "iscrowd=1"),
        ("annotation 101", "no labelled keypoint"),
    ]
    kept = load_coco_keypoints(path, image_root=fixtures_dir / "ap10k", keep_unlabelled=True)
    assert len(kept) == 3 and not kept[2].labelled and kept.summary.unlabelled_samples == 1


def test_few_shot_draws_images_per_category(tmp_path, fixtures_dir, ap10k_json):
    # 6 image entries over the two fixture files: jaguar in images 1-4 (two animals in image 1), antelope in 5-6
    base_image = ap10k_json["images"][0]
    ap10k_json["images"] = [base_image | {"id": i} for i in range(1, 7)]
    template = ap10k_json["annotations"][0]
    images_of = [1, 1, 2, 3, 4, 5, 6]
    categories = [26, 26, 26, 26, 26, 1, 1]
    ap10k_json["annotations"] = [
        template | {"id": 10 + n, "image_id": image, "category_id": cat}
        for n, (image, cat) in enumerate(zip(images_of, categories, strict=True))
    ]
    ds = load_coco_keypoints(write_json(tmp_path, ap10k_json), image_root=fixtures_dir / "ap10k")
    assert ds.summary.num_images == 6 and ds.summary.categories == {"antelope": 2, "jaguar": 5}

    draws = {}
    for seed in range(8):
        shot = few_shot(ds, 2, seed)
        jaguar_images = {s.image_id for s in shot if s.category == "jaguar"}
        assert len(jaguar_images) == 2 and {s.image_id for s in shot if s.category == "antelope"} == {5, 6}
        # every animal of a drawn image comes along
        assert sum(s.image_id == 1 for s in shot) in (0, 2)
        draws[seed] = tuple(shot.sample_ids)
    assert few_shot(ds, 2, 3).sample_ids == list(draws[3])  # reproducible
    assert len(set(draws.values())) > 1  # and the seed matters
    three = few_shot(ds, 3, 0)
    assert "category 'antelope' has only 2 images (< 3): took all" in three.summary.notes
    with pytest.raises(ValueError, match="n_per_category must be >= 1"):
        few_shot(ds, 0, 0)


# ---- bad input: each error names the file and the annotation and says what to do ----


def test_wrong_keypoint_count(tmp_path, ap10k_json):
    ap10k_json["annotations"][0]["keypoints"] = ap10k_json["annotations"][0]["keypoints"][:-1]
    with pytest.raises(
        ValueError,
        match=r"broken.json: annotation 9284 \(image 37516\): 'keypoints' has 50 values; expected 3 x 17 = 51",
    ):
        load_coco_keypoints(write_json(tmp_path, ap10k_json))


@pytest.mark.parametrize(
    ("bbox", "message"),
    [
        ([66, float("nan"), 1092, 512], r"bbox \[66, nan, 1092, 512\] has a NaN or infinite value"),
        ([66, 192, -1092, 512], r"bbox \[66, 192, -1092, 512\] has a negative width or height.*convert"),
        ([66, None, 1092, 512], r"bbox \[66, None, 1092, 512\] must be four numbers"),
        ([66, 192, 1092], r"bbox \[66, 192, 1092\] must be \[x, y, width, height\]"),
    ],
)
def test_bad_bbox(tmp_path, fixtures_dir, ap10k_json, bbox, message):
    ap10k_json["annotations"][1]["bbox"] = bbox
    with pytest.raises(ValueError, match=r"broken.json: annotation 6 \(image 4\): " + message):
        load_coco_keypoints(write_json(tmp_path, ap10k_json), image_root=fixtures_dir / "ap10k")


def test_missing_image(tmp_path, ap10k_json):
    path = write_json(tmp_path, ap10k_json)  # no image_root: the images would be beside the json
    with pytest.raises(
        FileNotFoundError,
        match=r"annotation 9284 \(image 37516\): image .*000000037516.jpg does not exist; pass image_root",
    ):
        load_coco_keypoints(path)


def test_unreadable_image_fails_at_read_time(tmp_path, fixtures_dir, ap10k_json):
    from tardis_edge.data import read_sample_image

    (tmp_path / "000000037516.jpg").write_bytes(b"")
    (tmp_path / "000000000004.jpg").write_bytes((fixtures_dir / "ap10k/000000000004.jpg").read_bytes())
    ds = load_coco_keypoints(write_json(tmp_path, ap10k_json))
    assert read_sample_image(ds[1]).shape == (683, 1024, 3)
    with pytest.raises(ValueError, match=r"image .*000000037516.jpg \(0 bytes\) cannot be decoded"):
        read_sample_image(ds[0])


def test_empty_dataset(tmp_path, ap10k_json):
    ap10k_json["annotations"] = []
    with pytest.raises(ValueError, match=r"empty dataset: .*broken.json has no usable keypoint annotation"):
        load_coco_keypoints(write_json(tmp_path, ap10k_json))


def test_unknown_image_and_category_and_visibility(tmp_path, ap10k_json):
    data = copy.deepcopy(ap10k_json)
    data["annotations"][0]["image_id"] = 5
    with pytest.raises(ValueError, match=r"annotation 9284 \(image 5\): image_id 5 is not in 'images'"):
        load_coco_keypoints(write_json(tmp_path, data))
    data = copy.deepcopy(ap10k_json)
    data["annotations"][0]["category_id"] = 99
    with pytest.raises(ValueError, match=r"annotation 9284 .*category_id 99 is not a keypoint category"):
        load_coco_keypoints(write_json(tmp_path, data))
    data = copy.deepcopy(ap10k_json)
    data["annotations"][0]["keypoints"][2] = 3
    with pytest.raises(ValueError, match=r"annotation 9284 .*keypoint 0 has visibility 3.0; COCO uses 0, 1 or 2"):
        load_coco_keypoints(write_json(tmp_path, data))


def test_categories_with_different_keypoints(tmp_path, ap10k_json):
    jaguar = next(c for c in ap10k_json["categories"] if c["id"] == 26)
    jaguar["keypoints"] = jaguar["keypoints"][::-1]
    with pytest.raises(ValueError, match=r"categories 'antelope' and 'jaguar' have different keypoint lists"):
        load_coco_keypoints(write_json(tmp_path, ap10k_json))


def test_zero_based_skeleton_is_detected(ap10k_json, fixtures_dir, tmp_path):
    """mmpose's own ATRW and AK files number the skeleton from 0: read as such (it only draws lines), with a note."""
    expected = load_coco_keypoints(fixtures_dir / AP10K).schema.skeleton
    for category in ap10k_json["categories"]:
        category["skeleton"] = [[a - 1, b - 1] for a, b in category["skeleton"]]
    ds = load_coco_keypoints(write_json(tmp_path, ap10k_json), image_root=fixtures_dir / "ap10k")
    assert ds.schema.skeleton == expected
    assert any("skeleton numbered from 0" in note for note in ds.summary.notes)
    assert "flip pairs (left_eye, right_eye)" in str(ds.summary)
    for category in ap10k_json["categories"]:
        category["skeleton"] = [[0, 17]]  # fits neither 1..17 nor 0..16
    with pytest.raises(ValueError, match=r"skeleton indices 0\.\.17 fit neither 1\.\.17 \(COCO\) nor 0\.\.16"):
        load_coco_keypoints(write_json(tmp_path, ap10k_json), image_root=fixtures_dir / "ap10k")
