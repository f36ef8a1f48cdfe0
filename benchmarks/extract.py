"""Teacher-feature extraction throughput (stage 1 targets): crops per second.

Two modes:

* ``teacher`` (default): the teacher step of ``training.extract`` alone — ImageNet normalisation, the crop and
  its mirror through a DINOv2 of the given variant (random weights: speed does not depend on their values),
  flip-back and average — on synthetic uint8 crops already on the device. Median wall time of ``--repeats``
  batches after ``--warmup`` ones (CUDA synchronised), reported as crops/s (one crop = two teacher passes).
* ``pipeline``: ``training.extract.run_extract`` end to end on ``--frames`` evenly spaced frames of
  ``--video`` (decode, crop warp, teacher, float16 HDF5 cache writes) into a temporary cache.

Usage (from the repository root)::

    PYTHONPATH=. python benchmarks/extract.py --variant vits14 --resolution 224 --device cpu
    PYTHONPATH=. python benchmarks/extract.py --mode pipeline --variant vits14 --resolution 224 \\
        --video ../shared/data/openfield-Pranav-2018-10-30/videos/m3v1mp4.mp4 --frames 32
    PYTHONPATH=. python benchmarks/extract.py --variant vitl14_reg4 --resolution 896 --dtype bfloat16 --device cuda

Each run writes ``benchmarks/results/extract-<mode>-<variant>-<resolution>-<dtype>-<device>.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tardis_edge.feature_cache import ExtractConfig, teacher_features
from tardis_edge.io import atomic_write_text, strict_json
from tardis_edge.machine import cpu_name
from tardis_edge.provenance import measurement
from tardis_edge.teacher import VARIANTS, random_dinov2

RESULTS = Path(__file__).resolve().parent / "results"


def machine_record(device: torch.device) -> dict:
    record = {
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "device_name": cpu_name(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        record |= {
            "device_name": props.name,
            "device_memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    return record


def bench_teacher(args: argparse.Namespace, device: torch.device) -> dict:
    teacher = random_dinov2(args.variant, depth=args.depth, seed=0, device=device)
    teacher.autocast_dtype = None if args.dtype == "float32" else getattr(torch, args.dtype)
    rng = np.random.default_rng(0)
    crops = torch.from_numpy(rng.integers(0, 256, (args.batch_size, args.resolution, args.resolution, 3), np.uint8))
    crops = crops.to(device)

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        maps = teacher_features(teacher, crops, flip_average=True)  # (B, C, g, g)
        maps.to(torch.float16).cpu()  # what extraction does before writing the cache
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = [step() for _ in range(args.repeats)]
    median = statistics.median(times)
    out = {
        "seconds_per_batch": {"median": median, "min": min(times), "all": times},
        "crops_per_s_median": args.batch_size / median,
        "crops_per_s_best": args.batch_size / min(times),
        "teacher_passes_per_crop": 2,
        "teacher": {"variant": args.variant, "depth": teacher.cfg.depth, "embed_dim": teacher.embed_dim},
    }
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out


def bench_pipeline(args: argparse.Namespace, device: torch.device) -> dict:
    from tardis_edge.data.video import sample_video_frames
    from training.extract import run_extract

    if args.video is None:
        raise SystemExit("--mode pipeline needs --video PATH")
    samples = sample_video_frames(args.video, count=args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ExtractConfig(
            random_teacher=args.variant,
            depth=args.depth,
            resolution=args.resolution,
            batch_size=args.batch_size,
            cache=Path(tmp) / "cache",
            device=str(device),
            autocast=None if args.dtype == "float32" else args.dtype,
            pca_samples=0,
            progress=False,
        )
        summary = run_extract(cfg, samples)
    return {
        "frames": len(samples),
        "video": str(args.video),
        "seconds": summary["seconds"],
        "crops_per_s_median": summary["crops_per_s"],  # one run: total crops / total seconds
        "map_shape": summary["map_shape"],
        "teacher": {"variant": args.variant, "depth": args.depth},
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=["teacher", "pipeline"], default="teacher")
    p.add_argument("--variant", choices=VARIANTS, default="vits14")
    p.add_argument("--depth", type=int, help="reduced depth (default: the variant's official depth)")
    p.add_argument("--resolution", type=int, default=896)
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, help="torch intra-op threads on CPU")
    p.add_argument("--video", type=Path, help="video for --mode pipeline")
    p.add_argument("--frames", type=int, default=32, help="frames for --mode pipeline")
    p.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/extract-...json)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if device.type != "cuda" and args.dtype != "float32":
        raise SystemExit(f"--dtype {args.dtype} is a CUDA autocast setting; the teacher runs float32 on {device}")
    with torch.inference_mode():
        result = bench_teacher(args, device) if args.mode == "teacher" else bench_pipeline(args, device)
    record = {
        "benchmark": "extract",
        "mode": args.mode,
        "variant": args.variant,
        "resolution": args.resolution,
        "grid": args.resolution // 14,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "machine": machine_record(device),
        "measured": measurement(["python benchmarks/extract.py", *(sys.argv[1:] if argv is None else argv)]),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **result,
    }
    name = f"extract-{args.mode}-{args.variant}-{args.resolution}-{args.dtype}-{device.type}.json"
    out = args.out or RESULTS / name
    atomic_write_text(out, strict_json(record) + "\n")
    print(
        f"{args.mode} {args.variant} {args.resolution}px {args.dtype} on {record['machine']['device_name']}: "
        f"{record['crops_per_s_median']:.2f} crops/s -> {out}"
    )
    return record


if __name__ == "__main__":
    main()
