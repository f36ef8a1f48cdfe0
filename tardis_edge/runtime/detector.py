"""Edge runtime, many animals: an external animal detector (an ONNX export of a YOLO-family model or MegaDetector)
in place of the artifact's own finder (``tardis-edge predict ... --detector model.onnx``), torch-free.

``OnnxDetector(path)(frames_rgb)`` gives, per frame, the animals as ``tardis_edge.finder.FoundAnimal``: the detector's
box (unpadded; the pose crop pads it by the artifact's padding, as for the finder) and its score.

Preprocessing is what these exports expect (Ultralytics' ``LetterBox``): the frame resized with its aspect kept to fit
the graph's input (its fixed ``H x W``; a dynamic input gets 640 x 640, or ``input_size``), bilinear, centred, the
border grey 114 (the left/top border ``round(pad / 2 - 0.1)``), RGB, float 0..1, NCHW. Boxes are mapped back with
the exact inverse of that resize and shift (Ultralytics' ``scale_boxes`` divides both axes by one gain, which can
differ by < 0.5 input px), clipped to the frame, and turned from box corners (a box covering the whole frame is
``[0, W]``) into this project's pixel-centre convention (``tardis_edge.geometry``: centre - 0.5, size unchanged).

Output layouts, told apart by the first output's shape for the input fed (``B`` frames, ``H x W`` input):

* ``yolo-raw`` ``(B, 4 + C, N)``: the Ultralytics YOLOv8 / v9 / 11 / 12 raw head, their default ``yolo export
  format=onnx`` (ultralytics/ultralytics#221: "(batch, xywh + 80 class scores, boxes)"; also YOLO26's one-to-many
  head, ``end2end=False``): box centre and size in input pixels, then C class scores (sigmoid applied); N the anchor
  points, ``sum (H / s) (W / s)`` over strides 8, 16, 32 (and 64 for P6, or 4 for P2 models): 8400 at 640.
* ``yolov5-raw`` ``(B, N, 5 + C)``: YOLOv5 (MegaDetector v5 is a YOLOv5x6): box centre and size, objectness, C class
  scores; N = 3 anchors x the grid cells over the same strides (25200 at 640; ultralytics/yolov5#3397: "26208 = (64 x
  104 + 32 x 52 + 16 x 26) x 3 ... [xywh, conf, cls...]"). Score = objectness x class score.
* ``end-to-end`` ``(B, N, 6)``: NMS-free / NMS'd exports, ``x1, y1, x2, y2, score, class`` in input pixels, N the
  most detections (300): YOLOv10 (THU-MIG/yolov10#7: "output[:, :, :4] is the box location (xyxy), output[:, :, 4]
  the classification score, output[:, :, 5] the predicted class label") and YOLO26's default ``end2end`` export
  (docs.ultralytics.com/guides/end2end-detection: "(N, 300, 6) in xyxy format, no NMS required").

MegaDetector v6 (microsoft/CameraTraps ``PytorchWildlife/models/detection/ultralytics_based/megadetectorv6.py``) is a
set of Ultralytics checkpoints, classes 0 animal, 1 person, 2 vehicle, 640 px: its YOLOv9 variants export to
``yolo-raw`` ``(1, 7, 8400)``, its YOLOv10 variants to ``end-to-end`` ``(1, 300, 6)`` (pass ``classes=[0]``: animals
only). Its RT-DETR variants (Ultralytics' RT-DETR export is ``(1, 300, 4 + C)``, boxes normalised to 0..1) are
refused — beware a two-class RT-DETR, whose ``(1, 300, 6)`` reads as end-to-end —, and the layout of its MIT-licensed
YOLO ports was not determined.

Raw layouts: candidates with score > ``min_score``; the class is the best-scoring one over all classes, then
``classes`` filters (as Ultralytics' ``non_max_suppression(classes=...)``); greedy NMS at ``iou`` is
**class-agnostic** — one box per animal, whatever class the detector gives it (a MegaDetector box called both
"animal" and "person" is one animal to pose); at most ``max_detections`` (300) kept, strongest first. End-to-end
outputs are taken as they are (the model suppressed duplicates; NMS again could merge two touching animals): only the
class filter and the score threshold apply. Ultralytics ONNX metadata (``task``, ``names``), when present, is
checked: a segmentation or pose export, or a class count that disagrees with ``names``, is refused. Any other output
shape is refused with one line naming the shape and these layouts.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tardis_edge.finder import FoundAnimal

YOLO_RAW = "yolo-raw"
YOLOV5_RAW = "yolov5-raw"
END_TO_END = "end-to-end"
LAYOUTS = (
    f"{YOLO_RAW} (B, 4 + C, N) [YOLOv8-v12, MegaDetector v6 YOLOv9], {YOLOV5_RAW} (B, N, 5 + C) [YOLOv5, "
    f"MegaDetector v5], {END_TO_END} (B, N, 6) x1 y1 x2 y2 score class [YOLOv10, YOLO26, MegaDetector v6 YOLOv10]"
)
DYNAMIC_INPUT = 640  # Ultralytics' default image size, for a graph whose input size is not fixed
PAD_VALUE = 114  # Ultralytics' letterbox grey
MAX_DETECTIONS = 300  # Ultralytics' max_det
# Strides of the detection heads (P3-P5; P3-P6 for the *6 models such as MegaDetector v5; P2-P5 for *-p2 models)
HEAD_STRIDES = ((8, 16, 32), (8, 16, 32, 64), (4, 8, 16, 32))
YOLOV5_ANCHORS = 3  # anchors per grid cell


@dataclass(frozen=True)
class Letterbox:
    """Where a frame sits in the detector's input: input = image * scale + offset (box corners, per axis)."""

    scale_x: float
    scale_y: float
    left: int
    top: int
    image_wh: tuple[int, int]

    def to_image(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """``(M, 4)`` input-pixel box corners -> image-pixel box corners, clipped to the frame."""
        boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
        x = (boxes[:, [0, 2]] - self.left) / self.scale_x
        y = (boxes[:, [1, 3]] - self.top) / self.scale_y
        w, h = self.image_wh
        return np.stack(
            [np.clip(x[:, 0], 0, w), np.clip(y[:, 0], 0, h), np.clip(x[:, 1], 0, w), np.clip(y[:, 1], 0, h)], 1
        )


def letterbox(frame_rgb: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Ultralytics' letterbox: ``(H, W, 3)`` uint8 -> ``(H_in, W_in, 3)`` uint8, aspect kept, centred, grey border.

    The resized frame is ``round(W * r) x round(H * r)`` with ``r = min(H_in / H, W_in / W)`` (enlarged too); the
    left and top borders are ``round(pad / 2 - 0.1)`` of the ``pad`` pixels left over on that axis.
    """
    import cv2

    h, w = frame_rgb.shape[:2]
    h_in, w_in = input_hw
    r = min(h_in / h, w_in / w)
    new_w, new_h = round(w * r), round(h * r)
    left, top = round((w_in - new_w) / 2 - 0.1), round((h_in - new_h) / 2 - 0.1)
    resized = (
        frame_rgb if (new_w, new_h) == (w, h) else cv2.resize(frame_rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    )
    image = np.full((h_in, w_in, 3), PAD_VALUE, np.uint8)
    image[top : top + new_h, left : left + new_w] = resized
    return image, Letterbox(new_w / w, new_h / h, left, top, (w, h))


def anchor_counts(input_hw: tuple[int, int], per_cell: int = 1) -> dict[int, tuple[int, ...]]:
    """Rows a raw YOLO head has for this input (``-> strides``): the grid cells over each head's strides."""
    h, w = input_hw
    return {per_cell * sum(-(-h // s) * -(-w // s) for s in strides): strides for strides in HEAD_STRIDES}


def output_layout(shape: Sequence[int], input_hw: tuple[int, int]) -> str:
    """Which layout a detector output of ``shape`` has for an ``input_hw`` input (module docstring); else ValueError."""
    if len(shape) == 3:
        rows, cols = int(shape[1]), int(shape[2])
        if 5 <= rows < cols and cols in anchor_counts(input_hw):
            return YOLO_RAW
        if cols >= 6 and rows in anchor_counts(input_hw, YOLOV5_ANCHORS):
            return YOLOV5_RAW
        if cols == 6:
            return END_TO_END
    raise ValueError(
        f"detector output shape {tuple(shape)} for a {input_hw[1]}x{input_hw[0]} input is not a layout tardis-edge "
        f"reads; accepted: {LAYOUTS} (N: the anchor points of that input, or the detections kept)"
    )


def nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou: float, limit: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, strongest first (a box overlapping a kept one by IoU > ``iou``
    goes), at most ``limit``. Areas as torchvision's ``box_iou``: ``(x2 - x1) * (y2 - y1)``."""
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    kept = []
    while order.size and (limit is None or len(kept) < limit):
        i, rest = order[0], order[1:]
        kept.append(i)
        lo = np.maximum(boxes[i, :2], boxes[rest, :2])
        hi = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
        union = area[i] + area[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[overlap <= iou]
    return np.array(kept, np.int64)


def decode_detections(
    output: np.ndarray,
    layout: str,
    classes: Sequence[int] | None = None,
    min_score: float = 0.25,
    iou: float = 0.5,
    max_detections: int = MAX_DETECTIONS,
) -> list[np.ndarray]:
    """Per frame, ``(M, 6)`` float64 ``x1, y1, x2, y2, score, class`` in input pixels (box corners), strongest first.

    Args:
        output: the detector's first output, ``(B, ...)`` in ``layout`` (``output_layout``).
        classes: class ids to keep (None: all).
        min_score: a detection needs a score above this.
        iou: NMS overlap of the raw layouts (class-agnostic).
    """
    out = np.asarray(output, np.float64)
    frames = []
    for det in out:
        if layout == END_TO_END:
            boxes, scores, labels = det[:, :4], det[:, 4], np.rint(det[:, 5])
        else:
            if layout == YOLO_RAW:
                det = det.T  # (N, 4 + C)
                xywh, class_scores = det[:, :4], det[:, 4:]
            else:
                xywh, class_scores = det[:, :4], det[:, 5:] * det[:, 4:5]  # objectness x class score
            labels = class_scores.argmax(axis=1).astype(np.float64)
            scores = class_scores.max(axis=1)
            half = xywh[:, 2:] / 2
            boxes = np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], axis=1)
        keep = scores > min_score
        if classes is not None:
            keep &= np.isin(labels, list(classes))
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        if layout == END_TO_END:
            order = np.argsort(-scores, kind="stable")[:max_detections]
        else:
            order = nms(boxes, scores, iou, max_detections)
        frames.append(np.concatenate([boxes[order], scores[order, None], labels[order, None]], axis=1).reshape(-1, 6))
    return frames


def found_animals(detections: np.ndarray, box: Letterbox) -> list[FoundAnimal]:
    """``(M, 6)`` input-pixel detections -> the animals in image pixels (pixel-centre convention); boxes that lie
    wholly in the letterbox border (nothing left after clipping to the frame) are dropped."""
    corners = box.to_image(detections[:, :4])
    animals = []
    for (x1, y1, x2, y2), score in zip(corners, detections[:, 4], strict=True):
        if x2 > x1 and y2 > y1:
            animals.append(FoundAnimal((x1 + x2) / 2 - 0.5, (y1 + y2) / 2 - 0.5, x2 - x1, y2 - y1, float(score)))
    return animals


class OnnxDetector:
    """An ONNX animal detector in ONNX Runtime: frames -> the animals found (``FoundAnimal``, image pixels).

    Args:
        path: the ``.onnx`` file (one input ``(N, 3, H, W)``; first output in a layout of the module docstring).
        classes: class ids to keep (None: all; MegaDetector: ``[0]``, animals).
        min_score: a detection needs a score above this.
        iou: NMS overlap for the raw layouts (class-agnostic).
        input_size: side of the square input for a graph whose input size is dynamic (default 640); a fixed input
            must agree.
        providers, threads: ONNX Runtime execution providers and intra-op threads (as ``OnnxRuntimeBackend``).
    """

    def __init__(
        self,
        path: str | Path,
        classes: Sequence[int] | None = None,
        min_score: float = 0.25,
        iou: float = 0.5,
        input_size: int | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        max_detections: int = MAX_DETECTIONS,
    ) -> None:
        from tardis_edge.runtime.backends.ort import open_session

        path = Path(path)
        if not 0 <= min_score < 1 or not 0 < iou <= 1 or max_detections < 1:
            raise ValueError(
                f"detector needs 0 <= min_score < 1, 0 < iou <= 1 and max_detections >= 1; got {min_score}, {iou}, "
                f"{max_detections}"
            )
        if classes is not None and (not len(classes) or min(classes) < 0):
            raise ValueError(f"detector classes must be class ids >= 0, got {list(classes)}")
        if not path.is_file():
            raise FileNotFoundError(
                f"detector {path} does not exist; pass the detector's .onnx file (e.g. from yolo export format=onnx)"
            )
        self.session = open_session(
            path, providers, threads, "pass an ONNX detector export (e.g. yolo export model=yolo11n.pt format=onnx)"
        )
        inputs = self.session.get_inputs()
        shape = tuple(inputs[0].shape) if len(inputs) == 1 else ()
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise ValueError(
                f"detector {path} takes inputs {[(i.name, i.shape) for i in inputs]}; a detector takes one image "
                "input (N, 3, H, W)"
            )
        self.path, self.input_name = path, inputs[0].name
        self.input_dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        fixed = [d if isinstance(d, int) and d > 0 else None for d in shape]
        self.batch = fixed[0]  # None: any batch
        if fixed[2] is not None and fixed[3] is not None:
            self.input_hw = (fixed[2], fixed[3])
            if input_size is not None and self.input_hw != (input_size, input_size):
                raise ValueError(
                    f"detector {path} takes a fixed {fixed[3]}x{fixed[2]} input; drop input_size={input_size}"
                )
        else:
            side = DYNAMIC_INPUT if input_size is None else int(input_size)
            if side < 32:
                raise ValueError(f"detector input_size must be >= 32, got {side}")
            self.input_hw = (side, side)
        self.classes = None if classes is None else [int(c) for c in classes]
        self.min_score, self.iou, self.max_detections = float(min_score), float(iou), int(max_detections)
        self.class_names = self._metadata_names()
        self.layout: str | None = None
        declared = self.session.get_outputs()[0].shape
        if all(isinstance(d, int) and d > 0 for d in declared[1:]):  # static but the batch: check it now
            self._check_output((1, *declared[1:]))

    def _metadata_names(self) -> dict[int, str] | None:
        meta = self.session.get_modelmeta().custom_metadata_map  # Ultralytics writes task, names, imgsz, ...
        task = meta.get("task")
        if task is not None and task != "detect":
            raise ValueError(
                f"detector {self.path} is an Ultralytics {task!r} export; pass a detection model (task 'detect')"
            )
        try:
            names = ast.literal_eval(meta["names"]) if "names" in meta else None
        except (ValueError, SyntaxError):
            return None
        return {int(k): str(v) for k, v in names.items()} if isinstance(names, dict) else None

    def _describe_classes(self, count: int) -> str:
        if self.class_names:
            return ", ".join(f"{k} {v}" for k, v in sorted(self.class_names.items()))
        return f"0..{count - 1}"

    def _check_output(self, shape: tuple[int, ...]) -> None:
        layout = output_layout(shape, self.input_hw)
        count = {YOLO_RAW: shape[1] - 4, YOLOV5_RAW: shape[2] - 5}.get(layout)
        if count is not None and self.class_names is not None and count != len(self.class_names):
            raise ValueError(
                f"detector {self.path} output {shape} ({layout}) has {count} class scores but its metadata names "
                f"{len(self.class_names)} classes; pass a plain detection export"
            )
        count = count if count is not None else (len(self.class_names) if self.class_names else None)
        if self.classes is not None and count is not None:
            unknown = [c for c in self.classes if c >= count]
            if unknown:
                raise ValueError(
                    f"detector classes {unknown} are not among {self.path.name}'s {count} classes "
                    f"({self._describe_classes(count)}); pick class ids from them"
                )
        self.layout = layout

    def _run(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        if self.batch is not None and n != self.batch:  # a fixed-batch graph: chunks of its batch, the last padded
            chunks = []
            for start in range(0, n, self.batch):
                part = batch[start : start + self.batch]
                pad = np.zeros((self.batch - len(part), *part.shape[1:]), part.dtype)
                chunks.append(self._run(np.concatenate([part, pad]))[: len(part)])
            return np.concatenate(chunks)
        output = np.asarray(self.session.run(None, {self.input_name: batch})[0])
        if output.ndim < 1 or output.shape[0] != n:
            raise ValueError(
                f"detector {self.path} gave output {output.shape} for {n} frames; its first axis must be the batch"
            )
        self._check_output(tuple(output.shape))
        return output

    def __call__(self, frames_rgb: Sequence[np.ndarray]) -> list[list[FoundAnimal]]:
        """Per frame (RGB uint8 ``(H, W, 3)``), the animals detected, strongest first (image pixels)."""
        if not len(frames_rgb):
            return []
        boxed = [letterbox(f, self.input_hw) for f in frames_rgb]
        batch = np.stack([image for image, _ in boxed]).transpose(0, 3, 1, 2)  # (N, 3, H_in, W_in)
        batch = np.ascontiguousarray(batch, dtype=np.float32) / np.float32(255)
        output = self._run(batch.astype(self.input_dtype, copy=False))
        assert self.layout is not None
        detections = decode_detections(output, self.layout, self.classes, self.min_score, self.iou, self.max_detections)
        return [found_animals(d, box) for d, (_, box) in zip(detections, boxed, strict=True)]

    def close(self) -> None:
        self.session = None
