"""Benchmark of the fused decode and soft-argmax kernels: ``python -m kernels.bench [--quick] [--out PATH]``.

On a CUDA device, for each method (argmax, MSRA, soft-argmax, DARK decode with ``crop_to_image``, and the
soft-argmax forward + backward of the integral loss), dtype (fp32, fp16) and batch N in {1, 8, 64, 512} at
K=17, 64x64, it times (medians of ``triton.testing.do_bench``, L2 flushed before every run):

    triton    the Triton kernel (``backend="triton"``);
    eager     the PyTorch reference composition (``backend="torch"``), eager mode;
    compile   ``torch.compile`` of the same reference composition;
    *_graph   at N=1 also each of them replayed from a CUDA graph (``do_bench_cudagraph``), which removes
              the Python launch overhead that dominates at small N;
    copy      a device-to-device copy of the heatmaps (same bytes), the bandwidth yardstick.

and reports the achieved GB/s (bytes the kernel must move: heatmaps read once, keypoints/scores/affines;
the backward reads the heatmaps again and writes their gradient), its fraction of the copy's GB/s measured in
the same run, and the speed-ups over eager and compile. Before timing, every Triton result is compared with
the CPU reference (``--check`` does only that and exits 1 on a mismatch; ``tests/test_kernels.py`` runs it
on a GPU under the ``gpu`` marker).

Without CUDA, Triton is skipped (its kernels compile for GPUs; the CPU interpreter is a test tool), and the
reference is timed in eager mode (and compiled unless ``--quick``) with a wall-clock median, so the JSON still
records the CPU baseline.

Targets on an H100 (checked in the JSON's ``targets`` when Triton ran): >= 70% of copy bandwidth at N=512,
>= 5x eager at every N, not slower than torch.compile.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from kernels.decode import decode_heatmaps as kernel_decode
from kernels.decode import reference_decode, soft_argmax
from tardis_edge import decode as reference
from tardis_edge import geometry
from tardis_edge.io import atomic_write_text, strict_json
from tardis_edge.machine import cpu_name
from tardis_edge.provenance import measurement

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
BETA = 20.0
NUM_K, HEIGHT, WIDTH = 17, 64, 64
DECODE_METHODS = ("argmax", "msra", "softargmax", "dark")
TRAIN_METHOD = "softargmax-train"  # forward + backward of the integral loss's soft-argmax
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# --check tolerances, as tests/test_kernels.py states them
KEYPOINT_ATOL, IMAGE_ATOL, GRAD_ATOL = 1e-4, 1e-4, 1e-5
# the gradient check's beta: gradients are O(1) there; at beta 20 they reach ~10 and the float32 reference is
# itself ~3e-5 from a float64 one, so an absolute 1e-5 would test float32 rounding rather than the kernel
GRAD_BETA = 5.0


def versions() -> dict[str, str | None]:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
    }


def make_inputs(n: int, dtype: torch.dtype, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps ``(n, 17, 64, 64)`` with one Gaussian peak each plus noise, and ``(n, 2, 3)`` crop affines."""
    g = torch.Generator().manual_seed(seed)
    rows = n * NUM_K
    centre = torch.rand(rows, 2, 1, 1, generator=g) * torch.tensor([WIDTH - 1.0, HEIGHT - 1.0]).view(1, 2, 1, 1)
    ys = torch.arange(HEIGHT, dtype=torch.float32).view(1, HEIGHT, 1)
    xs = torch.arange(WIDTH, dtype=torch.float32).view(1, 1, WIDTH)
    maps = torch.exp(-((xs - centre[:, 0]) ** 2 + (ys - centre[:, 1]) ** 2) / 8.0)
    maps = maps + 0.02 * torch.randn(rows, HEIGHT, WIDTH, generator=g)
    rng = np.random.default_rng(seed)
    input_wh = (4 * WIDTH, 4 * HEIGHT)
    affines = []
    for _ in range(n):
        box = geometry.box_from_xywh(rng.uniform([0, 0, 40, 40], [400, 300, 240, 180]).tolist(), input_wh)
        affines.append(geometry.heatmap_to_image_affine(geometry.crop_affine(box, input_wh), 4.0))
    heatmaps = maps.reshape(n, NUM_K, HEIGHT, WIDTH).to(device=device, dtype=dtype).contiguous()
    return heatmaps, torch.from_numpy(np.stack(affines)).to(device=device, dtype=torch.float32)


# ------------------------------------------------------------------------------------------------ parity


