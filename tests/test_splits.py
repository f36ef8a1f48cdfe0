"""Splits (``tardis_edge.splits``) and what training does with them: the test part reaches only the final
evaluation, the validation part alone chooses a checkpoint, and nothing is decided by a path name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN, data_path
from openfield_split import openfield_split_config

from tardis_edge.data import load_dataset
from tardis_edge.splits import Split, SplitConfig, SplitError, resolve_split

OPENFIELD = "data/openfield-Pranav-2018-10-30"
TINY = [*TINY_RUN, "--keypoints.time_budget_s=0", "--distill.time_budget_s=0", "--skip_distill=true"]


@pytest.fixture(scope="module")
def subset():
    """The committed openfield subset (10 frames, file order)."""
    return load_dataset(data_path(OPENFIELD))


@pytest.fixture(scope="module")
def ap10k():
    return load_dataset(data_path("data/mmpose-fixtures") / "ap10k" / "test_ap10k.json")


def _parts_are_a_partition(dataset, split: Split) -> None:
    ids = split.train + split.val + split.test
    assert sorted(ids) == sorted(dataset.sample_ids) and len(set(ids)) == len(ids)


def test_openfield_fixed_split_comes_from_its_config(openfield_dir):
    dataset = load_dataset(openfield_dir)
    split = resolve_split(dataset, openfield_split_config())
    assert split.sizes() == {"train": 95, "val": 0, "test": 21}
    assert split.train[0].endswith("img0000.png") and split.train[-1].endswith("img0094.png")
    assert split.test[0].endswith("img0095.png") and split.test[-1].endswith("img0115.png")
    _parts_are_a_partition(dataset, split)


def test_no_split_is_keyed_on_the_path(tmp_path, subset):
    """A project whose folder is called "openfield" gets the configured default (fraction), nothing special."""
    copy = tmp_path / "my-openfield-project"
    shutil.copytree(data_path(OPENFIELD), copy)
    dataset = load_dataset(copy)
    split = resolve_split(dataset, SplitConfig())
    assert split.sizes() == {"train": 8, "val": 0, "test": 2} and split.describe.startswith("fraction")
    assert split.test == dataset.sample_ids[-2:]


@pytest.mark.parametrize(
    "config,sizes",
    [
        (SplitConfig(train_fraction=0.6, val_fraction=0.2), {"train": 6, "val": 2, "test": 2}),
        (SplitConfig(train_fraction=1.0), {"train": 10, "val": 0, "test": 0}),
        (SplitConfig(method="names", test=["img0095.png", "img01*.png"], val=["img0050"]), {"train": 5, "val": 1,
                                                                                            "test": 4}),
        (SplitConfig(method="ranges", test=["8:"], val=["0:1"]), {"train": 7, "val": 1, "test": 2}),
        (SplitConfig(method="folders", val=["m4s1"]), None),
    ],
)  # fmt: skip
def test_split_methods(subset, config, sizes):
    if sizes is None:
        with pytest.raises(SplitError, match="nothing is left to train on"):
            resolve_split(subset, config)
        return
    split = resolve_split(subset, config)
    assert split.sizes() == sizes
    _parts_are_a_partition(subset, split)


def test_split_file_round_trip_and_errors(tmp_path, subset):
    split = resolve_split(subset, SplitConfig(train_fraction=0.5, val_fraction=0.2))
    split.write(tmp_path / "split.json")
    again = resolve_split(subset, SplitConfig(method="file", file=str(tmp_path / "split.json")))
    assert (again.train, again.val, again.test) == (split.train, split.val, split.test)
    partial = {"train": split.train, "test": split.test}  # the validation samples are in no part
    (tmp_path / "partial.json").write_text(json.dumps(partial))
    with pytest.raises(SplitError, match=r"partial.json: 2 sample\(s\) of .* are in no part"):
        resolve_split(subset, SplitConfig(method="file", file=str(tmp_path / "partial.json")))
    with pytest.raises(SplitError, match=r"'nope\*.png' matches no image of .*sample ids look like"):
        resolve_split(subset, SplitConfig(method="names", test=["nope*.png"]))
    with pytest.raises(SplitError, match="use one of fraction, names"):
        resolve_split(subset, SplitConfig(method="openfield"))


def test_tiny_data_splits_sensibly_or_names_the_option(ap10k):
    two = resolve_split(ap10k, SplitConfig())
    assert two.sizes() == {"train": 1, "val": 0, "test": 1}
    with pytest.raises(SplitError, match=r"has 1 image\(s\).*--data.split.train_fraction=1.0"):
        resolve_split(ap10k.subset([0]), SplitConfig())
    with pytest.raises(SplitError, match="and --data.split.val_fraction=0"):
        resolve_split(ap10k, SplitConfig(train_fraction=0.6, val_fraction=0.2))


class _Seen:
    """Sample ids that reach each use inside training.full."""

    def __init__(self, monkeypatch):
        import training.full
        import training.keypoints

        self.train: set[str] = set()
        self.during_training: list[list[str]] = []
        self.final: list[list[str]] = []
        dataset_init = training.keypoints.KeypointDataset.__init__
        evaluate = training.keypoints.evaluate_model

        def record_train(obj, samples, *args, **kwargs):
            self.train |= {s.sample_id for s in samples}
            dataset_init(obj, samples, *args, **kwargs)

        def record_during(model, samples, *args, **kwargs):
            self.during_training.append([s.sample_id for s in samples])
            return evaluate(model, samples, *args, **kwargs)

        def record_final(model, samples, *args, **kwargs):
            self.final.append([s.sample_id for s in samples])
            return evaluate(model, samples, *args, **kwargs)

        monkeypatch.setattr(training.keypoints.KeypointDataset, "__init__", record_train)
        monkeypatch.setattr(training.keypoints, "evaluate_model", record_during)
        monkeypatch.setattr(training.full, "evaluate_model", record_final)


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_no_validation_part_trains_without_test_frames_and_keeps_the_last(tmp_path, monkeypatch):
    from training.full import main

    seen = _Seen(monkeypatch)
    run = tmp_path / "run"
    assert main([f"--out={run}", "--keypoints.epochs=3", "--keypoints.eval_every=1", *TINY]) == 0
    split = Split.read(run / "split.json")
    assert split.sizes() == {"train": 8, "val": 0, "test": 2}
    assert seen.train == set(split.train), "training saw a sample outside the train part"
    assert seen.during_training == [], "something was evaluated during training although there is no validation part"
    assert seen.final == [split.test]
    assert not (run / "keypoints_best.pt").exists()
    assert _same_weights(_weights(run / "model.pt"), _weights(run / "keypoints_last.pt"))
    saved = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    assert saved["split"]["test"] == split.test


def test_validation_part_alone_chooses_the_best_checkpoint(tmp_path, monkeypatch):
    from training.full import main

    seen = _Seen(monkeypatch)
    run = tmp_path / "run"
    args = [f"--out={run}", "--keypoints.epochs=4", "--keypoints.eval_every=1", "--data.split.train_fraction=0.6",
            "--data.split.val_fraction=0.2", *TINY]  # fmt: skip
    assert main(args) == 0
    split = Split.read(run / "split.json")
    assert split.sizes() == {"train": 6, "val": 2, "test": 2}
    assert seen.train == set(split.train)
    assert seen.during_training and all(ids == split.val for ids in seen.during_training)
    assert seen.final == [split.test]
    history = json.loads((run / "keypoints_history.json").read_text())
    best_epoch = min(history, key=lambda row: row["rmse_px"])["epoch"]
    best = torch.load(run / "keypoints_best.pt", map_location="cpu", weights_only=True)
    assert best["epoch"] == best_epoch
    assert _same_weights(_weights(run / "model.pt"), best["model"])


def test_best_without_validation_part_is_refused(tmp_path):
    from training.full import main

    with pytest.raises(ValueError, match="final_checkpoint=best needs a validation part"):
        main([f"--out={tmp_path / 'run'}", "--keypoints.epochs=1", "--keypoints.final_checkpoint=best", *TINY])


def test_rerun_with_another_config_is_refused_or_moved_aside(tmp_path):
    """A finished run is never re-evaluated or overwritten under another recipe (issue 13, finding 1)."""
    from training.full import main

    run = tmp_path / "run"
    assert main([f"--out={run}", "--keypoints.epochs=1", *TINY]) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(
        ValueError, match=r"another config \(data.heatmap_size: 16 -> 24; data.input_size: 64 -> 96\).*--new_run=true"
    ):
        main([f"--out={run}", "--keypoints.epochs=1", *TINY, "--data.input_size=96", "--data.heatmap_size=24"])
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert main([f"--out={run}", "--keypoints.epochs=1", *TINY, "--threads=2"]) == 0  # harmless change: resumes
    finished = (run / "model.pt").read_bytes()
    assert (
        main([f"--out={run}", "--keypoints.epochs=1", *TINY, "--data.split.train_fraction=0.5", "--new_run=true"]) == 0
    )
    (aside,) = tmp_path.glob("run.prev-*")
    assert (
        Split.read(aside / "split.json").sizes()["train"] == 8 and Split.read(run / "split.json").sizes()["train"] == 5
    )
    assert (aside / "model.pt").read_bytes() == finished


def test_changed_data_under_the_same_config_is_refused(tmp_path, subset):
    """The split is resolved once: data that now splits differently is refused even when the config is the same."""
    from training.full import main

    project = tmp_path / "project"
    shutil.copytree(data_path(OPENFIELD), project)
    run = tmp_path / "run"
    args = [f"--out={run}", f"--data={project}", "--keypoints.epochs=1", "--data.input_size=64",
            "--data.heatmap_size=16", "--model.backbone=repvgg_a0", "--keypoints.predict.flip_test=false",
            "--skip_distill=true", "--threads=1"]  # fmt: skip
    assert main(args) == 0
    labels = project / "labeled-data" / "m4s1" / "CollectedData_Pranav.csv"
    lines = labels.read_text().splitlines(keepends=True)
    labels.write_text("".join(lines[:-1]))  # the last labelled frame removed
    (project / "labeled-data" / "m4s1" / "CollectedData_Pranav.h5").unlink()
    with pytest.raises(SplitError, match="this run was split differently.*new --out folder"):
        main(args)


def test_two_image_coco_file_trains(tmp_path, ap10k):
    from training.full import main

    run = tmp_path / "run"
    coco = data_path("data/mmpose-fixtures") / "ap10k" / "test_ap10k.json"
    args = [f"--out={run}", f"--data={coco}", "--keypoints.epochs=1", "--data.input_size=64", "--data.heatmap_size=16",
            "--model.backbone=repvgg_a0", "--keypoints.predict.flip_test=false", "--skip_distill=true",
            "--threads=1"]  # fmt: skip
    assert main(args) == 0
    assert Split.read(run / "split.json").sizes() == {"train": 1, "val": 0, "test": 1}
    assert json.loads((run / "metrics_test.json").read_text())["num_samples"] == 1
