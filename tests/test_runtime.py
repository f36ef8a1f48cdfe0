"""The edge runtime's runner (tardis_edge.runtime): ONNX Runtime on small real artifacts, the decode in the graph vs in
NumPy, parity with the evaluation path's crops, frame checks and option errors. (Its torch-free import:
test_layers.py.)"""

from pathlib import Path

import numpy as np
import pytest
from test_runtime_support import (
    INPUT_WH,
    STRIDE,
    ImageHeatmapBackend,
    blob_frame,
    build_artifact,
    metadata,
    pooling_model,
)

from tardis_edge import geometry
from tardis_edge.runtime import Backend, Runner, open_runner

ROOT = Path(__file__).resolve().parents[1]
FRAME_WH = (160, 120)
CENTRES = [(60.3, 50.7), (80.2, 62.1)]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return build_artifact(tmp_path_factory.mktemp("artifact"))


@pytest.fixture(scope="module")
def frames():
    """Four frames, blobs at different places (one frame mirrored, one shifted)."""
    shifted = [(x + 23.4, y - 11.2) for x, y in CENTRES]
    mirrored = [(FRAME_WH[0] - 1 - x, y) for x, y in CENTRES]
    return [blob_frame(FRAME_WH, c) for c in (CENTRES, shifted, mirrored, [(30.0, 90.0), (45.5, 100.5)])]


def test_keypoints_land_on_the_blobs(artifact, frames):
    """The pooling model's right answer is the blob centre.

    Bound per axis, in heatmap pixels: the integer peak is within 0.5 of the centre and MSRA's quarter step moves
    toward it; but the refine box is drawn around the *first* pass's keypoints (whole frame, ~2 image px off) with
    padding 1.25, which can leave an outer blob's centre up to ~0.5 px beyond the last heatmap pixel, where the peak
    sits on the border pixel and MSRA takes no step (seen: 0.52). Hence 1 heatmap pixel = stride * box / input
    image pixels, and the mean error well under half of that.
    """
    with open_runner(artifact) as runner:
        result = runner(frames)
    truth = np.array(
        [
            CENTRES,
            [(x + 23.4, y - 11.2) for x, y in CENTRES],
            [(FRAME_WH[0] - 1 - x, y) for x, y in CENTRES],
            [(30.0, 90.0), (45.5, 100.5)],
        ]
    )
    assert result.keypoints.shape == (4, 2, 2) and result.scores.shape == (4, 2)
    err = np.abs(result.keypoints - truth)  # (N, K, 2)
    image_px_per_input_px = np.array([b.width for b in result.boxes]) / INPUT_WH[0]
    bound = STRIDE * image_px_per_input_px[:, None, None]
    assert (err <= bound).all(), (err, bound)
    assert err.mean() < 0.25 * bound.mean()
    assert (result.scores > 0.9).all()


@pytest.mark.parametrize("method", ["argmax", "msra", "softargmax"])
def test_decode_in_graph_equals_numpy_decode(tmp_path, frames, method):
    folder = build_artifact(tmp_path / method, decode_method=method)
    with open_runner(folder, decode="graph") as graph, open_runner(folder, decode="numpy") as numpy_decode:
        a, b = graph(frames), numpy_decode(frames)
    np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-4)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_allclose([x.as_xywh() for x in a.boxes], [x.as_xywh() for x in b.boxes], atol=1e-4)


def test_crops_and_inverse_match_the_evaluation_path(artifact, frames):
    """Same frames through the evaluation path (PyTorch crop runner) and the runtime (ONNX Runtime): same keypoints."""
    from kernels.predict import model_crop_runner
    from tardis_edge.predict import PredictConfig, predict_frames

    cfg = PredictConfig(decode="msra", flip_test=False, two_pass=True, batch_size=3)
    ref_kps, ref_scores, ref_boxes = predict_frames(
        model_crop_runner(pooling_model(2), cfg, None), frames, INPUT_WH, cfg
    )
    with open_runner(artifact, batch_size=3) as runner:
        result = runner(frames)
    np.testing.assert_allclose(result.keypoints, ref_kps, atol=1e-4)
    np.testing.assert_allclose(result.scores, ref_scores, atol=1e-6)
    np.testing.assert_allclose([b.as_xywh() for b in result.boxes], [b.as_xywh() for b in ref_boxes], atol=1e-6)


def test_flip_test_matches_the_evaluation_path(tmp_path, frames):
    from kernels.predict import model_crop_runner
    from tardis_edge.predict import PredictConfig, predict_frames

    folder = build_artifact(tmp_path / "flip", flip_pairs=[[0, 1]])
    cfg = PredictConfig(decode="msra", flip_test=True, two_pass=True)
    ref_kps, ref_scores, _ = predict_frames(model_crop_runner(pooling_model(2), cfg, [1, 0]), frames, INPUT_WH, cfg)
    with open_runner(folder, decode="numpy", flip_test=True) as runner:
        result = runner(frames)
    np.testing.assert_allclose(result.keypoints, ref_kps, atol=1e-4)
    np.testing.assert_allclose(result.scores, ref_scores, atol=1e-6)


def test_bgr_frames_and_batches(artifact, frames):
    with open_runner(artifact, refine=False) as runner:
        rgb = runner(np.stack(frames))
        bgr = runner([f[..., ::-1] for f in frames], color="BGR")
        single = runner(frames[1])
    np.testing.assert_array_equal(rgb.keypoints, bgr.keypoints)
    np.testing.assert_array_equal(single.keypoints[0], rgb.keypoints[1])


