"""Multi-animal tracking: the tracker (tardis_edge.tracking), the MOT metrics (tardis_edge.metrics.tracking_metrics)
and the procedural multi-animal video with crossings (tardis_edge.data.synthetic)."""

from __future__ import annotations

import contextlib
import io

import cv2
import numpy as np
import pytest
from conftest import data_path

from tardis_edge import geometry, predict
from tardis_edge.data import synthetic
from tardis_edge.data.synthetic import (
    BODYPARTS,
    generate_multi_animal_video,
    multi_animal_truth,
    read_multi_animal_truth,
    render_multi_animal_frames,
)
from tardis_edge.metrics import object_keypoint_similarity, tracking_metrics
from tardis_edge.tracking import OneEuroFilter, Tracker, TrackerConfig, box_iou, pose_area, pose_boxes

K = len(BODYPARTS)
NOISE_PX = 1.5  # keypoint noise of the simulated detections (a good pose model's error on this data)


# ----------------------------------------------------------------------------------------------- helpers


def simulated_detections(truth: synthetic.MultiAnimalTruth, seed: int, noise: float = NOISE_PX):
    """What a pose model would give on the procedural video: the true keypoints plus noise, keypoints outside the
    frame missing (NaN, score 0), animals in a new random order every frame, 5 % of the animals missed and 3 frames
    with nothing found. Returns per frame ``(true identities, keypoints (N, K, 2), scores (N, K))``."""
    rng = np.random.default_rng(seed)
    empty = set(rng.choice(truth.num_frames, 3, replace=False).tolist())
    frames = []
    for t in range(truth.num_frames):
        animals = [m for m in range(truth.num_animals) if truth.present[t, m] and rng.random() >= 0.05]
        animals = [] if t in empty else [animals[i] for i in rng.permutation(len(animals))]
        keypoints = truth.keypoints_xy[t, animals] + rng.normal(0, noise, (len(animals), K, 2))  # (N, K, 2)
        inside = truth.inside[t, animals]  # (N, K)
        keypoints[~inside] = np.nan
        scores = np.where(inside, rng.uniform(0.5, 1.0, inside.shape), 0.0)
        frames.append((animals, keypoints, scores))
    return frames


def ground_truth_frames(truth: synthetic.MultiAnimalTruth):
    """Per frame, the animals in the picture: ``(identity, keypoints (K, 2), NaN outside the frame)``."""
    return [
        [
            (m, np.where(truth.inside[t, m][:, None], truth.keypoints_xy[t, m], np.nan))
            for m in range(truth.num_animals)
            if truth.present[t, m]
        ]
        for t in range(truth.num_frames)
    ]


def track(frames, config: TrackerConfig):
    """Run a tracker over simulated detections; per frame ``[(track id, keypoints)]`` and the TrackedFrames."""
    tracker = Tracker(config)
    predicted, outputs = [], []
    for t, (_, keypoints, scores) in enumerate(frames):
        out = tracker.update(keypoints, scores, None, t)
        tracked = out.track_ids[out.track_ids >= 0]
        assert len(set(tracked.tolist())) == len(tracked), f"frame {t}: one id for two animals {out.track_ids}"
        predicted.append([(int(i), out.keypoints_xy[j]) for j, i in enumerate(out.track_ids) if i >= 0])
        outputs.append(out)
    return predicted, outputs


@pytest.fixture(scope="module")
def video_truth():
    return multi_animal_truth(seed=0)  # 3 animals, 120 frames, 256 x 256, the last one leaves the frame once


@pytest.fixture(scope="module")
def detections(video_truth):
    return simulated_detections(video_truth, seed=0)


# ----------------------------------------------------------------------------------------------- metrics


