"""Runtime speed and memory on a video: ``tardis-edge predict`` per precision, in its own process, into
benchmarks/results/runtime-openfield.json (the README's fps and peak-memory figures).

    python benchmarks/runtime_openfield.py runs/openfield/export
    python benchmarks/runtime_openfield.py ARTIFACT --video clip.mp4 --precisions fp32 --max-frames 20 --out x.json

Each precision runs ``python -m tardis_edge.runtime predict ARTIFACT VIDEO --out TMP [--overlay]`` as a child process
(``--python`` chooses the interpreter: the README figures come from a virtualenv with the runtime extra only, no
torch). fps is the predict summary's (frames / seconds of the frame loop); the process wall clock, which adds start-up
and model loading, is recorded beside it. Peak memory is the child's maximum resident set size (``wait4``'s rusage),
the figure ``/usr/bin/time -v`` prints. The record holds the command, git SHA, machine and load average
(``tardis_edge.provenance.measurement``), and the load average before each run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file from anywhere
    sys.path.insert(0, str(ROOT))

from tardis_edge.io import atomic_write_text, strict_json  # noqa: E402
from tardis_edge.provenance import load_average, measurement, runtime_environment  # noqa: E402

VIDEO = ROOT.parent / "shared" / "data" / "openfield-Pranav-2018-10-30" / "videos" / "m3v1mp4.mp4"
RESULTS = ROOT / "benchmarks" / "results"
# The comparison the README quotes: DeepLabCut 3 on this video on the same machine, as given in the issue that asked
# for the runtime (not measured by this script).
DEEPLABCUT3 = {"fps": 6.3, "peak_memory_gb": 6.4, "source": "issue text, same machine"}


def run_predict(
    python: str, artifact: Path, video: Path, precision: str, out: Path, args: argparse.Namespace, cwd: Path = ROOT
) -> dict:
    """One ``tardis-edge predict`` child process (in ``cwd``, whose package ``python -m`` runs): its summary, wall
    clock and peak RSS."""
    command = [python, "-m", "tardis_edge.runtime", "predict", str(artifact), str(video), "--out", str(out)]
    command += ["--precision", precision, "--quiet"]
    if args.overlay:
        command.append("--overlay")
    if args.max_frames is not None:
        command += ["--max-frames", str(args.max_frames)]
    command += args.predict_args
    load_before = load_average()
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read() if child.stdout else ""
    _, wait_status, usage = os.wait4(child.pid, 0)
    wall_s = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(wait_status)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {child.returncode}:\n{output[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    (item,) = summary["inputs"]
    return {
        "precision": precision,
        "command": " ".join(command),
        "frames": item["frames_processed"],
        "bad_frames": item["bad_frames"],
        "fps": item["fps"],
        "process_wall_s": round(wall_s, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports kilobytes
        "load_average_before_1_5_15min": load_before,
        "backend": summary["backend"],
        "decode": summary["decode"],
        "refine": summary["refine"],
        "outputs": item["outputs"],
        "overlay_video": args.overlay,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path, help="artifact folder written by tardis-export")
    parser.add_argument("--video", type=Path, default=VIDEO, help=f"default: the openfield video ({VIDEO.name})")
    parser.add_argument("--precisions", default="int8,fp32", help="comma-separated, as exported (default int8,fp32)")
    parser.add_argument("--max-frames", type=int, help="stop after N frames (a quick check; the README uses all)")
    parser.add_argument("--no-overlay", dest="overlay", action="store_false", help="skip the overlay video")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the runtime's environment")
    parser.add_argument("--out", type=Path, default=RESULTS / "runtime-openfield.json")
    parser.add_argument(
        "predict_args", nargs="*", default=[], help="after --: more tardis-edge predict options, e.g. -- --threads 2"
    )
    args = parser.parse_args(argv)
    if not args.video.is_file():
        raise SystemExit(f"video {args.video} not found; pass --video PATH")
    command = ["python", "benchmarks/runtime_openfield.py", *(sys.argv[1:] if argv is None else argv)]
    results = []
    with tempfile.TemporaryDirectory(prefix="runtime-openfield-") as tmp:
        for precision in [p for p in args.precisions.split(",") if p]:
            results.append(run_predict(args.python, args.artifact, args.video, precision, Path(tmp) / precision, args))
            row = results[-1]
            print(f"{precision}: {row['frames']} frames at {row['fps']} fps, peak RSS {row['peak_rss_mb']} MB")
    record = {
        "benchmark": f"tardis-edge predict on {args.video}",
        "measured": measurement(command),
        "artifact": str(args.artifact),
        "runtime_environment": runtime_environment(args.python),
        "peak_memory_method": "maximum resident set size of the predict process (wait4 rusage, as /usr/bin/time -v)",
        "max_frames": args.max_frames,
        "results": results,
        "reference_deeplabcut3": DEEPLABCUT3,
        "ratios": {
            r["precision"]: {
                "fps_x": round(r["fps"] / DEEPLABCUT3["fps"], 2),
                "memory_fraction": round(r["peak_rss_mb"] / 1024 / DEEPLABCUT3["peak_memory_gb"], 3),
            }
            for r in results
            if r["fps"]
        },
    }
    atomic_write_text(args.out, strict_json(record) + "\n")
    print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
