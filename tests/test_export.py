"""tardis-export on a small model and real openfield frames: ONNX FP32/FP16/INT8 parity, metadata, verification,
calibration and the errors users meet.

The model is a RepVGG-A0 student at 64x64 (exported in its re-parameterised deployment form) whose last head conv is
fitted by least squares to Gaussian targets on a few training crops, so its heatmaps have blob-shaped peaks and the
decode is meaningful; nothing is trained by gradient descent, so the fixture takes seconds.
"""

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from openfield_split import openfield_split, openfield_split_of

from export.calibration import calibration_crops, labelled_boxes
from export.cli import EXIT_THRESHOLD, main
from export.onnx_export import check_opset, decode_node_names
from export.pipeline import ExportOptions, export_artifact
from export.source import load_source, load_split
from export.verify import (
    Thresholds,
    artifact_runner,
    confident_agreement,
    crop_deviation,
    in_batches,
    on_crops,
    ort_session,
    verify,
    write_report,
)
from tardis_edge.artifact import ONNX_METADATA_KEY, ONNX_MODEL_KEY, ArtifactMetadata, file_fingerprint
from tardis_edge.checkpoint import CHECKPOINT_NAME, DeployCheckpoint
from tardis_edge.codec import encode_gaussian_targets
from tardis_edge.config import to_dict
from tardis_edge.data import load_dataset, read_sample_image
from tardis_edge.models import ModelConfig, build_model
from tardis_edge.predict import PredictConfig, crop_batch

INPUT = 64
STRIDE = 4


def fit_small_model(openfield_dir: Path):
    """RepVGG-A0 at 64x64, head.final fitted by ridge least squares on 12 training crops; returns (model, schema)."""
    torch.manual_seed(0)
    dataset = load_dataset(openfield_dir)
    train, _ = openfield_split(dataset)
    config = ModelConfig(
        backbone="repvgg_a0", num_keypoints=4, input_size=(INPUT, INPUT), use_decoder=False, use_head=True,
        neck_channels=32, head_depth=1,
    )  # fmt: skip
    model = build_model(config).eval()
    samples = train.samples[:12]
    crops, affines = crop_batch(
        [read_sample_image(s) for s in samples], labelled_boxes(samples, (INPUT, INPUT), 1.25), (INPUT, INPUT)
    )
    keypoints = np.stack([s.keypoints_xy @ m[:, :2].T + m[:, 2] for s, m in zip(samples, affines, strict=True)])
    visible = np.stack([s.visible for s in samples])
    hm = INPUT // STRIDE
    targets, _ = encode_gaussian_targets(np.nan_to_num(keypoints).astype(np.float32), visible, (hm, hm), STRIDE, 2.0)
    with torch.no_grad():
        features = model.head.layers(model.encode(torch.from_numpy(crops)))  # (N, C, h, w)
    n, c, h, w = features.shape
    x = torch.cat([features.permute(0, 2, 3, 1).reshape(-1, c), torch.ones(n * h * w, 1)], dim=1).double()
    y = torch.from_numpy(targets).permute(0, 2, 3, 1).reshape(-1, 4).double()
    solution = torch.linalg.solve(x.T @ x + 1e-3 * torch.eye(c + 1, dtype=torch.float64), x.T @ y)  # (C+1, K)
    with torch.no_grad():
        model.head.final.weight.copy_(solution[:c].T.reshape(4, c, 1, 1).float())
        model.head.final.bias.copy_(solution[c].float())
    return model, dataset.schema


def write_run(folder: Path, model, schema, openfield_dir: Path) -> Path:
    """A run folder as training.full leaves it: model.pt (the deployable checkpoint) and config.yaml."""
    folder.mkdir(parents=True, exist_ok=True)
    DeployCheckpoint(
        model=model.state_dict(),
        model_config=model.config.to_dict(),
        schema=schema,
        input_size=(INPUT, INPUT),
        heatmap_size=(INPUT // STRIDE, INPUT // STRIDE),
        predict=to_dict(PredictConfig()),
        versions={"torch": str(torch.__version__)},
        split=openfield_split_of(load_dataset(openfield_dir)).to_dict(),
    ).save(folder / CHECKPOINT_NAME)
    (folder / "config.yaml").write_text(yaml.safe_dump({"data": {"path": str(openfield_dir)}}))
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, openfield_subset_dir):
    model, schema = fit_small_model(openfield_subset_dir)
    return write_run(tmp_path_factory.mktemp("run"), model, schema, openfield_subset_dir)


@pytest.fixture(scope="module")
def source(run_dir):
    return load_source(run_dir)


@pytest.fixture(scope="module")
def artifact(source, run_dir, openfield_subset_dir):
    options = ExportOptions(
        out=run_dir / "export", fp16=True, int8=True, calib=openfield_subset_dir, calib_size=8, engines=False
    )
    metadata, paths = export_artifact(source, options)
    return metadata, paths, options.out


