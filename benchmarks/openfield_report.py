"""Collect the openfield accuracy runs (with and without stage 1) into benchmarks/results/openfield.json.

python benchmarks/openfield_report.py runs/openfield runs/openfield-nostage1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

from tardis_edge.io import atomic_write_text
from tardis_edge.machine import cpu_name
from tardis_edge.provenance import measurement


def run_record(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    metrics = json.loads((run / "metrics_test.json").read_text())
    stages = {p.stem.replace(".done", ""): json.loads(p.read_text()) for p in sorted((run / "stages").glob("*.json"))}
    per_kp = metrics.get("per_keypoint", {})
    return {
        "run": str(run),
        "stage1": summary["stage1"],
        "teacher": summary["teacher"],
        "backbone": summary["backbone"],
        "test_rmse_px": metrics["rmse_px"],
        "test_mean_px": metrics["mean_px"],
        "test_median_px": metrics.get("median_px"),
        "PCK@0.05": metrics.get("PCK@0.05"),
        "PCK@0.1": metrics.get("PCK@0.1"),
        "pck_normalizer": metrics.get("pck_normalizer"),
        "per_keypoint_rmse_px": {k: v.get("rmse_px") for k, v in per_kp.items()} if isinstance(per_kp, dict) else None,
        "wall_time_s": summary["timings"],
        "stage_summaries": stages,
        "test_frames": summary["test_samples"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("with_stage1", type=Path)
    parser.add_argument("without_stage1", type=Path)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/openfield.json"))
    args = parser.parse_args()
    with_s1, without_s1 = run_record(args.with_stage1), run_record(args.without_stage1)
    versions = json.loads((args.with_stage1 / "versions.json").read_text())
    report = {
        "benchmark": "openfield fixed split (95 train / 21 test), flip test, detector-free two-pass crops",
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()},
        "versions": versions,
        "measured": measurement(["python benchmarks/openfield_report.py", *sys.argv[1:]]),
        "command": "python -m training.full benchmarks/configs/openfield.yaml --out=runs/openfield",
        "command_without_stage1": (
            "python -m training.full benchmarks/configs/openfield.yaml --out=runs/openfield-nostage1 "
            "--skip_distill=true --keypoints.time_budget_s=3300"
        ),
        "test_rmse_px": with_s1["test_rmse_px"],
        "with_stage1": with_s1,
        "without_stage1": without_s1,
        "reference": {"deeplabcut3_from_scratch_rmse_px": 27.7, "deeplabcut3_pck@0.1": 0.76},
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("test_rmse_px",)}, indent=2))
    for name, rec in (("with stage 1", with_s1), ("without stage 1", without_s1)):
        print(
            f"{name}: RMSE {rec['test_rmse_px']:.2f} px, PCK@0.05 {rec['PCK@0.05']}, PCK@0.1 {rec['PCK@0.1']}, "
            f"wall {rec['wall_time_s'].get('total_s', 0) / 60:.1f} min"
        )


if __name__ == "__main__":
    main()
