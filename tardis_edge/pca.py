"""Stage 1 diagnostics: the teacher's feature maps as pictures (first three principal components as RGB).

A good teacher paints an animal's parts in consistent colours across frames; a random one paints noise or
position. Torch-free (numpy + OpenCV).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tardis_edge.io import atomic_write_bytes


def pca_rgb(maps: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.0) -> np.ndarray:
    """Project feature maps on their first three principal components, fitted jointly over all maps.

    Args:
        maps: ``(N, C, h, w)`` feature maps (C >= 3).
        low_pct, high_pct: each component is stretched so these percentiles map to 0 and 255.

    Returns:
        ``(N, h, w, 3)`` uint8, component k in colour channel k (R, G, B).
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 4 or maps.shape[1] < 3:
        raise ValueError(f"PCA picture needs (N, C, h, w) maps with C >= 3, got shape {maps.shape}")
    n, c, h, w = maps.shape
    points = maps.transpose(0, 2, 3, 1).reshape(-1, c)  # (N*h*w, C)
    points = points - points.mean(axis=0)
    _, eigvecs = np.linalg.eigh(points.T @ points)  # ascending eigenvalues
    components = eigvecs[:, ::-1][:, :3]  # (C, 3)
    # an eigenvector's sign is arbitrary: fix it so the picture does not flip colours between runs
    components *= np.where(components[np.abs(components).argmax(axis=0), range(3)] < 0, -1.0, 1.0)
    projected = points @ components  # (N*h*w, 3)
    lo, hi = np.percentile(projected, low_pct, axis=0), np.percentile(projected, high_pct, axis=0)
    scaled = (projected - lo) / np.maximum(hi - lo, 1e-12)
    return (np.clip(scaled, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(n, h, w, 3)


def pca_picture(crops: Sequence[np.ndarray], maps: np.ndarray, tile: int = 224, title: str | None = None) -> np.ndarray:
    """One row per sample: the crop, then its PCA colours (nearest-neighbour upsampled, so tokens stay visible).

    Args:
        crops: ``N`` RGB crops ``(H, W, 3)`` uint8 (any size; resized to ``tile``).
        maps: ``(N, C, h, w)`` their feature maps.
        title: a line written above the rows (e.g. which teacher).

    Returns:
        ``(rows, 2 * tile, 3)`` uint8 RGB picture.
    """
    import cv2

    if len(crops) != len(maps):
        raise ValueError(f"{len(crops)} crops but {len(maps)} feature maps; give one map per crop")
    colours = pca_rgb(maps)
    rows = []
    for crop, colour in zip(crops, colours, strict=True):
        left = cv2.resize(np.asarray(crop, dtype=np.uint8), (tile, tile), interpolation=cv2.INTER_AREA)
        right = cv2.resize(colour, (tile, tile), interpolation=cv2.INTER_NEAREST)
        rows.append(np.concatenate([left, right], axis=1))
    picture = np.concatenate(rows, axis=0)
    if title:
        bar = np.full((28, picture.shape[1], 3), 255, dtype=np.uint8)
        cv2.putText(bar, title, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        picture = np.concatenate([bar, picture], axis=0)
    return picture


def save_pca_picture(
    path: str | Path, crops: Sequence[np.ndarray], maps: np.ndarray, tile: int = 224, title: str | None = None
) -> Path:
    """Write ``pca_picture`` as a PNG (atomically) and return its path."""
    import cv2

    picture = pca_picture(crops, maps, tile, title)
    ok, png = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode the PCA picture for {path}")
    atomic_write_bytes(path, png.tobytes())
    return Path(path)
