"""Export stage: verification of every exported graph against the PyTorch model, on held-out real data.

Each artifact runs in the edge runtime's own ``Runner`` (ONNX Runtime, CPU), the PyTorch model it came from in
training evaluation's crop runner (``kernels.predict.model_crop_runner``: the training-form model, decoded through
``kernels.decode_heatmaps`` — the Triton kernel on CUDA, the PyTorch reference on CPU); both predict through the
one two-pass predictor, ``tardis_edge.predict``. Measured:

* **Crop parity** on the run's held-out split, one crop per labelled frame from the labelled-keypoint box: keypoint
  deviation from PyTorch in crop input pixels (max, mean), score deviation, and keypoints found by one and not the
  other. The in-graph decode and the RepVGG re-parameterisation are checked too.
* **Agreement on confident keypoints** with the FP32 model (PyTorch) on the same crops: of the keypoints the FP32
  model scores above the artifact's confidence threshold (``PredictConfig.box_min_score``, which the runtime's
  ``FollowConfig.min_score`` mirrors: the score above which a keypoint frames the refine box, keeps the animal
  followed and is drawn), the share the artifact puts within ``AGREEMENT_BOX`` x the box diagonal of the FP32
  keypoint, and the mean deviation on them; per keypoint too. Flat heatmaps of keypoints the model does not find
  move their argmax under any rounding; they are left out, so a weak model's precisions are judged where it
  answers, and a keypoint that moves is named.
* **Task metric** through the detector-free two-pass path (whole frame, then a box around the confident
  keypoints), scored by ``tardis_edge.metrics.evaluate_predictions``, and the largest keypoint distance from
  PyTorch's two-pass keypoints in image pixels (``keypoints_max_px``). Flip test is off for every row (the graph
  runs one crop), so the rows compare like with like; the run's own evaluation setting is reported beside them as
  ``pytorch_eval``, and a heatmap graph is also run with the flip test done outside it (``task_flip``,
  ``flip_keypoints_max_px``), which must reproduce ``pytorch_eval``.
* **Latency** on this CPU: median of timed runs after warm-up, batch 1 and 8, and the ratio to PyTorch eager.

Thresholds (``Thresholds``) turn the report into a pass/fail that ``tardis-export`` exits non-zero on: an FP32 graph
must reproduce PyTorch (max deviation), every lower precision (FP16, each INT8 graph) the FP32 model on its
confident keypoints (agreement and mean deviation). The task-metric drop is reported, not gated: a weak model's
metric is near zero whatever the precision does.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from export.calibration import labelled_boxes
from tardis_edge.artifact import OUTPUT_HEATMAPS, ArtifactMetadata
from tardis_edge.codec import flip_indices_from_pairs
from tardis_edge.io import atomic_write_text, strict_json
from tardis_edge.predict import CropRunner, PredictConfig, crop_batch, crop_keypoints, predict_frames

CropKeypoints = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # crops -> (keypoints input px, scores)
TASK_METRIC = "PCK@0.05"  # the task-metric drop is reported on this (percentage points)
# A confident keypoint is reproduced within this fraction of the box diagonal. The box is the crop the artifact runs
# on (the padded box around the animal, the network input), so the diagonal is hypot(input W, input H).
AGREEMENT_BOX = 0.05


@dataclass
class Thresholds:
    """Pass/fail limits of verification (``tardis-export``'s defaults; the reasons are in the README's export part)."""

    fp32_max_px: float = 0.05  # FP32 graphs: max keypoint deviation from PyTorch, crop input pixels
    # Lower precisions against the FP32 model, on the keypoints it scores above the confidence threshold:
    min_agreement: float = 0.95  # share reproduced within AGREEMENT_BOX x the box diagonal
    max_mean_dev_box: float = 0.01  # mean deviation, fraction of the box diagonal


def precision_of(key: str) -> str:
    """``fp32_heatmaps`` -> ``fp32``; ``int8_qdq`` -> ``int8``."""
    return key.split("_")[0]


# ----------------------------------------------------------------------------------------------- runners
def ort_session(model: str | Path | bytes, threads: int | None = None) -> Any:
    """A CPU ``onnxruntime.InferenceSession`` (``threads`` intra-op threads; None: ONNX Runtime's default)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ImportError("verification needs onnxruntime: pip install 'tardis-edge[export]'") from exc
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options, ["CPUExecutionProvider"])


