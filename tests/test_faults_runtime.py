"""Fault suite of ``tardis-edge`` (issue 13): every bad artifact, input, option or machine fault ends in one line
naming the file or value, a documented exit code (``tardis_edge.errors``), no traceback, and earlier results
untouched. Bad input fails before a result file is written, so each case runs against a folder of earlier results
with ``--overwrite`` and checks those files byte for byte."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_runtime_cli import write_video
from test_runtime_support import blob_frame, build_artifact, result_file

from tardis_edge.artifact import METADATA_FILE
from tardis_edge.errors import EXIT_ENVIRONMENT, EXIT_USER
from tardis_edge.runtime.cli import main
from tardis_edge.runtime.writers import default_scorer, read_dlc_predictions

ROOT = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def expect_one_line(capsys, code: int, expected_code: int, command: str, *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == expected_code, err
    assert err, "no message"
    assert "Traceback" not in "\n".join(err), "\n".join(err)
    assert len(err) == 1, err
    assert err[0].startswith(f"tardis-edge {command}: error: "), err[0]
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """An artifact, a 12-frame video, a folder of 3 frames, and earlier results of a good run on that folder."""
    root = tmp_path_factory.mktemp("runtime_faults")
    artifact = build_artifact(root / "artifact")
    video = write_video(root / "clip.avi", 12)
    frames = root / "frames"
    frames.mkdir()
    for i in range(3):
        image = blob_frame((96, 72), [(30.0 + 5 * i, 30.0), (50.0, 40.0)])
        cv2.imwrite(str(frames / f"f{i}.png"), np.ascontiguousarray(image[..., ::-1]))
    earlier = root / "earlier"
    assert main(["predict", str(artifact), str(frames), "--out", str(earlier), "-q"]) == 0
    return {"artifact": artifact, "video": video, "frames": frames, "earlier": earlier, "root": root}


def predict_fails(inputs, capsys, *needles, artifact=None, source=None, extra=(), code=EXIT_USER) -> str:
    """``tardis-edge predict ... --out EARLIER --overwrite`` fails with one line; EARLIER is byte-identical."""
    before = snapshot(inputs["earlier"])
    argv = ["predict", str(artifact or inputs["artifact"]), str(source or inputs["frames"])]
    result = main([*argv, "--out", str(inputs["earlier"]), "--overwrite", "-q", *extra])
    line = expect_one_line(capsys, result, code, "predict", *needles)
    assert snapshot(inputs["earlier"]) == before
    return line


def edited_artifact(inputs, tmp_path: Path, edit) -> Path:
    """A copy of the artifact with ``edit(folder)`` applied."""
    folder = tmp_path / "artifact"
    shutil.copytree(inputs["artifact"], folder)
    edit(folder)
    return folder


def _edit_json(edit):
    def apply(folder: Path) -> None:
        data = json.loads((folder / METADATA_FILE).read_text())
        edit(data)
        (folder / METADATA_FILE).write_text(json.dumps(data))

    return apply


def _write(name: str, content: bytes):
    return lambda folder: (folder / name).write_bytes(content)


def _swap_graphs(folder: Path) -> None:
    shutil.copy(folder / "tardis_fp32_heatmaps.onnx", folder / "tardis_fp32.onnx")


def _damage_same_size(folder: Path) -> None:
    data = bytearray((folder / "tardis_fp32.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "tardis_fp32.onnx").write_bytes(bytes(data))


def _garbage_without_hashes(folder: Path) -> None:
    (folder / "tardis_fp32.onnx").write_bytes(b"not an onnx graph" * 10)
    _edit_json(lambda d: [e.pop(k, None) for e in d["models"].values() for k in ("bytes", "sha256")])(folder)


def _unlisted_fp16(folder: Path) -> None:
    shutil.copy(folder / "tardis_fp32.onnx", folder / "tardis_fp16.onnx")  # by name only: never opened


def _truncate(name: str, keep: float):
    def apply(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: int(len(data) * keep)])

    return apply


BAD_ARTIFACTS = {
    "no model.json": (lambda f: (f / METADATA_FILE).unlink(), [], ["model.json not found", "tardis-export"]),
    "truncated model.json": (_truncate(METADATA_FILE, 0.5), [], ["model.json is not valid JSON", "truncated?"]),
    "model.json a list": (_write(METADATA_FILE, b"[1, 2]"), [], ["model.json holds a JSON list"]),
    "model.json binary": (_write(METADATA_FILE, b"\xff\xfe\x00\x01"), [], ["model.json is not a text (UTF-8) file"]),
    "model.json without keypoints": (
        _edit_json(lambda d: d.pop("keypoint_names")),
        [],
        ["model.json is incomplete", "keypoint_names"],
    ),
    "model.json of a newer exporter": (
        _edit_json(lambda d: d.update(colour_space="srgb")),
        [],
        ["unknown metadata keys ['colour_space']", "newer exporter"],
    ),
    "model.json newer format": (
        _edit_json(lambda d: d.update(format_version=99)),
        [],
        ["format_version 99", "upgrade tardis-edge"],
    ),
    "model.json not an artifact": (
        _edit_json(lambda d: d.update(format="other")),
        [],
        ["is not a tardis-edge artifact"],
    ),
    "input size disagrees with the graph": (
        _edit_json(lambda d: d.update(input_width=96, input_height=96)),
        [],
        ["tardis_fp32.onnx takes 64x64 input but model.json says 96x96", "re-export"],
    ),
    "keypoint count disagrees with the graph": (
        _edit_json(lambda d: d.update(keypoint_names=["a", "b", "c"])),
        [],
        ["tardis_fp32.onnx outputs 2 keypoints", "model.json names 3"],
    ),
    "listed graph missing": (
        lambda f: (f / "tardis_fp32.onnx").unlink(),
        [],
        ["tardis_fp32.onnx does not exist", "model.json lists it", "re-export"],
    ),
    "graph of another size": (_swap_graphs, [], ["tardis_fp32.onnx has", "bytes but model.json lists", "re-export"]),
    "graph damaged, same size": (
        _damage_same_size,
        [],
        ["tardis_fp32.onnx has sha256", "model.json lists", "re-export"],
    ),
    "old artifact with a garbage graph": (
        _garbage_without_hashes,
        [],
        ["tardis_fp32.onnx cannot be loaded by ONNX Runtime", "re-export"],
    ),
    "unlisted fp16 file is not used": (
        _unlisted_fp16,
        ["--precision", "fp16"],
        ["no fp16 ONNX model", "model.json lists precisions ['fp32', 'fp32_heatmaps']"],
    ),
    "heatmap graph missing for numpy decode": (
        lambda f: (f / "tardis_fp32_heatmaps.onnx").unlink(),
        ["--decode", "numpy"],
        ["tardis_fp32_heatmaps.onnx does not exist"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ARTIFACTS))
def test_bad_artifacts(inputs, tmp_path, capsys, case):
    edit, extra, needles = BAD_ARTIFACTS[case]
    artifact = edited_artifact(inputs, tmp_path, edit)
    predict_fails(inputs, capsys, *needles, artifact=artifact, extra=extra)


def test_missing_artifact_folder(inputs, tmp_path, capsys):
    predict_fails(inputs, capsys, "artifact folder", "nowhere does not exist", artifact=tmp_path / "nowhere")


def _engine_of_another_export(folder: Path) -> None:
    (folder / "tardis_fp32.engine").write_bytes(b"engine bytes")
    sidecar = {"onnx": "tardis_fp32.onnx", "onnx_sha256": "0" * 64, "precision": "fp32"}
    (folder / "tardis_fp32.engine.json").write_text(json.dumps(sidecar))


def test_tensorrt_engine_of_another_export_is_refused(inputs, tmp_path, capsys):
    """The engine's sidecar names the graph it was built from by hash; one of another export is never run (checked
    before TensorRT is needed, so this runs without a GPU)."""
    artifact = edited_artifact(inputs, tmp_path, _engine_of_another_export)
    predict_fails(
        inputs,
        capsys,
        "tardis_fp32.engine was built from a tardis_fp32.onnx with sha256 0000",
        "rebuild it",
        artifact=artifact,
        extra=["--backend", "tensorrt"],
    )


def test_tensorrt_engine_without_sidecar(inputs, tmp_path, capsys):
    artifact = edited_artifact(inputs, tmp_path, _write("tardis_fp32.engine", b"engine bytes"))
    predict_fails(
        inputs, capsys, "tardis_fp32.engine.json not found", artifact=artifact, extra=["--backend", "tensorrt"]
    )


def _truncated_mp4(folder: Path) -> Path:
    path = folder / "cut.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 25, (96, 72))
    for t in range(10):
        writer.write(np.full((72, 96, 3), 20 * t, np.uint8))
    writer.release()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the moov index, written last, is gone
    return path


BAD_INPUTS = {
    "missing video": (lambda d: d / "absent.mp4", [], ["absent.mp4' is not a file, folder, camera index or URL"]),
    "invalid video": (
        lambda d: _file(d / "notes.mp4", b"these are my notes, not a video" * 4),
        [],
        ["notes.mp4 is not a video", "match no video container"],
    ),
    "truncated mp4": (_truncated_mp4, [], ["cut.mp4 is a truncated MP4/MOV", "no 'moov' index"]),
    "empty video": (lambda d: _file(d / "empty.avi", b""), [], ["empty.avi is empty (0 bytes)"]),
    "damaged avi": (
        lambda d: _file(d / "bad.avi", b"RIFF\x00\x00\x00\x00AVI LIST" + b"\x00" * 64),
        [],
        ["bad.avi looks like AVI but OpenCV cannot open it", "ffmpeg -i"],
    ),
    "folder without images": (lambda d: _folder(d / "nothing"), [], ["folder", "nothing has no images"]),
    "max frames 0": (lambda d: None, ["--max-frames", "0"], ["--max-frames must be >= 1, got 0"]),
    "batch size 0": (lambda d: None, ["--batch-size", "0"], ["--batch-size must be >= 1, got 0"]),
    "flush every 0": (lambda d: None, ["--flush-every", "0"], ["--flush-every must be >= 1, got 0"]),
    "threads 0": (lambda d: None, ["--threads", "0"], ["threads must be >= 1, got 0"]),
    "unknown provider": (
        lambda d: None,
        ["--providers", "MagicExecutionProvider"],
        ["MagicExecutionProvider"],
    ),
    "unknown decode method": (
        lambda d: None,
        ["--decode", "numpy", "--decode-method", "wild"],
        ["unknown decode method 'wild'"],
    ),
    "flip test with graph decode": (lambda d: None, ["--flip-test"], ["flip_test", "decode='numpy'"]),
    "engine option with onnxruntime": (lambda d: None, ["--engine", "x.engine"], ["engine= is a TensorRT engine path"]),
}


def _file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    (path / "readme.txt").write_text("no images here")
    return path


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_and_options(inputs, tmp_path, capsys, case):
    make, extra, needles = BAD_INPUTS[case]
    source = make(tmp_path)
    predict_fails(inputs, capsys, *needles, source=source, extra=extra)


BAD_BOXES = {
    "missing file": (None, "frames", ["boxes file", "absent.csv does not exist"]),
    "wrong header": ("frame,left,top,w,h\n0,1,2,3,4\n", "video", ["header must be frame,x,y,w,h"]),
    "not a number": ("frame,x,y,w,h\n0,1,2,three,4\n", "video", ["row 2 of", "not all numbers"]),
    "short row": ("frame,x,y,w,h\n0,1,2,3\n", "video", ["row 2 of", "has 4 cells, expected 5"]),
    "negative width": ("frame,x,y,w,h\n0,1,2,-3,4\n", "video", ["row 2 of", "w=-3.0", "w, h > 0"]),
    "frame twice": ("frame,x,y,w,h\n3,1,2,3,4\n3,1,2,3,4\n", "video", ["row 3 of", "frame 3 has a second box"]),
    "frames past the video": (
        "frame,x,y,w,h\n3,1,2,30,40\n500,1,2,30,40\n501,1,2,30,40\n",
        "video",
        ["2 of 3 rows name no frame of the input: 500, 501", "clip (0..11)"],
    ),
    "file names for a video": ("frame,x,y,w,h\nf0.png,1,2,30,40\n", "video", ["name no frame of the input: f0.png"]),
    "images of another folder": (
        "frame,x,y,w,h\nf1.png,1,2,30,40\nimg0001.png,1,2,30,40\n",
        "frames",
        ["1 of 2 rows name no frame of the input: img0001.png", "e.g. f0.png"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_BOXES))
def test_bad_boxes(inputs, tmp_path, capsys, case):
    content, source, needles = BAD_BOXES[case]
    boxes = tmp_path / "absent.csv" if content is None else _file(tmp_path / "boxes.csv", content.encode())
    predict_fails(inputs, capsys, *needles, source=inputs[source], extra=["--boxes", str(boxes)])


def test_boxes_for_two_inputs(inputs, tmp_path, capsys):
    boxes = _file(tmp_path / "boxes.csv", b"frame,x,y,w,h\n0,1,2,30,40\n")
    before = snapshot(inputs["earlier"])
    argv = ["predict", str(inputs["artifact"]), str(inputs["frames"]), str(inputs["video"]), "--boxes", str(boxes)]
    code = main([*argv, "--out", str(inputs["earlier"]), "--overwrite"])
    expect_one_line(capsys, code, EXIT_USER, "predict", "--boxes gives the boxes of one input; got 2 inputs")
    assert snapshot(inputs["earlier"]) == before


def test_earlier_results_are_not_replaced_without_overwrite(inputs, capsys):
    before = snapshot(inputs["earlier"])
    code = main(["predict", str(inputs["artifact"]), str(inputs["frames"]), "--out", str(inputs["earlier"]), "-q"])
    earlier = f"frames{default_scorer(inputs['artifact'])}.csv already exists"
    expect_one_line(capsys, code, EXIT_USER, "predict", earlier, "--overwrite")
    assert snapshot(inputs["earlier"]) == before


def test_out_is_a_file(inputs, tmp_path, capsys):
    taken = _file(tmp_path / "taken", b"mine")
    code = main(["predict", str(inputs["artifact"]), str(inputs["frames"]), "--out", str(taken), "-q"])
    expect_one_line(capsys, code, EXIT_USER, "predict", f"--out {taken} is a file")
    assert taken.read_bytes() == b"mine"


def test_interrupt_keeps_the_frames_done(inputs, tmp_path, capsys, monkeypatch):
    """Ctrl-C after the first batch: exit 130, one line, the results hold that batch and summary.json says so."""
    from tardis_edge.runtime import cli

    infer = cli._SourceRun._infer

    def interrupted_after_one_batch(self, batch):
        if self.frames_done:
            raise KeyboardInterrupt
        infer(self, batch)

    monkeypatch.setattr(cli._SourceRun, "_infer", interrupted_after_one_batch)
    out = tmp_path / "out"
    argv = ["predict", str(inputs["artifact"]), str(inputs["video"]), "--out", str(out), "--batch-size", "4", "-q"]
    expect_one_line(capsys, main(argv), 130, "predict", f"interrupted; the results in {out} hold the 4 frames of clip")
    summary = json.loads((out / "summary.json").read_text())["inputs"][0]
    assert summary["status"] == "interrupted" and summary["frames_processed"] == 4
    assert len(read_dlc_predictions(result_file(out, "clip", ".h5")).index) == 4


def test_debug_shows_the_traceback(inputs, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        main(["predict", str(tmp_path / "nowhere"), str(inputs["frames"]), "--out", str(tmp_path / "o"), "--debug"])


# ------------------------------------------------------------------------------------------------ eval
@pytest.fixture(scope="module")
def two_keypoint_coco(inputs) -> Path:
    """A COCO keypoint file of the artifact's two keypoints on the frames folder."""
    images, annotations = [], []
    for i in range(3):
        images.append({"id": i + 1, "file_name": f"frames/f{i}.png", "width": 96, "height": 72})
        annotations.append(
            {"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 10, 60, 50], "area": 3000.0,
             "iscrowd": 0, "num_keypoints": 2, "keypoints": [30 + 5 * i, 30, 2, 50, 40, 2]}
        )  # fmt: skip
    categories = [{"id": 1, "name": "blob", "keypoints": ["red", "green"], "skeleton": [[1, 2]]}]
    path = inputs["frames"].parent / "blobs.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


