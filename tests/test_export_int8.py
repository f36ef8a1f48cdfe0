"""The two INT8 graphs of ``tardis-export --int8``, checked by their structure so a regression shows without
TensorRT: int8 weight initializers, where the Q/DQ pairs sit, head.final and the decode in float, the CPU graph
fused by ONNX Runtime into integer convolutions, and which graph each backend opens for ``precision="int8"``.

The model is a ResNet-18 student at 64x64 with its FPN neck (residual Adds in the backbone, Resize + Add in the
neck), random weights: these tests read graphs, not keypoints (tests/test_export.py checks INT8 numbers).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_export import INPUT, write_run

from export.onnx_export import decode_node_names
from export.pipeline import ExportOptions, export_artifact
from export.source import load_source
from tardis_edge.artifact import ArtifactMetadata, file_fingerprint
from tardis_edge.data import load_dataset
from tardis_edge.models import ModelConfig, build_model
from tardis_edge.runtime.runner import _find_engine, artifact_model_file

HEAD_FINAL = "/head/final/Conv"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, openfield_subset_dir):
    torch.manual_seed(0)
    config = ModelConfig(
        backbone="resnet18", num_keypoints=4, input_size=(INPUT, INPUT), use_decoder=False, use_head=True,
        neck_channels=16, head_depth=1,
    )  # fmt: skip
    schema = load_dataset(openfield_subset_dir).schema
    run = write_run(tmp_path_factory.mktemp("run"), build_model(config).eval(), schema, openfield_subset_dir)
    options = ExportOptions(out=run / "export", int8=True, calib=openfield_subset_dir, calib_size=8, engines=False)
    metadata, paths = export_artifact(load_source(run), options)
    return metadata, paths, options.out


def _graph(path: Path):
    import onnx

    model = onnx.load(str(path))
    producers = {o: n for n in model.graph.node for o in n.output}
    initializers = {i.name: i for i in model.graph.initializer}
    return model, producers, initializers


def _body(model) -> list:
    decode = set(decode_node_names(model))
    assert decode, "the decode is appended to the INT8 body"
    return [n for n in model.graph.node if n.name not in decode]


def _check_weights_and_float_parts(path: Path) -> None:
    """Every conv but head.final reads int8 initializer weights through a per-channel DequantizeLinear; head.final's
    weights and the whole decode stay float."""
    import onnx

    model, producers, initializers = _graph(path)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    final = next(n for n in convs if n.name == HEAD_FINAL)
    assert initializers[final.input[1]].data_type == onnx.TensorProto.FLOAT, "head.final keeps float weights"
    for conv in (n for n in convs if n is not final):
        dq = producers.get(conv.input[1])
        assert dq is not None and dq.op_type == "DequantizeLinear", f"{conv.name}: weights not dequantized"
        weight = initializers.get(dq.input[0])
        assert weight is not None and weight.data_type == onnx.TensorProto.INT8, f"{conv.name}: weights not int8"
        assert len(initializers[dq.input[1]].dims) == 1 and initializers[dq.input[1]].dims[0] == weight.dims[0], (
            f"{conv.name}: weights not per output channel"
        )
    float_values = sum(int(np.prod(i.dims)) for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT)
    int8_values = sum(int(np.prod(i.dims)) for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8)
    head_values = sum(int(np.prod(initializers[name].dims)) for name in final.input[1:])
    assert float_values < head_values + 0.05 * int8_values, "float weights other than head.final's"
    decode = set(decode_node_names(model))
    assert not [n.name for n in model.graph.node if n.name in decode and "Quantize" in n.op_type], "decode in float"


def test_both_int8_graphs_are_listed_with_their_hashes(artifact):
    metadata, paths, out = artifact
    assert {"int8_cpu", "int8_qdq"} <= set(paths)
    on_disk = ArtifactMetadata.load(out)
    for key, name in (("int8_cpu", "tardis_int8_cpu.onnx"), ("int8_qdq", "tardis_int8_qdq.onnx")):
        entry = on_disk.models[key]
        assert entry["file"] == name and entry["precision"] == key
        assert entry["sha256"] == file_fingerprint(paths[key])["sha256"]
        assert entry["fp32_nodes"] == [HEAD_FINAL, "decode/*"] and entry["calibration"]["crops"] == 8
    assert paths["int8_cpu"].stat().st_size < 0.35 * paths["fp32"].stat().st_size, "int8 weights: a quarter the size"
    assert (out / "trtexec_int8_qdq.sh").is_file() and not (out / "trtexec_int8_cpu.sh").exists(), (
        "only the TensorRT graph gets a trtexec script (TensorRT takes no uint8 activations)"
    )


def test_cpu_graph_has_int8_weights_uint8_activations_and_fuses_to_qlinearconv(artifact, tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    _, paths, _ = artifact
    _check_weights_and_float_parts(paths["int8_cpu"])
    model, producers, initializers = _graph(paths["int8_cpu"])
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantize and all(initializers[q.input[2]].data_type == onnx.TensorProto.UINT8 for q in quantize), (
        "activations are uint8 with zero points (U8S8: ONNX Runtime's x86 integer kernels)"
    )
    assert any(numpy_helper.to_array(initializers[q.input[2]]).any() for q in quantize), "asymmetric activations"

    # what ONNX Runtime makes of it: every conv but head.final an integer QLinearConv
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(paths["int8_cpu"]), options, providers=["CPUExecutionProvider"])
    fused = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    assert fused.count("QLinearConv") == convs - 1 and fused.count("Conv") == 1, sorted(set(fused))


def test_tensorrt_graph_follows_the_explicit_quantization_placement(artifact):
    from onnx import numpy_helper

    _, paths, _ = artifact
    _check_weights_and_float_parts(paths["int8_qdq"])
    model, producers, initializers = _graph(paths["int8_qdq"])
    body = _body(model)
    zero_points = [numpy_helper.to_array(initializers[n.input[2]]) for n in body if "Quantize" in n.op_type]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points), "symmetric int8, zero 0"

    def quantized(tensor: str) -> bool:
        dq = producers.get(tensor)
        return (
            dq is not None and dq.op_type == "DequantizeLinear" and producers[dq.input[0]].op_type == "QuantizeLinear"
        )

    adds = [n for n in body if n.op_type == "Add"]
    assert len(adds) >= 8 + 3, "ResNet-18 residual Adds and the neck's"
    for add in adds:
        assert all(quantized(i) for i in add.input), f"{add.name}: both inputs need Q/DQ for TensorRT to fuse it"
    for node in (n for n in body if n.op_type in ("Resize", "Relu", "MaxPool")):
        assert not any(quantized(i) for i in node.input), f"{node.name}: no Q/DQ in front of {node.op_type}"
    final = next(n for n in body if n.name == HEAD_FINAL)
    assert not quantized(final.input[0]), "head.final runs in float: no Q/DQ in front of it"
    for conv in (n for n in body if n.op_type == "Conv" and n.name != HEAD_FINAL):
        assert quantized(conv.input[0]), f"{conv.name}: input without Q/DQ"
        assert len(conv.input) < 3 or conv.input[2] in initializers, f"{conv.name}: bias must stay a float initializer"


def test_int8_precision_opens_the_graph_made_for_each_backend(artifact):
    _, paths, out = artifact
    meta = ArtifactMetadata.load(out)
    assert artifact_model_file(out, meta, "int8", heatmaps=False) == paths["int8_cpu"]
    assert artifact_model_file(out, meta, "int8_qdq", heatmaps=False) == paths["int8_qdq"]
    (out / "tardis_int8_qdq.engine").write_bytes(b"engine")
    (out / "tardis_int8_cpu.engine").write_bytes(b"engine")  # never built by tardis-export; never preferred
    try:
        assert _find_engine(out, meta, "int8") == out / "tardis_int8_qdq.engine"
    finally:
        for name in ("tardis_int8_qdq.engine", "tardis_int8_cpu.engine"):
            (out / name).unlink()


def test_int8_benchmark_script_records_sizes_latency_ratios_and_provenance(artifact, tmp_path):
    from test_benchmark_scripts import MEASURED, load_script

    _, paths, out = artifact
    result = tmp_path / "int8.json"
    record = load_script("int8_openfield").main([str(out), "--rounds", "1", "--repeats", "1", "--out", str(result)])
    assert json.loads(result.read_text()) == record
    assert MEASURED <= set(record["measured"]) and "int8_openfield.py" in record["measured"]["command"]
    assert record["int8_fp32_size_ratio"] == paths["int8_cpu"].stat().st_size / paths["fp32"].stat().st_size
    cells = record["latency_ratio"]["int8_cpu"]
    assert set(cells) == {"threads_1", "threads_2"} and set(cells["threads_1"]) == {"batch_1", "batch_8"}
    assert record["int8_fp32_latency_ratio"] == max(r for row in cells.values() for r in row.values())
    assert set(record["latency_ms"]) == {"fp32", "int8_cpu", "int8_qdq"}
