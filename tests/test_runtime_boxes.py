"""Detector-free boxes of the edge runtime: the box follower on synthetic video (re-acquiring after the animal
disappears) and detector boxes from CSV."""

import numpy as np
import pytest
from test_runtime_support import INPUT_WH, STRIDE, ImageHeatmapBackend, blob_frame, metadata

from tardis_edge import geometry
from tardis_edge.runtime import BoxFollower, FollowConfig, Runner, read_boxes_csv
from tardis_edge.runtime.boxes import is_lost

FRAME_WH = (200, 150)


def _sequence():
    """12 frames: the animal walks right (0-5), is gone (6-7), reappears far away and walks up (8-11)."""
    centres = [[(40.0 + 4 * t, 50.0), (60.0 + 4 * t, 58.0)] for t in range(6)]
    centres += [None, None]
    centres += [[(150.0, 120.0 - 3 * t), (162.0, 104.0 - 3 * t)] for t in range(4)]
    return [blob_frame(FRAME_WH, c) for c in centres], centres


def _within_one_heatmap_pixel(keypoints, centres, box):
    """Per-axis error <= one heatmap pixel in image pixels (see test_runtime.test_keypoints_land_on_the_blobs)."""
    return np.abs(keypoints - np.array(centres)).max() <= STRIDE * box.width / INPUT_WH[0]


def test_follower_tracks_loses_and_reacquires():
    frames, centres = _sequence()
    backend = ImageHeatmapBackend()
    runner = Runner(backend, metadata(), decode="numpy")
    follower = runner.new_follower()
    whole = geometry.box_from_image(FRAME_WH, INPUT_WH)
    for t, (frame, truth) in enumerate(zip(frames, centres, strict=True)):
        start_box = follower.box(FRAME_WH)
        result = runner.track([frame], follower)
        if t in (0, 8):  # first frame and first frame after the loss: searched on the whole frame
            assert start_box == whole, t
        elif truth is not None:  # followed: the box starts near the animal, far smaller than the frame
            assert start_box.width < 0.5 * whole.width, t
            assert abs(start_box.cx - np.mean([p[0] for p in truth])) < 10, t
        if truth is None:
            assert result.scores.max() < 0.05 and np.isnan(result.keypoints).all() or result.scores.mean() < 0.1
            assert not follower.tracking
        else:
            assert _within_one_heatmap_pixel(result.keypoints[0], truth, result.boxes[0]), (t, result.keypoints)
            assert follower.tracking
    assert follower.lost_frames == 2 and follower.recovered_frames == 0
    # first pass + refine pass per frame, and a whole-frame search (two passes) of each empty frame that was
    # started from a followed box (frame 6; frame 7 starts whole since the animal was lost)
    assert backend.calls == 2 * len(frames) + 2


def test_batched_tracking_finds_every_frame():
    """Batches of 4: every frame of a batch starts from the box as of the previous batch, the refine pass recentres.

    Bound per axis: the first pass is within half a heatmap pixel of its (start) crop, the refine box is drawn around
    that, so a keypoint can sit that much beyond the refine crop's border pixel, plus half a heatmap pixel of the
    refine crop itself: 0.5 * stride * (start width + final width) / input width, image pixels.
    """
    frames, centres = _sequence()
    runner = Runner(ImageHeatmapBackend(), metadata(), decode="numpy", batch_size=4)
    follower = runner.new_follower()
    keypoints, scores, bounds = [], [], []
    for i in range(0, len(frames), 4):
        start = follower.box(FRAME_WH)
        result = runner.track(frames[i : i + 4], follower)
        keypoints.append(result.keypoints)
        scores.append(result.scores)
        bounds += [0.5 * STRIDE * (start.width + b.width) / INPUT_WH[0] for b in result.boxes]
    keypoints, scores = np.concatenate(keypoints), np.concatenate(scores)
    for t, truth in enumerate(centres):
        if truth is None:
            assert scores[t].mean() < 0.1, t
        else:
            assert np.abs(keypoints[t] - np.array(truth)).max() <= bounds[t], (t, keypoints[t], bounds[t])
    assert follower.tracking and follower.lost_frames == 2


def test_a_frame_the_followed_box_misses_is_searched_again_at_once():
    """The animal jumps across the frame between two frames: the followed box misses it, the same frame is searched
    whole (two passes) and found, and the follower counts it as recovered, not lost."""
    before = [(40.0, 50.0), (60.0, 58.0)]
    after = [(150.0, 120.0), (162.0, 104.0)]
    runner = Runner(ImageHeatmapBackend(), metadata(), decode="numpy")
    follower = runner.new_follower()
    runner.track([blob_frame(FRAME_WH, before)], follower)
    assert follower.tracking
    missed_box = follower.box(FRAME_WH)
    result = runner.track([blob_frame(FRAME_WH, after)], follower)
    assert abs(missed_box.cx - 50.0) < 5  # it started where the animal was
    assert _within_one_heatmap_pixel(result.keypoints[0], after, result.boxes[0])
    assert follower.recovered_frames == 1 and follower.lost_frames == 0 and follower.tracking
    assert abs(follower.box(FRAME_WH).cx - 156.0) < 5  # and follows it from there