CHECK_SHAPES = ((1, 1, 64, 64), (3, 17, 47, 61), (8, 17, 48, 64), (3, 5, 13, 11), (64, 17, 64, 64))


def parity_check(device: torch.device, shapes: tuple[tuple[int, int, int, int], ...] = CHECK_SHAPES) -> list[str]:
    """Triton on ``device`` vs the reference on CPU, every method and dtype, awkward shapes. Returns failures."""
    failures = []
    g = torch.Generator().manual_seed(0)
    for n, k, h, w in shapes:
        base = torch.randn(n, k, h, w, generator=g)
        peak = torch.exp(
            -((torch.arange(w) - w / 3) ** 2).view(1, 1, 1, w) / 8
            - ((torch.arange(h) - h / 2) ** 2).view(1, 1, h, 1) / 8
        )
        maps_cpu = 0.02 * base + peak.roll(int(torch.randint(0, w, (1,), generator=g)), dims=-1)
        maps_cpu[0, 0] = -maps_cpu[0, 0].abs() - 0.1  # an invalid row
        affines_cpu = make_inputs(n, torch.float32, torch.device("cpu"))[1]
        for dtype in DTYPES.values():
            maps = maps_cpu.to(dtype)
            for method in DECODE_METHODS:
                beta = BETA if method == "softargmax" else None
                for affines in (None, affines_cpu):
                    got_xy, got_scores = kernel_decode(
                        maps.to(device), method, beta, None if affines is None else affines.to(device), backend="triton"
                    )
                    ref_xy, ref_scores = reference_decode(maps, method, beta, affines)
                    atol = IMAGE_ATOL if affines is not None else 0.0 if method in ("argmax", "msra") else KEYPOINT_ATOL
                    xy_err = (got_xy.cpu() - ref_xy).abs().max().item()
                    scores_equal = torch.equal(got_scores.cpu(), ref_scores)
                    if xy_err > atol or not scores_equal:
                        failures.append(
                            f"{method} {dtype} {(n, k, h, w)} affine={affines is not None}: keypoints off by "
                            f"{xy_err:.3g} (tolerance {atol}), scores equal: {scores_equal}"
                        )
            # soft-argmax backward, as tests/test_kernels.py checks it
            grad_xy = torch.randn(n, k, 2, generator=g)
            ref_in = maps.clone().requires_grad_(True)
            reference.soft_argmax(ref_in, GRAD_BETA).backward(grad_xy.to(dtype))
            got_in = maps.to(device, copy=True).requires_grad_(True)
            got_xy = soft_argmax(got_in, GRAD_BETA, backend="triton")
            got_xy.backward(grad_xy.to(device=device, dtype=dtype))
            assert got_in.grad is not None and ref_in.grad is not None
            ref_grad = ref_in.grad.float()
            grad_err = (got_in.grad.cpu().float() - ref_grad).abs()
            if dtype == torch.float32:
                grad_tol = torch.full_like(ref_grad, GRAD_ATOL)
            else:  # both round once from float32: a unit in the last place, plus 1e-3 of the largest gradient
                grad_tol = torch.finfo(dtype).eps * ref_grad.abs() + 1e-3 * ref_grad.abs().max()
            if (grad_err > grad_tol).any():
                failures.append(
                    f"soft-argmax backward {dtype} {(n, k, h, w)}: off by up to {grad_err.max().item():.3g} "
                    f"(tolerance {GRAD_ATOL} in float32, 1 ulp + 1e-3 of the largest gradient otherwise)"
                )
    return failures


# ----------------------------------------------------------------------------------------------- timing


def _cpu_median_ms(fn: Callable[[], object], min_seconds: float = 0.3, max_runs: int = 50) -> float:
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_seconds and len(times) < max_runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _bytes_moved(method: str, heatmaps: torch.Tensor) -> int:
    n, k = heatmaps.shape[:2]
    maps = heatmaps.numel() * heatmaps.element_size()
    if method == TRAIN_METHOD:
        # forward reads the maps; backward reads them again and writes their gradient; (x, y) and stats are small
        return 3 * maps + n * k * (2 + 4 + 2) * 4
    return maps + n * k * 3 * 4 + n * 6 * 4  # maps in; keypoints, scores out; affines in


