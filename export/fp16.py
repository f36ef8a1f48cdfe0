"""Export stage: the FP16 body graph (onnxconverter-common), FP32 where precision matters.

The body ``image -> heatmaps`` is converted with ``keep_io_types=True`` (the graph still takes and returns
float32) and a node block list: the last head conv (``head.final``) stays FP32 because it writes the heatmap values
the decode compares and takes maxima of. The decode is appended afterwards in FP32 (``onnx_export.append_decode``),
so the soft-argmax/argmax part never sees FP16.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

LOG = logging.getLogger("tardis.export")


def convert_fp16(body: Any, keep_fp32_nodes: Sequence[str] = ()) -> Any:
    """FP16 copy of a float32 ONNX graph, float32 inputs/outputs, ``keep_fp32_nodes`` left in float32.

    Args:
        body: ``onnx.ModelProto`` (the heatmap body).
        keep_fp32_nodes: node names not to convert (they get Cast nodes around them).
    """
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise ImportError("FP16 export needs onnxconverter-common: pip install 'tardis-edge[export]'") from exc
    names = {n.name for n in body.graph.node}
    unknown = sorted(set(keep_fp32_nodes) - names)
    if unknown:
        raise ValueError(
            f"FP32 node(s) {unknown} are not in the graph; take node names from onnx_export.node_for_module"
        )
    # The converter clamps weight values into [1e-7, 1e4] in magnitude and warns once per value: one log line instead
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = float16.convert_float_to_float16(
            body,
            keep_io_types=True,
            node_block_list=list(keep_fp32_nodes),
            disable_shape_infer=False,
        )
    clamped = [w for w in caught if "will be truncated" in str(w.message)]
    if clamped:
        LOG.info("FP16: %d weight values outside [1e-7, 1e4] in magnitude were clamped into it", len(clamped))
    for w in caught:
        if w not in clamped:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return converted
