"""Reference decoding and target encoding against ../shared/golden/heatmap_codec.npz."""

import numpy as np
import pytest
import torch

from tardis_edge.codec import encode_gaussian_targets, flip_heatmaps, flip_indices_from_pairs, flip_shift_px
from tardis_edge.decode import decode_heatmaps, soft_argmax

STRIDE = 4.0  # golden: 256x256 input, 64x64 heatmaps


@pytest.fixture(scope="module")
def golden(golden_dir):
    return dict(np.load(golden_dir / "heatmap_codec.npz"))


def test_targets_match_golden(golden):
    heatmaps, weights = encode_gaussian_targets(
        golden["keypoints_input"], golden["keypoints_visible"], (64, 64), STRIDE, sigma=2.0
    )
    assert np.abs(heatmaps - golden["target_heatmaps"]).max() <= 1e-6
    assert np.abs(weights - golden["target_weights"]).max() <= 1e-6


@pytest.mark.parametrize("method,scale", [("argmax", 1.0), ("msra", STRIDE), ("dark", STRIDE)])
def test_decode_matches_golden(golden, method, scale):
    keypoints, scores = decode_heatmaps(torch.from_numpy(golden["heatmaps"]), method)
    ref_kps, ref_scores = golden[f"{method}_keypoints"], golden[f"{method}_scores"]
    valid = ref_scores > 0
    assert (~valid).any(), "the golden set is expected to contain invalid rows"
    np.testing.assert_array_equal(scores.numpy() > 0, valid)
    np.testing.assert_allclose(scores.numpy(), ref_scores, atol=1e-6)
    err = np.abs(keypoints.numpy() * scale - ref_kps)[valid]
    assert err.max() <= 1e-4 * scale, f"{method}: max error {err.max() / scale:.2e} heatmap px"
    # invalid rows are reported at (-1, -1)
    np.testing.assert_array_equal(keypoints.numpy()[~valid], -1.0)


def test_soft_argmax_matches_golden(golden):
    beta = float(golden["softargmax_beta"])
    xy = soft_argmax(torch.from_numpy(golden["heatmaps"]), beta)
    assert np.abs(xy.numpy() - golden["softargmax_heatmap_xy"]).max() <= 1e-4


def test_soft_argmax_gradcheck():
    h = torch.randn(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: soft_argmax(t, 3.0), (h,))


def test_ties_resolve_to_first_row_major_maximum():
    h = torch.zeros(1, 1, 8, 8)
    h[0, 0, 5, 2] = 1.0
    h[0, 0, 3, 6] = 1.0  # earlier in row-major order
    h[0, 0, 5, 7] = 1.0
    kps, scores = decode_heatmaps(h, "argmax")
    assert kps[0, 0].tolist() == [6.0, 3.0] and scores[0, 0] == 1.0


def test_unknown_method_and_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="unknown decode method 'gauss'"):
        decode_heatmaps(torch.zeros(1, 1, 4, 4), "gauss")
    with pytest.raises(ValueError, match=r"\(N, K, H, W\)"):
        decode_heatmaps(torch.zeros(4, 4), "argmax")
    with pytest.raises(ValueError, match="beta must be a positive"):
        soft_argmax(torch.zeros(1, 1, 4, 4), 0.0)


def test_round_trip_keypoints_targets_decode():
    """keypoints -> targets -> decode -> keypoints.

    Bound: the encoder centres each Gaussian on the nearest heatmap pixel, int(x / s + 0.5), so the peak is off by
    at most half a heatmap pixel per axis; the Gaussian is symmetric about that pixel, so msra takes no quarter
    step. Hence |decoded * s - x| <= s / 2 per axis, i.e. 2 input pixels at stride 4 (exactly: decoded == rounded).
    """
    rng = np.random.default_rng(1)
    kps = rng.uniform(0, 253.9, size=(16, 17, 2))  # centre stays inside: int(x/4 + 0.5) <= 63.astype(np.float32)
    vis = np.ones((16, 17), np.float32)
    targets, weights = encode_gaussian_targets(kps, vis, (64, 64), STRIDE, sigma=2.0)
    decoded, scores = decode_heatmaps(torch.from_numpy(targets), "msra")
    assert (scores.numpy() == 1.0).all() and (weights == 1.0).all()
    err = np.abs(decoded.numpy() * STRIDE - kps)
    assert err.max() <= STRIDE / 2 + 1e-4
    np.testing.assert_array_equal(decoded.numpy(), np.floor(kps / STRIDE + 0.5))


def test_dark_recovers_sub_pixel_centres():
    """DARK on an exact sub-pixel Gaussian (sigma 2) recovers the centre far better than the integer grid."""
    rng = np.random.default_rng(2)
    centres = rng.uniform(8, 56, size=(1, 12, 2))
    ys, xs = np.mgrid[0:64, 0:64]
    maps = np.exp(-((xs - centres[..., 0, None, None]) ** 2 + (ys - centres[..., 1, None, None]) ** 2) / 8.0)
    decoded, _ = decode_heatmaps(torch.from_numpy(maps.astype(np.float32)), "dark")
    err = np.abs(decoded.numpy() - centres)
    assert err.max() < 0.1, err.max()  # argmax alone is off by up to 0.5


def test_flip_heatmaps_undoes_an_input_flip():
    """Heatmaps of a mirrored input, flipped back, peak where the unmirrored keypoints are (exact sub-pixel shift)."""
    kps = np.array([[[100.0, 80.0], [140.0, 90.0], [40.0, 200.0]]], np.float32)  # (1, 3, 2) input pixels
    vis = np.ones((1, 3), np.float32)
    perm = flip_indices_from_pairs(3, [(0, 1)])
    mirrored = kps[:, perm].copy()
    mirrored[..., 0] = 255.0 - mirrored[..., 0]  # geometry: x' = (W_in - 1) - x
    ys, xs = np.mgrid[0:64, 0:64]

    def render(points):  # exact sub-pixel Gaussians so the check is not limited by the encoder's rounding
        c = points / STRIDE
        return np.exp(-((xs - c[..., 0, None, None]) ** 2 + (ys - c[..., 1, None, None]) ** 2) / 8.0)

    back = flip_heatmaps(torch.from_numpy(render(mirrored)), perm, shift_px=flip_shift_px(256, 64))
    decoded, _ = decode_heatmaps(back.float(), "dark")
    np.testing.assert_allclose(decoded.numpy() * STRIDE, kps, atol=0.25)
    assert flip_shift_px(256, 64) == pytest.approx(0.75)
    _ = vis
