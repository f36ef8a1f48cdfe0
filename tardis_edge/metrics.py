"""Evaluation stage: OKS AP/AR (pycocotools' COCOeval), PCK and pixel errors of keypoint predictions.

``evaluate_predictions`` is the one entry every caller uses (training validation, export verification, the
runtime's benchmarks). Predictions are ``(N, K, 2)`` keypoints in *original image pixels* (pixel-centre
convention of ``tardis_edge.geometry``; map crop/heatmap coordinates back with ``decode.keypoints_to_image``)
and ``(N, K)`` scores, one row per sample. Only labelled keypoints (``visible > 0``) are scored.

Conventions:
    * OKS AP/AR: COCO's keypoint evaluation with the schema's per-keypoint sigmas; where the schema has none, a
      uniform sigma of ``DEFAULT_OKS_SIGMA`` (DeepLabCut 3's default) and the result says so. The object area is
      the annotation's ``area``, else the bbox area, else the area of the labelled-keypoint box. The instance
      score ranking the detections is the mean keypoint score clipped to [0, 1] (``tardis_edge.multi.instance_score``,
      the ``score`` of the runtime's COCO results).
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
from tardis_edge.geometry import keypoint_extent
from tardis_edge.multi import instance_score

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
    return keypoint_extent(sample.keypoints_xy, sample.visible)


def object_area(sample: Sample) -> float:
    """OKS area of a sample: the annotation's area, else its bbox area, else the labelled-keypoint box area."""
    area = sample.extra.get("area")
    if area is not None and area > 0:
        return float(area)
    if sample.bbox_xywh is not None and sample.bbox_xywh[2] * sample.bbox_xywh[3] > 0:
        return float(sample.bbox_xywh[2] * sample.bbox_xywh[3])
    # one labelled point: a 1 px area rather than a division by 0
    area = keypoint_box_area(np.where((sample.visible > 0)[:, None], sample.keypoints_xy, np.nan))
    if not np.isfinite(area):
        raise ValueError(f"sample {sample.sample_id} has no area, bbox or labelled keypoint")
    return area


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


def schema_oks_sigmas(schema: KeypointSchema) -> tuple[list[float], str]:
    """``(sigmas, source)``: the schema's per-keypoint OKS sigmas (``source`` "schema"), or where it has none a
    uniform ``DEFAULT_OKS_SIGMA`` (DeepLabCut 3's default), ``source`` saying so. Evaluation and ``model.json``'s
    ``oks_sigmas`` both take them from here."""
    if schema.sigmas is not None:
        return [float(s) for s in schema.sigmas], "schema"
    uniform = f"uniform {DEFAULT_OKS_SIGMA} (the schema has no OKS sigmas; DeepLabCut 3's default)"
    return [DEFAULT_OKS_SIGMA] * schema.num_keypoints, uniform


def oks_ap(
    samples: Sequence[Sample], pred_keypoints: np.ndarray, pred_scores: np.ndarray, sigmas: Sequence[float]
) -> dict[str, float]:
    """COCO keypoint AP/AR (``COCO_STATS``) of one prediction per sample, through pycocotools' COCOeval.

    Samples without any labelled keypoint are left out (COCOeval would ignore them). APm/APl are -1 when no
    object falls in that area range (COCO's convention).
    """
    labelled = [i for i, s in enumerate(samples) if (s.visible > 0).any()]
    detections = [
        (image_key(samples[i]), pred_keypoints[i], pred_scores[i], float(instance_score(pred_scores[i][None])[0]))
        for i in labelled
    ]
    return coco_keypoint_eval([samples[i] for i in labelled], detections, sigmas)


def _gt_annotation(s: Sample) -> dict:
    visible = s.visible > 0
    gt_xy = np.where(visible[:, None], s.keypoints_xy, 0.0)
    gt_v = np.where(visible, 2, 0)
    if s.bbox_xywh is not None:
        bbox = [float(v) for v in s.bbox_xywh]
    else:
        low, high = _labelled_box(s)  # type: ignore[misc]
        bbox = [float(low[0]), float(low[1]), float(high[0] - low[0]), float(high[1] - low[1])]
    return {
        "category_id": 1,
        "keypoints": np.column_stack([gt_xy, gt_v]).ravel().tolist(),
        "num_keypoints": int(visible.sum()),
        "area": object_area(s),
        "bbox": bbox,
        "iscrowd": 0,
    }


