"""INT8 against FP32 on this CPU: file sizes and ONNX Runtime latency of the exported openfield graphs.

Writes benchmarks/results/int8-openfield.json: the size of each INT8 graph over the FP32 graph's, and the median
latency of FP32 and each INT8 graph (``tardis_int8_cpu.onnx`` for ONNX Runtime, ``tardis_int8_qdq.onnx`` for
TensorRT, run here only for comparison) at batch 1 and 8 with 1 and 2 intra-op threads, all measured in one run:
every round times each (threads, batch) for every graph in turn, so a change of machine load hits all alike.
``int8_fp32_latency_ratio`` is the CPU graph's worst ratio over batch 1 and 8 and both thread counts.

The graphs are the artifact's keypoint graphs (decode included, as the runtime runs them), fed seeded random
0..255 crops: integer kernels take the same time whatever the pixels.

    python benchmarks/int8_openfield.py runs/openfield/export --wait-load 1.5
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from tardis_edge.artifact import INPUT_NAME, ArtifactMetadata
from tardis_edge.io import atomic_write_text, strict_json
from tardis_edge.provenance import measurement

GRAPHS = ("fp32", "int8_cpu", "int8_qdq")  # model.json keys; fp32 first: the reference
CPU_INT8 = "int8_cpu"
THREADS = (1, 2)
BATCHES = (1, 8)
SIZE_TARGET = 0.3  # issue 16: INT8 file <= 0.3x FP32
LATENCY_TARGET = 0.4  # issue 16: ONNX Runtime CPU INT8 latency <= 0.4x FP32 at batch 1 and 8
# pause after each warm-up: the worker threads of the session timed before keep spinning for a while and, on 2 cores,
# took one from the next (INT8 at 2 threads, batch 1: 2.7 ms measured without the pause, 1.5 ms with it or alone)
SETTLE_S = 0.05


def cpu_vnni_flags() -> list[str]:
    """The VNNI flags ``/proc/cpuinfo`` lists (ONNX Runtime's u8 x s8 kernels use them); [] where unknown."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return []
    return sorted({f for f in flags if f in ("avx512_vnni", "avx_vnni")})


def wait_for_quiet(max_load: float, patience_s: float) -> float:
    """Wait until the 1-minute load average is below ``max_load`` (at most ``patience_s``); the load it ends on."""
    deadline = time.monotonic() + patience_s
    load = os.getloadavg()[0]
    while load >= max_load and time.monotonic() < deadline:
        time.sleep(10)
        load = os.getloadavg()[0]
    return load


def sessions(paths: dict[str, Path]) -> dict[tuple[str, int], object]:
    """One CPU ``InferenceSession`` per (graph, intra-op threads), with ONNX Runtime's default optimisations."""
    import onnxruntime as ort

    out = {}
    for key, path in paths.items():
        for threads in THREADS:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            out[key, threads] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return out


def measure(paths: dict[str, Path], input_hw: tuple[int, int], rounds: int, repeats: int) -> dict:
    """Median latency in ms per graph, threads and batch: ``{key: {"threads_T": {"batch_B": ms}}}``."""
    rng = np.random.default_rng(0)
    runs = sessions(paths)
    times: dict[tuple[str, int, int], list[float]] = {}
    for _ in range(rounds):
        for threads in THREADS:
            for batch in BATCHES:
                crops = rng.uniform(0, 255, size=(batch, 3, *input_hw)).astype(np.float32)  # (N, 3, H, W)
                for key in paths:
                    session = runs[key, threads]
                    session.run(None, {INPUT_NAME: crops})  # warm-up of this shape and thread pool
                    time.sleep(SETTLE_S)
                    for _ in range(repeats):
                        start = time.perf_counter()
                        session.run(None, {INPUT_NAME: crops})
                        times.setdefault((key, threads, batch), []).append(time.perf_counter() - start)
    return {
        key: {
            f"threads_{t}": {f"batch_{b}": 1e3 * float(np.median(times[key, t, b])) for b in BATCHES} for t in THREADS
        }
        for key in paths
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path, nargs="?", default=Path("runs/openfield/export"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/int8-openfield.json"))
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds over every graph and setting")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per graph and setting in each round")
    parser.add_argument("--wait-load", type=float, help="first wait (up to 10 min) for a 1-min load below this")
    args = parser.parse_args(argv)

    if args.wait_load is not None:
        load = wait_for_quiet(args.wait_load, 600)
        print(f"1-min load {load:.2f} (asked for < {args.wait_load})")
    meta = ArtifactMetadata.load(args.artifact)
    missing = [k for k in GRAPHS if k not in meta.models]
    if missing:
        raise SystemExit(
            f"{args.artifact} has no {', '.join(missing)} graph (model.json lists {', '.join(meta.models)}); "
            "export it with tardis-export --int8 --calib PATH"
        )
    paths = {k: args.artifact / str(meta.models[k]["file"]) for k in GRAPHS}
    sizes = {k: p.stat().st_size for k, p in paths.items()}
    started = measurement([f"benchmarks/{Path(__file__).name}", *(sys.argv[1:] if argv is None else argv)])
    latency = measure(paths, (meta.input_height, meta.input_width), args.rounds, args.repeats)
    ratios = {
        key: {t: {b: latency[key][t][b] / latency["fp32"][t][b] for b in row} for t, row in latency[key].items()}
        for key in GRAPHS[1:]
    }
    worst = {key: max(r for row in ratios[key].values() for r in row.values()) for key in ratios}
    size_ratio = {key: sizes[key] / sizes["fp32"] for key in GRAPHS[1:]}
    import onnxruntime

    report = {
        "benchmark": "exported openfield keypoint graphs (decode included) in ONNX Runtime on CPU, median latency of "
        f"{args.rounds} interleaved rounds x {args.repeats} runs, seeded random 0..255 crops",
        "artifact": str(args.artifact),
        "input_size": [meta.input_width, meta.input_height],
        "files": {
            k: {"file": paths[k].name, "bytes": sizes[k], "quantization": meta.models[k].get("quantization")}
            for k in GRAPHS
        },  # fmt: skip
        "size_ratio": size_ratio,
        "latency_ms": latency,
        "latency_ratio": ratios,
        "worst_latency_ratio": worst,
        "int8_fp32_size_ratio": size_ratio[CPU_INT8],
        "int8_fp32_latency_ratio": worst[CPU_INT8],
        "targets": {"size_ratio_max": SIZE_TARGET, "latency_ratio_max": LATENCY_TARGET},
        "meets_targets": size_ratio[CPU_INT8] <= SIZE_TARGET and worst[CPU_INT8] <= LATENCY_TARGET,
        "cpu_vnni": cpu_vnni_flags(),
        "onnxruntime": onnxruntime.__version__,
        "measured": started,
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, strict_json(report, indent=2) + "\n")
    for key in GRAPHS[1:]:
        cells = ", ".join(
            f"{t.replace('threads_', '')}T b{b.replace('batch_', '')} {latency[key][t][b]:.2f} ms "
            f"(x{ratios[key][t][b]:.2f})"
            for t in ratios[key]
            for b in ratios[key][t]
        )
        print(f"{key}: size x{size_ratio[key]:.3f}; {cells}")
    print(f"wrote {args.out} (int8_fp32_latency_ratio {worst[CPU_INT8]:.3f}, size {size_ratio[CPU_INT8]:.3f})")
    return report


if __name__ == "__main__":
    main()
