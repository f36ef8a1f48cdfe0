"""Stage 1 targets: DINOv2 patch-feature maps per crop, their disk cache, and their warp under augmentation.

Recipe (``ExtractConfig``): each sample's crop box (the same box the student crops, ``data.crops.sample_box``)
is warped at teacher resolution, 64 patches x 14 px = 896 px, through ``geometry.crop_affine``; the teacher
sees the ImageNet-normalised crop and its horizontal mirror, the mirror's map is flipped back and the two are
averaged; the ``(C, 64, 64)`` map is stored as float16 with the image -> teacher-crop affine and the box.

Feature grids follow ``tardis_edge.geometry``'s cell-centred convention: teacher token ``j`` sits at crop pixel
``14 j + 6.5``, student distillation cell ``u`` at input pixel ``4 u + 1.5``. Both grids tile their crop edge to
edge, so an un-augmented crop's target is the cached map itself, cell for cell.

Cache layout (a folder)::

    manifest.json      format, version, teacher fingerprint, crop geometry (written atomically, first)
    shards/NNNNNN.h5   one batch each, written to a temporary file and renamed: features (n, C, g, g)
                       float16, crop_affine (n, 2, 3), box (n, 4) = (cx, cy, w, h), sample_id (n,), crc32 (n,),
                       channel_sum / channel_sumsq (C,) float64
    index.jsonl        one line per finished shard: {"shard", "bytes", "sample_ids"}; appended and fsynced
                       only after the shard is in place, so it is the list of done samples

A killed extraction leaves at most a shard without an index line (deleted on resume) or a torn last line
(ignored); nothing finished is recomputed. A truncated shard (size differs from its index line), one HDF5
cannot open, or an entry whose checksum or shape is wrong raises ``CacheCorruptError``; it is never read as
features.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tardis_edge import geometry
from tardis_edge.artifact import IMAGENET_MEAN, IMAGENET_STD
from tardis_edge.data.sample import Sample
from tardis_edge.io import atomic_path, atomic_write_text, json_safe, strict_json

CACHE_FORMAT = "tardis-edge-feature-cache"
CACHE_VERSION = 1
MANIFEST = "manifest.json"
INDEX = "index.jsonl"
SHARDS = "shards"
PCA_PICTURE = "pca.png"


@dataclass
class ExtractConfig:
    """Teacher-feature extraction: the recipe (defaults), the inputs and the cache."""

    # --- recipe (recorded in the cache manifest; changing one needs a rebuild) ---
    resolution: int = 896  # teacher crop side in px: 64 patches x 14 px, so the map matches the 64x64 student grid
    padding: float = geometry.DEFAULT_PADDING  # crop box padding, the student's (crops.CropConfig.padding)
    min_box_size: float = 16.0  # lower bound on a keypoint box side (image px), as crops.CropConfig.min_box_size
    flip_average: bool = True  # average the maps of the crop and of its mirror (mirrored back)
    mean: tuple[float, float, float] = IMAGENET_MEAN  # teacher input normalisation of RGB / 255
    std: tuple[float, float, float] = IMAGENET_STD
    storage_dtype: str = "float16"  # maps on disk
    # --- inputs ---
    data: Path | None = None  # a dataset load_dataset() reads (DeepLabCut project, COCO json); all its samples
    videos: tuple[Path, ...] = ()  # videos and image folders of unlabelled frames
    frame_box: tuple[float, float, float, float] | None = None  # crop (x, y, w, h) for those frames; None: whole
    frames_per_video: int | None = 100  # evenly spaced frames per video / folder (None: every frame_step-th)
    frame_step: int | None = None  # take every k-th frame instead of frames_per_video
    # --- teacher ---
    teacher: Path | None = None  # official DINOv2 checkpoint (.pth)
    random_teacher: str | None = None  # or a random teacher of this variant (e.g. "vits14"): features mean nothing
    depth: int | None = None  # reduced depth for random teachers
    num_heads: int | None = None  # override the embed_dim / 64 head rule of checkpoints
    seed: int = 0  # random-teacher weights
    autocast: str | None = "bfloat16"  # CUDA autocast dtype (bfloat16, float16) or None for float32
    # --- run ---
    cache: Path = Path("runs/features")
    rebuild: bool = False  # wipe a cache built with another teacher/geometry (else that is an error)
    batch_size: int = 8  # crops per teacher batch (x2 with flip_average)
    device: str = "auto"  # "auto": cuda if available, else cpu
    pca_samples: int = 4  # samples in the PCA picture written into the cache folder (0: none)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.resolution < 1 or self.batch_size < 1:
            raise ValueError(
                f"resolution ({self.resolution}) and batch_size ({self.batch_size}) must be positive integers"
            )
        if self.storage_dtype not in ("float16", "float32"):
            raise ValueError(f"storage_dtype must be float16 or float32, got {self.storage_dtype!r}")
        if self.autocast not in (None, "bfloat16", "float16"):
            raise ValueError(f"autocast must be bfloat16, float16 or None, got {self.autocast!r}")
        self.videos = tuple(Path(v) for v in self.videos)

    def geometry_record(self, patch_size: int) -> dict[str, Any]:
        """The fields a cached map depends on besides the teacher weights (stored in the manifest)."""
        return {
            "resolution": self.resolution,
            "patch_size": patch_size,
            "grid": geometry.teacher_grid(self.resolution, patch_size),
            "padding": self.padding,
            "min_box_size": self.min_box_size,
            "flip_average": self.flip_average,
            "mean": list(self.mean),
            "std": list(self.std),
            "storage_dtype": self.storage_dtype,
            "feature_cell": "centre",  # geometry.feature_cell_to_pixel
        }


class CacheCorruptError(RuntimeError):
    """A cache file is truncated, unreadable or fails its checksum."""


class CacheMismatchError(ValueError):
    """A cache was built with another teacher or crop geometry than the one asked for."""


# ----------------------------------------------------------------------------------------------- crops


def teacher_crop_box(sample: Sample, cfg: ExtractConfig, image_wh: tuple[int, int]) -> geometry.CropBox:
    """The sample's crop box, the same one the student crops: annotation box, else the labelled keypoints'
    box, else (unlabelled frames) the whole frame. ``Sample.extra["crop_padding"]`` overrides the padding
    (a user-given box for video frames is the crop itself)."""
    from tardis_edge.data.crops import CropConfig, sample_box

    has_box = sample.bbox_xywh is not None
    has_keypoints = bool((np.asarray(sample.visible) > 0).any())
    crop_cfg = CropConfig(
        input_wh=(cfg.resolution, cfg.resolution),  # only the (square) aspect matters for the box
        heatmap_wh=(cfg.resolution, cfg.resolution),
        padding=float(sample.extra.get("crop_padding", cfg.padding)),
        box_source="auto" if has_box or has_keypoints else "image",
        min_box_size=cfg.min_box_size,
    )
    return sample_box(sample, crop_cfg, image_wh)


def prepare_crop(image: np.ndarray, box: geometry.CropBox, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``image`` (H, W, 3) RGB into the square teacher crop of ``box``.

    Returns:
        ``(crop (R, R, 3) same dtype as image, affine (2, 3) image -> teacher-crop pixels)``.
    """
    affine = geometry.crop_affine(box, (resolution, resolution))
    return geometry.warp_image(image, affine, (resolution, resolution)), affine


