"""Evaluation stage pictures: predicted keypoints against the labels on a grid of frames, saved as one PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# One colour per keypoint (RGB 0..255), in schema order; cycled when there are more keypoints.
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


def keypoint_colour(k: int) -> tuple[float, float, float]:
    """Matplotlib colour (RGB 0..1) of keypoint ``k``."""
    return tuple(c / 255.0 for c in PALETTE[k % len(PALETTE)])


def frame_title(sample_id: str, max_chars: int = 34) -> str:
    """A short, uncut-looking title: the file name (last path part) of the sample, shortened in the middle."""
    name = sample_id.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    if len(name) <= max_chars:
        return name
    half = (max_chars - 1) // 2
    return name[:half] + "…" + name[-(max_chars - 1 - half) :]


def draw_overlays(samples, keypoints: np.ndarray, scores: np.ndarray, schema, path: Path, columns: int = 3) -> None:
    """A grid of frames, written atomically to ``path`` as PNG.

    Each panel shows the predicted keypoints (filled dots, one colour per keypoint, joined by the skeleton) and
    the labels (white rings with a black edge); its title is the frame's file name and the mean pixel error of
    the labelled keypoints. One legend below the grid names the colours and marks.

    Args:
        samples: labelled samples (their images are read from disk).
        keypoints: ``(N, K, 2)`` predictions in image pixels.
        scores: ``(N, K)`` prediction scores (shown in the legend as the mean per keypoint).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from tardis_edge.data.dataset import read_sample_image
    from tardis_edge.io import atomic_path

    samples = list(samples)
    if not samples:
        return
    images = [read_sample_image(s) for s in samples]
    columns = min(columns, len(samples))
    rows = (len(samples) + columns - 1) // columns
    aspect = images[0].shape[0] / images[0].shape[1]
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, (4.2 * aspect + 0.6) * rows + 1.2), squeeze=False)
    for ax in axes.flat[len(samples) :]:
        ax.set_visible(False)
    for ax, sample, image, kps in zip(axes.flat, samples, images, keypoints, strict=False):
        ax.imshow(image)
        shown = np.isfinite(kps).all(axis=1)
        for a, b in schema.skeleton:
            if shown[a] and shown[b]:
                ax.plot(*zip(kps[a], kps[b], strict=True), color="white", lw=1.2, alpha=0.8)
        truth = sample.keypoints_xy
        labelled = np.isfinite(truth).all(axis=1) if truth is not None else np.zeros(len(kps), bool)
        if labelled.any():
            ax.scatter(*truth[labelled].T, s=70, facecolors="none", edgecolors="black", linewidths=2.6)
            ax.scatter(*truth[labelled].T, s=70, facecolors="none", edgecolors="white", linewidths=1.2)
        for k in np.flatnonzero(shown):
            ax.scatter(*kps[k], s=22, color=keypoint_colour(k), edgecolors="black", linewidths=0.5, zorder=3)
        both = labelled & shown
        error = f"mean error {np.linalg.norm(kps[both] - truth[both], axis=1).mean():.1f} px" if both.any() else ""
        ax.set_title(f"{frame_title(sample.sample_id)}\n{error}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    mean_scores = np.nanmean(np.asarray(scores, dtype=float), axis=0) if len(scores) else []
    handles = [
        Line2D([], [], ls="", marker="o", ms=9, mfc="none", mec="black", mew=1.5, label="label (truth)"),
        Line2D([], [], color="grey", lw=1.2, label="prediction skeleton"),
    ] + [
        Line2D([], [], ls="", marker="o", ms=6, color=keypoint_colour(k), mec="black", label=f"{name} (score {s:.2f})")
        for k, (name, s) in enumerate(zip(schema.names, mean_scores, strict=False))
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=9, frameon=False)
    fig.suptitle("test frames: predicted keypoints (dots) vs labels (rings)", fontsize=11)
    legend_rows = (len(handles) + 3) // 4
    fig.tight_layout(rect=(0, 0.05 * legend_rows / rows + 0.02, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
