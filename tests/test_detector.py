"""External animal detectors (issue 12, ``tardis-edge predict --detector model.onnx``: tardis_edge.runtime.detector).

No real YOLO or MegaDetector weights can be downloaded here, so the detectors are small ONNX graphs built with
``onnx.helper`` that emit each accepted output layout for known boxes: what is tested is the layouts, the letterbox and
its inverse, the class filter, the score threshold and NMS — not any detector's accuracy. One kind of graph computes
its box from the image it is fed (the extent of the pixels brighter than mid-grey), so the letterbox placement, the
border rounding and the mapping back to image pixels are checked end to end on non-square frames; another returns a
constant output, for the decoding rules. The last tests run ``tardis-edge predict --detector`` on the flies clip with
the tiny multi-animal artifact and a constant-box detector placed on the labelled flies.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import data_path

from tardis_edge.runtime.detector import (
    END_TO_END,
    YOLO_RAW,
    YOLOV5_RAW,
    OnnxDetector,
    anchor_counts,
    letterbox,
    nms,
    output_layout,
)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

OPSET = 17


def _save(path: Path, nodes, inputs, outputs, initializers=(), metadata: dict | None = None) -> Path:
    graph = helper.make_graph(nodes, "detector", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def bright_box_detector(
    path: Path,
    layout: str,
    input_hw=(640, 640),
    batch: int | str = "batch",
    dynamic_hw: bool = False,
    num_classes: int = 1,
    half: bool = False,
) -> Path:
    """A detector that finds the box around the pixels brighter than mid-grey in its input (the letterbox grey 114
    is darker), score 0.9, class 0, and emits it in ``layout`` (the other rows of the raw layouts score 0)."""
    h, w = ("h", "w") if dynamic_hw else input_hw
    elem = TensorProto.FLOAT16 if half else TensorProto.FLOAT
    nodes = [helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT)]
    nodes += [
        helper.make_node("ReduceMax", ["x"], ["grey"], axes=[1], keepdims=1),  # (B, 1, H, W)
        helper.make_node("Greater", ["grey", "half"], ["bright"]),
        helper.make_node("Cast", ["bright"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["mask"], ["cols"], axes=[1, 2], keepdims=0),  # (B, W)
        helper.make_node("ReduceMax", ["mask"], ["rows"], axes=[1, 3], keepdims=0),  # (B, H)
        helper.make_node("ArgMax", ["cols"], ["x1i"], axis=1, keepdims=1),
        helper.make_node("ArgMax", ["cols"], ["x2i"], axis=1, keepdims=1, select_last_index=1),
        helper.make_node("ArgMax", ["rows"], ["y1i"], axis=1, keepdims=1),
        helper.make_node("ArgMax", ["rows"], ["y2i"], axis=1, keepdims=1, select_last_index=1),
    ]
    for name in ("x1", "x2", "y1", "y2"):
        nodes.append(helper.make_node("Cast", [f"{name}i"], [f"{name}f"], to=TensorProto.FLOAT))  # (B, 1)
    nodes += [
        helper.make_node("Add", ["x2f", "one"], ["x2"]),  # box corners: the last bright pixel's far edge
        helper.make_node("Add", ["y2f", "one"], ["y2"]),
        helper.make_node("Mul", ["x1f", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "score"], ["s"]),
    ]
    initializers = [
        _const("half", np.float32(0.5)),
        _const("one", np.float32(1)),
        _const("zero", np.float32(0)),
        _const("score", np.float32(0.9)),
    ]
    if layout == END_TO_END:
        nodes += [
            helper.make_node("Concat", ["x1f", "y1f", "x2", "y2", "s", "nothing"], ["det"], axis=1),  # (B, 6)
            helper.make_node("Unsqueeze", ["det", "axis1"], ["output0"]),  # (B, 1, 6)
        ]
        initializers.append(_const("axis1", np.array([1], np.int64)))
        out_shape = [batch, 1, 6]
    else:
        side_h, side_w = input_hw
        count = next(iter(anchor_counts((side_h, side_w), 3 if layout == YOLOV5_RAW else 1)))
        nodes += [
            helper.make_node("Add", ["x1f", "x2"], ["sx"]),
            helper.make_node("Mul", ["sx", "halfc"], ["cx"]),
            helper.make_node("Add", ["y1f", "y2"], ["sy"]),
            helper.make_node("Mul", ["sy", "halfc"], ["cy"]),
            helper.make_node("Sub", ["x2", "x1f"], ["bw"]),
            helper.make_node("Sub", ["y2", "y1f"], ["bh"]),
        ]
        initializers.append(_const("halfc", np.float32(0.5)))
        scores = ["s"] + ["nothing"] * (num_classes - 1)
        if layout == YOLOV5_RAW:
            scores = ["s", *scores]  # objectness 0.9 x class score 0.9
        nodes.append(helper.make_node("Concat", ["cx", "cy", "bw", "bh", *scores], ["det"], axis=1))  # (B, F)
        features = 4 + len(scores)
        if layout == YOLO_RAW:  # (B, F, 1) padded with zero columns to (B, F, N)
            nodes.append(helper.make_node("Unsqueeze", ["det", "axis2"], ["col"]))
            initializers += [
                _const("axis2", np.array([2], np.int64)),
                _const("pads", np.array([0, 0, 0, 0, 0, count - 1])),
            ]
            out_shape = [batch, features, count]
        else:  # (B, 1, F) padded with zero rows to (B, N, F)
            nodes.append(helper.make_node("Unsqueeze", ["det", "axis1"], ["col"]))
            initializers += [
                _const("axis1", np.array([1], np.int64)),
                _const("pads", np.array([0, 0, 0, 0, count - 1, 0])),
            ]
            out_shape = [batch, count, features]
        nodes.append(helper.make_node("Pad", ["col", "pads"], ["output0"]))
    return _save(
        path,
        nodes,
        [helper.make_tensor_value_info("images", elem, [batch, 3, h, w])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_shape)],
        initializers,
    )


def constant_detector(path: Path, output: np.ndarray, input_hw=(640, 640), metadata: dict | None = None) -> Path:
    """A detector (batch 1) that returns ``output`` whatever the image (plus 0 x the image's maximum, so the input
    is used)."""
    nodes = [
        helper.make_node("ReduceMax", ["images"], ["peak"], keepdims=0),
        helper.make_node("Mul", ["peak", "zero"], ["nothing"]),
        helper.make_node("Add", ["table", "nothing"], ["output0"]),
    ]
    return _save(
        path,
        nodes,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, *input_hw])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output.shape))],
        [_const("table", output.astype(np.float32)), _const("zero", np.float32(0))],
        metadata,
    )


def frame_with_box(image_wh, box_xyxy) -> np.ndarray:
    """A black RGB frame with white pixels ``x1 .. x2 - 1``, ``y1 .. y2 - 1`` (box corners ``box_xyxy``)."""
    frame = np.zeros((image_wh[1], image_wh[0], 3), np.uint8)
    x1, y1, x2, y2 = box_xyxy
    frame[y1:y2, x1:x2] = 255
    return frame


# Frames and white boxes (corners) chosen so that the resized box edges fall on whole input pixels: the box the graph
# measures is then exact, and so must be its mapping back. Landscape and portrait halving, a 2x enlargement, an odd
# border (315 rows in 640: top 162, bottom 163 — Ultralytics' round(pad / 2 - 0.1)) and a 0.64 scale.
FRAMES = [
    ((1280, 640), (200, 100, 400, 300)),
    ((640, 1280), (100, 300, 300, 700)),
    ((320, 160), (100, 40, 150, 80)),
    ((1280, 630), (600, 200, 800, 400)),
    ((1000, 750), (250, 125, 500, 375)),
]


def _expected(box_xyxy) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box_xyxy  # corners -> pixel-centre centre (the white pixels' centres span x1 .. x2 - 1)
    return ((x1 + x2) / 2 - 0.5, (y1 + y2) / 2 - 0.5, float(x2 - x1), float(y2 - y1))


@pytest.mark.parametrize("layout", [END_TO_END, YOLO_RAW, YOLOV5_RAW])
def test_boxes_map_back_to_image_pixels_exactly(tmp_path, layout):
    detector = OnnxDetector(bright_box_detector(tmp_path / "det.onnx", layout))
    assert detector.input_hw == (640, 640) and detector.layout == layout  # a static output is read when opened
    found = detector([frame_with_box(wh, box) for wh, box in FRAMES])  # one batch of frames of five sizes
    for (wh, box), animals in zip(FRAMES, found, strict=True):
        (animal,) = animals
        assert (animal.cx, animal.cy, animal.width, animal.height) == pytest.approx(_expected(box), abs=1e-9), wh
        assert animal.score == pytest.approx(0.9 if layout != YOLOV5_RAW else 0.81)


def test_the_letterbox_is_ultralytics():
    frame = frame_with_box((1280, 630), (600, 200, 800, 400))
    image, box = letterbox(frame, (640, 640))
    assert (box.left, box.top, box.scale_x, box.scale_y) == (0, 162, 0.5, 0.5)
    assert (image[:162] == 114).all() and (image[162 + 315 :] == 114).all()  # 162 grey rows on top, 163 below
    assert (image[162:477] != 114).all() and (image[262:362, 300:400] == 255).all()
    small, box = letterbox(frame_with_box((320, 160), (100, 40, 150, 80)), (640, 640))  # enlarged, as Ultralytics
    assert (box.left, box.top, box.scale_x) == (0, 160, 2.0) and (small[240:320, 200:300] > 127).all()


def test_fixed_non_square_input_dynamic_input_and_fp16(tmp_path):
    # a fixed 640x384 input (Ultralytics imgsz=(384, 640)): a 1280x720 frame halves to 640x360, 12 grey rows on top
    wide = OnnxDetector(bright_box_detector(tmp_path / "wide.onnx", YOLO_RAW, input_hw=(384, 640)))
    assert wide.input_hw == (384, 640)
    (animal,) = wide([frame_with_box((1280, 720), (400, 100, 600, 300))])[0]
    assert (animal.cx, animal.cy, animal.width, animal.height) == pytest.approx(_expected((400, 100, 600, 300)))
    with pytest.raises(ValueError, match="fixed 640x384 input; drop input_size=320"):
        OnnxDetector(tmp_path / "wide.onnx", input_size=320)
    # a dynamic input: 640 by default, input_size otherwise; float16 input as Ultralytics' half=True exports
    path = bright_box_detector(tmp_path / "dynamic.onnx", END_TO_END, dynamic_hw=True, half=True)
    for size, expected_hw in ((None, (640, 640)), (320, (320, 320))):
        detector = OnnxDetector(path, input_size=size)
        assert detector.input_hw == expected_hw and detector.input_dtype == np.float16
        found = detector([frame_with_box(wh, box) for wh, box in FRAMES[:2]])
        for (_, box), (animal,) in zip(FRAMES[:2], found, strict=True):
            assert (animal.cx, animal.cy, animal.width, animal.height) == pytest.approx(_expected(box))


def test_a_fixed_batch_graph_runs_frame_by_frame(tmp_path):
    detector = OnnxDetector(bright_box_detector(tmp_path / "one.onnx", END_TO_END, batch=1))
    assert detector.batch == 1
    found = detector([frame_with_box(wh, box) for wh, box in FRAMES])
    centres = np.array([(a.cx, a.cy) for (a,) in found])
    assert centres == pytest.approx(np.array([_expected(box)[:2] for _, box in FRAMES]))


def _raw_head(columns: list[tuple[tuple[float, float, float, float], list[float]]], classes: int, count: int = 8400):
    """``(1, 4 + C, N)``: the given (cx, cy, w, h) boxes with their class scores, the other columns 0."""
    out = np.zeros((1, 4 + classes, count), np.float32)
    for i, (xywh, scores) in enumerate(columns):
        out[0, :4, i] = xywh
        out[0, 4:, i] = scores
    return out


# Boxes in a 640x640 frame (input = image): the scores per class (animal, person, vehicle)
ANIMAL = ((100, 100, 60, 40), [0.9, 0.0, 0.0])
ANIMAL_AGAIN = ((102, 101, 60, 40), [0.8, 0.0, 0.0])  # a duplicate: IoU 0.89 with ANIMAL
ANIMAL_AS_PERSON = ((100, 100, 58, 40), [0.0, 0.85, 0.0])  # the same animal called a person: IoU 0.97
OTHER = ((300, 300, 50, 50), [0.1, 0.7, 0.0])  # a person elsewhere
WEAK = ((500, 100, 40, 40), [0.2, 0.0, 0.0])  # below the default score threshold


def _centres(animals) -> list[tuple[float, float, float]]:
    return [(a.cx + 0.5, a.cy + 0.5, round(a.score, 4)) for a in animals]  # box-corner centres, as written above


def test_raw_head_class_filter_score_threshold_and_class_agnostic_nms(tmp_path):
    head = _raw_head([WEAK, ANIMAL_AGAIN, OTHER, ANIMAL, ANIMAL_AS_PERSON], classes=3)
    names = {"names": "{0: 'animal', 1: 'person', 2: 'vehicle'}", "task": "detect"}
    path = constant_detector(tmp_path / "yolo.onnx", head, metadata=names)
    frame = [np.zeros((640, 640, 3), np.uint8)]
    assert _centres(OnnxDetector(path)(frame)[0]) == [(100, 100, 0.9), (300, 300, 0.7)]
    assert _centres(OnnxDetector(path, classes=[0])(frame)[0]) == [(100, 100, 0.9)]
    assert _centres(OnnxDetector(path, classes=[1])(frame)[0]) == [(100, 100, 0.85), (300, 300, 0.7)]
    assert _centres(OnnxDetector(path, classes=[0], min_score=0.15)(frame)[0]) == [(100, 100, 0.9), (500, 100, 0.2)]
    # an IoU threshold above the duplicates' overlap keeps them all
    assert len(OnnxDetector(path, iou=0.98)(frame)[0]) == 4
    with pytest.raises(ValueError, match=r"classes \[3\] are not among yolo.onnx's 3 classes \(0 animal, 1 person"):
        OnnxDetector(path, classes=[3])


def test_yolov5_scores_are_objectness_times_class(tmp_path):
    count = next(iter(anchor_counts((640, 640), 3)))
    assert count == 25200  # ultralytics/yolov5: (80 x 80 + 40 x 40 + 20 x 20) x 3
    head = np.zeros((1, count, 7), np.float32)  # 2 classes
    head[0, 0] = [100, 100, 40, 40, 0.5, 0.6, 0.1]  # 0.30: kept
    head[0, 1] = [300, 300, 40, 40, 0.9, 0.2, 0.25]  # 0.225 at best: below 0.25, though the objectness is 0.9
    head[0, 2] = [500, 500, 40, 40, 0.8, 0.1, 0.9]  # 0.72, class 1
    detector = OnnxDetector(constant_detector(tmp_path / "v5.onnx", head))
    assert detector.layout == YOLOV5_RAW
    frame = [np.zeros((640, 640, 3), np.uint8)]
    assert _centres(detector(frame)[0]) == [(500, 500, 0.72), (100, 100, 0.3)]
    assert _centres(OnnxDetector(tmp_path / "v5.onnx", classes=[0])(frame)[0]) == [(100, 100, 0.3)]


def test_end_to_end_rows_are_taken_as_they_are(tmp_path):
    rows = np.zeros((1, 300, 6), np.float32)
    rows[0, 0] = [70, 80, 130, 120, 0.6, 0]
    rows[0, 1] = [72, 81, 132, 121, 0.8, 0]  # two touching animals: no NMS on an end-to-end output
    rows[0, 2] = [200, 200, 260, 240, 0.7, 1]
    rows[0, 3] = [300, 300, 360, 340, 0.2, 0]  # below the threshold
    path = constant_detector(tmp_path / "e2e.onnx", rows)
    frame = [np.zeros((640, 640, 3), np.uint8)]
    assert _centres(OnnxDetector(path)(frame)[0]) == [(102, 101, 0.8), (230, 220, 0.7), (100, 100, 0.6)]
    assert _centres(OnnxDetector(path, classes=[1])(frame)[0]) == [(230, 220, 0.7)]


def test_nms_keeps_a_box_overlapping_exactly_at_the_threshold():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30]], float)  # IoU(0, 1) = 50 / 100
    scores = np.array([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1, 2]
    assert nms(boxes, scores, 0.49).tolist() == [0, 2]
    assert nms(boxes[::-1], scores[::-1], 0.49).tolist() == [2, 0]  # the stronger of the pair kept, strongest first
    assert nms(boxes, scores, 0.5, limit=2).tolist() == [0, 1]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_a_box_in_the_letterbox_border_is_dropped_and_edges_are_clipped(tmp_path):
    rows = np.zeros((1, 300, 6), np.float32)
    rows[0, 0] = [10, 10, 100, 100, 0.9, 0]  # wholly in the 160 grey rows above a 1280x640 frame
    rows[0, 1] = [-20, 150, 60, 250, 0.8, 0]  # reaches past the frame's left edge and into the top border
    (animal,) = OnnxDetector(constant_detector(tmp_path / "e2e.onnx", rows))([np.zeros((640, 1280, 3), np.uint8)])[0]
    # x: 0 .. 60 input px -> 0 .. 120 image px; y: 160 .. 250 -> 0 .. 180
    assert (animal.cx, animal.cy, animal.width, animal.height) == pytest.approx((59.5, 89.5, 120, 180))


@pytest.mark.parametrize(
    "shape, match",
    [
        ((1, 300, 7), r"output shape \(1, 300, 7\) for a 640x640 input is not a layout"),  # RT-DETR-like
        ((1, 7, 8000), r"\(1, 7, 8000\)"),  # a raw head whose columns are not this input's anchor points
        ((1, 25200, 4), r"\(1, 25200, 4\)"),
        ((1, 84, 80, 80), r"\(1, 84, 80, 80\)"),
    ],
)
def test_an_unknown_layout_is_refused_naming_the_accepted_ones(tmp_path, shape, match):
    path = constant_detector(tmp_path / "odd.onnx", np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match=match) as caught:
        OnnxDetector(path)
    message = str(caught.value)
    assert "\n" not in message and all(name in message for name in (YOLO_RAW, YOLOV5_RAW, END_TO_END))


def test_layouts_from_shapes():
    assert output_layout((1, 84, 8400), (640, 640)) == YOLO_RAW  # YOLOv8n on COCO
    assert output_layout((1, 7, 8400), (640, 640)) == YOLO_RAW  # MegaDetector v6 YOLOv9 (3 classes)
    assert output_layout((1, 8, 34000), (1280, 1280)) == YOLO_RAW  # a P6 head (strides 8-64) at 1280
    assert output_layout((1, 26208, 8), (512, 832)) == YOLOV5_RAW  # ultralytics/yolov5#3397
    assert output_layout((1, 102000, 8), (1280, 1280)) == YOLOV5_RAW  # MegaDetector v5 (YOLOv5x6, 3 classes)
    assert output_layout((1, 25200, 6), (640, 640)) == YOLOV5_RAW  # one class: the anchor count tells it apart
    assert output_layout((1, 300, 6), (640, 640)) == END_TO_END


def test_segmentation_exports_wrong_class_counts_and_bad_files_are_refused(tmp_path):
    head = _raw_head([ANIMAL], classes=3)
    with pytest.raises(ValueError, match="Ultralytics 'segment' export; pass a detection model"):
        OnnxDetector(constant_detector(tmp_path / "seg.onnx", head, metadata={"task": "segment"}))
    with pytest.raises(ValueError, match=r"has 3 class scores but its metadata names 1 classes"):
        OnnxDetector(constant_detector(tmp_path / "pose.onnx", head, metadata={"names": "{0: 'fly'}"}))
    with pytest.raises(FileNotFoundError, match="missing.onnx does not exist; pass the detector's .onnx file"):
        OnnxDetector(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(ValueError, match=r"junk.onnx cannot be loaded by ONNX Runtime \(.*\); pass an ONNX detector"):
        OnnxDetector(tmp_path / "junk.onnx")
    with pytest.raises(ValueError, match="0 <= min_score < 1"):
        OnnxDetector(tmp_path / "seg.onnx", min_score=1.5)


# ------------------------------------------------------------------------------------------ tardis-edge predict
def _labelled_boxes(frames: range) -> dict[str, tuple[float, float, float, float]]:
    """Per fly, the box (corners, image px) around its labelled keypoints on all of ``frames``, 10 px wider."""
    from tardis_edge.data import load_dataset

    dataset = load_dataset(data_path("data/sleap-flies-clip/clip.slp", full=True))
    points: dict[str, list[np.ndarray]] = {}
    for sample in dataset.samples:
        if sample.frame_index in frames:
            ok = sample.visible > 0
            points.setdefault(str(sample.track), []).append(sample.keypoints_xy[ok])
    boxes = {}
    for track, pts in points.items():
        xy = np.concatenate(pts)
        lo, hi = xy.min(axis=0) + 0.5 - 10, xy.max(axis=0) + 0.5 + 10  # pixel centres -> corners, plus a margin
        boxes[track] = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
    return boxes


def _predict(artifact: Path, out: Path, *extra: str) -> tuple[dict, object]:
    import sleap_io as sio

    from tardis_edge.runtime.cli import main as edge_main

    clip = data_path("data/sleap-flies-clip/clip.mp4", full=True)
    argv = ["predict", str(artifact), str(clip), "--out", str(out), "--quiet", "--max-frames", "4", *extra]
    assert edge_main(argv) == 0
    return json.loads((out / "summary.json").read_text()), sio.load_slp(str(out / "clip.predictions.slp"))


def test_predict_with_a_detector_poses_the_animals_in_its_boxes(tiny_multi_artifact, tmp_path):
    boxes = _labelled_boxes(range(4))
    assert sorted(boxes) == ["female", "male"]
    side = 1024  # the clip's frames: 1024x1024, to a 640 input at 0.625, no border
    rows = np.zeros((1, 300, 6), np.float32)
    for i, track in enumerate(("female", "male")):  # class 0 the female, class 1 the male
        rows[0, i] = [*(np.array(boxes[track]) * 640 / side), 0.9 - 0.1 * i, i]
    detector = constant_detector(tmp_path / "flies.onnx", rows)

    summary, labels = _predict(tiny_multi_artifact, tmp_path / "both", "--detector", str(detector))
    assert summary["multi_animal"]["detector"]["layout"] == END_TO_END
    (item,) = summary["inputs"]
    assert item["animals"]["finder_frames"] >= 1

    def inside(instance, box) -> bool:
        x1, y1, x2, y2 = box
        xy = instance.numpy()
        centre = np.nanmedian(xy, axis=0) + 0.5  # corners, as the box
        return bool(x1 <= centre[0] <= x2 and y1 <= centre[1] <= y2)

    assert len(labels.labeled_frames) == 4
    for frame in labels.labeled_frames:
        assert len(frame.instances) == 2
        assert sorted(inside(i, boxes["female"]) for i in frame.instances) == [False, True]
        assert sorted(inside(i, boxes["male"]) for i in frame.instances) == [False, True]

    # the class filter: only the male's box is found, so no animal in the female's (on later frames the male's held
    # box, around its previous pose, may be posed beside the found one: the predictor's rule, as with the finder)
    summary, labels = _predict(
        tiny_multi_artifact, tmp_path / "male", "--detector", str(detector), "--detector-classes", "1"
    )
    assert summary["multi_animal"]["detector"]["classes"] == [1]
    assert len(labels.labeled_frames[0].instances) == 1
    for frame in labels.labeled_frames:
        assert all(inside(i, boxes["male"]) and not inside(i, boxes["female"]) for i in frame.instances)


def test_predict_detector_errors(tiny_multi_artifact, tmp_path, capsys):
    from tardis_edge.runtime.cli import main as edge_main

    clip = data_path("data/sleap-flies-clip/clip.mp4", full=True)
    base = ["predict", str(tiny_multi_artifact), str(clip), "--out", str(tmp_path / "out"), "--quiet"]
    assert edge_main([*base, "--detector", str(tmp_path / "none.onnx")]) == 2
    assert "none.onnx does not exist" in capsys.readouterr().err
    odd = constant_detector(tmp_path / "odd.onnx", np.zeros((1, 300, 7), np.float32))
    assert edge_main([*base, "--detector", str(odd)]) == 2
    err = capsys.readouterr().err
    assert "(1, 300, 7)" in err and "end-to-end (B, N, 6)" in err
    assert edge_main([*base, "--detector-classes", "0"]) == 2
    assert "--detector-classes sets up --detector" in capsys.readouterr().err
    assert edge_main([*base, "--detector", str(odd), "--single-animal"]) == 2
    assert "drop one of the two" in capsys.readouterr().err


# --------------------------------------------------------------- a single-animal artifact + a detector: many animals
ANIMALS = [[(60.0, 60.0), (72.0, 66.0), (66.0, 74.0)], [(180.0, 120.0), (192.0, 126.0), (186.0, 134.0)]]
ANIMAL_BOXES = [(50, 50, 82, 84), (170, 110, 202, 144)]  # corners around each animal's blobs, image px


@pytest.fixture(scope="module")
def colour_artifact(tmp_path_factory) -> Path:
    """test_runtime_support's pooling pose model (keypoint k at the blob of colour k) with 3 keypoints, no finder."""
    from test_runtime_support import build_artifact

    pytest.importorskip("torch")
    return build_artifact(tmp_path_factory.mktemp("colours"), names=["red", "green", "blue"])


