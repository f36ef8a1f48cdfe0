"""``tardis-export`` (``python -m export``): a trained run -> ONNX FP32/FP16/INT8 artifact, TensorRT build
commands or engines, and a verification report against PyTorch on held-out real data.

    tardis-export runs/openfield                         # FP32 graphs + verification
    tardis-export runs/openfield --fp16 --int8 --calib ../shared/data/openfield-Pranav-2018-10-30
    tardis-export PROJECT/dlc-models-pytorch/iteration-0/NAME-trainset95shuffle1/train    # DeepLabCut 3 ([dlc] extra)

Exit status (``tardis_edge.errors``): 0 success; 2 bad input (one line says what and how to fix it); 3 an artifact
exceeded its verification threshold (named in the output and in verification.md); 4 the machine (disk full,
read-only, permissions); 1 a bug (with a traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tardis_edge.config import DefaultsHelpFormatter
from tardis_edge.errors import EXIT_THRESHOLD, EXIT_USER, ArgumentParser, run_cli

EXIT_ERROR = EXIT_USER  # bad input (tardis_edge.errors); 4: the machine (disk full, read-only); 1: a bug


def _batch_profile(text: str):
    from export.tensorrt_build import BatchProfile

    try:
        low, opt, high = (int(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected MIN,OPT,MAX batch sizes like 1,8,32, got {text!r}") from exc
    try:
        return BatchProfile(low, opt, high)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT like 640x480, got {text!r}") from exc
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"input size must be positive, got {text!r}")
    return width, height


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="tardis-export",
        description="Export a trained tardis-edge model to ONNX (FP32/FP16/INT8 Q/DQ) and TensorRT, and verify it.",
        epilog="Exit status: 0 ok, 2 bad input, 3 a verification threshold exceeded, 4 the machine (disk full, "
        "read-only, permissions), 1 a bug (with a traceback). The artifact folder is replaced only once the new "
        "export is complete.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "run",
        metavar="RUN_OR_CHECKPOINT",
        help="run folder of training.full, or its model.pt; or a DeepLabCut 3 model folder (pytorch_config.yaml + "
        "snapshot-*.pt; needs the [dlc] extra)",
    )
    parser.add_argument(
        "--snapshot", type=Path, help="DeepLabCut model: the snapshot to export (default: its best, else its latest)"
    )
    parser.add_argument(
        "--input-size",
        type=_size,
        metavar="WxH",
        help="DeepLabCut bottom-up model: the frame size it runs on (default: the project's video size)",
    )
    parser.add_argument("--out", type=Path, help="artifact folder (default: RUN/export)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default 17)")
    parser.add_argument("--decode", help="decode in the graph: argmax, msra, dark, softargmax (default: the run's)")
    parser.add_argument(
        "--no-graph-decode",
        action="store_true",
        help="FP16/INT8 graphs output heatmaps instead of keypoints (decode outside the graph)",
    )
    parser.add_argument("--fp16", action="store_true", help="also write the FP16 graph")
    parser.add_argument("--int8", action="store_true", help="also write the INT8 Q/DQ graph (needs --calib)")
    parser.add_argument(
        "--calib",
        type=Path,
        help="INT8 calibration frames: an image folder or a dataset (the run's: its training split)",
    )
    parser.add_argument("--calib-size", type=int, default=64, help="calibration crops (default 64)")
    parser.add_argument("--calib-method", default="entropy", help="entropy (default), percentile or minmax")
    parser.add_argument(
        "--trt-batch",
        type=_batch_profile,
        default=None,
        metavar="MIN,OPT,MAX",
        help="TensorRT optimisation profile batch sizes (default 1,8,32)",
    )
    parser.add_argument(
        "--no-engine", action="store_true", help="only write trtexec_<precision>.sh, even where TensorRT is importable"
    )
    parser.add_argument(
        "--legacy-weak-typing",
        action="store_true",
        help="TensorRT 10.x only: weakly typed network with FP16/INT8 builder flags",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip verification against PyTorch")
    parser.add_argument("--data", type=Path, help="verify on this dataset's held-out split instead of the run's")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for ONNX Runtime and PyTorch in verification (default 1: stable timings)",
    )
    parser.add_argument("--latency-repeats", type=int, default=7, help="timed runs per latency figure (0: none)")
    parser.add_argument(
        "--max-fp32-dev", type=float, default=0.05, help="FP32 graphs: max keypoint deviation from PyTorch, input px"
    )
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=0.95,
        help="FP16/INT8: the share of the FP32 model's confident keypoints (score above the run's box_min_score) "
        "reproduced within 0.05 x the box diagonal",
    )
    parser.add_argument(
        "--max-mean-dev-box",
        type=float,
        default=0.01,
        help="FP16/INT8: mean deviation from the FP32 model on its confident keypoints, x the box diagonal",
    )
    parser.add_argument(
        "--report", type=Path, help="also write the verification report here (PATH.json and PATH.md), e.g. for results"
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of any error")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log = logging.getLogger("tardis.export")
    if not log.handlers:  # the export's own progress lines only, not the libraries' INFO logs
        handler = logging.StreamHandler(sys.stdout)
        handler.set_name("tardis-export")
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    for handler in log.handlers:  # ours writes to this call's stdout (a caller may have replaced it since)
        if handler.get_name() == "tardis-export" and isinstance(handler, logging.StreamHandler):
            handler.stream = sys.stdout  # not setStream: it flushes the old one, which may be closed

    from export.pipeline import ExportOptions
    from export.tensorrt_build import BatchProfile

    run = Path(args.run)
    out = args.out or (run if run.is_dir() else run.parent) / "export"

    def body() -> int:
        options = ExportOptions(
            out=out,
            opset=args.opset,
            decode=args.decode,
            graph_decode=not args.no_graph_decode,
            fp16=args.fp16,
            int8=args.int8,
            calib=args.calib,
            calib_size=args.calib_size,
            calib_method=args.calib_method,
            engines=not args.no_engine,
            trt_batch=args.trt_batch or BatchProfile(),
            legacy_weak_typing=args.legacy_weak_typing,
        )
        return _export(args, argv, run, out, options, log)

    return run_cli("tardis-export", body, debug=args.debug or None)


MULTI_VERIFY_SAMPLES = 100


def _stage_folder(out: Path) -> Path:
    """Where the new artifact is built before it replaces ``out`` whole (a leftover of a killed export is ours)."""
    return out.with_name(f".{out.name}.partial")


def _swap_in(stage: Path, out: Path) -> None:
    """Replace ``out`` by the complete ``stage``: the old artifact stays usable until the new one is whole."""
    import shutil

    old = out.with_name(f".{out.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        out.rename(old)
    stage.rename(out)
    if old.exists():
        shutil.rmtree(old)


def _check_out(out: Path) -> None:
    """``out`` is new, or an artifact folder written by tardis-export (never a folder of the user's other files)."""
    from tardis_edge.artifact import METADATA_FILE

    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; pass a folder for the artifact")
    if out.is_dir() and any(out.iterdir()) and not (out / METADATA_FILE).is_file():
        raise FileExistsError(
            f"--out {out} holds files but no {METADATA_FILE}: not an artifact folder, so it is not replaced; pass "
            "another --out"
        )


def _export(args: argparse.Namespace, argv: list[str] | None, run: Path, out: Path, options, log) -> int:
    import dataclasses
    import shutil

    from export.pipeline import export_artifact
    from export.source import load_source
    from export.verify import Thresholds, verify, write_report
    from tardis_edge.provenance import measurement

    _check_out(out)
    if options.calib is not None and not options.calib.exists():
        raise FileNotFoundError(
            f"--calib {options.calib} does not exist; pass a folder of frames or a dataset (DeepLabCut project or COCO "
            "keypoints JSON)"
        )
    if args.threads < 1 or args.latency_repeats < 0:
        raise ValueError(
            f"--threads must be >= 1 and --latency-repeats >= 0; got {args.threads} and {args.latency_repeats}"
        )
    source = load_source(run, args.snapshot, args.input_size)
    stage = _stage_folder(out)
    if stage.exists():
        shutil.rmtree(stage)  # an export killed before its swap
    try:
        metadata, paths = export_artifact(source, dataclasses.replace(options, out=stage))
        report = None
        if not args.no_verify:
            thresholds = Thresholds(args.max_fp32_dev, args.min_agreement, args.max_mean_dev_box)
            log.info("verifying %s against PyTorch on held-out data ...", ", ".join(paths))
            # Multi-animal data holds an animal per sample and often many frames: the pose graphs are checked on the
            # first MULTI_VERIFY_SAMPLES held-out animals (crops from their labelled boxes); the finder on its own
            held_out = MULTI_VERIFY_SAMPLES if getattr(source, "finder", None) is not None else None
            report = verify(
                source,
                {k: p for k, p in paths.items() if not k.startswith("finder_")},  # the finder: verify_finder
                thresholds,
                data_path=args.data,
                threads=args.threads,
                latency_repeats=args.latency_repeats,
                metadata=metadata,
                max_frames=held_out,
            )
            if metadata.finder is not None:
                from export.finder import verify_finder

                log.info("verifying the animal finder's graphs against PyTorch ...")
                report["finder"] = verify_finder(source, stage, metadata.finder["models"])
                report["failures"] += [r["failure"] for r in report["finder"]["graphs"].values() if r["failure"]]
            report["measured"] = measurement(["tardis-export", *(sys.argv[1:] if argv is None else argv)])
            write_report(report, stage)
    except BaseException as exc:
        shutil.rmtree(stage, ignore_errors=True)  # the old artifact in `out` was never touched
        if isinstance(exc, OSError) and exc.filename and Path(exc.filename).is_relative_to(stage):
            # name the file the user asked for, not its place in the staging folder
            raise OSError(exc.errno, exc.strerror, str(out / Path(exc.filename).relative_to(stage))) from None
        raise
    _swap_in(stage, out)
    if report is None:
        log.info("verification skipped (--no-verify); artifact in %s", out)
        return 0
    json_path, md_path = out / "verification.json", out / "verification.md"
    if args.report is not None:  # a copy for benchmarks/results (or wherever the user keeps reports)
        from tardis_edge.io import atomic_write_bytes

        report_md = args.report.with_suffix(".md")
        atomic_write_bytes(args.report, json_path.read_bytes())
        atomic_write_bytes(report_md, md_path.read_bytes())
        log.info("report copied to %s, %s", args.report, report_md)
    for key, row in report["artifacts"].items():
        d, a = row["deviation"], row["agreement"]
        log.info(
            "%-14s max %.4g px, mean %.4g px; confident keypoints %d: agreement %.4g, mean %.4g px; %s %.4g (drop %.3g "
            "points), %s",
            key,
            d["max_px"],
            d["mean_px"],
            a["confident"],
            a["agreement"],
            a["mean_px"],
            report["task_metric"],
            row["task"][report["task_metric"]],
            row["task_drop_points"],
            "FAIL" if row["failure"] else "ok",
        )
    log.info("report: %s, %s", json_path, md_path)
    if report["failures"]:
        for failure in report["failures"]:
            print(f"tardis-export: verification failed: {failure}", file=sys.stderr)
        return EXIT_THRESHOLD
    return 0


if __name__ == "__main__":
    sys.exit(main())
