"""The ``tardis-edge`` command and its outputs: DeepLabCut CSV/H5 read back, corrupt and truncated videos, a killed
run's files, image folders, detector boxes, bench and eval (torch-free)."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_runtime_support import blob_frame, build_artifact, result_file

from tardis_edge.runtime.cli import main
from tardis_edge.runtime.writers import DlcResultWriter, read_dlc_predictions

ROOT = Path(__file__).resolve().parents[1]
VIDEO_WH = (96, 72)
OPENFIELD_NAMES = ["snout", "leftear", "rightear", "tailbase"]


def _centres(t: int) -> list[tuple[float, float]]:
    """Where the synthetic animal's two keypoints are in frame t (walks right and back, up to 1.9 px per frame)."""
    x = 35.0 + 12.0 * np.sin(2 * np.pi * t / 40)
    return [(x, 30.0 + 0.3 * (t % 7)), (x + 15.0, 38.0)]


def write_video(path: Path, n: int) -> Path:
    """An MJPG AVI of the synthetic animal (OpenCV writes BGR)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25, VIDEO_WH)
    for t in range(n):
        writer.write(np.ascontiguousarray(blob_frame(VIDEO_WH, _centres(t))[..., ::-1]))
    writer.release()
    return path


def corrupt_frames(path: Path, frames: list[int]) -> None:
    """Overwrite the start of the given frames' JPEG data (from each SOI marker) in place."""
    data = bytearray(path.read_bytes())
    soi = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    for f in frames:
        data[soi[f] : soi[f] + 300] = b"\xab" * 300
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return build_artifact(tmp_path_factory.mktemp("artifact"))


def test_dlc_files_read_back(tmp_path):
    rng = np.random.default_rng(0)
    keypoints = rng.uniform(0, 640, size=(5, 3, 2))
    scores = rng.uniform(0, 1, size=(5, 3)).astype(np.float32)
    keypoints[1, 2] = np.nan  # not found
    writer = DlcResultWriter(tmp_path, "clip", "DLC_test", ["snout", "leftear", "tailbase"], values="raw")
    for i in range(5):
        writer.add(i, i, keypoints[i], scores[i]) if i != 3 else writer.add(i, i, None, None)  # 3: bad frame
    writer.flush()
    expected_xy = keypoints.copy()
    expected_xy[3] = np.nan
    expected_l = scores.astype(np.float64)
    expected_l[3] = np.nan
    for suffix in ("csv", "h5"):
        back = read_dlc_predictions(tmp_path / f"clipDLC_test.{suffix}")
        assert back.scorer == "DLC_test" and back.bodyparts == ["snout", "leftear", "tailbase"]
        assert back.index == ["0", "1", "2", "3", "4"]
        np.testing.assert_allclose(back.keypoints, expected_xy, rtol=1e-12)
        np.testing.assert_allclose(back.likelihood, expected_l, rtol=1e-6)

    # ... and as DeepLabCut reads them: pd.read_hdf(file) (the single key df_with_missing), and
    # pd.read_csv(file, header=[0, 1, 2], index_col=0).
    import pandas as pd

    with pd.HDFStore(tmp_path / "clipDLC_test.h5", mode="r") as store:
        assert store.keys() == ["/df_with_missing"]
    h5 = pd.read_hdf(tmp_path / "clipDLC_test.h5")
    csv = pd.read_csv(tmp_path / "clipDLC_test.csv", header=[0, 1, 2], index_col=0)
    assert list(h5.columns.names) == ["scorer", "bodyparts", "coords"]
    assert list(h5.columns.get_level_values("coords")[:3]) == ["x", "y", "likelihood"]
    np.testing.assert_allclose(h5.to_numpy(), csv.to_numpy(), rtol=1e-12)
    assert h5.loc[2, ("DLC_test", "leftear", "y")] == pytest.approx(keypoints[2, 1, 1])


def test_flushes_wait_for_enough_new_rows(tmp_path):
    writer = DlcResultWriter(tmp_path, "clip", "DLC_s", ["a"])
    for i in range(3):
        writer.add(i, i, np.zeros((1, 2)), np.ones(1))
    assert writer.flush_due(3) and not writer.flush_due(4)
    writer.flush()
    assert writer.rows_written == 3 and not writer.flush_due(1)
    writer.add(3, 3, None, None)
    assert not writer.flush_due(1)  # right after a flush: wait 9x as long as it took (FLUSH_TIME_RATIO)
    time.sleep(10 * writer._last_flush_seconds + 0.01)
    assert writer.flush_due(1)


