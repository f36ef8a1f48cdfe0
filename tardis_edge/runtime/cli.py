"""``tardis-edge``: run an exported artifact on images, videos and cameras (``predict``), time it (``bench``), and
score it on a labelled set (``eval``). No torch is imported (unless ``--backend pytorch``).

    tardis-edge predict ARTIFACT clip.mp4 frames/ --out results/ --overlay
    tardis-edge bench ARTIFACT --batch-sizes 1,8 --out bench.json
    tardis-edge eval ARTIFACT --data ../shared/data/openfield-Pranav-2018-10-30 --split test
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tardis_edge import geometry
from tardis_edge.config import DefaultsHelpFormatter
from tardis_edge.errors import ArgumentParser, describe_os_error, run_cli
from tardis_edge.io import atomic_write_text, strict_json
from tardis_edge.provenance import measurement
from tardis_edge.runtime.backends import Backend
from tardis_edge.runtime.boxes import read_boxes_csv
from tardis_edge.runtime.runner import DECODES, Runner, open_runner
from tardis_edge.runtime.video import Frame, FrameSource, ThreadedReader, open_sources
from tardis_edge.runtime.writers import (
    VALUES,
    CocoGroundTruth,
    DlcResultWriter,
    OverlayVideo,
    check_scorer,
    default_scorer,
    draw_pose,
    write_overlay_image,
)

LOG = logging.getLogger("tardis_edge.runtime")
SUMMARY_FILE = "summary.json"
MAX_LISTED_BAD_FRAMES = 1000
MAX_LISTED_BOXES = 5
# bench reports a backend/precision it cannot open (missing engine, no TensorRT here) and goes on with the others
NOT_RUNNABLE = (FileNotFoundError, ValueError, ImportError, RuntimeError, KeyError)
DETECTOR_MIN_SCORE = 0.25


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _positive_ints(text: str) -> list[int]:
    try:
        values = [int(t) for t in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def _class_ids(text: str) -> list[int]:
    try:
        values = [int(t) for t in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class ids >= 0, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated class ids >= 0, got {text!r}")
    return values


def _add_runner_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifact", help="artifact folder from tardis-export (pytorch backend: a run folder or model.pt)")
    p.add_argument("--backend", default=Backend.ONNXRUNTIME.value, choices=[b.value for b in Backend])
    p.add_argument(
        "--precision",
        default="fp32",
        help="fp32 | fp16 | int8 (as exported; int8 runs tardis_int8_cpu.onnx in ONNX Runtime, the int8_qdq engine in "
        "TensorRT; int8_cpu | int8_qdq pick one; default fp32)",
    )
    p.add_argument("--decode", default="graph", choices=DECODES, help="decode in the graph or in NumPy on heatmaps")
    p.add_argument("--decode-method", help="NumPy decode override: argmax | msra | dark | softargmax")
    p.add_argument("--flip-test", action="store_true", help="average with the flipped crop (needs --decode numpy)")
    p.add_argument("--no-refine", action="store_true", help="skip the second pass on the box around the keypoints")
    p.add_argument("--providers", type=_csv_list, help="ONNX Runtime providers, e.g. CUDAExecutionProvider")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    p.add_argument("--engine", help="TensorRT engine (default: ARTIFACT/tardis_<precision>.engine)")
    p.add_argument("--device", default="cpu", help="PyTorch backend device")
    p.add_argument("--checkpoint", help="PyTorch backend: the run folder or model.pt (default: ARTIFACT)")
    p.add_argument("--batch-size", type=int, default=8, help="frames per inference call (default 8)")
    p.add_argument("--debug", action="store_true", help="show the traceback of any error")


def _open(args: argparse.Namespace, precision: str | None = None, backend: str | None = None) -> Runner:
    backend = backend or args.backend
    pytorch = Backend.parse(backend) is Backend.PYTORCH
    return open_runner(
        args.checkpoint if pytorch and args.checkpoint else args.artifact,
        backend=backend,
        precision=precision or args.precision,
        providers=args.providers,
        decode=args.decode,
        refine=not args.no_refine,
        flip_test=args.flip_test,
        decode_method=args.decode_method,
        batch_size=args.batch_size,
        threads=args.threads,
        engine=args.engine,
        device=args.device,
    )


# ---------------------------------------------------------------------------------------------------- predict
class _SourceRun:
    """Runs one source through the runner into its writers, in batches, keeping rows in frame order."""

    def __init__(
        self,
        runner: Runner,
        source: FrameSource,
        args: argparse.Namespace,
        scorer: str,
        boxes: dict | None,
        coco_gt: CocoGroundTruth | None = None,
        model: dict | None = None,
    ):
        self.runner = runner
        self.source = source
        self.args = args
        self.boxes = boxes
        self.coco_gt = coco_gt
        self.out = Path(args.out)
        self.video = source.kind != "images"
        self.follower = runner.new_follower() if self.video else None
        self.writer = DlcResultWriter(
            self.out,
            source.name,
            scorer,
            runner.metadata.keypoint_names,
            values=args.values,
            fps=source.fps,
            batch_size=args.batch_size,
            model=model,
            category_id=coco_gt.category_id if coco_gt is not None else 1,
        )
        self.not_in_coco_gt: list[str] = []  # images --coco-gt does not have (no COCO entry)
        self.overlay = (
            OverlayVideo(self.out / f"{source.name}_overlay.mp4", source.fps) if args.overlay and self.video else None
        )
        self.frames_done = 0
        self.boxes_used: set[int | str] = set()
        self.summary: dict | None = None
        self.error: str | None = None  # why the run stopped early (the machine), for the summary

    def _user_box(self, frame: Frame) -> geometry.CropBox | None:
        if self.boxes is None:
            return None
        key = frame.index if self.video or frame.name not in self.boxes else frame.name
        xywh = self.boxes.get(key)
        if xywh is None:
            return None
        self.boxes_used.add(key)
        return geometry.box_from_xywh(xywh, self.runner.input_wh, self.runner.metadata.padding)

    def _infer(self, batch: list[Frame]) -> None:
        if not batch:
            return
        images = [f.image for f in batch if f.image is not None]
        assert len(images) == len(batch), "bad frames never reach inference"
        user = [self._user_box(f) for f in batch] if self.boxes is not None else None
        if self.follower is not None:
            numbers = [f.index for f in batch]
            result = self.runner.track(images, self.follower, boxes=user, color="BGR", frame_numbers=numbers)
        else:
            result = self.runner(images, boxes=user, color="BGR")
        skeleton = self.runner.metadata.skeleton
        for frame, kps, scores, box in zip(batch, result.keypoints, result.scores, result.boxes, strict=True):
            assert frame.image is not None
            size = (frame.image.shape[1], frame.image.shape[0])
            self.writer.add(self._label(frame), self._image_id(frame), kps, scores, image_wh=size)
            if self.args.overlay and frame.image is not None:
                drawn = draw_pose(frame.image, kps, scores, skeleton, self.runner.follow.min_score, box.as_xywh())
                if self.overlay is not None:
                    self.overlay.write(drawn)
                else:
                    write_overlay_image(
                        self.out / f"{self.source.name}_overlay" / f"{Path(frame.name).stem}.png", drawn
                    )
        self._count(len(batch))

    def _label(self, frame: Frame) -> int | str:
        """The frame's row label in the DeepLabCut files: its number (video) or its file name (images)."""
        return frame.index if self.video else frame.name

    def _image_id(self, frame: Frame) -> int | None:
        """The frame's COCO ``image_id``: the ground truth's id of its file (``--coco-gt``), else its number."""
        if self.coco_gt is None:
            return frame.index
        from tardis_edge.runtime.video import ImageSource

        assert isinstance(self.source, ImageSource), "--coco-gt is refused for videos before the run starts"
        image_id = self.coco_gt.image_id(self.source.paths[frame.index])
        if image_id is None:
            self.not_in_coco_gt.append(frame.name)
        return image_id

    def _count(self, n: int) -> None:
        self.frames_done += n
        if self.writer.flush_due(self.args.flush_every):
            self.writer.flush()

    def run(self) -> dict:
        """Process the whole source; ``self.summary`` is set even when it stops on an error or Ctrl-C."""
        from tqdm import tqdm

        start = time.perf_counter()
        bar = tqdm(
            total=self.source.report.expected_frames,
            unit="frame",
            desc=self.source.name,
            disable=self.args.quiet,
            dynamic_ncols=True,
        )
        batch: list[Frame] = []
        status = "interrupted"
        stopped: OSError | None = None
        try:
            with ThreadedReader(self.source, queue_size=max(2 * self.args.batch_size, 8)) as reader:
                for frame in reader:
                    if frame.image is None:
                        self._infer(batch)  # keep rows in frame order
                        batch = []
                        self.writer.add(self._label(frame), None, None, None)
                        self._count(1)
                    else:
                        batch.append(frame)
                        if len(batch) >= self.args.batch_size:
                            self._infer(batch)
                            batch = []
                    bar.update(1)
                self._infer(batch)
            status = "complete"
        except OSError as exc:  # the disk: each result file keeps its last complete flush (atomic writes)
            stopped = exc
        finally:
            bar.close()
            if stopped is None:
                try:
                    self.writer.flush()  # whatever finished, also on Ctrl-C or an error
                except OSError as exc:
                    stopped = exc
            if self.overlay is not None:
                self.overlay.close(keep=True)
            if stopped is not None:
                status, self.error = "stopped", describe_os_error(stopped)
            self.summary = self._summary(status, time.perf_counter() - start)
            if stopped is not None:
                raise self._stopped(stopped) from None
        return self.summary

    def _stopped(self, exc: OSError) -> OSError:
        """``exc`` saying where the run stopped and what the result files hold."""
        held = ", ".join(f"{p.name} {n} rows" for p, n in self.writer.rows_in_files().items()) or "no result file yet"
        return OSError(
            exc.errno,
            f"{exc.strerror or exc}; stopped after {self.frames_done} frames of {self.source.name} (written so far, "
            f"complete and readable: {held}; {SUMMARY_FILE} says where it stopped)",
            exc.filename,
        )

    def _summary(self, status: str, seconds: float) -> dict:
        report = self.source.report
        bad = [i for i, _ in report.bad_frames]
        outputs = {k: str(v) for k, v in self.writer.paths.items()}
        if self.overlay is not None and self.overlay.frames:
            outputs["overlay"] = str(self.overlay.path)
        return {
            "input": self.source.name,
            "kind": report.kind,
            "status": status,
            "frames_expected": report.expected_frames,
            "frames_processed": self.frames_done - len(bad),
            "bad_frames": len(bad),
            "bad_frame_indices": bad[:MAX_LISTED_BAD_FRAMES],
            "bad_frame_reasons": sorted({r for _, r in report.bad_frames}),
            "ended": report.ended if status == "complete" else f"stopped: {self.error}" if self.error else status,
            "rows_in_files": {str(p): n for p, n in self.writer.rows_in_files().items()},
            "lost_frames": self.follower.lost_frames if self.follower is not None else None,
            "recovered_frames": self.follower.recovered_frames if self.follower is not None else None,
            "boxes_from_file": len(self.boxes_used),
            "boxes_not_used": sorted(map(str, set(self.boxes) - self.boxes_used))[:MAX_LISTED_BAD_FRAMES]
            if self.boxes is not None
            else [],
            "images_not_in_coco_gt": self.not_in_coco_gt[:MAX_LISTED_BAD_FRAMES],
            "seconds": round(seconds, 3),
            "fps": round(self.frames_done / seconds, 2) if seconds > 0 else None,
            "outputs": outputs,
        }


