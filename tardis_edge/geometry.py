"""Coordinate conventions, crop affines and their inverses (shared by every stage).

This module is the single owner of the geometry. Everything else — data loading, heatmap targets,
decoding, kernels, export, the edge runtime and the C++ library — imports it (or mirrors it and is
tested against it).

Conventions:
    * Pixel-centre coordinates: the centre of pixel ``(col, row)`` is the point ``(x, y) = (col, row)``;
      the image covers ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``. This is OpenCV's ``warpAffine`` convention,
      so an affine ``M`` computed here can be handed to OpenCV unchanged.
    * Keypoints are ``(x, y)`` pairs, x to the right, y down.
    * Heatmap pixel ``(u, v)`` sits at input pixel ``(stride * u, stride * v)`` (stride = input / heatmap
      size, 4 for 256 -> 64). This is the MSRA/mmpose convention the golden codec uses: a keypoint at input
      ``x`` is encoded at heatmap ``x / stride`` and decoded back by multiplying by ``stride``.
    * A crop is described by a box centre ``(cx, cy)`` and a box size ``(bw, bh)`` in image pixels whose
      aspect ratio equals the network input's. The crop affine maps the box's outer edges onto the input's
      outer edges: ``input = (image - centre) * (W_in / bw) + (W_in - 1) / 2`` (same for y), then rotation
      about the centre. Flips are applied in input space.
    * Feature grids (the teacher's patch tokens, the student's distillation map) are cell-centred instead: cell
      ``u`` of a grid with ``stride`` input pixels per cell covers pixels ``stride * u .. stride * u + stride - 1``
      and sits at their centre, ``stride * u + (stride - 1) / 2`` (``feature_cell_to_pixel``). A teacher crop of
      ``resolution`` px gives a ``resolution / patch_size`` grid (``teacher_grid``), 896 / 14 = 64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_PADDING = 1.25  # box padding factor used by top-down pose estimators (mmpose, HRNet)


@dataclass(frozen=True)
class CropBox:
    """A crop region in image pixels: centre and size (already padded and aspect-corrected)."""

    cx: float
    cy: float
    width: float
    height: float

    def as_xywh(self) -> tuple[float, float, float, float]:
        """Box as (x_left_edge, y_top_edge, width, height) in pixel-centre coordinates' edges."""
        return (self.cx - self.width / 2, self.cy - self.height / 2, self.width, self.height)


def box_from_xywh(
    bbox_xywh: Sequence[float],
    input_wh: tuple[int, int],
    padding: float = DEFAULT_PADDING,
) -> CropBox:
    """Turn a COCO-style box ``(x, y, w, h)`` into a padded crop box with the input's aspect ratio.

    Args:
        bbox_xywh: box in image pixels; ``x, y`` is the top-left edge (COCO), ``w, h`` its size.
        input_wh: network input size ``(W_in, H_in)``; the returned box has aspect ``W_in / H_in``.
        padding: the box is enlarged by this factor after the aspect correction.
    """
    x, y, w, h = (float(v) for v in bbox_xywh)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
        raise ValueError(f"bounding box {list(bbox_xywh)} must be finite with non-negative width and height")
    cx, cy = x + w / 2, y + h / 2
    return box_from_center_size(cx, cy, w, h, input_wh, padding)


def box_from_center_size(
    cx: float, cy: float, w: float, h: float, input_wh: tuple[int, int], padding: float = DEFAULT_PADDING
) -> CropBox:
    """Aspect-correct and pad a box given by its centre and size (image pixels)."""
    aspect = input_wh[0] / input_wh[1]
    w = max(w, 1.0)
    h = max(h, 1.0)
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    return CropBox(cx, cy, w * padding, h * padding)


# The refine pass crops around the model's own keypoints. OpenCV's warpAffine places its samples on a 1/32 px
# fixed-point grid, so a box that moves by 1e-5 px can resample the crop and move the refined keypoints by 1e-3 px: two
# backends whose first passes agree to 4e-5 px (FP32 ONNX Runtime vs PyTorch) would disagree a hundred times more.
# The refine box is therefore widened to this grid (image pixels) and only moves when the keypoints move visibly.
REFINE_BOX_GRID = 0.5


