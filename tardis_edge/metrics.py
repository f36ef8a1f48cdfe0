"""Evaluation stage: OKS AP/AR (pycocotools' COCOeval), PCK and pixel errors of keypoint predictions.

``evaluate_predictions`` is the one entry every caller uses (training validation, export verification, the
runtime's benchmarks). Predictions are ``(N, K, 2)`` keypoints in *original image pixels* (pixel-centre
convention of ``tardis_edge.geometry``; map crop/heatmap coordinates back with ``decode.keypoints_to_image``)
and ``(N, K)`` scores, one row per sample. Only labelled keypoints (``visible > 0``) are scored.

Conventions:
    * OKS AP/AR: COCO's keypoint evaluation with the schema's per-keypoint sigmas; where the schema has none, a
      uniform sigma of ``DEFAULT_OKS_SIGMA`` (DeepLabCut 3's default) and the result says so. The object area is
      the annotation's ``area``, else the bbox area, else the area of the labelled-keypoint box. The instance
      score ranking the detections is the mean keypoint score.
    * PCK@t: a keypoint is correct when its distance to the label is *below* ``t x normaliser`` (strict, as
      mmpose). Normalisers: ``"bbox"``: the longer side of the annotation box (mmpose); ``"keypoint_box_diag"``:
      1.25 x the diagonal of the frame's labelled-keypoint box (the project's convention for DeepLabCut data,
      which has no boxes; frames with fewer than two distinct labelled points have no normaliser and are left
      out of PCK, counted in ``pck_excluded_keypoints``).
    * Pixel error: Euclidean distance per labelled keypoint; ``mean_px`` is its mean (the "error" DeepLabCut
      2.x tables report), ``rmse_px`` is ``sqrt(mean(distance^2))`` over all labelled keypoints.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from tardis_edge.data.dataset import PoseDataset, image_key
from tardis_edge.data.sample import KeypointSchema, Sample

DEFAULT_OKS_SIGMA = 0.1
PCK_NORMALIZERS = ("bbox", "keypoint_box_diag")
KEYPOINT_BOX_DIAG_FACTOR = 1.25
COCO_STATS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def _as_array(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, on any device
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def _check_inputs(
    samples: Sequence[Sample], pred_keypoints: Any, pred_scores: Any, schema: KeypointSchema
) -> tuple[np.ndarray, np.ndarray]:
    n, k = len(samples), schema.num_keypoints
    keypoints = _as_array(pred_keypoints, "pred_keypoints")
    scores = _as_array(pred_scores, "pred_scores")
    if keypoints.shape != (n, k, 2) or scores.shape != (n, k):
        raise ValueError(
            f"predictions must be keypoints (N, K, 2) = ({n}, {k}, 2) and scores (N, K) = ({n}, {k}) for {n} "
            f"samples of {k} keypoints; got {keypoints.shape} and {scores.shape}"
        )
    # "Not found" (score <= 0) comes as (-1, -1) in crop pixels from the decoders and as NaN in image pixels from
    # the predictor (tardis_edge.predict); it is scored as a miss at (-1, -1) either way.
    not_found = np.isfinite(scores) & (scores <= 0)
    keypoints = np.where(not_found[..., None] & ~np.isfinite(keypoints), -1.0, keypoints)
    bad = np.argwhere(~np.isfinite(keypoints).all(axis=-1) | ~np.isfinite(scores))
    if len(bad):
        i, j = bad[0]
        raise ValueError(
            f"prediction for sample {samples[i].sample_id} keypoint {schema.names[j]} is not finite "
            f"({keypoints[i, j].tolist()}, score {scores[i, j]}); only keypoints not found (score <= 0) may be NaN"
        )
    for s in samples:
        if s.keypoints_xy.shape != (k, 2):
            raise ValueError(f"sample {s.sample_id} has {s.keypoints_xy.shape[0]} keypoints, the schema {k}")
    return keypoints, scores


def _labelled_box(sample: Sample) -> tuple[np.ndarray, np.ndarray] | None:
    """``(low corner, high corner)`` of the labelled keypoints, or None if none is labelled."""
    mask = sample.visible > 0
    if not mask.any():
        return None
    points = sample.keypoints_xy[mask].astype(np.float64)
    return points.min(axis=0), points.max(axis=0)


def object_area(sample: Sample) -> float:
    """OKS area of a sample: the annotation's area, else its bbox area, else the labelled-keypoint box area."""
    area = sample.extra.get("area")
    if area is not None and area > 0:
        return float(area)
    if sample.bbox_xywh is not None and sample.bbox_xywh[2] * sample.bbox_xywh[3] > 0:
        return float(sample.bbox_xywh[2] * sample.bbox_xywh[3])
    box = _labelled_box(sample)
    if box is None:
        raise ValueError(f"sample {sample.sample_id} has no area, bbox or labelled keypoint")
    size = box[1] - box[0]
    return max(float(size[0] * size[1]), 1.0)  # one labelled point: a 1 px area rather than a division by 0


