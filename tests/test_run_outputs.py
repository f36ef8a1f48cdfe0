"""What a run leaves for people to read: curve and overlay PNGs, ``--help`` of the entry points, and finished
stages that keep their weights but not their optimizer state."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_curves_plot_only_quantities_with_enough_points(tmp_path):
    from training.common import plot_curves

    path = tmp_path / "curves.png"
    plot_curves([{"epoch": 1, "loss": 1.0, "rmse_px": 5.0}, {"epoch": 2, "loss": 0.5}], path, "t")
    assert not path.exists()  # two points of loss, one of rmse: nothing worth a curve
    rows = [{"epoch": e, "loss": 1.0 / e} for e in range(1, 4)]
    rows[-1]["rmse_px"] = 5.0
    plot_curves(rows, path, "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_overlays_png_with_legend(tmp_path):
    from tardis_edge.data.sample import KeypointSchema, Sample
    from training.overlays import draw_overlays, frame_title

    image = np.full((60, 80, 3), 90, np.uint8)
    import cv2

    cv2.imwrite(str(tmp_path / "frame.png"), image)
    truth = np.array([[10.0, 10.0], [40.0, 30.0]])
    sample = Sample("some/long/folder/frame.png", tmp_path / "frame.png", truth, np.full(2, 2.0))
    schema = KeypointSchema(names=("a", "b"), skeleton=((0, 1),))
    path = tmp_path / "overlays.png"
    draw_overlays([sample], truth[None] + 1.0, np.ones((1, 2)), schema, path)
    assert cv2.imread(str(path)) is not None
    assert frame_title("labeled-data/arena1/img0100.png") == "img0100.png"
    assert len(frame_title("x" * 80)) == 34


def test_finished_checkpoint_drops_the_optimizer_state_and_resume_says_why(tmp_path):
    from training.common import drop_optimizer_state, load_checkpoint, resume, save_checkpoint

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    path = tmp_path / "keypoints_last.pt"
    save_checkpoint(path, model=model.state_dict(), optimizer=optimizer.state_dict(), epoch=3, step_in_epoch=0,
                    history=[], model_config={})  # fmt: skip
    drop_optimizer_state(path)
    state = load_checkpoint(path)
    assert "optimizer" not in state and state["epoch"] == 3 and "weight" in state["model"]
    with pytest.raises(RuntimeError, match="holds weights only"):
        resume(path, model, optimizer, "stage 2")


@pytest.mark.parametrize("module", ["training.full", "training.distill", "training.keypoints"])
def test_training_help_lists_every_config_field_with_its_default(module):
    out = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    from training.full import FullConfig, builtin_default

    demo = builtin_default(FullConfig())
    for line in (
        f"--data.input_size=256  [demo: {demo.data.input_size}]",  # a default and where the demo differs
        "--model.backbone=",
        "--distill.lr=",
        "--keypoints.sigma=2.0",
        "heatmap Gaussian, heatmap pixels",  # the field's comment
        "--keypoints.predict.flip_test=True",
    ):
        assert line in out.stdout
    assert "--keypoints.time_budget_s=0.0  " in out.stdout  # the demo trains by epochs: no [demo: ...] budget
