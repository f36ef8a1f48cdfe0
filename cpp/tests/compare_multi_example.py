"""ctest: the C++ example program tardis_edge_multi (C API, OpenCV DNN) writes the animals the Python runtime finds
(make_multi_reference.py's multi_every_frame.txt: ``open_multi`` with its defaults) on the same video frames: the
same animals per frame in the same order, the same track ids, keypoints within the FP32 export threshold (0.05 px;
the CSV rounds to 1e-3 px).

    python compare_multi_example.py EXAMPLE REFERENCE_DIR OUT_CSV
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np

FP32_THRESHOLD_PX = 0.05


def read_reference(path: Path) -> list[list[tuple[int, np.ndarray]]]:
    """Per frame ``[(track id, (K, 3) x y score)]``."""
    frames: list[list[tuple[int, np.ndarray]]] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        _, _, _, m = lines[i].split()
        animals = []
        for line in lines[i + 1 : i + 1 + int(m)]:
            fields = line.split()
            k = int(fields[6])
            animals.append((int(fields[0]), np.array(fields[7 : 7 + 3 * k], dtype=float).reshape(k, 3)))
        frames.append(animals)
        i += 1 + int(m)
    return frames


def main() -> int:
    example, ref_dir, out_csv = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    source = ref_dir / "multi_source.txt"
    if not source.is_file():
        print(f"skipping: {source} not found (no video for the reference)", file=sys.stderr)
        return 77
    artifact, video, frames = source.read_text().split("\n")[:3]
    subprocess.run(
        [example, artifact, video, "--backend", "opencv-dnn", "--max-frames", frames, "--out", out_csv], check=True
    )
    reference = read_reference(ref_dir / "multi_every_frame.txt")
    with open(out_csv, newline="") as f:
        rows = list(csv.reader(f))[1:]
    by_frame: dict[int, list[list[str]]] = {}
    for row in rows:
        by_frame.setdefault(int(row[0]), []).append(row)
    worst, animals = 0.0, 0
    for t, expected in enumerate(reference):
        got = by_frame.get(t, [])
        if len(got) != len(expected):
            print(f"frame {t}: {len(got)} animals in the CSV, {len(expected)} in Python", file=sys.stderr)
            return 1
        for row, (track_id, keypoints) in zip(got, expected, strict=True):
            if int(row[1]) != track_id:
                print(f"frame {t}: track {row[1]} in the CSV, {track_id} in Python", file=sys.stderr)
                return 1
            xy = np.array(row[7:], dtype=float).reshape(-1, 3)[:, :2]
            if not np.array_equal(np.isnan(xy), np.isnan(keypoints[:, :2])):
                print(f"frame {t}: found/not-found keypoints differ", file=sys.stderr)
                return 1
            worst = max(worst, float(np.nanmax(np.abs(xy - keypoints[:, :2]), initial=0.0)))
            animals += 1
    print(
        f"{len(reference)} frames, {animals} animals: tardis_edge_multi vs the Python runtime, same track ids, max "
        f"|error| {worst:.3g} px (threshold {FP32_THRESHOLD_PX})"
    )
    return 0 if worst <= FP32_THRESHOLD_PX and animals > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
