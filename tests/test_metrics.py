"""Metrics: OKS AP through COCOeval on the AP-10K fixture, PCK and pixel errors on hand-computable cases."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tardis_edge.data import KeypointSchema, Sample, load_coco_keypoints, load_dlc_project
from tardis_edge.metrics import evaluate_predictions, object_area


@pytest.fixture(scope="module")
def ap10k(fixtures_dir: Path):
    return load_coco_keypoints(fixtures_dir / "ap10k/test_ap10k.json")


def ground_truth_as_predictions(dataset) -> tuple[np.ndarray, np.ndarray]:
    keypoints = np.stack([np.nan_to_num(s.keypoints_xy, nan=-1.0) for s in dataset])  # (N, K, 2)
    return keypoints, np.stack([(s.visible > 0).astype(np.float32) for s in dataset])


def hand_oks(sample: Sample, predicted: np.ndarray, sigmas) -> float:
    """COCO's object keypoint similarity, written out from its definition."""
    labelled = sample.visible > 0
    squared = ((predicted - sample.keypoints_xy) ** 2).sum(axis=1)[labelled]
    variance = (2 * np.asarray(sigmas)[labelled]) ** 2
    return float(np.exp(-squared / variance / sample.extra["area"] / 2).mean())


def hand_ap_one_animal_per_image(oks: list[float], scores: list[float]) -> float:
    """COCO AP when every image holds one animal and one detection: per OKS threshold, rank detections by
    score, take the precision/recall curve, interpolate precision on COCO's 101 recall points, average."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    recall_points = np.linspace(0, 1, 101)
    per_threshold = []
    for t in np.linspace(0.5, 0.95, 10):
        hits = np.asarray(oks)[order] >= t - 1e-12
        recall = np.cumsum(hits) / len(oks)
        precision = np.cumsum(hits) / np.arange(1, len(oks) + 1)
        best = [precision[recall >= r].max() if (recall >= r).any() else 0.0 for r in recall_points]
        per_threshold.append(np.mean(best))
    return float(np.mean(per_threshold))


def test_ground_truth_scores_ap_one(ap10k):
    keypoints, scores = ground_truth_as_predictions(ap10k)
    result = evaluate_predictions(ap10k, keypoints, scores)
    assert result["AP"] == 1.0 and result["AR"] == 1.0 and result["AP50"] == 1.0
    assert result["oks_sigmas_source"] == "schema" and result["oks_sigmas"][0] == 0.025
    assert result["num_samples"] == 2 and result["num_labelled_keypoints"] == 32
    assert result["pck_normalizer"] == "bbox" and result["PCK@0.05"] == 1.0 and result["rmse_px"] == 0.0
    assert result["per_keypoint"]["right_eye"]["count"] == 0  # unlabelled in both annotations
    assert math.isnan(result["per_keypoint"]["right_eye"]["mean_px"])
    # torch tensors are accepted as they come out of the decoder
    assert evaluate_predictions(ap10k, torch.from_numpy(keypoints), torch.from_numpy(scores))["AP"] == 1.0


# OKS of the two noisy animals: 0.917 (score 0.9) and 0.654 (score 0.6). Both pass the OKS thresholds 0.50-0.65
# (AP 1 at 4 thresholds), only the first passes 0.70-0.90 (precision 1 up to recall 0.5: 51/101 on COCO's 101
# recall points, 5 thresholds), none passes 0.95: AP = (4 + 5 x 51/101) / 10; AR = (4 + 5 x 0.5) / 10.
PINNED_AP = 0.6524752475247525
PINNED_AR = 0.65


def test_seeded_perturbation_gives_the_pinned_ap(ap10k):
    """Gaussian noise of 30 px (numpy default_rng(0)) on every ground-truth keypoint of the two AP-10K fixture
    animals, detection scores 0.9 and 0.6. The AP was computed once with this code (pycocotools 2.0.x) and pinned;
    it is also re-derived here from COCO's OKS and AP definitions written out by hand."""
    keypoints, _ = ground_truth_as_predictions(ap10k)
    noisy = keypoints + np.random.default_rng(0).normal(0.0, 30.0, keypoints.shape)
    scores = np.array([[0.9] * 17, [0.6] * 17])
    result = evaluate_predictions(ap10k, noisy, scores)
    oks = [hand_oks(s, p, ap10k.schema.sigmas) for s, p in zip(ap10k, noisy, strict=True)]
    assert result["AP"] == pytest.approx(hand_ap_one_animal_per_image(oks, [0.9, 0.6]), abs=1e-9)
    assert result["AP"] == pytest.approx(PINNED_AP, abs=1e-6)
    assert result["AR"] == pytest.approx(PINNED_AR, abs=1e-6)
    assert result["AP"] < 1.0 and result["rmse_px"] == pytest.approx(30 * math.sqrt(2), rel=0.25)


def test_openfield_without_sigmas_uses_the_stated_default(openfield_dir):
    test = load_dlc_project(openfield_dir, prefer="csv").subset(range(95, 116))
    keypoints, scores = ground_truth_as_predictions(test)
    result = evaluate_predictions(test, keypoints + 1.0, scores)  # every keypoint 1 px off along x and y
    assert result["oks_sigmas_source"].startswith("uniform 0.1") and result["AP"] == 1.0
    assert result["pck_normalizer"] == "keypoint_box_diag"
    assert result["mean_px"] == pytest.approx(math.sqrt(2), abs=1e-5) and result["rmse_px"] == pytest.approx(
        math.sqrt(2), abs=1e-5
    )
    assert result["PCK@0.05"] == 1.0  # the mouse box diagonal is far beyond 1.41 / (0.05 * 1.25) = 23 px


