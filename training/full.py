"""``python -m training.full``: the whole TARDIS-Pose recipe, top to bottom.

    data -> extract (teacher features, once) -> distill (stage 1) -> keypoints (stage 2) -> finder -> evaluate

The finder stage (multi-animal data: some image holds several animals) trains a whole-frame head that finds every
animal (``training/finder.py``); evaluate then also scores finding, posing and tracking every animal.

With no arguments it runs the built-in default: a procedural dataset it generates (drawn animals with known
keypoints plus unlabelled video frames) and a RANDOM-INITIALISED small DINOv2-shaped teacher (real DINOv2
weights are a local file we cannot ship), sized to finish on a 2-core CPU in minutes. With
``--data=PATH --teacher=PATH`` it is the real thing. Every stage is resumable: kill it and run the same
command again; finished stages are skipped.

    python -m training.full [config.yaml] [--key=value ...]
    python -m training.full --data=../shared/data/openfield-Pranav-2018-10-30 --teacher=dinov2_vits14_pretrain.pth
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tardis_edge.checkpoint import CHECKPOINT_NAME, DeployCheckpoint
from tardis_edge.config import load_config, save_config, to_dict
from tardis_edge.errors import ArgumentParser
from tardis_edge.feature_cache import ExtractConfig, FeatureCache
from tardis_edge.models import ModelConfig, build_model
from tardis_edge.provenance import versions
from tardis_edge.splits import SPLIT_FILE, Split, SplitConfig, SplitError, resolve_split
from training.adapt import AdaptConfig
from training.common import (
    Dist,
    barrier,
    init_distributed,
    load_checkpoint,
    pick_device,
    read_stage_summary,
    setup_logging,
    stage_is_done,
    write_json,
)
from training.distill import DistillConfig, run_distill
from training.extract import run_extract
from training.finder import FinderTrainConfig
from training.keypoints import KeypointsConfig, evaluate_model, final_checkpoint_name, run_keypoints

LOG = logging.getLogger("tardis")


STAGES = ("extract", "distill", "keypoints", "finder", "evaluate", "adapt")  # adapt: only with --adapt.videos


@dataclass
class DataConfig:
    """Where the frames come from and how they are split and cropped."""

    path: str | None = None  # DeepLabCut project or COCO json; None = the built-in procedural dataset
    videos: list[str] = field(default_factory=list)  # unlabelled videos for stage 1 (default: the project's videos/)
    frames_per_video: int = 200
    use_project_videos: bool = True  # DeepLabCut: also take videos/* of the project as unlabelled input
    split: SplitConfig = field(default_factory=SplitConfig)  # train / val / test, resolved once into split.json
    input_size: int = 256
    heatmap_size: int = 64
    builtin_labelled: int = 120  # size of the built-in procedural dataset (used when path is None)
    builtin_unlabelled: int = 120


@dataclass
class MultiEvalConfig:
    """Multi-animal evaluation (runs with a finder): how the test frames are posed and tracked."""

    detect_every: int = 1  # finder every N frames while tracking (the per-frame metrics always detect every frame)
    expected_animals: int = 0  # > 0: also detect on frames holding fewer animals (0: the most seen in a train image)
    max_animals: int = 0  # 0: the most animals seen in one training image
    match_oks: float = 0.5  # a labelled animal is found when a predicted one matches it with at least this OKS


@dataclass
class FullConfig:
    """The whole run. Sections are the stages' own configs."""

    out: str = "runs/default"  # the run folder (named "out", not "run": torchrun would read --run as its --run-path)
    device: str = "auto"
    new_run: bool = False  # --out holds a run with another config: move it aside (<out>.prev-<time>) and start anew
    seed: int = 0  # model initialisation (each stage seeds torch before building its model); data order: per stage
    threads: int = 0  # CPU threads for torch (0: torch's default); 1 avoids OpenMP spinning on a busy machine
    teacher: str | None = None  # a DINOv2 checkpoint (.pth); None = random teacher (clearly labelled)
    random_teacher: str = "vits14"  # architecture of the random teacher when no checkpoint is given
    random_teacher_depth: int = 4
    skip_distill: bool = False  # ablation: stage 2 from a random-init student
    init_from: str | None = None  # a run folder: stage 2 starts from its model (keypoints matched by name), no stage 1
    stages: list[str] = field(default_factory=lambda: list(STAGES))  # run only these (training.distill: up to distill)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    keypoints: KeypointsConfig = field(default_factory=KeypointsConfig)
    finder: FinderTrainConfig = field(default_factory=FinderTrainConfig)
    multi: MultiEvalConfig = field(default_factory=MultiEvalConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)  # training/adapt.py: writes a new run folder


