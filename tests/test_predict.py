"""The one two-pass predictor (tardis_edge.predict): its crop-runner contract, and that training evaluation,
tardis-export verification and ``tardis-edge eval`` — all three through it — give the same openfield keypoints.

The model is tests/test_export.py's RepVGG-A0 at 64x64 whose head is fitted by least squares to Gaussian targets
(real peaks, seconds to build), exported to FP32 ONNX (keypoint graph and heatmap graph).
"""

import json
from dataclasses import replace

import numpy as np
import pytest
from openfield_split import openfield_split_of
from test_export import fit_small_model, write_run

from tardis_edge import geometry
from tardis_edge.predict import CropPrediction, PredictConfig, crop_keypoints, predict_frames

SAME_PX = 1e-3  # the three paths agree to this many image pixels (the bar)
FRAMES = 8  # openfield test frames compared (img0095 ...)


# ------------------------------------------------------------------------------------------ contract
def _heatmap_runner(calls: list):
    """Heatmaps with one peak per keypoint at a known heatmap pixel of the 16x16 map: keypoint k at (3 + k, 5)."""

    def run(crops: np.ndarray, input_to_image: np.ndarray) -> CropPrediction:
        calls.append(crops.shape[0])
        heatmaps = np.zeros((len(crops), 2, 16, 16), np.float32)
        for k in range(2):
            heatmaps[:, k, 5, 3 + k] = 1.0
        return CropPrediction(heatmaps=heatmaps)

    return run


def test_heatmaps_are_decoded_flip_tested_and_mapped_to_image_pixels():
    calls: list[int] = []
    frames = [np.zeros((48, 80, 3), np.uint8)] * 3
    cfg = PredictConfig(decode="argmax", flip_test=False, two_pass=False, batch_size=2)
    keypoints, scores, boxes = predict_frames(_heatmap_runner(calls), frames, (64, 64), cfg)
    assert calls == [2, 1] and np.all(scores == 1.0)
    affine = geometry.invert_affine(geometry.crop_affine(boxes[0], (64, 64)))
    expected = geometry.apply_affine(np.array([[12.0, 20.0], [16.0, 20.0]]), affine)  # heatmap px x stride 4
    np.testing.assert_allclose(keypoints, np.broadcast_to(expected, keypoints.shape), atol=1e-9)
    calls.clear()
    flipped = replace(cfg, flip_test=True)
    with pytest.raises(ValueError, match="flip_test needs the keypoints' flip_indices"):
        predict_frames(_heatmap_runner(calls), frames, (64, 64), flipped)
    calls.clear()
    predict_frames(_heatmap_runner(calls), frames, (64, 64), flipped, flip_indices=[1, 0])
    assert calls == [2, 2, 1, 1], "each batch and its mirror image"


def test_keypoint_runners_are_mapped_unless_in_image_and_must_match_the_flip_setting():
    crops = np.zeros((1, 3, 8, 8), np.float32)
    to_image = np.array([[[2.0, 0.0, 10.0], [0.0, 2.0, 20.0]]])
    found = np.array([[[1.0, 1.0], [3.0, 2.0]]]), np.array([[0.5, 0.0]], np.float32)

    def run(in_image=False, flip_tested=False):
        return lambda c, m: CropPrediction(
            keypoints=found[0], scores=found[1], in_image=in_image, flip_tested=flip_tested
        )

    cfg = PredictConfig(flip_test=False)
    keypoints, scores = crop_keypoints(run(), crops, to_image, cfg)
    np.testing.assert_allclose(keypoints[0, 0], [12.0, 22.0])
    assert np.isnan(keypoints[0, 1]).all(), "score <= 0: not found"
    keypoints, _ = crop_keypoints(run(in_image=True), crops, to_image, cfg)
    np.testing.assert_allclose(keypoints[0, 0], [1.0, 1.0])
    with pytest.raises(ValueError, match="decoded its keypoints with flip_test=False but the predict config asks"):
        crop_keypoints(run(), crops, to_image, PredictConfig(flip_test=True))
    with pytest.raises(ValueError, match="either heatmaps, or keypoints together with scores"):
        CropPrediction(keypoints=found[0])
    with pytest.raises(ValueError, match="unknown decode method 'gauss'; choose one of argmax, msra, dark, softargmax"):
        PredictConfig(decode="gauss")


# ------------------------------------------------------------------------------------------ Must-show 4
@pytest.fixture(scope="module")
def exported(tmp_path_factory, openfield_dir):
    from export.pipeline import ExportOptions, export_artifact
    from export.source import load_source
    from tardis_edge.checkpoint import CHECKPOINT_NAME, DeployCheckpoint
    from tardis_edge.data import load_dataset

    model, schema = fit_small_model(openfield_dir)
    run = write_run(tmp_path_factory.mktemp("run"), model, schema, openfield_dir)
    split = openfield_split_of(load_dataset(openfield_dir))
    checkpoint = DeployCheckpoint.load(run / CHECKPOINT_NAME)
    replace(checkpoint, split=split.to_dict()).save(run / CHECKPOINT_NAME)  # as training.full records it
    source = load_source(run)
    metadata, paths = export_artifact(source, ExportOptions(out=run / "artifact", engines=False))
    return source, metadata, paths, run / "artifact"


