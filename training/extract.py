"""Stage 1, step 1: run the frozen DINOv2 teacher once per crop and cache its patch-feature maps.

    python -m training.extract --data ../shared/data/openfield-Pranav-2018-10-30 \\
        --videos ../shared/data/openfield-Pranav-2018-10-30/videos/m3v1mp4.mp4 --frames-per-video 100 \\
        --teacher dinov2_vitl14_reg4_pretrain.pth --cache runs/features

Reads top to bottom: teacher -> samples -> cache (new, resumed, or refused) -> batches of crops streamed
through the teacher into cache shards -> PCA picture -> summary. A killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from tardis_edge.data.sample import Sample
from tardis_edge.data.video import FrameReader, unlabelled_samples
from tardis_edge.errors import ArgumentParser
from tardis_edge.feature_cache import (
    PCA_PICTURE,
    ExtractConfig,
    FeatureCache,
    make_manifest,
    prepare_crop,
    teacher_crop_box,
    teacher_features,
)
from tardis_edge.teacher import VARIANTS, load_dinov2, random_dinov2

LOG = logging.getLogger("tardis")

__all__ = ["ExtractConfig", "build_teacher", "collect_samples", "run_extract", "main"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for but CUDA is not available; use --device cpu")
    return torch.device(name)


def build_teacher(cfg: ExtractConfig, device: torch.device) -> tuple[torch.nn.Module, str]:
    """The teacher of ``cfg`` and a name for logs and the manifest (random teachers say so)."""
    if cfg.teacher is not None and cfg.random_teacher is not None:
        raise ValueError(
            "give either a teacher checkpoint (--teacher) or a random teacher (--random-teacher), not both"
        )
    if cfg.teacher is not None:
        teacher = load_dinov2(cfg.teacher, num_heads=cfg.num_heads, device=device)
        name = f"DINOv2 checkpoint {Path(cfg.teacher).name}"
    elif cfg.random_teacher is not None:
        teacher = random_dinov2(cfg.random_teacher, depth=cfg.depth, seed=cfg.seed, device=device)
        name = (
            f"RANDOM {cfg.random_teacher} teacher (depth {teacher.cfg.depth}, seed {cfg.seed}; features mean nothing)"
        )
    else:
        raise ValueError(
            "no teacher: pass --teacher PATH (an official DINOv2 checkpoint such as dinov2_vitl14_reg4_pretrain.pth) "
            "or --random-teacher VARIANT (random weights, for tests and smoke runs)"
        )
    teacher.autocast_dtype = None if cfg.autocast is None else getattr(torch, cfg.autocast)
    return teacher, name


def collect_samples(cfg: ExtractConfig) -> list[Sample]:
    """Every sample of ``cfg.data`` plus the unlabelled frames of ``cfg.videos``; ids must be unique."""
    samples: list[Sample] = []
    num_keypoints = 0
    if cfg.data is not None:
        from tardis_edge.data.dataset import load_dataset

        dataset = load_dataset(cfg.data)
        samples += dataset.samples
        num_keypoints = dataset.schema.num_keypoints
    if cfg.videos:
        count = None if cfg.frame_step is not None else cfg.frames_per_video
        samples += unlabelled_samples(cfg.videos, count, cfg.frame_step, cfg.frame_box, num_keypoints)
    if not samples:
        raise ValueError("nothing to extract: pass --data (a dataset) and/or --videos (videos or image folders)")
    return samples


def _check_unique(samples: list[Sample]) -> None:
    seen: set[str] = set()
    dupes = [s.sample_id for s in samples if s.sample_id in seen or seen.add(s.sample_id)]
    if dupes:
        raise ValueError(
            f"sample ids {dupes[:5]} occur more than once; the cache is keyed by sample id — pass each video or "
            "dataset once (two videos with the same folder and file name collide too)"
        )


def _prepare_batch(
    samples: list[Sample], cfg: ExtractConfig, reader: FrameReader
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops ``(B, R, R, 3)`` uint8, affines ``(B, 2, 3)`` image -> teacher crop, boxes ``(B, 4)``."""
    crops, affines, boxes = [], [], []
    for sample in samples:
        image = reader.read(sample)  # (H, W, 3) RGB
        box = teacher_crop_box(sample, cfg, (image.shape[1], image.shape[0]))
        crop, affine = prepare_crop(image, box, cfg.resolution)
        crops.append(crop)
        affines.append(affine)
        boxes.append((box.cx, box.cy, box.width, box.height))
    return np.stack(crops), np.stack(affines), np.asarray(boxes, dtype=np.float64)


