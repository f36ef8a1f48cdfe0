"""Stage 1 — distillation: student + neck + 1x1 decoder regress the cached DINOv2 patch-feature maps.

The teacher ran once per sample (``training.extract``); here each step warps the cached map with the same
affine as the student's augmented crop (plus a validity mask), so geometric augmentation costs no teacher
passes. Photometric augmentation touches the student input only. Loss: MSE masked by validity.

    python -m training.distill --out=runs/x [--data=...] [--distill.epochs=30 ...]
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
from training.common import (
    Dist,
    History,
    all_reduce_mean,
    epoch_batches,
    mark_stage_done,
    plot_curves,
    resume,
    save_checkpoint,
)

LOG = logging.getLogger("tardis")


@dataclass
class GeometricConfig:
    """Geometric augmentation, applied through the crop affine to image, keypoints and teacher maps alike."""

    flip_prob: float = 0.5
    rotation_deg: float = 30.0  # uniform in +-rotation_deg
    rotation_prob: float = 0.6
    scale_range: tuple[float, float] = (0.75, 1.35)  # >1 zooms out
    shift_frac: float = 0.12  # uniform in +-shift_frac of the box size


@dataclass
class DistillConfig:
    """Stage 1 recipe."""

    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    time_budget_s: float = 0.0  # > 0: stop after this much training wall time; the LR schedule follows the clock
    normalize_targets: bool = True  # standardise teacher channels with cache-wide mean/std (MSE on comparable scales)
    checkpoint_every_steps: int = 50  # plus one at every epoch end; a killed run resumes from the latest
    num_workers: int = 0
    seed: int = 0
    geometric: GeometricConfig = field(default_factory=GeometricConfig)
    photometric: PhotometricConfig = field(default_factory=PhotometricConfig)


def crop_config(
    geo: GeometricConfig,
    input_wh: tuple[int, int],
    heatmap_wh: tuple[int, int],
    sigma: float = 2.0,
    box_source: str = "auto",
):
    """The data stage's ``CropConfig`` for this augmentation recipe (one place turns the recipe into crops)."""
    from tardis_edge.data.crops import CropConfig

    return CropConfig(
        input_wh=tuple(input_wh),
        heatmap_wh=tuple(heatmap_wh),
        sigma=sigma,
        box_source=box_source,
        flip_prob=geo.flip_prob,
        rotation_deg=geo.rotation_deg,
        rotation_prob=geo.rotation_prob,
        scale_range=tuple(geo.scale_range),
        shift_frac=geo.shift_frac,
    )


class ImageStore:
    """Decoded frames kept in memory across epochs (video frames are slow to seek; a few hundred fit easily)."""

    def __init__(self) -> None:
        self._images: dict[str, np.ndarray] = {}

    def get(self, sample) -> np.ndarray:
        from tardis_edge.data.dataset import read_sample_image

        image = self._images.get(sample.sample_id)
        if image is None:
            image = read_sample_image(sample)
            self._images[sample.sample_id] = image
        return image


