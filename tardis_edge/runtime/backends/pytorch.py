"""PyTorch backend, for parity checks against the exported artifacts: a training run's ``model.pt`` run eagerly.

torch and ``tardis_edge.models`` are imported only when this backend is opened; the rest of the runtime
never imports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tardis_edge.artifact import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OUTPUT_HEATMAPS,
    OUTPUT_KEYPOINTS,
    OUTPUT_SCORES,
    ArtifactMetadata,
)

CHECKPOINT_FILE = "model.pt"
DEPLOY_KEYS = ("model", "model_config", "schema", "input_size", "heatmap_size")


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            "the PyTorch backend needs torch (install it first, then pip install 'tardis-edge[train]'); the "
            "ONNX Runtime and TensorRT backends do not"
        ) from e
    return torch


def checkpoint_path(path: str | Path) -> Path:
    """``path`` itself if it is a file, else the run folder's ``model.pt``."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_FILE
    if not p.is_file():
        raise FileNotFoundError(
            f"{p} not found: the PyTorch backend loads a training run's {CHECKPOINT_FILE} (written by "
            "python -m training.full); pass the run folder or the file"
        )
    return p


def metadata_from_checkpoint(checkpoint: dict[str, Any], source: str) -> ArtifactMetadata:
    """The artifact metadata an export of this checkpoint would carry (schema, sizes, decode)."""
    missing = [k for k in DEPLOY_KEYS if k not in checkpoint]
    if missing:
        raise KeyError(
            f"{source} lacks {missing}; the PyTorch backend needs a deployable model.pt from python -m training.full "
            f"(keys {list(DEPLOY_KEYS)}), found {sorted(checkpoint)}"
        )
    schema = checkpoint["schema"]
    predict = checkpoint.get("predict") or {}
    size = checkpoint["input_size"]
    hm = checkpoint["heatmap_size"]
    in_w, in_h = (size, size) if isinstance(size, int) else (size[1], size[0])
    hm_w, hm_h = (hm, hm) if isinstance(hm, int) else (hm[1], hm[0])
    config = checkpoint["model_config"]
    return ArtifactMetadata(
        keypoint_names=list(schema["names"]),
        skeleton=[list(e) for e in schema.get("skeleton") or []],
        flip_pairs=[list(p) for p in schema.get("flip_pairs") or []],
        input_width=int(in_w),
        input_height=int(in_h),
        heatmap_width=int(hm_w),
        heatmap_height=int(hm_h),
        mean=list(config.get("mean", IMAGENET_MEAN)),
        std=list(config.get("std", IMAGENET_STD)),
        padding=float(predict.get("padding", 1.25)),
        decode_method=str(predict.get("decode", "msra")),
        softargmax_beta=predict.get("softargmax_beta"),
        versions=dict(checkpoint.get("versions") or {}),
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
        from tardis_edge.models import model_from_checkpoint

        path = checkpoint_path(checkpoint)
        try:
            # Runs saved before versions() converted torch.__version__ hold a TorchVersion (a str subclass): allow it.
            with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated file, or objects weights_only refuses: say which file and why
            raise RuntimeError(
                f"{path} cannot be loaded with torch.load(weights_only=True): {str(e).splitlines()[0]}; a model.pt "
                "from python -m training.full holds only tensors and plain containers"
            ) from e
        self.metadata = metadata_from_checkpoint(state, str(path))
        self.model: Any = model_from_checkpoint(state).to(device).eval()
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
    """``tardis_edge.decode`` as ``training.predict.decode`` applies it (heatmap pixels, scores)."""
    from tardis_edge.decode import decode_heatmaps, soft_argmax

    if meta.decode_method == "softargmax":
        _, scores = decode_heatmaps(heatmaps, "argmax")
        return soft_argmax(heatmaps, float(meta.softargmax_beta or 0.0)), scores
    return decode_heatmaps(heatmaps, meta.decode_method)