def run_extract(
    cfg: ExtractConfig,
    samples: list[Sample] | None = None,
    teacher: torch.nn.Module | None = None,
    teacher_name: str | None = None,
    on_batch=None,
) -> dict:
    """Fill (or resume) the feature cache ``cfg.cache`` with the teacher maps of every sample.

    Args:
        cfg: the recipe, inputs and cache.
        samples: samples to extract; default ``collect_samples(cfg)``.
        teacher: a ready teacher (e.g. one ``training.full`` already holds); default ``build_teacher(cfg)``.
        on_batch: called as ``on_batch(done)`` after each batch is safely in the cache (``done``: samples
            computed so far in this run).

    Returns:
        Summary: cache path, teacher name/fingerprint, sample counts (computed now / already cached), seconds,
        crops per second, map shape, PCA picture path.
    """
    device = resolve_device(cfg.device)
    if teacher is None:
        teacher, teacher_name = build_teacher(cfg, device)
    else:
        device = next(teacher.parameters()).device
    teacher_name = teacher_name or "given teacher"
    samples = collect_samples(cfg) if samples is None else list(samples)
    _check_unique(samples)
    manifest = make_manifest(teacher, cfg, teacher_name)
    cache = FeatureCache.create(cfg.cache, manifest, rebuild=cfg.rebuild)
    todo = [s for s in samples if s.sample_id not in cache]
    LOG.info(
        "extract: %s on %s, %d px crops -> %dx%d maps; %d samples (%d cached, %d to compute) into %s",
        teacher_name,
        device,
        cfg.resolution,
        cache.grid,
        cache.grid,
        len(samples),
        len(samples) - len(todo),
        len(todo),
        cfg.cache,
    )
    batches = [todo[i : i + cfg.batch_size] for i in range(0, len(todo), cfg.batch_size)]
    done = 0
    start = time.perf_counter()
    from tqdm import tqdm

    # One worker thread decodes and warps the next batch while the teacher runs (OpenCV releases the GIL);
    # at most two batches of crops exist at once, and maps go to disk batch by batch.
    with FrameReader() as reader, ThreadPoolExecutor(max_workers=1) as pool, cache:
        bar = tqdm(total=len(todo), desc="teacher features", unit="crop", disable=not cfg.progress or not todo)
        pending = pool.submit(_prepare_batch, batches[0], cfg, reader) if batches else None
        for index, batch in enumerate(batches):
            crops, affines, boxes = pending.result()
            if index + 1 < len(batches):
                pending = pool.submit(_prepare_batch, batches[index + 1], cfg, reader)
            maps = teacher_features(teacher, crops, cfg.mean, cfg.std, cfg.flip_average)  # (B, C, g, g)
            cache.write_batch([s.sample_id for s in batch], maps.cpu().numpy(), affines, boxes)
            done += len(batch)
            bar.update(len(batch))
            bar.set_postfix(crops_per_s=f"{done / (time.perf_counter() - start):.2f}")
            if on_batch is not None:
                on_batch(done)
        bar.close()
    seconds = time.perf_counter() - start
    crops_per_s = done / seconds if done else None
    pca_path = _write_pca(cfg, samples, teacher_name) if cfg.pca_samples > 0 else None
    summary = {
        "cache": str(cfg.cache),
        "teacher": teacher_name,
        "random_teacher": cfg.random_teacher is not None,
        "fingerprint": manifest["teacher"]["fingerprint"],
        "device": str(device),
        "samples": len(samples),
        "computed": done,
        "reused": len(samples) - len(todo),
        "seconds": round(seconds, 3),
        "crops_per_s": None if crops_per_s is None else round(crops_per_s, 3),
        "map_shape": [manifest["teacher"]["embed_dim"], cache.grid, cache.grid],
        "pca_picture": None if pca_path is None else str(pca_path),
    }
    if done:
        LOG.info("extract: %d crops in %.1f s = %.2f crops/s", done, seconds, crops_per_s)
    return summary


