"""Typed stage configs: YAML + --key=value overrides, unknown keys and wrong types rejected with the key named."""

import pytest

from tardis_edge.config import from_dict, load_config, parse_overrides, to_dict
from training.distill import DistillConfig
from training.keypoints import KeypointsConfig


def test_overrides_are_typed_and_nested(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("epochs: 7\ngeometric:\n  rotation_deg: 10\n")
    cfg = load_config(DistillConfig, yaml_file, ["--lr=0.01", "--geometric.scale_range=0.9,1.1", "--batch-size=4"])
    assert cfg.epochs == 7 and cfg.lr == 0.01 and cfg.batch_size == 4
    assert cfg.geometric.rotation_deg == 10.0 and cfg.geometric.scale_range == (0.9, 1.1)
    assert from_dict(DistillConfig, to_dict(cfg)) == cfg


def test_unknown_key_is_rejected_with_the_known_ones():
    with pytest.raises(KeyError, match=r"unknown config key\(s\) geometric.rotaton_deg; known keys: .*rotation_deg"):
        load_config(DistillConfig, None, ["--geometric.rotaton_deg=3"])


def test_wrong_type_names_the_key():
    with pytest.raises(TypeError, match="config key 'epochs': expected an integer, got '2.5'"):
        load_config(KeypointsConfig, None, ["--epochs=2.5"])
    with pytest.raises(TypeError, match="config key 'freeze_encoder': expected true/false"):
        load_config(KeypointsConfig, None, ["--freeze_encoder=maybe"])


def test_override_syntax_error():
    with pytest.raises(ValueError, match="must look like --key=value"):
        parse_overrides(["--epochs"])
