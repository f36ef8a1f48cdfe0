"""``tardis_edge.runtime.DLCLive``, DLC-live's interface, run where torch cannot be imported: a processor with
DLC-live's ``Processor.process(pose, **kwargs)`` interface on BGR frames of the openfield data, against the ``Runner``.

The artifacts are built here (that needs torch); DLCLive then runs in a child interpreter that refuses to import torch,
as in a runtime-only environment. ``RUNTIME_PYTHON=/path/to/venv/bin/python`` runs the child in such an environment
instead (``pip install -e '.[runtime]'`` there, no torch), as benchmarks/cpu_results.sh does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_runtime_support import blob_frame, build_artifact

from tardis_edge.runtime import DLCLive, FollowConfig, open_runner
from tardis_edge.runtime.writers import dlc_values

ROOT = Path(__file__).resolve().parents[1]
OPENFIELD_NAMES = ["snout", "leftear", "rightear", "tailbase"]
BLOB_WH = (120, 90)
BLOBS = [(40.3, 35.6), (70.8, 52.2)]  # red, green keypoint
SHIFT = 1000.0  # the test processor moves x by this, so the pose get_pose returns is visibly the processor's

# The child: DLCLive on BGR frames read by OpenCV, a DLC-live style processor, torch unimportable.
CHILD = r"""
import importlib.abc, json, sys


class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError(f"{name} is not installed here (the test's runtime-only environment)")


sys.meta_path.insert(0, NoTorch())

import cv2
import numpy as np

from tardis_edge.runtime import DLCLive


class RecordingProcessor:
    # DLC-live's Processor interface: process(pose, **kwargs) -> pose; save(file) -> int
    def __init__(self):
        self.calls = []

    def process(self, pose, **kwargs):
        self.calls.append({"pose": pose.tolist(), "kwargs": kwargs})
        moved = pose.copy()
        moved[:, 0] += SHIFT
        return moved

    def save(self, file=""):
        return 0


job = json.loads(sys.argv[1])
SHIFT = job["shift"]
out = {}
processor = RecordingProcessor()
live = DLCLive(job["openfield_artifact"], processor=processor)  # BGR frames: DLC-live's default
frames = [cv2.imread(f) for f in job["openfield_frames"]]
poses = [live.init_inference(frames[0], frame_time=0.0)]
poses += [live.get_pose(frame, frame_time=float(t)) for t, frame in enumerate(frames[1:], start=1)]
out["openfield"] = [p.tolist() for p in poses]
out["calls"] = processor.calls
live.close()

with DLCLive(job["openfield_artifact"], dynamic=(True, 0.3, 10)) as follow:
    out["follow"] = [follow.get_pose(frame).tolist() for frame in frames]

blobs = cv2.imread(job["blob_frame"])
for name, options in job["blob_options"].items():
    with DLCLive(job["blob_artifact"], **options) as live:
        out[name] = live.get_pose(blobs).tolist()
with DLCLive(job["blob_artifact"]) as live:
    out["sequence"] = [live.get_pose(cv2.imread(f)).tolist() for f in job["blob_sequence"]]