def test_oks_matches_pycocotools():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(3)
    truth = rng.uniform(20, 80, (K, 2))
    truth[2] = np.nan  # unlabelled: left out of the mean
    preds = truth[None] + rng.normal(0, 4, (5, K, 2))
    sigmas = np.linspace(0.05, 0.1, K)
    area = 1234.0
    ours = object_keypoint_similarity(preds, truth[None], area, sigmas)

    visible = np.isfinite(truth).all(axis=1)
    gt = {
        "id": 1,
        "image_id": 1,
        "category_id": 1,
        "keypoints": np.column_stack([np.nan_to_num(truth), np.where(visible, 2, 0)]).ravel().tolist(),
        "num_keypoints": int(visible.sum()),
        "area": area,
        "bbox": [0, 0, 100, 100],
        "iscrowd": 0,
    }
    dets = [
        {"image_id": 1, "category_id": 1, "keypoints": np.column_stack([p, np.ones(K)]).ravel().tolist(), "score": 1}
        for p in preds
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": [{"id": 1}], "annotations": [gt], "categories": [{"id": 1, "name": "a"}]}
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(dets), "keypoints")
        evaluator.params.kpt_oks_sigmas = sigmas
        evaluator.evaluate()
    reference = np.asarray(evaluator.ious[(1, 1)])[:, 0]  # (detections sorted by score: all 1, stable order)
    np.testing.assert_allclose(np.sort(ours), np.sort(reference), rtol=1e-9)
    assert 0.2 < ours.mean() < 0.99  # the noise is a real test of the formula, not all ~0 or ~1


def _two_animals(num_frames: int, swap_at: int | None):
    """Two animals walking right, 100 px apart; the tracker's ids 7 and 8 exchange at ``swap_at``."""
    a = np.array([[0.0, 0.0], [20.0, 0.0], [40.0, 10.0]])
    b = a + [0.0, 100.0]
    gt = [[(0, a + [t, 0]), (1, b + [t, 0])] for t in range(num_frames)]
    pred = [
        [(7, a + [t, 0]), (8, b + [t, 0])] if swap_at is None or t < swap_at else [(8, a + [t, 0]), (7, b + [t, 0])]
        for t in range(num_frames)
    ]
    return gt, pred


def test_tracking_metrics_perfect_tracks():
    gt, pred = _two_animals(10, swap_at=None)
    m = tracking_metrics(gt, pred)
    assert (m["idf1"], m["mota"], m["num_switches"], m["recall"], m["precision"]) == (1.0, 1.0, 0, 1.0, 1.0)
    assert m["num_objects"] == 20 and m["num_frames"] == 10 and m["motp"] == pytest.approx(0.0)


def test_tracking_metrics_swap_in_the_middle():
    # The two tracks exchange animals at frame 5 of 10. motmetrics counts a switch per ground-truth animal whose
    # match changes id, so the one swap is 2 switches, both at frame 5; a switch is not a match, so MOTA =
    # 1 - (misses 0 + false positives 0 + switches 2) / 20 = 0.9. IDF1 pairs each animal with one id for the whole
    # video: 5 of its 10 frames agree, IDF1 = 2 * 10 / (20 + 20) = 0.5.
    gt, pred = _two_animals(10, swap_at=5)
    m = tracking_metrics(gt, pred)
    assert m["num_switches"] == 2 and m["switch_frames"] == [5]
    assert m["mota"] == pytest.approx(0.9) and m["idf1"] == pytest.approx(0.5)
    assert m["num_misses"] == 0 and m["num_false_positives"] == 0 and m["recall"] == 1.0


def test_tracking_metrics_misses_false_positives_and_the_threshold():
    gt, pred = _two_animals(4, swap_at=None)
    pred[1] = pred[1][:1]  # frame 1: animal 1 not found
    far = pred[2][1][1] + [0.0, 15.0]  # frame 2: animal 1 found 15 px off; its scale is small (a thin 40x10 box)
    pred[2] = [pred[2][0], (8, far)]
    m = tracking_metrics(gt, pred)  # OKS of 15 px off here is ~0: a miss plus a false positive
    assert (m["num_misses"], m["num_false_positives"], m["num_switches"]) == (2, 1, 0)
    assert m["recall"] == pytest.approx(6 / 8) and m["precision"] == pytest.approx(6 / 7)
    lenient = tracking_metrics(gt, pred, min_oks=1e-6)  # any overlap matches: only the missing one is a miss
    assert (lenient["num_misses"], lenient["num_false_positives"]) == (1, 0)


