"""Reference heatmap decoding in PyTorch: the ground truth for the Triton kernels, the ONNX graph and the
C++ library. Batched, any device, any float dtype (computed in float32).

Conventions (``../shared/golden/golden.json`` states them in words; ``tardis_edge.geometry`` owns the
frames): keypoints are ``(x, y)`` in *heatmap pixels*; multiply by the heatmap stride for input pixels.
The score of a keypoint is its heatmap maximum. **Invalid rows**: where the maximum is ``<= 0`` the
keypoint is reported at ``(-1, -1)`` with its (non-positive) score, whichever the method (the soft-argmax
decode included); callers treat ``score <= 0`` as "not found". Ties resolve to the first maximum in
row-major order.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

METHODS = ("argmax", "msra", "dark")  # peak decoders
DECODE_METHODS = (*METHODS, "softargmax")  # what PredictConfig.decode and the artifacts' decode_method may name
DARK_BLUR_KERNEL = 11


def _check_heatmaps(heatmaps: torch.Tensor) -> None:
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be (N, K, H, W); got shape {tuple(heatmaps.shape)}")
    if not heatmaps.is_floating_point():
        raise TypeError(f"heatmaps must be a float tensor; got {heatmaps.dtype}")


def heatmap_argmax(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer peak location and value per map.

    Returns:
        ``(keypoints (N, K, 2) float32 heatmap pixels, scores (N, K) float32)``; ``(-1, -1)`` where score <= 0.
    """
    _check_heatmaps(heatmaps)
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w).float()
    # torch.max returns the first occurrence among equal maxima (row-major), as the reference does
    scores, index = flat.max(dim=-1)
    x = (index % w).float()
    y = torch.div(index, w, rounding_mode="floor").float()
    keypoints = torch.stack([x, y], dim=-1)
    keypoints = torch.where((scores > 0).unsqueeze(-1), keypoints, torch.full_like(keypoints, -1.0))
    return keypoints, scores


