"""Video adaptation and memory replay (issue 17): the pseudo-label rules and the jitter measure on hand-built
predictions, the flip-agreement pass against the predictor it mirrors, ``python -m training.adapt`` end to end on a
tiny run (a new run folder with the original's split, the original untouched, resume, refusals, the training.full
stage), ``--init_from`` (heatmap channels by keypoint name) and memory replay (the previous model's predictions fill
exactly the keypoints a dataset lacks)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_RUN

from tardis_edge.data.sample import Sample
from training.adapt import (
    AdaptConfig,
    VideoPoses,
    held_out_frames,
    jitter_report,
    parse_frames,
    select_pseudo_labels,
    still_rows,
    transfer_rows,
)

NAMES = ("a", "b")


def poses_of(keypoints: np.ndarray, scores=None, flip_px=None, side: float = 100.0, track=None) -> VideoPoses:
    """One animal per frame (frames 0..F-1) unless ``track`` says otherwise; keypoints ``(F, K, 2)``."""
    n, k = keypoints.shape[:2]
    frames = np.arange(n) if track is None else np.repeat(np.arange(n // 2), 2)
    return VideoPoses(
        frame_index=frames,
        track=np.zeros(n, np.int64) if track is None else np.asarray(track),
        keypoints=keypoints.astype(np.float64),
        scores=np.ones((n, k), np.float32) if scores is None else np.asarray(scores, np.float32),
        flip_px=np.zeros((n, k), np.float32) if flip_px is None else np.asarray(flip_px, np.float32),
        box_xywh=np.tile([0.0, 0.0, side, side], (n, 1)),
    )


def still_mouse(frames: int = 40, wobble: float = 0.5) -> np.ndarray:
    """Two keypoints of an animal that does not move, predicted ``wobble`` px left and right on alternate frames."""
    base = np.array([[100.0, 100.0], [140.0, 100.0]])
    sign = np.where(np.arange(frames) % 2 == 0, 1.0, -1.0)[:, None, None]
    return base[None] + sign * np.array([wobble, 0.0])


def test_pseudo_label_rules_score_flip_and_temporal():
    keypoints = still_mouse(5, wobble=0.0)
    keypoints[2, 1] += [3.0, 0.0]  # b jumps 3 px on frame 2 only: 3 px from its neighbours' mean
    scores = np.ones((5, 2))
    scores[1, 0] = 0.4  # below min_score
    flip = np.zeros((5, 2))
    flip[3, 1] = 4.1  # the mirror disagrees by more than 0.04 x 100 px
    cfg = AdaptConfig(min_score=0.5, flip_tolerance=0.04, temporal_tolerance=0.02)
    keep, counts = select_pseudo_labels(poses_of(keypoints, scores, flip), cfg)
    expected = np.ones((5, 2), bool)
    expected[[0, 4]] = False  # the first and last frames have no neighbour on one side
    expected[1, 0] = expected[3, 1] = expected[2, 1] = False
    np.testing.assert_array_equal(keep, expected)
    assert counts == {"keypoints": 10, "below_min_score": 1, "flip_inconsistent": 1, "temporally_inconsistent": 5,
                      "kept": 3}  # fmt: skip
    keep, _ = select_pseudo_labels(poses_of(keypoints, scores, flip), AdaptConfig(temporal_tolerance=0.0))
    assert keep[[0, 4]].all() and keep[2, 1]  # without the temporal rule: frames 0, 4 and the 3 px step are kept
    keep, _ = select_pseudo_labels(poses_of(keypoints, scores, flip), AdaptConfig(temporal_tolerance=0.0,
                                                                                  min_keypoints=2))  # fmt: skip
    assert not keep[1].any() and not keep[3].any()  # one keypoint left is no sample when two are asked for


def test_jitter_on_still_frames_and_jumps():
    keypoints = still_mouse(40, wobble=0.5)  # every keypoint moves 1 px a frame, the centre stays
    keypoints[20:, :, 0] += np.linspace(0, 19 * 5, 20)[:, None]  # from frame 20 the animal walks 5 px a frame
    keypoints[30, 0] += [0.0, 12.0]  # one wrong snout: jumps > 10 px into frame 30 and out of it into 31
    poses = poses_of(keypoints)
    still = still_rows(poses, min_score=0.2, window=5, speed_px=1.0)
    assert still[2:18].all() and not still[24:].any() and not still[:2].any()  # frames 0, 1: no frame 2 earlier
    report = jitter_report(poses, still, 0.2, 10.0, NAMES)
    assert report["still_jitter_px"] == pytest.approx(1.0)
    assert report["still_jitter_px_per_keypoint"] == {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}
    assert report["frame_pairs"] == 39 and report["jump_share"] == pytest.approx(2 / 39)
    assert report["missing_share"] == 0.0
    scores = np.ones((40, 2))
    scores[5, 0] = 0.1  # not found: its two displacements drop out, and it counts as missing
    report = jitter_report(poses_of(keypoints, scores), still, 0.2, 10.0, NAMES)
    assert report["missing_share"] == pytest.approx(1 / 80) and report["still_jitter_px"] == pytest.approx(1.0)


def test_still_flags_carry_over_to_the_other_model_by_animal():
    two = np.stack([still_mouse(10, 0.0), still_mouse(10, 0.0) + 300.0], axis=1).reshape(20, 2, 2)  # two animals
    before = poses_of(two, track=[0, 1] * 10)
    flags = np.array([True, False] * 10)
    swapped = poses_of(two.reshape(10, 2, 2, 2)[:, ::-1].reshape(20, 2, 2), track=[5, 7] * 10)  # other ids, order
    np.testing.assert_array_equal(transfer_rows(before, flags, swapped, 0.2), [False, True] * 10)
    one = poses_of(still_mouse(10, 0.0))
    far = poses_of(still_mouse(10, 0.0) + 500.0)  # one animal a frame: the frame decides, however far apart
    np.testing.assert_array_equal(transfer_rows(one, flags[:10], far, 0.2), flags[:10])


def test_frames_and_held_out_frames(tmp_path):
    assert parse_frames("", 5) == [0, 1, 2, 3, 4] and parse_frames("1:4", 5) == [1, 2, 3]
    assert parse_frames("0:1000:250", 2000) == [0, 250, 500, 750]
    with pytest.raises(ValueError, match="must look like start:stop"):
        parse_frames("10", 20)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")

    def sample(frame, path=video):
        return Sample(f"s{frame}", None, np.zeros((2, 2), np.float32), np.ones(2, np.float32), video_path=path,
                      frame_index=frame)  # fmt: skip

    held = [sample(3), sample(4), sample(9, tmp_path / "other.mp4"), sample(5, tmp_path / "." / "clip.mp4")]
    assert held_out_frames(video, held) == {3, 4, 5}


def test_flip_agreement_pass_gives_the_predictors_keypoints(tiny_run):
    """``predict_single`` is the two-pass flip-test predictor (same keypoints, scores and boxes, bit for bit) plus the
    distance between the crop's own keypoints (as the predictor decodes one view) and its mirror image's (heatmaps
    un-mirrored by ``codec.flip_heatmaps``, decoded by the numpy decoder of the edge runtime)."""
    from kernels.predict import model_crop_runner
    from tardis_edge import geometry
    from tardis_edge.checkpoint import DeployCheckpoint
    from tardis_edge.codec import flip_heatmaps, flip_indices_from_pairs, flip_shift_px
    from tardis_edge.data.video import FrameReader
    from tardis_edge.predict import CropPrediction, PredictConfig, crop_batch, crop_keypoints, predict_frames
    from training.adapt import predict_single

    with FrameReader() as reader:
        frames = [reader.read_frame(tiny_run / "builtin-data" / "videos" / "arena2.mp4", i) for i in range(5)]
    ck = DeployCheckpoint.load(tiny_run / "model.pt")
    model = ck.build_model()
    flip = flip_indices_from_pairs(ck.schema.num_keypoints, ck.schema.flip_pairs)
    for decode in ("dark", "argmax"):
        cfg = PredictConfig(decode=decode, batch_size=2, box_min_score=0.0)
        expected, expected_scores, boxes = predict_frames(model_crop_runner(model, cfg, flip), frames, (64, 64), cfg,
                                                          flip)  # fmt: skip
        keypoints, scores, flip_px, box_xywh = predict_single(model, frames, (64, 64), cfg, flip)
        np.testing.assert_array_equal(keypoints, expected)
        np.testing.assert_array_equal(scores, expected_scores)
        np.testing.assert_array_equal(box_xywh, [b.as_xywh() for b in boxes])
    one_view = PredictConfig(decode="argmax", batch_size=2, flip_test=False)
    crops, affines = crop_batch(frames, boxes, (64, 64))
    to_image = geometry.invert_affine(affines)
    plain, _ = crop_keypoints(model_crop_runner(model, one_view), crops, to_image, one_view)

    def mirror_view(images: np.ndarray, _: np.ndarray) -> CropPrediction:
        with torch.no_grad():
            heatmaps = model(torch.from_numpy(np.ascontiguousarray(images[..., ::-1])))["heatmaps"]
        return CropPrediction(heatmaps=flip_heatmaps(heatmaps, flip, flip_shift_px(64, 16)).numpy())

    mirrored, _ = crop_keypoints(mirror_view, crops, to_image, one_view)
    np.testing.assert_allclose(flip_px, np.linalg.norm(plain - mirrored, axis=-1), rtol=0, atol=1e-3)
    assert flip_px.max() > 1.0  # a one-epoch model disagrees with itself: the measure is not always 0


# ---------------------------------------------------------------- end to end on a tiny run
LOOSE = ["--adapt.min_score=0", "--adapt.flip_tolerance=1000", "--adapt.temporal_tolerance=1000",
         "--adapt.train_every=2", "--adapt.epochs=1", "--adapt.batch_size=4"]  # fmt: skip


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """TINY_RUN without stage 1, one keypoint epoch, adapted by its adapt stage (training.full --adapt.videos) to the
    built-in video (8 frames): ``<run>`` and ``<run>-adapted``. The model is weak: the pseudo-label rules are opened
    wide."""
    from training.full import main as train_main

    run = tmp_path_factory.mktemp("adapt") / "run"
    video = run / "builtin-data" / "videos" / "arena2.mp4"
    argv = [*TINY_RUN, "--data.builtin_unlabelled=8", "--skip_distill=true", "--keypoints.epochs=1",
            f"--adapt.videos={video}", f"--out={run}"]  # fmt: skip
    assert train_main([*argv, *LOOSE]) == 0
    return run


def test_adapt_stage_writes_a_new_run_that_keeps_the_split(tiny_run):
    from tardis_edge.checkpoint import DeployCheckpoint

    adapted = tiny_run.with_name("run-adapted")
    original, new = DeployCheckpoint.load(tiny_run / "model.pt"), DeployCheckpoint.load(adapted / "model.pt")
    assert new.split == original.split and new.schema == original.schema and new.input_size == original.input_size
    assert json.loads((adapted / "split.json").read_text())["test"] == original.split["test"]
    assert any(not torch.equal(new.model[k], original.model[k]) for k in original.model)  # it was fine-tuned
    config = yaml.safe_load((adapted / "config.yaml").read_text())
    assert config["adapt"]["source"] == str(tiny_run.resolve()) and config["adapt"]["epochs"] == 1
    assert config["data"]["path"] == str((tiny_run / "builtin-data").resolve())
    report = json.loads((adapted / "adapt_report.json").read_text())
    (video,) = report["videos"]
    assert video["frames"] == 8 and video["frames_held_out"] == 0
    assert video["training_samples"] == 3  # frames 0, 2, 4, 6 of 8; frame 0 has no previous frame (temporal rule)
    fine_tune = {k: v for k, v in report["fine_tune"].items() if k != "seconds_training"}
    assert fine_tune == {"epochs": 1, "lr": 2e-4, "batch_size": 4, "seed": 0, "pseudo_samples": 3,
                         "labelled_samples": 8}  # fmt: skip
    assert report["fine_tune"]["seconds_training"] > 0 and video["predict_before"]["frames"] == 8
    assert report["test_before"]["rmse_px"] == json.loads((tiny_run / "metrics_test.json").read_text())["rmse_px"]
    assert report["test_after"]["rmse_px"] == json.loads((adapted / "metrics_test.json").read_text())["rmse_px"]
    for key in ("jitter_before", "jitter_after"):
        assert video[key]["rows"] == 8 and video[key]["frame_pairs"] <= 7
    before = VideoPoses.load(adapted / "adapt" / "00-arena2.before.npz")
    assert before.keypoints.shape == (8, 6, 2) and (before.frame_index == np.arange(8)).all()


def test_adapt_cli_resumes_refuses_and_never_touches_the_original(tiny_run, tmp_path, capsys):
    from training.adapt import cli

    video = tiny_run / "builtin-data" / "videos" / "arena2.mp4"
    kept = {p.name: digest(p) for p in tiny_run.glob("*.pt")}
    adapted = tiny_run.with_name("run-adapted")
    weights = digest(adapted / "keypoints_last.pt")
    assert cli([str(tiny_run), str(video), *LOOSE, "--threads=1"]) == 0  # the same adaptation: already finished
    assert digest(adapted / "keypoints_last.pt") == weights
    capsys.readouterr()
    assert cli([str(tiny_run), str(video), *LOOSE, "--adapt.epochs=2"]) == 2
    assert "holds another run or adaptation (adapt.epochs: 1 -> 2)" in capsys.readouterr().err
    assert cli([str(tiny_run), str(video), *LOOSE, f"--out={tiny_run}"]) == 2
    assert "is the run being adapted" in capsys.readouterr().err
    assert cli([str(tiny_run), str(tmp_path / "none.mp4")]) == 2
    assert "none.mp4 does not exist" in capsys.readouterr().err
    assert cli([str(tiny_run), str(video), "--adapt.colour=red"]) == 2
    assert "unknown config key(s) adapt.colour" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        cli([str(tiny_run), str(video), "--epochs=3"])
    assert stop.value.code == 2 and "adapt options are --adapt.KEY=VALUE" in capsys.readouterr().err
    assert {p.name: digest(p) for p in tiny_run.glob("*.pt")} == kept


def test_adapt_resumes_a_killed_fine_tune(tiny_run, tmp_path):
    """A second adaptation into another folder, stopped after its predictions: the rerun reads them back."""
    from training.adapt import main

    video = tiny_run / "builtin-data" / "videos" / "arena2.mp4"
    out = tmp_path / "second"
    argv = [str(tiny_run), str(video), *LOOSE, "--adapt.frames=0:6", f"--out={out}"]
    assert main(argv) == 0
    predictions = digest(out / "adapt" / "00-arena2.before.npz")
    (out / "stages" / "adapt.done.json").unlink()  # as if killed after training, before the report
    (out / "adapt" / "00-arena2.after.npz").unlink()
    assert main(argv) == 0
    assert digest(out / "adapt" / "00-arena2.before.npz") == predictions
    report = json.loads((out / "adapt_report.json").read_text())
    assert report["videos"][0]["frames"] == 6 and report["videos"][0]["jitter_after"]["rows"] == 6


def test_init_from_matches_heatmap_channels_by_name(tiny_run):
    from tardis_edge.checkpoint import DeployCheckpoint
    from tardis_edge.models import build_model
    from training.adapt import load_init_weights

    ck = DeployCheckpoint.load(tiny_run / "model.pt")
    names = ("tail_tip", "new_point", "snout")
    config = dict(ck.model_config, num_keypoints=len(names))
    torch.manual_seed(0)
    model = build_model(config)
    fresh = model.head.final.weight[1].detach().clone()
    assert load_init_weights(model, tiny_run, names) == ["tail_tip", "snout"]
    state = model.state_dict()
    for ours, theirs in ((0, ck.schema.names.index("tail_tip")), (2, ck.schema.names.index("snout"))):
        assert torch.equal(state["head.final.weight"][ours], ck.model["head.final.weight"][theirs])
        assert torch.equal(state["head.final.bias"][ours], ck.model["head.final.bias"][theirs])
    assert torch.equal(state["head.final.weight"][1], fresh)  # a keypoint the run does not know starts fresh
    assert all(torch.equal(state[k], v) for k, v in ck.model.items() if not k.startswith("head.final."))
    other = build_model(dict(config, backbone="resnet18"))
    with pytest.raises(ValueError, match="does not fit this one .* set --model.backbone"):
        load_init_weights(other, tiny_run, names)


def test_memory_replay_fills_only_the_keypoints_a_dataset_lacks(tiny_run):
    from tardis_edge.checkpoint import DeployCheckpoint
    from tardis_edge.codec import flip_indices_from_pairs
    from tardis_edge.config import from_dict
    from tardis_edge.data import load_dataset
    from tardis_edge.data.dataset import read_sample_image
    from tardis_edge.data.keypoint_map import ABSENT
    from tardis_edge.predict import PredictConfig
    from training.adapt import memory_replay, predict_single

    dataset = load_dataset(tiny_run / "builtin-data")
    names = dataset.schema.names
    samples = []
    for i, s in enumerate(dataset.samples[:3]):
        visible = s.visible.copy()
        visible[names.index("tail_tip")] = 0  # all three lack the tail tip; sample 1 also leaves its neck unlabelled
        if i == 1:
            visible[names.index("neck")] = 0
        xy = np.where(visible[:, None] > 0, s.keypoints_xy, np.nan).astype(np.float32)
        samples.append(Sample(s.sample_id, s.image_path, xy, visible, image_wh=s.image_wh,
                              extra={ABSENT: (names.index("tail_tip"),)}))  # fmt: skip
    loose = AdaptConfig(min_score=0.0, flip_tolerance=1e6)
    replayed, counts = memory_replay(samples, tiny_run, names, None, loose)
    assert counts["replayed_samples"] == 3 and counts["replayed_keypoints"] == 3
    ck = DeployCheckpoint.load(tiny_run / "model.pt")
    cfg = from_dict(PredictConfig, ck.predict)
    flip = flip_indices_from_pairs(len(names), ck.schema.flip_pairs)
    model = ck.build_model()
    tail = names.index("tail_tip")
    for before, after in zip(samples, replayed, strict=True):
        keypoints, _, _, _ = predict_single(model, [read_sample_image(before)], ck.input_size, cfg, flip)
        np.testing.assert_allclose(after.keypoints_xy[tail], keypoints[0, tail], rtol=0, atol=1e-4)
        assert after.visible[tail] == 1.0 and after.extra["replayed_keypoints"] == (tail,)
        others = [k for k in range(len(names)) if k != tail]
        np.testing.assert_array_equal(after.visible[others], before.visible[others])  # labels and gaps stay
    assert np.isnan(replayed[1].keypoints_xy[names.index("neck")]).all()  # not absent from the dataset: not replayed
    strict = AdaptConfig(min_score=0.0, flip_tolerance=1e-6)  # the model misses the labelled keypoints by pixels
    replayed, counts = memory_replay(samples, tiny_run, names, None, strict)
    assert counts["replayed_samples"] == 0 and counts["rejected_samples_other_animal"] == 3
    assert all(r is s for r, s in zip(replayed, samples, strict=True))


def test_memory_replay_needs_init_from(tiny_run, tmp_path, capsys):
    from training.full import cli

    argv = [*TINY_RUN, "--skip_distill=true", "--keypoints.memory_replay=true", f"--out={tmp_path / 'r'}"]
    assert cli(argv) == 2
    assert "memory_replay=true needs --init_from=RUN" in capsys.readouterr().err


def test_benchmark_script_records_jitter_and_test_metrics(tiny_run, tmp_path):
    """benchmarks/adapt_openfield.py on the tiny run's finished adaptation: what the result file records."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("adapt_openfield", Path(__file__).parents[1] / "benchmarks" /
                                                  "adapt_openfield.py")  # fmt: skip
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    video = tiny_run / "builtin-data" / "videos" / "arena2.mp4"
    adapted = tiny_run.with_name("run-adapted")
    out = tmp_path / "adapt.json"
    argv = ["--run", str(tiny_run), "--video", str(video), "--out", str(adapted), "--result", str(out), *LOOSE]
    record = script.main(argv)
    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    assert {"command", "git_sha", "machine", "load_average_1_5_15min"} <= set(record["measured"])
    (row,) = record["videos"]
    assert row["before"] == json.loads((adapted / "adapt_report.json").read_text())["videos"][0]["jitter_before"]
    assert [r["still_speed_px"] for r in row["still_speed_sensitivity"]] == [0.5, 1.0, 2.0]
    assert record["test"]["rmse_px"]["change"] == pytest.approx(
        record["test"]["rmse_px"]["after"] - record["test"]["rmse_px"]["before"]
    )


