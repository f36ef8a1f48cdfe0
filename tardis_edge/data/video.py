"""Unlabelled frames for stage 1 (feature distillation): sample frames from videos or image folders as
``Sample(labelled=False)`` records, and read them back by index, lazily.

A frame's crop is the whole frame (aspect kept, no padding) unless the user gives a box, which is then the crop
region itself (``Sample.extra["crop_padding"] = 1.0``). Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tardis_edge.data.sample import Sample

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MAX_FORWARD_GRAB = 250  # frames: an H.264 seek (decode from the last keyframe) costs as much as ~100-200 grabs


def frame_indices(num_frames: int, count: int | None = None, step: int | None = None) -> list[int]:
    """Which frames to take from ``num_frames``: ``count`` evenly spaced ones, or every ``step``-th, or all.

    Evenly spaced frames are the centres of ``count`` equal segments, so the first and last frames (often a
    static start or a hand in the arena) are not favoured.
    """
    if num_frames < 1:
        raise ValueError(f"cannot sample frames from a source with {num_frames} frames")
    if count is not None and step is not None:
        raise ValueError("give either a frame count or a frame step, not both")
    if step is not None:
        if step < 1:
            raise ValueError(f"frame step must be >= 1, got {step}")
        return list(range(0, num_frames, step))
    if count is None or count >= num_frames:
        return list(range(num_frames))
    if count < 1:
        raise ValueError(f"frame count must be >= 1, got {count}")
    return [int((i + 0.5) * num_frames / count) for i in range(count)]


def _unlabelled(
    sample_id: str,
    num_keypoints: int,
    image_wh: tuple[int, int] | None,
    box_xywh: Sequence[float] | None,
    **where,
) -> Sample:
    box = None if box_xywh is None else np.asarray(box_xywh, dtype=np.float32)
    return Sample(
        sample_id=sample_id,
        keypoints_xy=np.full((num_keypoints, 2), np.nan, dtype=np.float32),
        visible=np.zeros(num_keypoints, dtype=np.float32),
        bbox_xywh=box,
        image_wh=image_wh,
        labelled=False,
        extra={} if box is None else {"crop_padding": 1.0},
        **where,
    )


def _check_box(box_xywh: Sequence[float] | None, image_wh: tuple[int, int] | None, source: Path) -> None:
    if box_xywh is None:
        return
    if len(box_xywh) != 4 or not np.isfinite(np.asarray(box_xywh, dtype=np.float64)).all():
        raise ValueError(f"crop box {list(box_xywh)} for {source} must be 4 finite numbers (x, y, w, h)")
    x, y, w, h = (float(v) for v in box_xywh)
    inside = image_wh is None or (x < image_wh[0] and y < image_wh[1] and x + w > 0 and y + h > 0)
    if not (w > 0 and h > 0 and inside):
        frame = "" if image_wh is None else f" of the {image_wh[0]}x{image_wh[1]} frames"
        raise ValueError(
            f"crop box {list(box_xywh)} (x, y, w, h) for {source} must have a positive size and overlap the "
            f"frame{frame}; give a box inside the frame"
        )


def video_info(video_path: str | Path) -> tuple[int, tuple[int, int], float]:
    """``(frame count, (W, H), fps)`` of a video, as OpenCV reports them."""
    import cv2

    path = Path(video_path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ValueError(f"video {path} cannot be opened by OpenCV (codec missing or file corrupt)")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
    finally:
        capture.release()
    if count < 1 or min(size) < 1:
        raise ValueError(f"video {path} reports {count} frames of {size[0]}x{size[1]}; it is empty or unreadable")
    return count, size, fps


def sample_video_frames(
    video_path: str | Path,
    count: int | None = None,
    step: int | None = None,
    box_xywh: Sequence[float] | None = None,
    num_keypoints: int = 0,
) -> list[Sample]:
    """Unlabelled samples for ``count`` evenly spaced frames (or every ``step``-th) of a video.

    Args:
        box_xywh: crop region ``(x, y, w, h)`` in frame pixels for every frame; None = the whole frame.
        num_keypoints: K of the dataset the frames join (keypoints are all NaN, ``visible`` all 0).

    Returns:
        Samples with ``video_path``, ``frame_index`` and ids ``"<folder>/<video>#<frame:06d>"``.
    """
    path = Path(video_path)
    num_frames, size, _ = video_info(path)
    _check_box(box_xywh, size, path)
    return [
        _unlabelled(
            f"{path.parent.name}/{path.name}#{i:06d}",
            num_keypoints,
            size,
            box_xywh,
            image_path=None,
            video_path=path,
            frame_index=i,
        )
        for i in frame_indices(num_frames, count, step)
    ]


def sample_image_folder(
    folder: str | Path,
    count: int | None = None,
    step: int | None = None,
    box_xywh: Sequence[float] | None = None,
    num_keypoints: int = 0,
) -> list[Sample]:
    """Unlabelled samples for ``count`` evenly spaced images (or every ``step``-th) of a folder, by sorted name.

    Images are not decoded here (``image_wh`` stays None until the frame is read).
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"image folder {root} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    _check_box(box_xywh, None, root)
    return [
        _unlabelled(f"{root.name}/{files[i].name}", num_keypoints, None, box_xywh, image_path=files[i])
        for i in frame_indices(len(files), count, step)
    ]


