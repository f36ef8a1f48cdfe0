"""Export stage: the two INT8 graphs, each made for its runtime, with ONNX Runtime's static quantization.

Both start the same way: ``quant_pre_process`` (shape inference + graph optimisation), then ``quantize_static``
in QDQ format with per-channel int8 weights stored as int8 initializers behind a ``DequantizeLinear`` (a quarter of
the FP32 file), calibrated (entropy by default) on real crops. The last head conv (``head.final``) stays FP32, and
the decode is appended afterwards in FP32 (``onnx_export.append_decode``), so no Q/DQ pair touches the decode. They
differ where their runtimes differ (``RECIPES``):

- ``cpu`` (``tardis_int8_cpu.onnx``, ONNX Runtime on CPU): uint8 activations with zero points (U8S8), every
  quantizable op quantized, int32 biases. ONNX Runtime fuses DQ -> Conv -> Q (and the Relu the asymmetric range
  makes redundant) into QLinearConv on its u8 x s8 integer kernels (AVX512-VNNI / AVX-VNNI on x86, dot-product on
  ARM). Symmetric int8 activations (S8S8), what TensorRT needs, run 2x slower here: ONNX Runtime's x86 kernels are
  built for U8S8. Measured on this 2-core VNNI CPU: ``benchmarks/int8_openfield.py``. On x86 *without* VNNI (AVX2
  only) U8S8 can saturate 16-bit intermediate sums; ONNX Runtime advises ``reduce_range`` there (not used: VNNI).
- ``tensorrt`` (``tardis_int8_qdq.onnx``, TensorRT explicit quantization): symmetric int8 activations (zero points
  0), Q/DQ only on the inputs of Conv and of Add (both inputs: residual Adds fuse into the conv before them), none
  on Conv/Add outputs, on Relu or in front of Resize (TensorRT moves Q/DQ across them itself), a dedicated Q/DQ
  pair per consumer, float biases (its parser refuses a DequantizeLinear of int32 biases). This is the placement
  NVIDIA's ModelOpt ONNX PTQ writes for Conv/Add (it also quantizes MaxPool). ModelOpt itself is not used: here
  it would replace onnxruntime with onnxruntime-gpu 1.22 and pull CuPy.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tardis_edge.artifact import INPUT_NAME

CALIBRATION_METHODS = ("entropy", "percentile", "minmax")
CALIBRATION_CHUNK = 8  # crops whose activations are held at once (the histogram calibrators keep every output)


@dataclass(frozen=True)
class Int8Recipe:
    """How one INT8 graph is quantized (``quantize_static`` arguments that differ between runtimes)."""

    description: str  # recorded in model.json
    symmetric_activations: bool  # int8 activations with zero point 0; False: uint8 with zero points
    op_types: tuple[str, ...] | None  # ops whose inputs get Q/DQ; None: every op ONNX Runtime quantizes
    no_output_qdq: tuple[str, ...] = ()  # ops whose outputs get no Q/DQ of their own
    dedicated_pairs: bool = False  # one Q/DQ pair per consumer of a tensor
    quantize_bias: bool = True  # int32 biases (False: float)


RECIPES = {
    "cpu": Int8Recipe(
        description="ONNX Runtime CPU: QDQ, uint8 activations with zero points, symmetric per-channel int8 weights "
        "(int8 initializers), int32 biases; fused to QLinearConv",
        symmetric_activations=False,
        op_types=None,
    ),
    "tensorrt": Int8Recipe(
        description="TensorRT explicit quantization: QDQ, symmetric int8 activations and per-channel weights (int8 "
        "initializers + DequantizeLinear), Q/DQ on Conv inputs and both Add inputs only, float biases",
        symmetric_activations=True,
        op_types=("Conv", "Add"),
        no_output_qdq=("Conv", "Add"),
        dedicated_pairs=True,
        quantize_bias=False,
    ),
}


def _require_quantization() -> Any:
    try:
        from onnxruntime import quantization
    except ImportError as exc:
        raise ImportError("INT8 export needs onnxruntime: pip install 'tardis-edge[export]'") from exc
    return quantization


def _chunk_size(total: int, most: int = CALIBRATION_CHUNK) -> int:
    """The largest chunk <= ``most`` dividing ``total`` (ONNX Runtime's strided calibration needs a divisor)."""
    return next(s for s in range(min(most, total), 0, -1) if total % s == 0)


def make_reader(crops: np.ndarray) -> Any:
    """A ``CalibrationDataReader`` over ``(N, 3, H, W)`` float32 crops, one crop per inference, with the
    ``set_range`` ONNX Runtime's strided calibration calls (so activations are held ``CALIBRATION_CHUNK`` at a time)."""
    quantization = _require_quantization()

    class CropReader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.start, self.end, self.position = 0, len(crops), 0

        def __len__(self) -> int:
            return len(crops)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.start, self.end, self.position = start_index, end_index, start_index

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.position >= self.end:
                return None
            self.position += 1
            return {INPUT_NAME: crops[self.position - 1 : self.position]}

    return CropReader()


def quantize_int8(
    body: Any,
    crops: np.ndarray,
    target: str,
    exclude_nodes: Sequence[str] = (),
    method: str = "entropy",
    workdir: Path | None = None,
) -> Any:
    """INT8 copy of the float32 body graph (``image -> heatmaps``) for one runtime.

    Args:
        body: ``onnx.ModelProto`` of the body, as ``onnx_export.export_heatmaps_graph`` returns it.
        crops: ``(N, 3, H, W)`` float32 RGB 0..255 calibration crops (``export.calibration.calibration_crops``).
        target: ``"cpu"`` (ONNX Runtime's integer kernels) or ``"tensorrt"`` (explicit quantization), see ``RECIPES``.
        exclude_nodes: node names kept in float32 (they must survive ``quant_pre_process``; checked).
        method: ``"entropy"`` or ``"percentile"`` (99.999th percentile of |x|), or ``"minmax"``.
        workdir: where the intermediate files go (a temporary folder by default).

    Returns:
        The quantized ``onnx.ModelProto``: float32 input and output, int8 weight initializers each read by a
        DequantizeLinear, QuantizeLinear/DequantizeLinear pairs on the quantized activations.
    """
    import onnx

    quantization = _require_quantization()
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if target not in RECIPES:
        raise ValueError(f"unknown INT8 target {target!r}; choose one of {', '.join(RECIPES)}")
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    if crops.ndim != 4 or crops.dtype != np.float32 or len(crops) == 0:
        raise ValueError(
            f"calibration crops must be a non-empty (N, 3, H, W) float32 array; got {crops.shape}, {crops.dtype}"
        )
    recipe = RECIPES[target]
    calibrate_method = {
        "entropy": quantization.CalibrationMethod.Entropy,
        "percentile": quantization.CalibrationMethod.Percentile,
        "minmax": quantization.CalibrationMethod.MinMax,
    }[method]
    activation_type = quantization.QuantType.QInt8 if recipe.symmetric_activations else quantization.QuantType.QUInt8
    with tempfile.TemporaryDirectory(dir=workdir, prefix="tardis-int8-") as tmp:
        raw, pre, out = Path(tmp) / "body.onnx", Path(tmp) / "body_pre.onnx", Path(tmp) / "body_int8.onnx"
        onnx.save(body, raw)
        # auto_merge: Resize by scales gives the batch dim as floor(1.0*batch), which must merge with "batch"
        quant_pre_process(str(raw), str(pre), auto_merge=True)
        present = {n.name for n in onnx.load(pre).graph.node}
        lost = sorted(set(exclude_nodes) - present)
        if lost:
            raise RuntimeError(
                f"node(s) {lost} to keep in FP32 disappeared in quant_pre_process (fused or renamed); the INT8 graph "
                "would quantize them"
            )
        progress = io.StringIO()  # quantize_static prints its calibration progress; keep the CLI output ours
        with contextlib.redirect_stdout(progress):
            quantization.quantize_static(
                str(pre),
                str(out),
                make_reader(crops),
                quant_format=quantization.QuantFormat.QDQ,
                op_types_to_quantize=list(recipe.op_types) if recipe.op_types else None,
                per_channel=True,
                reduce_range=False,  # full 8-bit weights: VNNI and TensorRT need no 7-bit headroom
                activation_type=activation_type,
                weight_type=quantization.QuantType.QInt8,
                nodes_to_exclude=list(exclude_nodes),
                calibrate_method=calibrate_method,
                extra_options={
                    "ActivationSymmetric": recipe.symmetric_activations,
                    "WeightSymmetric": True,
                    "CalibTensorRangeSymmetric": recipe.symmetric_activations,
                    "CalibStridedMinMax": _chunk_size(len(crops)),  # despite the name: chunked collection, any method
                    # weights are int8 initializers read by a DequantizeLinear (not float weights behind a Q/DQ pair)
                    "AddQDQPairToWeight": False,
                    "DedicatedQDQPair": recipe.dedicated_pairs,
                    "OpTypesToExcludeOutputQuantization": list(recipe.no_output_qdq),
                    "QuantizeBias": recipe.quantize_bias,
                },
            )
        return onnx.load(out)