def keypoint_extent(
    keypoints_xy: np.ndarray, visible: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(low, high)`` corners (image pixels) of the finite keypoints ``(..., K, 2) -> (2,)``, only the labelled ones
    (``visible > 0``) when ``visible`` is given; None when there is none. The unpadded box every animal box starts
    from (crops, the finder's targets, OKS areas)."""
    pts = np.asarray(keypoints_xy, dtype=np.float64).reshape(-1, 2)
    mask = np.isfinite(pts).all(axis=1)
    if visible is not None:
        mask &= np.asarray(visible).reshape(-1) > 0
    if not mask.any():
        return None
    return pts[mask].min(axis=0), pts[mask].max(axis=0)


def box_from_keypoints(
    keypoints_xy: np.ndarray,
    visible: np.ndarray | None,
    input_wh: tuple[int, int],
    padding: float = DEFAULT_PADDING,
    min_size: float = 16.0,
    grid: float = 0.0,
) -> CropBox:
    """The padded crop box around the labelled keypoints (DeepLabCut projects have no boxes).

    Args:
        keypoints_xy: ``(K, 2)`` image pixels; NaN where unlabelled.
        visible: ``(K,)`` mask of labelled keypoints, or None to use the finite ones.
        min_size: lower bound on the unpadded box side, so one or two labelled points still give a crop.
        grid: > 0: the keypoints' extent is widened outwards to multiples of ``grid`` pixels (``REFINE_BOX_GRID``).
    """
    extent = keypoint_extent(keypoints_xy, visible)
    if extent is None:
        raise ValueError("no labelled keypoint to build a box from; pass a box or label at least one keypoint")
    lo, hi = extent
    if grid > 0:  # a point within 1e-3 grid steps of a grid line counts as on it: decodes such as MSRA land there
        lo, hi = np.floor(lo / grid + 1e-3) * grid, np.ceil(hi / grid - 1e-3) * grid
    w, h = max(hi[0] - lo[0], min_size), max(hi[1] - lo[1], min_size)
    return box_from_center_size((lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, w, h, input_wh, padding)


def box_from_image(image_wh: tuple[int, int], input_wh: tuple[int, int]) -> CropBox:
    """The whole frame as a crop (aspect kept, no padding): used when there is no box or detector."""
    w, h = image_wh
    return box_from_center_size((w - 1) / 2, (h - 1) / 2, float(w), float(h), input_wh, padding=1.0)


def crop_affine(
    box: CropBox,
    input_wh: tuple[int, int],
    rotation_deg: float = 0.0,
    flip: bool = False,
    shift_xy: tuple[float, float] = (0.0, 0.0),
    scale: float = 1.0,
) -> np.ndarray:
    """The ``(2, 3)`` affine mapping image pixels to input pixels (pixel-centre convention).

    Augmentations go through the same matrix: ``scale > 1`` zooms out (the crop covers more of the image),
    ``shift_xy`` moves the crop by that fraction of the box size, ``rotation_deg`` rotates the content
    counter-clockwise about the box centre, ``flip`` mirrors the result horizontally (the caller also swaps
    left/right keypoint channels, see ``tardis_edge.codec.flip_keypoints``).
    """
    w_in, h_in = input_wh
    bw, bh = box.width * scale, box.height * scale
    cx = box.cx + shift_xy[0] * box.width
    cy = box.cy + shift_xy[1] * box.height
    sx, sy = w_in / bw, h_in / bh
    theta = math.radians(rotation_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    # image -> centred -> rotate (counter-clockwise on screen, y down) -> scale -> input centre
    rot = np.array([[cos, sin], [-sin, cos]])
    lin = np.diag([sx, sy]) @ rot
    ox, oy = (w_in - 1) / 2, (h_in - 1) / 2
    t = np.array([ox, oy]) - lin @ np.array([cx, cy])
    m = np.concatenate([lin, t[:, None]], axis=1)
    if flip:
        m = np.array([[-1.0, 0.0, w_in - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0, 0, 1]])
    return m.astype(np.float64)


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Exact inverse of a ``(2, 3)`` (or batched ``(N, 2, 3)``) affine."""
    m = np.asarray(m, dtype=np.float64)
    lin, t = m[..., :2], m[..., 2:]
    inv = np.linalg.inv(lin)
    return np.concatenate([inv, -inv @ t], axis=-1)


def apply_affine(points_xy: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Map ``(..., 2)`` points through a ``(2, 3)`` affine; NaN stays NaN."""
    pts = np.asarray(points_xy, dtype=np.float64)
    return pts @ np.asarray(m)[:, :2].T + np.asarray(m)[:, 2]


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer ∘ inner`` for ``(2, 3)`` affines."""
    o = np.vstack([outer, [0, 0, 1]])
    i = np.vstack([inner, [0, 0, 1]])
    return (o @ i)[:2]


def scale_affine(factor_x: float, factor_y: float | None = None) -> np.ndarray:
    """Pure scaling in the heatmap/input convention above (``x -> x * factor``)."""
    fy = factor_x if factor_y is None else factor_y
    return np.array([[factor_x, 0.0, 0.0], [0.0, fy, 0.0]])


def heatmap_stride(input_wh: tuple[int, int], heatmap_wh: tuple[int, int]) -> float:
    """Input pixels per heatmap pixel; both axes must agree and divide exactly."""
    sx, sy = input_wh[0] / heatmap_wh[0], input_wh[1] / heatmap_wh[1]
    if sx != sy or input_wh[0] % heatmap_wh[0] or input_wh[1] % heatmap_wh[1]:
        raise ValueError(
            f"heatmap size {heatmap_wh} does not divide input size {input_wh} with one integer stride; "
            "use an input that is a multiple of the heatmap size on both axes"
        )
    return sx


def feature_cell_to_pixel(stride: float) -> np.ndarray:
    """``(2, 3)`` affine from feature-grid cells to the pixels of their input: cell ``u`` -> ``stride * u +
    (stride - 1) / 2`` (the cell-centred convention above; heatmaps are not cell-centred)."""
    offset = (stride - 1) / 2
    return np.array([[stride, 0.0, offset], [0.0, stride, offset]])


def teacher_grid(resolution: int, patch_size: int) -> int:
    """Side of the teacher's patch-token grid for a square crop of ``resolution`` px."""
    if resolution % patch_size:
        raise ValueError(
            f"teacher resolution {resolution} is not a multiple of the patch size {patch_size}; "
            f"use e.g. {max(1, round(resolution / patch_size)) * patch_size}"
        )
    return resolution // patch_size


def heatmap_to_image_affine(crop_m: np.ndarray, stride: float) -> np.ndarray:
    """``(2, 3)`` affine from heatmap pixels straight to original image pixels for one crop."""
    return compose(invert_affine(crop_m), scale_affine(stride))


def warp_image(image: np.ndarray, m: np.ndarray, input_wh: tuple[int, int], border_value: int = 0) -> np.ndarray:
    """Warp ``image`` (H, W, C) into the ``input_wh`` crop with the affine ``m`` (bilinear, constant border)."""
    import cv2

    return cv2.warpAffine(
        image,
        np.asarray(m, dtype=np.float64),
        (int(input_wh[0]), int(input_wh[1])),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(border_value,) * 3,
    )


# ---------------------------------------------------------------- horizontal flip (flip test, augmentation)
def flip_indices_from_pairs(num_keypoints: int, flip_pairs: Sequence[tuple[int, int]]) -> list[int]:
    """Channel permutation for a horizontal flip: ``perm[k]`` is the channel that lands on ``k``."""
    perm = list(range(num_keypoints))
    for a, b in flip_pairs:
        if not (0 <= a < num_keypoints and 0 <= b < num_keypoints):
            raise ValueError(f"flip pair ({a}, {b}) is out of range for {num_keypoints} keypoints")
        perm[a], perm[b] = b, a
    return perm


def flip_shift_px(input_w: int, heatmap_w: int) -> float:
    """Sub-pixel offset between a mirrored heatmap array and the mirrored input, heatmap pixels (the shift
    ``tardis_edge.codec.flip_heatmaps`` applies: 0.75 px for 256 -> 64)."""
    stride = input_w / heatmap_w
    return (input_w - 1) / stride - (heatmap_w - 1)
