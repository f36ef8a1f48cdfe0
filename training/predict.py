"""Top-down prediction with a PyTorch model, as evaluation and export verification use it.

Without a detector (single-animal footage) the model finds the animal itself: pass 1 runs on the whole frame
(aspect kept), pass 2 on a padded box around pass 1's confident keypoints. Keypoints come back in original
image pixels through the exact inverse of each crop affine (``tardis_edge.geometry``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tardis_edge import geometry
from tardis_edge.codec import flip_heatmaps, flip_shift_px
from tardis_edge.decode import decode_heatmaps, soft_argmax


@dataclass
class PredictConfig:
    """How evaluation predicts: decode method, flip test, and the detector-free two-pass crop."""

    decode: str = "msra"  # argmax | msra | dark | softargmax
    softargmax_beta: float = 20.0
    flip_test: bool = True
    two_pass: bool = True  # pass 1 whole frame, pass 2 crop around pass 1's keypoints
    box_min_score: float = 0.2  # keypoints above this score define the pass-2 box
    padding: float = 1.25
    box_min_size: float = 16.0  # image pixels; unpadded lower bound of the pass-2 box side
    batch_size: int = 16


def heatmaps_with_flip(
    model: torch.nn.Module, images: torch.Tensor, flip_indices: Sequence[int] | None
) -> torch.Tensor:
    """``(N, K, H, W)`` heatmaps; averaged with the flipped input's heatmaps when ``flip_indices`` is given."""
    heatmaps = model(images)["heatmaps"]
    if flip_indices is None:
        return heatmaps
    flipped = model(torch.flip(images, dims=[-1]))["heatmaps"]
    shift = flip_shift_px(images.shape[-1], heatmaps.shape[-1])
    return 0.5 * (heatmaps + flip_heatmaps(flipped, flip_indices, shift_px=shift))


def decode(heatmaps: torch.Tensor, cfg: PredictConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints in heatmap pixels and scores, by the configured method."""
    if cfg.decode == "softargmax":
        _, scores = decode_heatmaps(heatmaps, "argmax")
        return soft_argmax(heatmaps.float(), cfg.softargmax_beta), scores
    return decode_heatmaps(heatmaps, cfg.decode)


@torch.no_grad()
def predict_boxes(
    model: torch.nn.Module,
    images: Sequence[np.ndarray],
    boxes: Sequence[geometry.CropBox],
    input_wh: tuple[int, int],
    cfg: PredictConfig,
    flip_indices: Sequence[int] | None,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Run the model on one crop per image.

    Args:
        images: RGB uint8 ``(H, W, 3)`` frames.
        boxes: one crop box per frame (image pixels).

    Returns:
        ``(keypoints (N, K, 2) image pixels, scores (N, K))``; keypoints of rows with score <= 0 are NaN.
    """
    from tardis_edge.runtime.preprocess import crop_batch

    all_kps, all_scores = [], []
    for start in range(0, len(images), cfg.batch_size):
        chunk = slice(start, min(start + cfg.batch_size, len(images)))
        crops, affines = crop_batch(images[chunk], boxes[chunk], input_wh)  # (B, 3, H, W) RGB 0..255
        x = torch.from_numpy(crops).to(device)
        heatmaps = heatmaps_with_flip(model, x, flip_indices if cfg.flip_test else None)
        kps_hm, scores = decode(heatmaps.float(), cfg)
        stride = input_wh[0] / heatmaps.shape[-1]
        to_image = np.stack([geometry.heatmap_to_image_affine(m, stride) for m in affines])
        kps = kps_hm.cpu().double().numpy() @ to_image[:, :, :2].transpose(0, 2, 1) + to_image[:, None, :, 2]
        sc = scores.cpu().numpy()
        kps[sc <= 0] = np.nan
        all_kps.append(kps)
        all_scores.append(sc)
    return np.concatenate(all_kps), np.concatenate(all_scores)


def box_from_prediction(
    keypoints: np.ndarray, scores: np.ndarray, fallback: geometry.CropBox, input_wh: tuple[int, int], cfg: PredictConfig
) -> geometry.CropBox:
    """Padded box around the confident keypoints of one prediction; ``fallback`` when none is confident.

    The edge runtime's rule (``tardis_edge.runtime.boxes``), so evaluation and deployment crop alike.
    """
    from tardis_edge.runtime.boxes import FollowConfig
    from tardis_edge.runtime.boxes import box_from_prediction as runtime_box

    follow = FollowConfig(min_score=cfg.box_min_score, padding=cfg.padding, min_size=cfg.box_min_size)
    return runtime_box(keypoints, scores, fallback, input_wh, follow)


@torch.no_grad()
def predict_frames(
    model: torch.nn.Module,
    images: Sequence[np.ndarray],
    input_wh: tuple[int, int],
    cfg: PredictConfig,
    flip_indices: Sequence[int] | None,
    device: torch.device | str = "cpu",
    boxes: Sequence[geometry.CropBox] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[geometry.CropBox]]:
    """Detector-free top-down prediction: whole frame (or the given boxes), then a crop around the result.

    Returns:
        ``(keypoints (N, K, 2) image pixels, scores (N, K), final boxes)``.
    """
    first = list(boxes) if boxes is not None else [geometry.box_from_image(im.shape[1::-1], input_wh) for im in images]
    kps, scores = predict_boxes(model, images, first, input_wh, cfg, flip_indices, device)
    if not cfg.two_pass:
        return kps, scores, first
    second = [box_from_prediction(k, s, b, input_wh, cfg) for k, s, b in zip(kps, scores, first, strict=True)]
    kps, scores = predict_boxes(model, images, second, input_wh, cfg, flip_indices, device)
    return kps, scores, second
