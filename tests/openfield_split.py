"""The openfield fixed split for tests, read from benchmarks/configs/openfield.yaml (its one definition):
img0000-img0094 train (95), img0095-img0115 test (21). On the 10-frame subset in tests/fixtures it is the same split
restricted to those frames: 6 train, 4 test."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import yaml
from conftest import FIXTURES

from tardis_edge.config import from_dict
from tardis_edge.splits import Split, SplitConfig, resolve_split

CONFIG = Path(__file__).resolve().parents[1] / "benchmarks" / "configs" / "openfield.yaml"


def openfield_split_config() -> SplitConfig:
    return from_dict(SplitConfig, yaml.safe_load(CONFIG.read_text())["data"]["split"])


def openfield_split_of(dataset) -> Split:
    config = openfield_split_config()
    if Path(dataset.root).resolve().is_relative_to(FIXTURES):  # the committed subset: only its own test frames
        names = {Path(sample_id).name for sample_id in dataset.sample_ids}
        config = replace(config, test=[name for name in config.test if name in names])
    return resolve_split(dataset, config)


def openfield_split(dataset):
    """``(train, test)`` subsets of the openfield project (the split has no validation part)."""
    train, val, test = openfield_split_of(dataset).apply(dataset)
    assert len(val) == 0
    return train, test
