"""The NumPy decode (tardis_edge.decode_np, the runtime's and the two-pass predictor's) against
../shared/golden/heatmap_codec.npz and the torch reference (tardis_edge.decode / codec) it mirrors."""

import numpy as np
import pytest
import torch

from tardis_edge import decode_np
from tardis_edge.codec import flip_heatmaps as torch_flip_heatmaps
from tardis_edge.codec import flip_indices_from_pairs, flip_shift_px
from tardis_edge.decode import decode_heatmaps as torch_decode
from tardis_edge.decode import soft_argmax as torch_soft_argmax

STRIDE = 4.0  # golden: 256x256 input, 64x64 heatmaps


@pytest.fixture(scope="module")
def golden(golden_dir):
    return dict(np.load(golden_dir / "heatmap_codec.npz"))


@pytest.mark.parametrize("method,scale", [("argmax", 1.0), ("msra", STRIDE), ("dark", STRIDE)])
def test_numpy_decode_matches_golden(golden, method, scale):
    keypoints, scores = decode_np.decode_heatmaps(golden["heatmaps"], method)
    ref_kps, ref_scores = golden[f"{method}_keypoints"], golden[f"{method}_scores"]
    valid = ref_scores > 0
    assert (~valid).any(), "the golden set is expected to contain invalid rows"
    assert keypoints.dtype == np.float32 and scores.dtype == np.float32
    np.testing.assert_array_equal(scores > 0, valid)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-6)
    # Same tolerance as the torch reference's golden test: 1e-4 heatmap pixels.
    err = np.abs(keypoints * scale - ref_kps)[valid]
    assert err.max() <= 1e-4 * scale, f"{method}: max error {err.max() / scale:.2e} heatmap px"
    np.testing.assert_array_equal(keypoints[~valid], -1.0)


def test_numpy_soft_argmax_matches_golden(golden):
    beta = float(golden["softargmax_beta"])
    xy = decode_np.soft_argmax(golden["heatmaps"], beta)
    assert np.abs(xy - golden["softargmax_heatmap_xy"]).max() <= 1e-4


def _awkward_heatmaps(seed: int) -> np.ndarray:
    """Random maps with what decoders get wrong: ties, all-negative (invalid) maps, peaks on every border, odd sizes."""
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(3, 5, 13, 11)).astype(np.float32)
    h[0, 0] = -np.abs(h[0, 0]) - 0.1  # invalid row: max <= 0
    h[0, 1] = 0.0  # invalid row, all tied at 0
    h[0, 2] = 0.0
    h[0, 2, 4, 7] = h[0, 2, 9, 2] = 3.0  # tie: first in row-major order wins
    for k, (y, x) in enumerate([(0, 0), (12, 10), (0, 5), (6, 10), (1, 1)]):
        h[1, k, y, x] = 10.0  # peaks on borders and next to them
    return h


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("method", ["argmax", "msra", "dark"])
def test_numpy_decode_equals_torch_reference(method, seed):
    h = _awkward_heatmaps(seed)
    kps, scores = decode_np.decode_heatmaps(h, method)
    ref_kps, ref_scores = torch_decode(torch.from_numpy(h), method)
    np.testing.assert_array_equal(scores, ref_scores.numpy())
    if method == "dark":  # float32 blur sums in another order: agreement to 1e-4 heatmap px
        np.testing.assert_allclose(kps, ref_kps.numpy(), atol=1e-4)
    else:  # integer peaks and quarter steps are exact
        np.testing.assert_array_equal(kps, ref_kps.numpy())


def test_numpy_soft_argmax_and_softargmax_method_equal_torch():
    h = _awkward_heatmaps(3)
    np.testing.assert_allclose(decode_np.soft_argmax(h, 7.5), torch_soft_argmax(torch.from_numpy(h), 7.5), atol=2e-5)
    kps, scores = decode_np.decode_heatmaps(h, "softargmax", softargmax_beta=7.5)
    ref_kps, ref_scores = torch_decode(torch.from_numpy(h), "softargmax", softargmax_beta=7.5)
    np.testing.assert_allclose(kps, ref_kps.numpy(), atol=2e-5)
    np.testing.assert_array_equal(scores, ref_scores.numpy())
    # one rule for invalid rows whatever the method: score <= 0 sits at (-1, -1), the soft-argmax included
    invalid = scores <= 0
    assert invalid.sum() >= 2
    np.testing.assert_array_equal(kps[invalid], -1.0)
    np.testing.assert_allclose(kps[~invalid], torch_soft_argmax(torch.from_numpy(h), 7.5).numpy()[~invalid], atol=2e-5)


@pytest.mark.parametrize("input_w,heatmap_w", [(256, 64), (192, 48), (64, 16), (250, 125)])
def test_flip_heatmaps_equals_codec(input_w, heatmap_w):
    rng = np.random.default_rng(input_w)
    h = rng.normal(size=(2, 5, 7, heatmap_w)).astype(np.float32)
    perm = flip_indices_from_pairs(5, [(0, 1), (3, 4)])
    assert decode_np.flip_indices_from_pairs(5, [(0, 1), (3, 4)]) == perm
    shift = flip_shift_px(input_w, heatmap_w)
    assert decode_np.flip_shift_px(input_w, heatmap_w) == shift
    ref = torch_flip_heatmaps(torch.from_numpy(h), perm, shift_px=shift).numpy()
    np.testing.assert_allclose(decode_np.flip_heatmaps(h, perm, shift), ref, atol=1e-6)


def test_bad_inputs_are_refused_with_clear_messages():
    with pytest.raises(ValueError, match="unknown decode method 'gauss'"):
        decode_np.decode_heatmaps(np.zeros((1, 1, 4, 4), np.float32), "gauss")
    with pytest.raises(ValueError, match=r"\(N, K, H, W\) array; got ndarray of shape \(4, 4\)"):
        decode_np.decode_heatmaps(np.zeros((4, 4), np.float32), "argmax")
    with pytest.raises(TypeError, match="floating point; got dtype uint8"):
        decode_np.decode_heatmaps(np.zeros((1, 1, 4, 4), np.uint8), "argmax")
    with pytest.raises(ValueError, match="needs softargmax_beta"):
        decode_np.decode_heatmaps(np.zeros((1, 1, 4, 4), np.float32), "softargmax")
    with pytest.raises(ValueError, match="beta must be a positive"):
        decode_np.soft_argmax(np.zeros((1, 1, 4, 4), np.float32), 0.0)
    with pytest.raises(ValueError, match="flip pair \\(0, 7\\) is out of range for 3 keypoints"):
        decode_np.flip_indices_from_pairs(3, [(0, 7)])