class _MultiSourceRun(_SourceRun):
    """One source through the multi-animal runner: every animal found, posed and tracked; DeepLabCut multi-animal
    files (one individual per track), COCO results with ``track_id``, SLEAP predictions (``.predictions.slp``) and an
    overlay with one colour per identity."""

    def __init__(self, multi: Any, source: FrameSource, args: argparse.Namespace, scorer: str, coco_gt, model):
        self.multi = multi
        self.num_tracks = multi.multi.max_animals
        super().__init__(multi.runner, source, args, scorer, None, coco_gt, model)
        self.follower = None
        self.writer = DlcResultWriter(
            self.out,
            source.name,
            scorer,
            multi.metadata.keypoint_names,
            individuals=individual_names(self.num_tracks),
            values=args.values,
            fps=source.fps,
            batch_size=1,
            model=model,
            category_id=coco_gt.category_id if coco_gt is not None else 1,
        )
        self.stream = multi.stream()
        self.slp_frames: list = []
        # SLEAP predictions refer to their video file: cameras and streams get none
        self.slp_path = self.out / f"{source.name}.predictions.slp" if source.kind == "video" else None

    def _infer(self, batch: list[Frame]) -> None:
        from tardis_edge.runtime.writers import draw_identities

        for frame in batch:
            assert frame.image is not None, "bad frames never reach inference"
            poses, tracked = self.stream(frame.image, frame.index if self.video else None, color="BGR")
            keypoints, scores = tracked.by_track(self.num_tracks)
            size = (frame.image.shape[1], frame.image.shape[0])
            self.writer.add(self._label(frame), self._image_id(frame), keypoints, scores, image_wh=size)
            self.slp_frames.append((frame.index, tracked.keypoints_xy, tracked.scores, tracked.track_ids))
            if self.args.overlay:
                drawn = draw_identities(
                    frame.image, tracked.keypoints_xy, tracked.scores, tracked.track_ids,
                    self.runner.metadata.skeleton, self.runner.follow.min_score,
                )  # fmt: skip
                if self.overlay is not None:
                    self.overlay.write(drawn)
                else:
                    write_overlay_image(
                        self.out / f"{self.source.name}_overlay" / f"{Path(frame.name).stem}.png", drawn
                    )
            if not self.video:
                self.stream.predictor.reset()  # images are not a sequence: nothing is held between them
                self.stream.tracker.reset()
        self._count(len(batch))

    def run(self) -> dict:
        try:
            return super().run()
        finally:
            if self.slp_path is not None and self.slp_frames:
                from tardis_edge.runtime.multi import write_slp

                write_slp(
                    self.slp_path,
                    self.source.spec,  # type: ignore[attr-defined]  (a VideoSource: slp_path is set for files only)
                    self.runner.metadata,
                    self.slp_frames,
                    self.num_tracks,
                    individual_names(self.num_tracks),
                )
                if self.summary is not None:
                    self.summary["outputs"]["slp"] = str(self.slp_path)

    def _summary(self, status: str, seconds: float) -> dict:
        out = super()._summary(status, seconds)
        counts = np.array(self.stream.counts or [0])
        out["animals"] = {
            "max_animals": self.num_tracks,
            "per_frame_mean": round(float(counts.mean()), 3),
            "frames_with_none": int((counts == 0).sum()),
            "frames_with_fewer": int((counts < self.num_tracks).sum()),
            "found_beyond_max": self.stream.animals_dropped,
            "finder_frames": self.stream.detections,
        }
        return out


