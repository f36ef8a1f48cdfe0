"""Export stage, multi-animal part: the animal finder's graphs (FP32, FP16, both INT8) and their check against PyTorch.

The finder (``tardis_edge.finder``) is exported like the pose body: ``image`` float32 ``(N, 3, S, S)`` RGB 0..255 ->
``heatmaps`` ``(N, 3, S/stride, S/stride)``; FP16 keeps its last head conv in FP32, the INT8 graphs come from the
same static quantization recipes as the pose graphs, calibrated on whole frames of the run's training part. Its
outputs are decoded outside the graph (``tardis_edge.finder.decode_finder``, a local-maximum search that the C
library mirrors), so every precision is checked on what the runtime does with it: the animals it finds on the
run's held-out frames, against the PyTorch finder's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from tardis_edge import geometry
from tardis_edge.finder import FinderConfig, decode_finder

LOG = logging.getLogger("tardis.export")
FINDER_FILES = {
    "fp32": "tardis_finder_fp32.onnx",
    "fp16": "tardis_finder_fp16.onnx",
    "int8_cpu": "tardis_finder_int8_cpu.onnx",
    "int8_qdq": "tardis_finder_int8_qdq.onnx",
}
# Gates for the finder graphs, on the held-out frames: every graph must find as many animals as PyTorch on this share
# of the frames, with matched centres this many heatmap pixels apart at most on average (FP32: the same peaks).
FINDER_MIN_COUNT_AGREEMENT = 0.95
FINDER_MAX_MEAN_CENTRE_DEV_CELLS = 1.0
FINDER_FP32_MAX_OUTPUT_DEV = 1e-3


def letterboxed(frames_rgb: list[np.ndarray], side: int) -> np.ndarray:
    """Whole frames as the finder sees them: ``(N, 3, S, S)`` float32 RGB 0..255."""
    from tardis_edge.finder import frame_affine

    batch = [geometry.warp_image(f, frame_affine(f.shape[1::-1], side), (side, side)) for f in frames_rgb]
    return np.ascontiguousarray(np.stack(batch).transpose(0, 3, 1, 2), dtype=np.float32)


def finder_frames(source: Any, part: str, count: int, seed: int = 0) -> tuple[list[np.ndarray], str]:
    """Up to ``count`` whole frames of the run's ``part`` (``train`` or ``test``), one per image, seeded."""
    from export.source import load_split
    from tardis_edge.data import read_sample_image
    from tardis_edge.data.dataset import group_by_image

    _, train, test = load_split(source)
    chosen = [group[0] for group in group_by_image((train if part == "train" else test).samples)]
    rng = np.random.default_rng(seed)
    chosen = [chosen[i] for i in sorted(rng.permutation(len(chosen))[:count])]
    return [read_sample_image(s) for s in chosen], f"{len(chosen)} frames of the run's {part} part"


