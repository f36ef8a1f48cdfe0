"""Triton kernels for heatmap decoding (inference) and the soft-argmax of the integral loss (training).

This module imports triton at the top, so ``kernels/decode.py`` imports it lazily: ``import kernels`` works
without triton. Layers, bottom up: the PyTorch reference (``tardis_edge.decode``, also the ONNX path) ->
the ``@triton.jit`` kernels below -> the launchers (``launch_decode``, ``launch_soft_argmax_backward``), which
validate dtype, layout, size and device and refuse what the kernels do not support -> the autograd.Function
and the dispatching functions in ``kernels.decode``.

Work split: one program owns ``ROWS`` whole heatmaps (one heatmap = one ``(n, k)`` row of ``H * W``
elements; 1 row per program from 2048 elements up (32x64, 64x64), several for smaller maps so that a program
still holds >= 2048 elements). DARK has its own kernel, one map per program (see ``_dark_kernel``).
A row is loaded once, with contiguous vectorised loads, into registers and every statistic is a reduction
over it, so each kernel reads the heatmaps exactly once from global memory:

    decode:   reads N*K*H*W*itemsize bytes, writes N*K*(2 + 1)*4 bytes (keypoints, scores);
              MSRA adds 4 scalar re-reads per row (the peak's neighbours, L1/L2 hits);
              with ``crop_to_image`` the (N, 2, 3) affine is applied in the epilogue (24 bytes per crop).
    soft-argmax forward: same read, writes keypoints and 4 fp32 statistics per row (max, sum of exp and
              the two centred expectations) for the backward; the probability map is never stored.
    soft-argmax backward: reads the heatmaps and the statistics again, writes dL/dheatmaps once.

Numerics: inputs (fp32, fp16, bf16) are converted to fp32 in registers and every reduction accumulates in
fp32. The softmax subtracts the row maximum before ``exp``, and coordinates are centred on the map before
the weighted sums, as the reference does (terms of at most W/2 keep the fp32 sum accurate). Ties resolve to
the first maximum in row-major order (the smallest flat index among the elements equal to the maximum); a
row containing NaN reports a NaN score at its first NaN, as ``torch.max`` does, and is therefore invalid.

Conventions are the reference's (``tardis_edge.decode``): keypoints in heatmap pixels, score = heatmap maximum,
invalid rows (score <= 0, or NaN) at ``(-1, -1)`` in heatmap pixels. With ``crop_to_image`` the affine is
applied to every row, invalid ones included, so an invalid row reports ``crop_to_image @ (-1, -1, 1)`` -- the
same as ``keypoints_to_image(decode_heatmaps(...))``; callers recognise invalid rows by ``score <= 0``.
"""

from __future__ import annotations

import functools
import math
import os

import torch
import triton
import triton.language as tl

from tardis_edge.decode import DARK_BLUR_KERNEL, gaussian_kernel_1d

# triton.jit reads TRITON_INTERPRET when it decorates a kernel, i.e. when this module is first imported
# (through triton.knobs in triton >= 3.4, straight from the environment before).
_knobs = getattr(triton, "knobs", None)
INTERPRETED = bool(_knobs.runtime.interpret) if _knobs is not None else os.environ.get("TRITON_INTERPRET") == "1"

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_MAP_ELEMENTS = 16384  # one heatmap must fit one block of registers (128x128); larger maps are refused
ROW_ELEMENTS = 2048  # small maps: pack rows until a program holds at least this many elements

# method codes of the row kernel (constexpr, so every method compiles to its own specialised kernel)
ARGMAX, MSRA, SOFTARGMAX = 0, 1, 2
ROW_METHODS = {"argmax": ARGMAX, "msra": MSRA, "softargmax": SOFTARGMAX, "soft-argmax": SOFTARGMAX}
STATS = 4  # per-row soft-argmax statistics: logit max, sum of exp, E[x] - cx, E[y] - cy


