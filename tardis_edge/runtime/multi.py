"""Edge runtime, many animals: the artifact's finder + pose graphs + the tracker, frame by frame, torch-free.

``open_multi`` opens an artifact that has a finder (``model.json``'s ``finder``: ``tardis_edge.artifact``) on one
backend, or any artifact with an external ONNX detector (``detector=PATH``: ``tardis_edge.runtime.detector``; the
artifact's finder, if any, is then not opened); ``MultiAnimalRunner.stream()`` gives a per-video state that turns
frames into tracked animals:

    runner = open_multi("runs/flies/export", precision="int8")
    stream = runner.stream()
    for index, frame_bgr in enumerate(frames):
        animals = stream(frame_bgr, index, color="BGR")   # FramePoses: keypoints (M, K, 2), scores, track_ids

The predictor is ``tardis_edge.multi`` (the one training evaluation uses), the tracker ``tardis_edge.tracking``.
``write_slp`` writes SLEAP predictions with tracks (sleap-io), which SLEAP's GUI opens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tardis_edge.artifact import METADATA_FILE, ArtifactMetadata, check_listed_file
from tardis_edge.finder import FinderConfig
from tardis_edge.multi import FramePoses, MultiAnimalPredictor, MultiConfig
from tardis_edge.runtime.backends import Backend, InferenceBackend
from tardis_edge.runtime.detector import OnnxDetector
from tardis_edge.runtime.runner import ONNXRUNTIME_INT8, Runner, open_runner
from tardis_edge.tracking import TrackedFrame, Tracker, TrackerConfig

FINDER_FIELDS = ("input_size", "sigma", "min_score", "max_animals", "min_distance", "min_box")
TENSORRT_INT8 = "int8_qdq"


def finder_config(meta: ArtifactMetadata, max_animals: int | None = None) -> tuple[FinderConfig, float]:
    """The artifact's finder decode (``max_animals`` overrides its maximum) and the finder's heatmap stride."""
    if meta.finder is None:
        raise ValueError(
            "this artifact has no animal finder (model.json has no 'finder'): it was trained on single-animal data; "
            "use tardis-edge predict without --max-animals, or train on multi-animal labels"
        )
    cfg = FinderConfig(**{k: meta.finder[k] for k in FINDER_FIELDS if k in meta.finder})
    if max_animals is not None:
        cfg = replace(cfg, max_animals=max_animals)
    return cfg, float(meta.finder["stride"])


def finder_file(folder: Path, meta: ArtifactMetadata, precision: str, backend: Backend) -> Path:
    """The finder graph for ``precision`` (``int8``: the one made for the backend), checked against ``model.json``."""
    models = (meta.finder or {}).get("models", {})
    key = precision
    if precision == "int8":
        key = TENSORRT_INT8 if backend is Backend.TENSORRT else ONNXRUNTIME_INT8
    if key not in models:
        raise FileNotFoundError(
            f"{folder} has no {key} finder graph ({METADATA_FILE} lists {sorted(models) or 'none'}); pick another "
            "--precision, or re-export with that precision"
        )
    return check_listed_file(folder, meta, models[key]["file"])


class _FinderBackend:
    """A finder graph as ``tardis_edge.finder.FinderRunner``: whole-frame inputs -> ``(N, 3, h, w)`` outputs."""

    def __init__(self, backend: InferenceBackend) -> None:
        self.backend = backend

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.backend.run(images)["heatmaps"]

    def close(self) -> None:
        self.backend.close()


def open_finder_backend(
    folder: Path,
    meta: ArtifactMetadata,
    backend: Backend,
    precision: str,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
) -> _FinderBackend:
    """Open the finder graph on the pose runner's backend kind."""
    path = finder_file(folder, meta, precision, backend)
    if backend is Backend.ONNXRUNTIME:
        from tardis_edge.runtime.backends.ort import OnnxRuntimeBackend

        return _FinderBackend(OnnxRuntimeBackend(path, providers=providers, threads=threads))
    if backend is Backend.TENSORRT:
        from tardis_edge.runtime.backends.trt import TensorRTBackend

        return _FinderBackend(TensorRTBackend(path.with_suffix(".engine")))
    raise ValueError(f"the {backend.value} backend runs no finder graph; use onnxruntime or tensorrt")


@dataclass
class MultiAnimalStream:
    """One video's state: the predictor's held animals and the tracker's tracks."""

    predictor: MultiAnimalPredictor
    tracker: Tracker
    frames: int = 0
    animals_dropped: int = 0  # animals found beyond the maximum (warned about once)
    detections: int = 0  # frames on which the finder ran
    counts: list[int] = field(default_factory=list)  # animals per frame

    def __call__(
        self,
        frame: np.ndarray,
        frame_index: int | None = None,
        color: str = "RGB",
        boxes: Sequence[Any] | None = None,
    ) -> tuple[FramePoses, TrackedFrame]:
        """The tracked animals of the next frame (``color``: the frame's channel order, ``RGB`` or ``BGR``)."""
        if color not in ("RGB", "BGR"):
            raise ValueError(f"color must be 'RGB' or 'BGR', got {color!r}")
        if color == "BGR":
            import cv2

            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)  # ~10x faster than a reversed-channel copy of a large frame
        else:
            rgb = np.ascontiguousarray(frame)
        poses = self.predictor(rgb, boxes)
        boxes_xywh = np.array([b.as_xywh() for b in poses.boxes]).reshape(-1, 4)
        tracked = self.tracker.update(poses.keypoints, poses.scores, boxes_xywh, frame_index)
        poses.track_ids = tracked.track_ids
        self.frames += 1
        self.detections += int(poses.detected)
        self.animals_dropped += poses.dropped + tracked.num_dropped
        self.counts.append(int((tracked.track_ids >= 0).sum()))
        return poses, tracked


