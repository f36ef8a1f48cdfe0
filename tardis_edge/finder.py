"""Finding the animals in a whole frame without an external detector (the finder; multi-animal stage).

The finder is the student's backbone and neck with a three-channel head, run on the whole frame letterboxed to a
square input (``geometry.box_from_image``: aspect kept, no padding):

* channel 0, ``centres``: a Gaussian heatmap (peak 1, ``sigma`` heatmap pixels) at each animal's centre;
* channels 1-2, ``sizes``: the animal's box width and height divided by the input side, read at its centre cell.

An animal's box is the extent of its labelled keypoints (the box ``geometry.box_from_keypoints`` pads for the pose
crop), its centre the middle of that extent: the finder predicts exactly what the top-down pose stage crops around.
Heatmap pixel ``u`` is input pixel ``stride * u`` (the heatmap convention of ``tardis_edge.geometry``).

This module is torch-free (targets and decoding in numpy): training, export verification, the runtime and the C
library's reference all read the finder's outputs through ``decode_finder``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tardis_edge import geometry

NUM_CHANNELS = 3  # centre heatmap + box width + box height

# A finder runner: float32 (N, 3, S, S) RGB 0..255 whole-frame inputs -> (N, 3, S/stride, S/stride) raw outputs.
FinderRunner = Callable[[np.ndarray], np.ndarray]


@dataclass
class FinderConfig:
    """The finder's recipe and decode (saved in the run's ``model.pt`` and in the artifact's ``model.json``)."""

    input_size: int = 256  # side of the square whole-frame input (a multiple of the backbone's largest stride)
    sigma: float = 2.0  # centre Gaussian, heatmap pixels
    min_score: float = 0.3  # a centre peak below this is no animal
    max_animals: int = 0  # keep at most this many animals per frame (highest scores); 0: no limit
    min_distance: float = 2.0  # peaks closer than this many heatmap pixels are one animal (the weaker one is dropped)
    min_box: float = 8.0  # lower bound on a decoded box side, image pixels

    def __post_init__(self) -> None:
        if self.input_size < 32 or self.sigma <= 0 or not 0 <= self.min_score < 1 or self.max_animals < 0:
            raise ValueError(
                f"finder config needs input_size >= 32, sigma > 0, 0 <= min_score < 1 and max_animals >= 0; got "
                f"{self.input_size}, {self.sigma}, {self.min_score}, {self.max_animals}"
            )


@dataclass(frozen=True)
class FoundAnimal:
    """One animal the finder found: its unpadded box (centre and size, image pixels) and the peak score."""

    cx: float
    cy: float
    width: float
    height: float
    score: float

    def crop_box(self, input_wh: tuple[int, int], padding: float) -> geometry.CropBox:
        """The pose crop for this animal (aspect-corrected and padded like a box around labelled keypoints)."""
        return geometry.box_from_center_size(self.cx, self.cy, self.width, self.height, input_wh, padding)