def test_detector_boxes_are_used(artifact, frames):
    """A detector box is padded and aspect-corrected like training crops; a box that misses the animal misses it."""
    xywh = np.array([[50.0, 40.0, 40.0, 30.0], [0.0, 0.0, 30.0, 30.0]])  # frame 0: around the blobs; frame 1: off
    with open_runner(artifact, refine=False) as runner:
        result = runner(frames[:2], boxes=xywh)
        assert result.boxes == [geometry.box_from_xywh(b, INPUT_WH, runner.metadata.padding) for b in xywh]
    assert np.abs(result.keypoints[0] - np.array(CENTRES)).max() < 1.0
    assert (result.scores[1] < 0.05).all()  # the blobs of frame 1 are far outside its box


def test_fixed_batch_graph_is_padded_and_chunked(tmp_path, frames):
    folder = build_artifact(tmp_path / "fixed", fixed_batch=2)
    with open_runner(folder) as fixed, open_runner(build_artifact(tmp_path / "dyn")) as dynamic:
        assert fixed.backend.max_batch == 2
        a, b = fixed(frames[:3]), dynamic(frames[:3])
    np.testing.assert_array_equal(a.keypoints, b.keypoints)


def test_numpy_backend_runs_through_the_same_runner(frames, artifact):
    with open_runner(artifact, decode="numpy") as onnx_runner:
        expected = onnx_runner(frames)
    result = Runner(ImageHeatmapBackend(), metadata(), decode="numpy")(frames)
    np.testing.assert_array_equal(result.keypoints, expected.keypoints)


@pytest.mark.parametrize(
    "frame,error,match",
    [
        (np.zeros((10, 12, 3), np.float32), TypeError, r"expected dtype uint8, got float32 with shape \(10, 12, 3\)"),
        (np.zeros((10, 12), np.uint8), ValueError, r"single-channel image of shape \(10, 12\).*COLOR_GRAY2RGB"),
        (np.zeros((10, 12, 4), np.uint8), ValueError, r"4 channels \(shape \(10, 12, 4\)\).*drop alpha"),
        (np.zeros((10, 12, 5), np.uint8), ValueError, r"frame 0: expected shape \(H, W, 3\), got \(10, 12, 5\)"),
        ([[1, 2, 3]], TypeError, "expected a numpy \\(H, W, 3\\) uint8 image, got list"),
    ],
)
def test_bad_frames_are_refused(artifact, frame, error, match):
    with open_runner(artifact) as runner, pytest.raises(error, match=match):
        runner([frame])


def test_bad_options_are_refused(artifact, frames, tmp_path):
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'; choose one of onnxruntime, tensorrt, pytorch"):
        open_runner(artifact, backend="tensorflow")
    with pytest.raises(ValueError, match="unknown decode 'fast'; choose one of graph, numpy"):
        open_runner(artifact, decode="fast")
    with pytest.raises(FileNotFoundError, match="no fp16 ONNX model .*model.json lists precisions"):
        open_runner(artifact, precision="fp16")
    with pytest.raises(ValueError, match=r"provider\(s\) \['NoSuchExecutionProvider'\] are not available"):
        open_runner(artifact, providers=["NoSuchExecutionProvider"])
    with pytest.raises(ValueError, match="flip_test averages heatmaps, so it needs decode='numpy'"):
        open_runner(artifact, flip_test=True)
    with pytest.raises(ValueError, match="graph decodes with 'msra'; to decode with 'dark' use decode='numpy'"):
        open_runner(artifact, decode_method="dark")
    with pytest.raises(ValueError, match="engine= is a TensorRT engine path"):
        open_runner(artifact, engine="x.engine")
    with pytest.raises(FileNotFoundError, match="model.json not found"):
        open_runner(tmp_path)
    with pytest.raises(FileNotFoundError, match="no TensorRT engine tardis_fp32.engine .*trtexec_\\*.sh"):
        open_runner(artifact, backend=Backend.TENSORRT)
    with open_runner(artifact) as runner, pytest.raises(ValueError, match="got 2 frames but 1 boxes"):
        runner(frames[:2], boxes=[None])
    with pytest.raises(ValueError, match="outputs \\['heatmaps'\\] but decode='graph' needs"):
        Runner(ImageHeatmapBackend(), metadata(), decode="graph")


def test_pytorch_backend_refuses_unusable_checkpoints(tmp_path):
    import torch

    with pytest.raises(FileNotFoundError, match="run folder .* has no model.pt"):
        open_runner(tmp_path, backend="pytorch")
    torch.save({"model": {}, "model_config": {}}, tmp_path / "model.pt")
    with pytest.raises(KeyError, match="model.pt lacks schema, input_size, heatmap_size, predict: it is not a deploy"):
        open_runner(tmp_path, backend="pytorch")
    (tmp_path / "model.pt").write_bytes((tmp_path / "model.pt").read_bytes()[:40])  # truncated
    with pytest.raises(ValueError, match=r"model.pt cannot be read with torch.load\(weights_only=True\)"):
        open_runner(tmp_path, backend="pytorch")
    with pytest.raises(ValueError, match="the PyTorch backend runs the checkpoint in fp32; got precision 'int8'"):
        open_runner(tmp_path, backend="pytorch", precision="int8")