class MultiAnimalRunner:
    """An artifact's pose runner + finder + tracker settings; ``stream()`` per video.

    Args:
        runner: the pose ``Runner``.
        finder: the finder graph (``open_finder_backend``); None with a ``detector``.
        finder_cfg: decode of the finder; ``finder_stride`` its heatmap stride.
        multi: detection schedule, duplicates, maximum number of animals.
        tracker: tracker settings (``max_animals`` defaults to ``multi.max_animals``).
        detector: an external detector that finds the animals instead of the finder.
    """

    def __init__(
        self,
        runner: Runner,
        finder: _FinderBackend | None,
        finder_cfg: FinderConfig,
        finder_stride: float,
        multi: MultiConfig,
        tracker: TrackerConfig | None = None,
        detector: OnnxDetector | None = None,
    ) -> None:
        self.runner, self.finder, self.finder_cfg, self.finder_stride = runner, finder, finder_cfg, finder_stride
        self.multi, self.detector = multi, detector
        self.tracker_config = tracker or TrackerConfig(max_animals=multi.max_animals or None)
        self.owns_runner = False

    @property
    def metadata(self) -> ArtifactMetadata:
        return self.runner.metadata

    def stream(self) -> MultiAnimalStream:
        """A new video: no animals held, no tracks."""
        predictor = MultiAnimalPredictor(
            self.runner.run_crops,
            self.finder,
            self.runner.input_wh,
            self.runner.predict_config,
            self.finder_cfg,
            self.finder_stride,
            self.multi,
            self.runner.flip_indices,
            detector=self.detector,
        )
        return MultiAnimalStream(predictor, Tracker(self.tracker_config))

    def close(self) -> None:
        """Close the finder or detector, and the pose runner when ``open_multi`` opened it."""
        for part in (self.finder, self.detector):
            if part is not None:
                part.close()
        if self.owns_runner:
            self.runner.close()

    def __enter__(self) -> MultiAnimalRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_multi(
    artifact_path: str | Path,
    backend: Backend | str = Backend.ONNXRUNTIME,
    precision: str = "fp32",
    *,
    max_animals: int | None = None,
    detect_every: int = 1,
    expected_animals: int | None = None,
    tracker: TrackerConfig | None = None,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    refine_tracked: bool = True,
    detector: str | Path | None = None,
    detector_classes: Sequence[int] | None = None,
    detector_min_score: float = 0.25,
    **runner_options: Any,
) -> MultiAnimalRunner:
    """Open a multi-animal artifact (pose graph + finder graph) for tracking every animal.

    Args:
        artifact_path: the artifact folder.
        backend, precision, providers, threads, runner_options: as ``open_runner`` (decode, flip_test, ...).
        max_animals: most animals per frame (default: the artifact's, the most seen in one training frame; needed
            with a ``detector`` on an artifact without a finder).
        detect_every: run the finder every N frames; pose-derived boxes in between.
        expected_animals: run the finder on every frame holding fewer animals (default: ``max_animals``).
        tracker: tracker settings (default: ``TrackerConfig(max_animals=...)``).
        refine_tracked: on frames without a finder run, also the refine pass (False: one pass in the held box).
        detector: an ONNX detector export (``tardis_edge.runtime.detector``) that finds the animals instead of the
            finder, in ONNX Runtime with ``providers`` and ``threads``, whatever ``backend`` poses them; any artifact.
        detector_classes: the detector's class ids to keep (None: all; MegaDetector: ``[0]``, animals).
        detector_min_score: a detection needs a score above this.
    """
    kind = Backend.parse(backend)
    folder = Path(artifact_path)
    folder = folder.parent if folder.name == METADATA_FILE else folder
    runner = open_runner(folder, kind, precision, providers, threads=threads, **runner_options)
    try:
        multi = multi_runner(
            runner, folder, kind, precision, max_animals=max_animals, detect_every=detect_every,
            expected_animals=expected_animals, tracker=tracker, providers=providers, threads=threads,
            refine_tracked=refine_tracked, detector=detector, detector_classes=detector_classes,
            detector_min_score=detector_min_score,
        )  # fmt: skip
        multi.owns_runner = True
        return multi
    except Exception:
        runner.close()
        raise


