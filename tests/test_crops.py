"""Top-down crops: the item contract, targets that decode back to the labels, flips that swap left/right,
augmented keypoints that stay on the image content, and the config/box errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tardis_edge import geometry
from tardis_edge.codec import encode_gaussian_targets, flip_indices_from_pairs
from tardis_edge.data import KeypointSchema, Sample, load_coco_keypoints, load_dlc_project, read_image_rgb
from tardis_edge.data.crops import CropConfig, TopDownDataset, sample_box
from tardis_edge.decode import decode_heatmaps, keypoints_to_image


@pytest.fixture(scope="module")
def ap10k(fixtures_dir: Path):
    return load_coco_keypoints(fixtures_dir / "ap10k/test_ap10k.json")


@pytest.fixture(scope="module")
def openfield_head(openfield_subset_dir: Path):
    return load_dlc_project(openfield_subset_dir, prefer="csv").subset(range(4))


SPOT_SCHEMA = KeypointSchema(names=("left_spot", "right_spot", "middle"), flip_pairs=((0, 1),))
SPOTS_XY = np.array([[150.0, 140.0], [260.0, 170.0], [205.0, 120.0]], dtype=np.float32)


@pytest.fixture(scope="module")
def spots_sample(tmp_path_factory) -> Sample:
    """A 400x300 black image with a pure red, green and blue Gaussian spot (sigma 3 px) at SPOTS_XY."""
    import cv2

    yy, xx = np.mgrid[0:300, 0:400].astype(np.float64)
    rgb = np.zeros((300, 400, 3), dtype=np.float64)
    for channel, (x, y) in enumerate(SPOTS_XY):
        rgb[..., channel] = 255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0**2))
    path = tmp_path_factory.mktemp("spots") / "spots.png"
    cv2.imwrite(str(path), cv2.cvtColor(np.round(rgb).astype(np.uint8), cv2.COLOR_RGB2BGR))
    return Sample(
        "spots",
        path,
        SPOTS_XY.copy(),
        np.full(3, 2, np.float32),
        bbox_xywh=np.array([100, 60, 220, 170], np.float32),
        image_wh=(400, 300),
    )


def test_item_contract(ap10k):
    ds = TopDownDataset(ap10k)
    item = ds[0]
    sample = ap10k[0]
    assert item["image"].shape == (3, 256, 256) and item["image"].dtype == torch.float32
    assert 0 <= item["image"].min() and item["image"].max() <= 255 and item["image"].max() > 1  # not normalised
    assert item["heatmaps"].shape == (17, 64, 64) and item["weights"].shape == (17,)
    assert item["keypoints_input"].shape == (17, 2) and item["crop_affine"].shape == (2, 3)
    assert item["index"] == 0 and item["flipped"] is False
    m = geometry.crop_affine(geometry.box_from_xywh(sample.bbox_xywh, (256, 256), 1.25), (256, 256))
    np.testing.assert_allclose(item["crop_affine"].numpy(), m, rtol=1e-6, atol=1e-4)
    labelled = sample.visible > 0
    expected = geometry.apply_affine(sample.keypoints_xy[labelled], m)
    np.testing.assert_allclose(item["keypoints_input"].numpy()[labelled], expected, atol=1e-3)
    assert (item["keypoints_input"].numpy()[~labelled] == 0).all() and (item["weights"].numpy()[~labelled] == 0).all()
    heatmaps, weights = encode_gaussian_targets(item["keypoints_input"].numpy(), sample.visible, (64, 64), 4.0, 2.0)
    np.testing.assert_array_equal(item["heatmaps"].numpy(), heatmaps)
    np.testing.assert_array_equal(item["weights"].numpy(), weights)
    round_trip = geometry.compose(item["crop_affine_inv"].numpy(), item["crop_affine"].numpy())
    np.testing.assert_allclose(round_trip, [[1, 0, 0], [0, 1, 0]], atol=1e-5)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["image"].shape == (2, 3, 256, 256) and batch["heatmap_to_image"].shape == (2, 2, 3)


@pytest.mark.parametrize("config", [CropConfig(), CropConfig.training()], ids=["eval", "train"])
def test_targets_decode_back_to_the_labels_in_image_pixels(ap10k, openfield_head, config):
    """Encode -> argmax decode -> heatmap_to_image lands within the argmax quantisation of the label: half a heatmap
    pixel per axis (stride / 2 input px, so a disc of stride / sqrt(2)), times the image pixels per input pixel."""
    for data in (ap10k, openfield_head):
        ds = TopDownDataset(data, config, seed=5)
        for epoch in range(3):
            ds.set_epoch(epoch)
            for i in range(len(ds)):
                item = ds[i]
                keypoints_hm, scores = decode_heatmaps(item["heatmaps"][None], "argmax")
                image_xy = keypoints_to_image(keypoints_hm, item["heatmap_to_image"][None])[0].numpy()  # (K, 2)
                centre = np.floor(item["keypoints_input"].numpy() / 4.0 + 0.5)  # the encoder's rounded centre
                inside = (item["weights"].numpy() > 0) & ((centre >= 0) & (centre < 64)).all(axis=1)
                assert inside.sum() >= 2
                truth = data[i].keypoints_xy
                if item["flipped"]:
                    truth = truth[flip_indices_from_pairs(len(truth), data.schema.flip_pairs)]
                pixels_per_input = math.sqrt(abs(np.linalg.det(item["crop_affine_inv"].numpy()[:, :2])))
                bound = 4.0 / math.sqrt(2) * pixels_per_input + 1e-3
                error = np.linalg.norm(image_xy[inside] - truth[inside], axis=1)
                assert error.max() <= bound, (data.summary.source, i, epoch, error.max(), bound)
                assert (scores[0, torch.from_numpy(inside)] == 1).all()


def test_flip_mirrors_the_crop_and_swaps_left_right(ap10k):
    plain = TopDownDataset(ap10k, CropConfig())[0]
    flipped = TopDownDataset(ap10k, CropConfig(flip_prob=1.0))[0]
    assert flipped["flipped"] is True
    # the flipped crop samples the mirrored positions (up to OpenCV's 1/32 px fixed-point interpolation)
    difference = (flipped["image"] - plain["image"].flip(-1)).abs()
    assert difference.max() <= 1
    perm = flip_indices_from_pairs(17, ap10k.schema.flip_pairs)
    assert perm[0] == 1 and perm[5] == 8  # left_eye <- right_eye, left_shoulder <- right_shoulder
    visible = plain["visible"].numpy()[perm] > 0
    np.testing.assert_array_equal(flipped["visible"].numpy(), plain["visible"].numpy()[perm])
    mirrored = plain["keypoints_input"].numpy()[perm]
    mirrored[:, 0] = 255 - mirrored[:, 0]
    np.testing.assert_allclose(flipped["keypoints_input"].numpy()[visible], mirrored[visible], atol=1e-3)
    # mapping the flipped crop's keypoints back to the image lands on the labels of the other side
    back = geometry.apply_affine(flipped["keypoints_input"].numpy(), flipped["crop_affine_inv"].numpy())
    np.testing.assert_allclose(back[visible], ap10k[0].keypoints_xy[perm][visible], atol=1e-2)
    np.testing.assert_allclose(back[5], ap10k[0].keypoints_xy[8], atol=1e-2)  # left_shoulder <- right_shoulder


def test_augmented_keypoints_stay_on_the_image_content(spots_sample):
    """Rotation, scale, shift and flip move the red/green/blue spots and the keypoints alike: the centroid of
    each spot's colour channel in the crop is where its keypoint went (sub-pixel), and channel 0 is red."""
    ds = TopDownDataset([spots_sample], CropConfig.training(rotation_prob=1.0), SPOT_SCHEMA, seed=11)
    perm = flip_indices_from_pairs(3, SPOT_SCHEMA.flip_pairs)
    yy, xx = np.mgrid[0:256, 0:256]
    seen = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        item = ds[0]
        image = item["image"].numpy()  # (3, 256, 256)
        seen.add((item["flipped"], round(float(item["crop_affine"][0, 0]), 3)))
        for k in range(3):
            channel = perm[k] if item["flipped"] else k  # the spot colour keypoint k came from
            mass = np.where(image[channel] > 20, image[channel], 0.0)
            centroid = np.array([(mass * xx).sum(), (mass * yy).sum()]) / mass.sum()
            np.testing.assert_allclose(centroid, item["keypoints_input"][k].numpy(), atol=0.2)
    assert {flipped for flipped, _ in seen} == {False, True} and len(seen) == 12  # the draws did vary


