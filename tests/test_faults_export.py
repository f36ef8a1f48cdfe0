"""Fault suite of ``tardis-export`` (issue 13): a bad run, checkpoint, option or a full disk ends in one line naming
the file or value, a documented exit code (``tardis_edge.errors``), no traceback, and the artifact already in
``--out`` byte-identical and usable. Also finding 2: the runtime refuses a graph copied in from another export."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_export import fit_small_model, write_run
from test_runtime_support import blob_frame

from export.cli import main
from tardis_edge.checkpoint import CHECKPOINT_NAME, DeployCheckpoint
from tardis_edge.errors import EXIT_ENVIRONMENT, EXIT_USER
from tardis_edge.runtime.cli import main as edge_main

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--no-verify", "--no-engine"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def expect_one_line(err_text: str, code: int, expected_code: int, *needles: str, prog: str = "tardis-export") -> str:
    err = err_text.strip().splitlines()
    assert code == expected_code, err
    assert err, "no message"
    assert "Traceback" not in err_text, err_text
    if err[0].startswith("usage: "):  # argparse's own refusal of a malformed value: the usage, then one line
        err = err[-1:]
    assert len(err) == 1, err
    assert err[0].startswith(f"{prog}: error: "), err[0]
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, openfield_subset_dir) -> Path:
    model, schema = fit_small_model(openfield_subset_dir)
    return write_run(tmp_path_factory.mktemp("export_faults") / "run", model, schema, openfield_subset_dir)


@pytest.fixture(scope="module")
def artifact(run_dir) -> Path:
    """A good artifact in the folder every failing export is pointed at."""
    out = run_dir.parent / "artifact"
    assert main([str(run_dir), "--out", str(out), *QUICK]) == 0
    return out


def export_fails(run, artifact, capsys, args, *needles, code=EXIT_USER) -> str:
    """``tardis-export RUN --out ARTIFACT ARGS`` fails with one line; ARTIFACT is byte-identical and no staging
    folder is left."""
    before = snapshot(artifact)
    try:
        result = main([str(run), "--out", str(artifact), *args])
    except SystemExit as exit_info:  # argparse
        result = exit_info.code
    line = expect_one_line(capsys.readouterr().err, result, code, *needles)
    assert snapshot(artifact) == before
    assert not list(artifact.parent.glob(f".{artifact.name}.*")), "a staging folder was left behind"
    return line


def _file(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _truncated_checkpoint(run_dir: Path, tmp: Path) -> Path:
    data = (run_dir / CHECKPOINT_NAME).read_bytes()
    return _file(tmp / "cut" / CHECKPOINT_NAME, data[: len(data) // 2])


def _checkpoint_without_keys(run_dir: Path, tmp: Path) -> Path:
    path = tmp / "partial" / CHECKPOINT_NAME
    path.parent.mkdir()
    torch.save({"model": {}, "model_config": {}}, path)
    return path.parent


def _stage1_checkpoint(run_dir: Path, tmp: Path) -> Path:
    checkpoint = DeployCheckpoint.load(run_dir / CHECKPOINT_NAME)
    head_less = {k: v for k, v in checkpoint.model.items() if not k.startswith("head.")}
    (tmp / "stage1").mkdir()
    replace(checkpoint, model=head_less).save(tmp / "stage1" / CHECKPOINT_NAME)
    return tmp / "stage1"


def _run_with_config(text: bytes):
    def make(run_dir: Path, tmp: Path) -> Path:
        copy = tmp / "run"
        shutil.copytree(run_dir, copy)
        (copy / "config.yaml").write_bytes(text)
        return copy

    return make


def _unfinished_run(run_dir: Path, tmp: Path) -> Path:
    _file(tmp / "unfinished" / "keypoints_best.pt", b"")
    return tmp / "unfinished"


BAD_RUNS = {
    "missing run": (lambda r, t: t / "nowhere", ["nowhere does not exist"]),
    "run without model.pt": (_unfinished_run, ["has no model.pt", "keypoints_best.pt"]),
    "garbage model.pt": (
        lambda r, t: _file(t / "garbage" / CHECKPOINT_NAME, b"this is not a checkpoint"),
        ["model.pt cannot be read with torch.load(weights_only=True)"],
    ),
    "truncated model.pt": (_truncated_checkpoint, ["cut/model.pt cannot be read"]),
    "model.pt without schema": (_checkpoint_without_keys, ["lacks schema, input_size, heatmap_size, predict"]),
    "stage-1 model.pt": (_stage1_checkpoint, ["no heatmap head", "stage-1"]),
    "invalid config.yaml": (_run_with_config(b"data: [unclosed\n"), ["config.yaml is not valid YAML"]),
    "config.yaml a list": (_run_with_config(b"- a\n- b\n"), ["config.yaml must hold a mapping"]),
}


@pytest.mark.parametrize("case", sorted(BAD_RUNS))
def test_bad_runs(run_dir, artifact, tmp_path, capsys, case):
    make, needles = BAD_RUNS[case]
    export_fails(make(run_dir, tmp_path), artifact, capsys, QUICK, *needles)


BAD_OPTIONS = {
    "int8 without calib": (["--int8"], ["--int8 needs calibration data: pass --calib PATH"]),
    "calib missing": (["--int8", "--calib", "{tmp}/frames"], ["--calib", "frames does not exist"]),
    "calib empty folder": (["--int8", "--calib", "{tmp}/empty"], ["calibration folder", "empty holds no images"]),
    "opset 13": (["--opset", "13"], ["opset 13 is not supported", "--opset 17"]),
    "unknown decode": (["--decode", "fastest"], ["unknown --decode 'fastest'"]),
    "unknown calib method": (["--calib-method", "guess"], ["unknown --calib-method 'guess'"]),
    "calib size 0": (["--calib-size", "0"], ["--calib-size must be >= 1, got 0"]),
    "threads 0": (["--threads", "0"], ["--threads must be >= 1", "got 0"]),
    "trt batch order": (["--trt-batch", "8,1,32"], ["1 <= min <= opt <= max"]),
    "trt batch not numbers": (["--trt-batch", "small"], ["expected MIN,OPT,MAX", "'small'"]),
    "verification data missing": (["--no-engine", "--data", "{tmp}/absent"], ["absent"]),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_bad_options(run_dir, artifact, tmp_path, capsys, case):
    args, needles = BAD_OPTIONS[case]
    (tmp_path / "empty").mkdir()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    quick = [] if "--data" in args else QUICK
    export_fails(run_dir, artifact, capsys, [*quick, *args], *[n.replace("{tmp}", str(tmp_path)) for n in needles])


def test_out_is_a_file(run_dir, tmp_path, capsys):
    taken = _file(tmp_path / "taken", b"mine")
    code = main([str(run_dir), "--out", str(taken), *QUICK])
    expect_one_line(capsys.readouterr().err, code, EXIT_USER, f"--out {taken} is a file")
    assert taken.read_bytes() == b"mine"


def test_out_holds_other_files(run_dir, tmp_path, capsys):
    _file(tmp_path / "mine" / "notes.txt", b"keep")
    code = main([str(run_dir), "--out", str(tmp_path / "mine"), *QUICK])
    expect_one_line(capsys.readouterr().err, code, EXIT_USER, "holds files but no model.json")
    assert snapshot(tmp_path / "mine") == {"notes.txt": b"keep"}


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        main([str(tmp_path / "nowhere"), "--debug", *QUICK])


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # writes past it fail (Python ignores SIGXFSZ)

    return apply


def test_disk_full_during_export_keeps_the_old_artifact(run_dir, artifact):
    """A file-size limit below the size of a graph: exit 4, one line naming the file, the old artifact intact."""
    before = snapshot(artifact)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "export", str(run_dir), "--out", str(artifact), *QUICK],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_file_size(100_000),
    )
    err = done.stderr.strip().splitlines()
    assert done.returncode == EXIT_ENVIRONMENT, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and len(err) == 1, err
    assert err[0].startswith(f"tardis-export: error: {artifact}/tardis_fp32.onnx: "), err[0]
    assert "File too large" in err[0] or "no space left" in err[0], err[0]
    assert snapshot(artifact) == before
    assert not list(artifact.parent.glob(f".{artifact.name}.*")), "a staging folder was left behind"


def test_graph_copied_from_another_export_is_refused(run_dir, openfield_subset_dir, tmp_path, capsys):
    """Issue 13, finding 2: runs A and B exported into two folders; B's tardis_fp16.onnx copied over A's. The
    runtime opens only the files model.json lists, checked by size and hash: predict refuses, exit 2."""
    torch.manual_seed(1)
    model_b, schema = fit_small_model(openfield_subset_dir)
    with torch.no_grad():
        model_b.head.final.bias.add_(0.5)  # another model: other weights, the same architecture and file layout
    run_b = write_run(tmp_path / "run_b", model_b, schema, openfield_subset_dir)
    out_a, out_b = tmp_path / "export_a", tmp_path / "export_b"
    assert main([str(run_dir), "--out", str(out_a), "--fp16", *QUICK]) == 0
    assert main([str(run_b), "--out", str(out_b), "--fp16", *QUICK]) == 0
    import cv2

    frame = tmp_path / "frame.png"
    cv2.imwrite(str(frame), blob_frame((96, 72), [(40.0, 30.0)]))
    argv = ["predict", str(out_a), str(frame), "--precision", "fp16", "-q"]
    assert edge_main([*argv, "--out", str(tmp_path / "before")]) == 0  # A's own graph runs
    capsys.readouterr()
    shutil.copy(out_b / "tardis_fp16.onnx", out_a / "tardis_fp16.onnx")
    code = edge_main([*argv, "--out", str(tmp_path / "after")])
    expect_one_line(
        capsys.readouterr().err,
        code,
        EXIT_USER,
        "tardis_fp16.onnx has",
        "model.json lists",
        "re-export",
        prog="tardis-edge predict",
    )
    assert not (tmp_path / "after").exists() or not any((tmp_path / "after").iterdir())