BAD_EVALS = {
    "test split without split.json": (["--split", "test"], None, ["has no split.json", "--split all"]),
    "unknown split": (["--split", "most"], None, ["--split must be test, val, train, all or SPLIT_FILE:PART"]),
    "missing split file": (["--split", "nowhere/split.json:test"], None, ["nowhere/split.json"]),
    "missing data": (["--split", "all"], "absent", ["absent"]),
    "keypoints differ": (["--split", "all"], "openfield", ["differ from the dataset's", "snout"]),
    "batch size 0": (["--split", "all", "--batch-size", "0"], None, ["batch_size must be >= 1, got 0"]),
}


@pytest.mark.parametrize("case", sorted(BAD_EVALS))
def test_bad_evals(inputs, two_keypoint_coco, openfield_subset_dir, tmp_path, capsys, case):
    extra, data, needles = BAD_EVALS[case]
    data_path = {None: two_keypoint_coco, "absent": tmp_path / "absent", "openfield": openfield_subset_dir}[data]
    out = _file(tmp_path / "metrics.json", b'{"earlier": 1}')
    argv = ["eval", str(inputs["artifact"]), "--data", str(data_path), "--out", str(out), *extra]
    expect_one_line(capsys, main(argv), EXIT_USER, "eval", *needles)
    assert out.read_bytes() == b'{"earlier": 1}'


