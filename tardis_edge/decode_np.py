"""Heatmap decoding in NumPy (no torch): a line-by-line mirror of ``tardis_edge.decode``.

The two-pass predictor (``tardis_edge.predict``) decodes with it whenever a crop runner hands back heatmaps: the
edge runtime's heatmap graph (``decode="numpy"``) and every flip test, which averages heatmaps before decoding.
Conventions are the reference's: keypoints ``(x, y)`` in *heatmap pixels* (multiply by the stride for crop input
pixels), score = heatmap maximum, rows with score ``<= 0`` are reported at ``(-1, -1)`` whatever the method (the
soft-argmax included), ties go to the first maximum in row-major order, arithmetic in float32.
Tests pin every method to the torch reference and to ``../shared/golden/heatmap_codec.npz``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tardis_edge.geometry import flip_indices_from_pairs, flip_shift_px  # noqa: F401  (re-exported)

METHODS = ("argmax", "msra", "dark", "softargmax")
DARK_BLUR_KERNEL = 11


def check_heatmaps(heatmaps: np.ndarray) -> np.ndarray:
    """``heatmaps`` as a float32 ``(N, K, H, W)`` array, or a ValueError saying what was received."""
    if not isinstance(heatmaps, np.ndarray) or heatmaps.ndim != 4:
        shape = getattr(heatmaps, "shape", None)
        raise ValueError(f"heatmaps must be a (N, K, H, W) array; got {type(heatmaps).__name__} of shape {shape}")
    if not np.issubdtype(heatmaps.dtype, np.floating):
        raise TypeError(f"heatmaps must be floating point; got dtype {heatmaps.dtype}")
    return heatmaps.astype(np.float32, copy=False)


def heatmap_argmax(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer peak location and value per map.

    Returns:
        ``(keypoints (N, K, 2) float32 heatmap pixels, scores (N, K) float32)``; ``(-1, -1)`` where score <= 0.
    """
    maps = check_heatmaps(heatmaps)
    n, k, h, w = maps.shape
    flat = maps.reshape(n, k, h * w)
    index = flat.argmax(axis=-1)  # first occurrence among equal maxima, like torch.max
    scores = np.take_along_axis(flat, index[..., None], axis=-1)[..., 0]
    keypoints = np.stack([index % w, index // w], axis=-1).astype(np.float32)
    keypoints[scores <= 0] = -1.0
    return keypoints, scores


def _gather(maps: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``maps[n, k, y, x]`` for integer ``(N, K)`` index arrays, clamped inside the map."""
    _, _, h, w = maps.shape
    xc = np.clip(x, 0, w - 1)
    yc = np.clip(y, 0, h - 1)
    n_idx = np.arange(x.shape[0])[:, None]  # (N, 1)
    k_idx = np.arange(x.shape[1])[None, :]  # (1, K)
    return maps[n_idx, k_idx, yc, xc]


def _msra_refine(maps: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """Quarter-pixel step toward the higher neighbour, with the golden's border rules."""
    _, _, h, w = maps.shape
    x = keypoints[..., 0].astype(np.int64)
    y = keypoints[..., 1].astype(np.int64)
    dx = _gather(maps, x + 1, y) - _gather(maps, x - 1, y)
    dy = _gather(maps, x, y + 1) - _gather(maps, x, y - 1)
    x_ok = (x > 1) & (x < w - 1) & (y > 0) & (y < h)
    y_ok = (y > 1) & (y < h - 1) & (x > 0) & (x < w)
    dx = np.where(x_ok, dx, 0.0)
    dy = np.where(y_ok, dy, 0.0)
    return (keypoints + np.float32(0.25) * np.stack([np.sign(dx), np.sign(dy)], axis=-1)).astype(np.float32)


def gaussian_kernel_1d(size: int) -> np.ndarray:
    """OpenCV's ``getGaussianKernel(size, 0)`` for odd ``size`` > 7, as float32 (float64 sum, as the reference)."""
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2
    kernel = np.exp(-(coords**2) / (2 * sigma**2))
    return (kernel / kernel.sum()).astype(np.float32)


def dark_modulate(heatmaps: np.ndarray, blur_kernel: int = DARK_BLUR_KERNEL) -> np.ndarray:
    """DARK's modulation: zero-padded separable Gaussian blur, rescaled to the original maximum, then log."""
    maps = check_heatmaps(heatmaps)
    _, _, h, w = maps.shape
    g = gaussian_kernel_1d(blur_kernel)
    pad = blur_kernel // 2
    # Separable correlation written as shifted multiply-adds over the zero-padded map: (N, K, H, W + 2 pad) ...
    padded = np.pad(maps, ((0, 0), (0, 0), (0, 0), (pad, pad)))
    rows = sum(g[i] * padded[..., i : i + w] for i in range(blur_kernel))
    padded = np.pad(rows, ((0, 0), (0, 0), (pad, pad), (0, 0)))
    blurred = sum(g[i] * padded[..., i : i + h, :] for i in range(blur_kernel))
    orig_max = maps.max(axis=(-2, -1), keepdims=True)
    # An all-zero map gives 0/0 = NaN here, as in the reference; its keypoint is invalid (score <= 0) anyway.
    with np.errstate(divide="ignore", invalid="ignore"):
        blurred = blurred * (orig_max / blurred.max(axis=(-2, -1), keepdims=True))
        return np.log(np.maximum(blurred, np.float32(1e-10))).astype(np.float32)


def _dark_refine(maps: np.ndarray, keypoints: np.ndarray, blur_kernel: int) -> np.ndarray:
    """One Newton step on the log of the blurred heatmap (Zhang et al., DARK, CVPR 2020)."""
    _, _, h, w = maps.shape
    logm = dark_modulate(maps, blur_kernel)
    x = keypoints[..., 0].astype(np.int64)
    y = keypoints[..., 1].astype(np.int64)

    def at(dx: int, dy: int) -> np.ndarray:
        return _gather(logm, x + dx, y + dy)

    center = at(0, 0)
    gx = 0.5 * (at(1, 0) - at(-1, 0))
    gy = 0.5 * (at(0, 1) - at(0, -1))
    dxx = 0.25 * (at(2, 0) - 2 * center + at(-2, 0))
    dyy = 0.25 * (at(0, 2) - 2 * center + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = dxx * dyy - dxy * dxy
    ok = (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2) & (det != 0)
    safe_det = np.where(ok, det, np.float32(1.0))
    # offset = -H^-1 g with H^-1 = [[dyy, -dxy], [-dxy, dxx]] / det
    off_x = -(dyy * gx - dxy * gy) / safe_det
    off_y = -(-dxy * gx + dxx * gy) / safe_det
    offset = np.where(ok[..., None], np.stack([off_x, off_y], axis=-1), np.float32(0.0))
    return (keypoints + offset).astype(np.float32)


def soft_argmax(heatmaps: np.ndarray, beta: float) -> np.ndarray:
    """Expectation of pixel coordinates under ``softmax(beta * heatmap)`` over each map.

    Args:
        heatmaps: ``(N, K, H, W)`` float array.
        beta: inverse temperature (> 0).

    Returns:
        ``(N, K, 2)`` float32 ``(x, y)`` in heatmap pixels.
    """
    maps = check_heatmaps(heatmaps)
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"soft-argmax beta must be a positive finite number, got {beta!r}")
    n, k, h, w = maps.shape
    logits = maps.reshape(n, k, h * w) * np.float32(beta)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    total = weights.sum(axis=-1)
    weights = weights.reshape(n, k, h, w)
    # Centred coordinates keep the float32 sums small, as the reference does.
    cx, cy = (w - 1) / 2, (h - 1) / 2
    xs = np.arange(w, dtype=np.float32) - np.float32(cx)
    ys = np.arange(h, dtype=np.float32) - np.float32(cy)
    x = (weights.sum(axis=-2) * xs).sum(axis=-1) / total + np.float32(cx)
    y = (weights.sum(axis=-1) * ys).sum(axis=-1) / total + np.float32(cy)
    return np.stack([x, y], axis=-1).astype(np.float32)


def decode_heatmaps(
    heatmaps: np.ndarray,
    method: str = "msra",
    softargmax_beta: float | None = None,
    blur_kernel: int = DARK_BLUR_KERNEL,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode keypoints from heatmaps, as ``tardis_edge.decode.decode_heatmaps`` (and ``soft_argmax``) do.

    Args:
        heatmaps: ``(N, K, H, W)`` float array.
        method: ``argmax`` | ``msra`` | ``dark`` | ``softargmax`` (score still the heatmap maximum).
        softargmax_beta: inverse temperature, required for ``softargmax``.
        blur_kernel: DARK's Gaussian blur size (odd).

    Returns:
        ``(keypoints (N, K, 2) float32 heatmap pixels, scores (N, K) float32)``; rows with score <= 0 sit at
        ``(-1, -1)`` for every method, the soft-argmax too (as ``tardis_edge.decode``, the kernels and the ONNX
        graph's decode).
    """
    if method not in METHODS:
        raise ValueError(f"unknown decode method {method!r}; choose one of {', '.join(METHODS)}")
    maps = check_heatmaps(heatmaps)
    keypoints, scores = heatmap_argmax(maps)
    valid = (scores > 0)[..., None]
    if method == "msra":
        keypoints = np.where(valid, _msra_refine(maps, keypoints), keypoints)
    elif method == "dark":
        if blur_kernel % 2 != 1:
            raise ValueError(f"DARK blur kernel must be odd, got {blur_kernel}")
        keypoints = np.where(valid, _dark_refine(maps, keypoints, blur_kernel), keypoints)
    elif method == "softargmax":
        if softargmax_beta is None:
            raise ValueError("decode method 'softargmax' needs softargmax_beta (the artifact's softargmax_beta)")
        keypoints = np.where(valid, soft_argmax(maps, softargmax_beta), np.float32(-1.0))
    return keypoints.astype(np.float32), scores


def flip_heatmaps(heatmaps: np.ndarray, flip_indices: Sequence[int], shift_px: float = 0.0) -> np.ndarray:
    """Undo a horizontal input flip on heatmaps: mirror W, swap left/right channels, shift right by ``shift_px``.

    Mirror of ``tardis_edge.codec.flip_heatmaps`` (see it for why the sub-pixel shift is needed).
    """
    if shift_px < 0:
        raise ValueError(f"shift_px must be >= 0, got {shift_px}")
    out = check_heatmaps(heatmaps)[..., ::-1][:, list(flip_indices)]
    whole = int(shift_px)
    frac = np.float32(shift_px - whole)
    if whole:
        out = np.concatenate([np.repeat(out[..., :1], whole, axis=-1), out[..., :-whole]], axis=-1)
    if frac > 0:
        prev = np.concatenate([out[..., :1], out[..., :-1]], axis=-1)
        out = (1 - frac) * out + frac * prev
    return np.ascontiguousarray(out, dtype=np.float32)
