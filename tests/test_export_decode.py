"""The in-graph decode (export.decode_graph) against the reference decode and the golden codec, through ONNX Runtime."""

import numpy as np
import pytest
import torch

from export.decode_graph import DECODE_METHODS, TRT_ONNX_OPS, GraphDecode
from export.onnx_export import export_decode_graph, graph_ops
from export.verify import ort_session
from tardis_edge.decode import decode_heatmaps, soft_argmax

GOLDEN_STRIDE = 4.0  # golden: 256x256 input, 64x64 heatmaps
BETA = 20.0


def reference(heatmaps: torch.Tensor, method: str, stride: float, beta: float = BETA):
    """Reference keypoints in input pixels, (-1, -1) where score <= 0, as the graph reports them."""
    if method == "softargmax":
        keypoints, scores = soft_argmax(heatmaps, beta), decode_heatmaps(heatmaps, "argmax")[1]
    else:
        keypoints, scores = decode_heatmaps(heatmaps, method)
    keypoints = keypoints.numpy() * stride
    keypoints[scores.numpy() <= 0] = -1.0
    return keypoints, scores.numpy()


def run_graph(method: str, heatmaps: np.ndarray, stride: float, beta: float = BETA):
    """Export the decode at batch 1, run it in ONNX Runtime on the whole (larger) batch."""
    n, k, h, w = heatmaps.shape
    graph = export_decode_graph(GraphDecode(method, (h, w), stride, softargmax_beta=beta), k)
    keypoints, scores = ort_session(graph.SerializeToString(), threads=1).run(None, {"heatmaps": heatmaps})
    return graph, keypoints, scores


def awkward_heatmaps(h: int = 9, w: int = 11) -> np.ndarray:
    """(6, 3, h, w) maps with ties, invalid rows, border peaks and equal neighbours (odd, non-square size)."""
    rng = np.random.default_rng(0)
    maps = rng.normal(0.0, 0.1, size=(6, 3, h, w)).astype(np.float32)
    maps[0, 0] = 0.0
    maps[0, 0, 5, 2] = maps[0, 0, 3, 6] = maps[0, 0, 5, 7] = 1.0  # ties: the first in row-major order wins
    maps[0, 1] = -np.abs(maps[0, 1]) - 0.01  # all negative: invalid row
    maps[0, 2] = 0.0  # all zero: invalid row (score 0) and ties everywhere
    maps[1, 0] = 0.0
    maps[1, 0, 0, 0] = 2.0  # corner peak: no refinement step
    maps[1, 1] = 0.0
    maps[1, 1, 4, w - 1] = 2.0  # right border peak
    maps[1, 2] = 0.0
    maps[1, 2, 4, 5] = 2.0
    maps[1, 2, 4, 4] = maps[1, 2, 4, 6] = 1.0  # equal neighbours: no x step
    maps[1, 2, 3, 5] = 1.5  # higher neighbour above: y step toward it
    yy, xx = np.mgrid[0:h, 0:w]
    maps[2, 0] = np.exp(-((xx - 4.3) ** 2 + (yy - 6.6) ** 2) / 2.0)  # a smooth peak (DARK / soft-argmax)
    return maps


@pytest.fixture(scope="module")
def golden(golden_dir):
    return dict(np.load(golden_dir / "heatmap_codec.npz"))


@pytest.mark.parametrize("method", ["argmax", "msra", "dark", "softargmax"])
def test_graph_decode_matches_golden(golden, method):
    _, keypoints, scores = run_graph(method, golden["heatmaps"], GOLDEN_STRIDE, float(golden["softargmax_beta"]))
    valid = golden["argmax_scores"] > 0
    assert (~valid).any()
    np.testing.assert_allclose(scores, golden["argmax_scores"], atol=1e-6)
    if method == "softargmax":
        expected, tolerance = golden["softargmax_heatmap_xy"] * GOLDEN_STRIDE, 1e-4 * GOLDEN_STRIDE
    elif method == "argmax":
        expected, tolerance = golden["argmax_keypoints"] * GOLDEN_STRIDE, 0.0
    else:  # the golden MSRA and DARK keypoints are already in input pixels
        expected, tolerance = golden[f"{method}_keypoints"], 1e-4 * GOLDEN_STRIDE
    error = np.abs(keypoints - expected)[valid]
    assert error.max() <= tolerance, f"{method}: max error {error.max():.3g} input px"
    np.testing.assert_array_equal(keypoints[~valid], -1.0)


@pytest.mark.parametrize("method", DECODE_METHODS)
def test_graph_decode_equals_reference_on_awkward_maps(method):
    maps = awkward_heatmaps()
    graph, keypoints, scores = run_graph(method, maps, stride=3.0)
    expected, expected_scores = reference(torch.from_numpy(maps), method, stride=3.0)
    np.testing.assert_array_equal(scores, expected_scores)
    np.testing.assert_array_equal(scores > 0, expected_scores > 0)
    # argmax and MSRA are exact; DARK and soft-argmax are float32 sums in another order
    tolerance = 0.0 if method in ("argmax", "msra") else 2e-4
    np.testing.assert_allclose(keypoints, expected, atol=tolerance, rtol=0)
    if method in ("argmax", "msra"):  # the first of three tied peaks; its neighbours are equal, so no MSRA step
        assert keypoints[0, 0].tolist() == [6 * 3.0, 3 * 3.0]
    np.testing.assert_array_equal(keypoints[0, 1:], -1.0)  # invalid rows
    assert graph_ops(graph) <= TRT_ONNX_OPS, f"ops outside TensorRT's parser support: {graph_ops(graph) - TRT_ONNX_OPS}"
    assert {op.domain for op in graph.opset_import} <= {"", "ai.onnx"}, "no custom op domains"


def test_graph_decode_eager_equals_reference_on_random_maps():
    maps = torch.from_numpy(np.random.default_rng(1).normal(size=(4, 5, 16, 12)).astype(np.float32))
    for method in ("argmax", "msra"):
        keypoints, scores = GraphDecode(method, (16, 12), 4.0)(maps)
        expected, expected_scores = reference(maps, method, 4.0)
        np.testing.assert_array_equal(keypoints.numpy(), expected)
        np.testing.assert_array_equal(scores.numpy(), expected_scores)


def test_graph_decode_refuses_bad_arguments():
    with pytest.raises(ValueError, match="unknown decode method 'gaussian'"):
        GraphDecode("gaussian", (64, 64), 4.0)
    with pytest.raises(ValueError, match="soft-argmax decode needs a positive finite beta"):
        GraphDecode("softargmax", (64, 64), 4.0)
    with pytest.raises(ValueError, match="stride must be a positive number"):
        GraphDecode("msra", (64, 64), 0.0)
    with pytest.raises(ValueError, match="DARK blur kernel must be odd"):
        GraphDecode("dark", (64, 64), 4.0, blur_kernel=10)
