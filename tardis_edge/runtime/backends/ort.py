"""ONNX Runtime backend (the default): CPU, or CUDA where onnxruntime-gpu provides it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tardis_edge.artifact import INPUT_NAME

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(
            "the ONNX Runtime backend needs onnxruntime: pip install 'tardis-edge[runtime]' "
            "(or onnxruntime-gpu for the CUDA provider)"
        ) from e
    return onnxruntime


def choose_providers(requested: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """Execution providers to use: ``requested`` (each must be available), else CUDA when present, then CPU."""
    if requested is None:
        return [CUDA, CPU] if CUDA in available else [CPU]
    requested = list(requested)
    if not requested:
        raise ValueError(f"providers is empty; pass None for the default or some of {list(available)}")
    missing = [p for p in requested if p not in available]
    if missing:
        raise ValueError(
            f"ONNX Runtime execution provider(s) {missing} are not available in this onnxruntime build; available: "
            f"{list(available)} (CUDAExecutionProvider needs the onnxruntime-gpu package)"
        )
    return requested


def open_session(path: Path, providers: Sequence[str] | None, threads: int | None, fix: str) -> Any:
    """A CPU/GPU ``InferenceSession`` on ``path`` (``threads`` intra-op threads; None: ONNX Runtime's default).

    ONNX Runtime's own load errors (InvalidProtobuf, Fail …) say little about the fix: one line naming the file, the
    first line of ONNX Runtime's reason and ``fix`` replaces them.
    """
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        options.intra_op_num_threads = int(threads)
    chosen = choose_providers(providers, ort.get_available_providers())
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    except Exception as exc:
        reason = " ".join((str(exc).splitlines() or [type(exc).__name__])[0].split())[:300]
        raise ValueError(f"{path} cannot be loaded by ONNX Runtime ({reason}); {fix}") from exc


class OnnxRuntimeBackend:
    """One ``InferenceSession`` on an artifact's ONNX file.

    Args:
        model_path: the ``.onnx`` file.
        providers: execution providers in priority order; None: CUDA if available, then CPU.
        threads: intra-op threads (None: ONNX Runtime's default, all cores).
    """

    def __init__(self, model_path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None):
        import_onnxruntime()  # a missing onnxruntime is said first, before anything about the file
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model {path} does not exist; re-export the artifact with tardis-export")
        fix = "the file is damaged or not an ONNX graph: re-export the artifact with tardis-export"
        self.session = open_session(path, providers, threads, fix)
        inputs = self.session.get_inputs()
        if [i.name for i in inputs] != [INPUT_NAME]:
            raise ValueError(
                f"{path} takes inputs {[i.name for i in inputs]}; a tardis-edge artifact takes one input "
                f"{INPUT_NAME!r} (N, 3, H, W); re-export it with tardis-export"
            )
        batch_dim = inputs[0].shape[0]
        self.max_batch: int | None = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        self._fixed_batch = self.max_batch is not None
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        self.output_shapes = {o.name: tuple(o.shape) for o in self.session.get_outputs()}
        self.input_shape = tuple(inputs[0].shape)
        self.path = path
        self.providers = list(self.session.get_providers())
        self.name = f"onnxruntime[{self.providers[0]}]"

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """``images`` float32 ``(N, 3, H_in, W_in)`` -> outputs by name; a fixed-batch graph gets padded input."""
        n = len(images)
        feed = np.ascontiguousarray(images, dtype=np.float32)
        if self._fixed_batch and n != self.max_batch:
            assert self.max_batch is not None and n < self.max_batch, "chunking is the caller's job"
            feed = np.concatenate([feed, np.zeros((self.max_batch - n, *feed.shape[1:]), np.float32)])
        outputs = self.session.run(list(self.output_names), {INPUT_NAME: feed})
        return {
            name: np.asarray(value, dtype=np.float32)[:n]
            for name, value in zip(self.output_names, outputs, strict=True)
        }

    def close(self) -> None:
        self.session = None