@pytest.fixture(scope="module")
def held_out(source):
    """Crops of 6 held-out frames from their labelled boxes, and the frames' samples."""
    _, _, test = load_split(source)
    samples = test.samples[:6]
    crops, _ = crop_batch(
        [read_sample_image(s) for s in samples], labelled_boxes(samples, (INPUT, INPUT), 1.25), (INPUT, INPUT)
    )
    return samples, crops


def reference_run(source):
    """The PyTorch model on crops as verification runs it: keypoints in crop input pixels, no flip test."""
    from kernels.predict import model_crop_runner

    cfg = replace(source.predict, flip_test=False)
    return on_crops(model_crop_runner(source.model, cfg), cfg)


def onnx_run(source, path):
    """An exported graph in the runtime's Runner on crops (keypoints in crop input pixels), as verification runs it."""
    runner = artifact_runner(path, ArtifactMetadata.load(path.parent), replace(source.predict, flip_test=False), 1)
    return runner.infer_crops


# --------------------------------------------------------------------------------------------- FP32
def test_fp32_graph_matches_pytorch_on_held_out_crops(source, artifact, held_out):
    _, paths, _ = artifact
    _, crops = held_out
    reference = in_batches(reference_run(source), crops, batch_size=4)  # batches 4 and 2: the batch axis is dynamic
    assert (reference[1] > 0).all(), "the fitted heatmaps should have positive peaks on labelled crops"
    for key in ("fp32", "fp32_heatmaps"):
        deviation = crop_deviation(reference, in_batches(onnx_run(source, paths[key]), crops, batch_size=4))
        assert deviation["found_mismatches"] == 0
        assert deviation["max_px"] <= 0.05, f"{key}: {deviation}"
        assert deviation["score_max_abs"] <= 1e-4 * float(np.abs(reference[1]).max())


