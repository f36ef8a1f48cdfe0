"""One prediction path, three callers: how far apart are the openfield test keypoints of training evaluation,
``tardis-export`` verification's runner and ``tardis-edge eval``? Writes benchmarks/results/predict-paths-openfield.json

All three call ``tardis_edge.predict.predict_frames`` (whole frame, then a crop around the model's own keypoints, flip
test, DARK decode); they differ only in the crop runner: the PyTorch model (training evaluation, and the runtime's
PyTorch backend) or the exported FP32 graph in ONNX Runtime (export verification and ``tardis-edge eval``).

    python benchmarks/predict_paths_openfield.py runs/openfield
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from tardis_edge.data import load_dataset, read_sample_image
from tardis_edge.io import atomic_write_text, strict_json
from tardis_edge.provenance import measurement
from tardis_edge.runtime import open_runner
from tardis_edge.splits import Split


def deviation(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    found = np.isfinite(a).all(-1) & np.isfinite(b).all(-1)
    d = np.linalg.norm(a - b, axis=-1)[found]
    return {"max_px": float(d.max()), "mean_px": float(d.mean()), "keypoints": int(found.sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="run folder with model.pt, predictions_test.npz and export/")
    parser.add_argument("--data", default="../shared/data/openfield-Pranav-2018-10-30")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/predict-paths-openfield.json"))
    args = parser.parse_args()

    dataset = load_dataset(args.data)
    _, _, test = Split.read(args.run / "split.json").apply(dataset)
    training = np.load(args.run / "predictions_test.npz")
    assert list(training["sample_ids"]) == test.sample_ids, "the run's predictions are not of its test part"
    frames = [read_sample_image(s) for s in test.samples]
    config = json.loads((args.run / "metrics_test.json").read_text())
    paths = {
        "runtime PyTorch backend (same model, NumPy decode)": dict(backend="pytorch", artifact=args.run),
        "tardis-edge eval / export verification runner: ONNX Runtime FP32, NumPy decode": dict(
            backend="onnxruntime", artifact=args.run / "export"
        ),
    }
    rows = {}
    for name, how in paths.items():
        threads = 1 if how["backend"] == "onnxruntime" else None
        with open_runner(how["artifact"], backend=how["backend"], decode="numpy", flip_test=True, threads=threads) as r:
            result = r(frames, color="RGB")
        rows[name] = deviation(result.keypoints, training["keypoints"].astype(np.float64))
        print(f"{name}: max {rows[name]['max_px']:.2e} px, mean {rows[name]['mean_px']:.2e} px")
    report = {
        "benchmark": "openfield test keypoints (21 frames, two-pass, flip test) of each caller of the one predictor, "
        "against training evaluation (the run's predictions_test.npz)",
        "measured": measurement(["python benchmarks/predict_paths_openfield.py", *sys.argv[1:]]),
        "run": str(args.run),
        "test_rmse_px_training": config["rmse_px"],
        "deviation_from_training_evaluation": rows,
    }
    atomic_write_text(args.out, strict_json(report) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
