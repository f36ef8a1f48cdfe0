"""Multi-animal: the finder's targets and decode, the predictor's duplicate rule, and the multi-animal metrics."""

from __future__ import annotations

import numpy as np
import pytest

from tardis_edge import geometry
from tardis_edge.data.sample import KeypointSchema, Sample
from tardis_edge.finder import FinderConfig, decode_finder, encode_targets, find_animals, frame_affine, instance_box
from tardis_edge.metrics import evaluate_multi_animal, match_animals
from tardis_edge.multi import MultiConfig, deduplicate

STRIDE = 4.0
SIDE = 128


def _targets(centres, sizes, side=SIDE):
    target, weight = encode_targets(
        np.array(centres, float), np.array(sizes, float), int(side // STRIDE), STRIDE, 2.0, side
    )
    return target, weight


def test_decode_finds_each_encoded_animal_within_a_quarter_cell():
    centres = [(20.0, 30.0), (90.5, 41.0), (64.0, 100.0)]
    sizes = [(30.0, 12.0), (16.0, 40.0), (22.0, 22.0)]
    target, weight = _targets(centres, sizes)
    assert weight.max() == pytest.approx(1.0, abs=0.05)
    (found,) = decode_finder(target[None], STRIDE, FinderConfig(input_size=SIDE))
    assert len(found) == 3
    got = np.array([f[:2] for f in found])
    for c, s in zip(centres, sizes, strict=True):
        i = int(np.argmin(np.linalg.norm(got - c, axis=1)))
        # the peak cell plus MSRA's quarter step: within half a cell of the encoded centre
        assert np.linalg.norm(got[i] - c) <= 0.5 * STRIDE
        assert found[i][2:4] == pytest.approx(s, abs=1e-4)  # the size read at the peak cell is the encoded one


def test_decode_keeps_the_strongest_up_to_max_animals_and_drops_weak_peaks():
    target, _ = _targets([(20.0, 20.0), (100.0, 100.0)], [(10.0, 10.0), (10.0, 10.0)])
    target[0] *= np.where(np.arange(SIDE // 4)[None, :] < 12, 0.9, 0.5)  # the left animal is the stronger
    cfg = FinderConfig(input_size=SIDE, max_animals=1)
    (found,) = decode_finder(target[None], STRIDE, cfg)
    assert len(found) == 1 and found[0][0] < 50
    (none,) = decode_finder(target[None] * 0.2, STRIDE, FinderConfig(input_size=SIDE, min_score=0.3))
    assert none == []


def test_find_animals_maps_back_to_image_pixels():
    """A finder runner answering with the targets of the letterboxed frame: the found boxes are the animals' boxes in
    the original (non-square) frame, whatever the letterbox scale."""
    image = np.zeros((300, 500, 3), np.uint8)
    animals = [(100.0, 150.0, 60.0, 30.0), (400.0, 80.0, 40.0, 50.0)]  # cx, cy, w, h in image pixels
    m = frame_affine((500, 300), SIDE)
    scale = m[0, 0]

    def runner(batch: np.ndarray) -> np.ndarray:
        assert batch.shape == (1, 3, SIDE, SIDE)
        centres = geometry.apply_affine(np.array([a[:2] for a in animals]), m)
        sizes = np.array([a[2:] for a in animals]) * scale
        return _targets(centres, sizes)[0][None]

    (found,) = find_animals(runner, [image], FinderConfig(input_size=SIDE), STRIDE)
    assert len(found) == 2
    for a in animals:
        f = min(found, key=lambda f: np.hypot(f.cx - a[0], f.cy - a[1]))
        assert np.hypot(f.cx - a[0], f.cy - a[1]) <= 0.5 * STRIDE / scale
        assert (f.width, f.height) == pytest.approx(a[2:], rel=1e-3)


def test_instance_box_ignores_unlabelled_points():
    kp = np.array([[0.0, 0.0], [10.0, 4.0], [np.nan, np.nan], [100.0, 100.0]])
    assert instance_box(kp, np.array([2, 2, 0, 0])) == pytest.approx((5.0, 2.0, 10.0, 4.0))
    assert all(np.isnan(instance_box(kp, np.zeros(4))))


def test_deduplicate_merges_two_boxes_on_one_animal_and_counts_those_beyond_the_maximum():
    base = np.array([[0.0, 0.0], [40.0, 0.0], [40.0, 20.0], [0.0, 20.0]])
    poses = np.stack([base, base + 1.0, base + 200.0, base + 400.0])  # 0 and 1: one animal seen twice
    scores = np.array([[0.9] * 4, [0.8] * 4, [0.7] * 4, [0.6] * 4])
    kept, dropped = deduplicate(poses, scores, MultiConfig(), min_score=0.2)
    assert kept == [0, 2, 3] and dropped == 0
    kept, dropped = deduplicate(poses, scores, MultiConfig(max_animals=2), min_score=0.2)
    assert kept == [0, 2] and dropped == 1
    weak = scores.copy()
    weak[3, 1:] = 0.1  # one confident keypoint: fewer than min_keypoints -> lost, not a duplicate
    assert deduplicate(poses, weak, MultiConfig(), min_score=0.2)[0] == [0, 2]


def _animal(frame: int, track: str, xy: np.ndarray) -> Sample:
    return Sample(
        sample_id=f"v#{frame:06d}/{track}",
        image_path=None,
        keypoints_xy=xy.astype(np.float32),
        visible=np.full(len(xy), 2.0, np.float32),
        video_path=None,
        frame_index=frame,
        track=track,
        extra={},
    )


def test_multi_animal_metrics_on_perfect_missing_and_extra_predictions():
    rng = np.random.default_rng(0)
    schema = KeypointSchema(names=("a", "b", "c"))
    frames = []
    for f in range(6):
        frames.append([_animal(f, t, rng.uniform(0, 200, (3, 2))) for t in ("female", "male")])
    perfect = [(np.stack([s.keypoints_xy for s in g]), np.ones((2, 3)), np.ones(2)) for g in frames]
    result = evaluate_multi_animal(frames, perfect, schema)
    assert result["recall"] == 1.0 and result["precision"] == 1.0 and result["rmse_px"] == pytest.approx(0, abs=1e-4)
    assert result["AP"] == pytest.approx(1.0)
    # frame 0 loses its second animal; frame 1 gains a far-away false positive
    partial = list(perfect)
    partial[0] = tuple(x[:1] for x in perfect[0])
    kp, sc, inst = perfect[1]
    partial[1] = (np.concatenate([kp, kp[:1] + 1000]), np.ones((3, 3)), np.array([1.0, 1.0, 0.5]))
    result = evaluate_multi_animal(frames, partial, schema)
    assert result["recall"] == pytest.approx(11 / 12)
    assert result["precision"] == pytest.approx(11 / 12)
    assert result["frame_recall_min"] == 0.5 and result["frames_all_found"] == pytest.approx(5 / 6)
    assert result["AP"] < 1.0


def test_match_animals_is_one_to_one_and_respects_the_oks_threshold():
    a = _animal(0, "x", np.array([[10.0, 10.0], [30.0, 10.0], [20.0, 30.0]]))
    b = _animal(0, "y", np.array([[110.0, 10.0], [130.0, 10.0], [120.0, 30.0]]))
    preds = np.stack([b.keypoints_xy + 0.5, a.keypoints_xy - 0.5])
    matches = match_animals([a, b], preds, [0.1] * 3, 0.5)
    assert sorted((g, p) for g, p, _ in matches) == [(0, 1), (1, 0)]
    assert match_animals([a], b.keypoints_xy[None], [0.1] * 3, 0.5) == []


def test_a_model_with_fewer_keypoints_than_min_keypoints_needs_all_of_them():
    two = np.array([[[0.0, 0.0], [10.0, 0.0]], [[100.0, 0.0], [110.0, 0.0]]])
    assert deduplicate(two, np.array([[0.9, 0.9], [0.9, 0.1]]), MultiConfig(), min_score=0.2)[0] == [0]
