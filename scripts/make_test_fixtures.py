"""Write tests/fixtures/ from ../shared: the committed subset a fresh clone runs its tests on.

    python scripts/make_test_fixtures.py [--shared ../shared]

The folder keeps ../shared's layout, so any test (or ctest, via TARDIS_TEST_DATA_DIR) reads either one:
- golden/: copied whole;
- data/mmpose-fixtures/: copied whole;
- data/openfield-Pranav-2018-10-30/: ``config.yaml``, the frames in ``OPENFIELD_FRAMES`` with their label rows (CSV and
  H5, as DeepLabCut writes them), and ``videos/m3v1mp4.mp4`` cut to its first ``VIDEO_FRAMES`` frames.

The frames are stored as 8-bit grey PNGs: the openfield frames are grey saved as RGB, and OpenCV reads the grey file
back to the same RGB pixels at a third of the size. The folder must stay under 12 MB (../shared/README.md).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OPENFIELD = Path("data/openfield-Pranav-2018-10-30")
LABELS = "CollectedData_Pranav"
# img0000-img0003: the tests' first frames; img0025/img0050: spread over the recording; img0095-img0115: from the
# openfield test split. File order keeps the real split: the first 6 frames train, the last 4 test.
OPENFIELD_FRAMES = (0, 1, 2, 3, 25, 50, 95, 100, 105, 115)
VIDEO_FRAMES = 10
MAX_BYTES = 12_000_000


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True, copy_function=shutil.copyfile)  # read-only sources: no mode copy


def write_openfield_subset(shared: Path, out: Path) -> None:
    src, dst = shared / OPENFIELD, out / OPENFIELD
    frames_src, frames_dst = src / "labeled-data/m4s1", dst / "labeled-data/m4s1"
    frames_dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "config.yaml", dst / "config.yaml")
    names = [f"img{i:04d}.png" for i in OPENFIELD_FRAMES]
    for name in names:
        bgr = cv2.imread(str(frames_src / name), cv2.IMREAD_COLOR)
        grey = bgr[..., 0]
        if not (np.array_equal(grey, bgr[..., 1]) and np.array_equal(grey, bgr[..., 2])):
            raise ValueError(f"{frames_src / name} is not grey: store it as RGB instead")
        cv2.imwrite(str(frames_dst / name), grey, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    rows = [f"labeled-data/m4s1/{name}" for name in names]
    csv_lines = (frames_src / f"{LABELS}.csv").read_text().splitlines(keepends=True)
    kept = csv_lines[:3] + [line for line in csv_lines[3:] if line.split(",", 1)[0] in rows]
    if len(kept) != 3 + len(rows):
        raise ValueError(f"{frames_src / LABELS}.csv lacks some of {rows}")
    (frames_dst / f"{LABELS}.csv").write_text("".join(kept))
    table = pd.read_hdf(frames_src / f"{LABELS}.h5", "df_with_missing").loc[rows]
    h5 = frames_dst / f"{LABELS}.h5"
    h5.unlink(missing_ok=True)
    table.to_hdf(h5, key="df_with_missing", format="table", mode="w")

    video_dst = dst / "videos/m3v1mp4.mp4"
    video_dst.parent.mkdir(parents=True, exist_ok=True)
    capture = cv2.VideoCapture(str(src / "videos/m3v1mp4.mp4"))
    fps = capture.get(cv2.CAP_PROP_FPS)
    writer = None
    for _ in range(VIDEO_FRAMES):
        ok, frame = capture.read()
        if not ok:
            raise ValueError(f"{src / 'videos/m3v1mp4.mp4'} has fewer than {VIDEO_FRAMES} frames")
        if writer is None:
            h, w = frame.shape[:2]
            writer = cv2.VideoWriter(str(video_dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        writer.write(frame)
    capture.release()
    writer.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="../shared (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "tests/fixtures", help="default: %(default)s")
    args = parser.parse_args()
    copy_tree(args.shared / "golden", args.out / "golden")
    copy_tree(args.shared / "data/mmpose-fixtures", args.out / "data/mmpose-fixtures")
    write_openfield_subset(args.shared, args.out)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{args.out}: {total / 1e6:.2f} MB")
    if total > MAX_BYTES:
        raise SystemExit(f"{args.out} holds {total / 1e6:.2f} MB, over the {MAX_BYTES / 1e6:.0f} MB limit")


if __name__ == "__main__":
    main()