@triton.jit
def _peak(values, flat_index, BIG: tl.constexpr):
    """Maximum and its first flat index of each row of ``values`` (ROWS, BLOCK), NaN-aware like torch.max."""
    score = tl.max(values, axis=1)  # (ROWS,)
    # One min-reduction finds both the first maximum and the first NaN: NaN lanes get keys below every
    # maximum lane. tl.max may skip NaN on the GPU (and propagates it in the interpreter), so the NaN case is
    # decided here, as torch.max does: a NaN score at the first NaN.
    key = tl.where(values != values, flat_index - BIG, tl.where(values == score[:, None], flat_index, BIG))
    index = tl.min(key, axis=1)
    has_nan = index < 0
    score = tl.where(has_nan, float("nan"), score)
    index = tl.where(has_nan, index + BIG, index)
    # rows of -inf (or masked rows) match at index 0; the clamp only keeps later address arithmetic in bounds
    return score, tl.minimum(index, BIG - 1)


@triton.jit
def _sign(d):
    """torch.sign in fp32: -1, 0 or 1, NaN for NaN."""
    s = tl.where(d > 0, 1.0, tl.where(d < 0, -1.0, 0.0))
    return tl.where(d != d, float("nan"), s)


@triton.jit
def _store_keypoints(
    keypoints_ptr, scores_ptr, affine_ptr, rows, row_ok, kx, ky, score, num_k, HAS_AFFINE: tl.constexpr
):
    """Epilogue: optionally map heatmap pixels to image pixels with the row's crop affine, then store."""
    if HAS_AFFINE:
        # (N, 2, 3) fp32; the same expression order as keypoints_to_image (x*m00 + y*m01, then + m02)
        crop = affine_ptr + (rows // num_k).to(tl.int64) * 6
        m00 = tl.load(crop + 0, mask=row_ok, other=0.0)
        m01 = tl.load(crop + 1, mask=row_ok, other=0.0)
        m02 = tl.load(crop + 2, mask=row_ok, other=0.0)
        m10 = tl.load(crop + 3, mask=row_ok, other=0.0)
        m11 = tl.load(crop + 4, mask=row_ok, other=0.0)
        m12 = tl.load(crop + 5, mask=row_ok, other=0.0)
        image_x = (kx * m00 + ky * m01) + m02
        image_y = (kx * m10 + ky * m11) + m12
        kx = image_x
        ky = image_y
    out = rows.to(tl.int64) * 2
    tl.store(keypoints_ptr + out, kx, mask=row_ok)
    tl.store(keypoints_ptr + out + 1, ky, mask=row_ok)
    tl.store(scores_ptr + rows, score, mask=row_ok)


@triton.jit
def _decode_rows_kernel(
    heatmaps_ptr,  # (N*K, H*W) fp32/fp16/bf16, contiguous
    affine_ptr,  # (N, 2, 3) fp32 heatmap->image affines (unused unless HAS_AFFINE)
    keypoints_ptr,  # (N*K, 2) fp32 out
    scores_ptr,  # (N*K,) fp32 out
    stats_ptr,  # (N*K, 4) fp32 out (unused unless SAVE_STATS)
    n_rows,
    num_k,
    beta,  # fp32 soft-argmax inverse temperature (unused otherwise)
    H: tl.constexpr,
    W: tl.constexpr,
    BLOCK: tl.constexpr,  # next power of two >= H*W
    ROWS: tl.constexpr,  # rows per program
    METHOD: tl.constexpr,  # ARGMAX, MSRA or SOFTARGMAX
    MARK_INVALID: tl.constexpr,  # decode: rows with score <= 0 -> (-1, -1); the raw soft-argmax does not
    HAS_AFFINE: tl.constexpr,
    SAVE_STATS: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * ROWS + tl.arange(0, ROWS)  # (ROWS,)
    row_ok = rows < n_rows
    flat_index = tl.arange(0, BLOCK)[None, :]  # (1, BLOCK) row-major index y*W + x
    mask = row_ok[:, None] & (flat_index < H * W)
    row_start = heatmaps_ptr + rows.to(tl.int64) * (H * W)  # (ROWS,) pointers
    # the only full read of the heatmaps: (ROWS, BLOCK), padding lanes -inf so they never win the max
    values = tl.load(row_start[:, None] + flat_index, mask=mask, other=float("-inf")).to(tl.float32)

    score, index = _peak(values, flat_index, BLOCK)
    x = index % W  # (ROWS,) int32
    y = index // W
    kx = x.to(tl.float32)
    ky = y.to(tl.float32)

    if METHOD == MSRA:
        # quarter-pixel step toward the higher neighbour; neighbours re-read from cache at clamped positions
        x_lo = tl.maximum(x - 1, 0)
        x_hi = tl.minimum(x + 1, W - 1)
        y_lo = tl.maximum(y - 1, 0)
        y_hi = tl.minimum(y + 1, H - 1)
        right = tl.load(row_start + y * W + x_hi, mask=row_ok, other=0.0).to(tl.float32)
        left = tl.load(row_start + y * W + x_lo, mask=row_ok, other=0.0).to(tl.float32)
        below = tl.load(row_start + y_hi * W + x, mask=row_ok, other=0.0).to(tl.float32)
        above = tl.load(row_start + y_lo * W + x, mask=row_ok, other=0.0).to(tl.float32)
        # the golden's border rules (x step needs 1 < x < W-1, y step needs 1 < y < H-1)
        x_ok = (x > 1) & (x < W - 1) & (y > 0) & (y < H)
        y_ok = (y > 1) & (y < H - 1) & (x > 0) & (x < W)
        kx = kx + 0.25 * tl.where(x_ok, _sign(right - left), 0.0)
        ky = ky + 0.25 * tl.where(y_ok, _sign(below - above), 0.0)

    if METHOD == SOFTARGMAX:
        # softmax(beta * h) with the row maximum subtracted (beta > 0, so max(beta*h) == beta*max(h) exactly);
        # padding lanes are -inf -> exp 0. Centred coordinates: |x - cx| <= W/2 keeps the fp32 sums accurate.
        logits = values * beta
        logit_max = tl.max(logits, axis=1)  # (ROWS,)
        weights = tl.exp(logits - logit_max[:, None])  # (ROWS, BLOCK), never stored
        total = tl.sum(weights, axis=1)
        x_centred = (flat_index % W).to(tl.float32) - (W - 1) * 0.5
        y_centred = (flat_index // W).to(tl.float32) - (H - 1) * 0.5
        mean_x = tl.sum(weights * x_centred, axis=1) / total
        mean_y = tl.sum(weights * y_centred, axis=1) / total
        kx = mean_x + (W - 1) * 0.5
        ky = mean_y + (H - 1) * 0.5
        if SAVE_STATS:
            stats = stats_ptr + rows.to(tl.int64) * 4
            tl.store(stats + 0, logit_max, mask=row_ok)
            tl.store(stats + 1, total, mask=row_ok)
            tl.store(stats + 2, mean_x, mask=row_ok)
            tl.store(stats + 3, mean_y, mask=row_ok)

    if MARK_INVALID:
        valid = score > 0
        kx = tl.where(valid, kx, -1.0)
        ky = tl.where(valid, ky, -1.0)
    _store_keypoints(keypoints_ptr, scores_ptr, affine_ptr, rows, row_ok, kx, ky, score, num_k, HAS_AFFINE)


@triton.jit
def _soft_argmax_backward_kernel(
    heatmaps_ptr,  # (N*K, H*W) fp32/fp16/bf16, contiguous
    stats_ptr,  # (N*K, 4) fp32 from the forward
    grad_xy_ptr,  # (N*K, 2) fp32 dL/d(x, y)
    grad_heatmaps_ptr,  # (N*K, H*W) out, the heatmaps' dtype
    n_rows,
    beta,
    H: tl.constexpr,
    W: tl.constexpr,
    BLOCK: tl.constexpr,
    ROWS: tl.constexpr,
):
    # dL/dh_i = beta * p_i * ((x_i - E[x]) gx + (y_i - E[y]) gy), p_i = exp(beta h_i - max) / sum, recomputed
    # from the saved max and sum instead of reading a stored probability map.
    pid = tl.program_id(0)
    rows = pid * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    flat_index = tl.arange(0, BLOCK)[None, :]
    mask = row_ok[:, None] & (flat_index < H * W)
    offsets = rows.to(tl.int64)[:, None] * (H * W) + flat_index
    values = tl.load(heatmaps_ptr + offsets, mask=mask, other=float("-inf")).to(tl.float32)
    stats = stats_ptr + rows.to(tl.int64) * 4
    logit_max = tl.load(stats + 0, mask=row_ok, other=0.0)
    total = tl.load(stats + 1, mask=row_ok, other=1.0)
    mean_x = tl.load(stats + 2, mask=row_ok, other=0.0)
    mean_y = tl.load(stats + 3, mask=row_ok, other=0.0)
    grad_x = tl.load(grad_xy_ptr + rows.to(tl.int64) * 2, mask=row_ok, other=0.0)
    grad_y = tl.load(grad_xy_ptr + rows.to(tl.int64) * 2 + 1, mask=row_ok, other=0.0)
    prob = tl.exp(values * beta - logit_max[:, None]) / total[:, None]
    # centred coordinates minus centred expectations: both small, so the difference is accurate in fp32
    dx = (flat_index % W).to(tl.float32) - (W - 1) * 0.5 - mean_x[:, None]
    dy = (flat_index // W).to(tl.float32) - (H - 1) * 0.5 - mean_y[:, None]
    grad = beta * prob * (dx * grad_x[:, None] + dy * grad_y[:, None])
    tl.store(grad_heatmaps_ptr + offsets, grad.to(grad_heatmaps_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _at(tile, ys, xs, y, x):
    """``tile[y, x]`` for scalar indices, as a masked reduction over the tile held in registers (exact)."""
    hit = (ys[:, None] == y) & (xs[None, :] == x)
    return tl.sum(tl.where(hit, tile, 0.0))


@triton.jit
def _dark_kernel(
    heatmaps_ptr,  # (N*K, H, W) fp32/fp16/bf16, contiguous
    taps_ptr,  # (2*PAD + 1,) fp32 Gaussian taps (tardis_edge.decode.gaussian_kernel_1d)
    affine_ptr,
    keypoints_ptr,
    scores_ptr,
    num_k,
    H: tl.constexpr,
    W: tl.constexpr,
    BH: tl.constexpr,  # next powers of two >= H, W (>= 16 for tl.dot)
    BW: tl.constexpr,
    PAD: tl.constexpr,  # blur_kernel // 2
    HAS_AFFINE: tl.constexpr,
):
    # One program per heatmap, which stays on chip from load to Newton step: the zero-padded separable blur
    # is two products with banded Toeplitz matrices (horizontal then vertical, as the reference), the blurred
    # maximum for the rescale is a reduction of the blurred tile, and the 13 log-values the Newton step needs
    # are picked out of it. Memory traffic: the heatmap once + 4*(2*PAD+1) bytes of taps (cached).
    row = tl.program_id(0)
    ys = tl.arange(0, BH)
    xs = tl.arange(0, BW)
    inside = (ys[:, None] < H) & (xs[None, :] < W)  # (BH, BW)
    flat_index = ys[:, None] * W + xs[None, :]
    # zeros outside the map are exactly the reference's zero padding
    raw = tl.load(heatmaps_ptr + row.to(tl.int64) * (H * W) + flat_index, mask=inside, other=0.0).to(tl.float32)
    values = tl.where(inside, raw, float("-inf"))

    # score, index, x, y and everything after stay (1,)-shaped, the shapes the row kernels' epilogue takes
    score, index = _peak(tl.reshape(values, (1, BH * BW)), tl.reshape(flat_index, (1, BH * BW)), BH * BW)
    x = index % W
    y = index // W

    # banded Gaussian matrices: along_x[j', j] = g[j' - j + PAD], along_y[i, i'] = g[i' - i + PAD]
    dx_band = xs[:, None] - xs[None, :]
    along_x = tl.load(taps_ptr + dx_band + PAD, mask=(dx_band <= PAD) & (dx_band >= -PAD), other=0.0)
    dy_band = ys[None, :] - ys[:, None]
    along_y = tl.load(taps_ptr + dy_band + PAD, mask=(dy_band <= PAD) & (dy_band >= -PAD), other=0.0)
    # exact fp32 products ("ieee", no TF32), fp32 accumulation
    blurred = tl.dot(raw, along_x, input_precision="ieee")  # (BH, BW) horizontal pass
    blurred = tl.dot(along_y, blurred, input_precision="ieee")  # vertical pass
    # rescale so the blurred maximum equals the original maximum (same operation order as the reference)
    rescale = score / tl.max(tl.where(inside, blurred, float("-inf")))

    # log of the rescaled blurred map at the 13 points of the 5x5 cross the derivatives use
    center = tl.log(tl.maximum(_at(blurred, ys, xs, y, x) * rescale, 1e-10))
    x_p1 = tl.log(tl.maximum(_at(blurred, ys, xs, y, x + 1) * rescale, 1e-10))
    x_m1 = tl.log(tl.maximum(_at(blurred, ys, xs, y, x - 1) * rescale, 1e-10))
    x_p2 = tl.log(tl.maximum(_at(blurred, ys, xs, y, x + 2) * rescale, 1e-10))
    x_m2 = tl.log(tl.maximum(_at(blurred, ys, xs, y, x - 2) * rescale, 1e-10))
    y_p1 = tl.log(tl.maximum(_at(blurred, ys, xs, y + 1, x) * rescale, 1e-10))
    y_m1 = tl.log(tl.maximum(_at(blurred, ys, xs, y - 1, x) * rescale, 1e-10))
    y_p2 = tl.log(tl.maximum(_at(blurred, ys, xs, y + 2, x) * rescale, 1e-10))
    y_m2 = tl.log(tl.maximum(_at(blurred, ys, xs, y - 2, x) * rescale, 1e-10))
    pp = tl.log(tl.maximum(_at(blurred, ys, xs, y + 1, x + 1) * rescale, 1e-10))
    pm = tl.log(tl.maximum(_at(blurred, ys, xs, y - 1, x + 1) * rescale, 1e-10))
    mp = tl.log(tl.maximum(_at(blurred, ys, xs, y + 1, x - 1) * rescale, 1e-10))
    mm = tl.log(tl.maximum(_at(blurred, ys, xs, y - 1, x - 1) * rescale, 1e-10))

    gx = 0.5 * (x_p1 - x_m1)
    gy = 0.5 * (y_p1 - y_m1)
    dxx = 0.25 * (x_p2 - 2 * center + x_m2)
    dyy = 0.25 * (y_p2 - 2 * center + y_m2)
    dxy = 0.25 * (pp - pm - mp + mm)
    det = dxx * dyy - dxy * dxy
    # the step needs the whole 5x5 cross inside the map; a singular Hessian skips it
    ok = (x > 1) & (x < W - 2) & (y > 1) & (y < H - 2) & (det != 0)
    safe_det = tl.where(ok, det, 1.0)
    kx = x.to(tl.float32) + tl.where(ok, -(dyy * gx - dxy * gy) / safe_det, 0.0)
    ky = y.to(tl.float32) + tl.where(ok, -(-dxy * gx + dxx * gy) / safe_det, 0.0)
    valid = score > 0
    kx = tl.where(valid, kx, -1.0)
    ky = tl.where(valid, ky, -1.0)

    rows = row + tl.arange(0, 1)  # (1,)
    _store_keypoints(keypoints_ptr, scores_ptr, affine_ptr, rows, rows >= 0, kx, ky, score, num_k, HAS_AFFINE)


# ----------------------------------------------------------------------------------------------- launchers


def check_heatmaps(heatmaps: torch.Tensor, what: str = "heatmaps") -> None:
    """Refuse what the kernels do not support, saying how to get around it."""
    if not isinstance(heatmaps, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(heatmaps).__name__}")
    if heatmaps.ndim != 4:
        raise ValueError(f"{what} must be (N, K, H, W); got shape {tuple(heatmaps.shape)}")
    if heatmaps.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"the Triton kernels take float32, float16 or bfloat16 {what}, got {heatmaps.dtype}; "
            "convert (e.g. .float()) or use backend='torch'"
        )
    if not heatmaps.is_contiguous():
        raise ValueError(
            f"the Triton kernels need contiguous {what} (strides {heatmaps.stride()} for shape "
            f"{tuple(heatmaps.shape)}); call .contiguous() first"
        )
    h, w = heatmaps.shape[-2:]
    if h * w == 0:
        raise ValueError(f"{what} have an empty map ({h}x{w}); nothing to decode")
    if h * w > MAX_MAP_ELEMENTS:
        raise ValueError(
            f"a {h}x{w} heatmap ({h * w} elements) does not fit one Triton block ({MAX_MAP_ELEMENTS} elements); "
            "use backend='torch' for maps this large"
        )
    check_device(heatmaps, what)


def check_device(tensor: torch.Tensor, what: str) -> None:
    """CUDA tensors always; CPU tensors only under the interpreter (TRITON_INTERPRET=1 at first import)."""
    if tensor.is_cuda or (INTERPRETED and tensor.device.type == "cpu"):
        return
    raise ValueError(
        f"the Triton kernels run on CUDA tensors; {what} are on {tensor.device}. Use backend='torch' (or 'auto') "
        "for CPU tensors, or set TRITON_INTERPRET=1 before kernels.triton_decode is first imported to run the "
        "kernels in Triton's CPU interpreter"
    )


def _check_out(out: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype, like: torch.Tensor, what: str):
    """An output buffer given by the caller (tests poison them) must be exactly what the kernel writes."""
    if out is None:
        return torch.empty(shape, dtype=dtype, device=like.device)
    if tuple(out.shape) != shape or out.dtype != dtype or out.device != like.device or not out.is_contiguous():
        raise ValueError(
            f"{what} buffer must be a contiguous {dtype} tensor of shape {shape} on {like.device}; "
            f"got {out.dtype} {tuple(out.shape)} on {out.device} (contiguous={out.is_contiguous()})"
        )
    return out


def _row_config(h: int, w: int) -> tuple[int, int, int]:
    """(BLOCK, ROWS, num_warps) for maps of h x w: 1 row per program from 2048 elements up."""
    block = triton.next_power_of_2(h * w)
    rows = max(1, ROW_ELEMENTS // block)
    elements = block * rows
    num_warps = 16 if elements >= 16384 else 8 if elements >= 4096 else 4
    return block, rows, num_warps


@functools.lru_cache(maxsize=16)
def _blur_taps(size: int, device: str) -> torch.Tensor:
    # the reference's own taps, built once per device (a per-call build would cost a few tiny launches)
    return gaussian_kernel_1d(size, device=torch.device(device)).contiguous()


def _prepare_affine(crop_to_image: torch.Tensor | None, heatmaps: torch.Tensor) -> torch.Tensor | None:
    if crop_to_image is None:
        return None
    n = heatmaps.shape[0]
    if not isinstance(crop_to_image, torch.Tensor) or not crop_to_image.is_floating_point():
        raise TypeError(
            f"crop_to_image must be a float tensor of shape ({n}, 2, 3); got {type(crop_to_image).__name__} "
            f"{getattr(crop_to_image, 'dtype', '')}; build it with tardis_edge.geometry.heatmap_to_image_affine"
        )
    if tuple(crop_to_image.shape) != (n, 2, 3):
        raise ValueError(
            f"crop_to_image must be ({n}, 2, 3), one heatmap->image affine per crop; got {tuple(crop_to_image.shape)}"
        )
    if crop_to_image.device != heatmaps.device:
        raise ValueError(
            f"crop_to_image is on {crop_to_image.device} but the heatmaps are on {heatmaps.device}; move it first"
        )
    # the reference converts the affine to the keypoints' dtype (float32) as well
    return crop_to_image.to(torch.float32).contiguous()


def launch_decode(
    heatmaps: torch.Tensor,
    method: str,
    beta: float | None = None,
    crop_to_image: torch.Tensor | None = None,
    *,
    blur_kernel: int = DARK_BLUR_KERNEL,
    mark_invalid: bool = True,
    keypoints: torch.Tensor | None = None,
    scores: torch.Tensor | None = None,
    stats: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the fused decode kernel (``kernels.decode_heatmaps`` is the user-facing entry).

    Args:
        heatmaps: ``(N, K, H, W)`` contiguous fp32/fp16/bf16, CUDA (or CPU under the interpreter).
        method: ``argmax``, ``msra``, ``dark``, ``softargmax``/``soft-argmax``.
        beta: soft-argmax inverse temperature.
        crop_to_image: optional ``(N, 2, 3)`` heatmap->image affines.
        blur_kernel: DARK's Gaussian size (odd).
        mark_invalid: report rows with score <= 0 at (-1, -1) (False only for the raw soft-argmax).
        keypoints, scores, stats: optional output buffers ``(N, K, 2)``, ``(N, K)`` fp32 and, for the
            soft-argmax backward, ``(N, K, 4)`` fp32 statistics.

    Returns:
        ``(keypoints (N, K, 2) fp32, scores (N, K) fp32)``.
    """
    check_heatmaps(heatmaps)
    n, k, h, w = heatmaps.shape
    keypoints = _check_out(keypoints, (n, k, 2), torch.float32, heatmaps, "keypoints")
    scores = _check_out(scores, (n, k), torch.float32, heatmaps, "scores")
    affine = _prepare_affine(crop_to_image, heatmaps)
    if n * k == 0:
        return keypoints, scores
    if method == "dark":
        if blur_kernel % 2 != 1 or blur_kernel < 1:
            raise ValueError(f"DARK blur kernel must be a positive odd size, got {blur_kernel}")
        bh, bw = max(16, triton.next_power_of_2(h)), max(16, triton.next_power_of_2(w))
        if bh * bw > MAX_MAP_ELEMENTS:
            raise ValueError(
                f"a {h}x{w} heatmap pads to a {bh}x{bw} tile for the DARK kernel, over {MAX_MAP_ELEMENTS} "
                "elements; use backend='torch'"
            )
        taps = _blur_taps(blur_kernel, str(heatmaps.device))
        _dark_kernel[(n * k,)](
            heatmaps,
            taps,
            keypoints if affine is None else affine,
            keypoints,
            scores,
            k,
            H=h,
            W=w,
            BH=bh,
            BW=bw,
            PAD=blur_kernel // 2,
            HAS_AFFINE=affine is not None,
            num_warps=8 if bh * bw <= 4096 else 16,
        )
        return keypoints, scores
    if method not in ROW_METHODS:
        raise ValueError(f"unknown decode method {method!r}; choose one of {', '.join([*ROW_METHODS, 'dark'])}")
    code = ROW_METHODS[method]
    kernel_beta = 1.0  # unused by argmax and MSRA
    if code == SOFTARGMAX:
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
            raise ValueError(f"soft-argmax beta must be a positive finite number, got {beta!r}")
        kernel_beta = float(beta)
    save_stats = stats is not None
    if save_stats:
        stats = _check_out(stats, (n, k, STATS), torch.float32, heatmaps, "stats")
    block, rows, num_warps = _row_config(h, w)
    _decode_rows_kernel[(triton.cdiv(n * k, rows),)](
        heatmaps,
        keypoints if affine is None else affine,  # dummy pointers where the constexpr flag disables them
        keypoints,
        scores,
        stats if save_stats else keypoints,
        n * k,
        k,
        kernel_beta,
        H=h,
        W=w,
        BLOCK=block,
        ROWS=rows,
        METHOD=code,
        MARK_INVALID=mark_invalid,
        HAS_AFFINE=affine is not None,
        SAVE_STATS=save_stats,
        num_warps=num_warps,
    )
    return keypoints, scores


def launch_soft_argmax_backward(
    heatmaps: torch.Tensor,
    stats: torch.Tensor,
    grad_xy: torch.Tensor,
    beta: float,
    *,
    grad_heatmaps: torch.Tensor | None = None,
) -> torch.Tensor:
    """Launch the soft-argmax backward: ``dL/dheatmaps`` (N, K, H, W) in the heatmaps' dtype.

    Args:
        heatmaps: the forward's input ``(N, K, H, W)``.
        stats: ``(N, K, 4)`` fp32 statistics written by the forward.
        grad_xy: ``(N, K, 2)`` upstream gradient (converted to contiguous fp32 here; it is tiny).
        beta: the forward's inverse temperature.
        grad_heatmaps: optional output buffer.
    """
    check_heatmaps(heatmaps)
    n, k, h, w = heatmaps.shape
    if tuple(stats.shape) != (n, k, STATS) or stats.dtype != torch.float32 or not stats.is_contiguous():
        raise ValueError(
            f"stats must be contiguous float32 ({n}, {k}, {STATS}); got {stats.dtype} {tuple(stats.shape)}"
        )
    if tuple(grad_xy.shape) != (n, k, 2):
        raise ValueError(f"grad_xy must be ({n}, {k}, 2); got {tuple(grad_xy.shape)}")
    grad_xy = grad_xy.to(torch.float32).contiguous()
    grad_heatmaps = _check_out(grad_heatmaps, (n, k, h, w), heatmaps.dtype, heatmaps, "grad_heatmaps")
    if n * k == 0:
        return grad_heatmaps
    block, rows, num_warps = _row_config(h, w)
    _soft_argmax_backward_kernel[(triton.cdiv(n * k, rows),)](
        heatmaps,
        stats,
        grad_xy,
        grad_heatmaps,
        n * k,
        float(beta),
        H=h,
        W=w,
        BLOCK=block,
        ROWS=rows,
        num_warps=num_warps,
    )
    return grad_heatmaps
