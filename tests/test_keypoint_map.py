"""One keypoint space across datasets (issue 17, must-show 2): a keypoint map remaps DeepLabCut and COCO samples into
one list, keypoints a dataset does not label are unlabelled (weight 0), and such a keypoint gets exactly zero gradient
from that dataset's samples — checked on the loss's gradient with respect to the heatmap outputs and on the head's
weights — while two datasets with different keypoint subsets train one model through ``training.full``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tardis_edge.data import load_dataset
from tardis_edge.data.keypoint_map import ABSENT, is_keypoint_map, read_keypoint_map
from tardis_edge.data.synthetic import BODYPARTS, generate_synthetic_project


def write_map(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory, openfield_subset_dir: Path, fixtures_dir: Path) -> Path:
    """A map of the openfield subset (DeepLabCut) without its tailbase and AP-10K's fixture (COCO) with only four of its
    seventeen keypoints."""
    folder = tmp_path_factory.mktemp("map")
    return write_map(
        folder / "map.yaml",
        {
            "keypoints": ["snout", "leftear", "rightear", "tailbase"],
            "datasets": [
                {"path": str(openfield_subset_dir), "keypoints": {"snout": "snout", "leftear": "leftear",
                                                                  "rightear": "rightear"}},
                {"path": str(fixtures_dir / "ap10k/test_ap10k.json"), "name": "ap10k",
                 "keypoints": {"nose": "snout", "left_eye": "leftear", "right_eye": "rightear",
                               "root_of_tail": "tailbase"}},
            ],
        },
    )  # fmt: skip


def test_samples_are_remapped_into_the_unified_list(two_sources, openfield_subset_dir, fixtures_dir):
    mapped = load_dataset(two_sources)
    openfield = load_dataset(openfield_subset_dir)
    ap10k = load_dataset(fixtures_dir / "ap10k/test_ap10k.json")
    assert mapped.schema.names == ("snout", "leftear", "rightear", "tailbase")
    assert mapped.schema.flip_pairs == ((1, 2),)
    assert len(mapped) == len(openfield) + len(ap10k)
    first = mapped.samples[0]
    assert first.sample_id == f"{openfield_subset_dir.name}:{openfield.samples[0].sample_id}"
    np.testing.assert_array_equal(first.keypoints_xy[:3], openfield.samples[0].keypoints_xy[:3])
    assert np.isnan(first.keypoints_xy[3]).all() and first.visible[3] == 0 and first.extra[ABSENT] == (3,)
    names = ap10k.schema.names
    for ours, theirs in zip(mapped.samples[len(openfield) :], ap10k.samples, strict=True):
        assert ours.sample_id == f"ap10k:{theirs.sample_id}" and ours.extra[ABSENT] == ()
        for unified, source in enumerate(("nose", "left_eye", "right_eye", "root_of_tail")):
            np.testing.assert_array_equal(ours.keypoints_xy[unified], theirs.keypoints_xy[names.index(source)])
            assert ours.visible[unified] == theirs.visible[names.index(source)]
    # tailbase is labelled only in the AP-10K samples; the summary says who lacks what
    assert mapped.summary.keypoint_counts["tailbase"] == sum(int(s.visible[names.index("root_of_tail")] > 0)
                                                             for s in ap10k.samples)  # fmt: skip
    assert any("lacks ['tailbase']" in n for n in mapped.summary.notes)
    assert any("not mapped (left out)" in n and "neck" in n for n in mapped.summary.notes)


def test_a_map_of_one_dataset_keeps_its_sample_ids(tmp_path, openfield_subset_dir):
    path = write_map(tmp_path / "one.yaml", one({"snout": "nose", "tailbase": "tail"}, str(openfield_subset_dir)))
    mapped, plain = load_dataset(path), load_dataset(openfield_subset_dir)
    assert mapped.sample_ids == plain.sample_ids  # a split of the dataset applies unchanged
    assert mapped.schema.names == ("nose", "tail")  # no 'keypoints' list: the mapped names in order
    np.testing.assert_array_equal(mapped.samples[2].keypoints_xy[1], plain.samples[2].keypoints_xy[3])


def one(mapping: dict, path: str = "P", **extra) -> dict:
    """A map of one dataset (``P``: the openfield subset) with ``mapping`` as its keypoints."""
    return {"datasets": [{"path": path, "keypoints": mapping}], **extra}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"datasets": [], "keypoints": ["a"]}, "'datasets' must be a non-empty list"),
        (one({"snout": "a"}, colour=1), r"unknown key\(s\) \['colour'\]"),
        (one({"snout": "a", "tailbase": "a"}), r"several keypoints map to \['a'\]"),
        (one({"snout": "b"}, keypoints=["a"]), r"map to \['b'\], which 'keypoints'"),
        (one({"snout": "a"}, flip_pairs=[["a", "z"]]), r"'flip_pairs' names \['z'\]"),
        (one({"nose": "a"}), r"maps keypoint\(s\) \['nose'\] that the dataset does not have; its keypoints are"),
        (one({"snout": "a"}, path="no/such/project"), "dataset path .*no/such/project does not exist"),
    ],
)
def test_bad_maps_are_refused_naming_the_file_and_the_fix(tmp_path, openfield_subset_dir, content, message):
    for entry in content["datasets"]:
        entry["path"] = str(openfield_subset_dir) if entry["path"] == "P" else str(tmp_path / entry["path"])
    path = write_map(tmp_path / "bad.yaml", content)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_dataset(path)


def test_a_yaml_that_is_no_map_is_not_taken_for_one(tmp_path):
    other = tmp_path / "recipe.yaml"
    other.write_text("keypoints: {epochs: 3}\n")
    assert not is_keypoint_map(other)
    with pytest.raises(ValueError, match="cannot tell the dataset format .* or a keypoint map .yaml"):
        load_dataset(other)
    with pytest.raises(FileNotFoundError, match="keypoint map .* does not exist"):
        read_keypoint_map(tmp_path / "none.yaml")


# ---------------------------------------------------------------- two keypoint subsets, one model
SUBSET_A = BODYPARTS[:4]  # snout, left_ear, right_ear, neck
SUBSET_B = BODYPARTS[3:]  # neck, tail_base, tail_tip


@pytest.fixture(scope="module")
def subsets_map(tmp_path_factory) -> Path:
    """Two procedural projects (other seeds: other animals and backgrounds); A labels the head, B the neck and tail."""
    folder = tmp_path_factory.mktemp("subsets")
    a = generate_synthetic_project(folder / "a", num_labelled=6, num_unlabelled=1, seed=3).project_dir
    b = generate_synthetic_project(folder / "b", num_labelled=6, num_unlabelled=1, seed=4).project_dir
    return write_map(
        folder / "map.yaml",
        {"keypoints": list(BODYPARTS),
         "datasets": [{"path": str(a), "name": "A", "keypoints": {n: n for n in SUBSET_A}},
                      {"path": str(b), "name": "B", "keypoints": {n: n for n in SUBSET_B}}]},
    )  # fmt: skip


def test_a_keypoint_absent_from_a_dataset_gets_zero_gradient_from_its_samples(subsets_map):
    from tardis_edge.models import ModelConfig, build_model
    from training.keypoints import KeypointDataset, KeypointsConfig, heatmap_loss

    dataset = load_dataset(subsets_map)
    names = dataset.schema.names
    absent_a = [names.index(n) for n in BODYPARTS if n not in SUBSET_A]
    absent_b = [names.index(n) for n in BODYPARTS if n not in SUBSET_B]
    from_a = torch.tensor([s.sample_id.startswith("A:") for s in dataset.samples])
    cfg = KeypointsConfig(seed=1)  # the training recipe: flips (left/right swap), rotations, whole-frame crops
    items = KeypointDataset(dataset.samples, dataset.schema, (64, 64), (16, 16), cfg)
    batch = {k: torch.stack([items[i][k] for i in range(len(items))]) for k in ("image", "heatmaps", "weights")}
    assert (batch["weights"][from_a][:, absent_a] == 0).all() and (batch["weights"][~from_a][:, absent_b] == 0).all()
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="repvgg_a0", num_keypoints=len(names), input_size=(64, 64),
                                    use_decoder=False, use_head=True)).train()  # fmt: skip
    heatmaps = model(batch["image"])["heatmaps"]  # (N, K, 16, 16)
    heatmaps.retain_grad()
    heatmap_loss(heatmaps, batch["heatmaps"], batch["weights"]).backward()
    grad = heatmaps.grad  # d loss / d heatmap output, (N, K, 16, 16)
    assert torch.count_nonzero(grad[from_a][:, absent_a]) == 0  # A's samples: no gradient into the tail channels
    assert torch.count_nonzero(grad[~from_a][:, absent_b]) == 0  # B's samples: none into the head channels
    assert torch.count_nonzero(grad[from_a][:, [names.index(n) for n in SUBSET_A]]) > 0  # the labelled ones learn
    assert torch.count_nonzero(grad[~from_a][:, absent_a]) > 0  # B teaches what A lacks

    # on the weights: a batch of A's samples leaves the last conv's rows of A's absent keypoints untouched
    model.zero_grad()
    heatmaps = model(batch["image"][from_a])["heatmaps"]
    heatmap_loss(heatmaps, batch["heatmaps"][from_a], batch["weights"][from_a]).backward()
    final = model.head.final
    assert torch.count_nonzero(final.weight.grad[absent_a]) == 0 and torch.count_nonzero(final.bias.grad[absent_a]) == 0
    assert torch.count_nonzero(final.weight.grad[[names.index(n) for n in SUBSET_A]]) > 0


def test_two_datasets_with_different_keypoints_train_one_model(subsets_map, tmp_path):
    from tardis_edge.checkpoint import DeployCheckpoint
    from training.full import main as train_main

    run = tmp_path / "run"
    argv = [f"--data={subsets_map}", "--data.input_size=64", "--data.heatmap_size=16", "--model.backbone=repvgg_a0",
            "--skip_distill=true", "--keypoints.epochs=1", "--keypoints.batch_size=4",
            "--keypoints.predict.flip_test=false", "--threads=1", f"--out={run}"]  # fmt: skip
    assert train_main(argv) == 0
    ck = DeployCheckpoint.load(run / "model.pt")
    assert ck.schema.names == BODYPARTS and ck.model["head.final.weight"].shape[0] == len(BODYPARTS)
    ids = {sid.split(":")[0] for part in ("train", "test") for sid in ck.split[part]}
    assert ids == {"A", "B"}  # both datasets trained and were tested
    # the export side reads the same data through the map (load_dataset): the split applies to it
    from tardis_edge.splits import Split

    Split.from_dict(ck.split).apply(load_dataset(subsets_map))
