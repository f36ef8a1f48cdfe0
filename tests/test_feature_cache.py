"""Teacher-feature targets: the warp under augmentation, and the disk cache (mismatch, resume, corruption)."""

from __future__ import annotations

import json
import pickle

import cv2
import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tardis_edge import geometry
from tardis_edge.data.video import sample_image_folder
from tardis_edge.feature_cache import (
    INDEX,
    SHARDS,
    CacheCorruptError,
    CacheMismatchError,
    ExtractConfig,
    FeatureCache,
    make_manifest,
    prepare_crop,
    teacher_features,
    warp_cached_features,
)
from tardis_edge.teacher import random_dinov2
from training.extract import run_extract


class PatchMeanTeacher(torch.nn.Module):
    """A teacher whose features are known: each token is the mean of its 14x14 patch (a linear function)."""

    patch_size = 14
    embed_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the module a device

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"patch_tokens": F.avg_pool2d(x, self.patch_size)}


def coordinate_image(w: int = 640, h: int = 480) -> np.ndarray:
    """A float "image" whose pixel (col, row) holds (col, row, 100): features of any crop are known exactly."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([u, v, np.full_like(u, 100.0)], axis=-1)


def unnormalise(maps: torch.Tensor) -> np.ndarray:
    """Undo teacher_features' ImageNet normalisation: back to pixel values (image coordinates here)."""
    cfg = ExtractConfig()
    mean = torch.tensor(cfg.mean).view(3, 1, 1) * 255
    std = torch.tensor(cfg.std).view(3, 1, 1) * 255
    return (maps * std + mean).numpy()


BOX = geometry.box_from_center_size(330.0, 235.0, 120.0, 100.0, (1, 1))  # 150 px square after padding


def test_unaugmented_target_is_the_cached_map_itself():
    cached = torch.randn(7, 64, 64, generator=torch.Generator().manual_seed(0))
    out, mask = warp_cached_features(
        cached, geometry.crop_affine(BOX, (896, 896)), geometry.crop_affine(BOX, (256, 256)), (64, 64), stride=4
    )
    assert mask.shape == (64, 64) and bool((mask == 1).all())
    torch.testing.assert_close(out, cached, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "aug",
    [
        dict(),
        dict(flip=True),
        dict(rotation_deg=25.0),
        dict(scale=1.3, shift_xy=(0.1, -0.07)),
        dict(flip=True, rotation_deg=-17.0, scale=0.8, shift_xy=(-0.05, 0.12)),
    ],
)
def test_warp_lands_every_cell_on_the_right_image_point(aug):
    """Cached map of a crop of the coordinate image, warped for an augmented student crop: every valid cell must
    hold the image coordinates of that cell's centre (student pixel 4u + 1.5). A half-pixel slip anywhere (teacher
    patch centres, student cells, the flip) moves the values by >= 0.08 image px; the tolerance is 0.02."""
    image = coordinate_image()
    crop, cache_m = prepare_crop(image, BOX, 896)  # (896, 896, 3) float32, the extraction code path
    cached = teacher_features(PatchMeanTeacher(), crop[None], flip_average=True)[0]  # (3, 64, 64)
    student_m = geometry.crop_affine(BOX, (256, 256), **aug)
    out, mask = warp_cached_features(cached, cache_m, student_m, (64, 64), stride=4, teacher_stride=14)
    values = unnormalise(out)  # (3, 64, 64) image x, image y, 100

    v, u = np.mgrid[0:64, 0:64].astype(np.float64)
    cell_centres = np.stack([4 * u + 1.5, 4 * v + 1.5], axis=-1)  # student input px
    expected = geometry.apply_affine(cell_centres, geometry.invert_affine(student_m))  # (64, 64, 2) image px
    in_teacher_crop = geometry.apply_affine(expected, cache_m)  # where the cell centre lies in the cached crop
    inside = ((in_teacher_crop >= -0.5) & (in_teacher_crop <= 895.5)).all(axis=-1)
    np.testing.assert_array_equal(mask.numpy().astype(bool), inside)
    # between the outermost patch centres the map is sampled, not extrapolated: exact for a linear map
    interior = ((in_teacher_crop >= 6.5) & (in_teacher_crop <= 888.5)).all(axis=-1)  # patch centres 6.5 .. 888.5
    assert interior.sum() > 1000
    np.testing.assert_allclose(values[0][interior], expected[..., 0][interior], atol=0.02)
    np.testing.assert_allclose(values[1][interior], expected[..., 1][interior], atol=0.02)
    assert bool((out[:, torch.from_numpy(~inside)] == 0).all())  # features are zeroed where masked
    if aug.get("scale", 1.0) > 1.0:
        assert (~inside).sum() > 100  # zooming out reaches beyond the cached crop: those cells are masked


