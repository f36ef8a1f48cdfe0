"""Multi-animal stage — the finder: a whole-frame centre head on the student, so the model finds every animal.

The finder is a second ``PoseModel`` of the same student architecture whose backbone and neck start from the
stage-2 weights and whose three-channel head (``tardis_edge.finder``) learns, on whole frames letterboxed to a
square input, a Gaussian at each animal's centre and the animal's box size. Targets come from the labelled
keypoints (no boxes needed). Loss: MSE on the centre heatmap + ``size_loss_weight`` x L1 on the sizes, weighted
by the centre Gaussians. Seeded, counted in epochs, resumable like the other stages.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tardis_edge import geometry
from tardis_edge.augment import PhotometricConfig, photometric
from tardis_edge.data.dataset import group_by_image
from tardis_edge.finder import NUM_CHANNELS, FinderConfig, encode_targets, instance_box
from training.common import (
    Dist,
    History,
    drop_optimizer_state,
    epoch_batches,
    mark_stage_done,
    plot_curves,
    resume,
    save_checkpoint,
    write_json,
)
from training.distill import Clock, lr_at

LOG = logging.getLogger("tardis")

FINDER_CHECKPOINT = "finder_last.pt"


@dataclass
class FinderTrainConfig:
    """The finder's recipe. ``enabled=auto`` trains it when some image of the data holds more than one animal."""

    enabled: str = "auto"  # auto | true | false
    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    size_loss_weight: float = 0.05  # sizes are ~0.1 (a fraction of the input side); the centre MSE is ~1e-3
    rotation_deg: float = 180.0  # uniform in +-; top-view cameras see animals at any angle
    scale_range: tuple[float, float] = (0.8, 1.25)
    shift_frac: float = 0.1
    flip_prob: float = 0.5
    checkpoint_every_steps: int = 50
    seed: int = 0
    time_budget_s: float = 0.0  # kept for lr_at/Clock; 0 = count epochs only
    photometric: PhotometricConfig = field(default_factory=lambda: PhotometricConfig(dropout_prob=0.1))
    decode: FinderConfig = field(default_factory=FinderConfig)


def wants_finder(cfg: FinderTrainConfig, images: list[list]) -> bool:
    """Whether the run trains a finder: asked for, or ``auto`` and some image holds more than one animal."""
    if cfg.enabled not in ("auto", "true", "false"):
        raise ValueError(f"--finder.enabled={cfg.enabled!r} is unknown; use auto, true or false")
    if cfg.enabled == "auto":
        return any(len(g) > 1 for g in images)
    return cfg.enabled == "true"