@pytest.mark.slow  # about 10 s (a pose + finder training and two multi-animal passes), and the full flies clip
def test_multi_animal_run_pseudo_labels_every_animal_on_train_frames_only(tmp_path):
    """A tiny flies run (pose + finder, 64 px, one epoch each) adapted to clip.mp4 frames 990-1009: its test frames
    1000-1005 are held out; every fly found is predicted, linked by the tracker, and the finder is kept."""
    from conftest import TINY_MULTI_RUN, data_path

    from training.adapt import main as adapt_main
    from training.full import main as train_main

    clip = data_path("data/sleap-flies-clip/clip.slp", full=True)
    run = tmp_path / "flies"
    assert train_main([a.format(clip=clip) for a in TINY_MULTI_RUN] + [f"--out={run}"]) == 0
    out = tmp_path / "flies-adapted"
    argv = [str(run), str(clip.with_suffix(".mp4")), *LOOSE, "--adapt.frames=990:1010", "--adapt.train_every=1",
            "--threads=1", f"--out={out}"]  # fmt: skip
    assert adapt_main(argv) == 0
    report = json.loads((out / "adapt_report.json").read_text())
    (video,) = report["videos"]
    assert video["frames"] == 20 - 6 and video["frames_held_out"] == 6
    before = VideoPoses.load(out / "adapt" / "00-clip.before.npz")
    assert set(before.frame_index) <= set(range(990, 1000)) | set(range(1006, 1010))
    per_frame = np.bincount(before.frame_index)
    assert per_frame.max() == 2 and (before.track >= 0).mean() > 0.9  # up to two flies a frame, linked by the tracker
    assert "tracking_idf1" in report["test_after"] and "tracking_idf1" in report["test_before"]
    from tardis_edge.checkpoint import DeployCheckpoint

    original, adapted = DeployCheckpoint.load(run / "model.pt"), DeployCheckpoint.load(out / "model.pt")
    assert adapted.finder is not None and adapted.split == original.split
    assert all(torch.equal(adapted.finder["model"][k], v) for k, v in original.finder["model"].items())


def test_the_adapted_run_exports_like_any_other(tiny_run, tmp_path):
    """tardis-export on the adapted run: the FP32 graph checked against PyTorch on the original test part."""
    from export.cli import main as export_main

    adapted = tiny_run.with_name("run-adapted")
    assert export_main([str(adapted), "--out", str(tmp_path / "export"), "--min-agreement", "0"]) == 0
    verification = json.loads((tmp_path / "export" / "verification.json").read_text())
    split = json.loads((tmp_path / "export" / "split.json").read_text())
    assert split["test"] == json.loads((tiny_run / "split.json").read_text())["test"]
    deviation = verification["artifacts"]["fp32"]["deviation"]
    assert deviation["keypoints"] == 2 * 6 and deviation["max_px"] < 0.05  # the 2 test frames, 6 keypoints each