def teacher_features(
    teacher: torch.nn.Module,
    crops: np.ndarray | torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    flip_average: bool = True,
) -> torch.Tensor:
    """Patch-feature maps of RGB crops.

    Args:
        teacher: a model with ``features(x) -> {"patch_tokens": (N, C, h, w)}`` (``tardis_edge.teacher``).
        crops: ``(N, R, R, 3)`` RGB in [0, 255] (uint8 or float); moved to the teacher's device.
        flip_average: also run the mirrored crops and average with their maps flipped back (R must be a
            multiple of the patch size so the mirrored grid coincides with the original one).

    Returns:
        ``(N, C, R / p, R / p)`` float32 on the teacher's device.
    """
    device = next(teacher.parameters()).device
    x = torch.as_tensor(crops).to(device=device).permute(0, 3, 1, 2).float()  # (N, 3, R, R)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    x = (x / 255.0 - mean_t) / std_t
    with torch.no_grad():
        if not flip_average:
            return teacher.features(x)["patch_tokens"].float()
        both = teacher.features(torch.cat([x, x.flip(-1)]))["patch_tokens"].float()  # (2N, C, h, w)
        direct, mirrored = both.chunk(2)
        return 0.5 * (direct + mirrored.flip(-1))


# ----------------------------------------------------------------------------------------------- warp