def test_tracking_metrics_refuses_bad_input():
    gt, pred = _two_animals(3, swap_at=None)
    with pytest.raises(ValueError, match="3 ground-truth frames but 2 predicted"):
        tracking_metrics(gt, pred[:2])
    with pytest.raises(ValueError, match=r"frame 1: predicted ids \[7, 7\] repeat"):
        tracking_metrics(gt, [pred[0], [(7, pred[1][0][1]), (7, pred[1][1][1])], pred[2]])
    with pytest.raises(ValueError, match="min_oks must be in"):
        tracking_metrics(gt, pred, min_oks=0)


# ----------------------------------------------------------------------------------------------- the video


def test_multi_animal_truth_has_crossings_and_an_exit(video_truth):
    truth = video_truth
    assert truth.keypoints_xy.shape == (120, 3, K, 2) and truth.inside.shape == (120, 3, K)
    kinds = {c.kind for c in truth.crossings}
    assert {"overtake", "head-on"} <= kinds, truth.crossings
    centres = truth.keypoints_xy.mean(axis=2)  # (T, M, 2)
    for c in truth.crossings:
        a, b = c.animals
        assert np.linalg.norm(centres[c.frame, a] - centres[c.frame, b]) < truth.length_px  # they really meet
    absent = np.flatnonzero(~truth.present[:, 2])  # the last animal runs out of the frame once and comes back
    assert len(absent) >= 10 and np.all(np.diff(absent) == 1) and truth.present[-1, 2], absent
    assert truth.present[:, :2].all()
    same = multi_animal_truth(seed=0)
    np.testing.assert_array_equal(same.keypoints_xy, truth.keypoints_xy)
    assert same.crossings == truth.crossings
    assert not np.allclose(multi_animal_truth(seed=1).keypoints_xy, truth.keypoints_xy)


def test_multi_animal_video_is_written_with_its_truth(tmp_path):
    video = generate_multi_animal_video(tmp_path, seed=2, num_frames=36, image_wh=(128, 96))
    truth = read_multi_animal_truth(video.truth_path)
    np.testing.assert_array_equal(truth.keypoints_xy, video.truth.keypoints_xy)
    np.testing.assert_array_equal(truth.inside, video.truth.inside)
    assert truth.crossings == video.truth.crossings and truth.image_wh == (128, 96)
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    capture = cv2.VideoCapture(str(video.video_path))
    decoded = []
    while (frame := capture.read())[0]:
        decoded.append(frame[1])
    capture.release()
    rendered = [f.image for f in render_multi_animal_frames(seed=2, num_frames=36, image_wh=(128, 96))]
    assert len(decoded) == 36 and decoded[0].shape == (96, 128, 3)
    errors = [np.abs(d.astype(int) - r).mean() for d, r in zip(decoded, rendered, strict=True)]
    assert max(errors) < 6, errors  # mp4v is lossy, but it is the same picture


def test_clean_frames_have_each_animals_body_under_its_tail_base():
    truth = multi_animal_truth(seed=0)
    colours = synthetic._multi_scene(0, 3, 120, (256, 256), -1).shape.colours
    tail_base = BODYPARTS.index("tail_base")
    checked = 0
    for t, frame in enumerate(render_multi_animal_frames(seed=0, clean=True)):
        for m in range(3):
            x, y = np.rint(frame.keypoints_xy[m, tail_base]).astype(int)
            others = np.delete(frame.keypoints_xy, m, axis=0).reshape(-1, 2)
            if not truth.inside[t, m, tail_base] or np.linalg.norm(others - (x, y), axis=1).min() < truth.length_px:
                continue  # another animal may lie over it
            np.testing.assert_array_equal(frame.image[y, x], colours["body"])
            checked += 1
    assert checked > 100  # 123 animal-frames with no other animal within a body length