def test_fp32_heatmaps_graph_reproduces_the_training_form_model(source, artifact, held_out):
    _, paths, _ = artifact
    _, crops = held_out
    with torch.no_grad():
        expected = source.model(torch.from_numpy(crops))["heatmaps"].numpy()
    (heatmaps,) = ort_session(paths["fp32_heatmaps"], threads=1).run(None, {"image": crops})
    assert heatmaps.shape == (len(crops), 4, INPUT // STRIDE, INPUT // STRIDE)
    assert np.abs(heatmaps - expected).max() <= 1e-4 * np.ptp(expected)


def test_every_graph_carries_the_artifact_metadata(artifact):
    import onnx

    metadata, paths, out = artifact
    on_disk = ArtifactMetadata.load(out)
    assert on_disk == metadata
    assert metadata.keypoint_names == ["snout", "leftear", "rightear", "tailbase"]
    assert metadata.flip_pairs == [[1, 2]] and metadata.input_width == INPUT and metadata.decode_method == "msra"
    assert set(paths) == {"fp32", "fp32_heatmaps", "fp16", "int8_cpu", "int8_qdq"}
    for key, path in paths.items():
        model = onnx.load(str(path))
        props = {p.key: p.value for p in model.metadata_props}
        assert json.loads(props[ONNX_METADATA_KEY]) == json.loads(on_disk.without_fingerprints().to_json())
        assert metadata.models[key]["sha256"] == file_fingerprint(path)["sha256"], "model.json pins every file"
        assert props[ONNX_MODEL_KEY] == key and metadata.models[key]["file"] == path.name
        domains = [op.domain for op in model.opset_import]
        assert domains == [""] and model.opset_import[0].version >= 17, "one default-domain import, opset >= 17"
        assert [i.name for i in model.graph.input] == ["image"]
        assert [o.name for o in model.graph.output] == metadata.models[key]["outputs"]
        onnx.checker.check_model(model, full_check=True)


# --------------------------------------------------------------------------------------------- FP16
def test_fp16_graph_keeps_io_head_final_and_decode_in_fp32(source, artifact, held_out):
    import onnx

    _, paths, _ = artifact
    model = onnx.load(str(paths["fp16"]))
    initializers = {i.name: i.data_type for i in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in initializers.values(), "the body should be converted to FP16"
    final = next(n for n in model.graph.node if n.name == "/head/final/Conv")
    assert initializers[final.input[1]] == onnx.TensorProto.FLOAT, "head.final must keep FP32 weights"
    decode = set(decode_node_names(model))
    assert decode, "the decode is appended to the FP16 body"
    fp16_casts = [n.name for n in model.graph.node if n.op_type == "Cast" and n.name in decode and any(
        a.name == "to" and a.i == onnx.TensorProto.FLOAT16 for a in n.attribute)]  # fmt: skip
    assert not fp16_casts, f"decode nodes cast to FP16: {fp16_casts}"
    io_types = {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}
    assert io_types == {onnx.TensorProto.FLOAT}, "keep_io_types: float32 in and out"

    _, crops = held_out
    reference = in_batches(reference_run(source), crops)
    fp16 = in_batches(onnx_run(source, paths["fp16"]), crops)
    deviation = crop_deviation(reference, fp16)
    agreement = confident_agreement(reference, fp16, source.schema.names, 0.2, np.hypot(INPUT, INPUT))
    assert np.median(np.linalg.norm(in_batches(onnx_run(source, paths["fp16"]), crops)[0] - reference[0], axis=-1)) == 0
    assert agreement["agreement"] >= 0.95 and deviation["found_mismatches"] == 0, (deviation, agreement)
    assert deviation["score_max_abs"] <= 0.01 * float(np.abs(reference[1]).max()), deviation


# --------------------------------------------------------------------------------------------- INT8
def test_int8_graphs_run_on_held_out_crops(source, artifact, held_out):
    """Both INT8 graphs (their structure: tests/test_export_int8.py) predict near the FP32 model on real crops."""
    metadata, paths, _ = artifact
    _, crops = held_out
    reference = in_batches(reference_run(source), crops)
    for key in ("int8_cpu", "int8_qdq"):
        assert metadata.models[key]["calibration"]["crops"] == 8
        assert "training split" in metadata.models[key]["calibration"]["source"]
        keypoints, scores = in_batches(onnx_run(source, paths[key]), crops)
        assert keypoints.shape == (len(crops), 4, 2) and np.isfinite(keypoints).all() and np.isfinite(scores).all()
        distance = np.linalg.norm(keypoints - reference[0], axis=-1)  # (N, K) crop input px
        assert np.median(distance) <= 0.05 * INPUT, (key, distance)


# ------------------------------------------------------------------------------------- verification
def test_verify_reports_every_artifact_and_names_a_failure(source, artifact, tmp_path):
    _, paths, _ = artifact
    chosen = {k: paths[k] for k in ("fp32", "fp32_heatmaps", "fp16")}
    report = verify(
        source, chosen, Thresholds(fp32_max_px=-1.0), threads=1, latency_batches=(1, 2), latency_repeats=1, max_frames=3
    )
    assert report["data"]["frames"] == 3 and set(report["artifacts"]) == set(chosen)
    fp32 = report["artifacts"]["fp32"]
    assert fp32["deviation"]["max_px"] <= 0.05 and fp32["task_drop_points"] == 0.0
    assert set(fp32["latency_ms"]) == {"batch1", "batch2"} and fp32["speedup_vs_pytorch"]["batch1"] > 0
    assert report["failures"] == [
        f"fp32: {fp32['failure']}",
        f"fp32_heatmaps: {report['artifacts']['fp32_heatmaps']['failure']}",
    ]
    assert fp32["failure"].startswith("max keypoint deviation") and "exceeds -1 px by" in fp32["failure"]
    assert report["artifacts"]["fp16"]["failure"] is None  # held to the FP32 model's confident keypoints, not to -1
    # the heatmap graph with the flip test outside it reproduces the run's own evaluation (predict_frames, flip on)
    flipped, evaluation = report["artifacts"]["fp32_heatmaps"]["task_flip"], report["reference"]["pytorch_eval"]["task"]
    assert flipped["PCK@0.05"] == evaluation["PCK@0.05"]
    assert abs(flipped["rmse_px"] - evaluation["rmse_px"]) <= 1e-3
    json_path, md_path = write_report(report, tmp_path)
    assert json.loads(json_path.read_text())["failures"] == report["failures"]
    assert "FAILED — fp32: max keypoint deviation" in md_path.read_text()


def test_cli_exports_verifies_and_exits_non_zero_on_a_threshold(run_dir, tmp_path, capsys):
    out = tmp_path / "artifact"
    argv = ["--out", str(out), "--latency-repeats", "0", "--threads", "1", "--max-fp32-dev", "-1"]
    code = main([str(run_dir / "model.pt"), *argv])
    captured = capsys.readouterr()
    assert code == EXIT_THRESHOLD
    assert "verification failed: fp32: max keypoint deviation" in captured.err
    assert "TensorRT is not importable here: wrote" in captured.out and (out / "trtexec_fp32.sh").is_file()
    assert (out / "verification.md").is_file()
    assert ArtifactMetadata.load(out).models["fp32"]["file"] == "tardis_fp32.onnx"


def test_python_dash_m_export_shows_help():
    result = subprocess.run(
        [sys.executable, "-m", "export", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0 and "RUN_OR_CHECKPOINT" in result.stdout and "--calib" in result.stdout


# -------------------------------------------------------------------------------------- calibration
def test_calibration_from_an_image_folder_uses_the_models_own_boxes(source, openfield_subset_dir, tmp_path):
    for name in ("img0000.png", "img0001.png", "img0002.png"):
        shutil.copy(openfield_subset_dir / "labeled-data" / "m4s1" / name, tmp_path / name)
    crops, info = calibration_crops(tmp_path, source, size=5)
    assert crops.shape == (5, 3, INPUT, INPUT) and crops.dtype == np.float32
    assert info["frames"] == 3 and info["crops"] == 5 and "pass-1 keypoints" in info["crop_kinds"]
    assert 0 <= crops.min() and crops.max() <= 255
    assert not np.array_equal(crops[0], crops[1]), "whole-frame and pass-2 crops alternate"


# ------------------------------------------------------------------------------------------ errors
def test_bad_inputs_give_clear_errors(run_dir, tmp_path, source):
    with pytest.raises(FileNotFoundError, match="does not exist: pass a run folder"):
        load_source(tmp_path / "nowhere")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "keypoints_best.pt").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="has no model.pt .*found keypoints_best.pt"):
        load_source(unfinished)
    partial = tmp_path / "partial.pt"
    torch.save({"model": {}, "model_config": {}}, partial)
    with pytest.raises(KeyError, match="lacks schema, input_size, heatmap_size, predict"):
        load_source(partial)
    stage1 = tmp_path / "stage1"
    checkpoint = DeployCheckpoint.load(run_dir / CHECKPOINT_NAME)
    stage1.mkdir()
    head_less = {k: v for k, v in checkpoint.model.items() if not k.startswith("head.")}
    replace(checkpoint, model=head_less).save(stage1 / CHECKPOINT_NAME)
    with pytest.raises(ValueError, match="no heatmap head .*stage-1"):
        load_source(stage1)
    with pytest.raises(ValueError, match="opset 13 is not supported.*use --opset 17"):
        check_opset(13)
    with pytest.raises(ValueError, match="--int8 needs calibration data: pass --calib PATH"):
        ExportOptions(out=tmp_path, int8=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"calibration folder {empty} holds no images"):
        calibration_crops(empty, source, size=4)
    with pytest.raises(FileNotFoundError, match="calibration data .* does not exist"):
        calibration_crops(tmp_path / "missing", source, size=4)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--int8"], "--int8 needs calibration data"),
        (["--opset", "13"], "opset 13 is not supported"),
        (["--trt-batch", "8,1,32"], "1 <= min <= opt <= max"),
    ],
)
def test_cli_refuses_bad_arguments(run_dir, argv, message, capsys):
    try:
        code = main([str(run_dir), *argv])
    except SystemExit as exit_info:  # argparse's own checks (a malformed value)
        code = exit_info.code
    assert code == 2 and message in capsys.readouterr().err


