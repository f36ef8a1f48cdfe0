"""Export stage: PyTorch -> ONNX graphs (heatmap body, decode, the two joined), metadata, checks, atomic saves.

Every keypoint graph is built the same way for every precision: the *body* (``image -> heatmaps``: normalisation,
backbone, neck, head) is exported once with ``torch.onnx.export(dynamo=False)``, converted (FP16) or quantized
(INT8) on its own, and the FP32 *decode* graph (``export.decode_graph.GraphDecode``) is appended with
``onnx.compose.merge_models``. The decode therefore never leaves FP32 and never meets the quantizer.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path
from typing import Any

from tardis_edge.artifact import (
    INPUT_NAME,
    ONNX_METADATA_KEY,
    ONNX_MODEL_KEY,
    OUTPUT_HEATMAPS,
    OUTPUT_KEYPOINTS,
    OUTPUT_SCORES,
)
from tardis_edge.io import atomic_write_bytes

MIN_OPSET = 17  # the project's floor (issue 6); TensorRT 10's parser and ONNX Runtime >= 1.14 read it
DEFAULT_OPSET = 17
BATCH_DIM = "batch"
DECODE_PREFIX = "decode/"


def require_onnx() -> Any:
    """``import onnx`` or an ImportError naming the extra to install."""
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("ONNX export needs the onnx package: pip install 'tardis-edge[export]'") from exc
    return onnx


def check_opset(opset: int) -> int:
    """``opset`` if supported, else a ValueError saying which to use."""
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(
            f"ONNX opset {opset} is not supported: tardis-export writes opset >= {MIN_OPSET} (TensorRT 10 and ONNX "
            f"Runtime >= 1.17 read it); use --opset {DEFAULT_OPSET} or higher"
        )
    return opset


def _torch_export(module: Any, example: Any, input_names: list[str], output_names: list[str], opset: int) -> Any:
    """``torch.onnx.export(dynamo=False)`` to memory with a dynamic batch axis on every input and output."""
    import torch

    onnx = require_onnx()
    dynamic_axes = {name: {0: BATCH_DIM} for name in [*input_names, *output_names]}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # torch >= 2.9 warns that the TorchScript exporter is legacy; it is the one whose graphs TensorRT parses
        # without a decomposition pass, and the one the issue asks for.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        with torch.no_grad():
            torch.onnx.export(
                module,
                (example,),
                buffer,
                dynamo=False,
                opset_version=check_opset(opset),
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
    graph = onnx.load_from_string(buffer.getvalue())
    fold_initializer_identities(graph)
    return graph


def fold_initializer_identities(model: Any) -> int:
    """Replace every ``Identity`` whose input is an initializer by a copy of that initializer.

    The TorchScript exporter emits such nodes for weights it shares between layers (e.g. zero biases).
    They are harmless for ONNX Runtime and TensorRT, but OpenCV 4.6's ONNX importer (Debian's, which the C++
    library's DNN backend uses) refuses them. Returns the number of nodes folded.
    """
    onnx = require_onnx()
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    kept, folded = [], 0
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in initializers and node.output[0] not in outputs:
            copy_ = onnx.TensorProto()
            copy_.CopyFrom(initializers[node.input[0]])
            copy_.name = node.output[0]
            model.graph.initializer.append(copy_)
            folded += 1
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return folded


def export_heatmaps_graph(model: Any, input_wh: tuple[int, int], opset: int = DEFAULT_OPSET) -> Any:
    """The body graph: ``image`` float32 ``(N, 3, H, W)`` RGB 0..255 -> ``heatmaps`` ``(N, K, H/s, W/s)``.

    ``model`` (a ``PoseModel`` with a heatmap head) is copied and switched to its deployment form
    (``reparameterize``: RepVGG branches folded) before export; the caller's model is left as it is.
    """
    import torch

    deploy = copy.deepcopy(model).cpu().float()
    if getattr(deploy, "decoder", None) is not None:
        deploy.drop_decoder()
    if getattr(deploy, "head", None) is None:
        raise ValueError("the model has no heatmap head: export needs a stage-2 (keypoints) model")
    deploy.reparameterize()
    example = torch.full((1, 3, input_wh[1], input_wh[0]), 127.0)
    return _torch_export(deploy, example, [INPUT_NAME], [OUTPUT_HEATMAPS], opset)


def export_body_graph(module: Any, input_wh: tuple[int, int], opset: int = DEFAULT_OPSET) -> Any:
    """A body graph of a module that is already in its deployment form (a DeepLabCut model:
    ``export.dlc_import``): ``image`` ``(N, 3, H, W)`` RGB 0..255 -> ``heatmaps`` (whatever maps its decode reads)."""
    import torch

    example = torch.full((1, 3, input_wh[1], input_wh[0]), 127.0)
    return _torch_export(copy.deepcopy(module).cpu().float().eval(), example, [INPUT_NAME], [OUTPUT_HEATMAPS], opset)


def export_decode_graph(decode: Any, channels: int, opset: int = DEFAULT_OPSET) -> Any:
    """The decode graph: ``heatmaps (N, C, H, W)`` -> ``keypoints (N, K, 2)`` input px and ``scores (N, K)``
    (``C = K`` heatmaps for our models; DeepLabCut's add ``2K`` locref maps)."""
    import torch

    h, w = decode.heatmap_hw
    example = torch.zeros(1, channels, h, w)
    return _torch_export(decode.eval(), example, [OUTPUT_HEATMAPS], [OUTPUT_KEYPOINTS, OUTPUT_SCORES], opset)


def append_decode(body: Any, decode: Any) -> Any:
    """Join ``body`` (``image -> heatmaps``, any precision) and the FP32 ``decode`` graph into
    ``image -> keypoints, scores``. The decode's node and tensor names get the prefix ``decode/``."""
    onnx = require_onnx()
    outputs = [o.name for o in body.graph.output]
    if outputs != [OUTPUT_HEATMAPS]:
        raise ValueError(f"the body graph must have the single output {OUTPUT_HEATMAPS!r}, got {outputs}")
    decode = onnx.compose.add_prefix(decode, DECODE_PREFIX, rename_inputs=False, rename_outputs=False)
    # merge_models needs one IR version and compatible opset imports: the decode adopts the body's.
    decode.ir_version = body.ir_version
    body_opsets = {op.domain: op.version for op in body.opset_import}
    for op in decode.opset_import:
        if op.domain in body_opsets:
            op.version = body_opsets[op.domain]
    merged = onnx.compose.merge_models(
        body,
        decode,
        io_map=[(OUTPUT_HEATMAPS, OUTPUT_HEATMAPS)],
        outputs=[OUTPUT_KEYPOINTS, OUTPUT_SCORES],
        producer_name="tardis-export",
    )
    merged.producer_version = body.producer_version or ""
    return merged


def tidy_opset_imports(model: Any) -> None:
    """One opset import per domain, and only for domains the nodes use (the default domain always).

    ``merge_models`` repeats the default domain, and ONNX Runtime's optimiser (``quant_pre_process``) imports
    contrib domains (``com.microsoft`` ...) that no node of an exported graph uses; parsers need neither.
    """
    used = {n.domain or "" for n in model.graph.node} | {""}
    kept: dict[str, int] = {}
    for op in model.opset_import:
        domain = op.domain or ""
        if domain in used:
            kept[domain] = max(kept.get(domain, 0), op.version)
    del model.opset_import[:]
    for domain, version in kept.items():
        model.opset_import.add(domain=domain, version=version)


def node_for_module(model: Any, module_path: str, op_type: str = "Conv") -> str:
    """Name of the ``op_type`` node the exporter emitted for the torch module ``module_path`` (``head.final`` ->
    ``/head/final/Conv``); a ValueError if there is not exactly one."""
    suffix = "/" + module_path.replace(".", "/") + "/" + op_type
    names = [n.name for n in model.graph.node if n.op_type == op_type and n.name.endswith(suffix)]
    if len(names) != 1:
        raise ValueError(
            f"expected one {op_type} node for module {module_path!r} (name ending {suffix!r}) in the graph, found "
            f"{names or 'none'}; was the model exported by export_heatmaps_graph?"
        )
    return names[0]


def decode_node_names(model: Any) -> list[str]:
    """Names of the nodes ``append_decode`` added (the FP32 decode)."""
    return [n.name for n in model.graph.node if n.name.startswith(DECODE_PREFIX)]


def set_metadata(model: Any, metadata_json: str, model_key: str) -> None:
    """Embed the artifact metadata JSON and this file's ``models`` key in ``metadata_props`` (replacing old ones)."""
    props = {p.key: p.value for p in model.metadata_props}
    props.update({ONNX_METADATA_KEY: metadata_json, ONNX_MODEL_KEY: model_key})
    del model.metadata_props[:]
    for key in sorted(props):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, props[key]


def check_graph(model: Any, name: str) -> None:
    """``onnx.checker.check_model(full_check=True)`` (includes strict shape inference), naming the file on failure."""
    onnx = require_onnx()
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # the checker raises ValidationError / InferenceError subclasses
        raise ValueError(f"{name} fails onnx.checker.check_model(full_check=True): {exc}") from exc


def save_graph(model: Any, path: str | Path) -> Path:
    """Serialise to ``path`` atomically (models here are far below protobuf's 2 GB limit)."""
    atomic_write_bytes(path, model.SerializeToString())
    return Path(path)


def graph_ops(model: Any) -> set[str]:
    """Op types used by the graph's nodes."""
    return {n.op_type for n in model.graph.node}
