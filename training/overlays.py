"""Prediction overlays: keypoints and skeleton drawn on frames, a grid of them saved as one PNG."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tardis_edge.io import atomic_write_bytes

PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
]


def draw_keypoints(
    image_rgb: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray | None,
    skeleton,
    ground_truth: np.ndarray | None = None,
    min_score: float = 0.0,
) -> np.ndarray:
    """Copy of ``image_rgb`` with predicted keypoints (filled, coloured per keypoint), skeleton lines, and the
    ground truth as white rings when given."""
    out = image_rgb.copy()
    radius = max(2, int(round(min(out.shape[:2]) / 120)))
    shown = np.isfinite(keypoints).all(axis=1)
    if scores is not None:
        shown &= scores > min_score
    for a, b in skeleton:
        if shown[a] and shown[b]:
            cv2.line(
                out,
                tuple(int(round(v)) for v in keypoints[a]),
                tuple(int(round(v)) for v in keypoints[b]),
                (255, 255, 255),
                max(1, radius // 2),
                cv2.LINE_AA,
            )
    if ground_truth is not None:
        for xy in ground_truth:
            if np.isfinite(xy).all():
                cv2.circle(out, tuple(int(round(v)) for v in xy), radius + 2, (255, 255, 255), 1, cv2.LINE_AA)
    for k, xy in enumerate(keypoints):
        if shown[k]:
            cv2.circle(out, tuple(int(round(v)) for v in xy), radius, PALETTE[k % len(PALETTE)], -1, cv2.LINE_AA)
    return out


def draw_overlays(samples, keypoints: np.ndarray, scores: np.ndarray, schema, path: Path, columns: int = 3) -> None:
    """A grid of frames with predictions (dots) and labels (white rings), written atomically to ``path``."""
    from tardis_edge.data.dataset import read_sample_image

    tiles = []
    for sample, kps, sc in zip(samples, keypoints, scores, strict=True):
        image = read_sample_image(sample)
        tile = draw_keypoints(image, kps, sc, schema.skeleton, ground_truth=sample.keypoints_xy)
        cv2.putText(tile, sample.sample_id[-28:], (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
        tiles.append(tile)
    if not tiles:
        return
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    rows = (len(tiles) + columns - 1) // columns
    grid = np.zeros((rows * h, columns * w, 3), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        grid[r * h : r * h + t.shape[0], c * w : c * w + t.shape[1]] = t
    ok, buf = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"could not encode the overlay image for {path}")
    atomic_write_bytes(path, buf.tobytes())
