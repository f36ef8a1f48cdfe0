"""Builders shared by the runtime tests (no tests here): synthetic "animals" and small real artifacts.

The model behind every artifact is a real computation, not a stand-in: the heatmap of keypoint k is the k-th
colour channel of the crop, average-pooled by the stride (``ImageHeatmapBackend`` in NumPy; the same network in
PyTorch exported to ONNX). Frames hold one Gaussian blob per keypoint in that keypoint's colour, so the decoded
keypoints must land on the blob centres — a model whose right answer is known.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tardis_edge.artifact import METADATA_FILE, OUTPUT_HEATMAPS, ArtifactMetadata, file_fingerprint
from tardis_edge.io import atomic_write_text

INPUT_WH = (64, 64)
STRIDE = 4
NAMES = ["red", "green"]


def blob_frame(size_wh: tuple[int, int], centres: list[tuple[float, float]] | None, sigma: float = 6.0) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` frame: black, with a Gaussian blob of channel k at ``centres[k]`` (None: empty)."""
    w, h = size_wh
    frame = np.zeros((h, w, 3), np.float64)
    ys, xs = np.mgrid[0:h, 0:w]
    for k, (cx, cy) in enumerate(centres or []):
        frame[..., k] = np.maximum(frame[..., k], np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2)))
    return np.round(frame * 255).astype(np.uint8)


def pooled_heatmaps(images: np.ndarray, num_keypoints: int) -> np.ndarray:
    """``(N, K, H/4, W/4)``: channel ``k % 3`` of ``(N, 3, H, W)`` 0..255 images / 255, 3x3 mean at stride 4.

    Heatmap pixel ``(u, v)`` averages input pixels ``4u-1..4u+1`` x ``4v-1..4v+1`` (zero outside), i.e. it is
    centred on input pixel ``(4u, 4v)`` as ``tardis_edge.geometry`` says it must be; the PyTorch twin is
    ``AvgPool2d(3, stride=4, padding=1)``.
    """
    _, _, h, w = images.shape
    x = images[:, [k % 3 for k in range(num_keypoints)]].astype(np.float32) / np.float32(255)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    hh, ww = h // STRIDE, w // STRIDE
    total = sum(
        padded[:, :, dy : dy + STRIDE * hh : STRIDE, dx : dx + STRIDE * ww : STRIDE]
        for dy in range(3)
        for dx in range(3)
    )
    return (total / np.float32(9)).astype(np.float32)


class ImageHeatmapBackend:
    """A real NumPy backend (the ``InferenceBackend`` protocol): heatmaps computed from the crop itself."""

    def __init__(self, num_keypoints: int = len(NAMES)) -> None:
        self.num_keypoints = num_keypoints
        self.name = "numpy-pooling"
        self.output_names = (OUTPUT_HEATMAPS,)
        self.max_batch = None
        self.calls = 0

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        return {OUTPUT_HEATMAPS: pooled_heatmaps(images, self.num_keypoints)}

    def close(self) -> None:
        pass


def metadata(decode_method: str = "msra", **overrides) -> ArtifactMetadata:
    fields = dict(
        keypoint_names=list(NAMES),
        skeleton=[[0, 1]],
        flip_pairs=[],
        input_width=INPUT_WH[0],
        input_height=INPUT_WH[1],
        heatmap_width=INPUT_WH[0] // STRIDE,
        heatmap_height=INPUT_WH[1] // STRIDE,
        decode_method=decode_method,
        softargmax_beta=20.0 if decode_method == "softargmax" else None,
    )
    fields.update(overrides)
    return ArtifactMetadata(**fields)


def pooling_model(num_keypoints: int):
    """The PyTorch twin of ``pooled_heatmaps`` with ``PoseModel``'s interface: RGB 0..255 -> ``{"heatmaps"}``.

    Keypoint k reads colour channel ``k % 3``.
    """
    import torch

    class PoolingModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = torch.nn.AvgPool2d(3, stride=STRIDE, padding=1)

        def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
            channels = image[:, [k % 3 for k in range(num_keypoints)]] / 255.0
            return {"heatmaps": self.pool(channels)}  # (N, K, H/4, W/4), as pooled_heatmaps

    return PoolingModel().eval()


def build_artifact(
    folder: Path,
    decode_method: str = "msra",
    fixed_batch: int | None = None,
    names: list[str] | None = None,
    flip_pairs: list[list[int]] | None = None,
) -> Path:
    """Export the pooling network to ``folder``: ``tardis_fp32.onnx`` (decode in the graph, with the reference
    ``tardis_edge.decode``) and ``tardis_fp32_heatmaps.onnx``, plus ``model.json``. Needs torch (test venv)."""
    import torch

    from tardis_edge.decode import decode_heatmaps, soft_argmax

    meta = metadata(decode_method)
    if names is not None:
        meta.keypoint_names = list(names)
        meta.skeleton = [[i, i + 1] for i in range(len(names) - 1)]
    meta.flip_pairs = flip_pairs or []
    k = len(meta.keypoint_names)

    class PoolingPose(torch.nn.Module):
        def __init__(self, decode: bool) -> None:
            super().__init__()
            self.model = pooling_model(k)
            self.decode = decode

        def forward(self, image: torch.Tensor):
            heatmaps = self.model(image)["heatmaps"]
            if not self.decode:
                return heatmaps
            if decode_method == "softargmax":
                _, scores = decode_heatmaps(heatmaps, "argmax")
                keypoints = soft_argmax(heatmaps, float(meta.softargmax_beta))
            else:
                keypoints, scores = decode_heatmaps(heatmaps, decode_method)
            return keypoints * float(STRIDE), scores

    folder.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(fixed_batch or 1, 3, INPUT_WH[1], INPUT_WH[0])
    models = {}
    for name, decode, outputs in (
        ("fp32", True, ["keypoints", "scores"]),
        ("fp32_heatmaps", False, ["heatmaps"]),
    ):
        file = f"tardis_{name}.onnx"
        dynamic = None if fixed_batch else {n: {0: "batch"} for n in ["image", *outputs]}
        torch.onnx.export(
            PoolingPose(decode).eval(),
            (example,),
            str(folder / file),
            input_names=["image"],
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
        models[name] = {"file": file, "outputs": outputs, "precision": "fp32", **file_fingerprint(folder / file)}
    meta.models = models
    atomic_write_text(folder / METADATA_FILE, meta.to_json())
    return folder


def result_file(out: Path, stem: str, ending: str) -> Path:
    """The one ``tardis-edge predict`` result of source ``stem`` in ``out`` named ``<stem>DLC_<scorer><ending>``
    (``.h5``, ``.csv``, ``_meta.pickle``, ``_coco.json``), whatever the scorer."""
    found = sorted(out.glob(f"{stem}DLC_*{ending}"))
    assert len(found) == 1, f"expected one {stem}DLC_*{ending} in {out}, found {[p.name for p in found]}"
    return found[0]
