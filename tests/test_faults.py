"""Fault suite of ``python -m training.full`` (issue 13): every bad input or machine fault ends in one line naming the
file or value, a documented exit code (``tardis_edge.errors``), no traceback, and earlier good files untouched."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN, data_path

from tardis_edge.errors import EXIT_ENVIRONMENT, EXIT_USER

ROOT = Path(__file__).resolve().parents[1]
OPENFIELD = "data/openfield-Pranav-2018-10-30"
TINY = [*TINY_RUN, "--keypoints.epochs=1", "--keypoints.time_budget_s=0", "--skip_distill=true"]

WITH_STAGE1 = [a for a in TINY if a != "--skip_distill=true"] + ["--distill.epochs=1", "--extract.resolution=56"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished tiny run whose files must survive every failed rerun byte for byte."""
    from training.full import main

    run = tmp_path_factory.mktemp("finished") / "run"
    assert main([f"--out={run}", *TINY]) == 0
    return run


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("project") / "project"
    shutil.copytree(data_path(OPENFIELD), copy)
    return copy


def expect_one_line(capsys, code: int, expected_code: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == expected_code, err
    assert err, "no message"
    last = err[-1]
    assert "Traceback" not in "\n".join(err), "\n".join(err)
    assert last.startswith("python -m training.full: error: "), last
    for needle in needles:
        assert needle in last, (needle, last)
    return last


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


BAD_ARGS = {
    "unknown config key": (["--nope=1"], ["unknown config key(s) nope", "known keys"]),
    "unknown nested key": (["--keypoints.epoch=3"], ["keypoints.epoch", "known keys"]),
    "wrong type int": (["--keypoints.epochs=abc"], ["keypoints.epochs", "expected an integer", "'abc'"]),
    "wrong type float": (["--keypoints.lr=fast"], ["keypoints.lr", "expected a number"]),
    "wrong type bool": (["--skip_distill=maybe"], ["skip_distill", "expected true/false"]),
    "override without value": (["--keypoints.epochs"], ["must look like --key=value"]),
    "missing data path": (["--data=/nonexistent/project"], ["/nonexistent/project does not exist", "DeepLabCut"]),
    "unknown split method": (["--data.split.method=openfield"], ["openfield", "use one of fraction"]),
    "split pattern matches nothing": (
        ["--data.split.method=names", "--data.split.test=nope.png"],
        ["'nope.png' matches no image"],
    ),
    "split fractions": (["--data.split.train_fraction=1.5"], ["train_fraction=1.5"]),
    "best without validation": (["--keypoints.final_checkpoint=best"], ["needs a validation part"]),
    "unknown final checkpoint": (["--keypoints.final_checkpoint=middle"], ["'middle' is unknown"]),
    "unknown stage": (["--stages=extract,train"], ["unknown stage(s) ['train']"]),
    "unknown random teacher": (["--random_teacher=vitx99"], ["vitx99"]),
    "missing teacher": (["--teacher=/nonexistent/dinov2.pth"], ["dinov2.pth: teacher checkpoint not found"]),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGS))
def test_bad_arguments(tmp_path, capsys, case):
    from training.full import cli

    args, needles = BAD_ARGS[case]
    tiny = WITH_STAGE1 if "teacher" in case else TINY  # the teacher is read by stage 1
    code = cli([f"--out={tmp_path / 'run'}", *tiny, *args])
    expect_one_line(capsys, code, EXIT_USER, *needles)