def individual_names(count: int) -> list[str]:
    """DeepLabCut's default individual names, ``individual1`` … (one per track id ``0 .. count-1``)."""
    return [f"individual{i + 1}" for i in range(count)]


def refuse_existing_results(out: Path, sources: Sequence[FrameSource], scorer: str, overlay: bool) -> None:
    """Earlier results in ``out`` are never replaced without ``--overwrite`` (an interrupted run's rows included)."""
    found = []
    for source in sources:
        paths = list(DlcResultWriter(out, source.name, scorer, []).paths.values()) + [out / SUMMARY_FILE]
        tracked = DlcResultWriter(out, source.name, scorer, [], individuals=[])  # multi-animal names
        paths += list(tracked.paths.values()) + [out / f"{source.name}.predictions.slp"]
        if overlay:
            paths += [out / f"{source.name}_overlay.mp4", out / f"{source.name}_overlay"]
        found += [p for p in paths if p.exists()]
    if found:
        raise FileExistsError(
            f"{found[0]} already exists ({len(found)} earlier result file(s) in {out}); pass --out to another "
            "folder, or --overwrite to replace them"
        )


def check_boxes_match(boxes: dict, source: FrameSource, path: str) -> None:
    """Refuse ``--boxes`` rows naming frames the input does not have (a wrong file, or names of another folder)."""
    from tardis_edge.runtime.video import ImageSource

    if isinstance(source, ImageSource):
        files = source.all_paths
        known: set[int | str] = {p.name for p in files} | set(range(len(files)))
        unknown = [k for k in boxes if k not in known]
        what = f"images of {source.name} ({len(files)} files, e.g. {files[0].name})"
    else:
        count = getattr(source, "frame_count", None)
        unknown = [k for k in boxes if not isinstance(k, int) or (count is not None and k >= count)]
        what = f"frames of {source.name}" + (f" (0..{count - 1})" if count else " (frame numbers)")
    if unknown:
        listed = ", ".join(map(str, unknown[:MAX_LISTED_BOXES])) + (" …" if len(unknown) > MAX_LISTED_BOXES else "")
        raise ValueError(
            f"--boxes {path}: {len(unknown)} of {len(boxes)} rows name no frame of the input: {listed}; the frame "
            f"column must name {what}"
        )


