"""Stage 2 — keypoints: the decoder is dropped and a heatmap head on the same neck learns the keypoints.

Target-weighted MSE on Gaussian heatmaps (optionally + an integral soft-argmax loss through the Triton
kernel's autograd function); modes: all labels or few-shot (N labelled images per category, seeded),
frozen or fine-tuned encoder. Evaluation every few epochs on the held-out split, detector-free
(whole frame, then a crop around the model's own keypoints) with flip test; the best checkpoint is kept.

    python -m training.keypoints --out=runs/x [--keypoints.epochs=60 ...]
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
from tardis_edge.codec import flip_indices_from_pairs
from tardis_edge.predict import PredictConfig, predict_frames
from training.common import (
    Dist,
    History,
    all_reduce_mean,
    drop_optimizer_state,
    epoch_batches,
    mark_stage_done,
    plot_curves,
    resume,
    save_checkpoint,
    write_json,
)
from training.distill import Clock, GeometricConfig, crop_config, lr_at

LOG = logging.getLogger("tardis")


@dataclass
class KeypointsConfig:
    """Stage 2 recipe."""

    epochs: int = 60
    batch_size: int = 16
    lr: float = 1e-3
    encoder_lr_scale: float = 1.0  # encoder lr = lr * this (fine-tuned); ignored when frozen
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    time_budget_s: float = 0.0  # > 0: stop after this much training wall time; the LR schedule follows the clock
    freeze_encoder: bool = False
    few_shot_per_category: int = 0  # 0 = all labelled training images; N = N images per category (seeded)
    sigma: float = 2.0  # heatmap Gaussian, heatmap pixels
    integral_loss_weight: float = 0.0  # > 0 adds L1 on soft-argmax keypoints (input pixels / stride)
    softargmax_beta: float = 20.0
    whole_frame_prob: float = 0.25  # share of crops taken on the whole frame, as pass 1 of inference sees it
    eval_every: int = 5  # epochs between evaluations on the validation part (none without a validation part)
    best_metric: str = "rmse_px"  # lower is better for *_px / rmse, higher for AP / PCK
    final_checkpoint: str = "auto"  # auto | best | last: best = by best_metric on the validation part (never test);
    # auto = best when the split has a validation part, else last. What evaluate and export use.
    checkpoint_every_steps: int = 50
    num_workers: int = 0
    seed: int = 0
    memory_replay: bool = False  # with --init_from: keypoints a sample's dataset lacks get that run's predictions
    geometric: GeometricConfig = field(default_factory=GeometricConfig)
    photometric: PhotometricConfig = field(default_factory=lambda: PhotometricConfig(dropout_prob=0.2))
    predict: PredictConfig = field(default_factory=PredictConfig)


class KeypointDataset(Dataset):
    """Augmented top-down crops of labelled samples with Gaussian targets (``tardis_edge.data.crops``) plus
    photometric augmentation.

    A crop is the labelled-keypoint box (shifted and scaled by the augmentation, so boxes predicted at inference
    work) or, with probability ``whole_frame_prob``, the whole frame (pass 1 of detector-free inference).
    """

    def __init__(self, samples, schema, input_wh, heatmap_wh, cfg: KeypointsConfig, epoch: int = 0) -> None:
        from tardis_edge.data.crops import TopDownDataset

        self.cfg = cfg
        self.epoch = epoch
        boxed = crop_config(cfg.geometric, input_wh, heatmap_wh, cfg.sigma)
        whole = crop_config(cfg.geometric, input_wh, heatmap_wh, cfg.sigma, box_source="image")
        self.boxed = TopDownDataset(samples, boxed, schema, seed=cfg.seed, cache_images=True)
        self.whole = TopDownDataset(samples, whole, schema, seed=cfg.seed + 1)
        self.whole._images = self.boxed._images  # one decoded copy of each frame
        self.whole.cache_images = True

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.boxed.set_epoch(epoch)
        self.whole.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.boxed)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng((self.cfg.seed, self.epoch, index, 2))
        item = (self.whole if rng.random() < self.cfg.whole_frame_prob else self.boxed)[index]
        crop = item["image"].permute(1, 2, 0).numpy().astype(np.uint8)  # (H, W, 3) RGB
        item["image"] = torch.from_numpy(photometric(crop, self.cfg.photometric, rng)).permute(2, 0, 1).float()
        return item


def heatmap_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Target-weighted MSE: ``pred, target (N, K, h, w)``, ``weights (N, K)``."""
    per_kp = ((pred.float() - target) ** 2).mean(dim=(-2, -1))
    return (per_kp * weights).sum() / weights.sum().clamp_min(1.0)