def cached_to_student_grid_affine(
    cache_affine: np.ndarray, student_affine: np.ndarray, stride: float = 4.0, teacher_stride: float = 14.0
) -> np.ndarray:
    """``(2, 3)`` affine from student-grid cells to cached-map cells (where each target cell samples the map).

    Args:
        cache_affine: image -> teacher-crop pixels (stored with the map).
        student_affine: image -> student-input pixels (with the augmentation drawn for this step).
        stride: student input pixels per grid cell; ``teacher_stride``: teacher crop pixels per token.
    """
    student_to_image = geometry.invert_affine(student_affine)
    grid_to_teacher_px = geometry.compose(
        cache_affine, geometry.compose(student_to_image, geometry.feature_cell_to_pixel(stride))
    )
    return geometry.compose(geometry.invert_affine(geometry.feature_cell_to_pixel(teacher_stride)), grid_to_teacher_px)


def warp_cached_features(
    features: torch.Tensor | np.ndarray,
    cache_affine: np.ndarray,
    student_affine: np.ndarray,
    out_hw: tuple[int, int] = (64, 64),
    stride: float = 4.0,
    teacher_stride: float = 14.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cached teacher map resampled onto the student's (augmented) distillation grid.

    Args:
        features: ``(C, h, w)`` cached map (any float dtype).
        cache_affine: ``(2, 3)`` image -> teacher-crop pixels of that map.
        student_affine: ``(2, 3)`` image -> student-input pixels (``geometry.crop_affine`` with augmentation).
        out_hw: student grid ``(H, W)``; ``stride``: student input px per cell; ``teacher_stride``: teacher px
            per token.

    Returns:
        ``(features (C, H, W) float32, mask (H, W) float32)``: bilinear samples of the map, and 1 where the cell
        centre falls inside the cached crop (features are 0 where the mask is 0).
    """
    feat = torch.as_tensor(features).float()
    if feat.ndim != 3:
        raise ValueError(f"cached features must be (C, h, w), got shape {tuple(feat.shape)}")
    _, h, w = feat.shape
    out_h, out_w = out_hw
    m = cached_to_student_grid_affine(cache_affine, student_affine, stride, teacher_stride)
    v, u = np.mgrid[0:out_h, 0:out_w].astype(np.float64)  # (H, W) each
    src = geometry.apply_affine(np.stack([u, v], axis=-1), m)  # (H, W, 2) cached-map cells (x, y)
    inside = (src[..., 0] >= -0.5) & (src[..., 0] <= w - 0.5) & (src[..., 1] >= -0.5) & (src[..., 1] <= h - 0.5)
    # grid_sample(align_corners=False) puts cell k's centre at normalised (2k + 1) / size - 1
    norm = np.stack([(2 * src[..., 0] + 1) / w - 1, (2 * src[..., 1] + 1) / h - 1], axis=-1)
    grid = torch.from_numpy(norm).to(dtype=feat.dtype, device=feat.device)[None]  # (1, H, W, 2)
    out = F.grid_sample(feat[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    mask = torch.from_numpy(inside).to(dtype=out.dtype, device=out.device)  # (H, W)
    return out * mask, mask


# ----------------------------------------------------------------------------------------------- cache


@dataclass
class CacheEntry:
    """One cached sample: map ``(C, g, g)``, image -> teacher-crop ``affine (2, 3)``, ``box`` (cx, cy, w, h)."""

    sample_id: str
    features: np.ndarray
    affine: np.ndarray
    box: np.ndarray


@dataclass
class _ShardRecord:
    shard: str
    bytes: int
    sample_ids: list[str] = field(default_factory=list)


def _h5py():
    try:
        import h5py
    except ImportError as exc:
        raise ImportError("the feature cache needs h5py: pip install 'tardis-edge[data]'") from exc
    return h5py


def _entry_crc(features: np.ndarray, affine: np.ndarray, box: np.ndarray) -> int:
    crc = zlib.crc32(np.ascontiguousarray(features).tobytes())
    crc = zlib.crc32(np.ascontiguousarray(affine, dtype=np.float64).tobytes(), crc)
    return zlib.crc32(np.ascontiguousarray(box, dtype=np.float64).tobytes(), crc)


def _manifest_differences(found: dict, wanted: dict) -> list[str]:
    diffs = []
    if found.get("format_version") != wanted["format_version"]:
        diffs.append(f"format_version: cache {found.get('format_version')} vs this code {wanted['format_version']}")
    old_fp, new_fp = found.get("teacher", {}).get("fingerprint"), wanted["teacher"]["fingerprint"]
    if old_fp != new_fp:
        old_name = found.get("teacher", {}).get("name", "?")
        diffs.append(
            f"teacher: cache built with {old_name} (fingerprint {str(old_fp)[:12]}), this run uses "
            f"{wanted['teacher']['name']} (fingerprint {new_fp[:12]})"
        )
    old_geo = found.get("geometry", {})
    for key, value in wanted["geometry"].items():
        if old_geo.get(key) != value:
            diffs.append(f"{key}: cache {old_geo.get(key)!r} vs this run {value!r}")
    return diffs


class FeatureCache:
    """The on-disk teacher-feature cache of one teacher + crop geometry (see the module docstring).

    Open for reading with ``FeatureCache(path)``; ``FeatureCache.create(...)`` opens (or starts) one for writing.
    """

    def __init__(self, path: str | Path, expect: dict | None = None) -> None:
        """
        Args:
            path: the cache folder.
            expect: a manifest (``make_manifest``) the cache must agree with, else ``CacheMismatchError``.
        """
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(
                f"{self.path} is not a feature cache ({MANIFEST} missing); build it with python -m training.extract"
            )
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CacheCorruptError(
                f"{manifest_path} is not valid JSON ({exc}); rebuild the cache (--rebuild)"
            ) from exc
        if self.manifest.get("format") != CACHE_FORMAT:
            raise CacheMismatchError(f"{manifest_path} is not a tardis-edge feature cache manifest")
        if expect is not None:
            diffs = _manifest_differences(self.manifest, expect)
            if diffs:
                raise CacheMismatchError(
                    f"feature cache {self.path} does not match this run: " + "; ".join(diffs) + ". Pass --rebuild "
                    "(ExtractConfig.rebuild=True) to recompute it, or choose a new --cache path"
                )
        self._records, self._torn_tail = self._read_index()
        self._where: dict[str, tuple[str, int]] = {}
        for record in self._records:
            for row, sample_id in enumerate(record.sample_ids):
                self._where[sample_id] = (record.shard, row)
        for record in self._records:
            shard = self.path / SHARDS / record.shard
            size = shard.stat().st_size if shard.is_file() else -1
            if size != record.bytes:
                found = "missing" if size < 0 else f"{size} bytes"
                raise CacheCorruptError(
                    f"cache shard {shard} is {found}, its index line says {record.bytes} bytes (truncated or "
                    "damaged); rebuild the cache (--rebuild) or delete the folder"
                )
        self._files: dict[str, Any] = {}
        self._pid = os.getpid()
        self._lock_handle = None

    # --- reading ---------------------------------------------------------------------------------------

    @property
    def grid(self) -> int:
        return int(self.manifest["geometry"]["grid"])

    @property
    def patch_size(self) -> int:
        """Teacher crop pixels per token of the cached maps (``geometry.feature_cell_to_pixel``'s stride)."""
        return int(self.manifest["geometry"]["patch_size"])

    @property
    def channels(self) -> int:
        return int(self.manifest["teacher"]["embed_dim"])

    @property
    def sample_ids(self) -> list[str]:
        return list(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._where

    def _read_index(self) -> tuple[list[_ShardRecord], bool]:
        path = self.path / INDEX
        if not path.is_file():
            return [], False
        lines = path.read_bytes().split(b"\n")
        complete, tail = lines[:-1], lines[-1]  # a killed append leaves a tail without its newline
        records = []
        for number, line in enumerate(complete, start=1):
            try:
                records.append(_ShardRecord(**json.loads(line)))
            except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
                raise CacheCorruptError(
                    f"{path} line {number} is damaged ({exc}); rebuild the cache (--rebuild)"
                ) from exc
        return records, bool(tail.strip())

    def _open_shard(self, name: str):
        if self._pid != os.getpid():  # HDF5 handles do not survive a fork (DataLoader workers)
            self._files, self._pid = {}, os.getpid()
        handle = self._files.get(name)
        if handle is None:
            path = self.path / SHARDS / name
            try:
                handle = _h5py().File(path, "r")
            except OSError as exc:
                raise CacheCorruptError(
                    f"cache shard {path} cannot be opened by HDF5 ({exc}); rebuild the cache (--rebuild)"
                ) from exc
            self._files[name] = handle
        return handle

    def read(self, sample_id: str) -> CacheEntry:
        """The cached map of ``sample_id``, checked against its shape and checksum."""
        if sample_id not in self._where:
            raise KeyError(f"sample {sample_id!r} is not in feature cache {self.path}; run python -m training.extract")
        name, row = self._where[sample_id]
        handle = self._open_shard(name)
        where = f"cache shard {self.path / SHARDS / name} row {row} ({sample_id})"
        try:
            features = handle["features"][row]
            affine, box = handle["crop_affine"][row], handle["box"][row]
            crc, stored_id = int(handle["crc32"][row]), handle["sample_id"][row].decode()
        except (OSError, KeyError, ValueError, IndexError) as exc:
            raise CacheCorruptError(f"{where} cannot be read ({exc}); rebuild the cache (--rebuild)") from exc
        expected_shape = (self.channels, self.grid, self.grid)
        if features.shape != expected_shape or stored_id != sample_id:
            raise CacheCorruptError(
                f"{where} holds {stored_id!r} with shape {features.shape}, expected {sample_id!r} {expected_shape}; "
                "rebuild the cache (--rebuild)"
            )
        if _entry_crc(features, affine, box) != crc:
            raise CacheCorruptError(f"{where} fails its crc32 checksum; rebuild the cache (--rebuild)")
        return CacheEntry(sample_id, features, affine, box)

    def __iter__(self) -> Iterator[CacheEntry]:
        for sample_id in self._where:
            yield self.read(sample_id)

    def verify(self) -> None:
        """Open every shard and check its datasets' shapes (cheap; ``read`` checks each entry's checksum)."""
        for record in self._records:
            handle = self._open_shard(record.shard)
            n = len(record.sample_ids)
            for name, shape in (("features", (n, self.channels, self.grid, self.grid)), ("crc32", (n,))):
                if name not in handle or handle[name].shape != shape:
                    found = handle[name].shape if name in handle else "missing"
                    raise CacheCorruptError(
                        f"cache shard {self.path / SHARDS / record.shard}: {name} is {found}, expected {shape}; "
                        "rebuild the cache (--rebuild)"
                    )

    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std ``(C,)`` float32 over every cached map position (target standardisation)."""
        total = np.zeros(self.channels)
        total_sq = np.zeros(self.channels)
        count = 0
        for record in self._records:
            handle = self._open_shard(record.shard)
            total += handle["channel_sum"][:]
            total_sq += handle["channel_sumsq"][:]
            count += len(record.sample_ids) * self.grid * self.grid
        if count == 0:
            raise ValueError(f"feature cache {self.path} is empty; run python -m training.extract first")
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
        return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files = {}
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    def __getstate__(self) -> dict:
        # open HDF5 handles and the writer's lock stay with the process that opened them (spawned workers reopen)
        return {**self.__dict__, "_files": {}, "_lock_handle": None}

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- writing ---------------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, manifest: dict, rebuild: bool = False) -> FeatureCache:
        """Open ``path`` for writing with ``manifest``: start a new cache, resume a matching one, or (``rebuild``)
        wipe one built with another teacher/geometry. A mismatch without ``rebuild`` is a ``CacheMismatchError``.

        Resuming drops what a killed run left half-done: a shard without an index line, a torn last index line.
        """
        root = Path(path)
        manifest_path = root / MANIFEST
        if manifest_path.is_file():
            try:
                found = json.loads(manifest_path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                found = None
            if found is not None and found.get("format") != CACHE_FORMAT:
                raise FileExistsError(f"{manifest_path} is not a feature cache manifest; choose a new --cache path")
            if rebuild:
                cls._wipe(root)
            elif found is None:
                raise CacheCorruptError(f"{manifest_path} is damaged; pass --rebuild to start over")
            else:
                cls(root, expect=manifest)  # raises CacheMismatchError / CacheCorruptError
        elif root.exists() and any(root.iterdir()):
            raise FileExistsError(
                f"{root} exists and is not a feature cache (no {MANIFEST}); choose a new --cache path"
            )
        (root / SHARDS).mkdir(parents=True, exist_ok=True)
        if not manifest_path.is_file():
            atomic_write_text(manifest_path, strict_json(manifest, sort_keys=True))
        cache = cls(root, expect=manifest)
        cache._lock()
        cache._drop_unfinished()
        cache.verify()
        return cache

    def _lock(self) -> None:
        """Hold an exclusive lock on the folder while writing: two extractions into one cache would clash."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        handle = open(self.path / ".lock", "w")  # held until close()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise RuntimeError(
                f"another process is writing feature cache {self.path}; wait for it or use another path"
            ) from None
        self._lock_handle = handle

    @staticmethod
    def _wipe(root: Path) -> None:
        """Delete this cache's own files (never anything else in the folder)."""
        shutil.rmtree(root / SHARDS, ignore_errors=True)
        for name in (INDEX, MANIFEST, PCA_PICTURE):
            (root / name).unlink(missing_ok=True)

    def _drop_unfinished(self) -> None:
        if self._torn_tail:
            done = b"".join(
                json.dumps(json_safe(asdict(r)), separators=(",", ":"), allow_nan=False).encode() + b"\n"
                for r in self._records
            )
            with atomic_path(self.path / INDEX) as tmp:
                tmp.write_bytes(done)
            self._torn_tail = False
        indexed = {r.shard for r in self._records}
        for shard in (self.path / SHARDS).iterdir():
            if shard.name not in indexed:
                shard.unlink()  # a batch renamed into place by a run killed before its index line

    def write_batch(
        self, sample_ids: Sequence[str], features: np.ndarray, affines: np.ndarray, boxes: np.ndarray
    ) -> None:
        """Store one batch as a new shard: write it to a temporary file, rename it, then append its index line.

        Args:
            features: ``(n, C, g, g)`` maps (cast to the manifest's storage dtype); ``affines`` ``(n, 2, 3)``
                image -> teacher crop; ``boxes`` ``(n, 4)`` (cx, cy, w, h).
        """
        h5py = _h5py()
        n = len(sample_ids)
        dtype = np.dtype(self.manifest["geometry"]["storage_dtype"])
        feats = np.ascontiguousarray(features, dtype=dtype)
        expected = (n, self.channels, self.grid, self.grid)
        if feats.shape != expected:
            raise ValueError(f"feature batch has shape {feats.shape}, the cache stores {expected}")
        seen, dupes = set(self._where), []
        for sample_id in sample_ids:
            if sample_id in seen:
                dupes.append(sample_id)
            seen.add(sample_id)
        if dupes:
            raise ValueError(f"sample ids {dupes[:5]} are already in feature cache {self.path}; ids must be unique")
        affines = np.asarray(affines, dtype=np.float64).reshape(n, 2, 3)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(n, 4)
        as_float = feats.astype(np.float64)
        numbers = [int(p.stem) for p in (self.path / SHARDS).glob("*.h5") if p.stem.isdigit()]
        name = f"{max(numbers, default=-1) + 1:06d}.h5"
        final = self.path / SHARDS / name
        with atomic_path(final) as tmp:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("features", data=feats, chunks=(1, *feats.shape[1:]))
                f.create_dataset("crop_affine", data=affines)
                f.create_dataset("box", data=boxes)
                f.create_dataset(
                    "sample_id",
                    data=np.array([s.encode() for s in sample_ids], dtype=object),
                    dtype=h5py.string_dtype(),
                )
                crcs = [_entry_crc(feats[i], affines[i], boxes[i]) for i in range(n)]
                f.create_dataset("crc32", data=np.array(crcs, dtype=np.uint32))
                f.create_dataset("channel_sum", data=as_float.sum(axis=(0, 2, 3)))
                f.create_dataset("channel_sumsq", data=(as_float**2).sum(axis=(0, 2, 3)))
        record = _ShardRecord(name, final.stat().st_size, list(sample_ids))
        with open(self.path / INDEX, "ab") as index:
            index.write(json.dumps(json_safe(asdict(record)), separators=(",", ":"), allow_nan=False).encode() + b"\n")
            index.flush()
            os.fsync(index.fileno())
        self._records.append(record)
        for row, sample_id in enumerate(sample_ids):
            self._where[sample_id] = (name, row)


def make_manifest(teacher: torch.nn.Module, cfg: ExtractConfig, teacher_name: str) -> dict:
    """The manifest of a cache of ``teacher`` maps made with ``cfg`` (what a later run must agree with)."""
    return {
        "format": CACHE_FORMAT,
        "format_version": CACHE_VERSION,
        "teacher": {
            "name": teacher_name,
            "fingerprint": teacher.fingerprint(),
            "embed_dim": int(teacher.embed_dim),
            "patch_size": int(teacher.patch_size),
            "random": cfg.random_teacher is not None,
            "config": asdict(teacher.cfg) if hasattr(teacher, "cfg") else {},
        },
        "geometry": cfg.geometry_record(int(teacher.patch_size)),
    }


__all__ = [
    "CacheCorruptError",
    "CacheEntry",
    "CacheMismatchError",
    "ExtractConfig",
    "FeatureCache",
    "cached_to_student_grid_affine",
    "make_manifest",
    "prepare_crop",
    "teacher_crop_box",
    "teacher_features",
    "warp_cached_features",
]
