"""Pre-processing for the edge runtime (no torch): frame checks and colour order.

The crop itself is the two-pass predictor's (``tardis_edge.predict.crop_batch``), the one training evaluation uses:
float32 ``(N, 3, H_in, W_in)`` RGB 0..255 — the artifact's input; normalisation is inside the graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

COLORS = ("RGB", "BGR")


def check_frame(frame: object, where: str = "frame") -> np.ndarray:
    """Return ``frame`` if it is a ``(H, W, 3)`` uint8 array; otherwise a clear error naming what was received.

    Args:
        frame: the image to check.
        where: how to name it in the message (``"frame 12 of clip.mp4"``).
    """
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"{where}: expected a numpy (H, W, 3) uint8 image, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        hint = " (scale to 0..255 and use .astype(np.uint8))" if np.issubdtype(frame.dtype, np.floating) else ""
        raise TypeError(f"{where}: expected dtype uint8, got {frame.dtype} with shape {frame.shape}{hint}")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        raise ValueError(
            f"{where}: got a single-channel image of shape {frame.shape}; pose models take 3 channels — "
            "convert with cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)"
        )
    if frame.ndim == 3 and frame.shape[2] == 4:
        raise ValueError(
            f"{where}: got 4 channels (shape {frame.shape}); drop alpha with cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR) "
            "or cv2.COLOR_RGBA2RGB"
        )
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"{where}: expected shape (H, W, 3), got {frame.shape}")
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"{where}: empty image of shape {frame.shape}")
    return frame


def to_rgb(frame: np.ndarray, color: str) -> np.ndarray:
    """The ``(H, W, 3)`` frame in RGB order; ``color`` says which order it is in (OpenCV reads ``"BGR"``)."""
    if color == "RGB":
        return frame
    if color == "BGR":
        return np.ascontiguousarray(frame[..., ::-1])
    raise ValueError(f"unknown colour order {color!r}; say 'RGB' or 'BGR' (OpenCV's imread/VideoCapture give BGR)")


def as_frame_list(frames: np.ndarray | Sequence[np.ndarray], color: str = "RGB") -> list[np.ndarray]:
    """Check and convert a batch of frames to a list of RGB ``(H, W, 3)`` uint8 arrays.

    Args:
        frames: one ``(H, W, 3)`` frame, an ``(N, H, W, 3)`` array, or a sequence of ``(H, W, 3)`` frames
            (sizes may differ).
        color: ``"RGB"`` or ``"BGR"``: the channel order of ``frames``.
    """
    if color not in COLORS:
        raise ValueError(f"unknown colour order {color!r}; say 'RGB' or 'BGR' (OpenCV's imread/VideoCapture give BGR)")
    if isinstance(frames, np.ndarray):
        if frames.ndim == 4:
            items = list(frames)
        elif frames.ndim == 3 and frames.shape[-1] in (3, 4) or frames.ndim == 2:
            items = [frames]
        else:
            raise ValueError(
                f"frames: expected one (H, W, 3) image or an (N, H, W, 3) batch, got an array of shape {frames.shape}"
            )
    else:
        items = list(frames)
    if not items:
        raise ValueError("frames: got an empty batch; pass at least one (H, W, 3) uint8 image")
    return [to_rgb(check_frame(f, f"frame {i}"), color) for i, f in enumerate(items)]
