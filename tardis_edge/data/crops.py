"""Top-down crops (data stage, feeds stage 1 distillation and stage 2 keypoint training).

Each sample becomes one crop: box (annotation bbox, else the box of the labelled keypoints) ->
``geometry.crop_affine`` with the sampled augmentation (flip, rotation, scale, shift — all in the one affine) ->
OpenCV warp of the image, the same affine on the keypoints -> Gaussian targets from ``codec``.

The image tensor is RGB float32 in [0, 255], *not* normalised: normalisation belongs to the model, so the
exported graph carries it (``tardis_edge.artifact``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tardis_edge import geometry
from tardis_edge.codec import encode_gaussian_targets, flip_indices_from_pairs
from tardis_edge.data.dataset import PoseDataset, image_key, read_image_rgb, read_sample_image
from tardis_edge.data.sample import KeypointSchema, Sample

__all__ = ["BOX_SOURCES", "CropConfig", "CropParams", "TopDownDataset", "read_image_rgb", "sample_box"]

BOX_SOURCES = ("auto", "bbox", "keypoints", "image")


@dataclass(frozen=True)
class CropConfig:
    """How samples become network inputs. The defaults are evaluation crops (no augmentation);
    ``CropConfig.training()`` is the training recipe."""

    input_wh: tuple[int, int] = (256, 256)  # network input (W, H)
    heatmap_wh: tuple[int, int] = (64, 64)  # target heatmap (W, H); input / heatmap = integer stride
    sigma: float = 2.0  # Gaussian target sigma in heatmap pixels
    padding: float = geometry.DEFAULT_PADDING  # box enlargement after aspect correction
    box_source: str = "auto"  # auto: annotation bbox, else labelled-keypoint box; or bbox / keypoints / image
    min_box_size: float = 16.0  # lower bound on a keypoint box side (image px), so 1-2 labelled points still crop
    flip_prob: float = 0.0  # horizontal flip probability (left/right channels swapped by the schema's flip pairs)
    rotation_deg: float = 0.0  # rotation angle drawn uniformly in [-rotation_deg, rotation_deg] ...
    rotation_prob: float = 0.0  # ... with this probability (else 0)
    scale_range: tuple[float, float] = (1.0, 1.0)  # crop size factor drawn uniformly; > 1 zooms out
    # Box centre shift drawn uniformly in [-shift_frac, shift_frac] x box size per axis. With scale_range it
    # imitates imperfect boxes (a detector's, or the model's own from the previous frame) at inference.
    shift_frac: float = 0.0
    border_value: int = 0  # fill value outside the image

    def __post_init__(self) -> None:
        for name in ("input_wh", "heatmap_wh"):
            wh = getattr(self, name)
            if len(wh) != 2 or not all(isinstance(v, int) and v > 0 for v in wh):
                raise ValueError(f"CropConfig.{name} must be two positive ints (W, H), got {wh!r}")
        geometry.heatmap_stride(self.input_wh, self.heatmap_wh)  # raises if they do not share an integer stride
        if self.box_source not in BOX_SOURCES:
            raise ValueError(f"CropConfig.box_source must be one of {BOX_SOURCES}, got {self.box_source!r}")
        for name in ("flip_prob", "rotation_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"CropConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"CropConfig.scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}")
        if self.sigma <= 0 or self.padding <= 0 or self.min_box_size <= 0:
            raise ValueError(
                f"CropConfig sigma, padding and min_box_size must be positive, got {self.sigma}, {self.padding}, "
                f"{self.min_box_size}"
            )
        if self.rotation_deg < 0 or self.shift_frac < 0:
            raise ValueError(
                f"CropConfig rotation_deg and shift_frac are magnitudes (>= 0), got {self.rotation_deg}, "
                f"{self.shift_frac}"
            )

    @classmethod
    def training(cls, **overrides: Any) -> CropConfig:
        """The training recipe: flip, rotation up to 40 deg (60 % of crops), scale 0.75-1.25, shift up to 10 %."""
        recipe: dict[str, Any] = dict(
            flip_prob=0.5, rotation_deg=40.0, rotation_prob=0.6, scale_range=(0.75, 1.25), shift_frac=0.1
        )
        recipe.update(overrides)
        return cls.from_dict(recipe)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CropConfig:
        """Build from a YAML/CLI mapping; unknown keys and wrong types are errors."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown CropConfig keys {unknown}; known keys: {sorted(known)}")
        converted = {key: _checked_value(key, value, getattr(cls, key)) for key, value in values.items()}
        return cls(**converted)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def stride(self) -> float:
        return geometry.heatmap_stride(self.input_wh, self.heatmap_wh)

    @property
    def augments(self) -> bool:
        no_rotation = self.rotation_deg == 0 or self.rotation_prob == 0
        return bool(self.flip_prob > 0 or not no_rotation or self.scale_range != (1.0, 1.0) or self.shift_frac > 0)