def _open_multi(args: argparse.Namespace, runner: Runner, boxes: dict | None):
    """The multi-animal runner when the artifact has a finder or ``--detector`` is given, else None."""
    if args.detector is None:
        for option, value in (
            ("--detector-classes", args.detector_classes),
            ("--detector-min-score", args.detector_min_score),
        ):
            if value is not None:
                raise ValueError(f"{option} sets up --detector; pass --detector ONNX too, or drop {option}")
    elif args.single_animal or boxes is not None:
        option = "--single-animal" if args.single_animal else "--boxes"
        raise ValueError(
            f"--detector finds every animal, {option} follows one animal in given boxes; drop one of the two"
        )
    if runner.metadata.finder is None and args.detector is None:
        if args.max_animals is not None:
            raise ValueError(
                f"--max-animals {args.max_animals}: {args.artifact} has no animal finder (it was trained on "
                "single-animal data); drop --max-animals, pass --detector PATH (an ONNX animal detector), or export "
                "a model trained on multi-animal labels"
            )
        return None
    if args.single_animal:
        return None
    if boxes is not None:
        raise ValueError(
            "--boxes gives one box per frame, but this artifact finds every animal itself; drop --boxes, or pass "
            "--single-animal to follow one animal in the given boxes"
        )
    if args.detector is not None and runner.metadata.finder is None and args.max_animals is None:
        raise ValueError(
            f"--detector {args.detector}: {args.artifact} has no animal finder, so nothing sets the most animals per "
            "frame; pass --max-animals N (one track, one DeepLabCut individual each)"
        )
    if args.detect_every < 1:
        raise ValueError(f"--detect-every must be >= 1, got {args.detect_every}")
    from tardis_edge.runtime.backends import Backend
    from tardis_edge.runtime.multi import multi_runner

    folder = Path(args.artifact)
    folder = folder.parent if folder.name == "model.json" else folder
    multi = multi_runner(
        runner, folder, Backend.parse(args.backend), args.precision, max_animals=args.max_animals,
        detect_every=args.detect_every, providers=args.providers, threads=args.threads,
        refine_tracked=not args.no_refine_tracked,
        detector=args.detector, detector_classes=args.detector_classes,
        detector_min_score=DETECTOR_MIN_SCORE if args.detector_min_score is None else args.detector_min_score,
    )  # fmt: skip
    if multi.multi.max_animals < 1:
        raise ValueError(
            f"{args.artifact} sets no maximum number of animals; pass --max-animals N (the most animals in one frame)"
        )
    return multi