BAD_FILES = {
    "invalid yaml": ("config.yaml", "data:\n  path: [unclosed\n", ["config.yaml line 3", "not valid YAML"]),
    "yaml list": ("config.yaml", "- a\n- b\n", ["must hold a mapping at the top level"]),
    "binary config": ("config.yaml", b"\xff\xfe\x00garbage", ["not a text (UTF-8) file"]),
    "garbage teacher": ("teacher.pth", b"not a checkpoint at all", ["teacher.pth cannot be read", "DINOv2 .pth"]),
    "teacher of another kind": ("teacher.pth", None, ["teacher.pth", "DINOv2"]),
    "coco json invalid": ("data.json", "{not json", ["data.json"]),
    "coco json without annotations": ("data.json", json.dumps({"images": []}), ["data.json"]),
    "plain text data file": ("data.txt", "hello", ["cannot tell the dataset format", "data.txt"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files(tmp_path, capsys, case):
    from training.full import cli

    name, content, needles = BAD_FILES[case]
    if content is None:
        torch.save({"just": torch.zeros(3)}, tmp_path / name)
        path = tmp_path / name
    else:
        path = _write(tmp_path / name, content)
    option = {"config.yaml": [str(path)], "teacher.pth": [f"--teacher={path}"]}.get(name, [f"--data={path}"])
    code = cli([*option, f"--out={tmp_path / 'run'}", *(WITH_STAGE1 if "teacher" in case else TINY)])
    expect_one_line(capsys, code, EXIT_USER, *needles)


BROKEN_PROJECTS = {
    "config without bodyparts": ("config.yaml", lambda t: t.replace("bodyparts:", "bodyparts_old:"), ["bodyparts"]),
    "labels with a letter": (
        "labeled-data/m4s1/CollectedData_Pranav.csv",
        lambda t: t.replace("21.521", "21.5x1"),
        ["row 4 of", "'21.5x1' is not a number"],
    ),
    "labels cut mid-row": (
        "labeled-data/m4s1/CollectedData_Pranav.csv",
        lambda t: t[: t.rindex(",") - 3],
        ["cut short", "truncated"],
    ),
    "image missing": ("labeled-data/m4s1/img0003.png", None, ["img0003.png", "does not exist"]),
    "labels twice": (
        "labeled-data/m4s1/CollectedData_Pranav.csv",
        lambda t: t + t.splitlines(keepends=True)[3],
        ["labelled twice", "keep one row"],
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_PROJECTS))
def test_broken_projects(tmp_path, capsys, project, case):
    from training.full import cli

    broken = tmp_path / "project"
    shutil.copytree(project, broken)
    (broken / "labeled-data/m4s1/CollectedData_Pranav.h5").unlink()  # the CSV is the one read
    relative, edit, needles = BROKEN_PROJECTS[case]
    target = broken / relative
    if edit is None:
        target.unlink()
    else:
        target.write_text(edit(target.read_text()))
    code = cli([f"--data={broken}", f"--out={tmp_path / 'run'}", *TINY])
    expect_one_line(capsys, code, EXIT_USER, *needles)


def test_out_is_a_file(tmp_path, capsys):
    from training.full import cli

    (tmp_path / "taken").write_text("mine")
    code = cli([f"--out={tmp_path / 'taken'}", *TINY])
    expect_one_line(capsys, code, EXIT_USER, "taken is a file, not a folder")
    assert (tmp_path / "taken").read_text() == "mine"


@pytest.mark.parametrize(
    "change",
    [["--data.input_size=96", "--data.heatmap_size=24"], ["--model.backbone=resnet18"], ["--keypoints.epochs=2"],
     ["--data.split.train_fraction=0.5"], ["--keypoints.predict.decode=dark"]],
    ids=["input size", "backbone", "epochs", "split", "decode"],
)  # fmt: skip
def test_finished_run_is_never_rewritten_under_another_config(finished_run, capsys, change):
    from training.full import cli

    before = snapshot(finished_run)
    code = cli([f"--out={finished_run}", *TINY, *change])
    expect_one_line(capsys, code, EXIT_USER, "holds a run with another config", change[0].split("=")[0][2:])
    assert snapshot(finished_run) == before


def test_debug_shows_the_traceback(tmp_path):
    from training.full import cli

    with pytest.raises(KeyError, match="unknown config key"):
        cli([f"--out={tmp_path / 'run'}", "--nope=1", "--debug"])


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(
            resource.RLIMIT_FSIZE, (limit, limit)
        )  # writes past it fail with EFBIG (Python ignores SIGXFSZ)

    return apply


@pytest.mark.parametrize("limit", [2_000, 300_000], ids=["first file", "checkpoint"])
def test_disk_full_ends_in_one_line_and_exit_4(tmp_path, limit):
    """A full disk (simulated by a file-size limit on the process) at the first write or at a checkpoint."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "training.full", f"--out={run}", *TINY],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_file_size(limit),
    )
    err = done.stderr.strip().splitlines()
    assert done.returncode == EXIT_ENVIRONMENT, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert err[-1].startswith("python -m training.full: error: ") and str(run) in err[-1], err[-1]
    assert "File too large" in err[-1] or "no space left" in err[-1], err[-1]
    assert not list(run.rglob("*.tmp")), "a temporary file was left behind"
