"""The runtime on an artifact written by the real exporter (tardis-export) from a small fitted model: the same
keypoints as the evaluation path (the PyTorch model through tardis_edge.predict) through ONNX Runtime with the
decode in the graph, the NumPy decode with flip test, the PyTorch backend, and FP16.

The model and run folder come from tests/test_export.py (RepVGG-A0 at 64x64 whose head is fitted by least squares
to Gaussian targets, so heatmaps have real peaks).
"""

import numpy as np
import pytest
from openfield_split import openfield_split
from test_export import fit_small_model, write_run

from tardis_edge.data import read_sample_image
from tardis_edge.runtime import open_runner

FP32_MAX_PX = 0.05  # the export's FP32 parity threshold (tardis-export --max-fp32-dev)
FP16_MEAN_PX = 0.25  # mean FP16 deviation allowed here, px (the export gates FP16 on agreement: export/verify.py)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, openfield_subset_dir):
    from export.cli import main as export_main
    from tardis_edge.data import load_dataset

    model, schema = fit_small_model(openfield_subset_dir)
    run = write_run(tmp_path_factory.mktemp("run"), model, schema, openfield_subset_dir)
    artifact = run / "artifact"
    assert export_main([str(run), "--out", str(artifact), "--fp16", "--no-verify", "--no-engine"]) == 0
    dark = run / "artifact_dark"  # the openfield recipe decodes with DARK
    assert export_main([str(run), "--out", str(dark), "--decode", "dark", "--no-verify", "--no-engine"]) == 0
    test = openfield_split(load_dataset(openfield_subset_dir))[1]
    frames = [read_sample_image(s) for s in test.samples[:4]]
    return model, run, artifact, frames, test.samples[:4]


@pytest.fixture(scope="module")
def reference(exported):
    """The evaluation path's detector-free two-pass keypoints (PyTorch crop runner), without and with flip test."""
    from kernels.predict import model_crop_runner
    from tardis_edge.predict import PredictConfig, predict_frames

    model, _, _, frames, _ = exported
    out = {}
    for flip_test in (False, True):
        cfg = PredictConfig(decode="msra", flip_test=flip_test, two_pass=True)
        run = model_crop_runner(model, cfg, [0, 2, 1, 3] if flip_test else None)
        keypoints, scores, _ = predict_frames(run, frames, (64, 64), cfg)
        out[flip_test] = keypoints, scores
    return out


def _deviation(a, b):
    found = np.isfinite(a).all(-1) & np.isfinite(b).all(-1)
    assert (np.isfinite(a).all(-1) == np.isfinite(b).all(-1)).all(), "one side found keypoints the other did not"
    return np.linalg.norm(a - b, axis=-1)[found]


@pytest.mark.parametrize("decode,flip_test", [("graph", False), ("numpy", False), ("numpy", True)])
def test_onnx_runtime_reproduces_the_evaluation_path(exported, reference, decode, flip_test):
    _, _, artifact, frames, _ = exported
    ref_kps, ref_scores = reference[flip_test]
    assert (ref_scores > 0.2).mean() > 0.5, "the fitted model should find most keypoints"
    with open_runner(artifact, decode=decode, flip_test=flip_test, batch_size=4) as runner:
        result = runner(frames)
    assert _deviation(result.keypoints, ref_kps).max() <= FP32_MAX_PX
    np.testing.assert_allclose(result.scores, ref_scores, atol=1e-4)


@pytest.mark.parametrize("decode", ["graph", "numpy"])
def test_dark_decode_in_graph_and_numpy_reproduces_the_evaluation_path(exported, decode):
    from kernels.predict import model_crop_runner
    from tardis_edge.predict import PredictConfig, predict_frames

    model, run, _, frames, _ = exported
    cfg = PredictConfig(decode="dark", flip_test=False, two_pass=True)
    ref_kps, ref_scores, _ = predict_frames(model_crop_runner(model, cfg), frames, (64, 64), cfg)
    with open_runner(run / "artifact_dark", decode=decode) as runner:
        assert runner.decode_method == "dark"
        result = runner(frames)
    assert _deviation(result.keypoints, ref_kps).max() <= FP32_MAX_PX
    np.testing.assert_allclose(result.scores, ref_scores, atol=1e-4)


def test_pytorch_backend_equals_onnx_runtime(exported):
    _, run, artifact, frames, _ = exported
    with open_runner(run, backend="pytorch") as torch_runner, open_runner(artifact) as ort_runner:
        assert torch_runner.metadata.keypoint_names == ort_runner.metadata.keypoint_names
        assert torch_runner.metadata.flip_pairs == ort_runner.metadata.flip_pairs == [[1, 2]]
        a, b = torch_runner(frames), ort_runner(frames)
    assert _deviation(a.keypoints, b.keypoints).max() <= FP32_MAX_PX


def test_fp16_artifact_runs_within_the_export_threshold(exported):
    """FP16 vs FP32 on crops from the labelled boxes, as the export's threshold is defined (on the detector-free
    two passes a near-tie in the whole-frame pass can move a refine box, which says nothing about FP16)."""
    from tardis_edge import geometry

    _, _, artifact, frames, samples = exported
    boxes = [geometry.box_from_keypoints(s.keypoints_xy, s.visible, (64, 64)) for s in samples]
    with open_runner(artifact, precision="fp16") as fp16, open_runner(artifact) as fp32:
        assert "fp16" in fp16.backend.path.name
        a, b = fp16.predict_boxes(frames, boxes)[0], fp32.predict_boxes(frames, boxes)[0]
    assert _deviation(a, b).mean() <= FP16_MEAN_PX