def coco_ground_truth(
    samples: Sequence[Sample],
    schema: KeypointSchema,
    file_names: Sequence[str],
    image_ids: Sequence[int] | None = None,
    category_id: int = 1,
    category_name: str = "animal",
) -> dict:
    """A COCO keypoints ground-truth file (``json.dump`` it) of labelled samples, as ``oks_ap`` evaluates them: the
    same ``area`` (``object_area``) and ``bbox`` (the annotation's, else the labelled keypoints' box), keypoints not
    labelled as ``0, 0, 0``. For ``COCO.loadRes`` + ``COCOeval`` on the runtime's COCO results (``tardis-edge predict
    --coco-gt``) against data that has no COCO file (DeepLabCut projects).

    Args:
        samples: the labelled samples, one animal each (several may share an image: same file name).
        schema: keypoint names, skeleton (the category's).
        file_names: per sample, its image's ``file_name`` (e.g. the path relative to the project).
        image_ids: per sample, its image's id (default: 1, 2, ... by first appearance of the file name).
        category_id: the category's id.
        category_name: the category's name.
    """
    if len(file_names) != len(samples) or (image_ids is not None and len(image_ids) != len(samples)):
        given = "no" if image_ids is None else len(image_ids)
        raise ValueError(
            f"need one file name (and image id) per sample; got {len(samples)} samples, {len(file_names)} file "
            f"names, {given} image ids"
        )
    ids: dict[str, int] = {}
    images, annotations = [], []
    for i, (s, name) in enumerate(zip(samples, file_names, strict=True)):
        if name not in ids:
            ids[name] = int(image_ids[i]) if image_ids is not None else len(ids) + 1
            image: dict[str, Any] = {"id": ids[name], "file_name": str(name)}
            if s.image_wh is not None:
                image["width"], image["height"] = int(s.image_wh[0]), int(s.image_wh[1])
            images.append(image)
        if (s.visible > 0).any():
            annotation = {"id": len(annotations) + 1, "image_id": ids[name], **_gt_annotation(s)}
            annotations.append(annotation | {"category_id": int(category_id)})
    category = {
        "id": int(category_id),
        "name": category_name,
        "supercategory": "animal",
        "keypoints": list(schema.names),
        "skeleton": [[a + 1, b + 1] for a, b in schema.skeleton],  # COCO numbers keypoints from 1
    }
    return {"images": images, "annotations": annotations, "categories": [category]}