def test_flip_augmentation_equals_the_teacher_on_the_flipped_crop():
    """With flip averaging the extracted map is exactly flip-equivariant, so warping the cached map for a flipped
    student crop must reproduce the real teacher run on that flipped crop."""
    teacher = random_dinov2("vits14", depth=1, seed=4)
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
    crop, cache_m = prepare_crop(image, BOX, 224)
    cached = teacher_features(teacher, crop[None])[0]  # (384, 16, 16)
    flipped_crop = geometry.warp_image(image, geometry.crop_affine(BOX, (224, 224), flip=True), (224, 224))
    # the same pixels up to warpAffine's fixed-point rounding (1/32 px), which the teacher would amplify
    assert np.abs(flipped_crop.astype(int) - crop[:, ::-1]).max() <= 1
    direct = teacher_features(teacher, np.ascontiguousarray(crop[None, :, ::-1]))[0]
    student_m = geometry.crop_affine(BOX, (64, 64), flip=True)  # 64 px student input, stride 4 -> 16x16 grid
    warped, mask = warp_cached_features(cached, cache_m, student_m, (16, 16), stride=4)
    assert bool((mask == 1).all())
    torch.testing.assert_close(warped, direct, rtol=0, atol=1e-4)
    one_way = teacher_features(teacher, crop[None], flip_average=False)[0]
    assert (one_way - cached).abs().max() > 1e-2  # the averaging is what makes this exact


# ------------------------------------------------------------------------------------------------ cache


def manifest_for(teacher, **cfg) -> dict:
    return make_manifest(teacher, ExtractConfig(**cfg), "test teacher")


@pytest.fixture(scope="module")
def tiny_teacher():
    return random_dinov2("vits14", depth=1, seed=0)


def random_batch(n: int, c: int, g: int, seed: int):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, c, g, g)).astype(np.float32),
        rng.normal(size=(n, 2, 3)),
        rng.normal(size=(n, 4)),
    )


def test_cache_round_trip_and_channel_stats(tmp_path, tiny_teacher):
    manifest = manifest_for(tiny_teacher, resolution=56)
    batches = [random_batch(3, 384, 4, seed) for seed in (1, 2)]
    with FeatureCache.create(tmp_path / "c", manifest) as cache:
        cache.write_batch(["a", "b", "c"], *batches[0])
        cache.write_batch(["d", "e", "f"], *batches[1])
        with pytest.raises(ValueError, match=r"sample ids \['b'\] are already in feature cache"):
            cache.write_batch(["b"], *random_batch(1, 384, 4, 9))
    cache = FeatureCache(tmp_path / "c", expect=manifest)
    assert cache.sample_ids == list("abcdef") and cache.grid == 4 and cache.channels == 384
    entry = cache.read("e")
    assert entry.features.dtype == np.float16 and entry.features.shape == (384, 4, 4)
    np.testing.assert_array_equal(entry.features, batches[1][0][1].astype(np.float16))
    np.testing.assert_array_equal(entry.affine, batches[1][1][1])
    np.testing.assert_array_equal(entry.box, batches[1][2][1])
    stored = np.concatenate([b[0] for b in batches]).astype(np.float16).astype(np.float64)  # (6, C, 4, 4)
    mean, std = cache.channel_stats()
    np.testing.assert_allclose(mean, stored.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, stored.std(axis=(0, 2, 3)), rtol=1e-4)
    with pytest.raises(KeyError, match="'zz' is not in feature cache"):
        cache.read("zz")
    # DataLoader workers started with spawn get a pickled copy: it reopens the shards itself
    copy = pickle.loads(pickle.dumps(cache))
    np.testing.assert_array_equal(copy.read("e").features, entry.features)


def test_other_teacher_or_geometry_is_refused_then_rebuilt(tmp_path, tiny_teacher):
    path = tmp_path / "c"
    with FeatureCache.create(path, manifest_for(tiny_teacher, resolution=56)) as cache:
        cache.write_batch(["a"], *random_batch(1, 384, 4, 0))
    other = random_dinov2("vits14", depth=1, seed=1)
    with pytest.raises(
        CacheMismatchError,
        match=r"teacher: cache built with test teacher \(fingerprint \w+\), this run uses .*--rebuild",
    ):
        FeatureCache.create(path, manifest_for(other, resolution=56))
    with pytest.raises(CacheMismatchError, match="resolution: cache 56 vs this run 28.*--rebuild"):
        FeatureCache.create(path, manifest_for(tiny_teacher, resolution=28))
    with pytest.raises(CacheMismatchError, match="flip_average: cache True vs this run False"):
        FeatureCache(path, expect=manifest_for(tiny_teacher, resolution=56, flip_average=False))
    with FeatureCache.create(path, manifest_for(other, resolution=56), rebuild=True) as cache:
        assert len(cache) == 0
    assert json.loads((path / "manifest.json").read_text())["teacher"]["fingerprint"] == other.fingerprint()