def _max_px(reference: np.ndarray, candidate: np.ndarray) -> float:
    assert (np.isfinite(reference) == np.isfinite(candidate)).all(), "one path found keypoints the other did not"
    return float(np.nanmax(np.linalg.norm(candidate - reference, axis=-1)))


def test_training_evaluation_export_verification_and_edge_eval_give_the_same_keypoints(
    exported, openfield_dir, tmp_path
):
    from export.source import load_split
    from export.verify import verify
    from tardis_edge.data import read_sample_image
    from tardis_edge.runtime import open_runner
    from tardis_edge.runtime.cli import main as edge_main
    from training.keypoints import evaluate_model

    source, metadata, paths, artifact = exported
    assert source.predict.flip_test and source.predict.decode == "msra" and source.predict.two_pass
    samples = load_split(source)[2].samples[:FRAMES]
    assert samples[0].sample_id.endswith("img0095.png")
    frames = [read_sample_image(s) for s in samples]

    # 1. training evaluation, the run's own setting (flip test, MSRA, two passes) and without the flip test
    metrics, train_kps, train_scores = evaluate_model(
        source.model, samples, source.schema, source.input_wh, source.predict, "cpu"
    )
    no_flip = replace(source.predict, flip_test=False)
    _, train_kps_no_flip, _ = evaluate_model(source.model, samples, source.schema, source.input_wh, no_flip, "cpu")
    assert (train_scores > source.predict.box_min_score).mean() > 0.5, "the fitted model should find most keypoints"

    # 2. tardis-export verification: each graph in the runtime's Runner against the evaluation path, in image px
    report = verify(source, paths, threads=1, latency_repeats=0, max_frames=FRAMES, metadata=metadata)
    assert report["data"]["frames"] == FRAMES and report["failures"] == []
    assert report["reference"]["pytorch_eval"]["task"]["rmse_px"] == pytest.approx(metrics["rmse_px"], abs=1e-9)
    verify_no_flip = report["artifacts"]["fp32"]["keypoints_max_px"]  # keypoint graph vs PyTorch, no flip
    verify_flip = report["artifacts"]["fp32_heatmaps"]["flip_keypoints_max_px"]  # heatmap graph + flip vs eval
    assert verify_no_flip <= SAME_PX and report["artifacts"]["fp32_heatmaps"]["keypoints_max_px"] <= SAME_PX
    assert verify_flip <= SAME_PX

    # 3. tardis-edge eval: the runner it opens, and the command's metrics
    with open_runner(artifact, decode="numpy", flip_test=True, batch_size=8) as runner:
        edge = runner(frames)
    with open_runner(artifact, batch_size=8) as runner:  # the defaults: decode in the graph, no flip test
        edge_no_flip = runner(frames)
    edge_flip_px = _max_px(train_kps, edge.keypoints)
    edge_no_flip_px = _max_px(train_kps_no_flip, edge_no_flip.keypoints)
    assert edge_flip_px <= SAME_PX and edge_no_flip_px <= SAME_PX
    np.testing.assert_allclose(edge.scores, train_scores, atol=1e-4)

    out = tmp_path / "eval.json"
    argv = ["eval", str(artifact), "--data", str(openfield_dir), "--split", "test", "--decode", "numpy"]
    assert edge_main([*argv, "--flip-test", "--out", str(out)]) == 0
    edge_metrics = json.loads(out.read_text())
    test = load_split(source)[2].samples  # the whole test split through training evaluation: the same metrics
    reference, _, _ = evaluate_model(source.model, test, source.schema, source.input_wh, source.predict, "cpu")
    assert edge_metrics["num_samples"] == reference["num_samples"] == 21
    for key in ("rmse_px", "mean_px", "PCK@0.05", "PCK@0.1"):
        assert edge_metrics[key] == pytest.approx(reference[key], abs=SAME_PX), key
    print(
        f"max keypoint difference to training evaluation (image px): verify no-flip {verify_no_flip:.2e}, verify "
        f"flip {verify_flip:.2e}, tardis-edge flip {edge_flip_px:.2e}, tardis-edge no-flip {edge_no_flip_px:.2e}"
    )


def test_refine_box_ignores_numeric_noise_but_follows_the_animal():
    """The refine box sits on REFINE_BOX_GRID: backends whose pass-1 keypoints differ by float noise crop the same
    pixels (OpenCV's warp would otherwise resample), and a visible move still moves it."""

    keypoints = np.array([[100.3, 50.2], [140.7, 90.1], [120.0, 70.0]])
    box = geometry.box_from_keypoints(keypoints, None, (64, 64), grid=geometry.REFINE_BOX_GRID)
    for noise in (1e-5, -1e-5, 3e-4):
        assert geometry.box_from_keypoints(keypoints + noise, None, (64, 64), grid=geometry.REFINE_BOX_GRID) == box
    on_line = np.array([[100.0, 50.0], [140.0, 90.0]])  # MSRA-quantised keypoints land on grid lines
    boxes = {geometry.box_from_keypoints(on_line + d, None, (64, 64), grid=0.5) for d in (-1e-9, 0.0, 1e-9)}
    assert len(boxes) == 1
    moved = geometry.box_from_keypoints(keypoints + 2.0, None, (64, 64), grid=geometry.REFINE_BOX_GRID)
    assert moved.cx == pytest.approx(box.cx + 2.0) and moved.cy == pytest.approx(box.cy + 2.0)
