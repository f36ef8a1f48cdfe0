"""Heatmap targets (stage 2 training) and heatmap flipping for the flip test.

Encoding follows the MSRA/mmpose convention that ``../shared/golden/heatmap_codec.npz`` pins: an
unnormalised Gaussian of ``sigma`` heatmap pixels centred on the keypoint rounded to the nearest heatmap
pixel, drawn in a ``(6 sigma + 1)`` window, peaks of one map merged by maximum. Coordinates follow
``tardis_edge.geometry``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tardis_edge.geometry import flip_indices_from_pairs, flip_shift_px  # noqa: F401  (re-exported)


def encode_gaussian_targets(
    keypoints_xy: np.ndarray,
    visible: np.ndarray,
    heatmap_wh: tuple[int, int],
    stride: float,
    sigma: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian heatmap targets for one crop (or a batch of crops).

    Args:
        keypoints_xy: ``(K, 2)`` or ``(N, K, 2)`` keypoints in *input* pixels.
        visible: ``(K,)`` or ``(N, K)``; a keypoint counts as labelled when ``visible >= 0.5``.
        heatmap_wh: heatmap size ``(W, H)``.
        stride: input pixels per heatmap pixel (``tardis_edge.geometry.heatmap_stride``).
        sigma: Gaussian standard deviation in heatmap pixels.

    Returns:
        ``(heatmaps, weights)``: ``(…, K, H, W)`` float32 in [0, 1] and ``(…, K)`` float32 — 0 for unlabelled
        keypoints and for keypoints whose whole window lies outside the heatmap, else ``visible``.
    """
    kps = np.asarray(keypoints_xy, dtype=np.float32)
    vis = np.asarray(visible, dtype=np.float32)
    if kps.ndim == 3:
        pairs = [encode_gaussian_targets(k, v, heatmap_wh, stride, sigma) for k, v in zip(kps, vis, strict=True)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    if kps.ndim != 2 or kps.shape[1] != 2 or vis.shape != kps.shape[:1]:
        raise ValueError(f"keypoints must be (K, 2) with visible (K,); got {kps.shape} and {vis.shape}")
    w, h = heatmap_wh
    num_k = kps.shape[0]
    heatmaps = np.zeros((num_k, h, w), dtype=np.float32)
    weights = vis.copy()
    radius = sigma * 3
    size = 2 * radius + 1
    grid = np.arange(0, size, 1, dtype=np.float32)
    center = size // 2
    gaussian = np.exp(-((grid[None, :] - center) ** 2 + (grid[:, None] - center) ** 2) / (2 * sigma**2))
    for k in range(num_k):
        if vis[k] < 0.5 or not np.isfinite(kps[k]).all():
            weights[k] = 0.0
            continue
        # int() truncates toward zero, as the reference does (so -0.3 rounds to 0, not -1)
        mu = (kps[k] / stride + 0.5).astype(np.int64)
        left, top = (mu - radius).astype(np.int64)
        right, bottom = (mu + radius + 1).astype(np.int64)
        if left >= w or top >= h or right < 0 or bottom < 0:
            weights[k] = 0.0
            continue
        gx1, gx2 = max(0, -left), min(w, right) - left
        gy1, gy2 = max(0, -top), min(h, bottom) - top
        hx1, hx2 = max(0, left), min(w, right)
        hy1, hy2 = max(0, top), min(h, bottom)
        region = heatmaps[k, hy1:hy2, hx1:hx2]
        np.maximum(region, gaussian[gy1:gy2, gx1:gx2], out=region)
    return heatmaps, weights.astype(np.float32)


def flip_heatmaps(heatmaps, flip_indices: Sequence[int], shift_px: float = 0.0):
    """Undo a horizontal input flip on predicted heatmaps: mirror W, swap left/right channels, then shift.

    With the convention of ``tardis_edge.geometry`` a flipped input maps heatmap column ``u`` to
    ``(W_in - 1) / stride - u``, while mirroring the array maps it to ``(W - 1) - u``; the difference
    (``flip_shift_px``, 0.75 px for 256 -> 64) is applied as a sub-pixel shift to the right by linear
    interpolation, so the flipped and unflipped maps line up exactly before they are averaged.

    Args:
        heatmaps: ``(N, K, H, W)`` torch tensor predicted on the flipped input.
        flip_indices: ``(K,)`` permutation from ``flip_indices_from_pairs``.
        shift_px: shift to the right in heatmap pixels (>= 0).
    """
    import torch

    out = torch.flip(heatmaps, dims=[-1])[:, list(flip_indices)]
    if shift_px < 0:
        raise ValueError(f"shift_px must be >= 0, got {shift_px}")
    whole = int(shift_px)
    frac = float(shift_px - whole)
    if whole:
        out = torch.cat([out[..., :1].expand(*out.shape[:-1], whole), out[..., :-whole]], dim=-1)
    if frac > 0:
        prev = torch.cat([out[..., :1], out[..., :-1]], dim=-1)
        out = (1 - frac) * out + frac * prev
    return out