# ----------------------------------------------------------------------------------------------- the tracker


def test_tracker_keeps_identities_through_crossings(video_truth, detections):
    predicted, outputs = track(detections, TrackerConfig(max_animals=3))
    m = tracking_metrics(ground_truth_frames(video_truth), predicted)
    # identities survive the overtake (same place, same heading), the head-on passes, the missed animals, the empty
    # frames and the exit of animal 2 (gone 24 frames, re-identified when it comes back): not one switch
    assert m["num_switches"] == 0, m
    assert m["idf1"] > 0.93 and m["mota"] > 0.85, m
    assert {int(i) for out in outputs for i in out.track_ids} <= {-1, 0, 1, 2}
    returned = np.flatnonzero(~video_truth.present[:, 2])[-1] + 1  # the first frame animal 2 is back
    back = [out for out in outputs[returned : returned + 5] if len(out.track_ids)]
    assert all((out.track_ids >= 0).all() for out in back)  # every pose tracked again, with ids 0..2


def _ids_of(frames, outputs, t: int) -> dict[int, int]:
    """True identity -> track id in frame ``t``."""
    return dict(zip(frames[t][0], outputs[t].track_ids.tolist(), strict=True))


def test_without_motion_the_overtake_swaps_identities(video_truth, detections):
    # The same tracker comparing each pose with where the animals were (no motion model): in the overtake the
    # fast animal's pose is as close to the slow animal's last pose as to its own, and the two swap identities.
    (overtake,) = [c for c in video_truth.crossings if c.kind == "overtake"]
    a, b = overtake.animals
    before, after = overtake.frame - 10, overtake.frame + 10
    naive, naive_out = track(detections, TrackerConfig(max_animals=3, use_motion=False))
    ids_before, ids_after = _ids_of(detections, naive_out, before), _ids_of(detections, naive_out, after)
    assert (ids_after[a], ids_after[b]) == (ids_before[b], ids_before[a])
    m_naive = tracking_metrics(ground_truth_frames(video_truth), naive)
    # one swap, two switches; motmetrics sees it a few frames late (at 62 for the swap at 57): it keeps the old
    # pairs while their OKS stays >= 0.5, and the two animals overlap for some frames after the overtake
    assert m_naive["num_switches"] == 2 and 0 <= m_naive["switch_frames"][0] - overtake.frame <= 6, m_naive
    motion, motion_out = track(detections, TrackerConfig(max_animals=3))
    assert _ids_of(detections, motion_out, after) == _ids_of(detections, motion_out, before)
    m_motion = tracking_metrics(ground_truth_frames(video_truth), motion)
    assert m_motion["idf1"] > m_naive["idf1"] + 0.2, (m_motion["idf1"], m_naive["idf1"])


def test_open_ended_tracker_gives_the_returning_animal_a_new_id(video_truth, detections):
    # Without a known number of animals nothing says the animal coming back after 24 frames is animal 2: it gets a
    # new id (one switch, at its return), and no other identity changes.
    predicted, outputs = track(detections, TrackerConfig())
    m = tracking_metrics(ground_truth_frames(video_truth), predicted)
    returned = np.flatnonzero(~video_truth.present[:, 2])[-1] + 1
    assert m["num_switches"] == 1 and returned <= m["switch_frames"][0] <= returned + 3, (m, returned)
    assert max(int(out.track_ids.max(initial=-1)) for out in outputs) == 3


