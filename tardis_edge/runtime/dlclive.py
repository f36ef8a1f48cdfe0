"""DLC-live's interface over any exported tardis-edge artifact (edge runtime, no torch).

DeepLabCut-live users embed pose estimation in their own loop: ``DLCLive(model_path, processor=...)``, then
``init_inference(frame)`` once and ``get_pose(frame)`` per frame, each returning a ``(K, 3)`` array of ``x, y,
likelihood`` in the frame's pixels, with OpenCV's BGR frames and a ``Processor`` plugin called on every pose. This
class keeps that interface, so such code runs a tardis-edge artifact (ONNX Runtime or TensorRT) unchanged::

    from tardis_edge.runtime import DLCLive
    live = DLCLive("artifact/", processor=my_processor)   # any object with process(pose, **kwargs) -> pose
    pose = live.init_inference(frame_bgr)                 # opens the model; the first pose
    pose = live.get_pose(frame_bgr, frame_time=t)         # kwargs go to processor.process(pose, **kwargs)

The pose follows DeepLabCut's conventions (``tardis_edge.runtime.writers``, "Values"): likelihood is the keypoint's
score clipped to [0, 1], and a keypoint not found (score <= 0) gets likelihood 0 at its last found position (the
centre of the crop it was searched in before it is ever found), so processors such as DLC-live's Kalman filter never
see NaN. Coordinates are in the pixels of the frame passed in (pixel-centre convention of ``tardis_edge.geometry``),
``cropping`` and ``resize`` undone, as DLC-live returns them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tardis_edge.artifact import ArtifactMetadata
from tardis_edge.predict import confident
from tardis_edge.runtime.backends import Backend
from tardis_edge.runtime.boxes import BoxFollower, FollowConfig
from tardis_edge.runtime.runner import Runner, open_runner
from tardis_edge.runtime.writers import draw_pose

# DLC-live's model_type -> our backend ("base" is DLC-live's name for its default, un-optimised model)
MODEL_TYPES = {"onnx": Backend.ONNXRUNTIME, "base": Backend.ONNXRUNTIME, "tensorrt": Backend.TENSORRT}
PRECISIONS = ("FP32", "FP16", "INT8")
WINDOW = "tardis-edge DLCLive"


class DLCLive:
    """Pose estimation on single frames with DLC-live's interface (``dlclive.DLCLive``).

    Args:
        model_path: the artifact folder (``tardis-export`` output, with ``model.json``).
        model_type: ``"onnx"`` (ONNX Runtime; ``"base"`` is accepted as DLC-live's default name) or ``"tensorrt"``.
        precision: ``"FP32"``, ``"FP16"`` or ``"INT8"``: which exported model runs.
        cropping: ``[x1, x2, y1, y2]``: only ``frame[y1:y2, x1:x2]`` is analysed; the pose is in full-frame pixels.
        dynamic: ``(state, detection_threshold, margin)`` as DLC-live. ``state`` True: the crop follows the animal from
            frame to frame (the runtime's ``BoxFollower``; a keypoint counts as detected above
            ``detection_threshold``). ``margin`` is not used: the followed box is padded relative to the animal's size
            (the artifact's trained framing), not by a fixed number of pixels. False (default): every frame is searched
            whole, then refined around the animal.
        resize: scale the frame by this factor before inference (the pose is in the original frame's pixels).
        convert2rgb: True (default): frames are BGR, as OpenCV reads them, and are converted; False: frames are RGB.
        processor: an object with ``process(pose, **kwargs) -> pose`` (DLC-live's ``Processor``; ``save`` is the
            caller's), called on every pose with the keyword arguments of ``get_pose``.
        display: show each frame with its pose in an OpenCV window (needs OpenCV with GUI support, not the headless
            build).
        pcutoff: display only keypoints with a likelihood above this.
        display_radius: keypoint radius in the window, pixels.
        providers: ONNX Runtime execution providers (default: CUDA if available, then CPU).
        threads: ONNX Runtime intra-op threads.
        engine: TensorRT engine path (default: the artifact's engine for ``precision``).

    Attributes:
        bodyparts: the keypoint names, in pose row order.
        pose: the last pose returned (after the processor), ``(K, 3)``.
        is_initialized: the model is open.
    """

    def __init__(
        self,
        model_path: str | Path,
        model_type: str = "onnx",
        precision: str = "FP32",
        cropping: Sequence[int] | None = None,
        dynamic: tuple[bool, float, int] = (False, 0.5, 10),
        resize: float | None = None,
        convert2rgb: bool = True,
        processor: Any = None,
        display: bool = False,
        pcutoff: float = 0.5,
        display_radius: int = 3,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        engine: str | Path | None = None,
    ) -> None:
        if model_type not in MODEL_TYPES:
            raise ValueError(f"unknown model_type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
        if str(precision).upper() not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if cropping is not None:
            if len(cropping) != 4 or not (0 <= cropping[0] < cropping[1] and 0 <= cropping[2] < cropping[3]):
                raise ValueError(
                    f"cropping must be [x1, x2, y1, y2] with 0 <= x1 < x2 and 0 <= y1 < y2, got {cropping}"
                )
        if len(dynamic) != 3:
            raise ValueError(f"dynamic must be (state, detection_threshold, margin), got {dynamic!r}")
        if resize is not None and not resize > 0:
            raise ValueError(f"resize must be a positive factor, got {resize}")
        if processor is not None and not callable(getattr(processor, "process", None)):
            raise TypeError(
                f"processor {type(processor).__name__} has no process(pose, **kwargs) method (DLC-live's Processor "
                "interface)"
            )
        self.path = Path(model_path)
        self.metadata = ArtifactMetadata.load(self.path)  # fails now, naming the folder, if it is no artifact
        self.bodyparts = list(self.metadata.keypoint_names)
        self.model_type = model_type
        self.precision = str(precision).upper()
        self.cropping = None if cropping is None else [int(v) for v in cropping]
        self.dynamic = (bool(dynamic[0]), float(dynamic[1]), dynamic[2])
        self.resize = resize
        self.convert2rgb = convert2rgb
        self.processor = processor
        self.display = display
        self.pcutoff = pcutoff
        self.display_radius = display_radius
        self._open_options = {"providers": providers, "threads": threads, "engine": engine}
        self.runner: Runner | None = None
        self._follower: BoxFollower | None = None
        self._last_found = np.full((len(self.bodyparts), 2), np.nan)  # (K, 2) full-frame pixels
        self.pose: np.ndarray | None = None
        self.is_initialized = False

    def init_inference(self, frame: np.ndarray | None = None, **kwargs: Any) -> np.ndarray | None:
        """Open the model and, given a frame, return its pose (``get_pose``): the first call is the slow one."""
        if self.runner is None:
            follow = FollowConfig(padding=self.metadata.padding)
            if self.dynamic[0]:
                follow = FollowConfig(padding=self.metadata.padding, min_score=self.dynamic[1])
            backend = MODEL_TYPES[self.model_type]
            self.runner = open_runner(
                self.path,
                backend=backend,
                precision=self.precision.lower(),
                providers=self._open_options["providers"] if backend is Backend.ONNXRUNTIME else None,
                threads=self._open_options["threads"] if backend is Backend.ONNXRUNTIME else None,
                engine=self._open_options["engine"] if backend is Backend.TENSORRT else None,
                batch_size=1,
                follow=follow,
            )
            self._follower = self.runner.new_follower() if self.dynamic[0] else None
        self.is_initialized = True
        return None if frame is None else self.get_pose(frame, **kwargs)

    def process_frame(self, frame: np.ndarray) -> np.ndarray:
        """The part of ``frame`` that is analysed: cropped and resized as configured, 3 channels, in the frame's own
        channel order (the runner converts BGR)."""
        import cv2

        if not isinstance(frame, np.ndarray):
            raise TypeError(f"frame: expected a numpy (H, W, 3) uint8 image, got {type(frame).__name__}")
        if frame.ndim == 2:  # a grey camera: DLC-live converts it too
            frame = np.repeat(frame[..., None], 3, axis=-1)
        if self.cropping is not None:
            x1, x2, y1, y2 = self.cropping
            if x2 > frame.shape[1] or y2 > frame.shape[0]:
                raise ValueError(
                    f"cropping {self.cropping} reaches beyond the {frame.shape[1]}x{frame.shape[0]} frame; pass "
                    "[x1, x2, y1, y2] inside it"
                )
            frame = frame[y1:y2, x1:x2]
        if self.resize is not None and self.resize != 1:
            h, w = frame.shape[:2]
            size = (max(1, round(w * self.resize)), max(1, round(h * self.resize)))
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(frame)

    def get_pose(self, frame: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        """The pose of one frame: ``(K, 3)`` float64 ``x, y, likelihood`` in the frame's pixels.

        Args:
            frame: ``(H, W, 3)`` uint8 (BGR unless ``convert2rgb=False``) or ``(H, W)`` grey.
            kwargs: passed on to ``processor.process(pose, **kwargs)`` (e.g. ``frame_time``).
        """
        if frame is None:
            raise ValueError("get_pose needs a frame: pass the (H, W, 3) uint8 image to estimate the pose of")
        if self.runner is None:
            self.init_inference()
        assert self.runner is not None
        full_wh = (frame.shape[1], frame.shape[0])
        image = self.process_frame(frame)
        color = "BGR" if self.convert2rgb else "RGB"
        if self._follower is not None:
            result = self.runner.track([image], self._follower, color=color)
        else:
            result = self.runner([image], color=color)
        keypoints, scores, box = result.keypoints[0], result.scores[0], result.boxes[0]  # (K, 2), (K,), crop box
        if self.display:
            self._show(image, keypoints, scores)
        keypoints = self._to_frame(keypoints, image.shape[1::-1], full_wh)
        found = confident(keypoints, scores, 0.0)  # (K,): the predictor's rule for a keypoint found
        self._last_found[found] = keypoints[found]
        x, y, w, h = box.as_xywh()
        centre = self._to_frame(np.array([[x + w / 2, y + h / 2]]), image.shape[1::-1], full_wh)[0]
        fallback = np.where(np.isfinite(self._last_found), self._last_found, centre)
        xy = np.where(found[:, None], keypoints, fallback)
        likelihood = np.where(found, np.clip(scores, 0.0, 1.0), 0.0)
        self.pose = np.column_stack([xy, likelihood]).astype(np.float64)
        if self.processor is not None:
            self.pose = self.processor.process(self.pose, **kwargs)
        return self.pose

    def _to_frame(self, xy: np.ndarray, image_wh: tuple[int, int], frame_wh: tuple[int, int]) -> np.ndarray:
        """Pixels of the analysed image -> pixels of the frame passed in (undo resize, then cropping)."""
        out = np.asarray(xy, np.float64).copy()
        if self.resize is not None and self.resize != 1:
            crop_wh = (
                (self.cropping[1] - self.cropping[0], self.cropping[3] - self.cropping[2])
                if self.cropping
                else frame_wh
            )
            scale = np.array(image_wh, np.float64) / np.array(crop_wh, np.float64)
            out = (out + 0.5) / scale - 0.5  # pixel centres, as cv2.resize maps them
        if self.cropping is not None:
            out += (self.cropping[0], self.cropping[2])
        return out

    def _show(self, image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray) -> None:
        import cv2

        bgr = image if self.convert2rgb else np.ascontiguousarray(image[..., ::-1])
        drawn = draw_pose(bgr, keypoints, np.clip(scores, 0, 1), self.metadata.skeleton, min_score=self.pcutoff)
        try:
            cv2.imshow(WINDOW, drawn)
            cv2.waitKey(1)
        except cv2.error as exc:
            raise RuntimeError(
                "display=True needs OpenCV with GUI support (pip install opencv-python; the headless build has none), "
                f"or pass display=False: {str(exc).strip().splitlines()[-1]}"
            ) from None

    def close(self) -> None:
        """Close the model (and the display window)."""
        if self.runner is not None:
            self.runner.close()
        self.runner = None
        self._follower = None
        self.is_initialized = False
        if self.display:
            import cv2

            with contextlib.suppress(cv2.error):  # never shown
                cv2.destroyWindow(WINDOW)

    def __enter__(self) -> DLCLive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