def cmd_predict(args: argparse.Namespace) -> int:
    for option, value in (("--batch-size", args.batch_size), ("--flush-every", args.flush_every)):
        if value < 1:
            raise ValueError(f"{option} must be >= 1, got {value}")
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
    boxes = read_boxes_csv(args.boxes) if args.boxes else None
    sources = open_sources(args.inputs, args.max_frames)
    if boxes is not None and len(sources) != 1:
        raise ValueError(
            f"--boxes gives the boxes of one input; got {len(sources)} inputs ({[s.name for s in sources]})"
        )
    if boxes is not None:
        check_boxes_match(boxes, sources[0], args.boxes)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; pass a folder for the results")
    scorer = check_scorer(args.scorer) if args.scorer else default_scorer(args.artifact)
    coco_gt = None
    if args.coco_gt:
        videos = [s for s in sources if s.kind != "images"]
        if videos:
            raise ValueError(
                f"--coco-gt matches image files by name, and {videos[0].name} is a {videos[0].kind}; pass image files "
                "or folders with --coco-gt, or run videos without it (image_id = frame number)"
            )
    if not args.overwrite:
        refuse_existing_results(out, sources, scorer, args.overlay)
    out.mkdir(parents=True, exist_ok=True)
    with _open(args) as runner:
        if args.coco_gt:
            coco_gt = CocoGroundTruth.read(args.coco_gt, runner.metadata.keypoint_names)
        model = {
            "artifact": str(Path(args.artifact).resolve()),
            "backend": runner.backend.name,
            "precision": args.precision,
            "decode": f"{args.decode}:{runner.decode_method}",
            "refine": runner.refine,
            "keypoint_names": list(runner.metadata.keypoint_names),
            "versions": dict(runner.metadata.versions),
        }
        summary: dict = {
            "artifact": str(args.artifact),
            "backend": runner.backend.name,
            "precision": args.precision,
            "decode": f"{args.decode}:{runner.decode_method}",
            "refine": runner.refine,
            "scorer": scorer,
            "values": args.values,
            "coco_gt": str(args.coco_gt) if args.coco_gt else None,
            "inputs": [],
        }
        multi = _open_multi(args, runner, boxes)
        if multi is not None:
            summary["multi_animal"] = {
                "max_animals": multi.multi.max_animals,
                "detect_every": args.detect_every,
                "refine_tracked": multi.multi.refine_tracked,
                "detector": None
                if multi.detector is None
                else {
                    "path": str(Path(args.detector).resolve()),
                    "layout": multi.detector.layout,
                    "input_hw": list(multi.detector.input_hw),
                    "classes": multi.detector.classes,
                    "min_score": multi.detector.min_score,
                },
            }
        for source in sources:
            if multi is not None:
                job: _SourceRun = _MultiSourceRun(multi, source, args, scorer, coco_gt, model)
            else:
                job = _SourceRun(runner, source, args, scorer, boxes, coco_gt, model)
            try:
                job.run()
            except BaseException as exc:
                if job.summary is not None:  # best effort: the disk may be full, and the error says so already
                    summary["inputs"].append(job.summary)
                    with contextlib.suppress(OSError):
                        atomic_write_text(out / SUMMARY_FILE, strict_json(summary))
                if isinstance(exc, KeyboardInterrupt):
                    raise KeyboardInterrupt(
                        f"interrupted; the results in {out} hold the {job.frames_done} frames of {source.name} done "
                        f"so far ({SUMMARY_FILE}); run again with --overwrite to start over"
                    ) from None
                raise
            summary["inputs"].append(job.summary)
            atomic_write_text(out / SUMMARY_FILE, strict_json(summary))
    for item in summary["inputs"]:
        bad = item["bad_frames"]
        listed = ", ".join(str(i) for i in item["bad_frame_indices"][:20]) + (" …" if bad > 20 else "")
        print(
            f"{item['input']}: {item['frames_processed']} frames at {item['fps']} fps; bad frames: {bad}"
            + (f" ({listed})" if bad else "")
            + (
                f"; animal lost (scores too low) on {item['lost_frames']} frames; followed box missed and a "
                f"whole-frame search re-found it on {item['recovered_frames']}"
                if item["lost_frames"] is not None
                else ""
            )
            + f"; {item['ended']}"
        )
        if item["boxes_not_used"]:
            print(f"{item['input']}: --boxes rows for frames never reached: {', '.join(item['boxes_not_used'][:20])}")
        if item["images_not_in_coco_gt"]:
            missing = item["images_not_in_coco_gt"]
            print(f"{item['input']}: {len(missing)} images not in --coco-gt, left out of the COCO results: "
                  f"{', '.join(missing[:20])}" + (" …" if len(missing) > 20 else ""))  # fmt: skip
    print(f"results in {out} ({SUMMARY_FILE})")
    return 0


