"""Export stage: TensorRT engines from the exported ONNX graphs, or the exact ``trtexec`` command to build them.

Precision comes from the graph: the network is *strongly typed* (FP32 graph -> FP32 engine, FP16 graph -> FP16
layers, Q/DQ graph -> INT8 where the Q/DQ pairs say). That is the only mode of TensorRT 11 and the recommended one
of 10.x (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; on 11 the flag is accepted and ignored). The 10.x
builder flags that let TensorRT pick FP16/INT8 kernels by itself live apart in ``_legacy_weakly_typed_config``
and run only when asked for (``legacy_weak_typing=True``) on TensorRT 10.

Where ``import tensorrt`` fails (a machine without an NVIDIA stack, like CI) ``write_trtexec_script`` writes
``trtexec_<precision>.sh`` with the same build as a command line, to run on the target. Engines are tied to the GPU
and TensorRT version they were built with, so building on the target is the normal case anyway.

Engine ``tardis_<precision>.engine`` gets a JSON sidecar ``tardis_<precision>.engine.json`` (I/O names and shapes,
precision, keypoint names, TensorRT/CUDA versions, GPU) that ``tardis_edge.runtime.backends.trt`` reads.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tardis_edge.artifact import INPUT_NAME
from tardis_edge.io import atomic_write_bytes, atomic_write_text, strict_json

if TYPE_CHECKING:  # the stubs (tensorrt-stubs) type-check this module; at run time TensorRT is imported lazily
    import tensorrt

ENGINE_SUFFIX = ".engine"
SIDECAR_SUFFIX = ".json"  # tardis_fp16.engine -> tardis_fp16.engine.json
TIMING_CACHE_NAME = "tensorrt_timing.cache"
DEFAULT_WORKSPACE_MIB = 1024
PRECISIONS = ("fp32", "fp16", "int8_qdq")


@dataclass(frozen=True)
class BatchProfile:
    """The optimisation profile's batch sizes for the dynamic batch axis of ``image``."""

    min: int = 1
    opt: int = 8
    max: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(
                f"TensorRT batch profile needs 1 <= min <= opt <= max, got min={self.min} opt={self.opt} "
                f"max={self.max}; e.g. --trt-batch 1,8,32"
            )

    def shapes(self, input_chw: tuple[int, int, int]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """``(min, opt, max)`` input shapes ``(N, C, H, W)``."""
        return ((self.min, *input_chw), (self.opt, *input_chw), (self.max, *input_chw))


def engine_path_for(onnx_path: Path) -> Path:
    """``tardis_fp16.onnx`` -> ``tardis_fp16.engine`` (same folder)."""
    return onnx_path.with_suffix(ENGINE_SUFFIX)


def sidecar_path_for(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + SIDECAR_SUFFIX)


def _import_tensorrt() -> Any:
    """The TensorRT module, or None where it is absent or unusable.

    ``tensorrt-stubs`` installs a ``tensorrt/`` folder holding only ``__init__.pyi``, which Python imports as an
    empty namespace package: that counts as absent.
    """
    try:
        import tensorrt as trt
    except (ImportError, OSError):  # OSError: the wheel is there but libnvinfer cannot be loaded
        return None
    return trt if hasattr(trt, "Builder") and hasattr(trt, "__version__") else None


def tensorrt_version() -> str | None:
    """The importable TensorRT's version, or None where ``import tensorrt`` gives no usable TensorRT."""
    trt = _import_tensorrt()
    return None if trt is None else str(trt.__version__)


def _shape_arg(shape: tuple[int, ...]) -> str:
    return f"{INPUT_NAME}:" + "x".join(str(d) for d in shape)


def trtexec_command(
    onnx_path: Path, input_chw: tuple[int, int, int], profile: BatchProfile, timing_cache: Path
) -> list[str]:
    """The ``trtexec`` command that builds ``onnx_path`` into ``<stem>.engine`` (paths as given).

    ``--stronglyTyped`` takes every precision from the graph (required for FP16 and Q/DQ graphs on 10.x, always
    on and accepted on 11.x); no ``--fp16``/``--int8`` flags, which 11.x removed.
    """
    low, opt, high = profile.shapes(input_chw)
    return [
        "trtexec",
        f"--onnx={onnx_path}",
        f"--saveEngine={engine_path_for(onnx_path)}",
        f"--minShapes={_shape_arg(low)}",
        f"--optShapes={_shape_arg(opt)}",
        f"--maxShapes={_shape_arg(high)}",
        "--stronglyTyped",
        f"--timingCacheFile={timing_cache}",
    ]


_SIDECAR_SNIPPET = """
import json, subprocess, sys
sidecar = json.load(open(sys.argv[1]))
try:
    import tensorrt
    sidecar["tensorrt"] = tensorrt.__version__
except Exception:
    sidecar["tensorrt"] = "unknown (trtexec; python tensorrt not importable)"
try:
    query = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
    sidecar["gpu"] = subprocess.run(query, capture_output=True, text=True, check=True).stdout.strip()
except Exception:
    sidecar["gpu"] = "unknown (no nvidia-smi: Jetson?)"
json.dump(sidecar, open(sys.argv[2], "w"), indent=2, sort_keys=True)
"""


def write_trtexec_script(
    onnx_path: Path,
    precision: str,
    input_chw: tuple[int, int, int],
    profile: BatchProfile,
    sidecar: dict[str, Any],
) -> Path:
    """Write ``trtexec_<precision>.sh`` beside ``onnx_path``: it builds the engine with trtexec, then writes the
    engine's JSON sidecar (``sidecar`` plus the TensorRT version and GPU found on the target).

    Returns:
        The script's path (executable). Extra arguments to the script are passed on to trtexec.
    """
    folder = onnx_path.parent
    engine = engine_path_for(onnx_path)
    template = folder / f"{engine.name}{SIDECAR_SUFFIX}.in"
    entry = dict(sidecar, built_by=f"trtexec_{precision}.sh")
    atomic_write_text(template, strict_json(entry, sort_keys=True) + "\n")
    command = trtexec_command(Path(onnx_path.name), input_chw, profile, Path(TIMING_CACHE_NAME))
    script = folder / f"trtexec_{precision}.sh"
    text = "\n".join(
        [
            "#!/usr/bin/env bash",
            f"# Build the {precision} TensorRT engine of this artifact on the target GPU (TensorRT 10.x or 11.x).",
            "# Precision comes from the graph (strongly typed). Extra arguments go to trtexec.",
            "set -euo pipefail",
            'cd "$(dirname "$0")"',
            " ".join(shlex.quote(part) for part in command) + ' "$@"',
            f"python3 - {shlex.quote(template.name)} {shlex.quote(sidecar_path_for(engine).name)} <<'PY'",
            _SIDECAR_SNIPPET.strip(),
            "PY",
            f'echo "built {engine.name} and {sidecar_path_for(engine).name}"',
            "",
        ]
    )
    atomic_write_text(script, text)
    script.chmod(0o755)
    return script


def _gpu_description() -> str:
    try:
        query = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
        return subprocess.run(query, capture_output=True, text=True, check=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (nvidia-smi not available)"


def _cuda_runtime_version() -> str:
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return "unknown (cuda-python not installed)"
    err, version = cudart.cudaRuntimeGetVersion()
    if int(err) != 0:
        return f"unknown (cudaRuntimeGetVersion error {err})"
    return f"{int(version) // 1000}.{int(version) % 1000 // 10}"


def _legacy_weakly_typed_config(config: tensorrt.IBuilderConfig, precision: str) -> None:
    """TensorRT 10.x only: let the builder choose FP16/INT8 kernels itself (weak typing, removed in 11.x).

    Kept apart on purpose: the artifact's graphs already carry their precision, and strongly typed builds are what
    ``tardis-export`` does by default. For an INT8 Q/DQ graph the INT8 flag enables the explicit quantization path
    and FP16 lets the un-quantized layers run in half precision.
    """
    import tensorrt as trt

    if precision in ("fp16", "int8_qdq"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8_qdq":
        config.set_flag(trt.BuilderFlag.INT8)


def build_engine(
    onnx_path: Path,
    precision: str,
    input_chw: tuple[int, int, int],
    profile: BatchProfile,
    sidecar: dict[str, Any],
    timing_cache: Path | None = None,
    workspace_mib: int = DEFAULT_WORKSPACE_MIB,
    legacy_weak_typing: bool = False,
) -> Path:
    """Build ``<stem>.engine`` from ``onnx_path`` with the TensorRT Python API and write its JSON sidecar.

    Args:
        onnx_path: the ONNX graph (input ``image`` with a dynamic batch axis).
        precision: ``"fp32"``, ``"fp16"`` or ``"int8_qdq"`` (recorded; the graph decides the layer precisions).
        input_chw: ``(3, H, W)`` of the input.
        profile: batch sizes of the optimisation profile.
        sidecar: fields for the sidecar (keypoint names, input size ...); I/O, versions and GPU are added.
        timing_cache: the timing cache file, read if present and written back (default: beside the ONNX).
        workspace_mib: builder workspace limit.
        legacy_weak_typing: TensorRT 10.x only: a weakly typed network with the FP16/INT8 builder flags.

    Returns:
        The engine's path.

    Raises:
        ImportError: TensorRT is not importable (use ``write_trtexec_script`` instead).
        RuntimeError: the ONNX parser or the builder failed (the parser's errors are in the message).
    """
    import tensorrt as trt

    if _import_tensorrt() is None:
        raise ImportError(
            "building engines needs TensorRT 10.x or 11.x (pip install tensorrt, or JetPack on Jetson); without "
            "it, run the artifact's trtexec_<precision>.sh on the target"
        )
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    major = int(str(trt.__version__).split(".")[0])
    if major < 10:
        raise RuntimeError(f"TensorRT {trt.__version__} is too old: tardis-export builds with TensorRT 10.x or 11.x")
    if legacy_weak_typing and major >= 11:
        raise ValueError(
            f"TensorRT {trt.__version__} has no weakly typed networks (removed in 11.x); build without "
            "legacy_weak_typing: the graph's own precision is used"
        )

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0 if legacy_weak_typing else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT's ONNX parser rejected {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if legacy_weak_typing:
        _legacy_weakly_typed_config(config, precision)
    optimisation = builder.create_optimization_profile()
    low, opt, high = profile.shapes(input_chw)
    optimisation.set_shape(INPUT_NAME, trt.Dims(list(low)), trt.Dims(list(opt)), trt.Dims(list(high)))
    config.add_optimization_profile(optimisation)

    cache_path = timing_cache or onnx_path.with_name(TIMING_CACHE_NAME)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path} (see the TensorRT log above)")
    engine = engine_path_for(onnx_path)
    atomic_write_bytes(engine, bytes(memoryview(serialized)))
    atomic_write_bytes(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))

    def io(tensor: tensorrt.ITensor) -> dict[str, Any]:
        return {
            "name": str(tensor.name),
            "dtype": str(tensor.dtype).replace("DataType.", "").lower(),
            "shape": [int(tensor.shape[i]) for i in range(len(tensor.shape))],
        }

    entry: dict[str, Any] = dict(sidecar)
    entry.update(
        engine=engine.name,
        onnx=onnx_path.name,
        precision=precision,
        strongly_typed=not legacy_weak_typing,
        inputs=[io(network.get_input(i)) for i in range(network.num_inputs)],
        outputs=[io(network.get_output(i)) for i in range(network.num_outputs)],
        profile={"min": list(low), "opt": list(opt), "max": list(high)},
        tensorrt=str(trt.__version__),
        cuda=_cuda_runtime_version(),
        gpu=_gpu_description(),
        built_by="tardis-export (TensorRT Python API)",
    )
    atomic_write_text(sidecar_path_for(engine), strict_json(entry, sort_keys=True) + "\n")
    return engine