def builtin_default(cfg: FullConfig) -> FullConfig:
    """The no-argument demo: a seeded recipe counted in epochs, so every machine trains the same model (a busy one
    takes longer; about 6 minutes of single-core CPU time in all).

    96 px crops (24 px heatmaps), a ResNet-18 student, one torch thread (two were no faster on 2 cores and much
    slower on a busy machine), a shallow random teacher at 224 px, 2 distillation epochs (the pipeline runs whole;
    a random teacher teaches little) and 140 keypoint epochs, the last checkpoint final. Chosen on built-in data
    drawn with other seeds, never on the demo's test frames: test PCK@0.1 0.96 on seed 2.
    """
    cfg.threads = 1
    cfg.data.input_size, cfg.data.heatmap_size = 96, 24
    cfg.model.backbone = "resnet18"
    cfg.extract.resolution = 224
    cfg.distill.epochs = 2
    cfg.keypoints.epochs = 140
    cfg.keypoints.final_checkpoint = "last"
    cfg.keypoints.geometric.rotation_deg, cfg.keypoints.geometric.rotation_prob = 180.0, 0.8
    cfg.distill.geometric.rotation_deg, cfg.distill.geometric.rotation_prob = 180.0, 0.8
    return cfg


# Config fields that do not change what a run trains or reports: a rerun may differ in these and still resume.
RERUN_FREE_KEYS = {
    "out", "device", "threads", "stages", "new_run", "extract.device", "extract.batch_size", "distill.num_workers",
    "keypoints.num_workers", "distill.checkpoint_every_steps", "keypoints.checkpoint_every_steps",
    "keypoints.predict.batch_size", "adapt",
}  # fmt: skip


class RunFolderError(ValueError):
    """The run folder belongs to another run."""


