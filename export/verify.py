"""Export stage: verification of every exported graph against the PyTorch model, on held-out real data.

Each artifact runs in the edge runtime's own ``Runner`` (ONNX Runtime, CPU), the PyTorch model it came from in
training evaluation's crop runner (``kernels.predict.model_crop_runner``: the training-form model, decoded through
``kernels.decode_heatmaps`` — the Triton kernel on CUDA, the PyTorch reference on CPU); both predict through the
one two-pass predictor, ``tardis_edge.predict``. Measured:

* **Crop parity** on the run's held-out split, one crop per labelled frame from the labelled-keypoint box: keypoint
  deviation from PyTorch in crop input pixels (max, mean), PCK@0.05 agreement with PyTorch (share of PyTorch's
  found keypoints the artifact puts within 0.05 x the crop side of them), score deviation, and keypoints found by
  one and not the other. The in-graph decode and the RepVGG re-parameterisation are checked too.
* **Task metric** through the detector-free two-pass path (whole frame, then a box around the confident
  keypoints), scored by ``tardis_edge.metrics.evaluate_predictions``, and the largest keypoint distance from
  PyTorch's two-pass keypoints in image pixels (``keypoints_max_px``). Flip test is off for every row (the graph
  runs one crop), so the rows compare like with like; the run's own evaluation setting is reported beside them as
  ``pytorch_eval``, and a heatmap graph is also run with the flip test done outside it (``task_flip``,
  ``flip_keypoints_max_px``), which must reproduce ``pytorch_eval``.
* **Latency** on this CPU: median of timed runs after warm-up, batch 1 and 8, and the ratio to PyTorch eager.

Thresholds (``Thresholds``) turn the report into a pass/fail that ``tardis-export`` exits non-zero on.
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
TASK_METRIC = "PCK@0.05"  # what the INT8 drop is measured on (percentage points)
PCK_AGREEMENT = 0.05  # fraction of the crop side


@dataclass
class Thresholds:
    """Pass/fail limits of verification (the issue's defaults)."""

    fp32_max_px: float = 0.05  # FP32 graphs: max keypoint deviation from PyTorch, crop input pixels
    fp16_mean_px: float = 0.25  # FP16: mean keypoint deviation, crop input pixels
    int8_drop_points: float = 2.0  # INT8: drop of the task metric (TASK_METRIC) in percentage points


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
    reference: tuple[np.ndarray, np.ndarray], candidate: tuple[np.ndarray, np.ndarray], crop_side: float
) -> dict[str, Any]:
    """Keypoint and score deviations of ``candidate`` from ``reference`` (both ``(N, K, 2)`` input px, ``(N, K)``)."""
    ref_kps, ref_scores = reference
    kps, scores = candidate
    ref_found, found = ref_scores > 0, scores > 0
    both = ref_found & found
    distance = np.linalg.norm(kps.astype(np.float64) - ref_kps, axis=-1)  # (N, K)
    within = both & (distance <= PCK_AGREEMENT * crop_side)
    return {
        "keypoints": int(ref_found.size),
        "max_px": float(distance[both].max()) if both.any() else float("nan"),
        "mean_px": float(distance[both].mean()) if both.any() else float("nan"),
        "pck_agreement": float(within.sum() / max(1, ref_found.sum())),
        "found_mismatches": int((ref_found != found).sum()),
        "score_max_abs": float(np.abs(scores - ref_scores).max()),
        "score_mean_abs": float(np.abs(scores - ref_scores).mean()),
    }


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
    from kernels.predict import model_crop_runner
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
    crop_side = float(max(input_wh))
    frames = [images[s.sample_id] for s in samples]
    method, beta = cfg.decode, cfg.softargmax_beta

    model = source.model.eval().to(device)
    flip_indices = flip_indices_from_pairs(source.schema.num_keypoints, source.schema.flip_pairs)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        reference = model_crop_runner(model, cfg, device=device)
        ref_crops = in_batches(on_crops(reference, cfg), crops)
        ref_kps, ref_scores, _ = predict_frames(reference, frames, input_wh, cfg)
        ref_task = task_metrics(samples, ref_kps, ref_scores, source.schema)
        # the run's own evaluation, as training.keypoints.evaluate_model runs it
        evaluation = model_crop_runner(model, source.predict, flip_indices, device=device)
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
            "pck_agreement_threshold": f"{PCK_AGREEMENT} x crop side ({PCK_AGREEMENT * crop_side:g} input px)",
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
        ref_on_crops = on_crops(reference, cfg)
        latency_ref = latencies(ref_on_crops, crops, latency_batches, latency_repeats) if latency_repeats > 0 else {}
        report["reference"]["pytorch"]["latency_ms"] = latency_ref

        for key, path in models.items():
            with artifact_runner(Path(path), metadata, cfg, threads) as runner:
                result = runner(frames)
                kps, scores = result.keypoints, result.scores
                row: dict[str, Any] = {
                    "file": Path(path).name,
                    "outputs": list(runner.backend.output_names),
                    "deviation": crop_deviation(ref_crops, in_batches(runner.infer_crops, crops), crop_side),
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
            row["failure"] = _check(key, row, thresholds)
            report["artifacts"][key] = row
    finally:
        torch.set_num_threads(previous_threads)
    report["failures"] = [f"{k}: {r['failure']}" for k, r in report["artifacts"].items() if r["failure"]]
    return report


def _check(key: str, row: dict[str, Any], limits: Thresholds) -> str | None:
    """The failure message of one artifact, or None when it is within its threshold."""
    deviation = row["deviation"]
    precision = precision_of(key)
    if precision == "fp32":
        worst = deviation["max_px"]
        if deviation["found_mismatches"] or not worst <= limits.fp32_max_px:
            return (
                f"max keypoint deviation {worst:.4g} px exceeds {limits.fp32_max_px:g} px by "
                f"{worst - limits.fp32_max_px:.4g} px ({deviation['found_mismatches']} found/not-found mismatches)"
            )
    elif precision == "fp16":
        mean = deviation["mean_px"]
        if not mean <= limits.fp16_mean_px:
            excess = mean - limits.fp16_mean_px
            return f"mean keypoint deviation {mean:.4g} px exceeds {limits.fp16_mean_px:g} px by {excess:.4g} px"
    elif precision == "int8":
        drop = row["task_drop_points"]
        if not drop <= limits.int8_drop_points:
            return (
                f"{TASK_METRIC} drops {drop:.3g} points from PyTorch's, more than {limits.int8_drop_points:g} points "
                f"(by {drop - limits.int8_drop_points:.3g})"
            )
    return None


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
    lines = [
        "# Export verification",
        "",
        f"- checkpoint: `{report['checkpoint']}`",
        f"- data: {report['data']['source']} — {report['data']['frames']} held-out frames, "
        f"{report['data']['crops']} crops ({report['data']['crop_boxes']})",
        f"- decode: {report['decode']['method']}; deviations in crop input pixels; PCK agreement within "
        f"{report['pck_agreement_threshold']}",
        f"- task metric: {metric} and RMSE through the two-pass detector-free path (tardis_edge.predict; each artifact "
        "in the edge runtime's Runner), flip test off "
        f"(PyTorch {_fmt(ref['pytorch']['task'][metric])}; with {ref['pytorch_eval']['note']}: "
        f"{_fmt(ref['pytorch_eval']['task'][metric])})",
        f"- CPU: {report['environment']['cpu']}, {report['environment']['threads']} threads, ONNX Runtime "
        f"{report['environment']['onnxruntime']}",
        "",
        f"| artifact | max dev px | mean dev px | PCK agreement | found mismatches | score max dev | {metric} | "
        "drop (points) | RMSE px | two-pass max dev image px | latency b1 / b8 ms | speedup vs PyTorch b1 / b8 | "
        "result |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ref_lat = ref["pytorch"].get("latency_ms", {})
    lines.append(
        f"| PyTorch (reference) | | | | | | {_fmt(ref['pytorch']['task'][metric])} | | "
        f"{_fmt(ref['pytorch']['task'].get('rmse_px'))} | | {_fmt(ref_lat.get('batch1'))} / "
        f"{_fmt(ref_lat.get('batch8'))} | 1 / 1 | |"
    )
    for key, row in report["artifacts"].items():
        d, lat, speed = row["deviation"], row.get("latency_ms", {}), row.get("speedup_vs_pytorch", {})
        result = "FAIL: " + row["failure"] if row["failure"] else "pass"
        lines.append(
            f"| {key} (`{row['file']}`) | {_fmt(d['max_px'])} | {_fmt(d['mean_px'])} | {_fmt(d['pck_agreement'])} | "
            f"{d['found_mismatches']} | {_fmt(d['score_max_abs'])} | {_fmt(row['task'][metric])} | "
            f"{_fmt(row['task_drop_points'], 3)} | {_fmt(row['task'].get('rmse_px'))} | "
            f"{_fmt(row['keypoints_max_px'])} | {_fmt(lat.get('batch1'))} / {_fmt(lat.get('batch8'))} | "
            f"{_fmt(speed.get('batch1'), 3)} / {_fmt(speed.get('batch8'), 3)} | {result} |"
        )
    for key, row in report["artifacts"].items():
        if "task_flip" in row:
            lines += [
                "",
                f"{key} with the flip test outside the graph (the run's own evaluation setting): {metric} "
                f"{_fmt(row['task_flip'][metric])}, RMSE {_fmt(row['task_flip'].get('rmse_px'))} px (PyTorch: "
                f"{_fmt(ref['pytorch_eval']['task'][metric])}, {_fmt(ref['pytorch_eval']['task'].get('rmse_px'))} px); "
                f"keypoints within {_fmt(row['flip_keypoints_max_px'])} image px of the evaluation's.",
            ]
    t = report["thresholds"]
    lines += [
        "",
        f"Thresholds: FP32 max deviation <= {t['fp32_max_px']} px (and no found/not-found mismatch), FP16 mean "
        f"deviation <= {t['fp16_mean_px']} px, INT8 {metric} drop <= {t['int8_drop_points']} points.",
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