def _write_pca(cfg: ExtractConfig, samples: list[Sample], title: str) -> Path:
    """The PCA picture of the first ``cfg.pca_samples`` samples, from their cached maps, into the cache folder."""
    from tardis_edge import geometry
    from tardis_edge.pca import save_pca_picture

    chosen = samples[:: max(1, len(samples) // cfg.pca_samples)][: cfg.pca_samples]
    crops, maps = [], []
    with FeatureCache(cfg.cache) as cache, FrameReader() as reader:
        for sample in chosen:
            entry = cache.read(sample.sample_id)
            crops.append(geometry.warp_image(reader.read(sample), entry.affine, (cfg.resolution, cfg.resolution)))
            maps.append(entry.features.astype(np.float32))
    return save_pca_picture(Path(cfg.cache) / PCA_PICTURE, crops, np.stack(maps), title=title)


def _parser() -> argparse.ArgumentParser:
    defaults = ExtractConfig()
    p = ArgumentParser(
        prog="python -m training.extract",
        description="Cache DINOv2 patch-feature maps (stage 1 distillation targets) for a dataset and/or videos.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    src = p.add_argument_group("inputs")
    src.add_argument("--data", type=Path, help="dataset: DeepLabCut project folder / config.yaml, or COCO json")
    src.add_argument("--videos", type=Path, nargs="+", default=[], help="videos or image folders (unlabelled)")
    src.add_argument("--frames-per-video", type=int, default=defaults.frames_per_video, help="evenly spaced frames")
    src.add_argument("--frame-step", type=int, help="take every k-th frame instead of --frames-per-video")
    src.add_argument("--frame-box", type=float, nargs=4, metavar=("X", "Y", "W", "H"), help="crop of video frames")
    tea = p.add_argument_group("teacher (one of)")
    tea.add_argument("--teacher", type=Path, help="official DINOv2 checkpoint, e.g. dinov2_vitl14_reg4_pretrain.pth")
    tea.add_argument(
        "--random-teacher", choices=VARIANTS, help="RANDOM weights with this variant's shapes (tests, smoke runs)"
    )
    tea.add_argument("--depth", type=int, help="reduced depth for --random-teacher")
    tea.add_argument("--num-heads", type=int, help="attention heads, if not embed_dim / 64")
    tea.add_argument("--seed", type=int, default=defaults.seed, help="random-teacher seed")
    run = p.add_argument_group("run")
    run.add_argument("--resolution", type=int, default=defaults.resolution, help="teacher crop side in px")
    run.add_argument("--batch-size", type=int, default=defaults.batch_size, help="crops per teacher batch")
    run.add_argument("--cache", type=Path, default=defaults.cache, help="cache folder")
    run.add_argument("--rebuild", action="store_true", help="wipe a cache made with another teacher or geometry")
    run.add_argument("--device", default=defaults.device, help="auto (cuda if available, else cpu), cpu, cuda:0")
    run.add_argument(
        "--autocast", default=defaults.autocast, choices=["bfloat16", "float16", "none"], help="CUDA autocast dtype"
    )
    run.add_argument("--pca-samples", type=int, default=defaults.pca_samples, help="rows of the PCA picture")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = ExtractConfig(
        data=args.data,
        videos=tuple(args.videos),
        frames_per_video=None if args.frame_step is not None else args.frames_per_video,
        frame_step=args.frame_step,
        frame_box=None if args.frame_box is None else tuple(args.frame_box),
        teacher=args.teacher,
        random_teacher=args.random_teacher,
        depth=args.depth,
        num_heads=args.num_heads,
        seed=args.seed,
        resolution=args.resolution,
        batch_size=args.batch_size,
        cache=args.cache,
        rebuild=args.rebuild,
        device=args.device,
        autocast=None if args.autocast == "none" else args.autocast,
        pca_samples=args.pca_samples,
        progress=not args.no_progress,
    )
    summary = run_extract(cfg)
    rate = "nothing to compute" if summary["crops_per_s"] is None else f"{summary['crops_per_s']:.2f} crops/s"
    print(
        f"{summary['computed']} crops computed, {summary['reused']} already cached ({rate}) with {summary['teacher']}\n"
        f"cache: {summary['cache']}  maps: {summary['map_shape']}  PCA picture: {summary['pca_picture']}"
    )
    return summary


if __name__ == "__main__":
    main()