def test_dlc_reader_refuses_labels_files_and_bad_cells(openfield_subset_dir, tmp_path):
    with pytest.raises(ValueError, match="columns must be x, y, likelihood per bodypart .*labels file"):
        read_dlc_predictions(openfield_subset_dir / "labeled-data" / "m4s1" / "CollectedData_Pranav.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("scorer,s,s,s\nbodyparts,a,a,a\ncoords,x,y,likelihood\n0,1.5,2.5,0.9\n1,1.5,oops,0.9\n")
    with pytest.raises(ValueError, match="row 5 of .*bad.csv, column a/y: 'oops' is not a number"):
        read_dlc_predictions(bad)


def test_corrupt_video_completes_and_reports_bad_frames(tmp_path, artifact, capsys):
    video = write_video(tmp_path / "clip.avi", 40)
    corrupt_frames(video, [15, 16, 17])
    out = tmp_path / "out"
    rc = main(["predict", str(artifact), str(video), "--out", str(out), "--overlay", "--batch-size", "4", "-q"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())["inputs"][0]
    assert summary["bad_frame_indices"] == [15, 16, 17] and summary["frames_processed"] == 37
    assert summary["status"] == "complete" and summary["lost_frames"] == 0
    assert "bad frames: 3 (15, 16, 17)" in capsys.readouterr().out
    result = read_dlc_predictions(result_file(out, "clip", ".h5"))
    assert result.index == [str(i) for i in range(40)]  # row i is frame i
    # bad frames: likelihood 0 at the last found position (DeepLabCut-compatible values, the default)
    assert (result.likelihood[15:18] == 0).all() and (result.keypoints[15:18] == result.keypoints[14]).all()
    good = [t for t in range(40) if t not in (15, 16, 17)]
    truth = np.array([_centres(t) for t in good])
    # The refine crop is ~20 px wide, one heatmap pixel ~1.25 image px. Per axis: one heatmap pixel from the decode
    # (see test_runtime_boxes) and up to one more where the first pass started from a box lagging the animal (after
    # the gap), so 2.5 px; JPEG moves the blob peaks a little too. Measured: 2.19 px at most, 0.27 px on average.
    err = np.abs(result.keypoints[good] - truth)
    assert err.max() < 2.5 and err.mean() < 0.5
    coco = json.loads(result_file(out, "clip", "_coco.json").read_text())
    assert [r["image_id"] for r in coco] == good and len(coco[0]["keypoints"]) == 2 * 3
    overlay = cv2.VideoCapture(str(out / "clip_overlay.mp4"))
    assert int(overlay.get(cv2.CAP_PROP_FRAME_COUNT)) == 37
    overlay.release()


def test_stream_without_frame_count_reports_bad_frames(tmp_path, artifact):
    """As a URL the video is a stream: no frame count, so failed reads count as bad frames once a good one follows."""
    video = write_video(tmp_path / "clip.avi", 30)
    corrupt_frames(video, [10, 11])
    out = tmp_path / "out"
    assert main(["predict", str(artifact), video.resolve().as_uri(), "--out", str(out), "-q"]) == 0
    summary = json.loads((out / "summary.json").read_text())["inputs"][0]
    assert summary["kind"] == "stream" and summary["frames_expected"] is None
    assert summary["bad_frame_indices"] == [10, 11] and summary["frames_processed"] == 28
    assert summary["ended"].startswith("end of stream after frame 29")
    assert read_dlc_predictions(result_file(out, "stream", ".csv")).index == [str(i) for i in range(30)]


def test_truncated_video_reports_the_missing_tail(tmp_path, artifact):
    video = write_video(tmp_path / "cut.avi", 40)
    data = video.read_bytes()
    video.write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "out"
    assert main(["predict", str(artifact), str(video), "--out", str(out), "-q"]) == 0
    summary = json.loads((out / "summary.json").read_text())["inputs"][0]
    assert 0 < summary["frames_processed"] < 40 and summary["bad_frames"] == 40 - summary["frames_processed"]
    assert "could not be decoded (truncated file?)" in summary["ended"]


def test_killed_run_leaves_complete_files(tmp_path, artifact):
    video = write_video(tmp_path / "long.avi", 500)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tardis_edge.runtime.cli", "predict", str(artifact), str(video), "--out", str(out)]
    cmd += ["--flush-every", "25", "--batch-size", "1", "--overlay", "-q"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    # The first flush writes csv, h5, then coco json: kill once it is done, while later flushes are under way.
    while not list(out.glob("longDLC_*_coco.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {proc.stderr.read()}"
    csv, h5 = (
        read_dlc_predictions(result_file(out, "long", ".csv")),
        read_dlc_predictions(result_file(out, "long", ".h5")),
    )
    coco = json.loads(result_file(out, "long", "_coco.json").read_text())
    assert 25 <= len(coco) and len(csv.index) < 500  # at least the first flush, not the whole video
    assert len(csv.index) >= len(h5.index) >= len(coco)  # written in that order, each file whole
    assert csv.index == [str(i) for i in range(len(csv.index))] and np.isfinite(h5.keypoints).all()
    assert not (out / "long_overlay.mp4").exists()  # never half-written under its real name


def test_rerun_after_a_kill_keeps_the_earlier_rows(tmp_path, artifact, capsys):
    """A second predict into the same folder is refused, leaving the first run's files byte-identical (issue 13,
    finding 3); ``--overwrite`` replaces them."""
    video = write_video(tmp_path / "clip.avi", 12)
    out = tmp_path / "out"
    assert main(["predict", str(artifact), str(video), "--out", str(out), "--max-frames", "8", "-q"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(["predict", str(artifact), str(video), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tardis-edge predict: error: ") and "\n" not in err and "Traceback" not in err
    assert re.search(r"clipDLC_\w+\.csv already exists", err) and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["predict", str(artifact), str(video), "--out", str(out), "--overwrite", "-q"]) == 0
    assert len(read_dlc_predictions(result_file(out, "clip", ".csv")).index) == 12


def test_image_folder_loose_images_and_detector_boxes(tmp_path, artifact):
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(3):
        cv2.imwrite(str(folder / f"f{t}.png"), blob_frame(VIDEO_WH, _centres(t))[..., ::-1])
    (folder / "broken.png").write_bytes(b"not a png")
    loose = tmp_path / "one.jpg"
    cv2.imwrite(str(loose), blob_frame(VIDEO_WH, _centres(5))[..., ::-1])
    out = tmp_path / "out"
    assert main(["predict", str(artifact), str(folder), str(loose), "--out", str(out), "--overlay", "-q"]) == 0
    inputs = {i["input"]: i for i in json.loads((out / "summary.json").read_text())["inputs"]}
    assert inputs["frames"]["bad_frames"] == 1 and inputs["frames"]["frames_processed"] == 3
    assert inputs["images"]["frames_processed"] == 1
    frames = read_dlc_predictions(result_file(out, "frames", ".csv"))
    assert frames.index == ["broken.png", "f0.png", "f1.png", "f2.png"]
    np.testing.assert_allclose(frames.keypoints[1:], [_centres(t) for t in range(3)], atol=1.5)
    assert sorted(p.name for p in (out / "frames_overlay").iterdir()) == ["f0.png", "f1.png", "f2.png"]

    # Detector boxes by file name: a box away from the animal means it is not found there.
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("frame,x,y,w,h\nf1.png,0,50,20,20\n")
    out2 = tmp_path / "out2"
    assert main(["predict", str(artifact), str(folder), "--out", str(out2), "--boxes", str(boxes), "-q"]) == 0
    assert json.loads((out2 / "summary.json").read_text())["inputs"][0]["boxes_from_file"] == 1
    with_boxes = read_dlc_predictions(result_file(out2, "frames", ".csv"))
    assert with_boxes.likelihood[2].max() < 0.2  # f1.png, cropped where the animal is not
    np.testing.assert_allclose(with_boxes.keypoints[[1, 3]], frames.keypoints[[1, 3]])


def test_cli_errors_name_the_problem(tmp_path, artifact, capsys):
    assert main(["predict", str(tmp_path / "nope"), str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "has no images (.png, .jpg" in capsys.readouterr().err  # inputs are checked before the model loads
    (tmp_path / "a.png").write_bytes(b"x")
    assert main(["predict", str(tmp_path / "nope"), str(tmp_path / "a.png"), "--out", str(tmp_path / "o")]) == 2
    assert "artifact folder " in (err := capsys.readouterr().err) and "nope does not exist" in err
    assert main(["predict", str(artifact), "missing.mp4", "--out", str(tmp_path / "o")]) == 2
    assert "input 'missing.mp4' is not a file, folder, camera index or URL" in capsys.readouterr().err
    boxes = tmp_path / "b.csv"
    boxes.write_text("frame,x,y,w,h\n")
    args = ["predict", str(artifact), str(tmp_path / "a.png"), str(tmp_path), "--out", str(tmp_path / "o")]
    assert main([*args, "--boxes", str(boxes)]) == 2
    assert "--boxes gives the boxes of one input; got 2 inputs" in capsys.readouterr().err
    assert (
        main(["predict", str(artifact), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--batch-size", "0"])
        == 2
    )
    assert "--batch-size must be >= 1, got 0" in capsys.readouterr().err


def test_bench_reports_latency_per_batch_size(tmp_path, artifact, capsys):
    out = tmp_path / "bench.json"
    args = ["bench", str(artifact), "--batch-sizes", "1,3", "--iterations", "5", "--warmup", "1"]
    assert main([*args, "--precisions", "fp32,int8", "--frame-size", "96", "72", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    ok, missing = report["results"]
    assert missing["precision"] == "int8" and "no int8 ONNX model" in missing["error"]
    assert [r["batch_size"] for r in ok["rows"]] == [1, 3]
    for row in ok["rows"]:
        for part in ("model", "pipeline"):
            assert 0 < row[part]["p50_ms"] <= row[part]["p99_ms"]
            assert row[part]["throughput_fps"] == pytest.approx(
                row["batch_size"] / row[part]["p50_ms"] * 1000, rel=1e-2
            )
    assert "batch   3: model p50" in capsys.readouterr().out


def test_eval_matches_training_evaluation_without_torch(tmp_path, openfield_dir):
    """``tardis-edge eval`` (ONNX Runtime, NumPy decode, flip test) on the openfield test split gives the metrics of
    the training evaluation path (the PyTorch crop runner in tardis_edge.predict + tardis_edge.metrics), and never
    imports torch."""
    from openfield_split import openfield_split, openfield_split_of
    from test_runtime_support import INPUT_WH, pooling_model

    from kernels.predict import model_crop_runner
    from tardis_edge.data import load_dataset, read_sample_image
    from tardis_edge.metrics import evaluate_predictions
    from tardis_edge.predict import PredictConfig, predict_frames

    folder = build_artifact(tmp_path / "of", names=OPENFIELD_NAMES, flip_pairs=[[1, 2]])
    dataset = load_dataset(openfield_dir)
    openfield_split_of(dataset).write(folder / "split.json")  # as tardis-export copies the run's split
    out = tmp_path / "metrics.json"
    code = (
        "import sys; from tardis_edge.runtime.cli import main; "
        f"rc = main(['eval', {str(folder)!r}, '--data', {str(openfield_dir)!r}, '--split', 'test', "
        f"'--decode', 'numpy', '--flip-test', '--out', {str(out)!r}]); "
        "assert 'torch' not in sys.modules, 'eval imported torch'; sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    metrics = json.loads(out.read_text())

    test = openfield_split(dataset)[1]
    images = [read_sample_image(s) for s in test.samples]
    cfg = PredictConfig(decode="msra", flip_test=True, two_pass=True)
    kps, scores, _ = predict_frames(model_crop_runner(pooling_model(4), cfg, [0, 2, 1, 3]), images, INPUT_WH, cfg)
    reference = evaluate_predictions(test, kps, scores, dataset.schema)
    assert metrics["num_samples"] == reference["num_samples"] == 21
    for key in ("rmse_px", "mean_px", "PCK@0.05", "PCK@0.1", "AP"):
        assert metrics[key] == pytest.approx(reference[key], abs=1e-6), key


def test_single_animal_artifact_refuses_max_animals(artifact, tmp_path):
    """--max-animals asks for the multi-animal path: an artifact without a finder says so in one line (exit 2)."""
    import cv2

    frame = tmp_path / "f.png"
    cv2.imwrite(str(frame), np.zeros((64, 64, 3), np.uint8))
    code = main(["predict", str(artifact), str(frame), "--out", str(tmp_path / "o"), "--max-animals", "2"])
    assert code == 2
