"""Shared by the ctest reference scripts: where the openfield frames are, and a box around a frame's labels."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

SKIP = 77  # ctest SKIP_RETURN_CODE


def labelled_frames_dir(shared: Path) -> Path | int:
    """``shared``'s openfield labelled frames, or the exit code: 77 (skip), or 1 under TARDIS_REQUIRE_SHARED=1."""
    frames = shared / "data" / "openfield-Pranav-2018-10-30" / "labeled-data" / "m4s1"
    if frames.exists():
        return frames
    if os.environ.get("TARDIS_REQUIRE_SHARED") == "1":
        print(f"FAILED: {frames} is missing but TARDIS_REQUIRE_SHARED=1", file=sys.stderr)
        return 1
    print(f"SKIPPED: {frames} not found", file=sys.stderr)
    return SKIP


def read_labels(frames: Path) -> pd.DataFrame:
    """DeepLabCut's CollectedData CSV (3 header rows: scorer, bodyparts, coords)."""
    return pd.read_csv(frames / "CollectedData_Pranav.csv", header=[0, 1, 2], index_col=0)


def labelled_box(labels: pd.DataFrame, frame: str) -> tuple[float, float, float, float]:
    """The ``(x, y, w, h)`` rectangle around a frame's labelled keypoints (the boxless DeepLabCut case), as float32
    values, the way a C caller passes them in ``tardis_box``, so both sides start from the same numbers."""
    row = labels.loc[[i for i in labels.index if str(i).endswith(f"{frame}.png")][0]]
    xy = row.to_numpy(dtype=np.float64).reshape(-1, 2)
    xy = xy[np.isfinite(xy).all(axis=1)]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    x, y, w, h = (float(np.float32(v)) for v in (lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]))
    return x, y, w, h
