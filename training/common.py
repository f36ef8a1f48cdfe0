"""What every training stage shares: the run folder, logging, checkpoints (atomic, resumable), curves, and
torchrun/DDP plumbing (rank-0 I/O). Versions and the git SHA are ``tardis_edge.provenance``'s."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from tardis_edge.io import atomic_torch_save, atomic_write_text, strict_json

LOG = logging.getLogger("tardis")


# ---------------------------------------------------------------- distributed (torchrun)
@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device | None = None) -> Dist:
    """Join the process group when launched by ``torchrun`` (env WORLD_SIZE > 1); NCCL on CUDA, else gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        backend = "nccl" if (device is not None and device.type == "cuda") else "gloo"
        dist.init_process_group(backend=backend)
    return Dist(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def all_reduce_mean(value: float, d: Dist) -> float:
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / d.world_size


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; use --device=cpu or auto")
    return dev


# ---------------------------------------------------------------- run folder, logging
def setup_logging(run_dir: Path, d: Dist | None = None) -> None:
    """Log to stderr and to ``run_dir/log.txt`` (rank 0 only writes the file)."""
    root = logging.getLogger("tardis")
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    stream = logging.StreamHandler()
    stream.setFormatter(fmt)
    root.addHandler(stream)
    if d is None or d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(run_dir / "log.txt")
        fh.setFormatter(fmt)
        root.addHandler(fh)
    root.propagate = False


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, strict_json(data, default=str) + "\n")


# ---------------------------------------------------------------- stage bookkeeping
def stage_done_path(run_dir: Path, stage: str) -> Path:
    return run_dir / "stages" / f"{stage}.done.json"


def stage_is_done(run_dir: Path, stage: str) -> bool:
    return stage_done_path(run_dir, stage).exists()


def mark_stage_done(run_dir: Path, stage: str, summary: dict) -> None:
    write_json(stage_done_path(run_dir, stage), {"stage": stage, "finished": time.time(), **summary})


def read_stage_summary(run_dir: Path, stage: str) -> dict:
    return json.loads(stage_done_path(run_dir, stage).read_text())


# ---------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, **state: Any) -> None:
    """Atomic ``torch.save`` of plain containers and tensors (loadable with ``weights_only=True``)."""
    atomic_torch_save(state, path)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    if not Path(path).exists():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a truncated/corrupt file: say which and what to do
        raise RuntimeError(f"checkpoint {path} cannot be read ({exc}); delete it to restart that stage") from exc


def drop_optimizer_state(path: Path) -> None:
    """A finished stage keeps its weights, not its optimizer state: rewrite checkpoint ``path`` without it.

    AdamW's two moments are twice the weights; nothing reads them once the stage is done (a finished stage is
    skipped on resume; evaluation and export read the weights and the model config, which stay).
    """
    if not Path(path).exists():
        return
    state = load_checkpoint(path)
    if state.pop("optimizer", None) is not None:
        save_checkpoint(path, **state)


@dataclass
class ResumePoint:
    """Where a stage continues: epoch and step within it, the history so far, training time spent, extras."""

    epoch: int = 0
    step_in_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    elapsed_s: float = 0.0
    state: dict = field(default_factory=dict)


def resume(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, stage: str) -> ResumePoint:
    """Load the stage's last checkpoint into ``model`` and ``optimizer`` if there is one (else start fresh)."""
    if not path.exists():
        return ResumePoint()
    state = load_checkpoint(path)
    if "optimizer" not in state:
        raise RuntimeError(
            f"{path} holds weights only: its stage finished and dropped the optimizer state "
            f"(see {path.parent / 'stages'}); a finished stage is skipped, so its done-marker is missing. "
            "Train into a new --out folder to run the stage again"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    point = ResumePoint(
        int(state["epoch"]),
        int(state["step_in_epoch"]),
        list(state["history"]),
        float(state.get("elapsed_s", 0.0)),
        state,
    )
    LOG.info("%s: resuming from %s (epoch %d, step %d)", stage, path, point.epoch + 1, point.step_in_epoch)
    return point


def epoch_batches(num_samples: int, batch_size: int, seed: int, epoch: int, stream: int, d: Dist) -> list[list[int]]:
    """This rank's batches of sample indices for one epoch.

    The permutation is seeded by ``(seed, epoch, stream)``, so every rank and every resume sees the same one; each
    rank takes every ``world_size``-th index (a distributed sampler without padding).
    """
    order = np.random.default_rng((seed, epoch, stream)).permutation(num_samples)[d.rank :: d.world_size]
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


# ---------------------------------------------------------------- curves
@dataclass
class History:
    """Per-epoch scalars for the PNG curves and the summary (kept in the checkpoint for resume)."""

    rows: list[dict[str, float]] = field(default_factory=list)

    def add(self, **values: float) -> None:
        self.rows.append({k: float(v) for k, v in values.items()})

    def state(self) -> list[dict[str, float]]:
        return list(self.rows)


CURVE_KEYS = ("rmse_px", "mean_px", "PCK@0.05", "PCK@0.1", "AP")  # metrics worth a panel (plus every *loss*)


def plot_curves(rows: list[dict[str, float]], path: Path, title: str, columns: int = 3, min_points: int = 3) -> None:
    """Loss and the headline metrics against epoch, one panel each, written atomically as PNG.

    A quantity gets a panel only once it has ``min_points`` finite values (a curve of one or two points says
    nothing and its axis is all padding); with no such quantity no file is written.
    """
    if not rows:
        return

    def count(key: str) -> int:
        return sum(1 for r in rows if key in r and np.isfinite(r[key]))

    present = {k for r in rows for k in r}
    candidates = sorted(k for k in present if "loss" in k) + [k for k in CURVE_KEYS if k in present]
    keys = [k for k in candidates if count(k) >= min_points]
    if not keys:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = min(columns, len(keys))
    nrows = (len(keys) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), squeeze=False)
    for ax in axes.flat[len(keys) :]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys, strict=False):
        pts = [(r.get("epoch", i), r[key]) for i, r in enumerate(rows) if key in r and np.isfinite(r[key])]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3)
        ax.set_title(key)
        ax.set_xlabel("epoch")
        if "loss" in key or key.endswith("_px"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    from tardis_edge.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