def artifact_runner(
    path: Path, metadata: ArtifactMetadata, cfg: PredictConfig, threads: int | None = None, flip_test: bool = False
) -> Any:
    """The edge runtime's ``Runner`` on one exported ONNX file (CPU), predicting as ``cfg`` says.

    A keypoint graph decodes in the graph; a heatmap graph decodes in NumPy with ``cfg.decode`` (and can take the
    flip test). The refine box follows ``cfg``'s rule, so the runner predicts exactly as ``cfg`` does.
    """
    from tardis_edge.runtime import FollowConfig, Runner
    from tardis_edge.runtime.backends.ort import CPU, OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(path, providers=[CPU], threads=threads)
    heatmaps = list(backend.output_names) == [OUTPUT_HEATMAPS]
    follow = FollowConfig(min_score=cfg.box_min_score, padding=cfg.padding, min_size=cfg.box_min_size)
    try:
        return Runner(
            backend,
            metadata,
            decode="numpy" if heatmaps else "graph",
            refine=cfg.two_pass,
            flip_test=flip_test,
            decode_method=cfg.decode if heatmaps else None,
            batch_size=cfg.batch_size,
            follow=follow,
        )
    except Exception:
        backend.close()
        raise


def on_crops(run: CropRunner, cfg: PredictConfig) -> CropKeypoints:
    """A crop runner as a function of crops alone: keypoints in crop input pixels (NaN where score <= 0)."""

    def keypoints(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        identity = np.broadcast_to(np.eye(2, 3), (len(crops), 2, 3))
        return crop_keypoints(run, crops, identity, cfg)

    return keypoints


def in_batches(run: CropKeypoints, crops: np.ndarray, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    parts = [run(crops[i : i + batch_size]) for i in range(0, len(crops), batch_size)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def keypoints_max_px(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Largest distance between two ``(N, K, 2)`` image-pixel predictions over the keypoints both found; inf when
    one found a keypoint the other did not (NaN marks "not found")."""
    found_ref, found = np.isfinite(reference).all(-1), np.isfinite(candidate).all(-1)
    if (found_ref != found).any():
        return float("inf")
    distance = np.linalg.norm(candidate - reference, axis=-1)[found]
    return float(distance.max()) if distance.size else 0.0


# ------------------------------------------------------------------------------------------- measures
def crop_deviation(
    reference: tuple[np.ndarray, np.ndarray], candidate: tuple[np.ndarray, np.ndarray]
) -> dict[str, Any]:
    """Keypoint and score deviations of ``candidate`` from ``reference`` (both ``(N, K, 2)`` input px, ``(N, K)``)."""
    ref_kps, ref_scores = reference
    kps, scores = candidate
    ref_found, found = ref_scores > 0, scores > 0
    both = ref_found & found
    distance = np.linalg.norm(kps.astype(np.float64) - ref_kps, axis=-1)  # (N, K)
    return {
        "keypoints": int(ref_found.size),
        "max_px": float(distance[both].max()) if both.any() else float("nan"),
        "mean_px": float(distance[both].mean()) if both.any() else float("nan"),
        "found_mismatches": int((ref_found != found).sum()),
        "score_max_abs": float(np.abs(scores - ref_scores).max()),
        "score_mean_abs": float(np.abs(scores - ref_scores).mean()),
    }


def confident_agreement(
    reference: tuple[np.ndarray, np.ndarray],
    candidate: tuple[np.ndarray, np.ndarray],
    names: Sequence[str],
    min_score: float,
    box_diagonal: float,
) -> dict[str, Any]:
    """How well ``candidate`` reproduces ``reference`` on the keypoints ``reference`` is confident of.

    Args:
        reference: the FP32 model's ``(N, K, 2)`` keypoints (crop input px, NaN: not found) and ``(N, K)`` scores.
        candidate: the artifact's, on the same crops.
        names: the ``K`` keypoint names.
        min_score: a reference keypoint is confident above this score.
        box_diagonal: the crop box diagonal in crop input pixels (agreement within ``AGREEMENT_BOX`` x it).

    Returns:
        ``confident`` (count), ``agreement`` (share within tolerance; NaN without confident keypoints),
        ``mean_px`` / ``mean_box`` / ``max_px`` deviation over the confident keypoints the candidate found,
        ``not_found`` (confident in the reference, not found by the candidate: moved), ``per_keypoint`` (the same per
        name) and ``moved`` (per name with a moved keypoint, worst first: frames moved, largest deviation).
    """
    ref_kps, ref_scores = reference
    kps = candidate[0]
    confident = np.isfinite(ref_kps).all(-1) & (ref_scores > min_score)  # (N, K)
    distance = np.linalg.norm(kps.astype(np.float64) - ref_kps, axis=-1)  # (N, K); NaN where either did not find it
    found = confident & np.isfinite(distance)
    within = found & (distance <= AGREEMENT_BOX * box_diagonal)

    def summary(mask: np.ndarray) -> dict[str, Any]:
        count, hits, measured = int(mask.sum()), within & mask, distance[found & mask]
        return {
            "confident": count,
            "agreement": float(hits.sum() / count) if count else float("nan"),
            "mean_px": float(measured.mean()) if measured.size else float("nan"),
            "mean_box": float(measured.mean() / box_diagonal) if measured.size else float("nan"),
            "max_px": float(measured.max()) if measured.size else float("nan"),
            "not_found": int((mask & ~found).sum()),
        }

    per_keypoint = {name: summary(confident & (np.arange(len(names)) == k)) for k, name in enumerate(names)}
    moved = []
    for k, name in enumerate(names):
        off = confident[:, k] & ~within[:, k]
        if off.any():
            far = distance[off, k]
            moved.append(
                {
                    "keypoint": name,
                    "frames": int(off.sum()),
                    "of": int(confident[:, k].sum()),
                    "max_px": float(np.nanmax(far)) if np.isfinite(far).any() else float("nan"),
                    "not_found": int(np.isnan(far).sum()),
                }
            )
    moved.sort(key=lambda m: (-m["frames"], -np.nan_to_num(m["max_px"], nan=np.inf)))
    return {**summary(confident), "per_keypoint": per_keypoint, "moved": moved}


def task_metrics(samples: Sequence[Any], keypoints: np.ndarray, scores: np.ndarray, schema: Any) -> dict[str, Any]:
    """``evaluate_predictions`` on two-pass output (NaN rows -> (-1, -1), the metrics module's 'not found')."""
    from tardis_edge.metrics import evaluate_predictions

    finite = np.where(np.isfinite(keypoints), keypoints, -1.0)
    metrics = evaluate_predictions(list(samples), finite, scores, schema)
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}


def median_latency_ms(run: Callable[[], Any], warmup: int = 2, repeats: int = 7) -> float:
    """Median wall time of ``run()`` in milliseconds after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def latencies(run: CropRunner, crops: np.ndarray, batches: Sequence[int], repeats: int) -> dict[str, float]:
    """``{"batch<b>": median ms}`` of ``run`` on the first ``b`` crops (cycled when there are fewer)."""
    out = {}
    for b in batches:
        x = np.ascontiguousarray(np.resize(crops, (b, *crops.shape[1:])))
        out[f"batch{b}"] = median_latency_ms(lambda x=x: run(x), repeats=repeats)
    return out


# ----------------------------------------------------------------------------------------- verification
def verify(
    source: Any,
    models: dict[str, Path],
    thresholds: Thresholds | None = None,
    data_path: str | Path | None = None,
    threads: int = 1,
    latency_batches: Sequence[int] = (1, 8),
    latency_repeats: int = 7,
    max_frames: int | None = None,
    metadata: ArtifactMetadata | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Verify exported graphs against the PyTorch model of ``source`` on its held-out split.

    Args:
        source: the ``export.source.ExportSource`` (model, schema, geometry, predict config, data).
        models: ``models`` key (``fp32``, ``fp32_heatmaps``, ``fp16``, ``int8_qdq``) -> ONNX file.
        thresholds: pass/fail limits (defaults: the issue's).
        data_path: verify on this dataset instead of the run's (its held-out part by the run's split rule).
        threads: intra-op threads of ONNX Runtime and torch alike. 1 by default: on a shared machine torch's OpenMP
            pool with 2 threads measured 25x slower than with 1 (spin-waiting for a busy core), ONNX Runtime not.
        latency_batches: batch sizes timed; ``latency_repeats`` timed runs each (0 disables timing).
        max_frames: use at most this many held-out frames (tests); None: all.
        metadata: the artifact's ``model.json`` (its decode method is the graphs'); None: read beside the models.
        device: the PyTorch reference's device (on CUDA its decode runs the Triton kernel).

    Returns:
        The report (JSON-serialisable): data, reference rows, one row per artifact, thresholds and ``failures``
        (human-readable, empty when everything passed).
    """
    import torch

    from export.source import load_split
    from tardis_edge.data import read_sample_image

    thresholds = thresholds or Thresholds()
    if metadata is None:
        metadata = ArtifactMetadata.load(Path(next(iter(models.values()))).parent)
    _, _, test = load_split(source, data_path)
    samples = [s for s in test.samples if s.labelled][:max_frames]
    cropped = [s for s in samples if (s.visible > 0).any()]
    if not cropped:
        raise ValueError(f"the held-out split of {test.summary.source} has no labelled frame to verify on")
    images = {s.sample_id: read_sample_image(s) for s in samples}
    cfg = replace(source.predict, flip_test=False, decode=metadata.decode_method)
    input_wh = source.input_wh
    crops, _ = crop_batch(
        [images[s.sample_id] for s in cropped], labelled_boxes(cropped, input_wh, cfg.padding), input_wh
    )
    box_diagonal = math.hypot(*input_wh)  # the crop box (network input), crop input pixels
    min_score = cfg.box_min_score  # the artifact's confidence threshold (the runtime's FollowConfig.min_score)
    names = list(source.schema.names)
    frames = [images[s.sample_id] for s in samples]
    method, beta = cfg.decode, cfg.softargmax_beta

    source.model.eval().to(device)
    flip_indices = flip_indices_from_pairs(source.schema.num_keypoints, source.schema.flip_pairs)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        reference = source.crop_runner(cfg, device=device)
        ref_on_crops = on_crops(reference, cfg)
        ref_crops = in_batches(ref_on_crops, crops)
        ref_kps, ref_scores, _ = predict_frames(reference, frames, input_wh, cfg)
        ref_task = task_metrics(samples, ref_kps, ref_scores, source.schema)
        # the run's own evaluation, as training.keypoints.evaluate_model runs it
        evaluation = source.crop_runner(source.predict, flip_indices, device=device)
        eval_kps, eval_scores, _ = predict_frames(evaluation, frames, input_wh, source.predict)
        report: dict[str, Any] = {
            "checkpoint": str(source.checkpoint),
            "data": {
                "source": str(test.summary.source),
                "frames": len(samples),
                "crops": len(cropped),
                "crop_boxes": f"labelled keypoints, padding {cfg.padding}",
                "frames_without_labels": len(samples) - len(cropped),
            },
            "decode": {"method": method, "softargmax_beta": beta if method == "softargmax" else None},
            "task_metric": TASK_METRIC,
            "confident": {
                "reference": "the FP32 model (PyTorch) on the crops",
                "min_score": min_score,
                "min_score_source": "the run's box_min_score: PredictConfig, the runtime's FollowConfig.min_score",
                "box_diagonal_px": box_diagonal,
                "tolerance_box": AGREEMENT_BOX,
                "tolerance_px": AGREEMENT_BOX * box_diagonal,
                "reference_max_score": float(np.max(ref_crops[1])),
            },
            "reference": {
                "pytorch": {"task": ref_task, "note": "training-form model + reference decode, two-pass, no flip"},
                "pytorch_eval": {
                    "task": task_metrics(samples, eval_kps, eval_scores, source.schema),
                    "note": f"the run's own evaluation setting (flip_test={source.predict.flip_test})",
                },
            },
            "artifacts": {},
            "environment": _environment(threads),
            "thresholds": asdict(thresholds),
        }
        latency_ref = latencies(ref_on_crops, crops, latency_batches, latency_repeats) if latency_repeats > 0 else {}
        report["reference"]["pytorch"]["latency_ms"] = latency_ref

        for key, path in models.items():
            with artifact_runner(Path(path), metadata, cfg, threads) as runner:
                result = runner(frames)
                kps, scores = result.keypoints, result.scores
                on_artifact = in_batches(runner.infer_crops, crops)
                row: dict[str, Any] = {
                    "file": Path(path).name,
                    "outputs": list(runner.backend.output_names),
                    "deviation": crop_deviation(ref_crops, on_artifact),
                    "agreement": confident_agreement(ref_crops, on_artifact, names, min_score, box_diagonal),
                    "task": task_metrics(samples, kps, scores, source.schema),
                    "keypoints_max_px": keypoints_max_px(ref_kps, kps),
                }
                if latency_repeats > 0:
                    latency = latencies(runner.infer_crops, crops, latency_batches, latency_repeats)
                    row["latency_ms"] = latency
                    row["speedup_vs_pytorch"] = {k: latency_ref[k] / v for k, v in latency.items() if v > 0}
            row["task_drop_points"] = 100.0 * (ref_task[TASK_METRIC] - row["task"][TASK_METRIC])
            if row["outputs"] == [OUTPUT_HEATMAPS] and source.predict.flip_test:
                # the heatmap graph can also run the run's own evaluation setting (flip test), outside the graph
                with artifact_runner(Path(path), metadata, source.predict, threads, flip_test=True) as runner:
                    flipped = runner(frames)
                row["task_flip"] = task_metrics(samples, flipped.keypoints, flipped.scores, source.schema)
                row["flip_keypoints_max_px"] = keypoints_max_px(eval_kps, flipped.keypoints)
            row["failure"] = _check(key, row, thresholds, report["confident"])
            report["artifacts"][key] = row
    finally:
        torch.set_num_threads(previous_threads)
    report["failures"] = [f"{k}: {r['failure']}" for k, r in report["artifacts"].items() if r["failure"]]
    return report


def _check(key: str, row: dict[str, Any], limits: Thresholds, confident: dict[str, Any]) -> str | None:
    """The failure message of one artifact, or None when it is within its thresholds.

    An FP32 graph is held to PyTorch (max deviation, no found/not-found mismatch); any other precision to the FP32
    model on its confident keypoints (agreement and mean deviation), naming the keypoints that moved.
    """
    if precision_of(key) == "fp32":
        deviation = row["deviation"]
        worst = deviation["max_px"]
        if deviation["found_mismatches"] or not worst <= limits.fp32_max_px:
            return (
                f"max keypoint deviation {worst:.4g} px exceeds {limits.fp32_max_px:g} px by "
                f"{worst - limits.fp32_max_px:.4g} px ({deviation['found_mismatches']} found/not-found mismatches)"
            )
        return None
    agreement, min_score = row["agreement"], confident["min_score"]
    if not agreement["confident"]:
        return (
            f"the FP32 model scores no keypoint above {min_score:g} on the held-out crops (its highest score is "
            f"{confident['reference_max_score']:.3g}), so there is nothing to hold {key} to: the model is too weak to "
            "verify (train it further, or verify on other data with --data)"
        )
    problems = []
    if not agreement["agreement"] >= limits.min_agreement:
        moved = ", ".join(
            f"{m['keypoint']} on {m['frames']} of {m['of']} frames (up to {m['max_px']:.3g} px"
            + (f", {m['not_found']} not found)" if m["not_found"] else ")")
            for m in agreement["moved"]
        )
        problems.append(
            f"agreement {agreement['agreement']:.3g} below {limits.min_agreement:g}: of the "
            f"{agreement['confident']} keypoints the FP32 model scores above {min_score:g}, "
            f"{sum(m['frames'] for m in agreement['moved'])} moved more than {confident['tolerance_px']:.3g} px "
            f"({AGREEMENT_BOX:g} x the box diagonal): {moved}"
        )
    if not agreement["mean_box"] <= limits.max_mean_dev_box:
        limit_px = limits.max_mean_dev_box * confident["box_diagonal_px"]
        measured = [(k["mean_px"], name) for name, k in agreement["per_keypoint"].items()]
        means = sorted((m for m in measured if not math.isnan(m[0])), key=lambda m: -m[0])  # ties: the schema's order
        above = [m for m in means if m[0] > limit_px] or means[:1]  # the keypoints that moved on average, or the worst
        problems.append(
            f"mean deviation on the confident keypoints {agreement['mean_px']:.3g} px ({agreement['mean_box']:.3g} x "
            f"the box diagonal) exceeds {limits.max_mean_dev_box:g} ({limit_px:.3g} px); moved on average: "
            + ", ".join(f"{name} {mean:.3g} px" for mean, name in above)
        )
    return "; ".join(problems) or None


def _environment(threads: int) -> dict[str, Any]:
    import onnxruntime
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "note": "latency on a shared CPU: medians after warm-up; compare rows of one report, not across machines",
    }


# ------------------------------------------------------------------------------------------------- output
def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def report_markdown(report: dict[str, Any]) -> str:
    """The report as a markdown page (verification.md)."""
    metric = report["task_metric"]
    ref = report["reference"]
    confident, t = report["confident"], report["thresholds"]
    lines = [
        "# Export verification",
        "",
        f"- checkpoint: `{report['checkpoint']}`",
        f"- data: {report['data']['source']} — {report['data']['frames']} held-out frames, "
        f"{report['data']['crops']} crops ({report['data']['crop_boxes']})",
        f"- decode: {report['decode']['method']}; deviations in crop input pixels",
        f"- confident keypoints: those {confident['reference']} scores above {confident['min_score']:g} "
        f"({confident['min_score_source']}); agreement: the share of them an artifact puts within "
        f"{confident['tolerance_box']:g} x the box diagonal ({_fmt(confident['box_diagonal_px'])} px: "
        f"{_fmt(confident['tolerance_px'], 3)} px) of the FP32 model's",
        f"- task metric: {metric} and RMSE through the two-pass detector-free path (tardis_edge.predict; each artifact "
        "in the edge runtime's Runner), flip test off "
        f"(PyTorch {_fmt(ref['pytorch']['task'][metric])}; with {ref['pytorch_eval']['note']}: "
        f"{_fmt(ref['pytorch_eval']['task'][metric])})",
        f"- CPU: {report['environment']['cpu']}, {report['environment']['threads']} threads, ONNX Runtime "
        f"{report['environment']['onnxruntime']}",
        "",
        "| artifact | confident keypoints | agreement | mean dev px (x box diagonal) | max dev px | all keypoints: "
        f"max / mean dev px | found mismatches | score max dev | {metric} | drop (points) | RMSE px | two-pass max dev "
        "image px | latency b1 / b8 ms | speedup vs PyTorch b1 / b8 | result |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ref_lat = ref["pytorch"].get("latency_ms", {})
    lines.append(
        f"| PyTorch (reference) | | | | | | | | {_fmt(ref['pytorch']['task'][metric])} | | "
        f"{_fmt(ref['pytorch']['task'].get('rmse_px'))} | | {_fmt(ref_lat.get('batch1'))} / "
        f"{_fmt(ref_lat.get('batch8'))} | 1 / 1 | |"
    )
    for key, row in report["artifacts"].items():
        d, a = row["deviation"], row["agreement"]
        lat, speed = row.get("latency_ms", {}), row.get("speedup_vs_pytorch", {})
        result = "FAIL: " + row["failure"] if row["failure"] else "pass"
        lines.append(
            f"| {key} (`{row['file']}`) | {a['confident']} | {_fmt(a['agreement'])} | {_fmt(a['mean_px'])} "
            f"({_fmt(a['mean_box'], 3)}) | {_fmt(a['max_px'])} | {_fmt(d['max_px'])} / {_fmt(d['mean_px'])} | "
            f"{d['found_mismatches']} | {_fmt(d['score_max_abs'])} | {_fmt(row['task'][metric])} | "
            f"{_fmt(row['task_drop_points'], 3)} | {_fmt(row['task'].get('rmse_px'))} | "
            f"{_fmt(row['keypoints_max_px'])} | {_fmt(lat.get('batch1'))} / {_fmt(lat.get('batch8'))} | "
            f"{_fmt(speed.get('batch1'), 3)} / {_fmt(speed.get('batch8'), 3)} | {result} |"
        )
    if report["artifacts"]:
        names = list(next(iter(report["artifacts"].values()))["agreement"]["per_keypoint"])
        lines += [
            "",
            "Per keypoint: agreement with the FP32 model on the frames where it is confident (confident frames; mean "
            "deviation px).",
            "",
            "| artifact | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for key, row in report["artifacts"].items():
            cells = [
                f"{_fmt(k['agreement'], 3)} ({k['confident']}; {_fmt(k['mean_px'], 3)})"
                for k in row["agreement"]["per_keypoint"].values()
            ]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    for key, row in report["artifacts"].items():
        if "task_flip" in row:
            lines += [
                "",
                f"{key} with the flip test outside the graph (the run's own evaluation setting): {metric} "
                f"{_fmt(row['task_flip'][metric])}, RMSE {_fmt(row['task_flip'].get('rmse_px'))} px (PyTorch: "
                f"{_fmt(ref['pytorch_eval']['task'][metric])}, {_fmt(ref['pytorch_eval']['task'].get('rmse_px'))} px); "
                f"keypoints within {_fmt(row['flip_keypoints_max_px'])} image px of the evaluation's.",
            ]
    lines += [
        "",
        f"Thresholds: FP32 graphs against PyTorch, max deviation <= {t['fp32_max_px']:g} px and no found/not-found "
        f"mismatch; every other precision against the FP32 model on its confident keypoints, agreement >= "
        f"{t['min_agreement']:g} and mean deviation <= {t['max_mean_dev_box']:g} x the box diagonal "
        f"({_fmt(t['max_mean_dev_box'] * confident['box_diagonal_px'], 3)} px). The {metric} drop is reported, "
        "not gated.",
        "",
        "Result: " + ("all artifacts pass." if not report["failures"] else "FAILED — " + "; ".join(report["failures"])),
        "",
    ]
    return "\n".join(lines)


def write_report(report: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """Write ``verification.json`` and ``verification.md`` into ``folder`` (atomically)."""

    json_path, md_path = folder / "verification.json", folder / "verification.md"
    atomic_write_text(json_path, strict_json(report) + "\n")
    atomic_write_text(md_path, report_markdown(report))
    return json_path, md_path
