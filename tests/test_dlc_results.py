"""DeepLabCut result files and COCO results of the edge runtime (tardis_edge.runtime.writers), read here with pandas 3
(DeepLabCut's own functions read them in tests/dlc): names, the meta pickle, the values DeepLabCut's tools expect, the
multi-animal layout, --scorer / --values / --coco-gt, and JSON without NaN."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_runtime_cli import write_video
from test_runtime_support import build_artifact, result_file

from tardis_edge.runtime.cli import main
from tardis_edge.runtime.writers import (
    PANDAS_VERSION,
    CocoGroundTruth,
    DlcResultWriter,
    check_scorer,
    coco_results,
    default_scorer,
    dlc_result_stem,
    dlc_values,
    read_dlc_predictions,
)

NAN = np.nan


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return build_artifact(tmp_path_factory.mktemp("models") / "blobs")


def strict_json(path: Path):
    """The file parsed by a JSON reader that refuses NaN and Infinity (Python's own writes them by default)."""

    def refuse(name: str):
        raise ValueError(f"{path} holds {name}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_dlc_values_keep_the_last_found_position_at_likelihood_0():
    keypoints = np.array(
        [
            [[NAN, NAN], [1.0, 2.0]],  # keypoint 0 not found yet: its first found position (row 1), likelihood 0
            [[5.0, 6.0], [3.0, 4.0]],
            [[7.0, 8.0], [9.0, 9.0]],  # keypoint 1: score 0, not found: keeps (3, 4)
            [[NAN, NAN], [NAN, NAN]],  # unreadable frame: both keep their last found position
        ]
    )
    scores = np.array([[0.4, 1.3], [0.9, 0.5], [0.8, 0.0], [NAN, NAN]])
    xy, likelihood = dlc_values(keypoints, scores)
    np.testing.assert_array_equal(xy, [[[5, 6], [1, 2]], [[5, 6], [3, 4]], [[7, 8], [3, 4]], [[7, 8], [3, 4]]])
    np.testing.assert_array_equal(likelihood, [[0, 1], [0.9, 0.5], [0.8, 0], [0, 0]])
    never = dlc_values(np.full((2, 1, 2), NAN), np.zeros((2, 1)))
    assert (never[0] == 0).all() and (never[1] == 0).all()


def test_files_have_deeplabcut_names_meta_pickle_and_read_in_pandas_3(tmp_path):
    import tables

    writer = DlcResultWriter(tmp_path, "clip", "DLC_test", ["snout", "tail"], fps=30.0, batch_size=4, model={"a": 1})
    writer.add(0, 0, np.array([[10.0, 20.0], [30.0, 40.0]]), np.array([0.9, -0.2]), image_wh=(640, 480))
    writer.add(1, 1, None, None)
    writer.flush()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clipDLC_test.csv", "clipDLC_test.h5", "clipDLC_test_coco.json", "clipDLC_test_meta.pickle"
    ]  # fmt: skip
    with tables.open_file(str(tmp_path / "clipDLC_test.h5")) as h5:  # what pandas <= 3.0 needs to read the table
        assert h5.get_node("/df_with_missing")._v_attrs.pandas_version == PANDAS_VERSION
    frame = pd.read_hdf(tmp_path / "clipDLC_test.h5")
    assert list(frame.columns.names) == ["scorer", "bodyparts", "coords"] and frame.shape == (2, 6)
    # tail (score <= 0) and the unreadable frame are not found; tail is never found: 0, 0 at likelihood 0
    np.testing.assert_array_equal(frame.to_numpy(), [[10, 20, 0.9, 0, 0, 0], [10, 20, 0, 0, 0, 0]])
    meta = pickle.loads((tmp_path / "clipDLC_test_meta.pickle").read_bytes())["data"]
    assert meta["Scorer"] == "DLC_test" and meta["fps"] == 30.0 and meta["batch_size"] == 4 and meta["nframes"] == 2
    assert meta["frame_dimensions"] == (640, 480) and meta["cropping"] is False
    assert meta["cropping_parameters"] == [0, 640, 0, 480] and meta["bodyparts"] == ["snout", "tail"]
    assert meta["tardis-edge"] == {"a": 1} and meta["run_duration"] >= 0


def test_raw_values_keep_nan_and_the_score(tmp_path):
    writer = DlcResultWriter(tmp_path, "clip", "DLC_test", ["a"], values="raw")
    writer.add(0, 0, np.array([[NAN, NAN]]), np.array([-0.25]))
    writer.flush()
    back = read_dlc_predictions(tmp_path / "clipDLC_test.csv")
    assert np.isnan(back.keypoints).all() and back.likelihood[0, 0] == -0.25


def test_multi_animal_layout(tmp_path):
    writer = DlcResultWriter(tmp_path, "clip", "DLC_m", ["head", "tail"], individuals=["ind1", "ind2"])
    keypoints = np.arange(8, dtype=float).reshape(2, 2, 2)
    writer.add(0, 5, keypoints, np.array([[0.5, 1.5], [0.0, 0.7]]))
    writer.flush()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clipDLC_m_el.csv", "clipDLC_m_el.h5", "clipDLC_m_el_coco.json", "clipDLC_m_meta.pickle"
    ]  # fmt: skip
    frame = pd.read_hdf(tmp_path / "clipDLC_m_el.h5", key="df_with_missing")
    assert list(frame.columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
    assert frame.loc[0, ("DLC_m", "ind1", "tail", "likelihood")] == 1.0  # clipped to [0, 1]
    assert np.isnan(frame.loc[0, ("DLC_m", "ind2", "head")]).all()  # not found: NaN, as DeepLabCut's tracked files
    coco = json.loads((tmp_path / "clipDLC_m_el_coco.json").read_text())
    assert [r["image_id"] for r in coco] == [5, 5] and coco[1]["keypoints"][:3] == [0, 0, 0]
    assert dlc_result_stem("v", "DLC_m", "box") == "vDLC_m_bx"
    with pytest.raises(ValueError, match="unknown DeepLabCut track method 'kalman'"):
        dlc_result_stem("v", "DLC_m", "kalman")


def test_scorer_names(tmp_path):
    assert check_scorer("DLC_Resnet50_openfieldOct30shuffle1_snapshot_200")
    for bad in ("tardis-edge_model", "DLC_a/b", " DLC_x"):
        with pytest.raises(ValueError, match="DeepLabCut finds results named <video><scorer>.h5"):
            check_scorer(bad)
    folder = tmp_path / "openfield_export"
    folder.mkdir()
    assert default_scorer(folder) == default_scorer(folder / "model.json") == "DLC_openfield_export"
    assert default_scorer(tmp_path / "run" / "model.pt") == "DLC_model"


def test_coco_results_leave_not_found_out_of_the_box():
    keypoints = np.array([[[10.0, 20.0], [NAN, NAN], [30.0, 50.0]], [[NAN, NAN], [NAN, NAN], [NAN, NAN]]])
    scores = np.array([[0.5, -1.0, 1.2], [0.0, 0.0, 0.0]])
    [entry] = coco_results([7, 8], keypoints, scores, category_id=3)  # the second instance: nothing found
    assert entry["keypoints"] == [10, 20, 0.5, 0, 0, 0, 30, 50, 1]
    assert entry["bbox"] == [10, 20, 20, 30] and entry["area"] == 600
    assert entry["score"] == pytest.approx((0.5 + 0 + 1) / 3) and entry["category_id"] == 3


def test_coco_ground_truth_ids_by_file_name(tmp_path):
    names = ["snout", "tail"]
    gt = {
        "images": [
            {"id": 11, "file_name": "a/img1.png"},
            {"id": 12, "file_name": "b/img1.png"},
            {"id": 13, "file_name": "img2.png"},
        ],
        "categories": [{"id": 4, "name": "mouse", "keypoints": names}, {"id": 5, "name": "fly", "keypoints": ["x"]}],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    truth = CocoGroundTruth.read(path, names)
    assert truth.category_id == 4
    assert truth.image_id(tmp_path / "a" / "img1.png") == 11 and truth.image_id(tmp_path / "x" / "img2.png") == 13
    assert truth.image_id(tmp_path / "c" / "img3.png") is None
    gt["images"].append({"id": 14, "file_name": "img1.png"})
    path.write_text(json.dumps(gt))
    assert CocoGroundTruth.read(path, names).image_id(tmp_path / "b" / "img1.png") == 12  # the longest name wins
    gt["images"][:2] = [{"id": 11, "file_name": "img9.png"}, {"id": 12, "file_name": "img9.png"}]
    path.write_text(json.dumps(gt))
    with pytest.raises(ValueError, match="images 11 and 12 have the same file_name 'img9.png'"):
        CocoGroundTruth.read(path, names)
    with pytest.raises(ValueError, match="no single category with this model's keypoints \\['head'\\]"):
        CocoGroundTruth.read(path, ["head"])


def test_predict_outputs(tmp_path, artifact, capsys):
    """A video with an unreadable frame: DeepLabCut values (no NaN), strict JSON everywhere; --scorer and --values
    raw; --coco-gt refused for a video, a bad scorer refused before anything runs."""
    from test_runtime_cli import corrupt_frames

    video = write_video(tmp_path / "clip.avi", 12)
    corrupt_frames(video, [4])
    out = tmp_path / "out"
    assert main(["predict", str(artifact), str(video), "--out", str(out), "-q"]) == 0
    result = read_dlc_predictions(result_file(out, "clip", ".h5"))
    assert np.isfinite(result.keypoints).all() and result.likelihood[4].max() == 0
    assert ((result.likelihood >= 0) & (result.likelihood <= 1)).all()
    summary = strict_json(out / "summary.json")
    assert summary["scorer"] == "DLC_blobs" and summary["inputs"][0]["bad_frame_indices"] == [4]
    assert len(strict_json(result_file(out, "clip", "_coco.json"))) == 11

    raw = tmp_path / "raw"
    argv = ["predict", str(artifact), str(video), "--out", str(raw), "--scorer", "DLC_mine", "--values", "raw", "-q"]
    assert main(argv) == 0
    assert np.isnan(read_dlc_predictions(raw / "clipDLC_mine.csv").keypoints[4]).all()
    strict_json(raw / "summary.json")

    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": [], "categories": [{"id": 1, "name": "a"}]}))
    capsys.readouterr()
    assert main(["predict", str(artifact), str(video), "--out", str(tmp_path / "o"), "--coco-gt", str(gt)]) == 2
    assert "--coco-gt matches image files by name, and clip is a video" in capsys.readouterr().err
    assert main(["predict", str(artifact), str(video), "--out", str(tmp_path / "o"), "--scorer", "mine"]) == 2
    assert "scorer 'mine': DeepLabCut finds results named <video><scorer>.h5" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
