"""The video pipeline, paired against an earlier code tree: ``tardis-edge predict`` on the openfield video with this
tree and with a baseline tree (e.g. a ``git worktree`` of the commit before a change), alternating A B A B so both see
the same machine, with and without the overlay, and the two trees' keypoints compared.
Writes benchmarks/results/video-paired-openfield.json (``int8_fps``: this tree, INT8, no overlay, median).

    git worktree add --detach /tmp/baseline fd281f9
    python benchmarks/video_paired_openfield.py runs/openfield/export --baseline /tmp/baseline --python VENV/bin/python

Both trees run in the same interpreter (``--python``: a torch-free runtime environment), each from its own folder
(``python -m`` puts the working folder first on the path), each on its own export (``--baseline-artifact``: the
same run exported by the baseline tree); each run is a child process (``runtime_openfield.run_predict``: fps, wall
clock, peak RSS).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from runtime_openfield import VIDEO, run_predict  # noqa: E402

from tardis_edge.io import atomic_write_text, strict_json  # noqa: E402
from tardis_edge.provenance import measurement  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def read_keypoints(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(keypoints (N, K, 2), likelihood (N, K))`` from a DeepLabCut-style CSV (3 header rows)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[3:]
    values = np.array([[float(v) if v else np.nan for v in row[1:]] for row in rows]).reshape(len(rows), -1, 3)
    return values[..., :2], values[..., 2]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--baseline", type=Path, required=True, help="source tree of the earlier code")
    parser.add_argument(
        "--baseline-artifact", type=Path, help="the run exported by the baseline tree (default: artifact)"
    )
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--repeats", type=int, default=2, help="A B pairs per overlay setting")
    parser.add_argument("--max-frames", type=int)
    parser.add_argument("--python", default=sys.executable, help="interpreter of the runtime's environment")
    parser.add_argument("--out", type=Path, default=RESULTS / "video-paired-openfield.json")
    args = parser.parse_args(argv)
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=args.baseline, capture_output=True, text=True, timeout=10)
    baseline_sha = done.stdout.strip() or None
    artifact, video = args.artifact.resolve(), args.video.resolve()
    rows: list[dict] = []
    keypoints: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="video-paired-") as tmp:
        for overlay in (False, True):
            for repeat in range(args.repeats):
                for tree in ("current", "baseline"):
                    tree_root = args.baseline.resolve() if tree == "baseline" else ROOT
                    out = Path(tmp) / f"{tree}-{overlay}-{repeat}"
                    options = argparse.Namespace(overlay=overlay, max_frames=args.max_frames, predict_args=[])
                    # `python -m` runs the package of its working folder: each tree runs its own code
                    model = (args.baseline_artifact or artifact).resolve() if tree == "baseline" else artifact
                    row = run_predict(args.python, model, video, args.precision, out, options, cwd=tree_root)
                    row.update(tree=tree, overlay=overlay, repeat=repeat)
                    rows.append(row)
                    print(f"{tree:8s} overlay={overlay!s:5s} #{repeat}: {row['fps']} fps, {row['peak_rss_mb']} MB")
                    if repeat == 0 and not overlay:
                        keypoints[tree] = read_keypoints(Path(row["outputs"]["csv"]))

    def median(tree: str, overlay: bool, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["tree"] == tree and r["overlay"] == overlay)

    summary = {
        f"{tree}_{'overlay' if overlay else 'no_overlay'}": {
            "fps_median": median(tree, overlay, "fps"),
            "peak_rss_mb_max": max(r["peak_rss_mb"] for r in rows if r["tree"] == tree and r["overlay"] == overlay),
        }
        for tree in ("current", "baseline")
        for overlay in (False, True)
    }
    (a, _), (b, b_score) = keypoints["current"], keypoints["baseline"]
    both = np.isfinite(a).all(-1) & np.isfinite(b).all(-1)
    distance = np.linalg.norm(a - b, axis=-1)
    moved = distance[both]
    # The INT8 gate's agreement, on the video: the baseline's confident keypoints (likelihood > 0.2) that this tree
    # puts within 0.05 x the diagonal of the baseline's padded keypoint box (1.25 x the extent, as the crops).
    confident = np.isfinite(b).all(-1) & (b_score > 0.2)
    extent = np.array(
        [np.ptp(f[c], axis=0) if c.any() else [np.nan, np.nan] for f, c in zip(b, confident, strict=True)]
    )
    tolerance = 0.05 * 1.25 * np.linalg.norm(extent, axis=-1)[:, None]
    agree = (distance <= tolerance) & np.isfinite(a).all(-1)
    record = {
        "benchmark": f"tardis-edge predict {args.precision} on {args.video.name}: this tree vs a baseline tree, "
        "alternating runs",
        "measured": measurement(
            ["python benchmarks/video_paired_openfield.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "baseline": {
            "tree": str(args.baseline),
            "git_sha": baseline_sha,
            "artifact": str(args.baseline_artifact or artifact),
        },
        "int8_fps": summary["current_no_overlay"]["fps_median"] if args.precision == "int8" else None,
        "summary": summary,
        "speedup_no_overlay": round(
            summary["current_no_overlay"]["fps_median"] / summary["baseline_no_overlay"]["fps_median"], 3
        ),
        "speedup_overlay": round(
            summary["current_overlay"]["fps_median"] / summary["baseline_overlay"]["fps_median"], 3
        ),
        "keypoints_vs_baseline_px": {
            "frames": int(len(a)),
            "found_by_both": int(both.sum()),
            "found_by_one_only": int((np.isfinite(a).all(-1) != np.isfinite(b).all(-1)).sum()),
            "median": float(np.median(moved)),
            "p99": float(np.percentile(moved, 99)),
            "max": float(moved.max()),
            "agreement_on_baseline_confident": float(agree[confident].mean()),
            "confident_keypoints": int(confident.sum()),
        },
        "runs": rows,
    }
    atomic_write_text(args.out, strict_json(record) + "\n")
    print(f"wrote {args.out}: {summary}")
    return record


if __name__ == "__main__":
    main()
