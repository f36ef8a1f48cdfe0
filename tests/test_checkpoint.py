"""The deploy checkpoint (tardis_edge.checkpoint): round trip, files written before it (format 1), one-line errors that
name the file and the key, atomic writes, and a torch-free import."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tardis_edge.checkpoint import CHECKPOINT_NAME, FORMAT_VERSION, DeployCheckpoint, checkpoint_file
from tardis_edge.data.sample import KeypointSchema
from tardis_edge.models import ModelConfig, build_model

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = KeypointSchema(names=("nose", "left_ear", "right_ear"), skeleton=((0, 1), (0, 2)), flip_pairs=((1, 2),))


@pytest.fixture(scope="module")
def checkpoint():
    torch.manual_seed(0)
    config = ModelConfig(
        backbone="resnet18", num_keypoints=3, input_size=(64, 96), use_decoder=False, use_head=True, neck_channels=16
    )  # input_size is (H, W) here, (W, H) in the checkpoint
    model = build_model(config)
    return DeployCheckpoint(
        model=model.state_dict(),
        model_config=config.to_dict(),
        schema=SCHEMA,
        input_size=(96, 64),
        heatmap_size=(24, 16),
        predict={"decode": "dark", "padding": 1.25},
        versions={"torch": str(torch.__version__)},
        split={"train": ["a", "b"], "val": [], "test": ["c"]},
    )


def test_round_trip(checkpoint, tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    checkpoint.save(path)
    loaded = DeployCheckpoint.load(path)
    assert loaded.format_version == FORMAT_VERSION
    assert replace(loaded, model={}) == replace(checkpoint, model={})
    assert loaded.model.keys() == checkpoint.model.keys()
    assert all(torch.equal(loaded.model[k], v) for k, v in checkpoint.model.items())
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME], "the atomic write left a temporary file"
    model = loaded.build_model(str(path))
    assert not model.training and model(torch.zeros(1, 3, 64, 96))["heatmaps"].shape == (1, 3, 16, 24)


def test_reads_a_format_1_file(checkpoint, tmp_path):
    """What training.full wrote before this module: no format_version, square sizes as ints, no split."""
    old = {k: v for k, v in checkpoint.to_dict().items() if k not in ("format_version", "split")}
    old.update(input_size=64, heatmap_size=16)
    torch.save(old, tmp_path / "old.pt")
    loaded = DeployCheckpoint.load(tmp_path / "old.pt")
    assert loaded.format_version == 1 and loaded.split is None
    assert loaded.input_size == (64, 64) and loaded.heatmap_size == (16, 16)
    assert loaded.schema == SCHEMA


def test_errors_name_the_file_and_the_key(checkpoint, tmp_path):
    path = tmp_path / "model.pt"
    with pytest.raises(FileNotFoundError, match=f"{path} not found: a deploy checkpoint is the model.pt written by"):
        DeployCheckpoint.load(path)
    torch.save({k: v for k, v in checkpoint.to_dict().items() if k != "heatmap_size"}, path)
    with pytest.raises(KeyError, match=f"{path} lacks heatmap_size: it is not a deploy checkpoint"):
        DeployCheckpoint.load(path)
    torch.save(dict(checkpoint.to_dict(), format_version=FORMAT_VERSION + 1), path)
    with pytest.raises(ValueError, match=f"{path} has deploy checkpoint format {FORMAT_VERSION + 1}; .* upgrade"):
        DeployCheckpoint.load(path)
    torch.save(dict(checkpoint.to_dict(), input_size=[96, 64, 3]), path)
    with pytest.raises(ValueError, match=r"input_size must be an int or a \[width, height\] pair"):
        DeployCheckpoint.load(path)
    checkpoint.save(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"{path} cannot be read with torch.load"):
        DeployCheckpoint.load(path)
    torch.save([1, 2], path)
    with pytest.raises(ValueError, match="holds a list, not a deploy checkpoint dict"):
        DeployCheckpoint.load(path)
    head_less = {k: v for k, v in checkpoint.model.items() if not k.startswith("head.")}
    with pytest.raises(ValueError, match="no heatmap head .*stage-1"):
        replace(checkpoint, model=head_less).build_model()


def test_checkpoint_file_resolves_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist: pass a run folder"):
        checkpoint_file(tmp_path / "nowhere")
    (tmp_path / "keypoints_last.pt").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="has no model.pt .*found keypoints_last.pt"):
        checkpoint_file(tmp_path)
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"")
    assert checkpoint_file(tmp_path) == (tmp_path / CHECKPOINT_NAME, tmp_path)
    assert checkpoint_file(tmp_path / CHECKPOINT_NAME) == (tmp_path / CHECKPOINT_NAME, None)


def test_import_needs_no_torch():
    code = "import sys, tardis_edge.checkpoint; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120).returncode == 0