class DistillDataset(Dataset):
    """Augmented student crops and the matching warped teacher maps from the feature cache."""

    def __init__(
        self,
        samples: list,
        cache,
        input_wh: tuple[int, int],
        heatmap_wh: tuple[int, int],
        cfg: DistillConfig,
        channel_mean: np.ndarray | None,
        channel_std: np.ndarray | None,
        epoch: int = 0,
        images: ImageStore | None = None,
    ) -> None:
        self.samples = samples
        self.images = images or ImageStore()
        self.crop_cfg = crop_config(cfg.geometric, input_wh, heatmap_wh)
        self.cache = cache
        self.input_wh = input_wh
        self.heatmap_wh = heatmap_wh
        self.cfg = cfg
        self.mean = channel_mean
        self.std = channel_std
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        from tardis_edge.data.crops import CropParams
        from tardis_edge.feature_cache import warp_cached_features

        rng = np.random.default_rng((self.cfg.seed, self.epoch, index))
        sample = self.samples[index]
        entry = self.cache.read(sample.sample_id)
        box = geometry.CropBox(*[float(v) for v in entry.box])
        p = CropParams.draw(self.crop_cfg, rng)
        student_m = geometry.crop_affine(box, self.input_wh, p.rotation_deg, p.flip, p.shift_xy, p.scale)
        image = self.images.get(sample)
        crop = geometry.warp_image(image, student_m, self.input_wh)
        crop = photometric(crop, self.cfg.photometric, rng)
        feats, mask = warp_cached_features(
            torch.from_numpy(np.asarray(entry.features, dtype=np.float32)),
            entry.affine,
            student_m,
            out_hw=(self.heatmap_wh[1], self.heatmap_wh[0]),
            stride=geometry.heatmap_stride(self.input_wh, self.heatmap_wh),
            teacher_stride=self.cache.patch_size,
        )
        if self.mean is not None:
            feats = (feats - torch.from_numpy(self.mean)[:, None, None]) / torch.from_numpy(self.std)[:, None, None]
        return {
            "image": torch.from_numpy(crop).permute(2, 0, 1).float(),  # (3, H, W) RGB 0..255
            "features": feats.float(),  # (C, h, w)
            "mask": mask.float().reshape(1, *feats.shape[-2:]),  # (1, h, w)
        }


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over valid positions and all channels.

    ``pred, target (N, C, h, w)``, ``mask (N, 1, h, w)``.
    """
    sq = (pred.float() - target) ** 2 * mask
    return sq.sum() / (mask.sum() * pred.shape[1]).clamp_min(1.0)


def lr_at(step: int, progress: float, cfg: DistillConfig | object) -> float:
    """LR factor: linear warm-up over ``warmup_steps``, then cosine decay to 1% as ``progress`` goes 0 -> 1
    (shared by both stages; ``progress`` is steps done / total steps, or elapsed / time budget)."""
    warm = getattr(cfg, "warmup_steps", 0)
    if step < warm:
        return (step + 1) / warm
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))


class Clock:
    """Training wall time across resumes, and the optional time budget that ends a stage."""

    def __init__(self, budget_s: float, elapsed_before_s: float = 0.0) -> None:
        self.budget_s = budget_s
        self.before = elapsed_before_s
        self.start = time.time()

    def elapsed(self) -> float:
        return self.before + time.time() - self.start

    def progress(self, step: int, total_steps: int) -> float:
        by_steps = step / max(1, total_steps)
        return max(by_steps, self.elapsed() / self.budget_s) if self.budget_s > 0 else by_steps

    def exhausted(self) -> bool:
        return self.budget_s > 0 and self.elapsed() >= self.budget_s


def run_distill(
    model: torch.nn.Module,
    samples: list,
    cache,
    cfg: DistillConfig,
    run_dir: Path,
    input_wh: tuple[int, int],
    heatmap_wh: tuple[int, int],
    device: torch.device,
    d: Dist,
    model_config: dict,
) -> dict:
    """Train ``model`` (student + neck + decoder) to regress the cached teacher maps; resumable.

    Returns:
        A summary dict (final loss, epochs, steps, seconds).
    """
    from tqdm import tqdm

    ckpt_path = run_dir / "distill_last.pt"
    stats = cache.channel_stats() if cfg.normalize_targets else (None, None)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    history = History()
    point = resume(ckpt_path, model, optimizer, "stage 1")
    start_epoch, start_step, elapsed_before = point.epoch, point.step_in_epoch, point.elapsed_s
    history.rows = point.history
    ddp_model = model
    if d.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(model)

    steps_per_epoch = math.ceil(len(samples) / (cfg.batch_size * d.world_size))
    total_steps = steps_per_epoch * cfg.epochs
    t0 = time.time()
    clock = Clock(cfg.time_budget_s, elapsed_before)
    last_loss = float("nan")
    images = ImageStore()
    for epoch in range(start_epoch, cfg.epochs):
        dataset = DistillDataset(
            samples, cache, input_wh, heatmap_wh, cfg, stats[0], stats[1], epoch=epoch, images=images
        )
        # Same permutation on every rank and on resume: seeded by (seed, epoch); each rank takes its stride.
        batches = epoch_batches(len(samples), cfg.batch_size, cfg.seed, epoch, 7, d)
        loader = DataLoader(dataset, batch_sampler=batches[start_step:], num_workers=cfg.num_workers)
        model.train()
        losses = []
        bar = tqdm(
            loader,
            desc=f"distill {epoch + 1}/{cfg.epochs}",
            disable=not d.is_main,
            leave=False,
            initial=start_step,
            total=len(batches),
        )
        for step, batch in enumerate(bar, start=start_step):
            global_step = epoch * steps_per_epoch + step
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_at(global_step, clock.progress(global_step, total_steps), cfg)
            out = ddp_model(batch["image"].to(device))
            loss = masked_mse(out["features"], batch["features"].to(device), batch["mask"].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if d.is_main and (step + 1) % cfg.checkpoint_every_steps == 0 and step + 1 < len(batches):
                save_checkpoint(
                    ckpt_path,
                    model=model.state_dict(),
                    optimizer=optimizer.state_dict(),
                    epoch=epoch,
                    step_in_epoch=step + 1,
                    history=history.state(),
                    model_config=model_config,
                    elapsed_s=clock.elapsed(),
                )
            if clock.exhausted():
                break
        start_step = 0
        last_loss = all_reduce_mean(float(np.mean(losses)) if losses else float("nan"), d)
        history.add(epoch=epoch + 1, distill_loss=last_loss)
        if d.is_main:
            LOG.info("stage 1 epoch %d/%d: masked MSE %.4f (%.0fs)", epoch + 1, cfg.epochs, last_loss, time.time() - t0)
            save_checkpoint(
                ckpt_path,
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                epoch=epoch + 1,
                step_in_epoch=0,
                history=history.state(),
                model_config=model_config,
                elapsed_s=clock.elapsed(),
            )
            plot_curves(history.rows, run_dir / "curves_distill.png", "stage 1: distillation")
        if clock.exhausted():
            LOG.info("stage 1: time budget of %.0f s spent after %d epochs", cfg.time_budget_s, epoch + 1)
            break
    if history.rows:
        last_loss = history.rows[-1]["distill_loss"]
    summary = {
        "final_loss": last_loss,
        "epochs": len(history.rows),
        "samples": len(samples),
        "seconds": clock.elapsed(),
        "time_budget_s": cfg.time_budget_s,
    }
    if d.is_main:
        save_checkpoint(
            run_dir / "distill_final.pt", model=model.state_dict(), model_config=model_config, history=history.state()
        )
        mark_stage_done(run_dir, "distill", summary)
        # the stage is done (skipped on resume) and distill_final.pt holds its weights: the last checkpoint's
        # optimizer state is dead weight (2/3 of the file)
        ckpt_path.unlink(missing_ok=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m training.distill``: the same config and run folder as ``training.full``, this stage only."""
    from training.full import main as full_main

    return full_main(argv, stages=("extract", "distill"), prog="python -m training.distill")


if __name__ == "__main__":
    import sys

    from training.full import cli

    sys.exit(cli(sys.argv[1:], stages=("extract", "distill"), prog="python -m training.distill"))
