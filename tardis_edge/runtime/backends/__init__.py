"""Inference backends of the edge runtime: ONNX Runtime (default), TensorRT, PyTorch (parity checks).

A backend turns a float32 ``(N, 3, H_in, W_in)`` RGB 0..255 batch into the artifact's outputs by name:
``keypoints`` ``(N, K, 2)`` crop input pixels + ``scores`` ``(N, K)`` (decode in the graph), or ``heatmaps``
``(N, K, H_hm, W_hm)`` (decode in NumPy, ``tardis_edge.runtime.decode_np``). Each backend module imports its
engine (onnxruntime, tensorrt + cuda-python, torch) only when it is opened, so importing the runtime needs none
of them.
"""

from __future__ import annotations

from enum import Enum
from typing import Protocol, runtime_checkable

import numpy as np


class Backend(str, Enum):
    """Which engine runs the model."""

    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"
    PYTORCH = "pytorch"

    @classmethod
    def parse(cls, value: Backend | str) -> Backend:
        """``value`` as a Backend; an unknown name is an error listing the known ones."""
        if isinstance(value, Backend):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            known = ", ".join(b.value for b in cls)
            raise ValueError(f"unknown backend {value!r}; choose one of {known}") from None


@runtime_checkable
class InferenceBackend(Protocol):
    """What the runner needs from a backend."""

    name: str  # for reports: "onnxruntime[CPUExecutionProvider]", "tensorrt", "pytorch[cpu]"
    output_names: tuple[str, ...]  # the outputs ``run`` returns
    max_batch: int | None  # largest batch one call accepts (None: any)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """``images`` float32 ``(N, 3, H_in, W_in)`` RGB 0..255 -> outputs by name (float32 NumPy arrays)."""
        ...

    def close(self) -> None:
        """Release the engine (sessions, device buffers)."""
        ...


def run_in_chunks(backend: InferenceBackend, images: np.ndarray, limit: int | None = None) -> dict[str, np.ndarray]:
    """``backend.run`` over chunks of at most ``limit`` and ``backend.max_batch`` images, outputs concatenated."""
    size = min(n for n in (limit, backend.max_batch, len(images)) if n is not None)
    if len(images) <= size:
        return backend.run(images)
    parts = [backend.run(images[i : i + size]) for i in range(0, len(images), size)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


__all__ = ["Backend", "InferenceBackend", "run_in_chunks"]