def _cut_to_a_longer_animal():
    """A short animal (3 keypoints, 24 px) for 3 frames, then a cut to a long one (114 px) whose front two keypoints
    lie inside the box followed so far and whose third lies far outside it (frames 3-6)."""
    short = [(30.0, 30.0), (42.0, 30.0), (54.0, 30.0)]
    long = [(38.0, 34.0), (46.0, 34.0), (150.0, 110.0)]
    centres = [short] * 3 + [long] * 4
    return [blob_frame(FRAME_WH, c) for c in centres], centres


def test_a_followed_box_holding_part_of_the_animal_does_not_stay_there():
    """Keypoints that span far less than the animal's recent size (they bunched up on the part inside the box) make
    the frame doubtful: it is searched again on the whole frame and followed from there. With the check off, the box
    shrinks onto the front two keypoints and never finds the third."""
    frames, centres = _cut_to_a_longer_animal()
    names = metadata(keypoint_names=["red", "green", "blue"])
    for checks in (True, False):
        off = {} if checks else {"collapse_fraction": 0.0, "score_drop_fraction": 0.0, "min_size_fraction": 0.0}
        runner = Runner(ImageHeatmapBackend(3), names, decode="numpy", follow=FollowConfig(**off))
        follower = runner.new_follower()
        results = [runner.track([frame], follower) for frame in frames]
        found = [np.isfinite(r.keypoints[0]).all() and r.scores[0].min() > 0.2 for r in results]
        if checks:
            assert all(found), [r.scores[0] for r in results]
            for r, truth in zip(results, centres, strict=True):
                assert _within_one_heatmap_pixel(r.keypoints[0], truth, r.boxes[0])
            assert follower.recovered_frames == 1 and follower.lost_frames == 0
            assert follower.box(FRAME_WH).width > 1.25 * 112  # around the whole long animal
        else:
            assert found == [True] * 3 + [False] * 4  # the old follower: stuck on the front two keypoints
            assert follower.recovered_frames == 0 and follower.box(FRAME_WH).width < 40


def test_follower_remembers_the_animals_size_and_scores():
    cfg = FollowConfig(min_keypoints=1, smoothing=1.0, memory_frames=3, predict_motion=False)
    follower = BoxFollower(INPUT_WH, cfg)
    high = np.array([0.9, 0.9])
    long = np.array([[10.0, 10.0], [90.0, 10.0]])  # 80 px
    bunched = np.array([[10.0, 10.0], [30.0, 10.0]])  # 20 px
    assert not follower.doubtful(bunched, high)  # nothing to compare with yet
    follower.update(long, high)
    assert follower.doubtful(bunched, high)  # 20 < 0.5 * 80
    assert not follower.doubtful(long * [0.6, 1], high)  # 48 px
    assert follower.doubtful(long, high * 0.4)  # mean score 0.36 < 0.5 * 0.9
    assert follower.doubtful(long, np.zeros(2))  # lost
    # the box never gets smaller than a square of 0.8 x the recent size (80 px), padded
    floor = geometry.box_from_center_size(20.0, 10.0, 64.0, 64.0, INPUT_WH, cfg.track_padding)
    follower.update(bunched, high)
    assert follower.box(FRAME_WH) == floor
    follower.update(bunched, high)
    follower.update(bunched, high)  # three updates on: the long frame is forgotten
    assert follower.box(FRAME_WH).width == pytest.approx(
        geometry.box_from_keypoints(bunched, None, INPUT_WH, padding=cfg.track_padding).width
    )
    follower.update(long, high)
    follower.reset()  # a new box starts without memory
    follower.update(bunched, high)
    assert not follower.doubtful(bunched, high)
    with pytest.raises(ValueError, match="collapse_fraction must be in \\[0, 1\\]"):
        FollowConfig(collapse_fraction=1.5)