def test_smoothing_brings_the_keypoints_closer_to_the_truth(video_truth, detections):
    errors = {}
    for smooth in (False, True):
        _, outputs = track(detections, TrackerConfig(max_animals=3, smooth=smooth))
        distance = []
        for t, ((animals, _, _), out) in enumerate(zip(detections, outputs, strict=True)):
            distance += [np.linalg.norm(out.keypoints_xy - video_truth.keypoints_xy[t, animals], axis=-1).ravel()]
        errors[smooth] = np.nanmean(np.concatenate(distance))
    assert errors[False] == pytest.approx(NOISE_PX * np.sqrt(np.pi / 2), rel=0.1)  # the raw noise, passed through
    # these animals never stop (up to 240 px/s), where a one-euro filter can do little: 1.80 px against 1.91
    assert errors[True] < 0.97 * errors[False], errors
    # an animal standing still is where it pays: the jitter about halves (1.03 px against 1.90)
    rng = np.random.default_rng(9)
    pose = rng.uniform(50, 150, (1, K, 2))
    noisy = pose + rng.normal(0, NOISE_PX, (90, 1, K, 2))
    tracker = Tracker(TrackerConfig(smooth=True))
    smoothed = np.stack([tracker.update(p, np.ones((1, K)), None, t).keypoints_xy for t, p in enumerate(noisy)])
    raw_error, smooth_error = (np.linalg.norm(x[30:] - pose, axis=-1).mean() for x in (noisy, smoothed))
    assert smooth_error < 0.6 * raw_error, (smooth_error, raw_error)


def test_tracker_on_the_flies_clip():
    # Real motion: SLEAP's labelled flies (two identities, 13 keypoints, 1024 px frames), test frames 1000-1499 (the
    # 39 frames where they come within 80 px are there). Labels plus 4 px noise, shuffled, 10 % of the flies missed
    # and 5 frames without any: both identities hold for all 500 frames.
    sio = pytest.importorskip("sleap_io")
    labels = sio.load_slp(str(data_path("data/sleap-flies-clip/clip.slp", full=True)))
    names = [t.name for t in labels.tracks]
    frames = sorted(labels.labeled_frames, key=lambda f: f.frame_idx)[1000:1500]
    gt = [[(names.index(i.track.name), i.numpy().astype(float)) for i in f.instances if i.track] for f in frames]
    rng = np.random.default_rng(0)
    empty = set(rng.choice(len(gt), 5, replace=False).tolist())
    tracker, predicted, missed = Tracker(TrackerConfig(max_animals=2)), [], 0
    for t, flies in enumerate(gt):
        seen = [] if t in empty else [fly for fly in rng.permutation(len(flies)) if rng.random() >= 0.1]
        missed += len(flies) - len(seen)
        keypoints = np.array([flies[i][1] for i in seen]).reshape(-1, 13, 2) + rng.normal(0, 4.0, (len(seen), 13, 2))
        scores = np.where(np.isfinite(keypoints).all(axis=-1), 0.9, 0.0)
        out = tracker.update(keypoints, scores, None, t)
        predicted.append([(int(i), keypoints[j]) for j, i in enumerate(out.track_ids) if i >= 0])
    m = tracking_metrics(gt, predicted)
    assert m["num_switches"] == 0 and m["num_false_positives"] == 0 and m["num_misses"] == missed, m
    # every found fly carries its own id the whole time: IDF1 = 2 IDTP / (truths + predictions) with IDTP = matches
    assert m["idf1"] == pytest.approx(2 * m["num_matches"] / (m["num_objects"] + m["num_predictions"])), m


def test_empty_frames_and_no_detections():
    tracker = Tracker(TrackerConfig(max_animals=2))
    out = tracker.update(np.zeros((0, K, 2)), np.zeros((0, K)), None, 0)  # nothing yet: K is not known
    assert out.track_ids.shape == (0,) and out.num_dropped == 0 and out.kept.shape == (0,)
    rng = np.random.default_rng(0)
    start = rng.uniform(50, 150, (2, 1, 2)) + rng.uniform(-10, 10, (2, K, 2))
    start[1] += 200
    ids = []
    for t in range(1, 12):
        if 5 <= t < 8:  # three frames with nothing found
            out = tracker.update(np.zeros((0, K, 2)), np.zeros((0, K)), np.zeros((0, 4)), t)
            assert out.track_ids.shape == (0,)
            continue
        out = tracker.update(start + [2.0 * t, 0.0], np.ones((2, K)), None, t)
        ids.append(out.track_ids.tolist())
    assert ids == [[0, 1]] * len(ids)  # the same animals keep their ids after the gap