def test_eval_writes_strict_json(inputs, two_keypoint_coco, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    argv = ["eval", str(inputs["artifact"]), "--data", str(two_keypoint_coco), "--split", "all", "--out", str(out)]
    assert main(argv) == 0
    json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in {out}"))


def test_strict_json_writes_null_for_nan():
    """metrics_test.json, summaries and reports go through strict_json: a keypoint never labelled in the test part
    has NaN metrics, which Python's json would write as bare NaN (not JSON)."""
    from tardis_edge.io import strict_json

    data = {"rmse_px": float("nan"), "per_keypoint": {"tail": np.float32("nan"), "snout": np.float64(1.5)}}
    text = strict_json({**data, "scores": np.array([0.5, np.inf]), "n": np.int64(3)})
    assert json.loads(text) == {
        "rmse_px": None,
        "per_keypoint": {"tail": None, "snout": 1.5},
        "scores": [0.5, None],
        "n": 3,
    }


def test_bench_reports_what_cannot_run(inputs, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", str(inputs["artifact"]), "--precisions", "int8", "--iterations", "1", "--out", str(out)]
    assert main(argv) == 1  # nothing could run: not a success
    assert "bench: onnxruntime/int8: not run: " in capsys.readouterr().err
    assert "no int8 ONNX model" in json.loads(out.read_text())["results"][0]["error"]


# ------------------------------------------------------------------------------------------------ disk full
def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # writes past it fail (Python ignores SIGXFSZ)

    return apply


def test_disk_full_stops_cleanly_with_readable_partial_results(inputs, tmp_path):
    """A file-size limit that the growing COCO results reach: the run stops with exit 4 and one line; every result
    file holds its last complete flush and reads back; summary.json says where it stopped."""
    video = write_video(tmp_path / "long.avi", 700)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    argv = ["predict", str(inputs["artifact"]), str(video), "--out", str(out), "--flush-every", "50", "-q"]
    done = subprocess.run(
        [sys.executable, "-m", "tardis_edge.runtime", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limit_file_size(90_000),
    )
    err = done.stderr.strip().splitlines()
    assert done.returncode == EXIT_ENVIRONMENT, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and len(err) == 1, err
    assert err[0].startswith("tardis-edge predict: error: ") and "File too large" in err[0], err[0]
    assert "stopped after" in err[0] and "summary.json says where it stopped" in err[0], err[0]
    summary = json.loads((out / "summary.json").read_text())["inputs"][0]
    assert summary["status"] == "stopped" and summary["ended"].startswith("stopped: ")
    rows = {Path(p).name: n for p, n in summary["rows_in_files"].items()}
    csv, h5, coco = (result_file(out, "long", ending) for ending in (".csv", ".h5", "_coco.json"))
    assert rows[csv.name] == len(read_dlc_predictions(csv).index) > 0
    assert rows[h5.name] == len(read_dlc_predictions(h5).index) > 0
    assert 0 < len(json.loads(coco.read_text())) == rows[coco.name] < 700, "the COCO file keeps its last complete flush"
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"


@pytest.mark.parametrize(
    "module,argv",
    [
        ("tardis_edge.runtime.cli", ["predict", "artifact", "clip.mp4", "--batch-size", "many", "--out", "o"]),
        ("tardis_edge.runtime.cli", ["bench"]),
        ("export.cli", ["run", "--trt-batch", "small"]),
        ("training.extract", ["--nope"]),
    ],
    ids=["predict batch size not a number", "bench missing artifact", "export bad trt batch", "extract unknown option"],
)
def test_argument_errors_are_one_line(module, argv):
    """Errors argparse finds itself: one line and exit 2, no usage text (tardis_edge.errors.ArgumentParser)."""
    done = subprocess.run([sys.executable, "-m", module, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert ": error: " in lines[0] and "--help" in lines[0] and not lines[0].startswith("usage")
