"""DeepLabCut 3 import parity: DeepLabCut-built models through tardis-export against DeepLabCut's own inference.

For a resnet_50 and an hrnet_w32 shuffle made by DeepLabCut on a copy of the openfield project (seeded weights, see
tests/dlc/dlc_models.py), ``tardis-export --fp16 --int8 --calib PROJECT`` writes the artifact and its verification
report (DeepLabCut's model + predictor as the reference, on the shuffle's held-out frames); then every graph runs on
the held-out whole frames in the edge runtime (no refine: a bottom-up DeepLabCut model sees the whole frame) and is
compared with ``get_pose_inference_runner(...).inference`` on the same frames. Runs in .venv-dlc:

    .venv-dlc/bin/python benchmarks/dlc_import_parity.py   # -> benchmarks/results/dlc-import-parity.json

Random weights: the scores mean nothing, so the FP16/INT8 agreement is on the keypoints the FP32 model scores above
the project's pcutoff (verification's rule); a model with none (ResNet-50's seeded heads score below 0.2) is reported
as too weak to verify, which is what tardis-export says of it.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests" / "dlc"):
    if str(path) not in sys.path:  # run as a file from anywhere; the model makers live beside the parity test
        sys.path.insert(0, str(path))

from dlc_models import MAX_PX, dlc_inference, make_project, make_snapshot, read_frames  # noqa: E402

from tardis_edge.io import atomic_write_text, strict_json  # noqa: E402
from tardis_edge.provenance import measurement  # noqa: E402

SHUFFLES = {1: "resnet_50", 2: "hrnet_w32"}
GRAPHS = ("fp32", "fp16", "int8_cpu", "int8_qdq")
AGREEMENT_BOX = 0.05  # verification's tolerance: this fraction of the input diagonal


def compare(ours: tuple[np.ndarray, np.ndarray], theirs: np.ndarray, diagonal: float) -> dict:
    """Deviation of our keypoints from DeepLabCut's (image px) over all keypoints, and the share within tolerance."""
    keypoints, scores = ours
    found = np.isfinite(keypoints).all(-1)
    distance = np.linalg.norm(np.where(found[..., None], keypoints, 0.0) - theirs[..., :2], axis=-1)
    return {
        "keypoints": int(found.size),
        "not_found": int((~found).sum()),
        "max_px": float(distance[found].max()) if found.any() else math.nan,
        "mean_px": float(distance[found].mean()) if found.any() else math.nan,
        "within_tolerance": float((found & (distance <= AGREEMENT_BOX * diagonal)).mean()),
        "score_max_abs": float(np.abs(scores - theirs[..., 2]).max()),
    }


def measure(project, shuffle: int, net_type: str, work: Path, calib_size: int) -> dict:
    import json

    from export.cli import main as export
    from export.source import load_source
    from tardis_edge.artifact import ArtifactMetadata
    from tardis_edge.runtime import open_runner

    folder = project.model_folder(shuffle)
    snapshot = make_snapshot(folder, project.path, seed=shuffle)
    out = work / f"artifact-{net_type}"
    args = [str(folder), "--out", str(out), "--fp16", "--int8", "--calib", str(project.path)]
    args += ["--calib-size", str(calib_size), "--latency-repeats", "3"]
    status = export(args)
    report = json.loads((out / "verification.json").read_text())
    metadata = ArtifactMetadata.load(out)
    diagonal = math.hypot(metadata.input_width, metadata.input_height)

    source = load_source(folder)
    test_ids = source.split["test"]
    frames = read_frames(project.path, test_ids)
    theirs = dlc_inference(folder, snapshot, frames)
    whole_frames = {}
    for key in GRAPHS:
        with open_runner(out, precision=key, refine=False) as runner:
            result = runner(frames)
        whole_frames[key] = compare((result.keypoints, result.scores), theirs, diagonal)
    return {
        "net_type": net_type,
        "backbone": source.dlc.config["model"]["backbone"]["model_name"],
        "input_wh": [metadata.input_width, metadata.input_height],
        "heatmap_wh": [metadata.heatmap_width, metadata.heatmap_height],
        "decode": metadata.models["fp32"]["decode"],
        "held_out_frames": test_ids,
        "fp32_max_px_vs_deeplabcut": whole_frames["fp32"]["max_px"],
        "fp32_within_bound": whole_frames["fp32"]["max_px"] <= MAX_PX and whole_frames["fp32"]["not_found"] == 0,
        "whole_frames_vs_deeplabcut": whole_frames,
        "tardis_export_exit": status,
        "verification": {
            "reference": "DeepLabCut's model, transforms and HeatmapPredictor on the same crops",
            "confident": report["confident"],
            "artifacts": {
                key: {
                    "deviation": row["deviation"],
                    "agreement": {k: v for k, v in row["agreement"].items() if k not in ("per_keypoint", "moved")},
                    "latency_ms": row.get("latency_ms"),
                    "failure": row["failure"],
                }
                for key, row in report["artifacts"].items()
            },
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--openfield", type=Path, default=ROOT.parent / "shared/data/openfield-Pranav-2018-10-30")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/dlc-import-parity.json")
    parser.add_argument(
        "--calib-size", type=int, default=4, help="INT8 calibration crops (ONNX Runtime holds all their activations)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dlc-import-") as tmp:
        work = Path(tmp)
        project = make_project(args.openfield, work, SHUFFLES)
        models = {net: measure(project, shuffle, net, work, args.calib_size) for shuffle, net in SHUFFLES.items()}
    result = {
        "measured": measurement(sys.argv if argv is None else ["benchmarks/dlc_import_parity.py", *argv]),
        "what": "DeepLabCut 3 models (built by DeepLabCut from a seed) exported by tardis-export, against "
        "DeepLabCut's own inference on the openfield shuffle's held-out frames (image px, whole frames)",
        "bound_px": MAX_PX,
        "weights": "seeded random (DeepLabCut's own initialisation); HRNet batch-norm statistics estimated on two "
        "256x256 openfield crops (tests/dlc/dlc_models.py)",
        "models": models,
    }
    atomic_write_text(args.out, strict_json(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    for net, row in models.items():
        wf = row["whole_frames_vs_deeplabcut"]
        print(net, {k: (round(v["max_px"], 6), v["within_tolerance"]) for k, v in wf.items()})
    return 0 if all(row["fp32_within_bound"] for row in models.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