def _callables(
    method: str, heatmaps: torch.Tensor, affines: torch.Tensor, compile_reference: bool
) -> dict[str, Callable[[], object]]:
    """{backend: fn} for one configuration (torch.compile compiles on the first call, the warm-up)."""
    fns: dict[str, Callable[[], object]] = {}
    if method == TRAIN_METHOD:
        leaf = heatmaps.detach().clone().requires_grad_(True)
        grad_xy = torch.ones(heatmaps.shape[0], heatmaps.shape[1], 2, device=heatmaps.device, dtype=heatmaps.dtype)

        def step(backend: str) -> Callable[[], None]:
            def run() -> None:
                leaf.grad = None
                soft_argmax(leaf, BETA, backend=backend).backward(grad_xy)

            return run

        def reference_forward(maps: torch.Tensor) -> torch.Tensor:
            return reference.soft_argmax(maps, BETA)

        def run_compiled() -> None:
            leaf.grad = None
            compiled_forward(leaf).backward(grad_xy)

        fns["triton"] = step("triton")
        fns["eager"] = step("torch")
        if compile_reference:
            compiled_forward = torch.compile(reference_forward, dynamic=False)
            fns["compile"] = run_compiled
        return fns

    beta = BETA if method == "softargmax" else None

    def reference_composition(maps: torch.Tensor, crop_to_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return reference_decode(maps, method, beta, crop_to_image)

    fns["triton"] = functools.partial(kernel_decode, heatmaps, method, beta, affines, backend="triton")
    fns["eager"] = functools.partial(reference_composition, heatmaps, affines)
    if compile_reference:
        fns["compile"] = functools.partial(torch.compile(reference_composition, dynamic=False), heatmaps, affines)
    return fns


def bench_cuda(args: argparse.Namespace, device: torch.device) -> tuple[list[dict], dict]:
    from triton.testing import do_bench, do_bench_cudagraph

    results, skipped = [], {}
    for dtype_name in args.dtypes:
        for n in args.batch:
            heatmaps, affines = make_inputs(n, DTYPES[dtype_name], device)
            copy_target = torch.empty_like(heatmaps)
            copy_ms = do_bench(functools.partial(copy_target.copy_, heatmaps), return_mode="median")
            copy_gbps = 2 * heatmaps.numel() * heatmaps.element_size() / copy_ms / 1e6
            for method in args.methods:
                fns = _callables(method, heatmaps, affines, compile_reference=not args.no_compile)
                timings = {}
                for backend, fn in fns.items():
                    try:
                        timings[backend] = do_bench(fn, return_mode="median")
                        if n == 1:
                            timings[f"{backend}_graph"] = do_bench_cudagraph(fn, return_mode="median")
                    except Exception as error:  # noqa: BLE001  (a backend that fails is recorded, not fatal)
                        skipped[f"{method}/{dtype_name}/N={n}/{backend}"] = f"{type(error).__name__}: {error}"[:300]
                results.append(_record(method, dtype_name, n, heatmaps, timings, copy_ms, copy_gbps))
                print(_row(results[-1]), flush=True)
    return results, skipped


def bench_cpu(args: argparse.Namespace) -> tuple[list[dict], dict]:
    device = torch.device("cpu")
    results, skipped = [], {}
    for dtype_name in args.dtypes:
        for n in args.batch:
            heatmaps, affines = make_inputs(n, DTYPES[dtype_name], device)
            copy_target = torch.empty_like(heatmaps)
            copy_ms = _cpu_median_ms(functools.partial(copy_target.copy_, heatmaps))
            copy_gbps = 2 * heatmaps.numel() * heatmaps.element_size() / copy_ms / 1e6
            for method in args.methods:
                fns = _callables(method, heatmaps, affines, compile_reference=not args.no_compile)
                fns.pop("triton")
                timings = {}
                for backend, fn in fns.items():
                    try:
                        timings[backend] = _cpu_median_ms(fn)
                    except Exception as error:  # noqa: BLE001  (torch.compile needs a working C++ toolchain)
                        skipped[f"{method}/{dtype_name}/N={n}/{backend}"] = f"{type(error).__name__}: {error}"[:300]
                results.append(_record(method, dtype_name, n, heatmaps, timings, copy_ms, copy_gbps))
                print(_row(results[-1]), flush=True)
    return results, skipped


def _record(method, dtype_name, n, heatmaps, timings, copy_ms, copy_gbps) -> dict:
    moved = _bytes_moved(method, heatmaps)
    record = {
        "method": method,
        "dtype": dtype_name,
        "N": n,
        "K": NUM_K,
        "H": HEIGHT,
        "W": WIDTH,
        "bytes": moved,
        "copy_ms": copy_ms,
        "copy_gbps": copy_gbps,
        "median_ms": timings,
        "gbps": {backend: moved / ms / 1e6 for backend, ms in timings.items()},
    }
    record["copy_fraction"] = {backend: gbps / copy_gbps for backend, gbps in record["gbps"].items()}
    if "triton" in timings:
        record["speedup_vs_eager"] = timings["eager"] / timings["triton"] if "eager" in timings else None
        record["speedup_vs_compile"] = timings["compile"] / timings["triton"] if "compile" in timings else None
    return record


def _row(record: dict) -> str:
    times = "  ".join(f"{backend} {ms:.4g} ms" for backend, ms in record["median_ms"].items())
    extra = ""
    if "triton" in record["median_ms"]:
        extra = f"  | triton {record['gbps']['triton']:.0f} GB/s = {record['copy_fraction']['triton']:.0%} of copy"
    return f"{record['method']:>16} {record['dtype']} N={record['N']:<4} {times}{extra}"


def check_targets(results: list[dict]) -> dict:
    """The H100 targets, per (method, dtype): >= 70% of copy at the largest N, >= 5x eager, >= 1x compile."""
    targets = {}
    timed = [r for r in results if "triton" in r["median_ms"]]
    for key in sorted({(r["method"], r["dtype"]) for r in timed}):
        rows = [r for r in timed if (r["method"], r["dtype"]) == key]
        largest = max(rows, key=lambda r: r["N"])
        targets[f"{key[0]}/{key[1]}"] = {
            f"copy_fraction_at_N{largest['N']}>=0.7": largest["copy_fraction"]["triton"] >= 0.7,
            "speedup_vs_eager>=5_at_every_N": all((r["speedup_vs_eager"] or 0) >= 5 for r in rows),
            "not_slower_than_compile": all(
                (r["speedup_vs_compile"] or 0) >= 1 for r in rows if "compile" in r["median_ms"]
            ),
        }
    return targets


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(prog="python -m kernels.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="N in {1, 8}, fp32, no torch.compile, 1 CPU thread: a smoke run"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 with --quick)")
    parser.add_argument("--check", action="store_true", help="only compare Triton on CUDA with the CPU reference")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64, 512], help="batch sizes N")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "fp16"])
    parser.add_argument(
        "--methods", nargs="+", choices=[*DECODE_METHODS, TRAIN_METHOD], default=[*DECODE_METHODS, TRAIN_METHOD]
    )
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile of the reference")
    parser.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/decode-<device>.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch = [n for n in args.batch if n <= 8] or [1]
        args.dtypes = ["fp32"]
        args.no_compile = True
        args.threads = args.threads or 1
    if args.threads:
        # on a shared machine, more threads than free cores turn every op into a wait at a barrier
        torch.set_num_threads(args.threads)

    cuda = torch.cuda.is_available()
    if args.check:
        if not cuda:
            raise SystemExit("--check compares the Triton kernels on CUDA with the reference; no CUDA device here")
        failures = parity_check(torch.device("cuda"))
        print("\n".join(failures) if failures else "Triton on CUDA matches the reference")
        raise SystemExit(1 if failures else 0)

    torch.manual_seed(0)
    record: dict = {"benchmark": "decode", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **versions()}
    record["measured"] = measurement(["python -m kernels.bench", *(sys.argv[1:] if argv is None else argv)])
    record["config"] = {
        "K": NUM_K,
        "H": HEIGHT,
        "W": WIDTH,
        "beta": BETA,
        "crop_to_image": True,
        "batch": args.batch,
        "dtypes": args.dtypes,
        "methods": args.methods,
        "quick": args.quick,
        "compile": not args.no_compile,
    }
    if cuda:
        device = torch.device("cuda")
        record["machine"] = torch.cuda.get_device_name(device)
        record["device"] = "cuda"
        failures = parity_check(device)
        record["parity_failures"] = failures
        if failures:
            print("Triton does not match the reference here:\n" + "\n".join(failures), file=sys.stderr)
        results, skipped = bench_cuda(args, device)
        record["targets"] = check_targets(results)
    else:
        record["machine"] = cpu_name()
        record["device"] = "cpu"
        record["cpu_count"] = os.cpu_count()
        record["torch_threads"] = torch.get_num_threads()
        record["triton_skipped"] = (
            "no CUDA device: the Triton kernels compile for GPUs (the TRITON_INTERPRET CPU interpreter is a "
            "correctness tool, orders of magnitude slower), so only the PyTorch reference is timed"
        )
        print(record["triton_skipped"])
        results, skipped = bench_cpu(args)
    record["skipped"] = skipped
    record["results"] = results
    out = args.out or RESULTS / f"decode-{_slug(record['machine'])}.json"
    atomic_write_text(out, strict_json(record) + "\n")
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main()