def _checked_value(key: str, value: Any, default: Any) -> Any:
    """``value`` converted to the type of ``default`` (int -> float allowed), or a ValueError naming the key."""

    def one(v: Any, d: Any) -> Any:
        if isinstance(v, bool) != isinstance(d, bool):
            raise ValueError(f"CropConfig.{key} must be {type(d).__name__}, got {value!r}")
        if isinstance(d, float) and isinstance(v, int):
            return float(v)
        if not isinstance(v, type(d)):
            raise ValueError(f"CropConfig.{key} must be {type(d).__name__}, got {value!r}")
        return v

    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            raise ValueError(f"CropConfig.{key} must be a pair like {list(default)}, got {value!r}")
        return tuple(one(v, d) for v, d in zip(value, default, strict=True))
    return one(value, default)


@dataclass(frozen=True)
class CropParams:
    """One draw of the augmentation (identity by default)."""

    flip: bool = False
    rotation_deg: float = 0.0
    scale: float = 1.0
    shift_xy: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def draw(cls, config: CropConfig, rng: np.random.Generator) -> CropParams:
        # always draw every number, so one draw per item whatever the probabilities (reproducible streams)
        flip_u, rot_u, rot_angle, scale_u, sx, sy = rng.random(6)
        rotation = (2 * rot_angle - 1) * config.rotation_deg if rot_u < config.rotation_prob else 0.0
        lo, hi = config.scale_range
        shift = ((2 * sx - 1) * config.shift_frac, (2 * sy - 1) * config.shift_frac)
        return cls(bool(flip_u < config.flip_prob), float(rotation), float(lo + (hi - lo) * scale_u), shift)


def sample_box(sample: Sample, config: CropConfig, image_wh: tuple[int, int] | None = None) -> geometry.CropBox:
    """The padded crop box of a sample according to ``config.box_source`` (image pixels).

    ``image_wh`` is needed for ``box_source="image"`` when the sample does not know its image size.
    """
    source = config.box_source
    if source == "auto":
        source = "bbox" if sample.bbox_xywh is not None else "keypoints"
    if source == "bbox":
        if sample.bbox_xywh is None:
            raise ValueError(f"sample {sample.sample_id} has no bbox; use box_source='keypoints' or 'auto'")
        return geometry.box_from_xywh(sample.bbox_xywh.tolist(), config.input_wh, config.padding)
    if source == "keypoints":
        if not (sample.visible > 0).any():
            raise ValueError(
                f"sample {sample.sample_id} has no bbox and no labelled keypoint to build a crop box from; drop it "
                "(PoseDataset.labelled_only()) or crop the whole frame (box_source='image')"
            )
        return geometry.box_from_keypoints(
            sample.keypoints_xy, sample.visible, config.input_wh, config.padding, config.min_box_size
        )
    wh = image_wh or sample.image_wh
    if wh is None:
        raise ValueError(f"sample {sample.sample_id}: box_source='image' needs the image size (image_wh)")
    return geometry.box_from_image(wh, config.input_wh)


