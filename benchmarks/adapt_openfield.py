"""Video adaptation on the openfield video (issue 17, must-show 1): ``python -m training.adapt`` from the openfield run
on ``videos/m3v1mp4.mp4`` (2330 unlabelled frames of another recording), into benchmarks/results/adapt-openfield.json.

    nice -n 5 python benchmarks/adapt_openfield.py [--run runs/openfield] [--out runs/openfield-adapted]
        [--adapt.KEY=VALUE ...]

Before and after, on the same video frames (``training/adapt.py``, ``jitter_report``): the median frame-to-frame
keypoint displacement on frames where the mouse barely moves (its centre, median-filtered over 9 frames, moves less
than 1 px per frame in the original model's predictions), the share of frame pairs in which some keypoint jumps more
than 10 px, and the share of keypoints not found; and the test metrics of the fixed split (img0095-img0115), which
the adaptation never reads. The adapted run is a run folder like any other (``tardis-export`` exports it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tardis_edge.io import atomic_write_text, strict_json  # noqa: E402
from tardis_edge.provenance import measurement  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
VIDEO = ROOT.parent / "shared" / "data" / "openfield-Pranav-2018-10-30" / "videos" / "m3v1mp4.mp4"
TEST_KEYS = ("rmse_px", "mean_px", "median_px", "PCK@0.05", "PCK@0.1", "AP")


def change(before: float | None, after: float | None) -> float | None:
    """``after - before`` (None when either is missing)."""
    return None if before is None or after is None else after - before


SPEEDS_PX = (0.5, 1.0, 2.0)  # "barely moves" thresholds of the sensitivity check (px per frame)


def still_speed_sensitivity(run: Path, stem: str, config: dict) -> list[dict]:
    """Still-frame jitter before/after for other "barely moves" thresholds (the report uses ``still_speed_px``)."""
    from training.adapt import VideoPoses, jitter_report, still_rows, transfer_rows

    before = VideoPoses.load(run / "adapt" / f"{stem}.before.npz")
    after = VideoPoses.load(run / "adapt" / f"{stem}.after.npz")
    found = config["keypoints"]["predict"]["box_min_score"]
    names = [str(k) for k in range(before.keypoints.shape[1])]
    rows = []
    for speed in SPEEDS_PX:
        still = still_rows(before, found, config["adapt"]["still_window"], speed)
        b = jitter_report(before, still, found, config["adapt"]["jump_px"], names)
        a = jitter_report(after, transfer_rows(before, still, after, found), found, config["adapt"]["jump_px"], names)
        rows.append({"still_speed_px": speed, "still_rows": b["still_rows"], "before_px": b["still_jitter_px"],
                     "after_px": a["still_jitter_px"], "before_mean_px": b["still_jitter_mean_px"],
                     "after_mean_px": a["still_jitter_mean_px"]})  # fmt: skip
    return rows


def adaptation_record(report: dict, test_keys: tuple[str, ...], argv: list[str]) -> dict:
    """The result file's content from an ``adapt_report.json``: jitter and test metrics before/after, and verdicts."""
    import yaml

    run = Path(report["out"])
    config = yaml.safe_load((run / "config.yaml").read_text())
    videos = []
    for entry in report["videos"]:
        before, after = entry["jitter_before"], entry["jitter_after"]
        videos.append(
            {
                "video": entry["video"],
                "frames": entry["frames"],
                "frames_held_out": entry["frames_held_out"],
                "pseudo_labels": entry["pseudo_labels"],
                "kept_share_per_keypoint": entry["kept_share_per_keypoint"],
                "training_samples": entry["training_samples"],
                "before": before,
                "after": after,
                "still_jitter_change_px": change(before["still_jitter_px"], after["still_jitter_px"]),
                "still_jitter_mean_change_px": change(before["still_jitter_mean_px"], after["still_jitter_mean_px"]),
                "jump_share_change": change(before["jump_share"], after["jump_share"]),
                "missing_share_change": change(before["missing_share"], after["missing_share"]),
                "still_speed_sensitivity": still_speed_sensitivity(run, entry["stem"], config),
            }
        )
    test_before, test_after = report["test_before"] or {}, report["test_after"]
    test = {
        key: {"before": test_before.get(key), "after": test_after.get(key),
              "change": change(test_before.get(key), test_after.get(key))}
        for key in test_keys
        if key in test_after
    }  # fmt: skip
    return {
        "measured": measurement(["python", *argv]),
        "source_run": report["source"],
        "adapted_run": report["out"],
        "fine_tune": report["fine_tune"],
        "adapt_config": config["adapt"],
        "videos": videos,
        "test": test,
        "verdict": {
            "less_jitter_on_still_frames": all((v["still_jitter_change_px"] or 0) < 0 for v in videos),
            "fewer_jumps": all((v["jump_share_change"] or 0) < 0 for v in videos),
        },
        "seconds": report["seconds"],
        "cpu_s": report["cpu_s"],
        "load_average_at_end": report["load_average"],
    }


def run_adaptation(run: Path, videos: list[Path], out: Path, overrides: list[str], threads: int) -> dict:
    """``python -m training.adapt`` in this process (resumable); returns its report."""
    from training.adapt import main as adapt_main

    argv = [str(run), *map(str, videos), f"--out={out}", f"--threads={threads}", *overrides]
    if adapt_main(argv) != 0:
        raise RuntimeError(f"training.adapt {' '.join(argv)} failed")
    return json.loads((out / "adapt_report.json").read_text())


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "openfield")
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "openfield-adapted", help="the adapted run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--result", type=Path, default=RESULTS / "adapt-openfield.json")
    args, overrides = parser.parse_known_args(argv)
    report = run_adaptation(args.run, [args.video], args.out, overrides, args.threads)
    record = adaptation_record(report, TEST_KEYS, [Path(__file__).name, *argv])
    args.result.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.result, strict_json(record, indent=1) + "\n")
    print(json.dumps({"videos": [{k: v[k] for k in ("before", "after")} for v in record["videos"]],
                      "test": record["test"]}, indent=1))  # fmt: skip
    return record


if __name__ == "__main__":
    main()