def test_augmentation_is_reproducible_per_seed_epoch_index(ap10k):
    ds = TopDownDataset(ap10k, CropConfig.training(), seed=3)
    first = ds[1]["crop_affine"]
    assert torch.equal(TopDownDataset(ap10k, CropConfig.training(), seed=3)[1]["crop_affine"], first)
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["crop_affine"], first)
    assert not torch.equal(TopDownDataset(ap10k, CropConfig.training(), seed=4)[1]["crop_affine"], first)


def test_box_sources(openfield_head, spots_sample):
    config = CropConfig()
    sample = openfield_head[0]
    assert sample_box(sample, config) == geometry.box_from_keypoints(sample.keypoints_xy, sample.visible, (256, 256))
    assert sample_box(spots_sample, config) == geometry.box_from_xywh(spots_sample.bbox_xywh, (256, 256))
    assert sample_box(spots_sample, CropConfig(box_source="keypoints")) == geometry.box_from_keypoints(
        SPOTS_XY, None, (256, 256)
    )
    whole = TopDownDataset(openfield_head, CropConfig(box_source="image"))[0]  # 640x480 frame, size from the image
    corners = geometry.apply_affine(np.array([[-0.5, -0.5], [639.5, 479.5]]), whole["crop_affine"].numpy())
    np.testing.assert_allclose(corners, [[-0.5, 31.5], [255.5, 223.5]], atol=1e-4)  # letterboxed, aspect kept
    given = TopDownDataset(openfield_head.subset([0]), boxes_xywh=np.array([[10.0, 20.0, 100.0, 50.0]]))[0]
    box = geometry.box_from_xywh([10, 20, 100, 50], (256, 256))
    np.testing.assert_allclose(given["crop_affine"].numpy(), geometry.crop_affine(box, (256, 256)), atol=1e-4)


