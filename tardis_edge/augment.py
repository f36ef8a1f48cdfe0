"""Photometric augmentation for the student input (stage 1 and 2). Geometric augmentation is not here: it
goes through the crop affine (``tardis_edge.geometry.crop_affine``) so images, keypoints and cached teacher
maps move together.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class PhotometricConfig:
    """Strengths of the photometric augmentations (the paper's "strong" recipe by default)."""

    prob: float = 0.8  # probability that the colour jitter is applied at all
    brightness: float = 0.4  # multiplicative factor range 1 +- brightness
    contrast: float = 0.4
    saturation: float = 0.4
    hue_deg: float = 10.0  # hue rotation range +- degrees
    grayscale_prob: float = 0.1
    blur_prob: float = 0.3
    blur_sigma_max: float = 2.0
    noise_prob: float = 0.3
    noise_std_max: float = 12.0  # grey levels
    dropout_prob: float = 0.5  # coarse dropout: up to `dropout_holes` rectangles filled with noise
    dropout_holes: int = 4
    dropout_max_frac: float = 0.15  # hole side as a fraction of the image side


def photometric(image: np.ndarray, cfg: PhotometricConfig, rng: np.random.Generator) -> np.ndarray:
    """Augment an RGB uint8 ``(H, W, 3)`` crop; returns a new uint8 array of the same shape."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"photometric augmentation expects an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}"
        )
    img = image.astype(np.float32)
    if rng.random() < cfg.prob:
        img *= 1.0 + rng.uniform(-cfg.brightness, cfg.brightness)
        mean = img.mean()
        img = (img - mean) * (1.0 + rng.uniform(-cfg.contrast, cfg.contrast)) + mean
        grey = img @ np.array([0.299, 0.587, 0.114], np.float32)
        img = grey[..., None] + (img - grey[..., None]) * (1.0 + rng.uniform(-cfg.saturation, cfg.saturation))
        if cfg.hue_deg > 0:
            hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.int32)
            shift = int(round(rng.uniform(-cfg.hue_deg, cfg.hue_deg) / 2))  # OpenCV hue is in [0, 180)
            hsv[..., 0] = (hsv[..., 0] + shift) % 180
            img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    if rng.random() < cfg.grayscale_prob:
        img = np.repeat((img @ np.array([0.299, 0.587, 0.114], np.float32))[..., None], 3, axis=2)
    if rng.random() < cfg.blur_prob:
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=rng.uniform(0.1, cfg.blur_sigma_max))
    if rng.random() < cfg.noise_prob:
        img = img + rng.normal(0.0, rng.uniform(0, cfg.noise_std_max), size=img.shape).astype(np.float32)
    if rng.random() < cfg.dropout_prob:
        h, w = img.shape[:2]
        for _ in range(int(rng.integers(1, cfg.dropout_holes + 1))):
            hh = int(rng.uniform(0.03, cfg.dropout_max_frac) * h)
            ww = int(rng.uniform(0.03, cfg.dropout_max_frac) * w)
            y0, x0 = int(rng.integers(0, max(1, h - hh))), int(rng.integers(0, max(1, w - ww)))
            img[y0 : y0 + hh, x0 : x0 + ww] = rng.uniform(0, 255, size=(hh, ww, 3))
    return np.clip(img, 0, 255).astype(np.uint8)
