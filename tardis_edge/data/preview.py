"""Preview of the data stage: a grid of top-down crops with their keypoints, skeleton and summed target heatmaps.

    python -m tardis_edge.data.preview PATH --out preview.png [--n 8] [--augment] [--seed 0] [--image-root DIR]

PATH is anything ``load_dataset`` reads (a DeepLabCut project folder or config.yaml, a COCO keypoint json).
The load summary is printed; the PNG is written atomically. Drawing uses OpenCV only.
"""

from __future__ import annotations

import argparse
import colorsys
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

TITLE_HEIGHT = 22  # px above each crop for its sample id
HEATMAP_ALPHA = 0.6


def keypoint_colors(num_keypoints: int) -> list[tuple[int, int, int]]:
    """One saturated RGB colour per keypoint, spread around the hue circle."""
    colors = []
    for k in range(num_keypoints):
        r, g, b = colorsys.hsv_to_rgb(k / max(num_keypoints, 1), 1.0, 1.0)
        colors.append((int(255 * r), int(255 * g), int(255 * b)))
    return colors


def draw_crop(item: dict, schema, title: str) -> np.ndarray:
    """One preview tile ``(TITLE_HEIGHT + H_in, W_in, 3)`` uint8 RGB from a ``TopDownDataset`` item."""
    import cv2

    crop = item["image"].numpy().transpose(1, 2, 0).astype(np.float32)  # (H_in, W_in, 3) RGB 0..255
    h_in, w_in = crop.shape[:2]
    heat = np.clip(item["heatmaps"].numpy().sum(axis=0), 0.0, 1.0)  # (H_hm, W_hm)
    heat = cv2.resize(heat, (w_in, h_in), interpolation=cv2.INTER_LINEAR)[..., None]  # (H_in, W_in, 1)
    colored = cv2.applyColorMap((heat[..., 0] * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]  # BGR -> RGB
    tile = (crop * (1 - HEATMAP_ALPHA * heat) + colored * (HEATMAP_ALPHA * heat)).astype(np.uint8)
    tile = np.ascontiguousarray(tile)

    points = item["keypoints_input"].numpy()  # (K, 2) input px
    visible = item["visible"].numpy() > 0
    colors = keypoint_colors(schema.num_keypoints)
    for a, b in schema.skeleton:
        if visible[a] and visible[b]:
            cv2.line(tile, _px(points[a]), _px(points[b]), (255, 255, 255), 1, cv2.LINE_AA)
    for k in np.flatnonzero(visible):
        cv2.circle(tile, _px(points[k]), 4, (0, 0, 0), -1, cv2.LINE_AA)
        cv2.circle(tile, _px(points[k]), 3, colors[k], -1, cv2.LINE_AA)

    header = np.full((TITLE_HEIGHT, w_in, 3), 32, np.uint8)
    text = title if len(title) <= 34 else "..." + title[-31:]
    cv2.putText(header, text, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([header, tile])


def _px(point: np.ndarray) -> tuple[int, int]:
    return int(round(float(point[0]))), int(round(float(point[1])))


def legend(schema, width: int) -> np.ndarray:
    """A strip naming each keypoint's colour."""
    import cv2

    colors = keypoint_colors(schema.num_keypoints)
    per_row = max(1, width // 140)
    rows = math.ceil(schema.num_keypoints / per_row)
    strip = np.full((rows * 20 + 6, width, 3), 32, np.uint8)
    for k, name in enumerate(schema.names):
        x, y = 8 + (k % per_row) * 140, 16 + (k // per_row) * 20
        cv2.circle(strip, (x, y - 4), 5, colors[k], -1, cv2.LINE_AA)
        cv2.putText(strip, name[:18], (x + 10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return strip


def render_preview(dataset, n: int = 8, augment: bool = False, seed: int = 0, columns: int = 4) -> np.ndarray:
    """A ``(rows x tile, columns x tile)`` RGB uint8 grid of ``n`` crops spread evenly over the labelled samples."""
    from tardis_edge.data.crops import CropConfig, TopDownDataset

    labelled = dataset.labelled_only()
    if len(labelled) == 0:
        raise ValueError(f"{dataset.summary.source} has no labelled sample to preview")
    picks = np.unique(np.linspace(0, len(labelled) - 1, min(n, len(labelled))).round().astype(int))
    crops = TopDownDataset(labelled, CropConfig.training() if augment else CropConfig(), seed=seed)
    tiles = []
    for i in picks:
        item = crops[int(i)]
        title = labelled[int(i)].sample_id + (" (flipped)" if item["flipped"] else "")
        tiles.append(draw_crop(item, dataset.schema, title))
    columns = min(columns, len(tiles))
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (-len(tiles) % columns)
    rows = [np.hstack(tiles[r : r + columns]) for r in range(0, len(tiles), columns)]
    grid = np.vstack(rows)
    return np.vstack([grid, legend(dataset.schema, grid.shape[1])])


def main(argv: Sequence[str] | None = None) -> int:
    import cv2

    from tardis_edge.data.dataset import load_dataset
    from tardis_edge.io import atomic_write_bytes

    parser = argparse.ArgumentParser(prog="python -m tardis_edge.data.preview", description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path, help="DeepLabCut project folder / config.yaml, or COCO keypoint json")
    parser.add_argument("--out", type=Path, default=Path("preview.png"), help="PNG to write")
    parser.add_argument("--n", type=int, default=8, help="number of crops")
    parser.add_argument("--augment", action="store_true", help="show training augmentation instead of eval crops")
    parser.add_argument("--seed", type=int, default=0, help="augmentation seed")
    parser.add_argument("--image-root", type=Path, default=None, help="COCO: folder the file_name entries are in")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be >= 1, got {args.n}")

    dataset = load_dataset(args.path, **({"image_root": args.image_root} if args.image_root else {}))
    print(dataset.summary)
    grid = render_preview(dataset, args.n, args.augment, args.seed)
    ok, png = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode the {grid.shape} preview as PNG")
    atomic_write_bytes(args.out, png.tobytes())
    print(f"wrote {args.out} ({grid.shape[1]}x{grid.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