def test_sample_without_box_or_labels_is_refused(openfield_head):
    unlabelled = Sample("frame", openfield_head[0].image_path, np.full((4, 2), np.nan, np.float32), np.zeros(4))
    with pytest.raises(ValueError, match=r"sample frame has no bbox and no labelled keypoint.*box_source='image'"):
        TopDownDataset([unlabelled], schema=openfield_head.schema)
    with pytest.raises(ValueError, match=r"sample frame has no bbox; use box_source='keypoints'"):
        sample_box(unlabelled, CropConfig(box_source="bbox"))
    with pytest.raises(ValueError, match=r"boxes_xywh must be \(4, 4\)"):
        TopDownDataset(openfield_head, boxes_xywh=np.zeros((3, 4)))


def test_crop_config_checks():
    assert CropConfig.from_dict({"input_wh": [192, 256], "heatmap_wh": [48, 64], "sigma": 3}).sigma == 3.0
    assert CropConfig.training().flip_prob == 0.5 and not CropConfig().augments and CropConfig.training().augments
    with pytest.raises(ValueError, match=r"unknown CropConfig keys \['flip'\]; known keys: .*'flip_prob'"):
        CropConfig.from_dict({"flip": True})
    with pytest.raises(ValueError, match=r"CropConfig.flip_prob must be float, got 'yes'"):
        CropConfig.from_dict({"flip_prob": "yes"})
    with pytest.raises(ValueError, match=r"CropConfig.input_wh must be int, got \[256.5, 256\]"):
        CropConfig.from_dict({"input_wh": [256.5, 256]})
    with pytest.raises(ValueError, match=r"heatmap size \(64, 64\) does not divide input size \(250, 256\)"):
        CropConfig(input_wh=(250, 256))
    with pytest.raises(ValueError, match=r"flip_prob must be in \[0, 1\], got 1.5"):
        CropConfig(flip_prob=1.5)
    with pytest.raises(ValueError, match=r"scale_range must be \(low, high\) with 0 < low <= high"):
        CropConfig(scale_range=(1.2, 0.8))


def test_read_image_rgb(spots_sample, tmp_path):
    import cv2

    image = read_image_rgb(spots_sample.image_path)
    assert image.shape == (300, 400, 3) and image.dtype == np.uint8
    assert tuple(image[140, 150]) == (255, 0, 0) and tuple(image[170, 260]) == (0, 255, 0)  # red then green: RGB
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((5, 7), 9, np.uint8))
    assert read_image_rgb(grey).shape == (5, 7, 3) and (read_image_rgb(grey) == 9).all()
    with pytest.raises(FileNotFoundError, match=r"image .*absent.png does not exist"):
        read_image_rgb(tmp_path / "absent.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"image .*text.png \(12 bytes\) cannot be decoded by OpenCV"):
        read_image_rgb(tmp_path / "text.png")


def test_preview_draws_keypoints_where_the_crops_put_them(ap10k, tmp_path):
    import cv2

    from tardis_edge.data import preview

    grid = preview.render_preview(ap10k, n=2)
    item = TopDownDataset(ap10k)[0]
    points = item["keypoints_input"].numpy()
    visible = np.flatnonzero(item["visible"].numpy() > 0)
    colors = preview.keypoint_colors(17)
    checked = 0
    for k in visible:
        others = [j for j in visible if j != k]
        if np.linalg.norm(points[others] - points[k], axis=1).min() > 9:  # its dot is not covered by another
            x, y = (int(round(float(v))) for v in points[k])
            assert tuple(grid[preview.TITLE_HEIGHT + y, x]) == colors[k], ap10k.schema.names[k]
            checked += 1
    assert checked >= 5

    out = tmp_path / "sub" / "preview.png"
    assert preview.main([str(ap10k.root), "--out", str(out), "--n", "2"]) == 0
    written = cv2.imread(str(out))
    assert written.shape == grid.shape
    np.testing.assert_array_equal(written[..., ::-1], grid)
