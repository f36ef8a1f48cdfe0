"""Video adaptation of the multi-animal flies run (issue 17, must-show 1): ``python -m training.adapt`` from
``runs/flies`` on SLEAP's two-fly clip, into benchmarks/results/adapt-flies.json.

    nice -n 5 python benchmarks/adapt_flies.py [--run runs/flies] [--out runs/flies-adapted] [--adapt.KEY=VALUE ...]

training.adapt predicts every fly the run's finder finds on the clip's frames outside the run's test part (frames
0-999, the train part; 1000-1499 are held out), linked over frames by the tracker, and fine-tunes on pseudo-labels
only (``--adapt.labelled=false``: the clip's train frames are the run's labelled frames, so adding their labels would
make this supervised training, not adaptation). Before and after: jitter on frames 0-999 (median frame-to-frame
keypoint displacement of a fly on frames where it barely moves, share of frame pairs with a keypoint jump > 10 px,
keypoints not found) and the multi-animal test metrics on frames 1000-1499 (COCO mAP, recall, RMSE of the matched
flies, IDF1, identity switches, MOTA) from the evaluate stage of each run. The flies rest through most of frames
0-999 (99 % of frame-to-frame displacements under 0.1 px), so the jitter is also measured on the video of the test
frames 1000-1499, where they walk and meet: both models predict those frames (their labels are not read).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.adapt_openfield import adaptation_record, run_adaptation  # noqa: E402
from tardis_edge.io import atomic_write_text, strict_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
VIDEO = ROOT.parent / "shared" / "data" / "sleap-flies-clip" / "clip.mp4"
TEST_FRAMES = (1000, 1500)
TEST_KEYS = ("AP", "AP50", "AP75", "AR", "recall", "precision", "mean_px", "median_px", "rmse_px", "tracking_idf1",
             "tracking_mota", "tracking_num_switches")  # fmt: skip


def test_frame_jitter(run: Path, adapted: Path, video: Path) -> dict:
    """Jitter of the original and the adapted model on the video of the test frames (predictions kept beside the
    adapted run's, ``adapt/test-frames.*.npz``; still frames judged on the original model's predictions)."""
    import torch
    import yaml

    from tardis_edge.multi import MultiConfig
    from training.adapt import PoseSource, jitter_report, predicted, still_rows, transfer_rows

    config = yaml.safe_load((adapted / "config.yaml").read_text())
    a, m = config["adapt"], config["multi"]
    multi = MultiConfig(detect_every=m["detect_every"], expected_animals=m["expected_animals"] or 2,
                        max_animals=m["max_animals"] or 2)  # fmt: skip
    frames = list(range(*TEST_FRAMES))
    poses = {}
    for which, folder in (("original", run), ("adapted", adapted)):
        source = PoseSource(folder / "model.pt", multi, torch.device("cpu"))
        poses[which], _ = predicted(source, video, frames, adapted / "adapt" / f"test-frames.{which}.npz", which)
        names = source.schema.names
    found = config["keypoints"]["predict"]["box_min_score"]
    still = still_rows(poses["original"], found, a["still_window"], a["still_speed_px"])
    return {
        "frames": f"{TEST_FRAMES[0]}-{TEST_FRAMES[1] - 1}",
        "before": jitter_report(poses["original"], still, found, a["jump_px"], names),
        "after": jitter_report(
            poses["adapted"],
            transfer_rows(poses["original"], still, poses["adapted"], found),
            found,
            a["jump_px"],
            names,
        ),  # fmt: skip
    }


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "flies")
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "flies-adapted", help="the adapted run")
    parser.add_argument("--threads", type=int, default=1, help="2 on a busy 2-core machine ran 8x slower (OpenMP)")
    parser.add_argument("--result", type=Path, default=RESULTS / "adapt-flies.json")
    args, overrides = parser.parse_known_args(argv)
    report = run_adaptation(args.run, [args.video], args.out, ["--adapt.labelled=false", *overrides], args.threads)
    record = adaptation_record(report, TEST_KEYS, [Path(__file__).name, *argv])
    record["jitter_on_test_frames"] = test_frame_jitter(args.run, args.out, args.video)
    args.result.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.result, strict_json(record, indent=1) + "\n")
    print(json.dumps({"videos": [{k: v[k] for k in ("before", "after")} for v in record["videos"]],
                      "test": record["test"]}, indent=1))  # fmt: skip
    return record


if __name__ == "__main__":
    main()
