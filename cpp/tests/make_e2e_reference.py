"""Python reference keypoints for the C++ end-to-end test (ctest fixture).

For each artifact folder, runs the Python pipeline on openfield test frames: ``tardis_edge.geometry`` crop
(``box_from_image`` or ``box_from_xywh`` + ``crop_affine`` + ``warp_image``), ONNX Runtime on the artifact's heatmap
graph, ``tardis_edge.decode`` and ``keypoints_to_image``, and writes ``reference.txt`` beside the artifact, one line per
case::

    frame.png has_box x y w h K x_0 y_0 score_0 ... x_K-1 y_K-1 score_K-1     (nan where score <= 0)

Without ARTIFACT_DIR it first builds tiny artifacts (a small random conv net exported with
``torch.onnx.export(dynamo=False, opset 17)`` and a ``model.json`` per ``tardis_edge.artifact``), one per decode method,
in OUT_DIR/tiny_<method>/. With ARTIFACT_DIR (an exported model, e.g. from tardis-export) it writes
OUT_DIR/artifact.txt naming it and OUT_DIR/reference.txt.

usage: python make_e2e_reference.py SHARED_DIR OUT_DIR [ARTIFACT_DIR]   (exit 77: SHARED_DIR missing, not required)
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from openfield_frames import labelled_box, labelled_frames_dir, read_labels

from tardis_edge.artifact import METADATA_FILE, OUTPUT_HEATMAPS, ArtifactMetadata
from tardis_edge.geometry import box_from_image, box_from_xywh, crop_affine, heatmap_to_image_affine, warp_image
from tardis_edge.io import atomic_write_text

FRAMES = ("img0095", "img0105", "img0115")  # openfield test split
TINY_METHODS = {"msra": None, "dark": None, "soft_argmax": 20.0}  # decode_method -> softargmax_beta
PRECISION = "fp32"


def heatmap_entry(meta: ArtifactMetadata) -> dict:
    """The graph the C++ OpenCV DNN backend runs: models[fp32_heatmaps], else models[fp32] if it outputs heatmaps."""
    for key in (f"{PRECISION}_heatmaps", PRECISION):
        entry = meta.models.get(key)
        if entry is None:
            continue
        # Same rule as cpp/src/metadata.cpp: an explicit "outputs" list (or mapping), else the file name tells.
        outputs = (
            list(entry["outputs"])
            if "outputs" in entry
            else [OUTPUT_HEATMAPS if entry["file"].endswith("_heatmaps.onnx") else "keypoints"]
        )
        if OUTPUT_HEATMAPS in outputs:
            return entry
    raise ValueError(f"artifact has no {PRECISION} heatmap graph (models: {sorted(meta.models)})")


def build_tiny_artifacts(out: Path, keypoint_names: list[str]) -> list[Path]:
    """A 256x256 -> (N, K, 64, 64) conv net with the normalisation inside the graph, as the exporter writes it."""
    import torch
    from torch import nn

    class TinyHeatmapNet(nn.Module):
        def __init__(self, k: int):
            super().__init__()
            self.register_buffer("mean", torch.tensor(ArtifactMetadata.__dataclass_fields__["mean"].default_factory()))
            self.register_buffer("std", torch.tensor(ArtifactMetadata.__dataclass_fields__["std"].default_factory()))
            self.body = nn.Sequential(
                nn.Conv2d(3, 16, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, 16, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, k, 3, padding=1),
            )

            # A fixed bump per keypoint, off the pixel grid: it keeps every peak away from flat regions (the black
            # border of a letterboxed crop), where two backends' float rounding could break a tie differently.
            v, u = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
            centres = torch.tensor([[20.3, 31.7], [41.2, 18.6], [33.9, 44.1], [12.6, 50.4], [50.8, 40.2]])[:k]
            d2 = (u - centres[:, 0, None, None]) ** 2 + (v - centres[:, 1, None, None]) ** 2
            self.register_buffer("prior", 2.0 * torch.exp(-d2 / (2 * 12.0**2))[None])  # (1, K, 64, 64)

        def forward(self, image: torch.Tensor) -> torch.Tensor:  # (N, 3, 256, 256) RGB 0..255 -> (N, K, 64, 64)
            x = (image / 255.0 - self.mean.view(1, 3, 1, 1)) / self.std.view(1, 3, 1, 1)
            return self.body(x) + self.prior

    torch.manual_seed(0)
    net = TinyHeatmapNet(len(keypoint_names)).eval()
    onnx_bytes_path = out / "tiny_heatmaps.onnx"
    out.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        net,
        (torch.zeros(1, 3, 256, 256),),
        str(onnx_bytes_path),
        dynamo=False,
        opset_version=17,
        input_names=["image"],
        output_names=[OUTPUT_HEATMAPS],
        dynamic_axes={"image": {0: "n"}, OUTPUT_HEATMAPS: {0: "n"}},
    )
    onnx_bytes = onnx_bytes_path.read_bytes()
    folders = []
    for method, beta in TINY_METHODS.items():
        folder = out / f"tiny_{method}"
        folder.mkdir(exist_ok=True)
        (folder / "tardis_fp32_heatmaps.onnx").write_bytes(onnx_bytes)
        meta = ArtifactMetadata(
            keypoint_names=keypoint_names,
            skeleton=[[0, 1], [0, 2], [0, 3]],
            flip_pairs=[[1, 2]],
            decode_method=method,
            softargmax_beta=beta,
            models={f"{PRECISION}_heatmaps": {"file": "tardis_fp32_heatmaps.onnx", "outputs": [OUTPUT_HEATMAPS]}},
            versions={"torch": torch.__version__},
        )
        atomic_write_text(folder / METADATA_FILE, meta.to_json())
        folders.append(folder)
    return folders


def reference(artifact: Path, frames_dir: Path, boxes: dict[str, tuple[float, float, float, float]]) -> str:
    import onnxruntime as ort
    import torch

    from tardis_edge.decode import decode_heatmaps, keypoints_to_image

    meta = ArtifactMetadata.load(artifact)
    entry = heatmap_entry(meta)
    session = ort.InferenceSession(str(artifact / entry["file"]), providers=["CPUExecutionProvider"])
    input_wh = (meta.input_width, meta.input_height)
    lines = []
    for frame in FRAMES:
        png = frames_dir / f"{frame}.png"
        image = cv2.imread(str(png), cv2.IMREAD_COLOR)
        if meta.color == "RGB":
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        h, w = image.shape[:2]
        for xywh in (None, boxes[frame]):
            box = box_from_image((w, h), input_wh) if xywh is None else box_from_xywh(xywh, input_wh, meta.padding)
            m = crop_affine(box, input_wh)
            crop = warp_image(image, m, input_wh)  # (H_in, W_in, 3) uint8
            x = np.ascontiguousarray(crop.transpose(2, 0, 1)[None], dtype=np.float32)  # (1, 3, H_in, W_in)
            heatmaps = torch.from_numpy(session.run([OUTPUT_HEATMAPS], {"image": x})[0])  # (1, K, H_hm, W_hm)
            method = "softargmax" if meta.decode_method == "soft_argmax" else meta.decode_method
            kps, scores = decode_heatmaps(heatmaps, method, softargmax_beta=meta.softargmax_beta)
            to_image = torch.from_numpy(heatmap_to_image_affine(m, meta.stride)[None])  # (1, 2, 3)
            xy = keypoints_to_image(kps.double(), to_image)[0].numpy()  # (K, 2) image pixels
            s = scores[0].numpy()
            bx = xywh if xywh is not None else (0.0, 0.0, 0.0, 0.0)
            fields = [png, int(xywh is not None), *bx, len(s)]
            for (kx, ky), score in zip(xy, s, strict=True):
                fields += ["nan", "nan"] if score <= 0 else [repr(float(kx)), repr(float(ky))]
                fields.append(repr(float(score)))
            lines.append(" ".join(str(f) for f in fields))
    return "\n".join(lines) + "\n"


def main() -> int:
    shared, out = Path(sys.argv[1]), Path(sys.argv[2])
    frames_dir = labelled_frames_dir(shared)
    if isinstance(frames_dir, int):
        return frames_dir
    labels = read_labels(frames_dir)
    boxes = {frame: labelled_box(labels, frame) for frame in FRAMES}
    if len(sys.argv) > 3 and sys.argv[3]:
        artifact = Path(sys.argv[3]).resolve()
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "reference.txt", reference(artifact, frames_dir, boxes))
        print(f"wrote the reference for {artifact} to {out / 'reference.txt'}")
        return 0
    names = list(dict.fromkeys(labels.columns.get_level_values(1)))  # snout, leftear, rightear, tailbase
    for folder in build_tiny_artifacts(out, names):
        atomic_write_text(out / f"{folder.name}.txt", reference(folder, frames_dir, boxes))
    print(f"wrote tiny artifacts and references for {', '.join(TINY_METHODS)} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