def pck_normalizers(samples: Sequence[Sample], normalizer: str) -> np.ndarray:
    """``(N,)`` PCK normalisers in image pixels (NaN where a sample has none, see the module docstring)."""
    if normalizer not in PCK_NORMALIZERS:
        raise ValueError(f"PCK normaliser must be one of {PCK_NORMALIZERS}, got {normalizer!r}")
    out = np.full(len(samples), np.nan)
    for i, s in enumerate(samples):
        if normalizer == "bbox":
            if s.bbox_xywh is None:
                raise ValueError(
                    f"sample {s.sample_id} has no bbox for PCK normaliser 'bbox'; use 'keypoint_box_diag' "
                    "(DeepLabCut data has no boxes)"
                )
            out[i] = float(max(s.bbox_xywh[2], s.bbox_xywh[3]))
        else:
            box = _labelled_box(s)
            if box is not None:
                out[i] = KEYPOINT_BOX_DIAG_FACTOR * float(np.linalg.norm(box[1] - box[0]))
    out[out <= 0] = np.nan
    return out


def oks_ap(
    samples: Sequence[Sample], pred_keypoints: np.ndarray, pred_scores: np.ndarray, sigmas: Sequence[float]
) -> dict[str, float]:
    """COCO keypoint AP/AR (``COCO_STATS``) of one prediction per sample, through pycocotools' COCOeval.

    Samples without any labelled keypoint are left out (COCOeval would ignore them). APm/APl are -1 when no
    object falls in that area range (COCO's convention).
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:
        raise ImportError("OKS AP needs pycocotools: pip install 'tardis-edge[data]'") from e
    image_ids: dict[str, int] = {}
    images: list[dict] = []
    ground_truth: list[dict] = []
    detections: list[dict] = []
    for i, s in enumerate(samples):
        if not (s.visible > 0).any():
            continue
        key = image_key(s)
        if key not in image_ids:
            image_ids[key] = len(image_ids) + 1
            images.append({"id": image_ids[key]})
        visible = s.visible > 0
        gt_xy = np.where(visible[:, None], s.keypoints_xy, 0.0)
        gt_v = np.where(visible, 2, 0)
        if s.bbox_xywh is not None:
            bbox = [float(v) for v in s.bbox_xywh]
        else:
            low, high = _labelled_box(s)  # type: ignore[misc]
            bbox = [float(low[0]), float(low[1]), float(high[0] - low[0]), float(high[1] - low[1])]
        ground_truth.append(
            {
                "id": len(ground_truth) + 1,
                "image_id": image_ids[key],
                "category_id": 1,
                "keypoints": np.column_stack([gt_xy, gt_v]).ravel().tolist(),
                "num_keypoints": int(visible.sum()),
                "area": object_area(s),
                "bbox": bbox,
                "iscrowd": 0,
            }
        )
        detections.append(
            {
                "image_id": image_ids[key],
                "category_id": 1,
                "keypoints": np.column_stack([pred_keypoints[i], pred_scores[i]]).ravel().tolist(),
                "score": float(np.clip(pred_scores[i], 0, None).mean()),
            }
        )
    if not ground_truth:
        raise ValueError("no sample has a labelled keypoint: nothing to evaluate")
    quiet = io.StringIO()  # pycocotools prints progress; the numbers are returned instead
    with contextlib.redirect_stdout(quiet):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": ground_truth, "categories": [{"id": 1, "name": "animal"}]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval(coco_gt, coco_dt, "keypoints")
        evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(COCO_STATS, evaluator.stats, strict=True)}


def evaluate_predictions(
    samples: PoseDataset | Sequence[Sample],
    pred_keypoints: Any,
    pred_scores: Any,
    schema: KeypointSchema | None = None,
    *,
    pck_thresholds: Sequence[float] = (0.05, 0.1),
    pck_normalizer: str | None = None,
    sigmas: Sequence[float] | None = None,
    pcutoff: float | None = None,
) -> dict[str, Any]:
    """All accuracy figures of one set of predictions.

    Args:
        samples: the ground truth (a ``PoseDataset`` or its samples), N of them.
        pred_keypoints: ``(N, K, 2)`` predicted keypoints in original image pixels (numpy or torch).
        pred_scores: ``(N, K)`` keypoint scores (heatmap maxima; ``<= 0`` means not found).
        schema: keypoint names and OKS sigmas; taken from ``samples`` when it is a ``PoseDataset``.
        pck_thresholds: PCK thresholds as fractions of the normaliser.
        pck_normalizer: ``"bbox"`` or ``"keypoint_box_diag"``; default: ``"bbox"`` when every sample has a
            box, else ``"keypoint_box_diag"``.
        sigmas: OKS sigmas overriding the schema's.
        pcutoff: if given, also the pixel errors over the keypoints scored at least this (DeepLabCut's p-cutoff).

    Returns:
        A JSON-serialisable dict: ``num_samples``, ``num_labelled_keypoints``, COCO's ``AP`` … ``ARl``,
        ``oks_sigmas`` and ``oks_sigmas_source``, ``PCK@<t>`` per threshold with ``pck_normalizer`` and
        ``pck_excluded_keypoints``, ``mean_px``, ``median_px``, ``rmse_px`` (and ``*_pcutoff``), and
        ``per_keypoint``: name -> ``{count, mean_px, rmse_px, PCK@<t>}``.
    """
    if isinstance(samples, PoseDataset):
        schema = schema or samples.schema
        samples = samples.samples
    if schema is None:
        raise ValueError("evaluate_predictions needs the keypoint schema when given a list of samples")
    samples = list(samples)
    if not samples:
        raise ValueError("evaluate_predictions got no samples")
    keypoints, scores = _check_inputs(samples, pred_keypoints, pred_scores, schema)

    if sigmas is not None:
        sigma_values, sigma_source = [float(s) for s in sigmas], "given"
    elif schema.sigmas is not None:
        sigma_values, sigma_source = [float(s) for s in schema.sigmas], "schema"
    else:
        sigma_values = [DEFAULT_OKS_SIGMA] * schema.num_keypoints
        sigma_source = f"uniform {DEFAULT_OKS_SIGMA} (the schema has no OKS sigmas; DeepLabCut 3's default)"
    if len(sigma_values) != schema.num_keypoints or min(sigma_values) <= 0:
        raise ValueError(f"OKS sigmas must be {schema.num_keypoints} positive numbers, got {sigma_values}")

    result: dict[str, Any] = oks_ap(samples, keypoints, scores, sigma_values)
    result["oks_sigmas"] = sigma_values
    result["oks_sigmas_source"] = sigma_source

    truth = np.stack([s.keypoints_xy for s in samples]).astype(np.float64)  # (N, K, 2)
    labelled = np.stack([s.visible for s in samples]) > 0  # (N, K)
    distance = np.where(labelled, np.linalg.norm(keypoints - np.nan_to_num(truth), axis=-1), np.nan)  # (N, K)
    result["num_samples"] = int(labelled.any(axis=1).sum())
    result["num_labelled_keypoints"] = int(labelled.sum())

    if pck_normalizer is None:
        pck_normalizer = "bbox" if all(s.bbox_xywh is not None for s in samples) else "keypoint_box_diag"
    norm = pck_normalizers(samples, pck_normalizer)  # (N,)
    pck_valid = labelled & np.isfinite(norm)[:, None]  # (N, K)
    result["pck_normalizer"] = pck_normalizer
    result["pck_excluded_keypoints"] = int((labelled & ~pck_valid).sum())
    correct = {t: distance < t * norm[:, None] for t in pck_thresholds}  # NaN compares False
    for t in pck_thresholds:
        result[f"PCK@{t:g}"] = _fraction(correct[t], pck_valid)

    result.update(_error_stats(distance[labelled]))
    if pcutoff is not None:
        confident = labelled & (scores >= pcutoff)
        stats = _error_stats(distance[confident])
        result.update({f"{k}_pcutoff": v for k, v in stats.items()})
        result["pcutoff"] = float(pcutoff)
        result["fraction_above_pcutoff"] = _fraction(confident, labelled)

    per_keypoint = {}
    for k, name in enumerate(schema.names):
        entry: dict[str, Any] = {"count": int(labelled[:, k].sum())}
        entry.update(_error_stats(distance[labelled[:, k], k]))
        for t in pck_thresholds:
            entry[f"PCK@{t:g}"] = _fraction(correct[t][:, k], pck_valid[:, k])
        per_keypoint[name] = entry
    result["per_keypoint"] = per_keypoint
    return result


def _fraction(hits: np.ndarray, valid: np.ndarray) -> float:
    """Share of ``hits`` among ``valid`` (NaN when nothing is valid)."""
    count = int(valid.sum())
    return float((hits & valid).sum() / count) if count else float("nan")


def _error_stats(distances: np.ndarray) -> dict[str, float]:
    if distances.size == 0:
        return {"mean_px": float("nan"), "median_px": float("nan"), "rmse_px": float("nan")}
    return {
        "mean_px": float(distances.mean()),
        "median_px": float(np.median(distances)),
        "rmse_px": float(np.sqrt(np.mean(distances**2))),
    }