SCHEMA = KeypointSchema(names=("nose", "tail"))


def make(sample_id: str, keypoints, bbox=None, visible=(2, 2)) -> Sample:
    return Sample(
        sample_id,
        None,
        np.asarray(keypoints, dtype=np.float32),
        np.asarray(visible, dtype=np.float32),
        bbox_xywh=None if bbox is None else np.asarray(bbox, dtype=np.float32),
        image_id=sample_id,
    )


def test_pck_and_pixel_errors_by_hand():
    samples = [
        make("a", [[10, 10], [20, 20]], bbox=[0, 0, 100, 50]),
        make("b", [[0, 0], [30, 40]], bbox=[0, 0, 40, 40]),
    ]
    predicted = np.array([[[13, 14], [20, 20]], [[0, 2], [36, 48]]], dtype=np.float64)  # distances 5, 0 and 2, 10
    scores = np.array([[0.9, 0.3], [0.8, 0.7]])
    result = evaluate_predictions(samples, predicted, scores, SCHEMA, sigmas=[0.1, 0.1], pcutoff=0.5)
    # bbox normaliser = longer side: 100 and 40; PCK is strict, so a distance of exactly t x normaliser misses
    assert result["PCK@0.05"] == 0.25  # thresholds 5 and 2: only the 0 px error is below
    assert result["PCK@0.1"] == 0.75  # thresholds 10 and 4: 5, 0, 2 are below, 10 is not
    assert result["mean_px"] == pytest.approx((5 + 0 + 2 + 10) / 4)
    assert result["rmse_px"] == pytest.approx(math.sqrt((25 + 0 + 4 + 100) / 4))
    assert result["median_px"] == pytest.approx(3.5)
    assert result["per_keypoint"]["nose"]["mean_px"] == pytest.approx(3.5)
    assert result["per_keypoint"]["nose"]["rmse_px"] == pytest.approx(math.sqrt((25 + 4) / 2))
    assert result["per_keypoint"]["tail"]["rmse_px"] == pytest.approx(math.sqrt(50))
    assert result["per_keypoint"]["tail"]["PCK@0.1"] == 0.5
    # p-cutoff 0.5 keeps the keypoints scored 0.9, 0.8, 0.7: distances 5, 2, 10
    assert result["rmse_px_pcutoff"] == pytest.approx(math.sqrt((25 + 4 + 100) / 3))
    assert result["fraction_above_pcutoff"] == 0.75


def test_keypoint_box_diagonal_normaliser_by_hand():
    samples = [
        make("a", [[10, 10], [20, 20]]),  # diagonal 14.14 -> normaliser 17.68
        make("b", [[0, 0], [30, 40]]),  # diagonal 50 -> normaliser 62.5
        make("c", [[5, 5], [np.nan, np.nan]], visible=(2, 0)),  # one labelled point: no normaliser
    ]
    predicted = np.array([[[13, 14], [20, 20]], [[0, 4], [36, 48]], [[8, 9], [-1, -1]]], dtype=np.float64)
    result = evaluate_predictions(samples, predicted, np.ones((3, 2)), SCHEMA, pck_normalizer="keypoint_box_diag")
    # errors: a 5 and 0 px, b 4 and 10 px, c 5 px (nose only)
    # t = 0.1: thresholds 1.768 (a) and 6.25 (b): a's 0 px and b's 4 px are below; c is left out of PCK
    assert result["PCK@0.1"] == 0.5 and result["pck_excluded_keypoints"] == 1
    assert result["PCK@0.05"] == 0.25  # thresholds 0.884 and 3.125: only a's 0 px
    # c's labelled nose still counts in the pixel errors; its unlabelled tail does not
    assert result["num_labelled_keypoints"] == 5
    assert result["mean_px"] == pytest.approx((5 + 0 + 4 + 10 + 5) / 5)
    assert object_area(samples[1]) == 30 * 40 and object_area(samples[2]) == 1.0  # OKS areas without boxes


def test_bad_predictions_are_refused(ap10k):
    keypoints, scores = ground_truth_as_predictions(ap10k)
    with pytest.raises(ValueError, match=r"keypoints \(N, K, 2\) = \(2, 17, 2\).*got \(1, 17, 2\)"):
        evaluate_predictions(ap10k, keypoints[:1], scores[:1])
    keypoints[1, 4] = np.nan
    with pytest.raises(ValueError, match=r"sample 000000000004.jpg#6 keypoint root_of_tail is not finite"):
        evaluate_predictions(ap10k, keypoints, scores)
    scores[1, 4] = 0.0  # not found: NaN from the predictor scores as the decoders' (-1, -1) miss
    as_nan = evaluate_predictions(ap10k, keypoints, scores)
    keypoints[1, 4] = -1.0
    assert as_nan["rmse_px"] == evaluate_predictions(ap10k, keypoints, scores)["rmse_px"] > 0
    with pytest.raises(ValueError, match=r"sample a has no bbox for PCK normaliser 'bbox'; use 'keypoint_box_diag'"):
        evaluate_predictions(
            [make("a", [[1, 1], [5, 5]])], np.zeros((1, 2, 2)), np.ones((1, 2)), SCHEMA, pck_normalizer="bbox"
        )
    with pytest.raises(ValueError, match=r"OKS sigmas must be 2 positive numbers"):
        evaluate_predictions([make("a", [[1, 1], [5, 5]])], np.zeros((1, 2, 2)), np.ones((1, 2)), SCHEMA, sigmas=[0.1])