def test_checkpoint_with_an_unconverted_torch_version_loads(run_dir, tmp_path):
    """Older runs stored torch.__version__ (a TorchVersion) in versions: allowlisted for weights_only loading."""
    checkpoint = torch.load(run_dir / "model.pt", weights_only=True)
    torch.save(dict(checkpoint, versions={"torch": torch.__version__}), tmp_path / "model.pt")
    assert load_source(tmp_path / "model.pt").versions["torch"] == str(torch.__version__)


def test_cli_reports_a_missing_checkpoint(tmp_path, capsys):
    assert main([str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tardis-export: error:") and "absent does not exist" in err and "\n" not in err


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_killed_reexport_leaves_the_working_artifact(run_dir, tmp_path, monkeypatch, capsys):
    """A re-export is built beside the artifact and swapped in whole (issue 13, finding 5): killed midway, the old
    artifact is untouched and loads; a folder that is not an artifact is never replaced."""
    import export.verify
    from tardis_edge.runtime import open_runner

    out = tmp_path / "artifact"
    assert main([str(run_dir), "--out", str(out), "--no-engine", "--latency-repeats", "0"]) == 0
    before = _tree(out)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export.verify, "verify", killed)
    assert main([str(run_dir), "--out", str(out), "--fp16", "--no-engine"]) == 130
    assert _tree(out) == before
    with open_runner(out) as runner:
        assert runner.metadata.keypoint_names == ["snout", "leftear", "rightear", "tailbase"]
    monkeypatch.undo()
    assert main([str(run_dir), "--out", str(out), "--fp16", "--no-engine", "--latency-repeats", "0"]) == 0
    assert "tardis_fp16.onnx" in _tree(out) and not list(tmp_path.glob(".artifact.*"))

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    capsys.readouterr()
    assert main([str(run_dir), "--out", str(mine), "--no-verify", "--no-engine"]) == 2
    assert "holds files but no model.json" in capsys.readouterr().err
    assert _tree(mine) == {"notes.txt": b"keep"}