def test_follower_smooths_centre_and_size():
    cfg = FollowConfig(smoothing=0.25, centre_smoothing=0.5, min_keypoints=1, predict_motion=False)
    follower = BoxFollower(INPUT_WH, cfg)
    scores = np.array([0.9, 0.9])
    a = np.array([[10.0, 10.0], [50.0, 30.0]])
    b = a + [40.0, 20.0]
    follower.update(a, scores)
    first = follower.box(FRAME_WH)
    assert first == geometry.box_from_keypoints(a, None, INPUT_WH, padding=cfg.track_padding, min_size=cfg.min_size)
    follower.update(b, scores)
    target = geometry.box_from_keypoints(b, None, INPUT_WH, padding=cfg.track_padding, min_size=cfg.min_size)
    second = follower.box(FRAME_WH)
    assert second.cx == pytest.approx(0.5 * target.cx + 0.5 * first.cx)
    assert second.cy == pytest.approx(0.5 * target.cy + 0.5 * first.cy)
    assert second.width == pytest.approx(0.25 * target.width + 0.75 * first.width)


def test_follower_predicts_constant_motion():
    cfg = FollowConfig(min_keypoints=1, velocity_smoothing=1.0, max_predict_frames=3)
    follower = BoxFollower(INPUT_WH, cfg)
    scores = np.array([0.9, 0.9])
    a = np.array([[10.0, 10.0], [50.0, 30.0]])
    follower.update(a, scores)
    assert follower.box(FRAME_WH, frames_ahead=3).cx == follower.box(FRAME_WH).cx  # no velocity after one frame
    follower.update(a + [4.0, -2.0], scores)
    now = geometry.box_from_keypoints(a + [4.0, -2.0], None, INPUT_WH, padding=cfg.track_padding)
    for ahead in (1, 3, 8):
        box = follower.box(FRAME_WH, frames_ahead=ahead)
        used = min(ahead, 3)  # extrapolated at most max_predict_frames ahead
        assert (box.cx, box.cy) == pytest.approx((now.cx + 4.0 * used, now.cy - 2.0 * used))
    follower.update(np.full((2, 2), np.nan), np.zeros(2))  # lost: whole frame, motion forgotten
    assert follower.box(FRAME_WH) == geometry.box_from_image(FRAME_WH, INPUT_WH)
    follower.update(a, scores)
    assert follower.box(FRAME_WH, frames_ahead=5).cx == pytest.approx(
        geometry.box_from_keypoints(a, None, INPUT_WH, padding=cfg.track_padding).cx
    )


def test_lost_rules():
    cfg = FollowConfig(min_score=0.2, min_keypoints=2, lost_mean_score=0.1)
    kps = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    assert not is_lost(np.array([0.9, 0.5, 0.0]), kps, cfg)
    assert is_lost(np.array([0.9, 0.1, 0.0]), kps, cfg)  # one confident keypoint < 2
    assert is_lost(np.array([0.25, 0.25, -0.3]), kps, cfg)  # mean 0.067 < 0.1
    assert is_lost(np.array([0.9, 0.9, 0.9]), np.full((3, 2), np.nan), cfg)  # nothing found
    assert not is_lost(np.array([0.9]), kps[:1], cfg)  # K = 1: min_keypoints is capped at K
    with pytest.raises(ValueError, match="smoothing must be in \\(0, 1\\]"):
        FollowConfig(smoothing=0.0)


def test_read_boxes_csv(tmp_path):
    good = tmp_path / "boxes.csv"
    good.write_text("frame,x,y,w,h\n0,10,20,30,40\n7,1.5,2.5,3.5,4.5\nimg0003.png,1,2,3,4\n\n")
    assert read_boxes_csv(good) == {0: (10.0, 20.0, 30.0, 40.0), 7: (1.5, 2.5, 3.5, 4.5), "img0003.png": (1, 2, 3, 4)}
    cases = [
        ("frame,x,y,width,height\n", "header must be frame,x,y,w,h, got frame,x,y,width,height"),
        ("frame,x,y,w,h\n0,1,2,3\n", "row 2 of .* has 4 cells, expected 5"),
        ("frame,x,y,w,h\n0,1,2,3,4\n1,a,2,3,4\n", r"row 3 of .*: \['a', '2', '3', '4'\] are not all numbers"),
        (
            "frame,x,y,w,h\n0,1,2,-3,4\n",
            r"row 2 of .*: box \(x=1.0, y=2.0, w=-3.0, h=4.0\) must be finite with w, h > 0",
        ),
        ("frame,x,y,w,h\n5,1,2,3,4\n5,1,2,3,4\n", "row 3 of .*: frame 5 has a second box"),
    ]
    for i, (text, match) in enumerate(cases):
        bad = tmp_path / f"bad{i}.csv"
        bad.write_text(text)
        with pytest.raises(ValueError, match=match):
            read_boxes_csv(bad)
    with pytest.raises(FileNotFoundError, match="missing.csv does not exist; write a CSV with the header"):
        read_boxes_csv(tmp_path / "missing.csv")