out["torch_loaded"] = sorted(m for m in sys.modules if m.split(".")[0] == "torch")
json.dump(out, open(job["out"], "w"))
"""


@pytest.fixture(scope="module")
def child_results(tmp_path_factory, openfield_subset_dir):
    tmp = tmp_path_factory.mktemp("dlclive")
    openfield_artifact = build_artifact(tmp / "openfield", names=OPENFIELD_NAMES, flip_pairs=[[1, 2]])
    blob_artifact = build_artifact(tmp / "blobs")
    blob, red_only = tmp / "blobs.png", tmp / "red_only.png"
    cv2.imwrite(str(blob), np.ascontiguousarray(blob_frame(BLOB_WH, BLOBS)[..., ::-1]))  # stored BGR, as OpenCV does
    cv2.imwrite(str(red_only), np.ascontiguousarray(blob_frame(BLOB_WH, BLOBS[:1])[..., ::-1]))
    frames = sorted((openfield_subset_dir / "labeled-data" / "m4s1").glob("img*.png"))
    job = {
        "openfield_artifact": str(openfield_artifact),
        "openfield_frames": [str(f) for f in frames],
        "blob_artifact": str(blob_artifact),
        "blob_frame": str(blob),
        "blob_sequence": [str(red_only), str(blob), str(red_only)],
        "blob_options": {
            "bgr": {},
            "frames_said_rgb": {"convert2rgb": False},
            "cropped": {"cropping": [20, 100, 10, 80]},
            "resized": {"resize": 0.5},
        },
        "out": str(tmp / "out.json"),
        "shift": SHIFT,
    }
    python = os.environ.get("RUNTIME_PYTHON") or sys.executable
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [python, "-c", CHILD, json.dumps(job)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(Path(job["out"]).read_text())
    return results, openfield_artifact, frames


def expected_poses(artifact: Path, frames: list[Path], follow: FollowConfig | None = None) -> np.ndarray:
    """The Runner's keypoints on the RGB frames, one frame per call, in DeepLabCut's values: ``(N, K, 3)``."""
    with open_runner(artifact, batch_size=1, follow=follow) as runner:
        follower = runner.new_follower() if follow is not None else None
        results = []
        for f in frames:
            rgb = cv2.imread(str(f))[..., ::-1]
            results.append(runner([rgb], color="RGB") if follower is None else runner.track([rgb], follower))
    keypoints = np.concatenate([r.keypoints for r in results])
    scores = np.concatenate([r.scores for r in results])
    xy, likelihood = dlc_values(keypoints, scores)
    return np.concatenate([xy, likelihood[..., None]], axis=-1)


def test_child_never_imported_torch(child_results):
    results, _, _ = child_results
    assert results["torch_loaded"] == []


def test_pose_and_processor_on_bgr_openfield_frames(child_results):
    """get_pose on BGR frames = the Runner on the same frames in RGB; the processor sees every pose with the
    keyword arguments of get_pose, and what it returns is what get_pose returns."""
    results, artifact, frames = child_results
    expected = expected_poses(artifact, frames)  # (N, K, 3)
    assert (expected[..., 2] > 0).all(), "every keypoint found: the pose is the Runner's, likelihood clipped to [0, 1]"
    seen = np.array([c["pose"] for c in results["calls"]])
    assert seen.shape == (len(frames), len(OPENFIELD_NAMES), 3)
    assert [c["kwargs"] for c in results["calls"]] == [{"frame_time": float(t)} for t in range(len(frames))]
    np.testing.assert_allclose(seen, expected, atol=1e-9)
    returned = np.array(results["openfield"])
    np.testing.assert_allclose(returned[..., 0] - SHIFT, expected[..., 0], atol=1e-9)
    np.testing.assert_allclose(returned[..., 1:], expected[..., 1:], atol=1e-9)
    assert np.isfinite(returned).all() and ((returned[..., 2] >= 0) & (returned[..., 2] <= 1)).all()


def test_dynamic_follows_like_the_runner(child_results):
    results, artifact, frames = child_results
    expected = expected_poses(artifact, frames, FollowConfig(min_score=0.3))
    np.testing.assert_allclose(np.array(results["follow"]), expected, atol=1e-9)


def test_bgr_default_cropping_and_resize_on_coloured_blobs(child_results):
    """The pooling model reads keypoint k from colour channel k, so the colour order decides what is found: BGR frames
    (the default) put the red and green keypoints on their blobs; the same frames declared RGB leave red unfound.
    Cropping and resizing are undone: the pose is in the frame's pixels."""
    results, _, _ = child_results
    truth = np.array(BLOBS)
    bgr = np.array(results["bgr"])
    np.testing.assert_allclose(bgr[:, :2], truth, atol=1.5)
    assert (bgr[:, 2] > 0.9).all()
    assert np.array(results["frames_said_rgb"])[0, 2] == 0.0  # red read from the blue channel: not found
    np.testing.assert_allclose(np.array(results["cropped"])[:, :2], truth, atol=1.5)
    np.testing.assert_allclose(np.array(results["resized"])[:, :2], truth, atol=2.5)  # half the pixels


def test_keypoint_not_found_keeps_its_last_position(child_results):
    """Green is absent, present, absent: likelihood 0 and a finite position where it is not found (the crop's centre
    before it was ever found, then its last found position), so processors never see NaN."""
    results, _, _ = child_results
    first, both, again = (np.array(p) for p in results["sequence"])
    assert first[1, 2] == 0 and np.isfinite(first[1, :2]).all()
    np.testing.assert_allclose(both[1, :2], BLOBS[1], atol=1.5)
    assert both[1, 2] > 0.9
    assert again[1, 2] == 0 and (again[1, :2] == both[1, :2]).all()
    np.testing.assert_allclose(again[0, :2], BLOBS[0], atol=1.5)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.json not found"):
        DLCLive(tmp_path)
    artifact = build_artifact(tmp_path / "a")
    with pytest.raises(ValueError, match="unknown model_type 'tflite'; choose one of onnx, base, tensorrt"):
        DLCLive(artifact, model_type="tflite")
    with pytest.raises(TypeError, match="processor object has no process"):
        DLCLive(artifact, processor=object())
    with pytest.raises(ValueError, match=r"cropping must be \[x1, x2, y1, y2\]"):
        DLCLive(artifact, cropping=[50, 10, 0, 20])
    with DLCLive(artifact, cropping=[0, 500, 0, 20]) as live:
        with pytest.raises(ValueError, match=r"cropping \[0, 500, 0, 20\] reaches beyond the 120x90 frame"):
            live.get_pose(np.zeros((90, 120, 3), np.uint8))
        with pytest.raises(ValueError, match="get_pose needs a frame"):
            live.get_pose(None)