def test_refuses_foreign_folders_and_a_second_writer(tmp_path, tiny_teacher):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="is not a feature cache .* choose a new --cache path"):
        FeatureCache.create(tmp_path / "mine", manifest_for(tiny_teacher, resolution=56), rebuild=True)
    assert (tmp_path / "mine" / "notes.txt").exists()
    with FeatureCache.create(tmp_path / "c", manifest_for(tiny_teacher, resolution=56)):
        with pytest.raises(RuntimeError, match="another process is writing feature cache"):
            FeatureCache.create(tmp_path / "c", manifest_for(tiny_teacher, resolution=56))


@pytest.fixture()
def frames(tmp_path):
    """Ten small unlabelled images in a folder (distinct content so the maps differ)."""
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        cv2.imwrite(str(folder / f"f{i:02d}.png"), rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
    return sample_image_folder(folder)


def count_crops(teacher) -> list[int]:
    """Images the teacher actually embeds (a forward hook on its patch embedding)."""
    seen: list[int] = []
    teacher.patch_embed.proj.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].shape[0]))
    return seen


class Interrupted(Exception):
    pass


def interrupt_after(batches: int):
    def on_batch(done: int) -> None:
        if done >= 2 * batches:
            raise Interrupted

    return on_batch


def test_interrupted_extraction_resumes_without_recomputing(tmp_path, frames):
    teacher = random_dinov2("vits14", depth=1, seed=0)
    seen = count_crops(teacher)
    cfg = ExtractConfig(resolution=56, batch_size=2, cache=tmp_path / "cache", pca_samples=0, progress=False)
    with pytest.raises(Interrupted):
        run_extract(cfg, frames, teacher, on_batch=interrupt_after(3))
    assert sum(seen) == 2 * 6  # 3 batches x 2 crops, each crop and its mirror
    assert len(FeatureCache(cfg.cache)) == 6
    # a run killed later would also leave a shard without its index line and a torn line: both are dropped
    orphan = tmp_path / "cache" / SHARDS / "000099.h5"
    orphan.write_bytes(b"half a shard")
    with open(tmp_path / "cache" / INDEX, "ab") as index:
        index.write(b'{"shard": "0000')
    seen.clear()
    summary = run_extract(cfg, frames, teacher)
    assert sum(seen) == 2 * 4 and summary["computed"] == 4 and summary["reused"] == 6
    assert not orphan.exists()
    cache = FeatureCache(cfg.cache)
    assert sorted(cache.sample_ids) == sorted(s.sample_id for s in frames)
    # resumed entries equal a fresh uninterrupted extraction
    fresh = run_extract(ExtractConfig(**{**cfg.__dict__, "cache": tmp_path / "fresh"}), frames, teacher)
    assert fresh["computed"] == 10
    reference = FeatureCache(tmp_path / "fresh")
    for sample in frames:
        np.testing.assert_array_equal(cache.read(sample.sample_id).features, reference.read(sample.sample_id).features)


def test_truncated_or_damaged_shards_are_never_read(tmp_path, frames):
    teacher = random_dinov2("vits14", depth=1, seed=0)
    cfg = ExtractConfig(resolution=56, batch_size=5, cache=tmp_path / "cache", pca_samples=0, progress=False)
    run_extract(cfg, frames, teacher)
    shard = tmp_path / "cache" / SHARDS / "000000.h5"
    good = shard.read_bytes()

    # flipped bytes inside row 1's chunk: that row fails its checksum, row 0 still reads
    with h5py.File(shard, "r") as f:
        offset = f["features"].id.get_chunk_info(1).byte_offset
    damaged = bytearray(good)
    damaged[offset + 100 : offset + 104] = b"\xff\xff\xff\xff"
    shard.write_bytes(bytes(damaged))
    cache = FeatureCache(cfg.cache)
    cache.read(frames[0].sample_id)
    with pytest.raises(CacheCorruptError, match=r"000000.h5 row 1 .* fails its crc32 checksum"):
        cache.read(frames[1].sample_id)
    cache.close()

    # truncated: refused at open, before anything is read; extraction refuses too until --rebuild
    shard.write_bytes(good[: len(good) // 2])
    with pytest.raises(CacheCorruptError, match=r"000000.h5 is \d+ bytes, its index line says \d+ bytes \(truncated"):
        FeatureCache(cfg.cache)
    with pytest.raises(CacheCorruptError, match="truncated"):
        run_extract(cfg, frames, teacher)
    # same size but not HDF5 any more
    shard.write_bytes(b"\0" * len(good))
    with pytest.raises(CacheCorruptError, match="cannot be opened by HDF5"):
        FeatureCache(cfg.cache).read(frames[0].sample_id)
    with pytest.raises(CacheCorruptError, match="cannot be opened by HDF5"):
        run_extract(cfg, frames, teacher)  # a resumed extraction opens every shard first
    summary = run_extract(ExtractConfig(**{**cfg.__dict__, "rebuild": True}), frames, teacher)
    assert summary["computed"] == 10
    FeatureCache(cfg.cache).verify()