def instance_box(keypoints_xy: np.ndarray, visible: np.ndarray | None = None) -> tuple[float, float, float, float]:
    """``(cx, cy, w, h)`` of the labelled keypoints' extent, image pixels; NaN box if none is labelled."""
    extent = geometry.keypoint_extent(keypoints_xy, visible)
    if extent is None:
        return (float("nan"),) * 4
    lo, hi = extent
    return ((lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, hi[0] - lo[0], hi[1] - lo[1])


def frame_affine(image_wh: tuple[int, int], input_size: int) -> np.ndarray:
    """``(2, 3)`` affine from image pixels to finder-input pixels: the whole frame, aspect kept, no padding."""
    wh = (input_size, input_size)
    return geometry.crop_affine(geometry.box_from_image(image_wh, wh), wh)


def encode_targets(
    centres_input: np.ndarray, sizes_input: np.ndarray, heatmap_side: int, stride: float, sigma: float, input_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Training targets for one frame.

    Args:
        centres_input: ``(M, 2)`` animal centres in finder-input pixels.
        sizes_input: ``(M, 2)`` box width and height in finder-input pixels.
        heatmap_side: side of the output map; ``stride`` input pixels per heatmap pixel.

    Returns:
        ``target (3, h, w)`` float32 (centre heatmap: the maximum of the animals' Gaussians; sizes / input_size where
        an animal's Gaussian is the largest) and ``size_weight (h, w)`` float32 (that Gaussian's value, so the size
        loss counts most at the centres and nowhere without an animal).
    """
    h = w = heatmap_side
    target = np.zeros((NUM_CHANNELS, h, w), np.float32)
    weight = np.zeros((h, w), np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    for (cx, cy), (bw, bh) in zip(np.asarray(centres_input), np.asarray(sizes_input), strict=True):
        if not np.isfinite([cx, cy, bw, bh]).all():
            continue
        g = np.exp(-((xs - cx / stride) ** 2 + (ys - cy / stride) ** 2) / (2 * sigma**2)).astype(np.float32)
        here = g > weight
        target[0] = np.maximum(target[0], g)
        target[1][here] = bw / input_size
        target[2][here] = bh / input_size
        weight[here] = g[here]
    return target, weight


def decode_finder(
    outputs: np.ndarray, stride: float, cfg: FinderConfig
) -> list[list[tuple[float, float, float, float, float]]]:
    """Animals in finder outputs: local maxima of the centre heatmap above ``cfg.min_score``.

    Args:
        outputs: ``(N, 3, h, w)`` raw finder outputs.
        stride: input pixels per heatmap pixel.

    Returns:
        Per frame, ``(cx, cy, w, h, score)`` in finder-input pixels, strongest first, at most ``cfg.max_animals``
        (when > 0). A peak's position is refined by a quarter-pixel step towards the higher neighbour (MSRA).
    """
    out = np.asarray(outputs, dtype=np.float32)
    if out.ndim != 4 or out.shape[1] != NUM_CHANNELS:
        raise ValueError(f"finder outputs must be (N, {NUM_CHANNELS}, h, w), got {out.shape}")
    frames = []
    for heat, size_w, size_h in zip(out[:, 0], out[:, 1], out[:, 2], strict=True):
        h, w = heat.shape
        padded = np.pad(heat, 1, constant_values=-np.inf)
        neighbours = np.stack(
            [padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3) if (dy, dx) != (1, 1)]
        )
        peak = (heat >= neighbours.max(axis=0)) & (heat > cfg.min_score)
        ys, xs = np.nonzero(peak)
        order = np.argsort(-heat[ys, xs], kind="stable")
        kept: list[tuple[float, float, float, float, float]] = []
        for y, x in zip(ys[order], xs[order], strict=True):
            px, py = float(x), float(y)
            if 0 < x < w - 1:
                px += 0.25 * np.sign(heat[y, x + 1] - heat[y, x - 1])
            if 0 < y < h - 1:
                py += 0.25 * np.sign(heat[y + 1, x] - heat[y - 1, x])
            if any((px - k[0] / stride) ** 2 + (py - k[1] / stride) ** 2 < cfg.min_distance**2 for k in kept):
                continue
            size = (float(size_w[y, x]) * _input_side(w, stride), float(size_h[y, x]) * _input_side(h, stride))
            kept.append((px * stride, py * stride, max(size[0], 0.0), max(size[1], 0.0), float(heat[y, x])))
            if cfg.max_animals and len(kept) == cfg.max_animals:
                break
        frames.append(kept)
    return frames


def _input_side(heatmap_side: int, stride: float) -> float:
    return heatmap_side * stride


def find_animals(
    run: FinderRunner, frames_rgb: Sequence[np.ndarray], cfg: FinderConfig, stride: float
) -> list[list[FoundAnimal]]:
    """Run the finder on whole frames and map what it found back to image pixels.

    Args:
        run: the finder runner (PyTorch model or exported graph).
        frames_rgb: RGB uint8 ``(H, W, 3)`` frames.
        cfg: input size and decode.
        stride: the finder's heatmap stride.

    Returns:
        Per frame, the animals found, strongest first.
    """
    if not frames_rgb:
        return []
    side = cfg.input_size
    affines = [frame_affine(f.shape[1::-1], side) for f in frames_rgb]
    batch = np.stack([geometry.warp_image(f, m, (side, side)) for f, m in zip(frames_rgb, affines, strict=True)])
    outputs = run(np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32))  # (N, 3, h, w)
    found = []
    for peaks, m in zip(decode_finder(outputs, stride, cfg), affines, strict=True):
        to_image = geometry.invert_affine(m)
        scale = 1.0 / abs(m[0, 0])  # the letterbox is a pure scale + shift
        animals = []
        for cx, cy, bw, bh, score in peaks:
            x, y = geometry.apply_affine(np.array([cx, cy]), to_image)
            animals.append(
                FoundAnimal(float(x), float(y), max(bw * scale, cfg.min_box), max(bh * scale, cfg.min_box), score)
            )
        found.append(animals)
    return found