def multi_runner(
    runner: Runner,
    folder: Path,
    backend: Backend,
    precision: str,
    *,
    max_animals: int | None = None,
    detect_every: int = 1,
    expected_animals: int | None = None,
    tracker: TrackerConfig | None = None,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    refine_tracked: bool = True,
    detector: str | Path | None = None,
    detector_classes: Sequence[int] | None = None,
    detector_min_score: float = 0.25,
) -> MultiAnimalRunner:
    """A ``MultiAnimalRunner`` around an open pose ``runner`` of the artifact in ``folder`` (see ``open_multi``)."""
    if detector is not None and runner.metadata.finder is None:  # the finder's decode is not used, only the maximum
        if max_animals is None:
            raise ValueError(
                f"{folder} has no animal finder, so it sets no maximum number of animals for the detector's boxes; "
                "pass --max-animals N (max_animals=N: the most animals in one frame, one track each; 0: no limit)"
            )
        finder_cfg, stride = FinderConfig(max_animals=max_animals), 0.0
    else:
        finder_cfg, stride = finder_config(runner.metadata, max_animals)
    most = finder_cfg.max_animals
    multi = MultiConfig(
        detect_every=detect_every,
        max_animals=most,
        expected_animals=most if expected_animals is None else expected_animals,
        refine_tracked=refine_tracked,
    )
    if tracker is None:
        tracker = TrackerConfig(max_animals=most or None, oks_sigmas=_sigmas(runner.metadata))
    if detector is not None:  # at most `most` boxes, strongest first, as the finder's decode keeps
        onnx_detector = OnnxDetector(
            detector, detector_classes, detector_min_score, providers=providers, threads=threads,
            **({"max_detections": most} if most else {}),
        )  # fmt: skip
        return MultiAnimalRunner(runner, None, finder_cfg, stride, multi, tracker, onnx_detector)
    finder = open_finder_backend(folder, runner.metadata, backend, precision, providers, threads)
    return MultiAnimalRunner(runner, finder, finder_cfg, stride, multi, tracker)


def _sigmas(meta: ArtifactMetadata) -> tuple[float, ...] | None:
    return tuple(float(s) for s in meta.oks_sigmas) if meta.oks_sigmas else None


# ---------------------------------------------------------------------------------------------------- SLEAP output
def write_slp(
    path: str | Path,
    video_path: str | Path,
    meta: ArtifactMetadata,
    frames: Sequence[tuple[int, np.ndarray, np.ndarray, np.ndarray]],
    num_tracks: int,
    track_names: Sequence[str] | None = None,
) -> Path:
    """SLEAP predictions with tracks, written with sleap-io (SLEAP's GUI opens them), atomically.

    Args:
        path: the ``.slp`` file (SLEAP names predictions ``<video>.predictions.slp``).
        video_path: the video the frames come from.
        meta: the artifact (keypoint names and skeleton).
        frames: ``(frame index, keypoints (M, K, 2) image px with NaN where not found, scores (M, K), track ids
            (M,), -1 untracked)``.
        num_tracks: tracks ``0 .. num_tracks-1`` (named ``track_names``, default ``track_<i>``).
    """
    try:
        import sleap_io as sio
    except ImportError as e:
        raise ImportError("writing SLEAP .slp files needs sleap-io: pip install 'tardis-edge[runtime]'") from e
    from tardis_edge.io import atomic_path
    from tardis_edge.multi import instance_score

    names = list(track_names) if track_names is not None else [f"track_{i}" for i in range(num_tracks)]
    nodes = [sio.Node(name) for name in meta.keypoint_names]
    skeleton = sio.Skeleton(nodes=nodes, edges=[(nodes[a], nodes[b]) for a, b in meta.skeleton], name="tardis-edge")
    video = sio.Video(filename=str(Path(video_path).resolve()), open_backend=False)
    tracks = [sio.Track(name=n) for n in names]
    labelled = []
    for index, keypoints, scores, track_ids in frames:
        instances = []
        strength = instance_score(np.nan_to_num(scores, nan=0.0))
        for kp, sc, tid, inst in zip(keypoints, scores, track_ids, strength, strict=True):
            points = np.where(np.isfinite(kp), kp, np.nan)
            instances.append(
                sio.PredictedInstance.from_numpy(
                    points_data=points,
                    point_scores=np.clip(np.nan_to_num(sc, nan=0.0), 0.0, 1.0),
                    skeleton=skeleton,
                    score=float(inst),
                    track=tracks[tid] if 0 <= tid < len(tracks) else None,
                    tracking_score=1.0 if tid >= 0 else 0.0,
                )
            )
        labelled.append(sio.LabeledFrame(video=video, frame_idx=int(index), instances=instances))
    labels = sio.Labels(labeled_frames=labelled, videos=[video], skeletons=[skeleton], tracks=tracks)
    with atomic_path(path) as tmp:
        # sleap-io picks the format from the name: write "<tmp>.slp", then move it onto the temporary file
        named = tmp.with_name(tmp.name + ".slp")
        try:
            sio.save_slp(labels, str(named), verbose=False)
            named.replace(tmp)
        finally:
            named.unlink(missing_ok=True)
    return Path(path)
