"""Memory replay on openfield (issue 17, must-show 3), into benchmarks/results/adapt-replay-openfield.json.

    nice -n 5 python benchmarks/replay_openfield.py [--run runs/openfield] [--work runs/replay-openfield]

A copy of the openfield project with one body part deleted (``tailbase``: its columns removed from
``CollectedData_Pranav.csv``, its name from ``config.yaml``'s bodyparts; the H5 is not copied, the CSV is the labels)
is mapped back into the four openfield keypoints by a keypoint map (``tardis_edge.data.keypoint_map``), so tailbase is
a keypoint this data lacks. The openfield model (``runs/openfield``) is fine-tuned on it twice with one seeded recipe
(``benchmarks/configs/openfield.yaml``'s stage 2, ``--keypoints.epochs`` epochs from the run's weights,
``--init_from``):

* without replay: tailbase has no label anywhere, so its loss weight is 0 (it only drifts with the shared layers);
* with replay (``--keypoints.memory_replay=true``): the original model's confident, flip-consistent tailbase
  predictions on the training images are its labels.

Both fine-tuned models and the original are evaluated the same way on the ORIGINAL project's fixed test part
(img0095-img0115, tailbase labelled there): per-keypoint test RMSE. The claim: with replay tailbase's RMSE stays
within 20 % of the original model's, without it degrades.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tardis_edge.io import atomic_write_text, strict_json  # noqa: E402
from tardis_edge.provenance import measurement  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PROJECT = ROOT.parent / "shared" / "data" / "openfield-Pranav-2018-10-30"
CONFIG = ROOT / "benchmarks" / "configs" / "openfield.yaml"
KEYPOINTS = ("snout", "leftear", "rightear", "tailbase")
TOLERANCE = 0.2  # "within 20 % of the original"


def project_without(project: Path, out: Path, deleted: str) -> Path:
    """A copy of a single-animal DeepLabCut project without body part ``deleted`` (labels CSV and config.yaml;
    images copied, videos and the H5 left out)."""
    import yaml

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(project, out, ignore=shutil.ignore_patterns("videos", "*.h5"))
    config = yaml.safe_load((out / "config.yaml").read_text())
    config["bodyparts"] = [b for b in config["bodyparts"] if b != deleted]
    config["project_path"] = str(out)
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for labels in out.glob("labeled-data/*/CollectedData_*.csv"):
        rows = list(csv.reader(labels.read_text().splitlines()))
        keep = [i for i, name in enumerate(rows[1]) if i == 0 or name != deleted]  # row 1: the bodyparts header
        with labels.open("w", newline="") as f:
            csv.writer(f).writerows([[row[i] for i in keep] for row in rows])
    return out


def evaluate_on_original(run: Path, project: Path) -> dict:
    """Per-keypoint test metrics of ``run``'s ``model.pt`` on the original project's fixed test part."""
    import torch

    from tardis_edge.checkpoint import DeployCheckpoint
    from tardis_edge.config import from_dict
    from tardis_edge.data import load_dataset
    from tardis_edge.predict import PredictConfig
    from tardis_edge.splits import Split
    from training.keypoints import evaluate_model

    ck = DeployCheckpoint.load(run / "model.pt")
    assert ck.schema.names == KEYPOINTS, ck.schema.names
    dataset = load_dataset(project)
    _, _, test = Split.from_dict(ck.split).apply(dataset)
    metrics, _, _ = evaluate_model(ck.build_model(), list(test.samples), dataset.schema, ck.input_size,
                                   from_dict(PredictConfig, ck.predict), torch.device("cpu"))  # fmt: skip
    return {
        "rmse_px": metrics["rmse_px"],
        "PCK@0.1": metrics["PCK@0.1"],
        "per_keypoint_rmse_px": {k: v["rmse_px"] for k, v in metrics["per_keypoint"].items()},
        "test_samples": len(test),
    }


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "openfield", help="the model to fine-tune")
    parser.add_argument("--project", type=Path, default=PROJECT)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "replay-openfield", help="data copy and runs")
    parser.add_argument("--deleted", default="tailbase")
    parser.add_argument("--epochs", type=int, default=30, help="fine-tune epochs (6 steps each)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--result", type=Path, default=RESULTS / "adapt-replay-openfield.json")
    args = parser.parse_args(argv)
    import yaml

    from training.full import main as train_main

    args.work.mkdir(parents=True, exist_ok=True)
    data = project_without(args.project, args.work / "data" / f"{args.project.name}-no-{args.deleted}", args.deleted)
    kmap = args.work / "data" / "map.yaml"
    mapped = {k: k for k in KEYPOINTS if k != args.deleted}
    kmap.write_text(yaml.safe_dump({"keypoints": list(KEYPOINTS), "datasets": [{"path": data.name,
                                                                               "keypoints": mapped}]}))  # fmt: skip
    recipe = [str(CONFIG), f"--data={kmap}", "--data.use_project_videos=false", f"--init_from={args.run}",
              f"--keypoints.epochs={args.epochs}", f"--threads={args.threads}"]  # fmt: skip
    runs = {}
    for name, replay in (("without_replay", "false"), ("with_replay", "true")):
        runs[name] = args.work / name
        assert train_main([*recipe, f"--keypoints.memory_replay={replay}", f"--out={runs[name]}"]) == 0
    results = {"original": evaluate_on_original(args.run, args.project)}
    results.update({name: evaluate_on_original(run, args.project) for name, run in runs.items()})
    original = results["original"]["per_keypoint_rmse_px"][args.deleted]
    ratios = {name: results[name]["per_keypoint_rmse_px"][args.deleted] / original for name in runs}
    log = (runs["with_replay"] / "log.txt").read_text().splitlines()
    record = {
        "measured": measurement(["python", Path(__file__).name, *argv]),
        "source_run": str(args.run),
        "deleted_keypoint": args.deleted,
        "data_copy": str(data),
        "keypoint_map": str(kmap),
        "recipe": [*recipe, "--keypoints.memory_replay=<false|true>"],
        "test_part": "the original project's fixed test part (img0095-img0115), tailbase labelled",
        "results": results,
        f"{args.deleted}_rmse_ratio_to_original": ratios,
        "replay_log": [line.split(" INFO ", 1)[-1] for line in log if "memory replay from" in line],
        "verdict": {
            f"with_replay_within_{int(TOLERANCE * 100)}_percent": ratios["with_replay"] <= 1 + TOLERANCE,
            "without_replay_degrades": ratios["without_replay"] > 1 + TOLERANCE,
        },
        "summaries": {name: json.loads((run / "summary.json").read_text())["timings"] for name, run in runs.items()},
    }
    args.result.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.result, strict_json(record, indent=1) + "\n")
    print(json.dumps({k: record[k] for k in (f"{args.deleted}_rmse_ratio_to_original", "verdict")}, indent=1))
    return record


if __name__ == "__main__":
    main()
