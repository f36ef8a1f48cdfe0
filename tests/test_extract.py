"""Unlabelled-frame sampling and ``python -m training.extract`` end to end on the openfield project."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tardis_edge import geometry
from tardis_edge.data.crops import CropConfig, sample_box
from tardis_edge.data.video import (
    FrameReader,
    frame_indices,
    sample_image_folder,
    sample_video_frames,
    unlabelled_samples,
)
from tardis_edge.feature_cache import ExtractConfig, FeatureCache, teacher_crop_box
from training.extract import main, run_extract


def test_frame_indices():
    assert frame_indices(10, count=5) == [1, 3, 5, 7, 9]  # centres of 5 equal segments
    assert frame_indices(2330, count=4) == [291, 873, 1456, 2038]
    assert frame_indices(10, step=4) == [0, 4, 8]
    assert frame_indices(3, count=8) == [0, 1, 2]
    with pytest.raises(ValueError, match="either a frame count or a frame step"):
        frame_indices(10, count=2, step=2)
    with pytest.raises(ValueError, match="frame step must be >= 1, got 0"):
        frame_indices(10, step=0)
    with pytest.raises(ValueError, match="source with 0 frames"):
        frame_indices(0, count=1)


@pytest.fixture(scope="module")
def video(openfield_dir):
    return openfield_dir / "videos" / "m3v1mp4.mp4"


def test_video_frames_are_read_lazily_and_exactly(video):
    samples = sample_video_frames(video, count=80, num_keypoints=4)
    assert len(samples) == 80
    first = samples[0]
    assert first.sample_id == "videos/m3v1mp4.mp4#000014" and first.frame_index == 14
    assert not first.labelled and first.image_path is None and first.image_wh == (640, 480)
    assert first.keypoints_xy.shape == (4, 2) and np.isnan(first.keypoints_xy).all() and not first.visible.any()
    # reference: decode the video sequentially with OpenCV
    capture = cv2.VideoCapture(str(video))
    reference = {}
    for index in range(samples[2].frame_index + 1):
        ok, frame = capture.read()
        assert ok
        reference[index] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    capture.release()
    with FrameReader() as reader:
        for sample in samples[:3]:  # forward reads
            np.testing.assert_array_equal(reader.read(sample), reference[sample.frame_index])
        np.testing.assert_array_equal(reader.read(samples[1]), reference[samples[1].frame_index])  # backward: seek
        with pytest.raises(ValueError, match=r"frame 99999 of video .*m3v1mp4.mp4 cannot be read"):
            reader.read_frame(video, 99999)


def test_user_box_is_the_crop_and_whole_frames_keep_their_aspect(video, tmp_path):
    cfg = ExtractConfig(resolution=224)
    whole = sample_video_frames(video, count=1)[0]
    box = teacher_crop_box(whole, cfg, (640, 480))
    assert (box.cx, box.cy, box.width, box.height) == (319.5, 239.5, 640.0, 640.0)
    boxed = sample_video_frames(video, count=1, box_xywh=(100, 50, 200, 300))[0]
    box = teacher_crop_box(boxed, cfg, (640, 480))  # no padding: the user's box is the crop
    assert (box.cx, box.cy, box.width, box.height) == (200.0, 200.0, 300.0, 300.0)
    with pytest.raises(ValueError, match=r"crop box \[700, 0, 10, 10\] .* overlap the frame of the 640x480 frames"):
        sample_video_frames(video, count=1, box_xywh=(700, 0, 10, 10))


def test_image_folders_and_bad_paths(tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"s{i}.png"), np.full((30, 40, 3), i * 40, dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image")
    samples = sample_image_folder(folder, step=2)
    assert [s.sample_id for s in samples] == ["shots/s0.png", "shots/s2.png", "shots/s4.png"]
    with FrameReader() as reader:
        assert reader.read(samples[1]).shape == (30, 40, 3) and reader.read(samples[1])[0, 0, 0] == 80
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty holds no images"):
        sample_image_folder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="missing.mp4 does not exist"):
        unlabelled_samples([tmp_path / "missing.mp4"])
    with pytest.raises(ValueError, match="notes.txt is neither a video"):
        unlabelled_samples([folder / "notes.txt"])


def test_extract_cli_end_to_end(openfield_dir, video, tmp_path, capsys):
    cache = tmp_path / "features"
    args = ["--data", str(openfield_dir), "--videos", str(video), "--frames-per-video", "3"]
    args += ["--random-teacher", "vits14", "--depth", "1", "--resolution", "56", "--batch-size", "16"]
    args += ["--cache", str(cache), "--device", "cpu", "--no-progress", "--pca-samples", "3"]
    summary = main(args)
    out = capsys.readouterr().out
    assert "RANDOM vits14 teacher" in out and "crops/s" in out
    assert summary["samples"] == 116 + 3 and summary["computed"] == 119 and summary["reused"] == 0
    assert summary["map_shape"] == [384, 4, 4] and summary["random_teacher"] and summary["crops_per_s"] > 0
    picture = cv2.imread(summary["pca_picture"])
    assert picture is not None and picture.shape[1] == 2 * 224 and picture.shape[0] >= 3 * 224

    # the cached crop box of a labelled frame is the student's box (same centre and size, other resolution)
    from tardis_edge.data import load_dataset

    sample = load_dataset(openfield_dir).samples[5]
    entry = FeatureCache(cache).read(sample.sample_id)
    student_box = sample_box(sample, CropConfig())
    np.testing.assert_allclose(entry.box, [student_box.cx, student_box.cy, student_box.width, student_box.height])
    np.testing.assert_allclose(entry.affine, geometry.crop_affine(student_box, (56, 56)))

    # a second run finds everything cached; another teacher is refused with the fix in the message
    assert main(args)["computed"] == 0
    frames_only = [a for a in args if a not in ("--data", str(openfield_dir))]  # the check comes before any work
    with pytest.raises(ValueError, match="seed 1.*fingerprint.*Pass --rebuild"):
        main([*frames_only, "--seed", "1"])
    capsys.readouterr()


def test_teacher_choice_errors(tmp_path):
    with pytest.raises(ValueError, match="no teacher: pass --teacher PATH .* or --random-teacher VARIANT"):
        run_extract(ExtractConfig(videos=(tmp_path,), cache=tmp_path / "c"))
    both = ExtractConfig(teacher=tmp_path / "t.pth", random_teacher="vits14", cache=tmp_path / "c")
    with pytest.raises(ValueError, match="either a teacher checkpoint .* not both"):
        run_extract(both)
    with pytest.raises(ValueError, match="nothing to extract: pass --data"):
        run_extract(ExtractConfig(random_teacher="vits14", depth=1, cache=tmp_path / "c", device="cpu"))
    with pytest.raises(ValueError, match="resolution 100 is not a multiple of the patch size 14; use e.g. 98"):
        ExtractConfig(resolution=100).geometry_record(14)


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--data", "--videos", "--frames-per-video", "--teacher", "--random-teacher", "--resolution"):
        assert option in text
    for option in ("--batch-size", "--cache", "--rebuild", "--device", "--depth"):
        assert option in text
