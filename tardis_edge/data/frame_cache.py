"""Decoded video frames on disk (data stage), so training reads a labelled video frame in milliseconds.

Seeking to a frame of an H.264 video decodes from the last keyframe: ~120 ms for a 1024x1024 frame of the flies
clip, every time a shuffled epoch asks for it. ``cache_video_frames`` decodes the frames a dataset needs once,
reading each video forward (about 1 ms a frame there), and writes them as raw ``.npy`` arrays (one channel for
grey videos: 1 MB per 1024x1024 frame, read back in well under a millisecond; PNG would take a quarter of the
space but ~7 ms to decode and ~13 ms to encode); ``read_sample_image`` (``tardis_edge.data.dataset``) reads a
cached frame when there is one and decodes from the video otherwise, so a cache only ever makes reading faster,
never different. Only frames that samples need are cached (a SLEAP project's labelled frames, not whole videos).

The cache folder of a video is ``<root>/<video stem>-<key>/<frame:06d>.npy``; ``key`` hashes the video's absolute
path, size and modification time, so a replaced or edited video gets a new folder (old folders are not removed:
delete ``<root>`` to reclaim the space). ``root``: the ``root`` argument, else ``$TARDIS_FRAME_CACHE``, else
``$XDG_CACHE_HOME/tardis-edge/frames`` (``~/.cache/tardis-edge/frames``). Every file is written atomically, so a
killed run leaves whole frames or none, and processes filling one cache at once only repeat work.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tardis_edge.data.sample import Sample

CACHE_ENV = "TARDIS_FRAME_CACHE"


def default_cache_root() -> Path:
    """``$TARDIS_FRAME_CACHE``, else ``$XDG_CACHE_HOME/tardis-edge/frames``, else ``~/.cache/tardis-edge/frames``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tardis-edge" / "frames"


def frame_cache_dir(video_path: str | Path, root: str | Path | None = None) -> Path:
    """The cache folder of one video (it need not exist yet)."""
    path = Path(video_path).resolve()
    stat = path.stat()
    key = hashlib.sha1(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return Path(root if root is not None else default_cache_root()) / f"{path.stem}-{key}"


def _frame_file(folder: Path, frame_index: int) -> Path:
    return folder / f"{int(frame_index):06d}.npy"


def read_cached_frame(video_path: str | Path, frame_index: int, root: str | Path | None = None) -> np.ndarray | None:
    """Frame ``frame_index`` of ``video_path`` from the cache as ``(H, W, 3)`` uint8 RGB, or None if not cached.

    A cached file that cannot be read back whole (a disk fault) is removed and reported as not cached.
    """
    try:
        file = _frame_file(frame_cache_dir(video_path, root), frame_index)
        image = np.load(file, allow_pickle=False)
    except FileNotFoundError:  # no video (the caller names it), or the frame is not cached
        return None
    except (OSError, ValueError, EOFError):
        file.unlink(missing_ok=True)
        return None
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        file.unlink(missing_ok=True)
        return None
    if image.ndim == 2:  # grey video: one channel on disk
        import cv2

        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return image


@dataclass
class FrameCacheReport:
    """What ``cache_video_frames`` did: frames decoded and written, frames already cached, seconds taken."""

    videos: int
    written: int
    already_cached: int
    seconds: float
    root: Path


def _write_frame(file: Path, frame_bgr: np.ndarray) -> None:
    """Write one frame atomically (temporary file + rename), without ``tardis_edge.io``'s fsync: a cache file lost
    to a power cut is decoded again, and fsyncing 1.5 GB of frames made filling the cache 15x slower."""
    blue = frame_bgr[..., 0]
    grey = bool((blue == frame_bgr[..., 1]).all() and (blue == frame_bgr[..., 2]).all())
    image = blue if grey else np.ascontiguousarray(frame_bgr[..., ::-1])  # (H, W) grey or (H, W, 3) RGB
    fd, tmp_name = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, image, allow_pickle=False)
        os.replace(tmp_name, file)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def _cache_one_video(video: Path, wanted: list[int], folder: Path) -> int:
    """Decode the ``wanted`` (sorted, not yet cached) frames of ``video`` forward and write them; returns count."""
    import cv2

    from tardis_edge.data.video import read_forward

    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise ValueError(f"video {video} cannot be opened by OpenCV (codec missing or file corrupt)")
    written = 0
    position = 0  # index of the frame the next read() returns
    try:
        for frame_index in wanted:
            ok, frame, position = read_forward(capture, position, frame_index)
            if not ok or frame is None:
                raise ValueError(
                    f"frame {frame_index} of video {video} cannot be read (past the end at frame {position - 1}, "
                    "or a decode error); are the labels made on this video?"
                )
            _write_frame(_frame_file(folder, frame_index), frame)
            written += 1
    finally:
        capture.release()
    return written


def cache_video_frames(samples: Iterable[Sample], root: str | Path | None = None) -> FrameCacheReport:
    """Decode and cache every video frame ``samples`` need (samples with an image file are ignored).

    Frames already cached are not decoded again; the others are read forward through each video once (seeking
    only over gaps longer than ``tardis_edge.data.video.MAX_FORWARD_GRAB`` frames).

    Args:
        samples: samples with ``video_path`` + ``frame_index`` (a ``PoseDataset`` or a part of one).
        root: the cache root (default: ``default_cache_root()``).

    Raises:
        FileNotFoundError: a video does not exist. ValueError: a frame cannot be decoded (naming video and frame).
    """
    start = time.perf_counter()
    cache_root = Path(root) if root is not None else default_cache_root()
    needed: dict[Path, set[int]] = {}
    for s in samples:
        if s.image_path is None and s.video_path is not None and s.frame_index is not None:
            needed.setdefault(Path(s.video_path), set()).add(int(s.frame_index))
    written = cached = 0
    for video, frames in needed.items():
        if not video.is_file():
            raise FileNotFoundError(f"video {video} does not exist; it holds labelled frames the dataset needs")
        folder = frame_cache_dir(video, cache_root)
        folder.mkdir(parents=True, exist_ok=True)
        present = {int(f.stem) for f in folder.glob("*.npy") if f.stem.isdigit()}
        missing = sorted(frames - present)
        cached += len(frames) - len(missing)
        if missing:
            written += _cache_one_video(video, missing, folder)
    return FrameCacheReport(len(needed), written, cached, time.perf_counter() - start, cache_root)