def coco_keypoint_eval(
    samples: Sequence[Sample], detections: Sequence[tuple[str, np.ndarray, np.ndarray, float]], sigmas: Sequence[float]
) -> dict[str, float]:
    """COCO keypoint AP/AR (``COCO_STATS``) through pycocotools' COCOeval, any number of animals per image.

    Args:
        samples: the labelled animals; their images (``image_key``) are the evaluated images.
        detections: ``(image_key, keypoints (K, 2) image pixels, scores (K,), instance score)``; a keypoint not found
            (NaN) is written as (0, 0) with its score, so it counts as a miss.
        sigmas: per-keypoint OKS sigmas.
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:
        raise ImportError("OKS AP needs pycocotools: pip install 'tardis-edge[data]'") from e
    image_ids: dict[str, int] = {}
    images: list[dict] = []
    ground_truth: list[dict] = []
    for s in samples:
        key = image_key(s)
        if key not in image_ids:
            image_ids[key] = len(image_ids) + 1
            images.append({"id": image_ids[key]})
        if (s.visible > 0).any():
            ground_truth.append({"id": len(ground_truth) + 1, "image_id": image_ids[key], **_gt_annotation(s)})
    if not ground_truth:
        raise ValueError("no sample has a labelled keypoint: nothing to evaluate")
    results = [
        {
            "image_id": image_ids[key],
            "category_id": 1,
            "keypoints": np.column_stack([np.nan_to_num(kp, nan=0.0), np.nan_to_num(sc, nan=0.0)]).ravel().tolist(),
            "score": score,
        }
        for key, kp, sc, score in detections
    ]
    quiet = io.StringIO()  # pycocotools prints progress; the numbers are returned instead
    with contextlib.redirect_stdout(quiet):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": ground_truth, "categories": [{"id": 1, "name": "animal"}]}
        coco_gt.createIndex()
        if not results:
            return {name: 0.0 for name in COCO_STATS}
        coco_dt = coco_gt.loadRes(results)
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
    else:
        sigma_values, sigma_source = schema_oks_sigmas(schema)
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


# ----------------------------------------------------------------------------------------------- OKS and tracking


def keypoint_box_area(keypoints_xy: np.ndarray) -> float:
    """Area of the box around the finite keypoints of one animal (image pixels²), at least 1; NaN if none is finite.

    The OKS scale of an animal without an annotated area or box (the convention of ``object_area``).
    """
    extent = keypoint_extent(keypoints_xy)
    if extent is None:
        return float("nan")
    size = extent[1] - extent[0]
    return max(float(size[0] * size[1]), 1.0)


def keypoint_similarity(
    keypoints_a: np.ndarray, keypoints_b: np.ndarray, area: Any, sigmas: Sequence[float] | np.ndarray
) -> np.ndarray:
    """COCO's per-keypoint similarity ``exp(-d² / (2 · area · (2σ)²))`` (pycocotools' ``computeOks`` kernel).

    Args:
        keypoints_a: ``(..., K, 2)`` image pixels; NaN where missing.
        keypoints_b: ``(..., K, 2)``, broadcastable against ``keypoints_a``.
        area: the object scale s² (image pixels²), broadcastable against ``(...)``.
        sigmas: ``(K,)`` per-keypoint OKS sigmas.

    Returns:
        ``(..., K)`` similarities in [0, 1]; NaN where either keypoint is missing.
    """
    a = np.asarray(keypoints_a, dtype=np.float64)
    b = np.asarray(keypoints_b, dtype=np.float64)
    kappa2 = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2  # (K,)
    d2 = ((a - b) ** 2).sum(axis=-1)  # (..., K); NaN where either is missing
    return np.exp(-d2 / (2.0 * np.asarray(area, dtype=np.float64)[..., None] * kappa2))


def object_keypoint_similarity(
    pred_xy: np.ndarray, truth_xy: np.ndarray, area: Any, sigmas: Sequence[float] | np.ndarray
) -> np.ndarray:
    """OKS of predictions against one truth each: the mean keypoint similarity over the truth's labelled keypoints.

    A prediction missing (NaN) where the truth is labelled scores 0 there, as a keypoint far away would.

    Args:
        pred_xy: ``(..., K, 2)`` image pixels, NaN where not found.
        truth_xy: ``(..., K, 2)`` broadcastable against ``pred_xy``; NaN where unlabelled.
        area: the truth's scale s² (``keypoint_box_area`` for animals without a box), broadcastable to ``(...)``.
        sigmas: ``(K,)``.

    Returns:
        ``(...)`` OKS in [0, 1]; NaN where the truth has no labelled keypoint.
    """
    similarity = keypoint_similarity(pred_xy, truth_xy, area, sigmas)  # (..., K)
    labelled = np.isfinite(np.asarray(truth_xy, dtype=np.float64)).all(axis=-1)  # (..., K)
    labelled = np.broadcast_to(labelled, similarity.shape)
    count = labelled.sum(axis=-1)
    total = np.where(labelled, np.nan_to_num(similarity, nan=0.0), 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# One animal in one frame: (identity, (K, 2) keypoints in image pixels, NaN where missing/unlabelled).
TrackedAnimal = tuple[int, np.ndarray]

TRACKING_STATS = (
    "idf1",
    "idp",
    "idr",
    "mota",
    "motp",
    "num_switches",
    "num_false_positives",
    "num_misses",
    "num_matches",
    "num_objects",
    "num_predictions",
    "recall",
    "precision",
    "num_frames",
    "num_unique_objects",
    "num_fragmentations",
)


def tracking_metrics(
    gt_frames: Sequence[Sequence[TrackedAnimal]],
    pred_frames: Sequence[Sequence[TrackedAnimal]],
    *,
    sigmas: Sequence[float] | None = None,
    min_oks: float = 0.5,
) -> dict[str, Any]:
    """Multi-object tracking accuracy of tracked poses (CLEAR MOT and identity metrics, through motmetrics).

    Per frame, a ground-truth animal and a predicted one may match when their OKS is at least ``min_oks``; the
    distance motmetrics minimises is ``1 - OKS`` (the truth's ``keypoint_box_area`` is the OKS scale, the sigmas
    are uniform ``DEFAULT_OKS_SIGMA`` unless given). motmetrics keeps last frame's match of a pair while it stays
    within the threshold and assigns the rest by the Hungarian method; an identity switch is a ground-truth animal
    matched to another prediction id than at its last match (so a swap of two animals counts 2).

    Args:
        gt_frames: per frame, the ground-truth animals ``(id, (K, 2) keypoints)``; NaN keypoints are unlabelled,
            an animal with none labelled is left out of that frame.
        pred_frames: per frame (as many as ``gt_frames``), the tracked animals ``(track id, (K, 2) keypoints)``;
            NaN keypoints were not found.
        sigmas: ``(K,)`` per-keypoint OKS sigmas.
        min_oks: the match threshold in (0, 1].

    Returns:
        A JSON-serialisable dict with ``TRACKING_STATS``: ``idf1``/``idp``/``idr`` (identity F1, precision,
        recall), ``mota``, ``motp`` (mean ``1 - OKS`` of the matches), ``num_switches``, ``num_false_positives``,
        ``num_misses``, ``num_matches``, ``num_objects`` (ground-truth animal instances), ``num_predictions``,
        ``recall`` (matched / ground-truth instances), ``precision``, ``num_frames``, ``num_unique_objects``,
        ``num_fragmentations``; plus ``switch_frames`` (the frames where an identity switched), ``min_oks`` and
        ``oks_sigmas``.
    """
    try:
        import motmetrics
    except ImportError as e:
        raise ImportError("tracking metrics need motmetrics: pip install 'tardis-edge[train]'") from e
    if len(gt_frames) != len(pred_frames):
        raise ValueError(
            f"got {len(gt_frames)} ground-truth frames but {len(pred_frames)} predicted frames; pass one list of "
            "animals per frame for both (an empty list for a frame without animals)"
        )
    if not gt_frames:
        raise ValueError("tracking_metrics got no frames")
    if not 0 < min_oks <= 1:
        raise ValueError(f"min_oks must be in (0, 1], got {min_oks}")
    accumulator = motmetrics.MOTAccumulator(auto_id=False)
    sigma_values: np.ndarray | None = None if sigmas is None else np.asarray(sigmas, dtype=np.float64)
    for frame, (truth, pred) in enumerate(zip(gt_frames, pred_frames, strict=True)):
        gt_ids, gt_xy = _frame_animals(truth, "ground-truth", frame)
        pred_ids, pred_xy = _frame_animals(pred, "predicted", frame)
        labelled = np.isfinite(gt_xy).all(axis=-1).any(axis=-1) if len(gt_ids) else np.zeros(0, dtype=bool)
        gt_ids, gt_xy = gt_ids[labelled], gt_xy[labelled]
        k = gt_xy.shape[1] if len(gt_ids) else pred_xy.shape[1] if len(pred_ids) else 0
        if len(gt_ids) and len(pred_ids) and gt_xy.shape[1] != pred_xy.shape[1]:
            raise ValueError(
                f"frame {frame}: ground truth has {gt_xy.shape[1]} keypoints per animal, predictions "
                f"{pred_xy.shape[1]}; both must use the same keypoints"
            )
        if sigma_values is None and k:
            sigma_values = np.full(k, DEFAULT_OKS_SIGMA)
        if k and (sigma_values is None or sigma_values.shape != (k,) or (sigma_values <= 0).any()):
            raise ValueError(f"OKS sigmas must be {k} positive numbers, got {sigmas}")
        distance = np.full((len(gt_ids), len(pred_ids)), np.nan)
        if len(gt_ids) and len(pred_ids):
            assert sigma_values is not None  # set above for this k
            area = np.array([keypoint_box_area(xy) for xy in gt_xy])  # (G,)
            oks = object_keypoint_similarity(pred_xy[None], gt_xy[:, None], area[:, None], sigma_values)  # (G, P)
            distance = np.where(oks >= min_oks, 1.0 - oks, np.nan)  # NaN: may not match
        accumulator.update(gt_ids.tolist(), pred_ids.tolist(), distance, frameid=frame)
    handler = motmetrics.metrics.create()
    names = [name for name in TRACKING_STATS if name != "num_frames"] + ["num_frames"]
    summary = handler.compute(accumulator, metrics=names, name="tracking")
    result: dict[str, Any] = {}
    for name in TRACKING_STATS:
        value = summary[name].iloc[0]
        result[name] = int(value) if name.startswith("num_") else float(value)
    events = accumulator.mot_events
    result["switch_frames"] = sorted({int(f) for f in events[events["Type"] == "SWITCH"].index.get_level_values(0)})
    result["min_oks"] = float(min_oks)
    result["oks_sigmas"] = [] if sigma_values is None else sigma_values.tolist()
    return result


def _frame_animals(animals: Sequence[TrackedAnimal], what: str, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids (N,), keypoints (N, K, 2))`` of one frame's animals, checked."""
    ids = np.array([int(identity) for identity, _ in animals], dtype=np.int64)
    if len(set(ids.tolist())) != len(ids):
        raise ValueError(f"frame {frame}: {what} ids {ids.tolist()} repeat; each animal appears once per frame")
    if not len(ids):
        return ids, np.zeros((0, 0, 2))
    keypoints = [np.asarray(xy, dtype=np.float64) for _, xy in animals]
    shapes = {xy.shape for xy in keypoints}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2 or next(iter(shapes))[1] != 2:
        raise ValueError(
            f"frame {frame}: {what} keypoints must be (K, 2) arrays of one K; "
            f"got shapes {[xy.shape for xy in keypoints]}"
        )
    return ids, np.stack(keypoints)


