"""PyTorch backend, for parity checks against the exported artifacts: a training run's ``model.pt`` run eagerly.

torch, ``tardis_edge.checkpoint`` (the ``model.pt`` reader) and ``tardis_edge.models`` are imported only when this
backend is opened; the rest of the runtime never imports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tardis_edge.artifact import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OUTPUT_HEATMAPS,
    OUTPUT_KEYPOINTS,
    OUTPUT_SCORES,
    ArtifactMetadata,
)
from tardis_edge.geometry import DEFAULT_PADDING

if TYPE_CHECKING:
    from tardis_edge.checkpoint import DeployCheckpoint


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            "the PyTorch backend needs torch (install it first, then pip install 'tardis-edge[train]'); the "
            "ONNX Runtime and TensorRT backends do not"
        ) from e
    return torch


def metadata_from_checkpoint(checkpoint: DeployCheckpoint) -> ArtifactMetadata:
    """The artifact metadata an export of this checkpoint would carry (schema, sizes, decode)."""
    schema, predict = checkpoint.schema, checkpoint.predict
    return ArtifactMetadata(
        keypoint_names=list(schema.names),
        skeleton=[list(e) for e in schema.skeleton],
        flip_pairs=[list(p) for p in schema.flip_pairs],
        input_width=checkpoint.input_size[0],
        input_height=checkpoint.input_size[1],
        heatmap_width=checkpoint.heatmap_size[0],
        heatmap_height=checkpoint.heatmap_size[1],
        mean=list(checkpoint.model_config.get("mean", IMAGENET_MEAN)),
        std=list(checkpoint.model_config.get("std", IMAGENET_STD)),
        padding=float(predict.get("padding", DEFAULT_PADDING)),
        decode_method=str(predict.get("decode", "msra")),
        softargmax_beta=predict.get("softargmax_beta"),
        versions=dict(checkpoint.versions),
    )


class PyTorchBackend:
    """Eager PyTorch on a run's ``model.pt``; outputs ``heatmaps``, plus the reference decode when asked.

    Args:
        checkpoint: a run folder or its ``model.pt``.
        device: torch device string (``"cpu"``, ``"cuda"``).
        decode: ``"graph"`` adds ``keypoints`` (crop input pixels) and ``scores`` from the reference
            ``tardis_edge.decode`` (what the exported graph's decode must equal); ``"numpy"`` gives heatmaps only.
    """

    def __init__(self, checkpoint: str | Path, device: str = "cpu", decode: str = "graph") -> None:
        torch = _import_torch()
        from tardis_edge.checkpoint import DeployCheckpoint, checkpoint_file

        path, _ = checkpoint_file(checkpoint)
        deploy = DeployCheckpoint.load(path)
        self.metadata = metadata_from_checkpoint(deploy)
        self.model: Any = deploy.build_model(str(path)).to(device)
        self.device = device
        self.decode = decode
        self.output_names: tuple[str, ...] = (
            (OUTPUT_KEYPOINTS, OUTPUT_SCORES, OUTPUT_HEATMAPS) if decode == "graph" else (OUTPUT_HEATMAPS,)
        )
        self.max_batch: int | None = None
        self.name = f"pytorch[{device}]"
        self._torch = torch

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(self.device)
            heatmaps = self.model(x)["heatmaps"].float()  # (N, K, H_hm, W_hm)
            out = {OUTPUT_HEATMAPS: heatmaps.cpu().numpy()}
            if self.decode == "graph":
                keypoints, scores = _reference_decode(heatmaps, self.metadata)
                out[OUTPUT_KEYPOINTS] = keypoints.cpu().numpy() * np.float32(self.metadata.stride)
                out[OUTPUT_SCORES] = scores.cpu().numpy()
        return out

    def close(self) -> None:
        self.model = None


def _reference_decode(heatmaps: Any, meta: ArtifactMetadata) -> tuple[Any, Any]:
    """The reference decode ``tardis_edge.decode.decode_heatmaps`` with the artifact's method (heatmap pixels,
    scores; score <= 0 rows at (-1, -1) for every method)."""
    from tardis_edge.decode import decode_heatmaps

    return decode_heatmaps(heatmaps, meta.decode_method, softargmax_beta=meta.softargmax_beta)
