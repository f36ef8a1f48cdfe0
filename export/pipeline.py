"""Export stage, top to bottom: run folder -> artifact folder (``tardis_edge.artifact`` layout).

body (image -> heatmaps, FP32) -> + decode = tardis_fp32.onnx, tardis_fp32_heatmaps.onnx
                               -> FP16 body + decode = tardis_fp16.onnx            (--fp16)
                               -> INT8 body for ONNX Runtime CPU + decode = tardis_int8_cpu.onnx  (--int8 --calib)
                               -> INT8 body for TensorRT + decode = tardis_int8_qdq.onnx          (--int8 --calib)
every graph: metadata_props + onnx.checker(full_check) -> model.json -> engines or trtexec_<precision>.sh (not for
the CPU INT8 graph, whose uint8 activations TensorRT does not take)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.decode_graph import DECODE_METHODS, GraphDecode
from export.onnx_export import (
    DEFAULT_OPSET,
    append_decode,
    check_graph,
    check_opset,
    export_body_graph,
    export_decode_graph,
    export_heatmaps_graph,
    node_for_module,
    save_graph,
    set_metadata,
    tidy_opset_imports,
)
from export.tensorrt_build import BatchProfile, build_engine, tensorrt_version, write_trtexec_script
from tardis_edge.artifact import (
    METADATA_FILE,
    OUTPUT_HEATMAPS,
    OUTPUT_KEYPOINTS,
    OUTPUT_SCORES,
    ArtifactMetadata,
    file_fingerprint,
)
from tardis_edge.io import atomic_write_text
from tardis_edge.metrics import schema_oks_sigmas
from tardis_edge.models import HEAD_FINAL_CONV

LOG = logging.getLogger("tardis.export")
FILES = {
    "fp32": "tardis_fp32.onnx",
    "fp32_heatmaps": "tardis_fp32_heatmaps.onnx",
    "fp16": "tardis_fp16.onnx",
    "int8_cpu": "tardis_int8_cpu.onnx",
    "int8_qdq": "tardis_int8_qdq.onnx",
}
INT8_TARGETS = {"int8_cpu": "cpu", "int8_qdq": "tensorrt"}  # models key -> export.quantize.RECIPES key
TENSORRT_SKIPS = ("fp32_heatmaps", "int8_cpu")  # graphs that get no trtexec script or engine
CALIBRATION_METHODS = ("entropy", "percentile", "minmax")


@dataclass
class ExportOptions:
    """What ``export_artifact`` writes (the CLI's flags)."""

    out: Path
    opset: int = DEFAULT_OPSET
    decode: str | None = None  # decode in the graph; None: the run's PredictConfig.decode
    graph_decode: bool = True  # False: the FP16/INT8 graphs output heatmaps too (decoders outside the graph)
    fp16: bool = False
    int8: bool = False
    calib: Path | None = None  # INT8 calibration: an image folder or a dataset (the run's: its training split)
    calib_size: int = 64  # crops (half whole-frame, half around the animal)
    calib_method: str = "entropy"  # entropy | percentile | minmax
    calib_seed: int = 0
    engines: bool = True  # build TensorRT engines where TensorRT imports (the trtexec scripts are written always)
    trt_batch: BatchProfile = field(default_factory=BatchProfile)
    legacy_weak_typing: bool = False  # TensorRT 10.x only: FP16/INT8 builder flags instead of a strongly typed net

    def __post_init__(self) -> None:
        check_opset(self.opset)
        if self.decode is not None and self.decode not in DECODE_METHODS:
            raise ValueError(f"unknown --decode {self.decode!r}; choose one of {', '.join(DECODE_METHODS)}")
        if self.int8 and self.calib is None:
            raise ValueError(
                "--int8 needs calibration data: pass --calib PATH (a folder of frames, or the run's dataset, whose "
                "training split is used); INT8 ranges from random inputs would be meaningless"
            )
        if self.calib_size < 1:
            raise ValueError(f"--calib-size must be >= 1, got {self.calib_size}")
        if self.calib_method not in CALIBRATION_METHODS:
            raise ValueError(
                f"unknown --calib-method {self.calib_method!r}; choose one of {', '.join(CALIBRATION_METHODS)}"
            )


def export_versions(source: Any) -> dict[str, str]:
    """Versions of the export environment, and the training environment's under ``training.*``."""
    import onnx
    import onnxruntime

    from tardis_edge.provenance import versions

    out = dict(versions())
    out["onnx"] = onnx.__version__
    out["onnxruntime"] = onnxruntime.__version__
    try:
        import onnxconverter_common

        out["onnxconverter_common"] = onnxconverter_common.__version__
    except ImportError:
        pass
    out.update({f"training.{k}": v for k, v in source.versions.items()})
    return out


def _io_description(model: Any) -> dict[str, list[dict[str, Any]]]:
    """Names, element types and shapes (-1 for dynamic axes) of a graph's inputs and outputs."""
    import onnx

    def describe(value: Any) -> dict[str, Any]:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        return {"name": value.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name, "shape": dims}

    return {"inputs": [describe(v) for v in model.graph.input], "outputs": [describe(v) for v in model.graph.output]}


def export_artifact(source: Any, options: ExportOptions) -> tuple[ArtifactMetadata, dict[str, Path]]:
    """Write the artifact folder for ``source`` (an ``export.source.ExportSource``).

    Returns:
        ``(metadata written to model.json, models key -> ONNX path)``.
    """
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    # a previous export's description and report no longer apply (model.json is written last, when all is done)
    for stale in (METADATA_FILE, "verification.json", "verification.md"):
        (out / stale).unlink(missing_ok=True)
    predict = source.predict
    method = options.decode or predict.decode
    beta = float(predict.softargmax_beta) if method == "softargmax" else None
    heatmap_hw = (source.heatmap_wh[1], source.heatmap_wh[0])
    num_keypoints = source.schema.num_keypoints

    LOG.info("exporting the FP32 body (opset %d, input %dx%d), %s decode", options.opset, *source.input_wh, method)
    if source.dlc is None:
        decode = GraphDecode(method, heatmap_hw, source.stride, softargmax_beta=beta)
        body = export_heatmaps_graph(source.model, source.input_wh, options.opset)
        final_layers = [node_for_module(body, HEAD_FINAL_CONV)]
        decode_channels = num_keypoints
    else:  # DeepLabCut 3: its model and its decode (heatmaps + locref maps); no heatmap-only graph
        from export.dlc_import import final_layers as dlc_final_layers

        if options.decode is not None or not options.graph_decode:
            raise ValueError(
                "a DeepLabCut model decodes in the graph with DeepLabCut's own decode (heatmap peak + locref); leave "
                "out --decode and --no-graph-decode"
            )
        decode = source.dlc.graph_decode(num_keypoints, heatmap_hw)
        body = export_body_graph(source.model, source.input_wh, options.opset)
        final_layers = dlc_final_layers(body)
        decode_channels = num_keypoints * (3 if source.dlc.decode.location_refinement else 1)  # heatmaps + locref
    decode_graph = export_decode_graph(decode, decode_channels, options.opset)
    keypoint_outputs = [OUTPUT_KEYPOINTS, OUTPUT_SCORES]
    fp32_nodes = [*final_layers, "decode/*"] if options.graph_decode else final_layers

    def with_decode(graph: Any) -> Any:
        return append_decode(graph, decode_graph) if options.graph_decode else graph

    graphs: dict[str, Any] = {"fp32": append_decode(body, decode_graph)}
    entries: dict[str, dict[str, Any]] = {"fp32": {"precision": "fp32"}}
    if source.dlc is None:
        graphs["fp32_heatmaps"] = body
        entries["fp32"]["heatmaps_file"] = FILES["fp32_heatmaps"]
        entries["fp32_heatmaps"] = {"precision": "fp32"}
    if options.fp16:
        from export.fp16 import convert_fp16

        LOG.info("converting to FP16 (keeping %s and the decode in FP32)", ", ".join(final_layers))
        graphs["fp16"] = with_decode(convert_fp16(body, final_layers))
        entries["fp16"] = {"precision": "fp16", "fp32_nodes": fp32_nodes}
    if options.int8:
        from export.calibration import calibration_crops
        from export.quantize import RECIPES, quantize_int8

        assert options.calib is not None  # ExportOptions refuses --int8 without --calib
        crops, calibration = calibration_crops(options.calib, source, options.calib_size, options.calib_seed)
        LOG.info(
            "INT8: calibrating (%s) on %d crops from %d frames of %s",
            options.calib_method,
            calibration["crops"],
            calibration["frames"],
            calibration["source"],
        )
        if calibration["crops"] < options.calib_size:
            LOG.warning(
                "INT8: only %d calibration crops available (asked for %d)", calibration["crops"], options.calib_size
            )
        calibration.update(method=options.calib_method)
        for key, target in INT8_TARGETS.items():
            graphs[key] = with_decode(quantize_int8(body, crops, target, final_layers, options.calib_method))
            entries[key] = {
                "precision": key,
                "fp32_nodes": fp32_nodes,
                "quantization": RECIPES[target].description,
                "calibration": calibration,
            }
    for key, entry in entries.items():
        if source.dlc is not None:
            entry["decode"] = source.dlc.decode.describe()
        heatmaps_only = key == "fp32_heatmaps" or (key != "fp32" and not options.graph_decode)
        entry["file"] = f"tardis_{key}_heatmaps.onnx" if heatmaps_only and key != "fp32_heatmaps" else FILES[key]
        entry["outputs"] = [OUTPUT_HEATMAPS] if heatmaps_only else keypoint_outputs
        entry["opset"] = options.opset

    finder_graphs: dict[str, Any] = {}
    finder_entries: dict[str, dict[str, Any]] = {}
    if getattr(source, "finder", None) is not None:
        from export.finder import export_finder_graphs

        finder_graphs, finder_entries = export_finder_graphs(source, options)
    config = source.model.config
    oks_sigmas, oks_sigmas_source = schema_oks_sigmas(source.schema)
    metadata = ArtifactMetadata(
        keypoint_names=list(source.schema.names),
        skeleton=[list(e) for e in source.schema.skeleton],
        flip_pairs=[list(p) for p in source.schema.flip_pairs],
        input_width=source.input_wh[0],
        input_height=source.input_wh[1],
        heatmap_width=source.heatmap_wh[0],
        heatmap_height=source.heatmap_wh[1],
        mean=[float(v) for v in config.mean],
        std=[float(v) for v in config.std],
        padding=float(predict.padding),
        decode_method=method,
        softargmax_beta=beta,
        models=entries,
        oks_sigmas=oks_sigmas,
        oks_sigmas_source=oks_sigmas_source,
        versions=export_versions(source),
        finder=_finder_section(source, finder_entries) if finder_graphs else None,
    )
    metadata_json = metadata.to_json()  # embedded in every graph: without the files' sizes and hashes
    paths: dict[str, Path] = {}
    for key, graph in graphs.items():
        tidy_opset_imports(graph)
        set_metadata(graph, metadata_json, key)
        check_graph(graph, entries[key]["file"])
        paths[key] = save_graph(graph, out / entries[key]["file"])
        entries[key].update(file_fingerprint(paths[key]))  # the runtime opens only this exact file
        LOG.info("wrote %s", paths[key])
    for key, graph in finder_graphs.items():
        name = finder_entries[key]["file"]
        tidy_opset_imports(graph)
        set_metadata(graph, metadata_json, f"finder_{key}")
        check_graph(graph, name)
        paths[f"finder_{key}"] = save_graph(graph, out / name)
        finder_entries[key].update(file_fingerprint(paths[f"finder_{key}"]))
        LOG.info("wrote %s", paths[f"finder_{key}"])
    if source.split is not None:  # the run's train/val/test sample ids: `tardis-edge eval --split test` reads them
        from tardis_edge.splits import SPLIT_FILE, Split

        Split.from_dict(source.split, str(source.checkpoint)).write(out / SPLIT_FILE)
    # last: its presence means a complete artifact
    atomic_write_text(out / METADATA_FILE, metadata.to_json() + "\n")

    pose_paths = {k: p for k, p in paths.items() if k not in TENSORRT_SKIPS and not k.startswith("finder_")}
    _tensorrt(source, options, pose_paths, graphs, entries)
    for key in finder_graphs:
        if key not in TENSORRT_SKIPS:
            side = int(source.finder_config.input_size)
            write_trtexec_script(paths[f"finder_{key}"], f"finder_{key}", (3, side, side), options.trt_batch, {
                "artifact": METADATA_FILE, "precision": f"finder_{key}", "onnx": paths[f"finder_{key}"].name,
                "onnx_sha256": finder_entries[key]["sha256"], **_io_description(finder_graphs[key]),
            })  # fmt: skip
    return metadata, paths


def _finder_section(source: Any, entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from export.finder import finder_metadata

    return finder_metadata(source, entries)


def _tensorrt(
    source: Any, options: ExportOptions, paths: dict[str, Path], graphs: dict[str, Any], entries: dict[str, dict]
) -> None:
    """trtexec scripts for every graph; engines too where TensorRT imports (and ``options.engines``)."""
    chw = (3, source.input_wh[1], source.input_wh[0])
    version = tensorrt_version()
    for key, path in paths.items():
        sidecar = {
            "artifact": METADATA_FILE,
            "keypoint_names": list(source.schema.names),
            "input_size": list(source.input_wh),
            "precision": key,
            "onnx": path.name,  # the graph it is built from, by hash: the runtime refuses an engine of another export
            "onnx_sha256": entries[key]["sha256"],
            **_io_description(graphs[key]),
        }
        script = write_trtexec_script(path, key, chw, options.trt_batch, sidecar)
        if version is not None and options.engines:
            engine = build_engine(
                path, key, chw, options.trt_batch, sidecar, legacy_weak_typing=options.legacy_weak_typing
            )
            LOG.info("built TensorRT %s engine %s (and %s)", version, engine, script.name)
        else:
            why = "TensorRT is not importable here" if version is None else "--no-engine"
            LOG.info("%s: wrote %s; run it on the target GPU to build the engine", why, script)


def metadata_json_of(path: Path) -> dict[str, Any]:
    """The artifact metadata embedded in an exported ONNX file (``metadata_props``)."""
    import onnx

    from tardis_edge.artifact import ONNX_METADATA_KEY

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if ONNX_METADATA_KEY not in props:
        raise ValueError(f"{path} carries no {ONNX_METADATA_KEY!r} metadata: it was not written by tardis-export")
    data: dict[str, Any] = json.loads(props[ONNX_METADATA_KEY])
    return data