def _gather(maps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``maps[n, k, y, x]`` for integer index tensors ``(N, K)`` (clamped inside the map)."""
    n, k, h, w = maps.shape
    xc = x.clamp(0, w - 1)
    yc = y.clamp(0, h - 1)
    flat = maps.reshape(n, k, h * w)
    return flat.gather(-1, (yc * w + xc).unsqueeze(-1)).squeeze(-1)


def _msra_refine(heatmaps: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
    """Quarter-pixel step toward the higher neighbour (MSRA/mmpose), per the golden's border rules."""
    _, _, h, w = heatmaps.shape
    maps = heatmaps.float()
    x = keypoints[..., 0].long()
    y = keypoints[..., 1].long()
    dx = _gather(maps, x + 1, y) - _gather(maps, x - 1, y)
    dy = _gather(maps, x, y + 1) - _gather(maps, x, y - 1)
    x_ok = (x > 1) & (x < w - 1) & (y > 0) & (y < h)
    y_ok = (y > 1) & (y < h - 1) & (x > 0) & (x < w)
    dx = torch.where(x_ok, dx, torch.zeros_like(dx))
    dy = torch.where(y_ok, dy, torch.zeros_like(dy))
    return keypoints + 0.25 * torch.stack([torch.sign(dx), torch.sign(dy)], dim=-1)


def gaussian_kernel_1d(size: int, device=None) -> torch.Tensor:
    """OpenCV's ``getGaussianKernel(size, 0)`` for odd ``size`` > 7 (sigma from the size, as OpenCV does)."""
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    return (kernel / kernel.sum()).float()


def dark_modulate(heatmaps: torch.Tensor, blur_kernel: int = DARK_BLUR_KERNEL) -> torch.Tensor:
    """DARK's distribution modulation: zero-padded Gaussian blur, rescaled to the original maximum, then log."""
    n, k, h, w = heatmaps.shape
    maps = heatmaps.float().reshape(n * k, 1, h, w)
    g = gaussian_kernel_1d(blur_kernel, device=heatmaps.device)
    pad = blur_kernel // 2
    blurred = F.conv2d(F.pad(maps, (pad, pad, 0, 0)), g.view(1, 1, 1, -1))
    blurred = F.conv2d(F.pad(blurred, (0, 0, pad, pad)), g.view(1, 1, -1, 1))
    orig_max = maps.amax(dim=(-2, -1), keepdim=True)
    blurred = blurred * (orig_max / blurred.amax(dim=(-2, -1), keepdim=True))
    return torch.log(blurred.clamp_min(1e-10)).reshape(n, k, h, w)


def _dark_refine(heatmaps: torch.Tensor, keypoints: torch.Tensor, blur_kernel: int) -> torch.Tensor:
    """One Newton step on the log of the blurred heatmap (Zhang et al., DARK, CVPR 2020)."""
    _, _, h, w = heatmaps.shape
    logm = dark_modulate(heatmaps, blur_kernel)
    x = keypoints[..., 0].long()
    y = keypoints[..., 1].long()

    def at(dx: int, dy: int) -> torch.Tensor:
        return _gather(logm, x + dx, y + dy)

    center = at(0, 0)
    gx = 0.5 * (at(1, 0) - at(-1, 0))
    gy = 0.5 * (at(0, 1) - at(0, -1))
    dxx = 0.25 * (at(2, 0) - 2 * center + at(-2, 0))
    dyy = 0.25 * (at(0, 2) - 2 * center + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = dxx * dyy - dxy * dxy
    ok = (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2) & (det != 0)
    safe_det = torch.where(ok, det, torch.ones_like(det))
    # offset = -H^-1 g with H^-1 = [[dyy, -dxy], [-dxy, dxx]] / det
    off_x = -(dyy * gx - dxy * gy) / safe_det
    off_y = -(-dxy * gx + dxx * gy) / safe_det
    offset = torch.stack([off_x, off_y], dim=-1)
    return keypoints + torch.where(ok.unsqueeze(-1), offset, torch.zeros_like(offset))


def decode_heatmaps(
    heatmaps: torch.Tensor,
    method: str = "msra",
    blur_kernel: int = DARK_BLUR_KERNEL,
    softargmax_beta: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode keypoints from heatmaps.

    Args:
        heatmaps: ``(N, K, H, W)`` float tensor.
        method: ``"argmax"`` (integer peak), ``"msra"`` (peak + quarter-pixel step toward the higher
            neighbour), ``"dark"`` (peak + Newton step on the blurred log-heatmap) or ``"softargmax"``
            (``soft_argmax`` expectation, score still the heatmap maximum).
        blur_kernel: DARK's Gaussian blur size (odd).
        softargmax_beta: the soft-argmax inverse temperature, required for ``"softargmax"``.

    Returns:
        ``(keypoints, scores)``: ``(N, K, 2)`` float32 ``(x, y)`` in heatmap pixels and ``(N, K)`` float32
        heatmap maxima. Rows with ``score <= 0`` are invalid and reported at ``(-1, -1)``, for every method.
    """
    if method not in DECODE_METHODS:
        raise ValueError(f"unknown decode method {method!r}; choose one of {', '.join(DECODE_METHODS)}")
    keypoints, scores = heatmap_argmax(heatmaps)
    valid = (scores > 0).unsqueeze(-1)
    if method == "softargmax":
        if softargmax_beta is None:
            raise ValueError("decode method 'softargmax' needs softargmax_beta (PredictConfig.softargmax_beta)")
        # the expectation in float32 at least: half-precision maps would round image-scale coordinates
        maps = heatmaps.float() if heatmaps.dtype in (torch.float16, torch.bfloat16) else heatmaps
        keypoints = torch.where(valid, soft_argmax(maps, softargmax_beta).float(), keypoints)
    elif method == "msra":
        keypoints = torch.where(valid, _msra_refine(heatmaps, keypoints), keypoints)
    elif method == "dark":
        if blur_kernel % 2 != 1:
            raise ValueError(f"DARK blur kernel must be odd, got {blur_kernel}")
        keypoints = torch.where(valid, _dark_refine(heatmaps, keypoints, blur_kernel), keypoints)
    return keypoints, scores


def soft_argmax(heatmaps: torch.Tensor, beta: float) -> torch.Tensor:
    """Differentiable expectation of pixel coordinates under ``softmax(beta * heatmap)`` over each map.

    Args:
        heatmaps: ``(N, K, H, W)`` float tensor.
        beta: inverse temperature (> 0).

    Returns:
        ``(N, K, 2)`` ``(x, y)`` in heatmap pixels, in the input's dtype (computed in at least float32).
    """
    _check_heatmaps(heatmaps)
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"soft-argmax beta must be a positive finite number, got {beta!r}")
    n, k, h, w = heatmaps.shape
    compute_dtype = torch.float64 if heatmaps.dtype == torch.float64 else torch.float32
    logits = heatmaps.to(compute_dtype).reshape(n, k, h * w) * beta
    # Softmax written out (max subtraction, one normalisation at the end) so the weights are summed once.
    weights = torch.exp(logits - logits.amax(dim=-1, keepdim=True).detach())
    total = weights.sum(dim=-1)
    weights = weights.reshape(n, k, h, w)
    # Coordinates are centred on the map before the weighted sum: the terms are then at most W/2 in size,
    # which keeps the float32 sum within ~2e-5 px of a float64 one (uncentred: ~2e-4 px at 64x64).
    cx, cy = (w - 1) / 2, (h - 1) / 2
    xs = torch.arange(w, dtype=compute_dtype, device=heatmaps.device) - cx
    ys = torch.arange(h, dtype=compute_dtype, device=heatmaps.device) - cy
    x = (weights.sum(dim=-2) * xs).sum(dim=-1) / total + cx
    y = (weights.sum(dim=-1) * ys).sum(dim=-1) / total + cy
    return torch.stack([x, y], dim=-1).to(heatmaps.dtype)


def keypoints_to_image(keypoints_hm: torch.Tensor, heatmap_to_image: torch.Tensor) -> torch.Tensor:
    """Map ``(N, K, 2)`` heatmap-pixel keypoints through per-crop ``(N, 2, 3)`` affines to image pixels.

    Build the affines with ``tardis_edge.geometry.heatmap_to_image_affine``.
    """
    m = heatmap_to_image.to(keypoints_hm.dtype)
    return keypoints_hm @ m[:, :, :2].transpose(1, 2) + m[:, None, :, 2]
