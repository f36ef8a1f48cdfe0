"""Exported graphs load in OpenCV 4.6's ONNX importer (the C++ library's DNN backend): no Identity nodes on
initializers, and folding them changes nothing numerically."""

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from export.onnx_export import _torch_export, fold_initializer_identities  # noqa: E402


class SharedBias(torch.nn.Module):
    """Two convs sharing one bias tensor: the TorchScript exporter emits an Identity for the second use."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(4, 4, 1)
        self.b.bias = self.a.bias

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def _identity_on_initializer(model) -> int:
    names = {t.name for t in model.graph.initializer}
    return sum(n.op_type == "Identity" and n.input[0] in names for n in model.graph.node)


def test_exported_graph_has_no_identity_on_initializers():
    torch.manual_seed(0)
    net = SharedBias().eval()
    x = torch.rand(2, 3, 8, 8)
    graph = _torch_export(net, x, ["image"], ["heatmaps"], 17)
    assert _identity_on_initializer(graph) == 0
    onnx.checker.check_model(graph, full_check=True)
    out = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"image": x.numpy()}
    )[0]
    np.testing.assert_allclose(out, net(x).detach().numpy(), atol=1e-5)


def test_folding_is_exact_on_a_graph_with_identities():
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    graph = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["w2"]), helper.make_node("MatMul", ["x", "w2"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.array([[1.0, 2.0]], np.float32)
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert fold_initializer_identities(model) == 1
    assert _identity_on_initializer(model) == 0 and [n.op_type for n in model.graph.node] == ["MatMul"]
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(before, after)