def integral_loss(
    pred: torch.Tensor, keypoints_input: torch.Tensor, weights: torch.Tensor, beta: float, stride: float
) -> torch.Tensor:
    """L1 between soft-argmax keypoints (Triton kernel on CUDA, reference on CPU) and the labels, heatmap px."""
    import kernels

    xy = kernels.soft_argmax(pred.float().contiguous(), beta)  # (N, K, 2) heatmap pixels
    err = (xy - keypoints_input / stride).abs().sum(-1)
    return (err * weights).sum() / weights.sum().clamp_min(1.0)


def evaluate_model(
    model, samples, schema, input_wh, cfg: PredictConfig, device, decode_backend: str = "auto"
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Detector-free prediction on ``samples`` (``tardis_edge.predict``) and the project's metrics (RMSE/PCK/AP).

    The model is the predictor's crop runner (``kernels.predict.model_crop_runner``): its heatmaps decode through
    ``kernels.decode_heatmaps`` with ``decode_backend`` (``"auto"``: the Triton kernel on CUDA, the PyTorch
    reference on CPU).
    """
    from kernels.predict import model_crop_runner
    from tardis_edge.data.dataset import read_sample_image
    from tardis_edge.metrics import evaluate_predictions

    model.eval()
    images = [read_sample_image(s) for s in samples]
    perm = flip_indices_from_pairs(schema.num_keypoints, schema.flip_pairs)
    run = model_crop_runner(model, cfg, perm, device, backend=decode_backend)
    kps, scores, _ = predict_frames(run, images, input_wh, cfg)
    metrics = evaluate_predictions(samples, kps, scores, schema)
    return metrics, kps, scores


def check_replicas_in_sync(model: torch.nn.Module, d: Dist) -> None:
    """DDP invariant: every rank ends with the same weights (max and min of a parameter checksum agree)."""
    import torch.distributed as dist

    total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    lo, hi = total.clone(), total.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if not torch.allclose(lo, hi, rtol=0, atol=1e-9 * max(1.0, abs(float(hi)))):
        raise RuntimeError(f"DDP replicas diverged: parameter checksums range {float(lo):.9g}..{float(hi):.9g}")
    LOG.info("DDP: %d replicas in sync (parameter checksum %.9g)", d.world_size, float(hi))


def final_checkpoint_name(final_checkpoint: str, has_val: bool) -> str:
    """``best`` or ``last``: which stage-2 checkpoint is the run's model (see ``KeypointsConfig.final_checkpoint``)."""
    if final_checkpoint not in ("auto", "best", "last"):
        raise ValueError(f"--keypoints.final_checkpoint={final_checkpoint!r} is unknown; use auto, best or last")
    if final_checkpoint == "best" and not has_val:
        raise ValueError(
            "--keypoints.final_checkpoint=best needs a validation part to choose on (the test part is never used for "
            "that); set --data.split.val_fraction (or data.split.val), or use final_checkpoint=last"
        )
    if final_checkpoint == "auto":
        return "best" if has_val else "last"
    return final_checkpoint


def _better(metric: str, new: float, old: float | None) -> bool:
    if old is None or not np.isfinite(old):
        return bool(np.isfinite(new))
    lower = metric.endswith("_px") or "rmse" in metric or "error" in metric
    return new < old if lower else new > old


def run_keypoints(
    model: torch.nn.Module,
    train_samples: list,
    val_samples: list,
    schema,
    cfg: KeypointsConfig,
    run_dir: Path,
    input_wh: tuple[int, int],
    heatmap_wh: tuple[int, int],
    device: torch.device,
    d: Dist,
    model_config: dict,
) -> dict:
    """Train the heatmap head (and the encoder unless frozen) on labelled crops; resumable.

    Returns:
        Summary with the best validation metrics and where the best checkpoint is.
    """
    from tqdm import tqdm

    ckpt_path, best_path = run_dir / "keypoints_last.pt", run_dir / "keypoints_best.pt"
    model.to(device)
    if cfg.freeze_encoder:
        model.freeze_encoder()
    head_params = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("head.")]
    enc_params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    groups = [{"params": head_params, "lr_scale": 1.0}]
    if enc_params:
        groups.append({"params": enc_params, "lr_scale": cfg.encoder_lr_scale})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    history = History()
    point = resume(ckpt_path, model, optimizer, "stage 2")
    start_epoch, start_step, elapsed_before = point.epoch, point.step_in_epoch, point.elapsed_s
    history.rows = point.history
    best_value = point.state.get("best_value")
    ddp_model = torch.nn.parallel.DistributedDataParallel(model) if d.enabled else model
    stride = geometry.heatmap_stride(input_wh, heatmap_wh)
    steps_per_epoch = math.ceil(len(train_samples) / (cfg.batch_size * d.world_size))
    total_steps = steps_per_epoch * cfg.epochs
    t0 = time.time()
    clock = Clock(cfg.time_budget_s, elapsed_before)

    def checkpoint(epoch: int, step: int) -> None:
        save_checkpoint(
            ckpt_path,
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            epoch=epoch,
            step_in_epoch=step,
            history=history.state(),
            best_value=best_value,
            model_config=model_config,
            elapsed_s=clock.elapsed(),
        )

    dataset = None
    for epoch in range(start_epoch, cfg.epochs):
        if dataset is None:
            dataset = KeypointDataset(train_samples, schema, input_wh, heatmap_wh, cfg)
        dataset.set_epoch(epoch)
        batches = epoch_batches(len(train_samples), cfg.batch_size, cfg.seed, epoch, 11, d)
        loader = DataLoader(dataset, batch_sampler=batches[start_step:], num_workers=cfg.num_workers)
        model.train()
        if cfg.freeze_encoder:
            model.encoder_eval()
        losses = []
        bar = tqdm(
            loader,
            desc=f"keypoints {epoch + 1}/{cfg.epochs}",
            disable=not d.is_main,
            leave=False,
            initial=start_step,
            total=len(batches),
        )
        for step, batch in enumerate(bar, start=start_step):
            global_step = epoch * steps_per_epoch + step
            scale = lr_at(global_step, clock.progress(global_step, total_steps), cfg)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * scale * group["lr_scale"]
            pred = ddp_model(batch["image"].to(device))["heatmaps"]
            weights = batch["weights"].to(device)
            loss = heatmap_loss(pred, batch["heatmaps"].to(device), weights)
            if cfg.integral_loss_weight > 0:
                loss = loss + cfg.integral_loss_weight * integral_loss(
                    pred, batch["keypoints_input"].to(device), weights, cfg.softargmax_beta, stride
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.2e}")
            if d.is_main and (step + 1) % cfg.checkpoint_every_steps == 0 and step + 1 < len(batches):
                checkpoint(epoch, step + 1)
            if clock.exhausted():
                break
        start_step = 0
        row = {
            "epoch": epoch + 1,
            "keypoint_loss": all_reduce_mean(float(np.mean(losses)) if losses else float("nan"), d),
        }
        last = epoch + 1 == cfg.epochs or clock.exhausted()
        if d.is_main and val_samples and ((epoch + 1) % cfg.eval_every == 0 or last):
            metrics, _, _ = evaluate_model(model, val_samples, schema, input_wh, cfg.predict, device)
            row.update({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
            value = float(metrics.get(cfg.best_metric, float("nan")))
            if _better(cfg.best_metric, value, best_value):
                best_value = value
                save_checkpoint(
                    best_path, model=model.state_dict(), model_config=model_config, epoch=epoch + 1, metrics=metrics
                )
            LOG.info(
                "stage 2 epoch %d/%d: loss %.2e, val %s %.3f (best %.3f)",
                epoch + 1,
                cfg.epochs,
                row["keypoint_loss"],
                cfg.best_metric,
                value,
                best_value if best_value is not None else float("nan"),
            )
        elif d.is_main:
            LOG.info(
                "stage 2 epoch %d/%d: loss %.2e (%.0fs)", epoch + 1, cfg.epochs, row["keypoint_loss"], time.time() - t0
            )
        history.add(**row)
        if d.is_main:
            checkpoint(epoch + 1, 0)
            plot_curves(history.rows, run_dir / "curves_keypoints.png", "stage 2: keypoints")
        if clock.exhausted():
            LOG.info("stage 2: time budget of %.0f s spent after %d epochs", cfg.time_budget_s, epoch + 1)
            break
    if d.enabled:
        check_replicas_in_sync(model, d)
    summary = {
        "best_" + cfg.best_metric: best_value,
        "epochs": len(history.rows),
        "seconds_training": clock.elapsed(),
        "train_samples": len(train_samples),
        "val_samples": len(val_samples),
        "seconds": time.time() - t0,
        "best_checkpoint": str(best_path) if val_samples else None,
    }
    if d.is_main:
        write_json(run_dir / "keypoints_history.json", history.rows)
        mark_stage_done(run_dir, "keypoints", summary)
        drop_optimizer_state(ckpt_path)  # finished: evaluation and export read the weights only
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m training.keypoints``: the same config and run folder as ``training.full``, this stage only."""
    from training.full import main as full_main

    return full_main(argv, stages=("keypoints", "evaluate"), prog="python -m training.keypoints")


if __name__ == "__main__":
    import sys

    from training.full import cli

    sys.exit(cli(sys.argv[1:], stages=("keypoints", "evaluate"), prog="python -m training.keypoints"))