def export_finder_graphs(source: Any, options: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``(graphs, entries)``: the finder's ONNX graphs by precision key and their ``model.json`` entries."""
    from export.onnx_export import export_heatmaps_graph, node_for_module
    from tardis_edge.models import HEAD_FINAL_CONV

    side = int(source.finder_config.input_size)
    LOG.info("exporting the finder (input %dx%d)", side, side)
    body = export_heatmaps_graph(source.finder, (side, side), options.opset)
    final_conv = node_for_module(body, HEAD_FINAL_CONV)
    graphs: dict[str, Any] = {"fp32": body}
    entries: dict[str, dict[str, Any]] = {"fp32": {"precision": "fp32"}}
    if options.fp16:
        from export.fp16 import convert_fp16

        graphs["fp16"] = convert_fp16(body, [final_conv])
        entries["fp16"] = {"precision": "fp16", "fp32_nodes": [final_conv]}
    if options.int8:
        from export.pipeline import INT8_TARGETS
        from export.quantize import RECIPES, quantize_int8

        frames, origin = finder_frames(source, "train", options.calib_size, options.calib_seed)
        calib = letterboxed(frames, side)
        calibration = {"source": origin, "frames": len(frames), "method": options.calib_method}
        for key, target in INT8_TARGETS.items():
            graphs[key] = quantize_int8(body, calib, target, [final_conv], options.calib_method)
            entries[key] = {
                "precision": key,
                "fp32_nodes": [final_conv],
                "quantization": RECIPES[target].description,
                "calibration": calibration,
            }
    for key, entry in entries.items():
        entry["file"] = FINDER_FILES[key]
        entry["opset"] = options.opset
    return graphs, entries


def finder_metadata(source: Any, entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ``finder`` section of ``model.json``."""
    from dataclasses import asdict

    return {**asdict(source.finder_config), "stride": float(source.finder_stride), "models": entries}


def _peaks(outputs: np.ndarray, stride: float, cfg: FinderConfig) -> list[np.ndarray]:
    return [np.array([p[:2] for p in frame]).reshape(-1, 2) for frame in decode_finder(outputs, stride, cfg)]


def verify_finder(source: Any, folder: Path, entries: dict[str, dict[str, Any]], count: int = 32) -> dict[str, Any]:
    """Each finder graph (ONNX Runtime, CPU) against the PyTorch finder on up to ``count`` held-out frames.

    Returns:
        ``{"frames", "gates", "graphs": key -> {"max_output_dev", "count_agreement", "mean_centre_dev_cells",
        "max_centre_dev_cells", "animals_pytorch", "animals_graph", "failure"}}``.
    """
    import torch

    from export.verify import ort_session

    cfg, stride, side = source.finder_config, float(source.finder_stride), int(source.finder_config.input_size)
    frames, origin = finder_frames(source, "test", count)
    if not frames:
        frames, origin = finder_frames(source, "train", count)
        origin += " (the run has no test part)"
    inputs = letterboxed(frames, side)
    with torch.inference_mode():
        reference = np.concatenate(
            [source.finder(torch.from_numpy(inputs[i : i + 8]))["heatmaps"].numpy() for i in range(0, len(inputs), 8)]
        )
    ref_peaks = _peaks(reference, stride, cfg)
    rows: dict[str, Any] = {}
    for key, entry in entries.items():
        session = ort_session(folder / entry["file"])
        outputs = np.concatenate([session.run(None, {"image": inputs[i : i + 8]})[0] for i in range(0, len(inputs), 8)])
        peaks = _peaks(outputs, stride, cfg)
        same_count = [len(a) == len(b) for a, b in zip(ref_peaks, peaks, strict=True)]
        devs = []
        for a, b in zip(ref_peaks, peaks, strict=True):
            if len(a) and len(b):
                d = np.linalg.norm(a[:, None] - b[None], axis=-1)  # nearest graph peak for each PyTorch peak
                devs += list(d.min(axis=1) / stride)
        row = {
            "max_output_dev": float(np.abs(outputs - reference).max()),
            "count_agreement": float(np.mean(same_count)),
            "mean_centre_dev_cells": float(np.mean(devs)) if devs else 0.0,
            "max_centre_dev_cells": float(np.max(devs)) if devs else 0.0,
            "animals_pytorch": int(sum(len(p) for p in ref_peaks)),
            "animals_graph": int(sum(len(p) for p in peaks)),
        }
        failure = None
        if key == "fp32" and row["max_output_dev"] > FINDER_FP32_MAX_OUTPUT_DEV:
            failure = (
                f"finder {key}: outputs differ from PyTorch by {row['max_output_dev']:.3g} "
                f"(> {FINDER_FP32_MAX_OUTPUT_DEV})"
            )
        elif row["count_agreement"] < FINDER_MIN_COUNT_AGREEMENT:
            failure = (
                f"finder {key}: finds as many animals as PyTorch on {row['count_agreement']:.3f} of the frames "
                f"(< {FINDER_MIN_COUNT_AGREEMENT})"
            )
        elif row["mean_centre_dev_cells"] > FINDER_MAX_MEAN_CENTRE_DEV_CELLS:
            failure = (
                f"finder {key}: animal centres move {row['mean_centre_dev_cells']:.3f} heatmap pixels on average "
                f"(> {FINDER_MAX_MEAN_CENTRE_DEV_CELLS})"
            )
        row["failure"] = failure
        rows[key] = row
    return {
        "frames": origin,
        "gates": {
            "fp32_max_output_dev": FINDER_FP32_MAX_OUTPUT_DEV,
            "min_count_agreement": FINDER_MIN_COUNT_AGREEMENT,
            "max_mean_centre_dev_cells": FINDER_MAX_MEAN_CENTRE_DEV_CELLS,
        },
        "graphs": rows,
    }