def test_more_poses_than_animals_keeps_the_most_confident():
    tracker = Tracker(TrackerConfig(max_animals=2))
    keypoints = np.arange(4)[:, None, None] * 100.0 + np.random.default_rng(1).uniform(0, 30, (4, K, 2))
    scores = np.array([0.3, 0.9, 0.5, 0.8])[:, None] * np.ones((4, K))
    out = tracker.update(keypoints, scores, None, 0)
    assert out.num_dropped == 2 and out.kept.tolist() == [1, 3]
    assert out.track_ids.tolist() == [-1, 0, -1, 1]


def test_ids_stay_below_max_animals_whatever_comes():
    # poses appearing anywhere, 0 to 5 per frame: with two animals known, ids are 0 and 1 and no others
    rng = np.random.default_rng(5)
    tracker = Tracker(TrackerConfig(max_animals=2, max_age=3))
    for t in range(60):
        n = int(rng.integers(0, 6))
        keypoints = rng.uniform(0, 300, (n, 1, 2)) + rng.normal(0, 8, (n, K, 2))
        scores = rng.uniform(0, 1, (n, K))
        out = tracker.update(keypoints, scores, None, t)
        tracked = out.track_ids[out.track_ids >= 0].tolist()
        assert set(tracked) <= {0, 1} and len(set(tracked)) == len(tracked)
        usable = int((scores > tracker.config.min_keypoint_score).any(axis=1).sum())
        assert len(out.kept) == min(usable, 2) and out.num_dropped == usable - len(out.kept)


def test_nan_keypoints_and_scores():
    tracker = Tracker(TrackerConfig())
    keypoints = np.array([np.full((K, 2), np.nan), np.arange(2 * K, dtype=float).reshape(K, 2) * 5])
    keypoints[1, :2] = np.nan  # a partial pose
    scores = np.ones((2, K))
    scores[1, 2] = np.nan  # a NaN score counts as 0: that keypoint is not used
    out = tracker.update(keypoints, scores, None, 0)
    assert out.track_ids.tolist() == [-1, 0]  # nothing to track in the all-NaN pose
    np.testing.assert_array_equal(out.keypoints_xy, keypoints)  # passed through unchanged (no smoothing)
    out = tracker.update(keypoints[1:] + 1.0, np.ones((1, K)), None, 1)
    assert out.track_ids.tolist() == [0]


def test_boxes_alone_are_tracked_by_iou():
    tracker = Tracker(TrackerConfig())
    boxes = np.array([[10.0, 10.0, 40.0, 30.0], [100.0, 10.0, 40.0, 30.0]])
    no_keypoints, no_scores = np.full((2, K, 2), np.nan), np.zeros((2, K))
    for t in range(5):
        order = [1, 0] if t % 2 else [0, 1]
        out = tracker.update(no_keypoints, no_scores, boxes[order] + [3.0 * t, 0, 0, 0], t)
        assert out.track_ids.tolist() == order


def test_predict_extrapolates_constant_velocity():
    tracker = Tracker(TrackerConfig())
    pose = np.random.default_rng(2).uniform(0, 50, (1, K, 2))
    velocity = np.array([3.0, -1.5])
    for t in range(3):
        tracker.update(pose + t * velocity, np.ones((1, K)), None, t)
    ids, keypoints, scores = tracker.predict(5)
    assert ids.tolist() == [0] and scores.shape == (1, K)
    np.testing.assert_allclose(keypoints, pose + 5 * velocity, atol=1e-9)


