"""The precision gates of export verification: FP32 graphs against PyTorch, every lower precision against the FP32
model on the keypoints it is confident of (agreement within 0.05 x the box diagonal, mean deviation).

The model is tests/test_export.py's RepVGG-A0 at 64x64 with a least-squares head. Graphs whose keypoints were moved
are the exported FP32 graph with an ``Add`` on its keypoints output: exactly the FP32 answer, then a known shift of
chosen keypoints, so each gate's verdict is known in advance.
"""

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_export import fit_small_model, write_run

from export.cli import EXIT_THRESHOLD, main
from export.pipeline import ExportOptions, export_artifact
from export.source import load_source
from export.verify import AGREEMENT_BOX, Thresholds, report_markdown, verify
from tardis_edge.artifact import OUTPUT_KEYPOINTS, OUTPUT_SCORES

FRAMES = 4  # held-out frames verified: 4 crops x 4 keypoints
KEYPOINTS = 4  # snout, leftear, rightear, tailbase
QUICK = {"threads": 1, "latency_repeats": 0, "max_frames": FRAMES}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, openfield_subset_dir):
    """(source, metadata, paths) of a run exported to FP32 and FP16."""
    model, schema = fit_small_model(openfield_subset_dir)
    run = write_run(tmp_path_factory.mktemp("run"), model, schema, openfield_subset_dir)
    source = load_source(run)
    metadata, paths = export_artifact(source, ExportOptions(out=run / "export", fp16=True, engines=False))
    return source, metadata, paths


