"""Shared test fixtures: where the test data lives, and the rule that CI must not skip tests needing ../shared.

Test data has one layout in two places (README.md, "Tests"):
    tests/fixtures/   committed: a copy of ../shared/golden and the mmpose fixtures, and 10 frames of the openfield
                      project with their labels and the video's first 10 frames (tests/fixtures/README.md);
    ../shared/        the full data, beside the project or at $TARDIS_SHARED_DIR: the whole openfield project (the
                      fixed 95/21 split, the 2330-frame video) and the flies clip.
``data_path`` resolves one ``shared/``-relative path: the committed copy unless the test needs the full data.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SHARED_ENV = "TARDIS_SHARED_DIR"  # the one name for ../shared's place (TARDIS_SHARED was the old Python name)
if SHARED_ENV not in os.environ and "TARDIS_SHARED" in os.environ:
    warnings.warn(f"TARDIS_SHARED is deprecated: set {SHARED_ENV} instead", DeprecationWarning, stacklevel=1)
SHARED = Path(os.environ.get(SHARED_ENV) or os.environ.get("TARDIS_SHARED") or ROOT.parent / "shared")
OPENFIELD = "data/openfield-Pranav-2018-10-30"
# A tiny training recipe for tests of training.full's mechanics: the built-in data cut to 10 labelled frames, 64 px
# crops, a cheap backbone, no flip test (tests add epochs, stage-1 and split options as their subject needs).
TINY_RUN = [
    "--data.builtin_labelled=10",
    "--data.builtin_unlabelled=4",
    "--data.input_size=64",
    "--data.heatmap_size=16",
    "--model.backbone=repvgg_a0",
    "--keypoints.batch_size=4",
    "--keypoints.predict.flip_test=false",
    "--threads=1",
]


def data_path(relative: str, full: bool = False) -> Path:
    """``shared/<relative>`` as a test reads it: the committed copy under tests/fixtures/, or with ``full`` (or when
    there is no copy) ../shared's.

    A missing ../shared path skips the test; with TARDIS_REQUIRE_SHARED=1 (CI) it fails instead.
    """
    if not full and (FIXTURES / relative).exists():
        return FIXTURES / relative
    path = SHARED / relative
    if path.exists():
        return path
    if os.environ.get("TARDIS_REQUIRE_SHARED") == "1":
        pytest.fail(f"{path} is missing but TARDIS_REQUIRE_SHARED=1: put the shared data at {SHARED}")
    pytest.skip(f"needs the full data: {path} not found (place shared/ beside the project or set {SHARED_ENV})")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The full ../shared folder."""
    return data_path(".", full=True)


@pytest.fixture(scope="session")
def openfield_dir() -> Path:
    """The whole openfield project (116 labelled frames, the fixed 95/21 split, the 2330-frame video)."""
    return data_path(OPENFIELD, full=True)


@pytest.fixture(scope="session")
def openfield_subset_dir() -> Path:
    """The committed openfield subset: frames img0000-0003, 0025, 0050, 0095, 0100, 0105, 0115 and their labels
    (CSV and H5), and videos/m3v1mp4.mp4 cut to 10 frames."""
    return data_path(OPENFIELD)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """mmpose's COCO-format fixtures (AP-10K, Animal-Pose)."""
    return data_path("data/mmpose-fixtures")


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The reference vectors (golden.json, heatmap_codec.npz, dinov2_vit_tiny.*)."""
    return data_path("golden")


_DESELECTED: list[dict] = []


def pytest_deselected(items):
    for item in items:
        markers = [m for m in ("slow", "gpu", "trt") if item.get_closest_marker(m)]
        _DESELECTED.append({"test": item.nodeid, "markers": markers})


def pytest_sessionfinish(session):
    """Under ``make test`` (TARDIS_REPORT_DIR set): the tests the default markers left out, for test_summary.py."""
    report = os.environ.get("TARDIS_REPORT_DIR")
    if report:
        Path(report).mkdir(parents=True, exist_ok=True)
        (Path(report) / "pytest-deselected.json").write_text(json.dumps(_DESELECTED, indent=1))


@pytest.fixture(autouse=True, scope="session")
def _limit_threads():
    # CI has 2 cores; torch's default intra-op pool plus pytest would oversubscribe them.
    try:
        import torch

        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    except ImportError:
        pass
    yield


# A tiny multi-animal run on the flies clip (issue 12): pose + finder trained for one epoch each at 64 px, exported
# with FP32 and INT8 graphs. Its accuracy means nothing; it is the real pipeline end to end, for plumbing tests (the
# runtime's outputs, the C library's multi-animal API). Frames 0-38 (every 2nd) train, 1000-1005 test.
TINY_MULTI_RUN = [
    "--data.path={clip}",
    "--data.split.method=ranges",
    "--data.split.train=0:40:2",
    "--data.split.test=1000:1006",
    "--data.input_size=64",
    "--data.heatmap_size=16",
    "--model.backbone=repvgg_a0",
    "--skip_distill=true",
    "--keypoints.epochs=1",
    "--keypoints.batch_size=8",
    "--keypoints.predict.flip_test=false",
    "--finder.enabled=true",
    "--finder.epochs=1",
    "--finder.decode.input_size=64",
    "--threads=1",
]


@pytest.fixture(scope="session")
def tiny_multi_artifact(tmp_path_factory) -> Path:
    """The artifact folder (FP32 + INT8 pose and finder graphs) of ``TINY_MULTI_RUN``."""
    clip = data_path("data/sleap-flies-clip/clip.slp", full=True)
    run = tmp_path_factory.mktemp("tiny-multi") / "run"
    argv = [a.format(clip=clip) for a in TINY_MULTI_RUN] + [f"--out={run}"]
    from export.cli import main as export_main
    from training.full import main as train_main

    assert train_main(argv) == 0
    # A one-epoch model is too weak for verification's gates; this artifact is for plumbing (verification of the
    # finder graphs has its own test)
    assert export_main([str(run), "--int8", "--calib", str(clip), "--calib-size", "8", "--no-verify"]) == 0
    return run / "export"
