"""End-to-end training mechanics on a tiny built-in dataset: torchrun/gloo DDP, resume after a kill, and a step
with the integral (soft-argmax) loss through ``kernels.soft_argmax``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]
# A tiny recipe: 64 px crops, a few frames, one cheap backbone; stage 1 skipped where it is not the subject.
TINY = [*TINY_RUN, "--keypoints.eval_every=100"]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_cpu_processes_gloo(tmp_path):
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "training.full",
        f"--out={run}",
        "--skip_distill=true",
        "--keypoints.epochs=2",
        *TINY,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (run / "log.txt").read_text()
    assert "distributed: rank 0 of 2" in log
    assert "DDP: 2 replicas in sync" in proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stage1"] == "skipped" and summary["test_samples"] == 2
    # 8 train samples, batch 4, 2 ranks: one step per rank per epoch; rank 0 alone wrote the run folder
    history = json.loads((run / "keypoints_history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    run = tmp_path / "resume"
    cmd = [
        sys.executable,
        "-m",
        "training.full",
        f"--out={run}",
        *TINY[:-3],
        # after TINY, so they win: 4 steps an epoch leave time to see a mid-epoch checkpoint before the run ends
        "--skip_distill=true",
        "--keypoints.epochs=3",
        "--keypoints.batch_size=2",
        "--keypoints.checkpoint_every_steps=1",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpt = run / "keypoints_last.pt"
    deadline = time.time() + 300
    state = None
    try:
        while time.time() < deadline:  # kill as soon as a mid-epoch checkpoint of epoch 2 exists
            if ckpt.exists():
                try:
                    state = torch.load(ckpt, weights_only=True)
                except Exception:  # noqa: BLE001 - the rename is atomic, but a read can race the next write
                    state = None
                if state is not None and state["epoch"] == 1 and state["step_in_epoch"] >= 1:
                    break
            if proc.poll() is not None:
                pytest.fail(f"run ended before it could be killed: {proc.stderr.read()[-2000:]}")
            time.sleep(0.05)
        else:
            pytest.fail("no mid-epoch checkpoint within 300 s")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (run / "summary.json").exists()
    killed_at = (state["epoch"], state["step_in_epoch"])
    again = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = [line for line in again.stderr.splitlines() if "stage 2: resuming from" in line]
    assert resumed, again.stderr[-2000:]
    # the checkpoint we saw, or a later one written before the kill landed
    epoch, step = (int(v) for v in resumed[0].rsplit("(epoch ", 1)[1].rstrip(")").split(", step "))
    assert (epoch - 1, step) >= killed_at
    history = json.loads((run / "keypoints_history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3]  # no epoch lost or repeated
    assert (run / "summary.json").exists()


def test_integral_loss_step_through_the_kernel_soft_argmax():
    """One optimiser step with the integral loss: gradients flow through ``kernels.soft_argmax``."""
    from training.keypoints import heatmap_loss, integral_loss

    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 2, 3, padding=1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(2, 3, 16, 16)
    target_xy = torch.tensor([[[20.0, 8.0], [40.0, 44.0]], [[4.0, 4.0], [60.0, 30.0]]])  # input px, stride 4
    weights = torch.ones(2, 2)
    before = net.weight.detach().clone()
    pred = net(x)
    loss = integral_loss(pred, target_xy, weights, beta=10.0, stride=4.0) + heatmap_loss(
        pred, torch.zeros_like(pred), weights
    )
    loss.backward()
    assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(before, net.weight.detach())
    with torch.no_grad():
        after = integral_loss(net(x), target_xy, weights, beta=10.0, stride=4.0)
    assert after < loss  # the step moved the soft-argmax toward the labels
