"""The edge runtime's runner: frames in, keypoints in image pixels out, through an exported artifact.

``open_runner`` reads an artifact folder written by ``tardis-export`` (``model.json`` + ONNX files, or a TensorRT
engine with its sidecar) — or, for parity checks, a training run's ``model.pt`` — and returns a ``Runner``. The
runner is the backend plugged into the two-pass predictor training evaluation uses (``tardis_edge.predict``): that
crops each frame, has the backend decode in the graph or hands its heatmaps to ``tardis_edge.decode_np``
(identical results), and maps keypoints back through the inverse crop affine. No torch is imported unless the
PyTorch backend is chosen.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tardis_edge import decode_np, geometry
from tardis_edge.artifact import (
    METADATA_FILE,
    OUTPUT_HEATMAPS,
    OUTPUT_KEYPOINTS,
    OUTPUT_SCORES,
    ArtifactMetadata,
    check_listed_file,
)
from tardis_edge.predict import CropPrediction, PredictConfig, crop_keypoints, predict_boxes, predict_frames
from tardis_edge.runtime.backends import Backend, InferenceBackend, run_in_chunks
from tardis_edge.runtime.boxes import BoxFollower, FollowConfig, boxes_from_xywh, is_lost
from tardis_edge.runtime.preprocess import as_frame_list

LOG = logging.getLogger(__name__)
DECODES = ("graph", "numpy")
ENGINE_SUFFIXES = (".engine", ".plan")
# precision "int8" names two graphs (tardis-export --int8): each backend runs the one made for it
ONNXRUNTIME_INT8 = "int8_cpu"  # uint8 activations: ONNX Runtime's integer kernels
TENSORRT_INT8 = "int8_qdq"  # TensorRT's explicit-quantization placement
BoxesArg = Sequence[geometry.CropBox | None] | np.ndarray | None


@dataclass
class PoseResult:
    """Keypoints of a batch of frames, one animal per frame.

    Attributes:
        keypoints: ``(N, K, 2)`` float64 ``(x, y)`` in original image pixels (pixel-centre convention of
            ``tardis_edge.geometry``); NaN where the keypoint was not found (score <= 0).
        scores: ``(N, K)`` float32 heatmap maxima (the confidence; ~1 at a clean peak).
        boxes: the crop box each frame's final keypoints came from (image pixels).
    """

    keypoints: np.ndarray
    scores: np.ndarray
    boxes: list[geometry.CropBox]


def _model_entries(meta: ArtifactMetadata, precision: str, prefer: str | None = None) -> list[dict]:
    """``meta.models`` entries for ``precision`` (key ``fp32``, ``fp32_heatmaps``, ``int8_cpu`` … or a
    ``"precision"`` field), the one keyed ``prefer`` first: ``int8`` names two graphs, one per runtime."""
    found = []
    for key, entry in meta.models.items():
        if not isinstance(entry, dict):
            continue
        tag = str(entry.get("precision", key))
        if key == precision or tag == precision or key.startswith(f"{precision}_"):
            found.append((key != prefer, entry))
    return [entry for _, entry in sorted(found, key=lambda item: item[0])]  # stable: model.json order otherwise


def artifact_model_file(folder: Path, meta: ArtifactMetadata, precision: str, heatmaps: bool) -> Path:
    """The ONNX file of ``precision`` with the wanted outputs (``heatmaps``, or ``keypoints`` + ``scores``), checked.

    Only files ``model.json`` lists are candidates (``{"file", "outputs"}`` per ``models`` entry, an optional
    ``"heatmaps_file"``), never a file found by its name alone; the one chosen must have the size and SHA-256
    ``model.json`` records (``tardis_edge.artifact.check_listed_file``).
    """
    want = {OUTPUT_HEATMAPS} if heatmaps else {OUTPUT_KEYPOINTS, OUTPUT_SCORES}
    candidates: list[str] = []
    for entry in _model_entries(meta, precision, prefer=ONNXRUNTIME_INT8):
        outputs = entry.get("outputs")
        name = entry.get("file")
        if name and (set(outputs) >= want if outputs else ("heatmaps" in str(name)) == heatmaps):
            candidates.append(str(name))
        if heatmaps and entry.get("heatmaps_file"):
            candidates.append(str(entry["heatmaps_file"]))
    kind = "heatmaps" if heatmaps else "keypoints + scores (decode in the graph)"
    listed = sorted(meta.models) or "none"
    if not candidates:
        raise FileNotFoundError(
            f"{folder} has no {precision} ONNX model with {kind} outputs ({METADATA_FILE} lists precisions {listed}); "
            "pick another --precision or --decode, or re-export with that precision"
        )
    present = [name for name in candidates if (folder / name).is_file()]
    if not present:
        raise FileNotFoundError(
            f"{folder / candidates[0]} does not exist, though {METADATA_FILE} lists it as the {precision} model with "
            f"{kind} outputs; the artifact is incomplete: re-export it with tardis-export"
        )
    return check_listed_file(folder, meta, present[0])


def check_graph_matches(path: Path, input_shape: Sequence, output_shapes: dict[str, Sequence], meta: ArtifactMetadata):
    """Refuse a graph whose input size or keypoint count disagrees with ``model.json`` (dynamic axes pass)."""
    h, w = (input_shape[2], input_shape[3]) if len(input_shape) == 4 else (None, None)
    if isinstance(h, int) and isinstance(w, int) and (w, h) != (meta.input_width, meta.input_height):
        raise ValueError(
            f"{path} takes {w}x{h} input but {METADATA_FILE} says {meta.input_width}x{meta.input_height}: the two "
            "come from different exports (or model.json was edited); re-export the artifact"
        )
    k = len(meta.keypoint_names)
    for name, shape in output_shapes.items():
        if len(shape) >= 2 and isinstance(shape[1], int) and shape[1] != k:
            raise ValueError(
                f"{path} outputs {shape[1]} keypoints ({name}) but {METADATA_FILE} names {k}: the two come from "
                "different exports; re-export the artifact"
            )


class Runner:
    """Top-down pose estimation on frames through one backend.

    Colour order: ``__call__`` and ``track`` take RGB frames by default (the order the artifact's graph and the data
    loaders use); frames from OpenCV (``cv2.imread``, ``cv2.VideoCapture``) are BGR, so pass ``color="BGR"`` for
    them: on every call, say which. ``DLCLive`` (``tardis_edge.runtime.dlclive``) defaults to BGR, as DLC-live does,
    and ``tardis-edge predict`` passes BGR (it reads with OpenCV).

    Args:
        backend: an ``InferenceBackend`` (see ``open_runner``).
        metadata: the artifact's metadata (input size, heatmap size, keypoints, decode).
        decode: ``"graph"`` (the backend outputs keypoints + scores) or ``"numpy"`` (the backend outputs heatmaps,
            decoded by ``decode_np`` with the artifact's method).
        refine: after the first pass, run again on a box around the confident keypoints (what evaluation does).
        flip_test: average with the horizontally flipped crop's heatmaps (needs heatmaps: ``decode="numpy"``).
        decode_method: override the artifact's decode method (``decode="numpy"`` only).
        batch_size: most crops per backend call (None: the backend's limit, else all at once).
        follow: thresholds for the detector-free boxes (``boxes.FollowConfig``).

    Attributes:
        predict_config: the ``PredictConfig`` the runner predicts with (decode, flip test, refine box rule).
    """

    def __init__(
        self,
        backend: InferenceBackend,
        metadata: ArtifactMetadata,
        decode: str = "graph",
        refine: bool = True,
        flip_test: bool = False,
        decode_method: str | None = None,
        batch_size: int | None = None,
        follow: FollowConfig | None = None,
    ) -> None:
        if decode not in DECODES:
            raise ValueError(f"unknown decode {decode!r}; choose one of {', '.join(DECODES)}")
        method = decode_method or metadata.decode_method
        if method not in decode_np.METHODS:
            raise ValueError(f"unknown decode method {method!r}; choose one of {', '.join(decode_np.METHODS)}")
        if decode == "graph" and method != metadata.decode_method:
            raise ValueError(
                f"the artifact's graph decodes with {metadata.decode_method!r}; to decode with {method!r} use "
                "decode='numpy' (the heatmap graph)"
            )
        beta = metadata.softargmax_beta
        if method == "softargmax" and beta is None:
            raise ValueError(
                "decode method 'softargmax' needs the artifact's softargmax_beta, and model.json has none; re-export "
                "with --decode softargmax or choose another decode method"
            )
        if flip_test and decode == "graph":
            raise ValueError("flip_test averages heatmaps, so it needs decode='numpy' (the artifact's heatmap graph)")
        needed = {OUTPUT_HEATMAPS} if decode == "numpy" else {OUTPUT_KEYPOINTS, OUTPUT_SCORES}
        if not needed <= set(backend.output_names):
            raise ValueError(
                f"backend {backend.name} outputs {list(backend.output_names)} but decode={decode!r} needs "
                f"{sorted(needed)}; open the artifact's {'heatmap' if decode == 'numpy' else 'keypoint'} graph"
            )
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.backend = backend
        self.metadata = metadata
        self.decode = decode
        self.decode_method = method
        self.refine = refine
        self.flip_test = flip_test
        self.batch_size = batch_size
        self.follow = follow or FollowConfig(padding=metadata.padding)
        self.input_wh = (metadata.input_width, metadata.input_height)
        self.num_keypoints = len(metadata.keypoint_names)
        self.predict_config = self.follow.refine_config(
            PredictConfig(
                decode=method,
                softargmax_beta=PredictConfig.softargmax_beta if beta is None else float(beta),
                flip_test=flip_test,
                two_pass=refine,
            )
        )
        self._flip_perm = decode_np.flip_indices_from_pairs(self.num_keypoints, metadata.flip_pairs)

    @property
    def flip_indices(self) -> list[int]:
        """The left/right channel permutation of the artifact's keypoints (flip test on heatmaps)."""
        return list(self._flip_perm)

    # ------------------------------------------------------------------ inference on crops
    def run_crops(self, images: np.ndarray, input_to_image: np.ndarray) -> CropPrediction:
        """The crop runner of ``tardis_edge.predict``: the backend's keypoints (crop input pixels; the graph
        decodes) or heatmaps (decoded by the predictor), ``batch_size`` crops per backend call at most."""
        out = run_in_chunks(self.backend, images, self.batch_size)
        if self.decode == "graph":
            return CropPrediction(keypoints=out[OUTPUT_KEYPOINTS], scores=out[OUTPUT_SCORES])
        return CropPrediction(heatmaps=out[OUTPUT_HEATMAPS])  # (N, K, H_hm, W_hm)

    def infer_crops(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints in crop input pixels and scores for a crop batch (decode and flip test as configured).

        Args:
            images: float32 ``(N, 3, H_in, W_in)`` RGB 0..255.

        Returns:
            ``(keypoints (N, K, 2) float64 input pixels, NaN where score <= 0; scores (N, K) float32)``.
        """
        identity = np.broadcast_to(np.eye(2, 3), (len(images), 2, 3))
        return crop_keypoints(self.run_crops, images, identity, self.predict_config, self._flip_perm)

    def predict_boxes(
        self, frames_rgb: Sequence[np.ndarray], boxes: Sequence[geometry.CropBox]
    ) -> tuple[np.ndarray, np.ndarray]:
        """One pass: one crop per frame.

        Args:
            frames_rgb: RGB uint8 ``(H, W, 3)`` frames (already checked, see ``preprocess.as_frame_list``).
            boxes: one crop box per frame, image pixels.

        Returns:
            ``(keypoints (N, K, 2) float64 image pixels, NaN where score <= 0; scores (N, K) float32)``.
        """
        cfg = self._config(len(frames_rgb))
        return predict_boxes(self.run_crops, frames_rgb, boxes, self.input_wh, cfg, self._flip_perm)

    def _two_pass(self, frames_rgb: list[np.ndarray], first: list[geometry.CropBox]) -> PoseResult:
        cfg = self._config(len(frames_rgb))
        keypoints, scores, boxes = predict_frames(
            self.run_crops, frames_rgb, self.input_wh, cfg, self._flip_perm, boxes=first
        )
        return PoseResult(keypoints, scores, boxes)

    def _config(self, num_frames: int) -> PredictConfig:
        """``predict_config`` cropping ``batch_size`` frames at a time, or all of them (None: one backend call)."""
        return replace(self.predict_config, batch_size=self.batch_size or max(1, num_frames))

    # ------------------------------------------------------------------ public entry points
    def _initial_boxes(self, frames_rgb: list[np.ndarray], boxes: BoxesArg) -> list[geometry.CropBox]:
        whole = [geometry.box_from_image((f.shape[1], f.shape[0]), self.input_wh) for f in frames_rgb]
        if boxes is None:
            return whole
        if isinstance(boxes, np.ndarray):
            given: list[geometry.CropBox | None] = list(boxes_from_xywh(boxes, self.input_wh, self.metadata.padding))
        else:
            given = list(boxes)
        if len(given) != len(frames_rgb):
            raise ValueError(f"got {len(frames_rgb)} frames but {len(given)} boxes; pass one box (or None) per frame")
        return [w if b is None else b for w, b in zip(whole, given, strict=True)]

    def __call__(
        self, frames: np.ndarray | Sequence[np.ndarray], boxes: BoxesArg = None, color: str = "RGB"
    ) -> PoseResult:
        """Keypoints for independent frames (images): whole frame or the given boxes, then the refine pass.

        Args:
            frames: one ``(H, W, 3)`` uint8 frame, an ``(N, H, W, 3)`` batch, or a sequence of frames.
            boxes: None (detector-free), ``(N, 4)`` detector boxes ``(x, y, w, h)`` in image pixels, or one
                ``CropBox`` (or None: whole frame) per frame.
            color: channel order of ``frames``: ``"RGB"`` (default) or ``"BGR"`` (OpenCV's order: pass it for frames
                from ``cv2.imread`` / ``cv2.VideoCapture``).
        """
        rgb = as_frame_list(frames, color)
        return self._two_pass(rgb, self._initial_boxes(rgb, boxes))

    def track(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        follower: BoxFollower,
        boxes: BoxesArg = None,
        color: str = "RGB",
        frame_numbers: Sequence[int] | None = None,
    ) -> PoseResult:
        """Keypoints for consecutive video frames, the crop box following the animal.

        Every frame of the batch starts from the follower's box as of the previous batch, moved on by the animal's
        recent velocity (the whole frame while searching), or from its detector box; the refine pass then centres
        each frame's crop on its own keypoints. A frame whose followed box lost the animal, or whose keypoints bunched
        up or whose scores dropped (``BoxFollower.doubtful``), is searched again at once on its whole image (two
        passes, as evaluation) and takes that answer unless it lost the animal too, so a box that drifted off or
        shrank onto part of the animal costs that frame nothing. The follower then takes each frame's result in
        order. Call with one frame at a time for frame-by-frame following; larger batches trade that for throughput.

        Args:
            frames: consecutive frames (see ``__call__``).
            follower: the video's ``BoxFollower`` (its state carries over between calls).
            boxes: optional detector boxes per frame (None entries: follow).
            color: ``"RGB"`` (default) or ``"BGR"`` (OpenCV's order).
            frame_numbers: the frames' numbers in the video, so the motion model counts frames skipped in between
                (unreadable ones); default: consecutive.
        """
        rgb = as_frame_list(frames, color)
        numbers: list[int | None] = list(frame_numbers) if frame_numbers is not None else [None] * len(rgb)
        if len(numbers) != len(rgb):
            raise ValueError(f"got {len(rgb)} frames but {len(numbers)} frame numbers")
        start = [
            follower.box((f.shape[1], f.shape[0]), frames_ahead=follower.frames_ahead(n, j))
            for j, (f, n) in enumerate(zip(rgb, numbers, strict=True))
        ]
        followed = [follower.tracking] * len(rgb)  # started from a followed box, not the whole frame
        if boxes is not None:
            given = self._initial_boxes(rgb, boxes) if isinstance(boxes, np.ndarray) else list(boxes)
            if len(given) != len(rgb):
                raise ValueError(f"got {len(rgb)} frames but {len(given)} boxes; pass one box (or None) per frame")
            start = [s if b is None else b for s, b in zip(start, given, strict=True)]
            followed = [f and b is None for f, b in zip(followed, given, strict=True)]
        result = self._two_pass(rgb, start)
        missed = [
            i for i in range(len(rgb)) if followed[i] and follower.doubtful(result.keypoints[i], result.scores[i])
        ]
        found_again = set()
        if missed:
            again = self([rgb[i] for i in missed])  # whole frame, then refine
            for j, i in enumerate(missed):
                found = not is_lost(again.scores[j], again.keypoints[j], self.follow)
                if found or np.mean(again.scores[j]) > np.mean(result.scores[i]):
                    result.keypoints[i], result.scores[i] = again.keypoints[j], again.scores[j]
                    result.boxes[i] = again.boxes[j]
                if found:
                    found_again.add(i)
        for i, (k, s, n) in enumerate(zip(result.keypoints, result.scores, numbers, strict=True)):
            if i in found_again:  # a jump: follow from here, without the old box's velocity
                follower.reset()
                follower.recovered_frames += 1
            follower.update(k, s, n)
        return result

    def new_follower(self) -> BoxFollower:
        """A ``BoxFollower`` for one video, with this runner's input size and thresholds."""
        return BoxFollower(self.input_wh, self.follow)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _find_engine(folder: Path, meta: ArtifactMetadata, precision: str) -> Path:
    """The TensorRT engine built from the ``precision`` graph ``model.json`` lists (``<graph stem>.engine``)."""
    stems = [Path(str(e["file"])).stem for e in _model_entries(meta, precision, prefer=TENSORRT_INT8) if e.get("file")]
    for stem in stems:
        for suffix in ENGINE_SUFFIXES:
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    engines = sorted(p.name for s in ENGINE_SUFFIXES for p in folder.glob(f"*{s}")) or "none"
    wanted = f"{stems[0]}.engine" if stems else f"an engine of a {precision} graph ({METADATA_FILE} lists none)"
    raise FileNotFoundError(
        f"{folder} has no TensorRT engine {wanted} (engines there: {engines}); build it on this device with the "
        "artifact's trtexec_*.sh, or pass engine=PATH"
    )


def check_engine_source(engine: Path, sidecar: dict, folder: Path, meta: ArtifactMetadata) -> None:
    """Refuse an engine whose sidecar says it was built from a graph other than the one ``model.json`` lists."""
    onnx_name, built_from = sidecar.get("onnx"), sidecar.get("onnx_sha256")
    entry = meta.entry_for_file(str(onnx_name)) if onnx_name else None
    if built_from is None or entry is None or "sha256" not in entry:
        LOG.warning(
            "%s: its sidecar or %s records no graph hash (an older export), so the engine cannot be checked to come "
            "from this artifact's graph; rebuild it with the artifact's trtexec_*.sh to have it checked",
            engine,
            METADATA_FILE,
        )
        return
    if built_from != entry["sha256"]:
        raise ValueError(
            f"{engine} was built from a {onnx_name} with sha256 {str(built_from)[:16]}… but {folder / METADATA_FILE} "
            f"lists sha256 {str(entry['sha256'])[:16]}…: the engine belongs to another export; rebuild it with the "
            f"artifact's trtexec_*.sh"
        )


def open_runner(
    artifact_path: str | Path,
    backend: Backend | str = Backend.ONNXRUNTIME,
    precision: str = "fp32",
    providers: Sequence[str] | None = None,
    decode: str = "graph",
    *,
    refine: bool = True,
    flip_test: bool = False,
    decode_method: str | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    engine: str | Path | None = None,
    device: str = "cpu",
    follow: FollowConfig | None = None,
) -> Runner:
    """Open an exported artifact (or, for the PyTorch backend, a run's ``model.pt``) for inference.

    Args:
        artifact_path: the artifact folder (or its ``model.json``); PyTorch backend: the run folder or ``model.pt``.
        backend: ``Backend.ONNXRUNTIME`` (default), ``Backend.TENSORRT`` or ``Backend.PYTORCH`` (or their names).
        precision: which exported model: ``fp32``, ``fp16``, ``int8`` (as listed in ``model.json``).
        providers: ONNX Runtime execution providers (default: CUDA if available, then CPU).
        decode: ``"graph"`` (decode inside the model) or ``"numpy"`` (heatmap model + ``decode_np``).
        refine: second pass on a box around the first pass's confident keypoints (default on, as evaluation).
        flip_test: average with the flipped crop (``decode="numpy"`` only; evaluation's default).
        decode_method: NumPy decode method override (argmax | msra | dark | softargmax).
        batch_size: most crops per backend call.
        threads: ONNX Runtime intra-op threads.
        engine: TensorRT engine path (default ``<artifact>/tardis_<precision>.engine``).
        device: PyTorch device.
        follow: detector-free box thresholds (``FollowConfig``).
    """
    kind = Backend.parse(backend)
    path = Path(artifact_path)
    if kind is not Backend.ONNXRUNTIME and providers is not None:
        raise ValueError(f"providers are ONNX Runtime execution providers; the {kind.value} backend takes none")
    if kind is not Backend.ONNXRUNTIME and threads is not None:
        raise ValueError(f"threads sets ONNX Runtime's intra-op threads; the {kind.value} backend takes none")
    if kind is not Backend.TENSORRT and engine is not None:
        raise ValueError(f"engine= is a TensorRT engine path; the {kind.value} backend takes none")
    if kind is not Backend.PYTORCH and device != "cpu":
        raise ValueError(f"device= is the PyTorch device; choose the {kind.value} device with providers/engine")
    if decode not in DECODES:
        raise ValueError(f"unknown decode {decode!r}; choose one of {', '.join(DECODES)}")
    impl: InferenceBackend
    if kind is Backend.PYTORCH:
        from tardis_edge.runtime.backends.pytorch import PyTorchBackend

        if precision != "fp32":
            raise ValueError(f"the PyTorch backend runs the checkpoint in fp32; got precision {precision!r}")
        torch_backend = PyTorchBackend(path, device=device, decode=decode)
        meta = torch_backend.metadata
        impl = torch_backend
    else:
        folder = path.parent if path.name == METADATA_FILE else path
        if not folder.is_dir():
            raise FileNotFoundError(
                f"artifact folder {folder} does not exist; pass the folder tardis-export wrote (with {METADATA_FILE})"
            )
        meta = ArtifactMetadata.load(folder)
        if kind is Backend.ONNXRUNTIME:
            from tardis_edge.runtime.backends.ort import OnnxRuntimeBackend

            model_file = artifact_model_file(folder, meta, precision, heatmaps=decode == "numpy")
            impl = OnnxRuntimeBackend(model_file, providers=providers, threads=threads)
            try:
                check_graph_matches(model_file, impl.input_shape, impl.output_shapes, meta)
            except Exception:
                impl.close()
                raise
        else:
            from tardis_edge.runtime.backends.trt import TensorRTBackend, read_sidecar

            engine_path = Path(engine) if engine is not None else _find_engine(folder, meta, precision)
            if engine_path.is_file():
                check_engine_source(engine_path, read_sidecar(engine_path), folder, meta)
            impl = TensorRTBackend(engine_path)
    try:
        return Runner(
            impl,
            meta,
            decode=decode,
            refine=refine,
            flip_test=flip_test,
            decode_method=decode_method,
            batch_size=batch_size,
            follow=follow,
        )
    except Exception:
        impl.close()
        raise
