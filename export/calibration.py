"""Export stage: crops of real frames for INT8 calibration and for verification, made with the run's geometry.

Crops are what the deployed model sees (``tardis_edge.predict.crop_batch``): the whole frame (pass 1 of the
detector-free path) and a padded box around the animal (pass 2) — the labelled keypoints' box when the data is
labelled, else the box around the FP32 model's own pass-1 keypoints (``tardis_edge.predict.box_from_prediction``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tardis_edge import geometry
from tardis_edge.predict import box_from_prediction, crop_batch, predict_frames

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def labelled_boxes(samples: Sequence[Any], input_wh: tuple[int, int], padding: float) -> list[geometry.CropBox]:
    """The padded box around each sample's labelled keypoints (its COCO box when it has one)."""
    boxes = []
    for s in samples:
        if s.bbox_xywh is not None:
            boxes.append(geometry.box_from_xywh(s.bbox_xywh, input_wh, padding))
        else:
            boxes.append(geometry.box_from_keypoints(s.keypoints_xy, s.visible, input_wh, padding))
    return boxes


def image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted); a ValueError naming the folder when there are none."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(
            f"calibration folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); pass a folder of frames like "
            "those the model will see, or the run's dataset (DeepLabCut project folder or COCO json)"
        )
    return files


def _is_dataset(path: Path) -> bool:
    """A DeepLabCut project folder, a COCO ``.json``, a SLEAP ``.slp`` or a keypoint map ``.yaml`` (what
    ``load_dataset`` reads)."""
    from tardis_edge.data.keypoint_map import is_keypoint_map

    return (
        (path.is_dir() and (path / "config.yaml").is_file())
        or (path.is_file() and path.suffix.lower() in (".json", ".slp"))
        or is_keypoint_map(path)
    )


def calibration_crops(calib: str | Path, source: Any, size: int, seed: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """Up to ``size`` calibration crops, half whole-frame (pass 1) and half around the animal (pass 2).

    Args:
        calib: a dataset (DeepLabCut project folder / ``config.yaml`` / COCO ``.json`` / SLEAP ``.slp``) or a folder
            of images. The
            run's own dataset contributes its *training* split only (verification uses the held-out split).
        source: the ``export.source.ExportSource`` (model, input size, box padding, split).
        size: the number of crops wanted (>= 1).
        seed: which frames are drawn when there are more than needed.

    Returns:
        ``(crops (M, 3, H, W) float32 RGB 0..255 with M <= size, description for the artifact metadata)``.
    """
    from tardis_edge.data import load_dataset, read_image_rgb, read_sample_image

    if size < 1:
        raise ValueError(f"--calib-size must be >= 1, got {size}")
    path = Path(calib)
    if not path.exists():
        raise FileNotFoundError(f"calibration data {path} does not exist; pass an image folder or a dataset")
    input_wh, padding = source.input_wh, source.predict.padding
    rng = np.random.default_rng(seed)
    frames_needed = (size + 1) // 2
    if _is_dataset(path):
        from export.source import load_split, same_path

        run_path = source.data.get("path") or (source.run_dir / "builtin-data" if source.run_dir else None)
        root = path.parent if path.name == "config.yaml" else path
        if run_path is not None and same_path(root, run_path):
            _, samples_set, _ = load_split(source)
            origin = f"{path} (the run's training split)"
        else:
            samples_set = load_dataset(path)
            origin = str(path)
        samples = [s for s in samples_set.samples if s.labelled and (s.visible > 0).any()]
        if not samples:
            raise ValueError(f"calibration dataset {path} has no labelled sample to crop")
        chosen = [samples[i] for i in sorted(rng.permutation(len(samples))[:frames_needed])]
        images = [read_sample_image(s) for s in chosen]
        second = labelled_boxes(chosen, input_wh, padding)
        kind = "labelled-keypoint boxes"
    else:
        if not path.is_dir():
            raise ValueError(
                f"calibration data {path} is neither an image folder nor a dataset (DeepLabCut project folder, its "
                "config.yaml, a COCO .json or a SLEAP .slp)"
            )
        files = image_files(path)
        chosen_files = [files[i] for i in sorted(rng.permutation(len(files))[:frames_needed])]
        images = [read_image_rgb(f) for f in chosen_files]
        second = _predicted_boxes(source, images)
        origin = str(path)
        kind = "boxes around the FP32 model's pass-1 keypoints"
    first = [geometry.box_from_image(im.shape[1::-1], input_wh) for im in images]
    crops_first, _ = crop_batch(images, first, input_wh)
    crops_second, _ = crop_batch(images, second, input_wh)
    crops = np.empty((2 * len(images), *crops_first.shape[1:]), dtype=np.float32)
    crops[0::2], crops[1::2] = crops_first, crops_second  # interleaved, so a cut at ``size`` keeps both kinds
    crops = crops[:size]
    info = {
        "source": origin,
        "frames": len(images),
        "crops": int(len(crops)),
        "requested": int(size),
        "crop_kinds": f"whole frame + {kind}",
        "seed": int(seed),
    }
    return crops, info


def _predicted_boxes(source: Any, images: list[np.ndarray]) -> list[geometry.CropBox]:
    """Pass-2 boxes from the PyTorch model's whole-frame predictions (no flip, as the exported graph runs)."""
    cfg = replace(source.predict, flip_test=False, two_pass=False)
    kps, scores, first = predict_frames(source.crop_runner(cfg), images, source.input_wh, cfg)
    return [box_from_prediction(k, s, b, source.input_wh, cfg) for k, s, b in zip(kps, scores, first, strict=True)]
