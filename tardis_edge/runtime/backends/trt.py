"""TensorRT backend: a serialized engine (built on the target by the artifact's ``trtexec_<precision>.sh`` or
``tardis-export``) plus its JSON sidecar.

Device memory goes through **cuda-python** (``cuda.bindings.runtime``, the ``trt`` extra) rather than pycuda:
cuda-python is NVIDIA's own binding, ships as binary wheels for x86-64 and aarch64 (Jetson) with nothing to
compile against a local CUDA toolkit, and leaves context management to the CUDA runtime's primary context,
which is the one TensorRT itself uses — pycuda's ``autoinit`` creates a separate context and needs a build
against the installed toolkit. Nothing here runs without an NVIDIA GPU; a test type-checks this module with
mypy against ``tensorrt-stubs``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tardis_edge.artifact import INPUT_NAME

SIDECAR_SUFFIX = ".json"  # model.engine -> model.engine.json


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as e:
            raise ImportError("the TensorRT backend needs cuda-python: pip install 'tardis-edge[trt]'") from e
    return cudart


def _check(result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(error, *values)`` tuple, raising on an error code."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err} in {what}; is an NVIDIA GPU visible (nvidia-smi) and the driver loaded?")
    return values[0] if len(values) == 1 else values


def read_sidecar(engine_path: Path) -> dict[str, Any]:
    """The JSON sidecar beside ``engine_path`` (``<engine>.json``), or an error saying how to produce it."""
    sidecar = engine_path.with_name(engine_path.name + SIDECAR_SUFFIX)
    if not sidecar.is_file():
        raise FileNotFoundError(
            f"{sidecar} not found: a TensorRT engine needs its JSON sidecar (I/O names, shapes, precision), written "
            "by tardis-export next to the engine"
        )
    data: dict[str, Any] = json.loads(sidecar.read_text())
    return data


def _shape(dims: Any) -> tuple[int, ...]:
    """A TensorRT ``Dims`` as a tuple of ints (``Dims`` has ``len`` and indexing, no iterator)."""
    return tuple(int(dims[i]) for i in range(len(dims)))


class TensorRTBackend:
    """One TensorRT execution context with device buffers sized for the engine's largest profile batch.

    Args:
        engine_path: the serialized engine (``.engine`` / ``.plan``) built on this GPU and TensorRT version.
    """

    def __init__(self, engine_path: str | Path) -> None:
        try:
            import tensorrt as trt
        except ImportError as e:
            raise ImportError(
                "the TensorRT backend needs TensorRT (10.x or 11.x; on Jetson it comes with JetPack, elsewhere "
                "pip install tensorrt from NVIDIA) and cuda-python: pip install 'tardis-edge[trt]'"
            ) from e
        self._cudart = _import_cudart()
        path = Path(engine_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"TensorRT engine {path} does not exist; build it on this device with the artifact's trtexec_*.sh"
            )
        self.sidecar = read_sidecar(path)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine: trt.ICudaEngine | None = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise RuntimeError(
                f"TensorRT could not deserialize {path}: engines only load on the GPU model and TensorRT version "
                f"that built them (TensorRT here: {trt.__version__}); rebuild it on this device"
            )
        self._engine = engine
        self._context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if inputs != [INPUT_NAME]:
            raise ValueError(f"{path} has inputs {inputs}; a tardis-edge engine has one input {INPUT_NAME!r}")
        self.output_names = tuple(n for n in names if n not in inputs)
        _, _, max_dims = engine.get_tensor_profile_shape(INPUT_NAME, 0)
        max_shape = _shape(max_dims)
        self.max_batch: int | None = max_shape[0]
        numpy_types = {
            trt.DataType.FLOAT: np.float32,
            trt.DataType.HALF: np.float16,
            trt.DataType.INT32: np.int32,
            trt.DataType.INT64: np.int64,
        }
        self._dtypes: dict[str, np.dtype[Any]] = {}
        for n in names:
            kind = engine.get_tensor_dtype(n)
            if kind not in numpy_types:
                raise ValueError(
                    f"{path}: tensor {n!r} has TensorRT type {kind}; tardis-edge engines use FP32/FP16 I/O"
                )
            self._dtypes[n] = np.dtype(numpy_types[kind])
        self._stream = _check(self._cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, int] = {}
        self._nbytes: dict[str, int] = {}
        # Allocate for the largest batch once: set the max input shape, read back every output's shape.
        self._context.set_input_shape(INPUT_NAME, max_shape)
        for name in names:
            shape = _shape(self._context.get_tensor_shape(name))
            nbytes = int(np.prod(shape)) * self._dtypes[name].itemsize
            self._buffers[name] = int(_check(self._cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes}) for {name}"))
            self._nbytes[name] = nbytes
            self._context.set_tensor_address(name, self._buffers[name])
        self.name = "tensorrt"

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """``images`` float32 ``(N, 3, H_in, W_in)`` with N <= ``max_batch`` -> outputs by name (float32)."""
        cudart = self._cudart
        n = len(images)
        if self.max_batch is not None and n > self.max_batch:
            raise ValueError(f"batch {n} exceeds the engine's profile maximum {self.max_batch}; run smaller batches")
        host_in = np.ascontiguousarray(images, dtype=self._dtypes[INPUT_NAME])
        self._context.set_input_shape(INPUT_NAME, tuple(host_in.shape))
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(
            cudart.cudaMemcpyAsync(self._buffers[INPUT_NAME], host_in.ctypes.data, host_in.nbytes, h2d, self._stream),
            "cudaMemcpyAsync (input)",
        )
        if not self._context.execute_async_v3(int(self._stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed; see the TensorRT log above")
        outputs: dict[str, np.ndarray] = {}
        for name in self.output_names:
            out = np.empty(_shape(self._context.get_tensor_shape(name)), dtype=self._dtypes[name])
            _check(
                cudart.cudaMemcpyAsync(out.ctypes.data, self._buffers[name], out.nbytes, d2h, self._stream),
                f"cudaMemcpyAsync ({name})",
            )
            outputs[name] = out
        _check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return {name: value.astype(np.float32, copy=False) for name, value in outputs.items()}

    def close(self) -> None:
        for ptr in self._buffers.values():
            self._cudart.cudaFree(ptr)
        self._buffers.clear()
        if getattr(self, "_stream", None) is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None
