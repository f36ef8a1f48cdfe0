"""Multi-animal at the edge (issue 12): ``tardis-edge predict`` on the flies clip with a multi-animal artifact writes
SLEAP predictions with tracks (read back with sleap-io), DeepLabCut multi-animal files (read back with pandas) and
COCO results with track ids; frames without animals and a maximum below the animals present are handled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import data_path

from tardis_edge.runtime.cli import main as edge_main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _predict(artifact: Path, video: Path, out: Path, *extra: str) -> dict:
    assert edge_main(["predict", str(artifact), str(video), "--out", str(out), "--quiet", *extra]) == 0
    return json.loads((out / "summary.json").read_text())


def test_flies_predictions_read_back_in_sleap_io_pandas_and_coco(tiny_multi_artifact, tmp_path):
    import pandas as pd
    import sleap_io as sio

    clip = data_path("data/sleap-flies-clip/clip.mp4", full=True)
    summary = _predict(tiny_multi_artifact, clip, tmp_path, "--max-frames", "8", "--overlay")
    (item,) = summary["inputs"]
    assert item["frames_processed"] == 8 and item["animals"]["max_animals"] == 2
    labels = sio.load_slp(str(tmp_path / "clip.predictions.slp"))
    assert [t.name for t in labels.tracks] == ["individual1", "individual2"]
    assert len(labels.labeled_frames) == 8
    assert [n.name for n in labels.skeletons[0].nodes] == json.loads((tiny_multi_artifact / "model.json").read_text())[
        "keypoint_names"
    ]
    assert Path(labels.videos[0].filename).resolve() == clip.resolve()
    for lf in labels.labeled_frames:
        ids = [labels.tracks.index(i.track) for i in lf.instances if i.track is not None]
        assert len(ids) == len(set(ids)) <= 2  # one instance per identity and frame
    (h5,) = tmp_path.glob("clip*_el.h5")
    table = pd.read_hdf(h5)
    assert list(table.columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
    assert table.shape == (8, 2 * 13 * 3)
    assert sorted(set(table.columns.get_level_values("individuals"))) == ["individual1", "individual2"]
    likelihood = table.xs("likelihood", axis=1, level="coords").to_numpy()
    assert np.isfinite(likelihood).all() and (likelihood >= 0).all() and (likelihood <= 1).all()
    (coco,) = tmp_path.glob("clip*_coco.json")
    results = json.loads(coco.read_text())
    assert all(r["track_id"] in (0, 1) for r in results)
    frames_with_slp = {
        lf.frame_idx: len([i for i in lf.instances if i.track is not None]) for lf in labels.labeled_frames
    }
    for frame, count in frames_with_slp.items():
        assert sum(r["image_id"] == frame for r in results) <= count
    assert (tmp_path / "clip_overlay.mp4").is_file()


def test_a_maximum_below_the_animals_present_keeps_one_track(tiny_multi_artifact, tmp_path):
    import sleap_io as sio

    clip = data_path("data/sleap-flies-clip/clip.mp4", full=True)
    summary = _predict(tiny_multi_artifact, clip, tmp_path, "--max-frames", "4", "--max-animals", "1")
    (item,) = summary["inputs"]
    assert item["animals"]["max_animals"] == 1
    labels = sio.load_slp(str(tmp_path / "clip.predictions.slp"))
    assert len(labels.tracks) == 1
    assert all(len([i for i in lf.instances if i.track is not None]) <= 1 for lf in labels.labeled_frames)


def test_frames_without_animals_give_empty_rows_not_a_crash(tiny_multi_artifact, tmp_path):
    import cv2
    import pandas as pd

    video = tmp_path / "empty.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), 25, (256, 256))
    for _ in range(6):
        writer.write(np.full((256, 256, 3), 200, np.uint8))  # a bare arena: no fly
    writer.release()
    summary = _predict(tiny_multi_artifact, video, tmp_path / "out")
    (item,) = summary["inputs"]
    assert item["frames_processed"] == 6 and item["bad_frames"] == 0
    (h5,) = (tmp_path / "out").glob("empty*_el.h5")
    assert len(pd.read_hdf(h5)) == 6  # a row per frame, found or not


def test_finder_graphs_are_verified_against_the_pytorch_finder(tiny_multi_artifact):
    """Every exported finder graph runs in ONNX Runtime on held-out frames and is compared with the PyTorch finder on
    what the runtime does with it: the animals found per frame and their centres (``export.finder.verify_finder``)."""
    from export.finder import FINDER_FP32_MAX_OUTPUT_DEV, verify_finder
    from export.source import load_source
    from tardis_edge.artifact import ArtifactMetadata

    models = ArtifactMetadata.load(tiny_multi_artifact).finder["models"]
    report = verify_finder(load_source(tiny_multi_artifact.parent), tiny_multi_artifact, models)
    assert set(report["graphs"]) == set(models) >= {"fp32", "int8_cpu", "int8_qdq"}
    fp32 = report["graphs"]["fp32"]
    assert fp32["max_output_dev"] <= FINDER_FP32_MAX_OUTPUT_DEV and fp32["failure"] is None
    assert fp32["count_agreement"] == 1.0 and fp32["max_centre_dev_cells"] == 0.0
    assert fp32["animals_graph"] == fp32["animals_pytorch"]