def moved_graph(fp32_path: Path, out: Path, shift: dict[int, float], below_score: float | None = None) -> Path:
    """The FP32 keypoint graph with keypoint ``k`` moved by ``shift[k]`` input px along x (only where its score is
    at or below ``below_score``, when given)."""
    model = onnx.load(str(fp32_path))
    producer = next(n for n in model.graph.node if OUTPUT_KEYPOINTS in n.output)
    producer.output[list(producer.output).index(OUTPUT_KEYPOINTS)] = "keypoints_fp32"
    offset = np.zeros((1, KEYPOINTS, 2), np.float32)
    for k, px in shift.items():
        offset[0, k, 0] = px
    model.graph.initializer.append(numpy_helper.from_array(offset, "keypoint_shift"))
    nodes = []
    if below_score is None:
        nodes.append(helper.make_node("Identity", ["keypoint_shift"], ["shift"]))
    else:
        model.graph.initializer.append(numpy_helper.from_array(np.array(below_score, np.float32), "threshold"))
        model.graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), "last_axis"))
        nodes += [
            helper.make_node("LessOrEqual", [OUTPUT_SCORES, "threshold"], ["unconfident"]),
            helper.make_node("Cast", ["unconfident"], ["unconfident_f"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["unconfident_f", "last_axis"], ["unconfident_nk1"]),
            helper.make_node("Mul", ["unconfident_nk1", "keypoint_shift"], ["shift"]),
        ]
    nodes.append(helper.make_node("Add", ["keypoints_fp32", "shift"], [OUTPUT_KEYPOINTS]))
    model.graph.node.extend(nodes)
    onnx.save(model, str(out))
    return out


def test_faithful_graphs_pass_and_the_report_carries_the_thresholds(exported):
    source, metadata, paths = exported
    report = verify(source, {k: paths[k] for k in ("fp32", "fp16")}, metadata=metadata, **QUICK)
    assert report["failures"] == []
    assert report["thresholds"] == {"fp32_max_px": 0.05, "min_agreement": 0.95, "max_mean_dev_box": 0.01}
    confident = report["confident"]
    assert confident["min_score"] == source.predict.box_min_score == 0.2
    assert confident["tolerance_px"] == pytest.approx(AGREEMENT_BOX * np.hypot(64, 64))
    fp16 = report["artifacts"]["fp16"]["agreement"]
    assert fp16["confident"] > 0 and fp16["agreement"] == 1.0 and fp16["mean_box"] <= 0.01
    assert set(fp16["per_keypoint"]) == set(source.schema.names) and fp16["moved"] == []
    page = report_markdown(report)
    assert "| artifact | snout | leftear | rightear | tailbase |" in page  # per-keypoint agreement
    assert "agreement >= 0.95 and mean deviation <= 0.01 x the box diagonal (0.905 px)" in page
    assert "Result: all artifacts pass." in page


def test_a_moved_keypoint_fails_the_agreement_gate_and_is_named(exported, tmp_path):
    source, metadata, paths = exported
    far = 2 * AGREEMENT_BOX * np.hypot(64, 64)  # twice the tolerance
    graphs = {
        "int8_cpu": moved_graph(paths["fp32"], tmp_path / "moved.onnx", {0: far}),  # snout
        "fp16": moved_graph(paths["fp32"], tmp_path / "drifted.onnx", dict.fromkeys(range(KEYPOINTS), 2.0)),
    }
    report = verify(source, graphs, metadata=metadata, **QUICK)
    moved, drifted = report["artifacts"]["int8_cpu"], report["artifacts"]["fp16"]
    snout = moved["agreement"]["per_keypoint"]["snout"]
    assert snout["agreement"] == 0.0 and moved["agreement"]["moved"][0]["keypoint"] == "snout"
    assert moved["failure"].startswith("agreement 0.")
    assert f"snout on {snout['confident']} of {snout['confident']} frames (up to {far:.3g} px)" in moved["failure"]
    assert "leftear" not in moved["failure"] and "moved on average: snout 9.05 px" in moved["failure"]
    # every keypoint 2 px off: within the 4.5 px tolerance, but 2 px mean deviation > 0.01 x 90.5 px
    assert drifted["agreement"]["agreement"] == 1.0
    assert drifted["failure"].startswith("mean deviation on the confident keypoints 2 px (0.0221 x the box diagonal)")
    assert drifted["failure"].endswith("moved on average: snout 2 px, leftear 2 px, rightear 2 px, tailbase 2 px")
    assert report["failures"] == [f"int8_cpu: {moved['failure']}", f"fp16: {drifted['failure']}"]
    assert "| int8_cpu | 0 (" in report_markdown(report)


def test_only_unconfident_keypoints_moving_passes(exported, tmp_path):
    """A weak model's flat heatmaps move their argmax under any rounding: those keypoints are not gated."""
    source, metadata, paths = exported
    reference = verify(source, {"fp32": paths["fp32"]}, metadata=metadata, **QUICK)
    threshold = 0.5  # in this model's score range, so some keypoints are confident and some not
    weak = replace(source, predict=replace(source.predict, box_min_score=threshold))
    everywhere = dict.fromkeys(range(KEYPOINTS), 20.0)
    shaky = moved_graph(paths["fp32"], tmp_path / "shaky.onnx", everywhere, below_score=threshold)
    report = verify(weak, {"fp16": shaky}, metadata=metadata, **QUICK)
    row = report["artifacts"]["fp16"]
    confident = reference["artifacts"]["fp32"]["agreement"]["confident"]
    assert 0 < row["agreement"]["confident"] < confident, "the threshold must split the keypoints"
    assert row["failure"] is None and row["agreement"]["agreement"] == 1.0
    assert row["deviation"]["max_px"] == pytest.approx(20.0, abs=1e-3)  # the unconfident ones did move

    nothing = replace(source, predict=replace(source.predict, box_min_score=10.0))
    report = verify(nothing, {"fp16": paths["fp16"]}, metadata=metadata, **QUICK)
    assert "scores no keypoint above 10" in report["artifacts"]["fp16"]["failure"]
    assert "too weak to verify" in report["failures"][0]


def test_cli_exits_3_naming_the_keypoint_that_moved(exported, tmp_path, capsys, monkeypatch):
    import export.verify

    source, _, _ = exported
    real_runner = export.verify.artifact_runner

    def tail_moves_in_fp16(path, metadata, cfg, threads=None, flip_test=False):
        runner = real_runner(path, metadata, cfg, threads, flip_test)
        if "fp16" in Path(path).name:
            infer = runner.infer_crops

            def moved(images):
                keypoints, scores = infer(images)
                keypoints[:, 3, 1] += 30.0  # tailbase, 30 px down
                return keypoints, scores

            runner.infer_crops = moved
        return runner

    monkeypatch.setattr(export.verify, "artifact_runner", tail_moves_in_fp16)
    out = tmp_path / "artifact"
    argv = [str(source.run_dir), "--out", str(out), "--fp16", "--no-engine", "--latency-repeats", "0"]
    assert main(argv) == EXIT_THRESHOLD
    err = capsys.readouterr().err
    assert "verification failed: fp16: agreement 0.75 below 0.95" in err
    assert "tailbase on" in err and "(up to 30 px)" in err
    page = (out / "verification.md").read_text()
    assert "FAIL: agreement 0.75" in page and "| fp16 | 1 (" in page
    assert main([*argv, "--min-agreement", "0.7", "--max-mean-dev-box", "0.1"]) == 0  # the thresholds are options
    assert Thresholds(0.05, 0.7, 0.1).__dict__ == {"fp32_max_px": 0.05, "min_agreement": 0.7, "max_mean_dev_box": 0.1}