class FinderDataset(Dataset):
    """Whole frames letterboxed to the finder input, augmented (rotation, scale, shift, flip, photometric), with
    centre/size targets from every labelled animal in the frame."""

    def __init__(self, images: list[list], cfg: FinderTrainConfig, stride: float, epoch: int = 0) -> None:
        from tardis_edge.data.dataset import read_sample_image

        self.images, self.cfg, self.stride, self.epoch = images, cfg, stride, epoch
        self.side = cfg.decode.input_size
        self._read = read_sample_image  # video frames: from the frame cache (tardis_edge.data.frame_cache)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def image(self, index: int) -> np.ndarray:
        return self._read(self.images[index][0])

    def __getitem__(self, index: int) -> dict:
        cfg = self.cfg
        rng = np.random.default_rng((cfg.seed, self.epoch, index, 5))
        frame = self.image(index)
        side = self.side
        box = geometry.box_from_image(frame.shape[1::-1], (side, side))
        m = geometry.crop_affine(
            box,
            (side, side),
            rotation_deg=float(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)),
            flip=bool(rng.random() < cfg.flip_prob),
            shift_xy=tuple(rng.uniform(-cfg.shift_frac, cfg.shift_frac, 2)),
            scale=float(rng.uniform(*cfg.scale_range)),
        )
        crop = photometric(geometry.warp_image(frame, m, (side, side)), cfg.photometric, rng)
        centres, sizes = [], []
        for s in self.images[index]:
            cx, cy, w, h = instance_box(geometry.apply_affine(s.keypoints_xy, m), s.visible)
            centres.append((cx, cy))
            sizes.append((w, h))
        hm_side = int(side // self.stride)
        target, weight = encode_targets(
            np.array(centres).reshape(-1, 2),
            np.array(sizes).reshape(-1, 2),
            hm_side,
            self.stride,
            cfg.decode.sigma,
            side,
        )
        return {
            "image": torch.from_numpy(crop).permute(2, 0, 1).float(),
            "target": torch.from_numpy(target),
            "size_weight": torch.from_numpy(weight),
        }


def finder_loss(pred: torch.Tensor, target: torch.Tensor, size_weight: torch.Tensor, size_loss_weight: float):
    """``pred, target (N, 3, h, w)``, ``size_weight (N, h, w)`` -> (total, centre MSE, size L1)."""
    centre = ((pred[:, 0].float() - target[:, 0]) ** 2).mean()
    size_err = (pred[:, 1:].float() - target[:, 1:]).abs().sum(1)  # (N, h, w)
    size = (size_err * size_weight).sum() / size_weight.sum().clamp_min(1.0)
    return centre + size_loss_weight * size, centre, size


def build_finder(pose_model: torch.nn.Module, cfg: FinderTrainConfig) -> torch.nn.Module:
    """A ``PoseModel`` of the pose model's architecture with a 3-channel head; backbone and neck copied from it."""
    from tardis_edge.models import ModelConfig, build_model

    config = ModelConfig.from_dict(
        {
            **pose_model.config.to_dict(),
            "num_keypoints": NUM_CHANNELS,
            "input_size": (cfg.decode.input_size, cfg.decode.input_size),
            "use_decoder": False,
            "use_head": True,
        }
    )
    finder = build_model(config)
    encoder = {k: v for k, v in pose_model.state_dict().items() if k.startswith(("backbone.", "neck."))}
    missing, _ = finder.load_state_dict(encoder, strict=False)
    assert all(k.startswith("head.") for k in missing), missing  # only the new head starts from scratch
    return finder


def finder_runner(model: torch.nn.Module, device: torch.device, batch_size: int = 8):
    """The finder as a ``tardis_edge.finder.FinderRunner`` (numpy in, numpy out)."""

    def run(images: np.ndarray) -> np.ndarray:
        outs = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                x = torch.from_numpy(images[start : start + batch_size]).to(device)
                outs.append(model(x)["heatmaps"].float().cpu().numpy())
        return np.concatenate(outs)

    return run


def run_finder(
    pose_model: torch.nn.Module,
    train_samples: list,
    cfg: FinderTrainConfig,
    run_dir: Path,
    device: torch.device,
    d: Dist,
) -> tuple[torch.nn.Module, dict]:
    """Train the finder on the training part's frames; resumable. Returns the model and the stage summary."""
    from tqdm import tqdm

    images = group_by_image(train_samples)
    torch.manual_seed(cfg.seed)
    model = build_finder(pose_model, cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ckpt_path = run_dir / FINDER_CHECKPOINT
    point = resume(ckpt_path, model, optimizer, "finder")
    history = History()
    history.rows = point.history
    stride = float(model.out_stride)
    steps_per_epoch = math.ceil(len(images) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    clock = Clock(cfg.time_budget_s, point.elapsed_s)
    dataset = FinderDataset(images, cfg, stride)
    t0 = time.time()
    start_step = point.step_in_epoch

    def checkpoint(epoch: int, step: int) -> None:
        save_checkpoint(
            ckpt_path,
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            epoch=epoch,
            step_in_epoch=step,
            history=history.state(),
            model_config=model.config.to_dict(),
            elapsed_s=clock.elapsed(),
        )

    for epoch in range(point.epoch, cfg.epochs):
        dataset.set_epoch(epoch)
        batches = epoch_batches(len(images), cfg.batch_size, cfg.seed, epoch, 13, d)
        loader = DataLoader(dataset, batch_sampler=batches[start_step:], num_workers=0)
        model.train()
        sums = np.zeros(3)
        bar = tqdm(loader, desc=f"finder {epoch + 1}/{cfg.epochs}", leave=False, initial=start_step, total=len(batches))
        for step, batch in enumerate(bar, start=start_step):
            global_step = epoch * steps_per_epoch + step
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_at(global_step, clock.progress(global_step, total_steps), cfg)
            pred = model(batch["image"].to(device))["heatmaps"]
            loss, centre, size = finder_loss(
                pred, batch["target"].to(device), batch["size_weight"].to(device), cfg.size_loss_weight
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums += (loss.item(), centre.item(), size.item())
            bar.set_postfix(loss=f"{loss.item():.2e}")
            if (step + 1) % cfg.checkpoint_every_steps == 0 and step + 1 < len(batches):
                checkpoint(epoch, step + 1)
        n = max(1, len(batches) - start_step)
        start_step = 0
        history.add(epoch=epoch + 1, finder_loss=sums[0] / n, centre_loss=sums[1] / n, size_loss=sums[2] / n)
        LOG.info("finder epoch %d/%d: loss %.2e (centre %.2e, size %.3f)", epoch + 1, cfg.epochs, *(sums / n))
        checkpoint(epoch + 1, 0)
        plot_curves(history.rows, run_dir / "curves_finder.png", "finder: animal centres and sizes")
    summary = {
        "epochs": len(history.rows),
        "train_images": len(images),
        "train_animals": len(train_samples),
        "seconds_training": clock.elapsed(),
        "seconds": time.time() - t0,
        "input_size": cfg.decode.input_size,
        "stride": stride,
    }
    write_json(run_dir / "finder_history.json", history.rows)
    mark_stage_done(run_dir, "finder", summary)
    drop_optimizer_state(ckpt_path)
    return model, summary


def load_finder(run_dir: Path, device: torch.device) -> torch.nn.Module:
    """The trained finder of a run (``finder_last.pt``)."""
    from tardis_edge.models import build_model
    from training.common import load_checkpoint

    state = load_checkpoint(run_dir / FINDER_CHECKPOINT)
    model = build_model(state["model_config"])
    model.load_state_dict(state["model"])
    return model.to(device).eval()
