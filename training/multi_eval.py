"""Evaluate stage, multi-animal part: find, pose and track every animal of the test frames with the PyTorch models
through the one multi-animal predictor (``tardis_edge.multi``) the edge runtime also uses.

Frames are visited in video order; consecutive frames of one video form a sequence that the predictor and the
tracker follow (the finder every ``multi.detect_every`` frames, pose-derived boxes in between), a gap starts a new
sequence. Metrics: ``tardis_edge.metrics.evaluate_multi_animal`` (COCO mAP, recall, matched-animal pixel errors) and,
where the labels carry identities, ``tardis_edge.metrics.tracking_metrics`` (IDF1, identity switches, MOTA).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from tardis_edge.codec import flip_indices_from_pairs
from tardis_edge.finder import FinderConfig
from tardis_edge.multi import FramePoses, MultiAnimalPredictor, MultiConfig
from tardis_edge.predict import PredictConfig

LOG = logging.getLogger("tardis")


def frame_order(groups: list[list]) -> list[list]:
    """Images sorted into video order (video, then frame index); images that are files keep their order."""

    def key(group: list) -> tuple:
        s = group[0]
        if s.frame_index is not None:
            return (0, str(s.video_path), int(s.frame_index))
        return (1, "", 0)

    return sorted(groups, key=key)


def sequences(groups: list[list]) -> list[list[list]]:
    """Split images in video order into runs of consecutive frames of one video."""
    runs: list[list[list]] = []
    previous = None
    for g in groups:
        s = g[0]
        here = (str(s.video_path), s.frame_index) if s.frame_index is not None else None
        follows = here is not None and previous is not None and here[0] == previous[0] and here[1] == previous[1] + 1
        if follows:
            runs[-1].append(g)
        else:
            runs.append([g])
        previous = here
    return runs


def predict_sequences(
    predictor: MultiAnimalPredictor, runs: list[list[list]], tracker_factory=None
) -> list[list[FramePoses]]:
    """Run the predictor (and a fresh tracker per sequence, if given) over each sequence of frames."""
    from tqdm import tqdm

    from tardis_edge.data.dataset import read_sample_image

    out = []
    total = sum(len(r) for r in runs)
    with tqdm(total=total, desc="multi-animal test frames", leave=False) as bar:
        for run in runs:
            predictor.reset()
            tracker = tracker_factory() if tracker_factory is not None else None
            poses = []
            for group in run:
                frame = read_sample_image(group[0])
                result = predictor(frame)
                if tracker is not None:
                    result.track_ids = tracker.update(
                        result.keypoints, result.scores, frame_index=int(group[0].frame_index or 0)
                    ).track_ids
                poses.append(result)
                bar.update(1)
            out.append(poses)
    return out


def pytorch_predictor(
    model,
    finder,
    finder_cfg: FinderConfig,
    finder_stride: float,
    input_wh: tuple[int, int],
    predict: PredictConfig,
    multi: MultiConfig,
    flip_indices,
    device,
) -> MultiAnimalPredictor:
    """The multi-animal predictor on the PyTorch pose model and finder (training evaluation, video adaptation)."""
    from kernels.predict import model_crop_runner
    from training.finder import finder_runner

    return MultiAnimalPredictor(
        model_crop_runner(model, predict, flip_indices, device),
        finder_runner(finder, device),
        input_wh,
        predict,
        finder_cfg,
        finder_stride,
        multi,
        flip_indices,
    )


def evaluate_multi(
    model, finder, test_samples: list, schema, input_wh, cfg, most_animals: int, device, run_dir: Path
) -> dict:
    """Multi-animal test metrics (the caller writes them to ``metrics_test.json``) and an overlay picture
    (``overlays_test.png``: the test frames where the animals are closest, coloured by identity).

    Args:
        model: the final pose model; ``finder`` the trained finder (both PyTorch, eval mode).
        test_samples: the labelled animals of the test part.
        cfg: the run's ``FullConfig`` (``keypoints.predict``, ``finder.decode``, ``multi``).
        most_animals: the most animals seen in one training image (default for ``max_animals``).
    """
    from tardis_edge.data.dataset import group_by_image
    from tardis_edge.metrics import evaluate_multi_animal

    predict: PredictConfig = cfg.keypoints.predict
    perm = flip_indices_from_pairs(schema.num_keypoints, schema.flip_pairs)
    multi = MultiConfig(
        detect_every=cfg.multi.detect_every,
        expected_animals=cfg.multi.expected_animals or most_animals,
        max_animals=cfg.multi.max_animals or most_animals,
    )
    predictor = pytorch_predictor(
        model, finder, cfg.finder.decode, float(finder.out_stride), input_wh, predict, multi, perm, device
    )
    runs = sequences(frame_order(group_by_image(test_samples)))
    with torch.inference_mode():
        poses = predict_sequences(predictor, runs, _tracker_factory(multi, schema))
    frames = [g for r in runs for g in r]
    flat = [p for r in poses for p in r]
    result = evaluate_multi_animal(
        frames, [(p.keypoints, p.scores, p.instance_scores) for p in flat], schema, min_oks=cfg.multi.match_oks
    )
    result["detect_every"] = multi.detect_every
    result["max_animals"] = multi.max_animals
    result["sequences"] = len(runs)
    if any(s.track is not None for s in test_samples):
        from tardis_edge.metrics import tracking_metrics

        identities = {name: i for i, name in enumerate(sorted({str(s.track) for s in test_samples}))}
        result["tracking"] = tracking_metrics(
            [
                [(identities[str(s.track)], np.where((s.visible > 0)[:, None], s.keypoints_xy, np.nan)) for s in g]
                for g in frames
            ],
            [[(int(t), kp) for t, kp in zip(p.track_ids, p.keypoints, strict=True) if t >= 0] for p in flat],
            sigmas=result["oks_sigmas"],
        )
    _overlay(frames, flat, schema, run_dir / "overlays_test.png")
    LOG.info(
        "multi-animal test: AP %.3f, recall %.3f, RMSE %.2f px%s",
        result["AP"],
        result["recall"],
        result["rmse_px"],
        (
            f", IDF1 {result['tracking']['idf1']:.3f}, {result['tracking']['num_switches']} identity switches"
            if "tracking" in result
            else ""
        ),
    )
    return result


def _tracker_factory(multi: MultiConfig, schema):
    """A fresh tracker per sequence, configured as the exported model's (``tardis_edge.runtime.multi``: the schema's
    OKS sigmas as ``model.json`` records them)."""
    from tardis_edge.metrics import schema_oks_sigmas
    from tardis_edge.tracking import Tracker, TrackerConfig

    sigmas = tuple(schema_oks_sigmas(schema)[0])
    return lambda: Tracker(TrackerConfig(max_animals=multi.max_animals or None, oks_sigmas=sigmas))


def _overlay(frames: list[list], poses: list[FramePoses], schema, path: Path, count: int = 6) -> None:
    """Up to ``count`` test frames with every predicted animal in its identity's colour (labels as crosses)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tardis_edge.data.dataset import read_sample_image
    from training.overlays import PALETTE, frame_title

    # The frames where labelled animals are closest together show whether crossings are handled: pick those.
    def closeness(group: list) -> float:
        centres = [np.nanmean(s.keypoints_xy, axis=0) for s in group]
        if len(centres) < 2:
            return np.inf
        return min(np.linalg.norm(a - b) for i, a in enumerate(centres) for b in centres[i + 1 :])

    order = np.argsort([closeness(g) for g in frames], kind="stable")[:count]
    columns = min(3, len(order))
    rows = int(np.ceil(len(order) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 4.5 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), order, strict=False):
        frame = read_sample_image(frames[i][0])
        ax.imshow(frame)
        pose = poses[i]
        for m in range(pose.num_animals):
            ident = int(pose.track_ids[m]) if pose.track_ids[m] >= 0 else m
            colour = tuple(c / 255 for c in PALETTE[ident % len(PALETTE)])
            kp = pose.keypoints[m]
            for a, b in schema.skeleton:
                ax.plot(kp[[a, b], 0], kp[[a, b], 1], "-", color=colour, lw=1.2)
            ax.scatter(kp[:, 0], kp[:, 1], s=8, color=colour)
        for s in frames[i]:
            ax.scatter(s.keypoints_xy[:, 0], s.keypoints_xy[:, 1], s=10, marker="x", color="white", lw=0.7)
        xy = np.concatenate([s.keypoints_xy for s in frames[i]])
        lo, hi = np.nanmin(xy, axis=0) - 60, np.nanmax(xy, axis=0) + 60
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(hi[1], lo[1])
        first = frames[i][0]
        name = f"frame {first.frame_index}" if first.frame_index is not None else frame_title(first.sample_id)
        ax.set_title(f"{name}: {pose.num_animals} found, {len(frames[i])} labelled", fontsize=9)
    fig.suptitle("test frames with the animals closest together: colour = identity, white x = label", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