# ---------------------------------------------------------------------------------------------------- bench
def _percentiles(times_s: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(times_s) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


def _time(fn, warmup: int, iterations: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def bench_runner(runner: Runner, batch_sizes: Sequence[int], warmup: int, iterations: int, frame_wh: tuple[int, int]):
    """Latency and throughput of one runner: the model on crops, and the whole per-frame pipeline.

    ``model``: ``infer_crops`` on a random ``(B, 3, H_in, W_in)`` batch (backend + decode). ``pipeline``: frames of
    ``frame_wh`` through crop, inference, decode and (with refine) the second pass, as ``predict`` runs them.
    """
    rng = np.random.default_rng(0)
    w_in, h_in = runner.input_wh
    rows = []
    for b in batch_sizes:
        crops = rng.uniform(0, 255, size=(b, 3, h_in, w_in)).astype(np.float32)
        frames = [rng.integers(0, 256, size=(frame_wh[1], frame_wh[0], 3), dtype=np.uint8) for _ in range(b)]
        model = _time(lambda crops=crops: runner.infer_crops(crops), warmup, iterations)
        pipeline = _time(
            lambda frames=frames: runner(frames, color="RGB"), max(1, warmup // 2), max(3, iterations // 2)
        )
        rows.append(
            {
                "batch_size": b,
                "model": _percentiles(model) | {"throughput_fps": round(b / float(np.median(model)), 2)},
                "pipeline": _percentiles(pipeline)
                | {"throughput_fps": round(b / float(np.median(pipeline)), 2), "passes": 2 if runner.refine else 1},
            }
        )
    return rows


def cmd_bench(args: argparse.Namespace) -> int:
    from tardis_edge.runtime.backends.ort import import_onnxruntime

    onnxruntime = import_onnxruntime()

    entries = []
    for backend in args.backends:
        for precision in args.precisions:
            try:
                runner = _open(args, precision=precision, backend=backend)
            except NOT_RUNNABLE as e:
                print(f"bench: {backend}/{precision}: not run: {e}", file=sys.stderr)
                entries.append({"backend": backend, "precision": precision, "error": str(e)})
                continue
            with runner:
                rows = bench_runner(runner, args.batch_sizes, args.warmup, args.iterations, tuple(args.frame_size))
            entries.append(
                {"backend": runner.backend.name, "precision": precision, "decode": args.decode, "rows": rows}
            )
            for row in rows:
                m, p = row["model"], row["pipeline"]
                print(
                    f"{runner.backend.name} {precision} batch {row['batch_size']:>3}: model p50 {m['p50_ms']:.2f} ms "
                    f"p99 {m['p99_ms']:.2f} ms ({m['throughput_fps']:.1f} crops/s); pipeline p50 {p['p50_ms']:.2f} ms "
                    f"({p['throughput_fps']:.1f} frames/s)"
                )
    report = {
        "artifact": str(args.artifact),
        "host": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__,
            # other processes compete for the cores: read timings against the load they ran under
            "load_average_1_5_15min": [round(v, 2) for v in os.getloadavg()],
        },
        "settings": {
            "warmup": args.warmup,
            "iterations": args.iterations,
            "frame_size": list(args.frame_size),
            "threads": args.threads,
            "refine": not args.no_refine,
        },
        "results": entries,
        "measured": measurement(["tardis-edge", *args.argv]),
    }
    if args.out:
        atomic_write_text(args.out, strict_json(report))
        print(f"wrote {args.out}")
    return 0 if any("rows" in e for e in entries) else 1


# ---------------------------------------------------------------------------------------------------- eval
def select_split(dataset, split: str, artifact: Path):
    """The evaluation subset: a part (``test``, ``val``, ``train``) of the split training recorded (the artifact's
    ``split.json``, or a split file given as a path), or ``all``."""
    from tardis_edge.splits import PARTS, SPLIT_FILE, Split

    if split == "all":
        return dataset
    if split in PARTS:
        path = Path(artifact) / SPLIT_FILE
        if not path.is_file():
            raise ValueError(
                f"--split {split}: {artifact} has no {SPLIT_FILE} (exported before splits were recorded, or from a "
                "bare checkpoint); pass --split all, or a split file and a part: --split PATH/TO/split.json:test"
            )
        part = split
    else:
        file, _, part = split.rpartition(":")
        if not file or part not in PARTS:
            raise ValueError(
                f"--split must be test, val, train, all or SPLIT_FILE:PART (PART one of test/val/train); got {split!r}"
            )
        path = Path(file)
    parts = dict(zip(PARTS, Split.read(path).apply(dataset), strict=True))
    return parts[part]


def cmd_eval(args: argparse.Namespace) -> int:
    from tardis_edge.data import load_dataset, read_sample_image
    from tardis_edge.metrics import evaluate_predictions

    dataset = load_dataset(args.data)
    test = select_split(dataset, args.split, args.artifact).labelled_only()
    if len(test) == 0:
        raise ValueError(f"split {args.split!r} of {args.data} has no labelled samples to evaluate")
    with _open(args) as runner:
        names = list(runner.metadata.keypoint_names)
        if names != list(dataset.schema.names):
            raise ValueError(
                f"the artifact's keypoints {names} differ from the dataset's {list(dataset.schema.names)}; evaluate on "
                "data with the same keypoints"
            )
        keypoints, scores = [], []
        for start in range(0, len(test), args.batch_size):
            chunk = test.samples[start : start + args.batch_size]
            images = [read_sample_image(s) for s in chunk]  # RGB
            boxes = None
            if args.gt_boxes:
                missing = [s.sample_id for s in chunk if s.bbox_xywh is None]
                if missing:
                    raise ValueError(
                        f"--gt-boxes: samples {missing[:3]} have no bounding box (DeepLabCut data has none)"
                    )
                boxes = np.stack([s.bbox_xywh for s in chunk])
            result = runner(images, boxes=boxes, color="RGB")
            keypoints.append(result.keypoints)
            scores.append(result.scores)
        metrics = evaluate_predictions(test, np.concatenate(keypoints), np.concatenate(scores), dataset.schema)
        metrics["evaluated"] = {
            "artifact": str(args.artifact),
            "backend": runner.backend.name,
            "precision": args.precision,
            "decode": f"{args.decode}:{runner.decode_method}",
            "flip_test": args.flip_test,
            "refine": runner.refine,
            "data": str(args.data),
            "split": args.split,
            "boxes": "ground truth" if args.gt_boxes else "detector-free (whole frame, then refine)",
        }
    metrics["measured"] = measurement(["tardis-edge", *args.argv])
    text = strict_json(metrics)
    if args.out:
        atomic_write_text(args.out, text)
    headline = {
        k: metrics[k] for k in ("num_samples", "rmse_px", "mean_px", "PCK@0.05", "PCK@0.1", "AP") if k in metrics
    }
    print(strict_json(headline, indent=None))
    return 0


# ---------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="tardis-edge", description=__doc__.split("\n\n")[0], formatter_class=DefaultsHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every skipped frame and more")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "predict",
        formatter_class=DefaultsHelpFormatter,
        help="keypoints for images, folders, videos, cameras, stream URLs",
    )
    _add_runner_options(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image, folder, video file, camera index or URL")
    p.add_argument(
        "--out", required=True, help="output folder (DeepLabCut H5/CSV/meta pickle, COCO results JSON, summary)"
    )
    p.add_argument("--overlay", action="store_true", help="also write the skeleton drawn on each frame")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results in --out (refused otherwise)")
    p.add_argument("--boxes", help="CSV frame,x,y,w,h with your detector's boxes (one input only)")
    p.add_argument("--max-frames", type=int, help="stop each input after N frames")
    p.add_argument(
        "--flush-every",
        type=int,
        default=500,
        help="rewrite the result files after N more frames (spaced out on long runs to keep it under 10%% of the time)",
    )
    p.add_argument(
        "--scorer",
        help="DeepLabCut scorer: files are <video><scorer>.h5 etc.; name a DeepLabCut shuffle's scorer (e.g. "
        "DLC_Resnet50_openfieldOct30shuffle1_snapshot_200) for project-level DeepLabCut functions (default "
        "DLC_<artifact folder name>, what create_labeled_video(..., init_weights=ARTIFACT) looks for)",
    )
    p.add_argument(
        "--values",
        default="deeplabcut",
        choices=VALUES,
        help="deeplabcut: finite x, y and likelihood in [0, 1] (a keypoint not found: likelihood 0 at its last found "
        "position); raw: NaN where not found and the unclipped score",
    )
    p.add_argument(
        "--coco-gt",
        help="COCO ground-truth JSON: the COCO results take its image ids (matched by file name) and category",
    )
    p.add_argument(
        "--max-animals",
        type=int,
        help="multi-animal models: most animals per frame, one track (DeepLabCut individual) each (default: the most "
        "seen in one training frame, from model.json); the weakest beyond it are dropped and counted in the summary",
    )
    p.add_argument(
        "--detect-every",
        type=int,
        default=1,
        help="multi-animal models: run the animal finder every N frames and on every frame that holds fewer animals "
        "than --max-animals; in between, each animal's box comes from its own previous pose",
    )
    p.add_argument(
        "--no-refine-tracked",
        action="store_true",
        help="multi-animal models: on frames without a finder run, pose each animal once, in the box around its "
        "previous pose (no refine pass; about half the pose cost, for --detect-every > 1)",
    )
    p.add_argument(
        "--single-animal",
        action="store_true",
        help="multi-animal models: ignore the finder and follow one animal (the single-animal path, --boxes allowed)",
    )
    p.add_argument(
        "--detector",
        metavar="ONNX",
        help="find the animals with this ONNX detector instead of the artifact's finder (any artifact; one without a "
        "finder needs --max-animals): Ultralytics YOLOv5/v8-v12 raw heads, YOLOv10/YOLO26 end-to-end exports, "
        "MegaDetector v5/v6 (README 'Many animals'); run in ONNX Runtime with --providers/--threads",
    )
    p.add_argument(
        "--detector-classes",
        type=_class_ids,
        help="--detector: keep these class ids, e.g. 0 (MegaDetector: animal) or 0,1 (default: all classes)",
    )
    p.add_argument(
        "--detector-min-score",
        type=float,
        help=f"--detector: a box needs a score above this (default {DETECTOR_MIN_SCORE}, Ultralytics' conf)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "bench", formatter_class=DefaultsHelpFormatter, help="latency p50/p99 and throughput per batch size and backend"
    )
    _add_runner_options(p)
    p.add_argument("--backends", type=_csv_list, help="comma-separated backends (default: --backend)")
    p.add_argument("--precisions", type=_csv_list, help="comma-separated precisions (default: --precision)")
    p.add_argument("--batch-sizes", type=_positive_ints, default=[1, 8], help="e.g. 1,8,32 (default 1,8)")
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--frame-size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"))
    p.add_argument("--out", help="JSON report path")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "eval",
        formatter_class=DefaultsHelpFormatter,
        help="accuracy (RMSE, PCK, OKS AP) of the artifact on a labelled set",
    )
    _add_runner_options(p)
    p.add_argument("--data", required=True, help="DeepLabCut project folder or COCO keypoints JSON")
    p.add_argument(
        "--split",
        default="test",
        help="test | val | train (parts of the split training recorded, the artifact's split.json) | all | "
        "SPLIT_FILE:PART (default test)",
    )
    p.add_argument("--gt-boxes", action="store_true", help="crop the labelled boxes (COCO) instead of detector-free")
    p.add_argument("--out", help="metrics JSON path")
    p.set_defaults(func=cmd_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tardis-edge`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in the JSON that bench and eval write
    if args.command == "bench":
        args.backends = args.backends or [args.backend]
        args.precisions = args.precisions or [args.precision]
        unknown = [b for b in args.backends if b not in {x.value for x in Backend}]
        if unknown:
            parser.error(f"unknown backends {unknown}; choose from {[b.value for b in Backend]}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.verbose:  # FFmpeg's own log lines ("moov atom not found"): the summary and the errors say it better
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    return run_cli(f"tardis-edge {args.command}", lambda: args.func(args), debug=args.debug or None)


if __name__ == "__main__":
    sys.exit(main())