# ---------------------------------------------------------------- many animals per image
def oks_matrix(truth: Sequence[Sample], keypoints: np.ndarray, sigmas: Sequence[float]) -> np.ndarray:
    """``(G, P)`` COCO OKS (``object_keypoint_similarity``, area ``object_area``) between labelled animals and
    predicted poses ``(P, K, 2)``; 0 for an animal without a labelled keypoint."""
    if not len(truth) or not len(keypoints):
        return np.zeros((len(truth), len(keypoints)))
    truth_xy = np.stack([np.where((s.visible > 0)[:, None], s.keypoints_xy, np.nan) for s in truth])  # (G, K, 2)
    area = np.array([object_area(s) if (s.visible > 0).any() else 1.0 for s in truth])  # (G,)
    oks = object_keypoint_similarity(np.asarray(keypoints, np.float64)[None], truth_xy[:, None], area[:, None], sigmas)
    return np.nan_to_num(oks, nan=0.0)


def match_animals(
    truth: Sequence[Sample], keypoints: np.ndarray, sigmas: Sequence[float], min_oks: float
) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(truth index, prediction index, OKS)`` maximising the total OKS (Hungarian,
    ``scipy.optimize.linear_sum_assignment``), keeping pairs with OKS >= ``min_oks``."""
    from scipy.optimize import linear_sum_assignment

    oks = oks_matrix(truth, keypoints, sigmas)
    if oks.size == 0:
        return []
    rows, cols = linear_sum_assignment(-oks)
    return [(int(r), int(c), float(oks[r, c])) for r, c in zip(rows, cols, strict=True) if oks[r, c] >= min_oks]


def evaluate_multi_animal(
    frames: Sequence[Sequence[Sample]],
    predictions: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    schema: KeypointSchema,
    *,
    sigmas: Sequence[float] | None = None,
    min_oks: float = 0.5,
) -> dict[str, Any]:
    """Finding and posing every animal: COCO mAP over all predicted animals, per-frame recall and precision,
    and the pixel errors of matched animals.

    Args:
        frames: per frame, its labelled animals (samples of one image).
        predictions: per frame, ``(keypoints (P, K, 2) image pixels, scores (P, K), instance scores (P,))``.
        schema: keypoint names (and OKS sigmas).
        sigmas: OKS sigmas overriding the schema's (default: the schema's, else uniform ``DEFAULT_OKS_SIGMA``).
        min_oks: a labelled animal is found when matched to a prediction with at least this OKS.

    Returns:
        ``AP`` … ``ARl`` (COCOeval), ``oks_sigmas``, ``recall`` (found / labelled animals), ``frame_recall_min``,
        ``frames_all_found`` (share of frames where every labelled animal was found), ``precision`` (matched /
        predicted), ``mean_px``/``median_px``/``rmse_px`` over the labelled keypoints of found animals, and
        ``per_keypoint`` name -> ``{count, mean_px, median_px, rmse_px}``.
    """
    if len(frames) != len(predictions):
        raise ValueError(f"got {len(frames)} frames of labels but {len(predictions)} of predictions")
    if sigmas is None:
        sigmas = schema.sigmas or [DEFAULT_OKS_SIGMA] * schema.num_keypoints
        source = (
            "schema" if schema.sigmas else f"uniform {DEFAULT_OKS_SIGMA} (the schema has none; DeepLabCut 3's default)"
        )
    else:
        source = "given"
    truth_all: list[Sample] = []
    detections: list[tuple[str, np.ndarray, np.ndarray, float]] = []
    found = labelled_animals = predicted = 0
    frame_recalls: list[float] = []
    distances: list[np.ndarray] = []  # (K,) per found animal, NaN where unlabelled
    for animals, (keypoints, scores, instance_scores) in zip(frames, predictions, strict=True):
        animals = [s for s in animals if (s.visible > 0).any()]
        if not animals:
            continue
        truth_all += animals
        key = image_key(animals[0])
        detections += [(key, kp, sc, float(i)) for kp, sc, i in zip(keypoints, scores, instance_scores, strict=True)]
        matches = match_animals(animals, keypoints, sigmas, min_oks)
        found += len(matches)
        labelled_animals += len(animals)
        predicted += len(keypoints)
        frame_recalls.append(len(matches) / len(animals))
        for g, p, _ in matches:
            s = animals[g]
            d = np.linalg.norm(keypoints[p] - s.keypoints_xy, axis=-1)
            distances.append(np.where(s.visible > 0, d, np.nan))
    if not truth_all:
        raise ValueError("no frame has a labelled animal: nothing to evaluate")
    result: dict[str, Any] = coco_keypoint_eval(truth_all, detections, sigmas)
    result["oks_sigmas"] = [float(s) for s in sigmas]
    result["oks_sigmas_source"] = source
    result["match_min_oks"] = float(min_oks)
    result["num_frames"] = len(frame_recalls)
    result["num_animals"] = labelled_animals
    result["num_predicted"] = predicted
    result["recall"] = found / labelled_animals
    result["frame_recall_min"] = float(min(frame_recalls))
    result["frames_all_found"] = float(np.mean([r == 1.0 for r in frame_recalls]))
    result["precision"] = found / predicted if predicted else float("nan")
    dist = np.stack(distances) if distances else np.full((0, schema.num_keypoints), np.nan)
    result.update(_error_stats(dist[np.isfinite(dist)]))
    result["per_keypoint"] = {
        name: {"count": int(np.isfinite(dist[:, k]).sum()), **_error_stats(dist[np.isfinite(dist[:, k]), k])}
        for k, name in enumerate(schema.names)
    }
    return result
