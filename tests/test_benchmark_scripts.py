"""Scripts that write benchmarks/results/ run on tiny inputs and record how they were made (command, git SHA,
machine, load average). The real runs are heavy; these check the scripts themselves."""

import importlib.util
import json
from pathlib import Path

from test_runtime_cli import write_video
from test_runtime_support import build_artifact

from kernels import bench as kernels_bench

ROOT = Path(__file__).resolve().parents[1]
MEASURED = {"command", "git_sha", "machine", "cores", "load_average_1_5_15min", "versions"}


def load_script(name: str):
    """A script of benchmarks/ as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runtime_openfield_on_a_tiny_artifact(tmp_path):
    artifact = build_artifact(tmp_path / "artifact")
    video = write_video(tmp_path / "clip.avi", 6)
    out = tmp_path / "runtime.json"
    argv = [str(artifact), "--video", str(video), "--precisions", "fp32", "--max-frames", "4", "--out", str(out)]
    record = load_script("runtime_openfield").main(argv)
    assert json.loads(out.read_text()) == record
    assert MEASURED <= set(record["measured"]) and "runtime_openfield.py" in record["measured"]["command"]
    (row,) = record["results"]
    assert row["precision"] == "fp32" and row["frames"] == 4 and row["bad_frames"] == 0
    assert row["fps"] > 0 and 10 < row["peak_rss_mb"] < 4096 and row["process_wall_s"] > 0
    assert "overlay" in row["outputs"] and "--max-frames 4" in row["command"]
    assert record["runtime_environment"]["onnxruntime"]
    assert record["ratios"]["fp32"]["fps_x"] > 0


def test_extract_benchmark_records_how_it_was_made(tmp_path):
    out = tmp_path / "extract.json"
    argv = ["--device", "cpu", "--variant", "vits14", "--depth", "1", "--resolution", "28", "--batch-size", "1"]
    record = load_script("extract").main([*argv, "--warmup", "0", "--repeats", "1", "--out", str(out)])
    assert json.loads(out.read_text())["measured"] == record["measured"]
    assert MEASURED <= set(record["measured"]) and "--resolution 28" in record["measured"]["command"]


def test_kernels_bench_records_how_it_was_made(tmp_path):
    out = tmp_path / "decode.json"
    record = kernels_bench.main(["--quick", "--batch", "1", "--methods", "argmax", "--out", str(out)])
    assert MEASURED <= set(record["measured"]) and record["measured"]["command"].startswith("python -m kernels.bench")


def test_runtime_eval_openfield_on_a_tiny_artifact(tmp_path, openfield_dir):
    from openfield_split import openfield_split_of

    from tardis_edge.data import load_dataset

    artifact = build_artifact(tmp_path / "artifact", names=["snout", "leftear", "rightear", "tailbase"])
    openfield_split_of(load_dataset(openfield_dir)).write(artifact / "split.json")  # as tardis-export copies it
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics_test.json").write_text(json.dumps({"num_samples": 4, "rmse_px": 1.5, "per_keypoint": {}}))
    out = tmp_path / "eval.json"
    argv = [str(artifact), "--data", str(openfield_dir), "--settings", "fp32-numpy-flip,fp32-graph", "--run", str(run)]
    record = load_script("runtime_eval_openfield").main([*argv, "--out", str(out)])
    assert json.loads(out.read_text()) == record
    assert (
        MEASURED <= set(record["measured"]) and "--settings fp32-numpy-flip,fp32-graph" in record["measured"]["command"]
    )
    assert len(record["runtime_eval"]) == 2
    for result in record["runtime_eval"].values():
        assert result["num_samples"] > 0 and result["rmse_px"] > 0 and "--split test" in result["command"]
    assert record["training_evaluation"]["rmse_px"] == 1.5
