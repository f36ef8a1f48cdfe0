"""ctest: the C++ example program (OpenCV DNN backend, C++ decode) and the Python runtime
(``tardis_edge.runtime.open_runner(...)(frames)``, ONNX Runtime) agree on the first frames of a video within the
FP32 export threshold (0.05 px).

Both run each frame independently: a whole-frame pass, then a pass on the box around its confident keypoints.

    python compare_example_runtime.py EXAMPLE ARTIFACT VIDEO FRAMES OUT_CSV
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

FP32_THRESHOLD_PX = 0.05  # export's FP32 max deviation threshold


def main() -> int:
    example, artifact, video, frames, out_csv = sys.argv[1:6]
    n = int(frames)
    if not Path(video).is_file():
        if os.environ.get("TARDIS_REQUIRE_SHARED") == "1":
            print(f"{video} is missing but TARDIS_REQUIRE_SHARED=1", file=sys.stderr)
            return 1
        print(f"skipping: {video} not found", file=sys.stderr)
        return 77
    subprocess.run([example, artifact, video, "--max-frames", str(n), "--out", out_csv], check=True)
    table = np.genfromtxt(out_csv, delimiter=",", skip_header=1)
    cpp = table[:, 1:].reshape(n, -1, 3)  # (N, K, [x, y, score])

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tardis_edge.runtime import open_runner

    capture = cv2.VideoCapture(video)
    images = []
    for _ in range(n):
        ok, frame = capture.read()
        if not ok:
            print(f"{video}: could not read {n} frames", file=sys.stderr)
            return 1
        images.append(frame)
    with open_runner(artifact, decode="numpy") as runner:
        result = runner(images, color="BGR")
    found_cpp = np.isfinite(cpp[..., :2]).all(-1)
    found_py = np.isfinite(result.keypoints).all(-1)
    if not np.array_equal(found_cpp, found_py):
        print(f"found/not-found differs: C++ {found_cpp.sum()} vs Python {found_py.sum()} keypoints", file=sys.stderr)
        return 1
    err = np.abs(cpp[..., :2] - result.keypoints)[found_py]
    score_err = np.abs(cpp[..., 2] - result.scores)[found_py]
    worst = float(err.max()) if err.size else 0.0
    worst_score = float(score_err.max()) if score_err.size else 0.0
    print(
        f"{n} frames, {int(found_py.sum())} keypoints found: C++ example vs Python runtime max |error| {worst:.3g} px "
        f"(threshold {FP32_THRESHOLD_PX}), max |score error| {worst_score:.3g}"
    )
    return 0 if worst <= FP32_THRESHOLD_PX else 1


if __name__ == "__main__":
    sys.exit(main())