def test_bad_input_is_refused():
    tracker = Tracker()
    with pytest.raises(ValueError, match=r"keypoints \(N, K, 2\) and scores \(N, K\)"):
        tracker.update(np.zeros((2, K, 3)), np.zeros((2, K)), None, 0)
    with pytest.raises(ValueError, match=r"boxes must be \(N, 4\) = \(2, 4\)"):
        tracker.update(np.zeros((2, K, 2)), np.ones((2, K)), np.zeros((2, 5)), 0)
    tracker.update(np.zeros((1, K, 2)), np.ones((1, K)), None, 3)
    with pytest.raises(ValueError, match="frame_index 3 does not come after the last frame 3"):
        tracker.update(np.zeros((1, K, 2)), np.ones((1, K)), None, 3)
    with pytest.raises(ValueError, match="poses have 4 keypoints, earlier frames 6"):
        tracker.update(np.zeros((1, 4, 2)), np.ones((1, 4)), None, 4)
    with pytest.raises(ValueError, match="max_animals must be a positive int"):
        TrackerConfig(max_animals=0)
    with pytest.raises(ValueError, match="velocity_gain must be in"):
        TrackerConfig(velocity_gain=0)


def test_new_track_after_waits_for_consecutive_frames():
    tracker = Tracker(TrackerConfig(new_track_after=3))
    pose = np.random.default_rng(4).uniform(0, 40, (1, K, 2))
    ids = [tracker.update(pose + t, np.ones((1, K)), None, t).track_ids.tolist() for t in range(4)]
    assert ids == [[-1], [-1], [0], [0]]


# ----------------------------------------------------------------------------------------------- helpers


def test_one_euro_filter_smooths_noise_follows_motion_and_counts_time_in_frames():
    rng = np.random.default_rng(7)
    still = 100.0 + rng.normal(0, 2.0, (200, 1, 2))
    smoother = OneEuroFilter(min_cutoff=1.0, beta=0.0, d_cutoff=1.0, fps=30.0)
    out = np.stack([smoother(x, t) for t, x in enumerate(still)])
    assert out[50:].std() < 0.5 * still[50:].std()
    moving = np.stack([[[5.0 * t, 0.0]] for t in range(60)])  # 150 px/s
    lag = {}
    for beta in (0.0, 0.5):
        smoother = OneEuroFilter(min_cutoff=1.0, beta=beta, d_cutoff=1.0, fps=30.0)
        lag[beta] = moving[-1, 0, 0] - [smoother(x, t) for t, x in enumerate(moving)][-1][0, 0]
    assert lag[0.5] < 0.2 * lag[0.0], lag  # the speed term opens the cutoff
    step = {}
    for gap in (1, 10):  # the same jump after 1 frame or after 10: the longer wait lets it move further
        smoother = OneEuroFilter(min_cutoff=1.0, beta=0.0, d_cutoff=1.0, fps=30.0)
        smoother(np.zeros((1, 2)), 0)
        step[gap] = smoother(np.full((1, 2), 10.0), gap)[0, 0]
    assert 0 < step[1] < step[10] < 10
    assert np.isnan(smoother(np.full((1, 2), np.nan), 20)).all()


def test_pose_boxes_are_predicts_refine_boxes():
    cfg = predict.PredictConfig()
    keypoints = np.random.default_rng(8).uniform(20, 90, (2, K, 2))
    scores = np.ones((2, K))
    scores[1] = 0.0  # nothing confident: no box
    boxes = pose_boxes(keypoints, scores, (192, 256), cfg)
    fallback = geometry.CropBox(0, 0, 1, 1)
    assert boxes[0] == predict.box_from_prediction(keypoints[0], scores[0], fallback, (192, 256), cfg)
    assert boxes[0] != fallback and boxes[1] is None


def test_box_iou_and_pose_area_by_hand():
    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    b = np.array([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 10.0, 10.0], [20.0, 0.0, 5.0, 5.0], [np.nan] * 4])
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0, np.nan]])
    line = np.array([[0.0, 0.0], [30.0, 0.0], [np.nan, np.nan]])
    rotated = np.array([[0.0, 0.0], [30 / np.sqrt(2), 30 / np.sqrt(2)]])
    assert pose_area(line) == pytest.approx(450.0) == pytest.approx(pose_area(rotated))  # (w² + h²) / 2: any heading
    assert np.isnan(pose_area(np.full((3, 2), np.nan)))