def unlabelled_samples(
    paths: Sequence[str | Path],
    count: int | None = None,
    step: int | None = None,
    box_xywh: Sequence[float] | None = None,
    num_keypoints: int = 0,
) -> list[Sample]:
    """Unlabelled samples from videos and image folders (``count``/``step`` apply to each source)."""
    samples: list[Sample] = []
    for p in map(Path, paths):
        if p.is_dir():
            samples += sample_image_folder(p, count, step, box_xywh, num_keypoints)
        elif p.suffix.lower() in VIDEO_EXTENSIONS:
            samples += sample_video_frames(p, count, step, box_xywh, num_keypoints)
        elif not p.exists():
            raise FileNotFoundError(f"{p} does not exist; pass videos ({', '.join(VIDEO_EXTENSIONS)}) or image folders")
        else:
            raise ValueError(f"{p} is neither a video ({', '.join(VIDEO_EXTENSIONS)}) nor a folder of images")
    return samples


def read_forward(capture, position: int, frame_index: int) -> tuple[bool, np.ndarray | None, int]:
    """Frame ``frame_index`` from an OpenCV ``capture`` whose next ``read()`` returns frame ``position``: decoded
    forward over gaps of up to ``MAX_FORWARD_GRAB`` frames (exact and cheap), sought to otherwise.

    Returns:
        ``(ok, BGR frame or None, the position of the next read)``.
    """
    import cv2

    if not position <= frame_index <= position + MAX_FORWARD_GRAB:
        capture.set(cv2.CAP_PROP_POS_FRAMES, int(frame_index))
        position = frame_index
    ok = True
    while ok and position < frame_index:
        ok = capture.grab()
        position += 1
    ok, frame = capture.read() if ok else (False, None)
    return bool(ok), frame, position + 1


class FrameReader:
    """Reads sample images lazily: image files directly, video frames by index from captures kept open.

    Frames of one video requested in increasing order (how ``sample_video_frames`` lists them) are decoded by
    reading forward instead of seeking, which for H.264 is several times cheaper. Not thread-safe: use one
    reader per thread or worker.
    """

    def __init__(self) -> None:
        self._captures: dict[Path, tuple[object, int]] = {}  # video -> (cv2.VideoCapture, next frame index)

    def read(self, sample: Sample) -> np.ndarray:
        """The ``(H, W, 3)`` uint8 RGB image of ``sample``."""
        if sample.video_path is not None and sample.frame_index is not None and sample.image_path is None:
            return self.read_frame(sample.video_path, sample.frame_index)
        if sample.image_path is None:
            raise ValueError(f"sample {sample.sample_id} has neither an image_path nor a video_path + frame_index")
        from tardis_edge.data.dataset import read_image_rgb

        return read_image_rgb(sample.image_path)

    def read_frame(self, video_path: str | Path, frame_index: int) -> np.ndarray:
        """Frame ``frame_index`` of ``video_path`` as ``(H, W, 3)`` uint8 RGB."""
        import cv2

        path = Path(video_path)
        if frame_index < 0:
            raise ValueError(f"frame index {frame_index} of video {path} is negative")
        capture, position = self._captures.get(path, (None, -1))
        if capture is None:
            if not path.is_file():
                raise FileNotFoundError(f"video {path} does not exist")
            capture = cv2.VideoCapture(str(path))
            if not capture.isOpened():
                raise ValueError(f"video {path} cannot be opened by OpenCV (codec missing or file corrupt)")
            position = 0
        ok, frame, position = read_forward(capture, position, frame_index)
        self._captures[path] = (capture, position)
        if not ok or frame is None:
            self._captures.pop(path)[0].release()
            raise ValueError(f"frame {frame_index} of video {path} cannot be read (past the end, or a decode error)")
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        for capture, _ in self._captures.values():
            capture.release()
        self._captures.clear()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
