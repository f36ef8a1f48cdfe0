"""COCO keypoint results of ``tardis-edge predict --coco-gt``: pycocotools' ``COCO.loadRes`` + ``COCOeval`` on the
results file give the AP that ``tardis-edge eval`` reports on the same ground truth.

Two ground truths, written with image ids and a category id that are not 1..N and 1 (results with frame-order ids or
category 1 would fail ``loadRes`` or match nothing):

* the openfield test split (21 frames) converted to COCO (``tardis_edge.metrics.coco_ground_truth``), with the
  trained openfield artifact (``runs/openfield/export``, or ``$TARDIS_OPENFIELD_ARTIFACT``; tardis-export of
  ``training.full --config benchmarks/configs/openfield.yaml``). The artifact is not in the repository, so this test
  runs where one was trained and skips elsewhere;
* synthetic frames with known keypoints (the pooling artifact of test_runtime_support, which finds coloured blobs) and
  a hand-written COCO file whose labels sit 0-6.6 px off the blobs, one keypoint and one animal missing from the
  frames: the same comparison everywhere, with an AP strictly between 0 and 1.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT
from openfield_split import openfield_split
from test_runtime_support import NAMES, blob_frame, build_artifact, result_file

from tardis_edge.artifact import ArtifactMetadata
from tardis_edge.data import load_dataset
from tardis_edge.metrics import coco_ground_truth
from tardis_edge.runtime.cli import main

STATS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")  # COCOeval.stats, keypoints
FRAME_WH = (96, 72)


def cocoeval(gt_path: Path, results: list[dict], sigmas: list[float]) -> dict[str, float]:
    """COCO's own evaluation of ``results`` (pycocotools, nothing of ours)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), "keypoints")
        evaluator.params.kpt_oks_sigmas = np.asarray(sigmas)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(STATS, map(float, evaluator.stats), strict=True))


def predict_and_eval(artifact: Path, frames: Path, gt_path: Path, eval_data: Path, split: str, tmp_path: Path):
    """``predict --coco-gt`` on the frames, ``eval`` on the same ground truth, and COCOeval on the predict results with
    the OKS sigmas ``eval`` used."""
    out = tmp_path / "out"
    assert main(["predict", str(artifact), str(frames), "--out", str(out), "--coco-gt", str(gt_path), "-q"]) == 0
    results = json.loads(result_file(out, frames.name, "_coco.json").read_text())
    summary = json.loads((out / "summary.json").read_text())["inputs"][0]
    metrics = tmp_path / "metrics.json"
    assert main(["eval", str(artifact), "--data", str(eval_data), "--split", split, "--out", str(metrics)]) == 0
    ours = json.loads(metrics.read_text())
    return results, summary, cocoeval(gt_path, results, ours["oks_sigmas"]), ours


def test_openfield_cocoeval_gives_our_ap(openfield_dir, tmp_path, capsys):
    artifact = Path(os.environ.get("TARDIS_OPENFIELD_ARTIFACT", ROOT / "runs" / "openfield" / "export"))
    if not (artifact / "model.json").is_file():
        pytest.skip(f"needs a trained openfield artifact at {artifact} (set TARDIS_OPENFIELD_ARTIFACT)")
    dataset = load_dataset(openfield_dir)
    test = openfield_split(dataset)[1]
    names = [Path(s.image_path).relative_to(openfield_dir).as_posix() for s in test.samples]
    ids = [5000 + int(Path(n).stem.removeprefix("img")) for n in names]
    gt = coco_ground_truth(test.samples, dataset.schema, names, ids, category_id=7, category_name="mouse")
    gt_path = tmp_path / "openfield_test.json"
    gt_path.write_text(json.dumps(gt))

    frames = openfield_dir / "labeled-data" / "m4s1"  # all 116 frames: the 95 training frames are not in the GT
    results, summary, theirs, ours = predict_and_eval(artifact, frames, gt_path, openfield_dir, "test", tmp_path)
    assert len(summary["images_not_in_coco_gt"]) == 95 and "95 images not in --coco-gt" in capsys.readouterr().out
    assert sorted(r["image_id"] for r in results) == sorted(ids) and {r["category_id"] for r in results} == {7}
    assert all(0 <= r["score"] <= 1 for r in results)
    assert ours["num_samples"] == 21
    assert ArtifactMetadata.load(artifact).oks_sigmas in (None, ours["oks_sigmas"])  # None: exported before they were
    assert 0 < ours["AP"] < 1
    for name in STATS:
        assert theirs[name] == pytest.approx(ours[name], abs=1e-6), name


def test_synthetic_cocoeval_gives_our_ap(tmp_path, capsys):
    artifact = build_artifact(tmp_path / "artifact")
    frames = tmp_path / "frames"
    frames.mkdir()
    images, annotations = [], []
    for i in range(12):
        centres = [(20.0 + 4.1 * i, 22.0 + 1.7 * i), (35.0 + 3.3 * i, 40.0 - 0.9 * i)]
        drawn = centres if i != 5 else centres[:1]  # frame 5: green not in the image; frame 9: no animal at all
        cv2.imwrite(str(frames / f"f{i:02d}.png"), blob_frame(FRAME_WH, drawn if i != 9 else None)[..., ::-1])
        offset = 0.6 * i  # labels off the blobs by 0 .. 6.6 px: OKS from 1 down to ~0.3
        keypoints = [v for x, y in centres for v in (x + offset, y, 2)]
        images.append({"id": 100 + 3 * i, "file_name": f"frames/f{i:02d}.png", "width": 96, "height": 72})
        annotations.append(
            {"id": i + 1, "image_id": 100 + 3 * i, "category_id": 3, "keypoints": keypoints, "num_keypoints": 2,
             "area": 400.0, "bbox": [10.0, 10.0, 20.0, 20.0], "iscrowd": 0}
        )  # fmt: skip
    category = {"id": 3, "name": "blob", "supercategory": "animal", "keypoints": NAMES, "skeleton": [[1, 2]]}
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [category]}))

    results, summary, theirs, ours = predict_and_eval(artifact, frames, gt_path, gt_path, "all", tmp_path)
    by_id = {r["image_id"]: r for r in results}
    assert sorted(by_id) == [100 + 3 * i for i in range(12) if i != 9], "no entry for the frame without an animal"
    assert {r["category_id"] for r in results} == {3} and summary["images_not_in_coco_gt"] == []
    missing_green = by_id[115]
    assert missing_green["keypoints"][3:] == [0, 0, 0], "a keypoint not found is (0, 0, 0) ..."
    x, y = missing_green["keypoints"][:2]
    assert missing_green["bbox"] == [x, y, 0, 0] and missing_green["area"] == 0, "... and left out of the box"
    assert all(
        0 <= r["score"] <= 1 and 0 <= min(r["keypoints"][2::3]) <= max(r["keypoints"][2::3]) <= 1 for r in results
    )
    assert 0.1 < ours["AP"] < 0.9, ours["AP"]
    for name in STATS:
        assert theirs[name] == pytest.approx(ours[name], abs=1e-6), name
