"""Collect the openfield accuracy run (and ablations of it) into benchmarks/results/openfield.json.

python benchmarks/openfield_report.py runs/openfield runs/openfield-nostage1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

from tardis_edge.io import atomic_write_text, strict_json
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


CONFIG = Path("benchmarks/configs/openfield.yaml")


def run_command(run: Path) -> str:
    """The training command of ``run``, derived from its resolved config: the benchmark config plus the fields the
    run changed (``--key=value``), so the report never holds a hand-typed command."""
    import yaml

    from tardis_edge.config import config_differences, load_config, to_dict
    from training.full import FullConfig

    # the run folder, and what training.full fills in from the top-level fields
    ignore = {"out", "stages", "extract.cache", "extract.teacher", "extract.random_teacher", "extract.depth",
              "extract.device"}  # fmt: skip

    recipe = to_dict(load_config(FullConfig, CONFIG))
    used = yaml.safe_load((run / "config.yaml").read_text())
    overrides = []
    for key, _, value in config_differences(recipe, used, ignore):
        overrides.append(f"--{key}={str(value).lower() if isinstance(value, bool) else value}")
    return " ".join(["python -m training.full", str(CONFIG), f"--out={run}", *overrides])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the run of benchmarks/configs/openfield.yaml")
    parser.add_argument(
        "ablations", type=Path, nargs="*", help="runs of the same config with changes (e.g. no stage 1)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/openfield.json"))
    args = parser.parse_args()
    main_run = run_record(args.run) | {"command": run_command(args.run)}
    versions = json.loads((args.run / "versions.json").read_text())
    report = {
        "benchmark": "openfield fixed split (95 train / 21 test, benchmarks/configs/openfield.yaml), flip test, "
        "detector-free two-pass crops; epoch-based seeded recipe, last checkpoint (no validation part)",
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()},
        "versions": versions,
        "measured": measurement(["python benchmarks/openfield_report.py", *sys.argv[1:]]),
        "command": main_run["command"],
        "test_rmse_px": main_run["test_rmse_px"],
        "run": main_run,
        "ablations": [run_record(a) | {"command": run_command(a)} for a in args.ablations],
        "reference": {"deeplabcut3_from_scratch_rmse_px": 27.7, "deeplabcut3_pck@0.1": 0.76},
    }
    atomic_write_text(args.out, strict_json(report) + "\n")
    for rec in [main_run, *report["ablations"]]:
        print(
            f"{rec['command']}\n  RMSE {rec['test_rmse_px']:.2f} px, PCK@0.05 {rec['PCK@0.05']}, "
            f"PCK@0.1 {rec['PCK@0.1']}, wall {rec['wall_time_s'].get('total_s', 0) / 60:.1f} min"
        )


if __name__ == "__main__":
    main()
