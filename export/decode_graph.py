"""Export stage: heatmap decoding as a torch module that exports to plain ONNX ops TensorRT parses.

``GraphDecode`` reproduces ``tardis_edge.decode`` (argmax, MSRA quarter-pixel step, DARK, soft-argmax) with
only ops in onnx-tensorrt's operator support matrix (``TRT_ONNX_OPS``) and no custom ops, so the exported
graph can output keypoints directly: ``heatmaps (N, K, H, W) -> keypoints (N, K, 2), scores (N, K)``.

Choices that keep TensorRT and ONNX Runtime in agreement with the reference:

* The peak is found as "the smallest flat index whose value equals the maximum" (ReduceMax, Equal, Where,
  ReduceMin) rather than with ArgMax: ONNX's ArgMax resolves ties to the first index, but TensorRT lowers it to
  a TopK whose tie order is not documented. The reference resolves ties to the first maximum in row-major order.
* Integer arithmetic (index -> x, y, neighbour indices) is done in float32 and exact: indices stay below
  2**24 and ``floor(i / W)`` is exact for them. Only the gather indices are cast to int64 (TensorRT casts them
  to int32). No Mod, no integer Div, whose support differs across TensorRT versions.
* Keypoints come out in crop *input* pixels (heatmap pixel u <-> input pixel stride * u, ``tardis_edge.geometry``)
  and rows whose score is <= 0 are reported at (-1, -1), as the reference reports them in heatmap pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tardis_edge.decode import DARK_BLUR_KERNEL, DECODE_METHODS, gaussian_kernel_1d

# ONNX ops the decode graph may contain: all are in onnx-tensorrt's support matrix (docs/operators.md) for
# float32 (int32/bool where listed). Tests export every method and check its graph against this set.
TRT_ONNX_OPS = frozenset(
    {
        "Add", "And", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv", "Div", "Equal", "Exp",
        "Floor", "Gather", "GatherElements", "Greater", "Less", "Log", "MatMul", "Mul", "Neg", "Not", "ReduceMax",
        "ReduceMin", "Reshape", "Shape", "Sign", "Slice", "Squeeze", "Sub", "Unsqueeze", "Where",
    }
)  # fmt: skip


class GraphDecode(nn.Module):
    """Decode ``(N, K, H, W)`` heatmaps into keypoints in crop input pixels, with graph-friendly ops.

    Args:
        method: ``"argmax"``, ``"msra"``, ``"dark"`` or ``"softargmax"`` (as ``PredictConfig.decode``).
        heatmap_hw: ``(H, W)`` of the heatmaps (fixed in the graph).
        stride: input pixels per heatmap pixel (``tardis_edge.geometry.heatmap_stride``).
        softargmax_beta: inverse temperature, required for ``"softargmax"``.
        blur_kernel: DARK's Gaussian blur size (odd).

    ``forward`` returns ``(keypoints (N, K, 2) float32 (x, y) crop input pixels, scores (N, K) float32)``;
    scores are the heatmap maxima, rows with score <= 0 are at ``(-1, -1)``.
    """

    def __init__(
        self,
        method: str,
        heatmap_hw: tuple[int, int],
        stride: float,
        softargmax_beta: float | None = None,
        blur_kernel: int = DARK_BLUR_KERNEL,
    ) -> None:
        super().__init__()
        if method not in DECODE_METHODS:
            raise ValueError(f"unknown decode method {method!r}; choose one of {', '.join(DECODE_METHODS)}")
        h, w = (int(v) for v in heatmap_hw)
        if h < 1 or w < 1 or h * w >= 2**24:
            raise ValueError(f"heatmap size {heatmap_hw} must be positive with H*W < 2**24 (float32-exact indices)")
        if not (math.isfinite(stride) and stride > 0):
            raise ValueError(f"heatmap stride must be a positive number, got {stride}")
        if method == "softargmax" and not (
            softargmax_beta is not None and math.isfinite(softargmax_beta) and softargmax_beta > 0
        ):
            raise ValueError(f"soft-argmax decode needs a positive finite beta, got {softargmax_beta!r}")
        if method == "dark" and blur_kernel % 2 != 1:
            raise ValueError(f"DARK blur kernel must be odd, got {blur_kernel}")
        self.method = method
        self.heatmap_hw = (h, w)
        self.stride = float(stride)
        self.softargmax_beta = None if softargmax_beta is None else float(softargmax_beta)
        self.blur_kernel = int(blur_kernel)
        self.register_buffer("flat_positions", torch.arange(h * w, dtype=torch.float32), persistent=False)
        # soft-argmax sums coordinates centred on the map, as tardis_edge.decode.soft_argmax does (float32 accuracy)
        centred_x = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
        centred_y = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
        self.register_buffer("centred_x", centred_x.reshape(w, 1), persistent=False)
        self.register_buffer("centred_y", centred_y.reshape(1, h), persistent=False)
        self.register_buffer("ones_w", torch.ones(w, 1), persistent=False)
        self.register_buffer("ones_h", torch.ones(1, h), persistent=False)

    def forward(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = self.heatmap_hw
        maps = heatmaps.float()
        flat = maps.flatten(2)  # (N, K, H*W)
        scores = flat.amax(dim=-1)  # (N, K)
        if self.method == "softargmax":
            xy = self._soft_argmax(maps)
        else:
            first_max = torch.where(flat == scores.unsqueeze(-1), self.flat_positions, float(h * w))
            index = first_max.amin(dim=-1)  # (N, K) first maximum in row-major order, as a float
            y = torch.floor(index / w)
            x = index - y * w
            if self.method == "msra":
                x, y = self._msra_step(flat, x, y)
            elif self.method == "dark":
                x, y = self._dark_step(maps, x, y)
            xy = torch.stack([x, y], dim=-1)  # (N, K, 2) heatmap pixels
        valid = (scores > 0).unsqueeze(-1)
        keypoints = torch.where(valid, xy * self.stride, torch.full_like(xy, -1.0))
        return keypoints, scores

    def _at(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``map[y, x]`` per (N, K) from the flat maps, coordinates clamped inside the map."""
        h, w = self.heatmap_hw
        index = y.clamp(0, h - 1) * w + x.clamp(0, w - 1)  # (N, K) float, exact
        return flat.gather(-1, index.long().unsqueeze(-1)).squeeze(-1)

    def _msra_step(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quarter-pixel step toward the higher neighbour, with the reference's border rules."""
        h, w = self.heatmap_hw
        dx = self._at(flat, x + 1, y) - self._at(flat, x - 1, y)
        dy = self._at(flat, x, y + 1) - self._at(flat, x, y - 1)
        x_ok = (x > 1) & (x < w - 1) & (y > 0) & (y < h)
        y_ok = (y > 1) & (y < h - 1) & (x > 0) & (x < w)
        zero = torch.zeros_like(dx)
        x = x + 0.25 * torch.where(x_ok, torch.sign(dx), zero)
        y = y + 0.25 * torch.where(y_ok, torch.sign(dy), zero)
        return x, y

    def _dark_step(self, maps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One Newton step on the blurred log-heatmap (the reference's modulation, its formulas and border rules)."""
        h, w = self.heatmap_hw
        logm = self._dark_modulate(maps).flatten(2)  # (N, K, H*W)

        def at(dx: int, dy: int) -> torch.Tensor:
            return self._at(logm, x + dx, y + dy)

        center = at(0, 0)
        gx = 0.5 * (at(1, 0) - at(-1, 0))
        gy = 0.5 * (at(0, 1) - at(0, -1))
        dxx = 0.25 * (at(2, 0) - 2 * center + at(-2, 0))
        dyy = 0.25 * (at(0, 2) - 2 * center + at(0, -2))
        dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
        det = dxx * dyy - dxy * dxy
        ok = (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2) & ~(det == 0)
        safe_det = torch.where(ok, det, torch.ones_like(det))
        off_x = -(dyy * gx - dxy * gy) / safe_det
        off_y = -(-dxy * gx + dxx * gy) / safe_det
        zero = torch.zeros_like(off_x)
        return x + torch.where(ok, off_x, zero), y + torch.where(ok, off_y, zero)

    def _dark_modulate(self, maps: torch.Tensor) -> torch.Tensor:
        """``tardis_edge.decode.dark_modulate`` with the zero padding done by the convs themselves: the
        reference's ``F.pad`` exports as Pad fed by a reversed-slice of the pads, this is two Conv nodes."""
        k, (h, w) = self.blur_kernel, self.heatmap_hw
        kernel = gaussian_kernel_1d(k, device=maps.device)
        planes = maps.reshape(-1, 1, h, w)  # (N*K, 1, H, W)
        blurred = F.conv2d(planes, kernel.view(1, 1, 1, k), padding=(0, k // 2))
        blurred = F.conv2d(blurred, kernel.view(1, 1, k, 1), padding=(k // 2, 0))
        peak = planes.amax(dim=(-2, -1), keepdim=True)
        blurred = blurred * (peak / blurred.amax(dim=(-2, -1), keepdim=True))
        return torch.log(blurred.clamp_min(1e-10)).reshape(maps.shape)

    def _soft_argmax(self, maps: torch.Tensor) -> torch.Tensor:
        """Expectation of pixel coordinates under softmax(beta * heatmap), in heatmap pixels ``(N, K, 2)``."""
        h, w = self.heatmap_hw
        assert self.softargmax_beta is not None
        logits = maps * self.softargmax_beta  # (N, K, H, W)
        weights = torch.exp(logits - logits.amax(dim=(-2, -1), keepdim=True))  # max subtraction: no overflow
        # The sums are MatMuls over one axis at a time with coordinates centred on the map: ONNX Runtime's
        # ReduceSum over 4096 float32 terms drifts by ~1e-5 relative (2e-4 px); GEMM accumulation does not.
        column_sums = torch.matmul(self.ones_h, weights)  # (N, K, 1, W)
        row_sums = torch.matmul(weights, self.ones_w)  # (N, K, H, 1)
        total = torch.matmul(column_sums, self.ones_w)  # (N, K, 1, 1)
        x = torch.matmul(column_sums, self.centred_x) / total + (w - 1) / 2  # (N, K, 1, 1)
        y = torch.matmul(self.centred_y, row_sums) / total + (h - 1) / 2
        return torch.cat([x, y], dim=-1).flatten(2)  # (N, K, 2)
