"""Frame sources for the edge runtime: image files and folders, video files, cameras and stream URLs (OpenCV),
read by a background thread into a bounded queue so long videos run in bounded memory.

A frame that cannot be decoded is reported, never fatal. For a video whose container announces a frame count,
``VideoCapture.read()`` failing before that count is a bad frame (a corrupt chunk: FFmpeg consumed the packet and
the next read continues after it), failing at or after it is the end. Without a count (streams, some containers),
failures followed by a good frame were bad frames; failures up to the end of the stream are the end. Either way,
``max_consecutive_bad`` failures in a row end the source (a truncated file) and the summary says so.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LOG = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MAX_CONSECUTIVE_BAD = 100


@dataclass
class Frame:
    """One frame from a source: the image (BGR, as OpenCV reads it) or None with the reason it is bad."""

    index: int  # frame number (video) or position in the list (images)
    name: str  # image file name, or the frame number as text
    image: np.ndarray | None  # (H, W, 3) uint8 BGR
    error: str | None = None


@dataclass
class SourceReport:
    """What a source delivered: counts, the bad frames and why, and how it ended."""

    name: str
    kind: str  # "images" | "video" | "camera" | "stream"
    frames_read: int = 0
    bad_frames: list[tuple[int, str]] = field(default_factory=list)  # (index, reason)
    expected_frames: int | None = None  # the container's frame count (video) or number of files (images)
    ended: str = "end of input"


class FrameSource:
    """Base class: ``iter()`` yields ``Frame`` objects; ``report`` says what happened."""

    kind = "images"

    def __init__(self, name: str) -> None:
        self.name = name
        self.report = SourceReport(name, self.kind)
        self.fps: float | None = None

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def _bad(self, index: int, name: str, reason: str) -> Frame:
        LOG.warning("%s: skipping frame %s: %s", self.name, name, reason)
        self.report.bad_frames.append((index, reason))
        return Frame(index, name, None, reason)


class ImageSource(FrameSource):
    """Image files (in the given order); an unreadable file is a bad frame."""

    kind = "images"

    def __init__(self, name: str, paths: list[Path], max_frames: int | None = None) -> None:
        super().__init__(name)
        self.all_paths = paths  # what the input holds, before max_frames
        self.paths = paths[:max_frames] if max_frames is not None else paths
        self.report.expected_frames = len(self.paths)

    def __iter__(self) -> Iterator[Frame]:
        import cv2

        for i, path in enumerate(self.paths):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # grey -> 3 channels, alpha dropped, 16 bit -> 8
            if image is None:
                yield self._bad(i, path.name, f"OpenCV cannot decode {path}")
                continue
            self.report.frames_read += 1
            yield Frame(i, path.name, image)


class VideoSource(FrameSource):
    """A video file, camera index or stream URL through ``cv2.VideoCapture``.

    Args:
        spec: file path, camera index (``"0"``) or URL (``rtsp://…``).
        max_frames: stop after this many frames (bad ones included).
        max_consecutive_bad: end the source after this many unreadable frames in a row.
    """

    def __init__(
        self, spec: str, name: str, max_frames: int | None = None, max_consecutive_bad: int = MAX_CONSECUTIVE_BAD
    ) -> None:
        import cv2

        self.kind = "camera" if spec.isdigit() else "stream" if "://" in spec else "video"
        super().__init__(name)
        self.report.kind = self.kind
        self.spec = spec
        self.max_frames = max_frames
        self.max_consecutive_bad = max_consecutive_bad
        if self.kind == "video":
            early = truncated_or_empty(Path(spec))  # before FFmpeg, which would only log "moov atom not found"
            if early:
                raise ValueError(early)
        self.capture = cv2.VideoCapture(int(spec) if spec.isdigit() else spec)
        if not self.capture.isOpened():
            if self.kind == "video":
                raise ValueError(why_unreadable(Path(spec)))
            raise ValueError(
                f"OpenCV cannot open {self.kind} {spec!r}; check the index/URL (is the camera connected, the stream "
                "reachable?) and that OpenCV was built with FFmpeg (opencv-python-headless is)"
            )
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 and self.kind == "video" else None
        self.report.expected_frames = (
            min(self.frame_count, max_frames) if self.frame_count and max_frames else self.frame_count
        )
        fps = float(self.capture.get(cv2.CAP_PROP_FPS))
        self.fps = fps if fps > 0 else None

    def __iter__(self) -> Iterator[Frame]:
        pending: list[int] = []  # the current run of failed reads
        index = 0
        try:
            while self.max_frames is None or index < self.max_frames:
                ok, image = self.capture.read()
                if ok and image is not None:
                    if self.frame_count is None:  # failures followed by a good frame were bad frames
                        for i in pending:
                            yield self._bad(i, str(i), "decode failed (corrupt data)")
                    pending.clear()
                    self.report.frames_read += 1
                    yield Frame(index, str(index), image)
                else:
                    if self.frame_count is not None and index >= self.frame_count:
                        break
                    pending.append(index)
                    if self.frame_count is not None:  # the container says this frame exists
                        yield self._bad(index, str(index), "decode failed (corrupt data)")
                    if len(pending) >= self.max_consecutive_bad:
                        self._end_after_failures(index, pending)
                        return
                index += 1
            else:
                self.report.ended = f"max_frames {self.max_frames} reached"
            if pending and self.frame_count is None:
                self.report.ended = f"end of stream ({len(pending)} failed reads at the end)"
            elif pending:
                self.report.ended = (
                    f"the last {len(pending)} frames the header announces could not be decoded (truncated file?)"
                )
        finally:
            self.capture.release()

    def _end_after_failures(self, index: int, pending: list[int]) -> None:
        if self.frame_count is not None:
            missing = self.frame_count - index - 1
            self.report.ended = (
                f"stopped after {len(pending)} unreadable frames in a row at frame {index}; {missing} more frames the "
                "header announces were not read (truncated or damaged file?)"
            )
            LOG.warning("%s: %s", self.name, self.report.ended)
        else:  # a stream without a frame count ends this way
            self.report.ended = f"end of stream after frame {index - len(pending)} ({len(pending)} failed reads)"
            LOG.info("%s: %s", self.name, self.report.ended)


# Top-level box types an ISO base media file (MP4, MOV, M4V, 3GP) starts with.
_MP4_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp", b"sidx", b"moof"}
_CONTAINERS = (  # (test on the first 16 bytes, name)
    (lambda h: h[:4] == b"RIFF" and h[8:12] == b"AVI ", "AVI"),
    (lambda h: h[:4] == b"\x1a\x45\xdf\xa3", "MKV/WebM"),
    (lambda h: h[:1] == b"\x47", "MPEG-TS"),
    (lambda h: h[:4] == b"\x00\x00\x01\xba", "MPEG-PS"),
    (lambda h: h[:3] == b"FLV", "FLV"),
    (lambda h: h[:4] == b"\x30\x26\xb2\x75", "ASF/WMV"),
    (lambda h: h[:4] == b"OggS", "Ogg"),
    (lambda h: h[:9] == b"YUV4MPEG2", "Y4M"),
    (lambda h: h[:4] == b"\x00\x00\x00\x01" or h[:3] == b"\x00\x00\x01", "raw H.264/H.265 stream"),
)


def _mp4_top_boxes(path: Path) -> list[bytes]:
    """Types of the top-level boxes of an MP4/MOV file, as far as the file goes."""
    size = path.stat().st_size
    boxes = []
    with open(path, "rb") as f:
        offset = 0
        while offset + 8 <= size:
            f.seek(offset)
            head = f.read(16)
            length, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if length == 1 and len(head) == 16:  # 64-bit size follows
                length = int.from_bytes(head[8:16], "big")
            boxes.append(kind)
            if length == 0:  # to the end of the file
                break
            if length < 8:
                break
            offset += length
    return boxes


def truncated_or_empty(path: Path) -> str | None:
    """Why ``path`` cannot be a readable video before opening it (empty, or an MP4/MOV without its index), or None."""
    if not path.is_file():
        return None
    size = path.stat().st_size
    if size == 0:
        return f"video {path} is empty (0 bytes): the recording was never written; check the recorder or copy it again"
    with open(path, "rb") as f:
        head = f.read(16)
    if head[4:8] in _MP4_BOXES and b"moov" not in _mp4_top_boxes(path):
        return (
            f"video {path} is a truncated MP4/MOV ({size} bytes): it has no 'moov' index, which the recorder writes "
            "last, so the recording was cut off (disk full, power loss, recorder killed); repair it (e.g. untrunc with "
            "a good file from the same camera) or record again"
        )
    return None


def why_unreadable(path: Path) -> str:
    """One line on why OpenCV cannot open the video file ``path``: what the file is, and what to do."""
    early = truncated_or_empty(path)
    if early:
        return early
    with open(path, "rb") as f:
        head = f.read(16)
    if head[4:8] in _MP4_BOXES:
        container: str | None = "MP4/MOV"
    else:
        container = next((name for test, name in _CONTAINERS if test(head)), None)
    if container is None:
        return (
            f"{path} is not a video: its first bytes ({head[:8].hex(' ')}) match no video container (MP4/MOV, AVI, "
            "MKV/WebM, MPEG-TS/PS, FLV, ASF/WMV, Ogg); check that it is the file you meant (image files need an image "
            "suffix: " + ", ".join(IMAGE_SUFFIXES) + ")"
        )
    return (
        f"video {path} looks like {container} but OpenCV cannot open it: damaged, or a codec this OpenCV build lacks "
        "(opencv-python-headless has FFmpeg); convert it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4"
    )


def _is_camera_or_url(spec: str) -> bool:
    return spec.isdigit() or "://" in spec


def image_files(folder: Path) -> list[Path]:
    """The image files of ``folder`` (not recursive), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def open_sources(inputs: list[str], max_frames: int | None = None) -> list[FrameSource]:
    """One source per video/camera/URL/folder; the image files given one by one form one more source ("images").

    Every input is checked before anything runs: a missing path or an unreadable video is an error naming it.
    """
    sources: list[FrameSource] = []
    loose: list[Path] = []
    names: set[str] = set()

    def unique(name: str) -> str:
        base, n = name, 1
        while name in names:
            n += 1
            name = f"{base}_{n}"
        names.add(name)
        return name

    for spec in inputs:
        if _is_camera_or_url(spec):
            label = f"camera{spec}" if spec.isdigit() else "stream"
            sources.append(VideoSource(spec, unique(label), max_frames))
            continue
        path = Path(spec)
        if path.is_dir():
            files = image_files(path)
            if not files:
                raise ValueError(
                    f"folder {path} has no images ({', '.join(IMAGE_SUFFIXES)}); pass image files or videos"
                )
            sources.append(ImageSource(unique(path.name or "images"), files, max_frames))
        elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            loose.append(path)
        elif path.is_file():
            sources.append(VideoSource(spec, unique(path.stem), max_frames))
        else:
            raise FileNotFoundError(
                f"input {spec!r} is not a file, folder, camera index or URL; check the path (videos, image files and "
                "image folders are accepted)"
            )
    if loose:
        sources.append(ImageSource(unique("images"), loose, max_frames))
    return sources


_END = object()


class ThreadedReader:
    """Decode frames on a background thread into a bounded queue; iterate in the consumer.

    Memory stays bounded by ``queue_size`` frames however long the video. Errors in the reader thread are
    re-raised in the consumer. Leaving the loop early (``close()``, or the ``with`` block) stops the thread.
    """

    def __init__(self, source: FrameSource, queue_size: int = 32) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.source = source
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name=f"reader:{source.name}", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            for frame in self.source:
                if not self._put(frame):
                    return
            self._put(_END)
        except BaseException as e:  # handed to the consumer, which re-raises it
            self._put(e)

    def __iter__(self) -> Iterator[Frame]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> ThreadedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
