"""The coordinate conventions: crop affines, inverses, flips and the OpenCV warp agree with each other."""

import numpy as np
import pytest

from tardis_edge import geometry as g


def test_box_edges_map_to_input_edges():
    box = g.box_from_xywh([100, 50, 80, 40], input_wh=(256, 256), padding=1.0)
    # aspect corrected to square: 80 x 80 around the centre (140, 70)
    assert (box.cx, box.cy, box.width, box.height) == (140.0, 70.0, 80.0, 80.0)
    m = g.crop_affine(box, (256, 256))
    # the box's outer edges (pixel-centre convention: -0.5 / W-0.5 of the input) and its centre
    edges = g.apply_affine(np.array([[100.0, 30.0], [180.0, 110.0], [140.0, 70.0]]), m)
    np.testing.assert_allclose(edges, [[-0.5, -0.5], [255.5, 255.5], [127.5, 127.5]], atol=1e-9)


def test_padding_and_aspect():
    box = g.box_from_xywh([0, 0, 100, 20], input_wh=(192, 256), padding=1.25)
    assert box.width / box.height == pytest.approx(192 / 256)
    assert box.width == pytest.approx(125.0)


def test_inverse_is_exact_and_flip_is_an_involution():
    rng = np.random.default_rng(0)
    box = g.CropBox(320.0, 240.0, 150.0, 150.0)
    m = g.crop_affine(box, (256, 256), rotation_deg=23.0, scale=1.2, shift_xy=(0.05, -0.1))
    pts = rng.uniform(0, 640, size=(50, 2))
    back = g.apply_affine(g.apply_affine(pts, m), g.invert_affine(m))
    np.testing.assert_allclose(back, pts, atol=1e-9)
    mf = g.crop_affine(box, (256, 256), flip=True)
    m0 = g.crop_affine(box, (256, 256))
    x0 = g.apply_affine(pts, m0)
    xf = g.apply_affine(pts, mf)
    np.testing.assert_allclose(xf[:, 0], 255.0 - x0[:, 0], atol=1e-9)
    np.testing.assert_allclose(xf[:, 1], x0[:, 1], atol=1e-9)


def test_rotation_is_about_the_box_centre():
    box = g.CropBox(50.0, 60.0, 40.0, 40.0)
    m = g.crop_affine(box, (256, 256), rotation_deg=90.0)
    np.testing.assert_allclose(g.apply_affine(np.array([50.0, 60.0]), m), [127.5, 127.5], atol=1e-9)
    # a point to the right of the centre ends up above it (counter-clockwise on screen, y down)
    p = g.apply_affine(np.array([60.0, 60.0]), m)
    np.testing.assert_allclose(p, [127.5, 127.5 - 64.0], atol=1e-9)


def test_opencv_warp_follows_the_affine():
    """A bright pixel at a known image position lands where the affine says (pixel-centre convention)."""
    img = np.zeros((120, 160, 3), np.uint8)
    img[37, 91] = 255  # (x=91, y=37)
    box = g.CropBox(80.0, 60.0, 64.0, 64.0)
    m = g.crop_affine(box, (128, 128))  # 2x upscale: the dot spreads bilinearly around its mapped centre
    crop = g.warp_image(img, m, (128, 128)).astype(np.float64)[..., 0]
    ys, xs = np.nonzero(crop)
    w = crop[ys, xs]
    centroid = np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])
    np.testing.assert_allclose(centroid, g.apply_affine(np.array([91.0, 37.0]), m), atol=1e-6)


def test_heatmap_to_image_affine_round_trip():
    box = g.CropBox(300.0, 200.0, 120.0, 120.0)
    m = g.crop_affine(box, (256, 256))
    hm_to_img = g.heatmap_to_image_affine(m, stride=4.0)
    img_pts = np.array([[280.0, 190.0], [330.5, 222.25]])
    hm_pts = g.apply_affine(img_pts, m) / 4.0
    np.testing.assert_allclose(g.apply_affine(hm_pts, hm_to_img), img_pts, atol=1e-9)


def test_bad_boxes_are_refused():
    with pytest.raises(ValueError, match="finite with non-negative"):
        g.box_from_xywh([0, 0, float("nan"), 10], (256, 256))
    with pytest.raises(ValueError, match="finite with non-negative"):
        g.box_from_xywh([0, 0, -3, 10], (256, 256))
    with pytest.raises(ValueError, match="no labelled keypoint"):
        g.box_from_keypoints(np.full((4, 2), np.nan), None, (256, 256))
    with pytest.raises(ValueError, match="multiple of the heatmap size"):
        g.heatmap_stride((250, 256), (64, 64))


def test_feature_grids_are_cell_centred_and_tile_the_crop():
    """Teacher token j covers crop pixels 14j..14j+13 and sits at their centre; 64 tokens tile an 896 px crop."""
    teacher = g.feature_cell_to_pixel(14)
    assert g.apply_affine(np.array([[0.0, 63.0]]), teacher).tolist() == [[6.5, 63 * 14 + 6.5]]
    assert g.teacher_grid(896, 14) == 64
    with pytest.raises(ValueError, match="teacher resolution 900 is not a multiple of the patch size 14; use e.g. 896"):
        g.teacher_grid(900, 14)