def config_changes(cfg: FullConfig, saved: Path, free_keys: set[str] = RERUN_FREE_KEYS) -> list[str]:
    """``"name: old -> new"`` for every config field (outside ``free_keys``) where the run saved as ``saved`` (its
    ``config.yaml``) differs from ``cfg``; a field added to the config since that run was made counts as its default."""
    import yaml

    from tardis_edge.config import config_differences, merge

    try:
        old = yaml.safe_load(saved.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{saved} is not valid YAML ({err}); move the folder away or pick another --out") from None
    differences = config_differences(merge(to_dict(FullConfig()), old), to_dict(cfg), free_keys)
    return [f"{name}: {a!r} -> {b!r}" for name, a, b in differences]


def claim_run_folder(cfg: FullConfig, run_dir: Path) -> None:
    """Make sure ``run_dir`` is this run's: new, or holding a run of the same config (which then resumes).

    A folder whose ``config.yaml`` differs in anything that changes the model, the data or the reported numbers is
    refused — resuming would mix two recipes and overwrite the old run's results — unless ``new_run`` is set, which
    moves the old run aside (nothing is deleted).
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"--out={run_dir} is a file, not a folder; pick a folder for the run (it is created)")
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return
    changes = config_changes(cfg, saved)
    if not changes:
        return
    if not cfg.new_run:
        shown = "; ".join(changes[:4]) + (f"; and {len(changes) - 4} more" if len(changes) > 4 else "")
        raise RunFolderError(
            f"{run_dir} holds a run with another config ({shown}); pick a new --out folder, or pass --new_run=true "
            "to move the old run aside"
        )
    aside = run_dir.with_name(f"{run_dir.name}.prev-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.rename(aside)
    LOG.warning("moved the earlier run in %s (another config: %s) to %s", run_dir, changes[0], aside)


# ------------------------------------------------------------------ stages as plain functions
def builtin_data(cfg: FullConfig, run_dir: Path) -> Path:
    """The built-in procedural DeepLabCut project of the run (written on first use, then reused)."""
    from tardis_edge.data.synthetic import generate_synthetic_project

    project = generate_synthetic_project(
        run_dir / "builtin-data", num_labelled=cfg.data.builtin_labelled, num_unlabelled=cfg.data.builtin_unlabelled
    )
    return project.project_dir


def load_data(cfg: FullConfig, run_dir: Path, write: bool = True):
    """Labelled dataset, its train / val / test parts, and the unlabelled frames for stage 1.

    The split is resolved once per run and written to ``split.json``; a rerun that would split differently (other
    data, other split options) is refused rather than silently training or evaluating on other frames.
    """
    from tardis_edge.data import load_dataset
    from tardis_edge.data.video import sample_video_frames

    if cfg.data.path is None:
        data_path = builtin_data(cfg, run_dir)
        LOG.info("no --data given: using the built-in procedural dataset at %s", data_path)
    else:
        data_path = Path(cfg.data.path)
    dataset = load_dataset(data_path)
    LOG.info("%s", dataset.summary)
    split = resolve_split(dataset, cfg.data.split)
    split_path = run_dir / SPLIT_FILE
    if split_path.exists():
        earlier = Split.read(split_path)
        if (earlier.train, earlier.val, earlier.test) != (split.train, split.val, split.test):
            raise SplitError(
                f"{split_path}: this run was split differently ({earlier.sizes()}, {earlier.describe}); now "
                f"{split.sizes()} ({split.describe}). Use a new --out folder for other data or split options"
            )
    elif write:
        split.write(split_path)
    train, val, test = split.apply(dataset)
    used = [s for part in (train, val, test) for s in part.samples]
    if write and any(s.image_path is None and s.video_path is not None for s in used):
        from tardis_edge.data.frame_cache import cache_video_frames

        report = cache_video_frames(used)  # labels on video frames (SLEAP): decode the frames the run reads, once
        LOG.info("frame cache: %s", report)
    for warning in dataset.summary.warnings + [w for w in train.summary.warnings if "labelled in no sample" in w]:
        LOG.warning("data: %s", warning)
    videos = [Path(v) for v in cfg.data.videos]
    if cfg.data.use_project_videos and Path(data_path).is_dir() and (Path(data_path) / "videos").is_dir():
        videos += sorted(
            p for p in (Path(data_path) / "videos").iterdir() if p.suffix.lower() in (".mp4", ".avi", ".mov")
        )
    unlabelled = []
    for v in videos:
        unlabelled += sample_video_frames(v, cfg.data.frames_per_video, num_keypoints=dataset.schema.num_keypoints)
    LOG.info(
        "split (%s): %d train / %d val / %d test labelled samples; %d unlabelled frames from %d videos",
        split.describe,
        len(train),
        len(val),
        len(test),
        len(unlabelled),
        len(videos),
    )
    return dataset, split, train, val, test, unlabelled


def stage_extract(cfg: FullConfig, run_dir: Path, samples: list) -> FeatureCache:
    """Teacher features for every stage-1 crop, cached on disk (finished samples are never recomputed)."""
    cfg.extract.cache = run_dir / "teacher_cache"
    cfg.extract.device = cfg.device
    if cfg.teacher is not None:
        cfg.extract.teacher, cfg.extract.random_teacher = Path(cfg.teacher), None
    else:
        cfg.extract.teacher, cfg.extract.random_teacher = None, cfg.random_teacher
        cfg.extract.depth = cfg.random_teacher_depth
    summary = run_extract(cfg.extract, samples)
    LOG.info("extract: %s", {k: summary[k] for k in ("teacher", "computed", "reused", "crops_per_s", "map_shape")})
    if summary["pca_picture"]:
        LOG.info("extract: PCA picture of the teacher features: %s", summary["pca_picture"])
    return FeatureCache(cfg.extract.cache)


def model_config(cfg: FullConfig, stage: str, **changes) -> ModelConfig:
    """The student's config for a stage: stage 1 has the feature decoder, stage 2 the heatmap head."""
    size = (cfg.data.input_size, cfg.data.input_size)
    if stage == "distill":
        return dataclasses.replace(cfg.model, input_size=size, use_decoder=True, use_head=False, **changes)
    return dataclasses.replace(cfg.model, input_size=size, use_decoder=False, use_head=True, **changes)


def stage_distill(cfg: FullConfig, run_dir: Path, samples: list, cache, device: torch.device, d: Dist):
    mcfg = model_config(cfg, "distill", teacher_channels=cache.channels)
    torch.manual_seed(cfg.seed)
    model = build_model(mcfg)
    wh = (cfg.data.input_size, cfg.data.input_size)
    hm = (cfg.data.heatmap_size, cfg.data.heatmap_size)
    return run_distill(model, samples, cache, cfg.distill, run_dir, wh, hm, device, d, mcfg.to_dict())


def stage_keypoints(cfg: FullConfig, run_dir: Path, dataset, train, val, device: torch.device, d: Dist):
    from tardis_edge.data.dataset import few_shot

    mcfg = model_config(cfg, "keypoints", num_keypoints=dataset.schema.num_keypoints)
    torch.manual_seed(cfg.seed + 1)
    model = build_model(mcfg)
    if cfg.init_from is not None:
        from training.adapt import load_init_weights

        load_init_weights(model, cfg.init_from, dataset.schema.names)
    elif not cfg.skip_distill:
        state = load_checkpoint(run_dir / "distill_final.pt")["model"]
        encoder = {k: v for k, v in state.items() if not k.startswith("decoder.")}
        result = model.load_state_dict(encoder, strict=False)
        not_head = [k for k in result.missing_keys if not k.startswith("head.")]
        if not_head or result.unexpected_keys:
            raise RuntimeError(
                f"stage-1 checkpoint does not fit the stage-2 student: missing {not_head[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}; was it trained with another backbone?"
            )
        LOG.info(
            "stage 2 starts from the stage-1 encoder (%d head tensors freshly initialised)", len(result.missing_keys)
        )
    else:
        LOG.info("stage 2 from a random-init student (stage 1 skipped)")
    train_samples = list(train.samples)
    if cfg.keypoints.few_shot_per_category > 0:
        subset = few_shot(train, cfg.keypoints.few_shot_per_category, cfg.keypoints.seed)
        LOG.info("few-shot: %s", subset.summary)
        train_samples = list(subset.samples)
    train_samples = [s for s in train_samples if s.labelled]
    if cfg.keypoints.memory_replay:
        from training.adapt import memory_replay

        counts = dataset.summary.keypoint_counts
        train_samples, _ = memory_replay(train_samples, cfg.init_from, dataset.schema.names, counts, cfg.adapt, device)
    wh = (cfg.data.input_size, cfg.data.input_size)
    hm = (cfg.data.heatmap_size, cfg.data.heatmap_size)
    return run_keypoints(
        model,
        train_samples,
        [s for s in val.samples if s.labelled],  # validation only: the test part is never seen here
        dataset.schema,
        cfg.keypoints,
        run_dir,
        wh,
        hm,
        device,
        d,
        mcfg.to_dict(),
    )


def final_pose_model(cfg: FullConfig, run_dir: Path, split: Split):
    """The run's final stage-2 model (``keypoints.final_checkpoint``), its config and which checkpoint it is."""
    name = final_checkpoint_name(cfg.keypoints.final_checkpoint, has_val=bool(split.val))
    state = load_checkpoint(run_dir / f"keypoints_{name}.pt")
    mcfg = ModelConfig.from_dict(state["model_config"])
    model = build_model(mcfg)
    model.load_state_dict(state["model"])
    return model, mcfg, name


def stage_finder(cfg: FullConfig, run_dir: Path, split: Split, train, device: torch.device, d: Dist):
    """Train the whole-frame animal finder from the final pose model's encoder (multi-animal data)."""
    from training.finder import run_finder

    pose_model, _, name = final_pose_model(cfg, run_dir, split)
    LOG.info("finder: starts from the %s stage-2 encoder", name)
    _, summary = run_finder(pose_model, [s for s in train.samples if s.labelled], cfg.finder, run_dir, device, d)
    return summary


def stage_evaluate(cfg: FullConfig, run_dir: Path, dataset, split: Split, test, device: torch.device) -> dict:
    """The final model on the test part (the only place the test part is read): metrics JSON, overlays, model.pt.

    Which checkpoint is final: ``keypoints.final_checkpoint`` (``auto``: the best on the validation part when
    there is one, else the last).
    """
    from training.overlays import draw_overlays

    model, mcfg, name = final_pose_model(cfg, run_dir, split)
    LOG.info("evaluate: the %s stage-2 checkpoint", name)
    model.to(device).eval()
    finder = None
    if stage_is_done(run_dir, "finder"):
        from training.finder import load_finder

        finder = load_finder(run_dir, device)
    wh = (cfg.data.input_size, cfg.data.input_size)
    test_samples = [s for s in test.samples if s.labelled]
    metrics: dict = {}
    if test_samples and finder is not None:
        LOG.info("evaluate: multi-animal run: every test frame through the finder, pose and tracker (below)")
    elif test_samples:
        metrics, kps, scores = evaluate_model(model, test_samples, dataset.schema, wh, cfg.keypoints.predict, device)
        write_json(run_dir / "metrics_test.json", metrics)
        np.savez(
            run_dir / "predictions_test.npz",
            keypoints=kps,
            scores=scores,
            sample_ids=np.array([s.sample_id for s in test_samples]),
        )
        draw_overlays(test_samples[:6], kps[:6], scores[:6], dataset.schema, run_dir / "overlays_test.png")
    else:
        LOG.warning("evaluate: the test part has no labelled sample (%s); no test metrics", split.describe)
    finder_entry = None
    if finder is not None:
        from tardis_edge.data.dataset import group_by_image
        from training.multi_eval import evaluate_multi

        most = max(len(g) for g in group_by_image(list(split.apply(dataset)[0].samples)))
        finder_entry = {
            "model": finder.state_dict(),
            "model_config": finder.config.to_dict(),
            # the most animals in one training frame is the deployed maximum unless the recipe sets one
            "config": {**to_dict(cfg.finder.decode), "max_animals": cfg.finder.decode.max_animals or most},
            "stride": float(finder.out_stride),
        }
        if test_samples:
            multi = evaluate_multi(model, finder, test_samples, dataset.schema, wh, cfg, most, device, run_dir)
            write_json(run_dir / "metrics_test.json", multi)
            metrics.update({k: v for k, v in multi.items() if isinstance(v, (int, float))})
            metrics.update(
                {f"tracking_{k}": v for k, v in multi.get("tracking", {}).items() if isinstance(v, (int, float))}
            )
    # the deployable checkpoint: model weights + the config needed to rebuild it, and the keypoint schema
    DeployCheckpoint(
        model=model.state_dict(),
        model_config=mcfg.to_dict(),
        schema=dataset.schema,
        input_size=wh,
        heatmap_size=(cfg.data.heatmap_size, cfg.data.heatmap_size),
        predict=to_dict(cfg.keypoints.predict),
        versions=versions(),
        split=split.to_dict(),
        finder=finder_entry,
    ).save(run_dir / CHECKPOINT_NAME)
    return metrics


def main(
    argv: list[str] | None = None, stages: tuple[str, ...] | None = None, prog: str = "python -m training.full"
) -> int:
    """CLI of ``training.full``; the single-stage modules call it with ``stages`` set."""
    from tardis_edge.config import options_help

    what = "the whole TARDIS-Pose recipe" if stages is None else f"stages {', '.join(stages)} of training.full"
    parser = ArgumentParser(
        prog=prog,
        usage=f"{prog} [-h] [--debug] [config.yaml] [--data=PATH] [--section.key=VALUE ...]",
        description=f"{what}: extract -> distill (stage 1) -> keypoints (stage 2) -> evaluate. Without --data "
        "(or a config naming data.path) it runs the built-in demo: a generated dataset and a random teacher.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config fields (--section.key=VALUE; --data=PATH is --data.path=PATH; the default, then "
        "[demo: VALUE] where the demo differs):\n" + options_help(FullConfig(), "demo", builtin_default(FullConfig())),
    )
    parser.add_argument("config", nargs="?", help="YAML config file (optional)")
    args, overrides = parser.parse_known_args(argv)
    defaults_for_demo = args.config is None and not any(
        o.lstrip("-").startswith(("data.path", "data=")) for o in overrides
    )
    overrides = [o.replace("--data=", "--data.path=", 1) if o.startswith("--data=") else o for o in overrides]
    cfg = load_config(FullConfig, args.config, overrides)
    if defaults_for_demo:
        cfg = load_config(FullConfig, None, None)
        cfg = builtin_default(cfg)
        from tardis_edge.config import from_dict, merge, parse_overrides

        cfg = from_dict(FullConfig, merge(to_dict(cfg), parse_overrides(overrides)))
    if stages is not None:
        cfg.stages = list(stages)
    unknown = sorted(set(cfg.stages) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
    return run(cfg)


def run(cfg: FullConfig) -> int:
    run_dir = Path(cfg.out)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    d = init_distributed(device)
    if cfg.teacher is not None and not Path(cfg.teacher).is_file():
        raise FileNotFoundError(f"--teacher={cfg.teacher}: teacher checkpoint not found; pass a DINOv2 .pth file")
    if d.is_main:
        claim_run_folder(cfg, run_dir)
    barrier(d)
    setup_logging(run_dir, d)
    if d.enabled:
        LOG.info("distributed: rank %d of %d", d.rank, d.world_size)
    t0 = time.time()
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        write_json(run_dir / "versions.json", versions())
    if cfg.teacher is None:
        LOG.warning(
            "teacher: RANDOM-INITIALISED %s (depth %d) — not DINOv2 features; pass --teacher=PATH for the real recipe",
            cfg.random_teacher,
            cfg.random_teacher_depth,
        )
    if cfg.data.path is None and d.enabled:  # rank 0 writes the built-in data; the others then read it
        if d.is_main:
            builtin_data(cfg, run_dir)
        barrier(d)
    dataset, split, train, val, test, unlabelled = load_data(cfg, run_dir, write=d.is_main)
    final_checkpoint_name(cfg.keypoints.final_checkpoint, has_val=bool(split.val))  # refuse a bad choice up front
    if cfg.keypoints.memory_replay and cfg.init_from is None:
        raise ValueError("--keypoints.memory_replay=true needs --init_from=RUN: the run whose predictions are replayed")
    timings = {}
    trained = not stage_is_done(run_dir, "keypoints")  # does this invocation train anything?
    wanted = set(cfg.stages)
    if not cfg.skip_distill and cfg.init_from is None and wanted & {"extract", "distill"}:
        t = time.time()
        distill_samples = [s for s in train.samples] + unlabelled
        cache = stage_extract(cfg, run_dir, distill_samples) if d.is_main else None
        barrier(d)
        if cache is None:
            cache = FeatureCache(run_dir / "teacher_cache")
        timings["extract_s"] = time.time() - t
        t = time.time()
        if "distill" not in wanted:
            pass
        elif stage_is_done(run_dir, "distill"):
            LOG.info("stage 1 already finished: %s", read_stage_summary(run_dir, "distill"))
        else:
            stage_distill(cfg, run_dir, distill_samples, cache, device, d)
        timings["distill_s"] = time.time() - t
    if "keypoints" in wanted:
        t = time.time()
        if stage_is_done(run_dir, "keypoints"):
            LOG.info("stage 2 already finished: %s", read_stage_summary(run_dir, "keypoints"))
        else:
            stage_keypoints(cfg, run_dir, dataset, train, val, device, d)
        timings["keypoints_s"] = time.time() - t
    if "finder" in wanted:
        from tardis_edge.data.dataset import group_by_image
        from training.finder import wants_finder

        if wants_finder(cfg.finder, group_by_image(list(train.samples))):
            t = time.time()
            if stage_is_done(run_dir, "finder"):
                LOG.info("finder already finished: %s", read_stage_summary(run_dir, "finder"))
            elif d.is_main:
                stage_finder(cfg, run_dir, split, train, device, d)
            barrier(d)
            timings["finder_s"] = time.time() - t
    if not d.is_main or "evaluate" not in wanted:
        return 0
    metrics = stage_evaluate(cfg, run_dir, dataset, split, test, device)
    timings["total_s"] = time.time() - t0
    summary = {
        "run": str(run_dir),
        "data": cfg.data.path or "built-in procedural dataset",
        "teacher": cfg.teacher or f"RANDOM {cfg.random_teacher} depth {cfg.random_teacher_depth} (not DINOv2 weights)",
        "stage1": "skipped" if cfg.skip_distill else "distilled",
        "backbone": cfg.model.backbone,
        "command": shlex.join(sys.argv),
        "cpu_s": time.process_time(),  # CPU seconds of this process (all threads): comparable on a busy machine
        "load_average": list(os.getloadavg()),
        "split": {**split.sizes(), "describe": split.describe},
        "test_samples": len(test),
        "metrics": {k: v for k, v in metrics.items() if not isinstance(v, dict)},
        "timings": timings,
        "versions": versions(),
    }
    earlier = run_dir / "summary.json"
    if not trained and earlier.is_file():  # evaluated again: the training's own timings and machine load stay
        before = json.loads(earlier.read_text())
        summary["evaluated_again"] = {
            "timings": timings,
            "cpu_s": summary["cpu_s"],
            "load_average": summary["load_average"],
        }
        for key in ("timings", "cpu_s", "load_average", "command"):
            if key in before:
                summary[key] = before[key]
    write_json(run_dir / "summary.json", summary)
    LOG.info(
        "done in %.0fs — test metrics: %s",
        time.time() - t0,
        ", ".join(f"{k}={v:.4g}" for k, v in summary["metrics"].items() if isinstance(v, (int, float))),
    )
    LOG.info("run folder: %s (summary.json, metrics_test.json, curves_*.png, overlays_test.png, model.pt)", run_dir)
    if "adapt" in wanted and cfg.adapt.videos:  # a new run folder, adapted to the videos (training/adapt.py)
        from training.adapt import stage_adapt

        stage_adapt(cfg, run_dir, device)
    return 0


def cli(
    argv: list[str] | None = None, stages: tuple[str, ...] | None = None, prog: str = "python -m training.full"
) -> int:
    """``main`` under the error policy of ``tardis_edge.errors``: bad input or a full disk end in one line and exit
    code 2 or 4, a bug in a traceback and 1; ``--debug`` shows the traceback of any error."""
    from tardis_edge.errors import run_cli

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    return run_cli(prog, lambda: main(argv, stages, prog), debug=True if debug else None)


if __name__ == "__main__":
    sys.exit(cli())
