"""Student backbones compared: parameters, FLOPs and CPU latency of the deployable pose model.

Each variant is the stage-2 ``PoseModel`` (normalisation + backbone + 128-channel stride-4 neck + heatmap
head, no distillation decoder) in its deployment form (RepVGG folded to plain 3x3 convs), batch 1, RGB
256x256. FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls; one
multiply-add = 2 FLOPs; BatchNorm/ReLU/Add not counted). Latency is the median wall time of
``--repeats`` forward passes after ``--warmup`` ones, under ``torch.inference_mode``, for each ``--threads``
intra-op thread count. The minimum, the 1-minute load average and the median process CPU time per pass are
recorded too: on a shared machine other processes inflate wall time, while the single-thread CPU time stays
close to the uncontended single-thread latency.

Usage (from the repository root)::

    PYTHONPATH=. python benchmarks/students.py                    # writes benchmarks/results/students-cpu.json
    PYTHONPATH=. python benchmarks/students.py --quick --out /tmp/students.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from tardis_edge.io import atomic_write_text, strict_json
from tardis_edge.machine import cpu_name
from tardis_edge.models import BACKBONES, ModelConfig, build_model
from tardis_edge.provenance import measurement

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "students-cpu.json"


def count_flops(model: torch.nn.Module, images: torch.Tensor) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(images)
    return int(counter.get_total_flops())


def time_forward_ms(
    model: torch.nn.Module, images: torch.Tensor, warmup: int, repeats: int
) -> tuple[list[float], list[float]]:
    """Wall-clock and process-CPU milliseconds of each timed forward pass."""
    wall, cpu = [], []
    with torch.inference_mode():
        for _ in range(warmup):
            model(images)
        for _ in range(repeats):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            model(images)
            wall.append((time.perf_counter() - start_wall) * 1000.0)
            cpu.append((time.process_time() - start_cpu) * 1000.0)
    return wall, cpu


def measure(name: str, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=name, use_decoder=False, use_head=True, num_keypoints=args.keypoints)
    model = build_model(cfg).eval()
    train_params = sum(p.numel() for p in model.parameters())
    model.reparameterize()
    images = torch.rand(1, 3, args.size, args.size) * 255.0  # RGB 0..255
    flops = count_flops(model, images)
    backbone_flops = count_flops(model.backbone, images)
    latency = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        times, cpu_times = time_forward_ms(model, images, args.warmup, args.repeats)
        latency.append(
            {
                "threads": threads,
                "median_ms": round(statistics.median(times), 2),
                "min_ms": round(min(times), 2),
                "p90_ms": round(sorted(times)[int(0.9 * (len(times) - 1))], 2),
                "cpu_time_median_ms": round(statistics.median(cpu_times), 2),
                "repeats": len(times),
                "load_average_1min_before": round(load, 2),
            }
        )
    return {
        "backbone": name,
        "params_total_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "params_train_form_m": round(train_params / 1e6, 3),
        "params_backbone_m": round(sum(p.numel() for p in model.backbone.parameters()) / 1e6, 3),
        "gflops": round(flops / 1e9, 3),
        "gflops_backbone": round(backbone_flops / 1e9, 3),
        "latency": latency,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--size", type=int, default=256, help="square input side in pixels")
    parser.add_argument("--keypoints", type=int, default=17)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="intra-op thread counts to time")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="2 warm-up and 5 timed runs (a smoke run)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.repeats = 2, 5

    results = []
    for name in args.backbones:
        results.append(measure(name, args))
        print(strict_json(results[-1], indent=None))
    report = {
        "benchmark": "student pose models (deployment form), batch 1",
        "input": [1, 3, args.size, args.size],
        "num_keypoints": args.keypoints,
        "machine": {
            "cpu": cpu_name(),
            "logical_cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "torch": torch.__version__,
        "measured": measurement(["python benchmarks/students.py", *(sys.argv[1:] if argv is None else argv)]),
        "threads": args.threads,
        "flops_note": "FlopCounterMode: conv + matmul only, 2 FLOPs per multiply-add (GMACs = GFLOPs / 2)",
        "results": results,
    }
    atomic_write_text(args.out, strict_json(report) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