class TopDownDataset(Dataset):
    """A torch ``Dataset`` of top-down crops with heatmap targets.

    Each item is a dict:
        ``image``: ``(3, H_in, W_in)`` float32 RGB in [0, 255] (un-normalised).
        ``heatmaps``: ``(K, H_hm, W_hm)`` float32 Gaussian targets; ``weights``: ``(K,)`` float32 (0 where
        unlabelled or the whole Gaussian window lies outside the heatmap).
        ``keypoints_input``: ``(K, 2)`` float32 keypoints in input pixels (0 where ``visible`` is 0);
        ``visible``: ``(K,)`` float32 (after the flip's channel swap).
        ``crop_affine``: ``(2, 3)`` float32 image -> input; ``crop_affine_inv``: input -> image;
        ``heatmap_to_image``: ``(2, 3)`` heatmap pixels -> image pixels (for ``decode.keypoints_to_image``).
        ``index`` (int, into ``samples``), ``flipped`` (bool).

    Augmentation is drawn from ``np.random.default_rng((seed, epoch, index))``: reproducible, independent of
    DataLoader workers; call ``set_epoch`` every epoch for fresh draws.
    """

    def __init__(
        self,
        data: PoseDataset | Sequence[Sample],
        config: CropConfig | None = None,
        schema: KeypointSchema | None = None,
        seed: int = 0,
        boxes_xywh: np.ndarray | None = None,
        cache_images: bool = False,
    ) -> None:
        """
        Args:
            data: a ``PoseDataset`` or a list of samples (then ``schema`` is required).
            config: crop and augmentation settings (default: evaluation crops, 256 -> 64).
            schema: keypoint schema (flip pairs); taken from ``data`` when it is a ``PoseDataset``.
            seed: base seed of the augmentation draws.
            boxes_xywh: ``(N, 4)`` boxes (x, y, w, h) to crop instead of the samples' own, e.g. a detector's or
                the model's previous-frame boxes at inference; padded like annotation boxes.
            cache_images: keep decoded images in memory (each DataLoader worker holds its own copy).
        """
        if isinstance(data, PoseDataset):
            schema = schema or data.schema
            samples = list(data.samples)
        else:
            samples = list(data)
        if schema is None:
            raise ValueError("TopDownDataset needs a schema (for the flip pairs) when given a list of samples")
        if not samples:
            raise ValueError("TopDownDataset got no samples")
        self.samples = samples
        self.schema = schema
        self.config = config or CropConfig()
        self.seed = int(seed)
        self.epoch = 0
        self.cache_images = cache_images
        self._images: dict[str, np.ndarray] = {}  # image_key -> decoded image
        self._flip_indices = flip_indices_from_pairs(schema.num_keypoints, schema.flip_pairs)
        bad_k = [s.sample_id for s in samples if s.keypoints_xy.shape != (schema.num_keypoints, 2)]
        if bad_k:
            raise ValueError(f"samples {bad_k[:3]} do not have {schema.num_keypoints} keypoints like the schema")
        if boxes_xywh is not None:
            boxes = np.asarray(boxes_xywh, dtype=np.float64)
            if boxes.shape != (len(samples), 4):
                raise ValueError(f"boxes_xywh must be ({len(samples)}, 4), got {boxes.shape}")
            self.boxes: list[geometry.CropBox | None] = [
                geometry.box_from_xywh(b.tolist(), self.config.input_wh, self.config.padding) for b in boxes
            ]
        else:
            # boxes for box_source='image' need the decoded size when the sample does not know it: resolve lazily
            self.boxes = [
                None if self.config.box_source == "image" and s.image_wh is None else sample_box(s, self.config)
                for s in samples
            ]

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def image(self, index: int) -> np.ndarray:
        """The ``(H, W, 3)`` uint8 RGB image of sample ``index`` (cached when ``cache_images``, once per image: the
        animals of one frame share it)."""
        key = image_key(self.samples[index])
        cached = self._images.get(key)
        if cached is not None:
            return cached
        image = read_sample_image(self.samples[index])
        if self.cache_images:
            self._images[key] = image
        return image

    def crop_params(self, index: int) -> CropParams:
        if not self.config.augments:
            return CropParams()
        return CropParams.draw(self.config, np.random.default_rng((self.seed, self.epoch, index)))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} crops")
        index = index % len(self)
        sample = self.samples[index]
        cfg = self.config
        image = self.image(index)  # (H, W, 3) uint8
        box = self.boxes[index] or geometry.box_from_image((image.shape[1], image.shape[0]), cfg.input_wh)
        params = self.crop_params(index)
        m = geometry.crop_affine(box, cfg.input_wh, params.rotation_deg, params.flip, params.shift_xy, params.scale)
        crop = geometry.warp_image(image, m, cfg.input_wh, cfg.border_value)  # (H_in, W_in, 3) uint8

        visible = sample.visible.astype(np.float32)  # (K,)
        keypoints = geometry.apply_affine(sample.keypoints_xy, m)  # (K, 2) input px, NaN where unlabelled
        if params.flip:
            keypoints, visible = keypoints[self._flip_indices], visible[self._flip_indices]
        keypoints = np.where(visible[:, None] > 0, keypoints, 0.0).astype(np.float32)
        heatmaps, weights = encode_gaussian_targets(keypoints, visible, cfg.heatmap_wh, cfg.stride, cfg.sigma)
        m_inv = geometry.invert_affine(m)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float(),  # (3, H_in, W_in)
            "heatmaps": torch.from_numpy(heatmaps),  # (K, H_hm, W_hm)
            "weights": torch.from_numpy(weights),  # (K,)
            "keypoints_input": torch.from_numpy(keypoints),  # (K, 2)
            "visible": torch.from_numpy(visible),  # (K,)
            "crop_affine": torch.from_numpy(m.astype(np.float32)),  # (2, 3)
            "crop_affine_inv": torch.from_numpy(m_inv.astype(np.float32)),  # (2, 3)
            "heatmap_to_image": torch.from_numpy(
                geometry.heatmap_to_image_affine(m, cfg.stride).astype(np.float32)
            ),  # (2, 3)
            "index": index,
            "flipped": params.flip,
        }