def test_a_single_animal_artifact_with_a_detector_poses_every_animal(colour_artifact, tmp_path, capsys):
    import cv2
    import pandas as pd
    from test_runtime_support import blob_frame

    from tardis_edge.runtime.cli import main as edge_main

    size = (256, 192)  # to a 640 input at 2.5, 80 grey rows on top
    frame = np.maximum(*(blob_frame(size, centres) for centres in ANIMALS))
    cv2.imwrite(str(tmp_path / "two.png"), np.ascontiguousarray(frame[..., ::-1]))
    rows = np.zeros((1, 300, 6), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(ANIMAL_BOXES):
        rows[0, i] = [x1 * 2.5, y1 * 2.5 + 80, x2 * 2.5, y2 * 2.5 + 80, 0.9, 0]
    detector = constant_detector(tmp_path / "det.onnx", rows)
    base = ["predict", str(colour_artifact), str(tmp_path / "two.png"), "--quiet", "--detector", str(detector)]

    assert edge_main([*base, "--out", str(tmp_path / "none")]) == 2  # nothing says how many animals (tracks)
    assert "has no animal finder, so nothing sets the most animals per frame; pass --max-animals N" in (
        capsys.readouterr().err
    )
    assert edge_main([*base, "--out", str(tmp_path / "out"), "--max-animals", "2"]) == 0
    (h5,) = (tmp_path / "out").glob("*_el.h5")
    table = pd.read_hdf(h5)
    found = []
    for individual in ("individual1", "individual2"):
        part = table.xs(individual, axis=1, level="individuals")
        xy = np.stack([part.xs((name, c), axis=1, level=("bodyparts", "coords")).to_numpy()[0, 0] for name in
                       ("red", "green", "blue") for c in ("x", "y")]).reshape(3, 2)  # fmt: skip
        found.append(xy)
    found.sort(key=lambda xy: xy[0, 0])
    np.testing.assert_allclose(np.array(found), np.array(ANIMALS), atol=1.5)
