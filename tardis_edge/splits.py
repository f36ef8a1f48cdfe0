"""Train / validation / test splits (data stage): resolved once per run from the config, then read, never guessed.

``resolve_split`` turns a ``SplitConfig`` into a ``Split`` (three lists of sample ids). Training writes it into the
run folder (``split.json``) and into the deployable ``model.pt``; export, ``tardis-edge eval`` and the benchmarks
read it from there. Nothing here looks at a path to decide a split.

Rules that hold for every method:
    * all samples of one image (COCO files with several animals per image) land in the same part;
    * the parts are disjoint; every sample is in one of them, except under an explicit ``train`` selection
      (``names`` / ``ranges`` / ``folders``), which leaves the images in no part unused (``Split.unused``, counted
      in ``describe``);
    * the validation part may be empty: then training has no checkpoint selection and no periodic evaluation;
    * the test part is read only by the final evaluation.

Methods (``SplitConfig.method``):
    ``fraction``  the first ``train_fraction`` of the images (file order) train, the next ``val_fraction`` validate,
                  the rest test. File order keeps neighbouring video frames together, so a test frame is not the
                  training frame next to it.
    ``names``     ``test`` / ``val`` list sample ids, file names or glob patterns (``img009[5-9].png``); the rest
                  trains (or only the images ``train`` lists, with the same method, when it is given).
    ``ranges``    ``test`` / ``val`` (and ``train``) list ``start:stop`` or ``start:stop:step`` index ranges over the
                  images in file order (Python slice rules, stop exclusive). SLEAP files list their frames in video
                  order, so the flies clip's fixed split is ``train: ["0:1000:4"]`` (every 4th of frames 0-999),
                  ``test: ["1000:1500"]``.
    ``folders``   ``test`` / ``val`` list labelled folders or videos (``labeled-data/m4s2``, ``m4s2``, ``arena.mp4``)
                  held out whole.
    ``file``      ``file`` is a JSON or YAML file ``{"train": [...], "val": [...], "test": [...]}`` of sample ids,
                  e.g. the ``split.json`` of an earlier run.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tardis_edge.data.dataset import PoseDataset, image_key

METHODS = ("fraction", "names", "ranges", "folders", "file")
PARTS = ("train", "val", "test")
SPLIT_FORMAT = "tardis-edge split v1"
SPLIT_FILE = "split.json"  # in a run folder and in an exported artifact folder


class SplitError(ValueError):
    """A split that cannot be made as configured; the message names the option to change."""


@dataclass
class SplitConfig:
    """How the labelled data is split; ``--data.split.method=names --data.split.test=[img0095.png,...]``."""

    method: str = "fraction"  # fraction | names | ranges | folders | file
    train_fraction: float = 0.8  # fraction: share of images that train (at least one image is left to test)
    val_fraction: float = 0.0  # fraction: share of images that validate (0: no validation part)
    test: list[str] = field(default_factory=list)  # names / ranges / folders held out for the final test
    val: list[str] = field(default_factory=list)  # names / ranges / folders held out for validation
    train: list[str] = field(default_factory=list)  # names / ranges / folders that train; [] = every other image
    file: str | None = None  # method=file: JSON/YAML with train/val/test sample-id lists


@dataclass
class Split:
    """Sample ids of each part, and how they were chosen (``describe`` is written into ``split.json``).

    ``unused``: samples deliberately in no part (a ``train`` selection that leaves images out); empty otherwise.
    """

    train: list[str]
    val: list[str]
    test: list[str]
    describe: str = ""
    unused: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "format": SPLIT_FORMAT,
            "describe": self.describe,
            "train": self.train,
            "val": self.val,
            "test": self.test,
        }
        if self.unused:
            data["unused"] = self.unused
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "split") -> Split:
        """A split from ``to_dict`` output (or a user's ``{"train", "val", "test"}`` mapping)."""
        if not isinstance(data, dict):
            raise SplitError(f"{origin}: expected a mapping with train/val/test lists, got {type(data).__name__}")
        unknown = sorted(set(data) - {"format", "describe", "unused", *PARTS})
        if unknown:
            raise SplitError(f"{origin}: unknown key(s) {unknown}; a split has train, val and test lists of sample ids")
        parts = {}
        for part in (*PARTS, "unused"):
            ids = data.get(part) or []
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise SplitError(f"{origin}: {part!r} must be a list of sample-id strings")
            parts[part] = list(ids)
        return cls(**parts, describe=str(data.get("describe", origin)))

    def sizes(self) -> dict[str, int]:
        return {part: len(getattr(self, part)) for part in PARTS}

    def apply(self, dataset: PoseDataset) -> tuple[PoseDataset, PoseDataset, PoseDataset]:
        """``(train, val, test)`` subsets of ``dataset``; every id of the split must be a sample of it."""
        index = {sid: i for i, sid in enumerate(dataset.sample_ids)}
        subsets = []
        for part in PARTS:
            ids = getattr(self, part)
            missing = [sid for sid in ids if sid not in index]
            if missing:
                raise SplitError(
                    f"the {part} part names {len(missing)} sample(s) that {dataset.summary.source} does not have "
                    f"(first: {missing[0]!r}); the split belongs to other data — pass the data it was made on"
                )
            subsets.append(dataset.subset(sorted(index[sid] for sid in ids), part))
        return subsets[0], subsets[1], subsets[2]

    def write(self, path: str | Path) -> None:
        from tardis_edge.io import atomic_write_text, strict_json

        atomic_write_text(path, strict_json(self.to_dict(), indent=1) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> Split:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise SplitError(f"{path}: cannot read the split file ({err.strerror or err})") from None
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as err:
                raise SplitError(f"{path}: not valid YAML ({err})") from None
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise SplitError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
        return cls.from_dict(data, str(path))


def _images(dataset: PoseDataset) -> tuple[list[str], dict[str, list[str]]]:
    """Image keys in file order and the sample ids of each image."""
    order: list[str] = []
    members: dict[str, list[str]] = {}
    for s in dataset.samples:
        key = image_key(s)
        if key not in members:
            order.append(key)
            members[key] = []
        members[key].append(s.sample_id)
    return order, members


def _names_of(sample_id: str) -> tuple[str, str, str]:
    """The names a user may give for a sample: the id, the file name, the file stem (``a/img1.png#3`` → ...)."""
    path = sample_id.split("#", 1)[0]
    name = PurePosixPath(path).name
    return sample_id, name, PurePosixPath(name).stem


def _folders_of(sample_id: str) -> tuple[str, ...]:
    """The folder or video a sample comes from, by full relative path and by last component."""
    path = PurePosixPath(sample_id.split("#", 1)[0])
    parent = str(path.parent)
    return (parent, path.parent.name, path.name) if parent not in ("", ".") else (path.name,)


def _select(
    dataset: PoseDataset,
    images: list[str],
    members: dict[str, list[str]],
    method: str,
    patterns: Sequence[str],
    option: str,
) -> set[str]:
    """Image keys chosen by ``patterns`` under ``method``; a pattern that matches nothing is an error."""
    chosen: set[str] = set()
    for pattern in patterns:
        hit: set[str] = set()
        if method == "ranges":
            fields = str(pattern).split(":")
            try:
                if len(fields) not in (2, 3):
                    raise ValueError
                start, stop, step = (int(f) if f.strip() else None for f in (*fields, "")[:3])
            except ValueError:
                raise SplitError(
                    f"{option}: {pattern!r} is not a start:stop or start:stop:step range (e.g. 95:116, 0:1000:4)"
                ) from None
            if step is not None and step < 1:
                raise SplitError(f"{option}: {pattern!r} has step {step}; the step of a range must be 1 or more")
            hit = set(images[slice(start, stop, step)])
        else:
            for key in images:
                for sid in members[key]:
                    names = _names_of(sid) if method == "names" else _folders_of(sid)
                    if any(n == pattern or fnmatch.fnmatchcase(n, pattern) for n in names):
                        hit.add(key)
        if not hit:
            example = members[images[0]][0] if images else "?"
            raise SplitError(
                f"{option}: {pattern!r} matches no {'image' if method != 'folders' else 'folder'} of "
                f"{dataset.summary.source} (sample ids look like {example!r})"
            )
        chosen |= hit
    return chosen


def resolve_split(dataset: PoseDataset, cfg: SplitConfig) -> Split:
    """The split of ``dataset`` that ``cfg`` asks for.

    Raises:
        SplitError: the method or a pattern is unknown, a part comes out empty where it may not (train always;
            test unless ``train_fraction + val_fraction == 1``), or the dataset is too small — the message names
            the ``--data.split.*`` option to change.
    """
    if cfg.method not in METHODS:
        raise SplitError(f"--data.split.method={cfg.method!r} is unknown; use one of {', '.join(METHODS)}")
    if cfg.train and cfg.method in ("fraction", "file"):
        raise SplitError(
            f"--data.split.train={list(cfg.train)} selects training images for the names, ranges and folders methods, "
            f"not for method={cfg.method}; drop it or change the method"
        )
    images, members = _images(dataset)
    n = len(images)
    if n == 0:
        raise SplitError(f"{dataset.summary.source} has no samples to split")

    def ids(keys: Sequence[str] | set[str]) -> list[str]:
        keep = set(keys)
        return [sid for key in images if key in keep for sid in members[key]]

    if cfg.method == "file":
        if not cfg.file:
            raise SplitError("--data.split.method=file needs --data.split.file=PATH (a JSON/YAML train/val/test file)")
        split = Split.read(cfg.file)
        split.describe = f"file {cfg.file}"
        _check_complete(dataset, split, f"--data.split.file={cfg.file}")
        return split

    if cfg.method == "fraction":
        if not (
            0 < cfg.train_fraction <= 1
            and 0 <= cfg.val_fraction < 1
            and cfg.train_fraction + cfg.val_fraction <= 1 + 1e-9
        ):
            raise SplitError(
                f"--data.split.train_fraction={cfg.train_fraction} and val_fraction={cfg.val_fraction} must be in "
                "(0, 1] and [0, 1) and add up to at most 1"
            )
        want_test = cfg.train_fraction + cfg.val_fraction < 1 - 1e-9
        n_val = round(n * cfg.val_fraction)
        if cfg.val_fraction > 0:
            n_val = max(1, n_val)
        n_train = n - n_val if not want_test else max(1, round(n * cfg.train_fraction))
        n_test = n - n_train - n_val
        if want_test and n_test < 1:  # tiny data: the last image tests rather than no test at all
            n_train = n - n_val - 1
            n_test = 1
        if n_train < 1:
            raise SplitError(
                f"{dataset.summary.source} has {n} image(s): too few for a train part plus "
                f"{'a validation and ' if n_val else ''}a test part; label more images, or set "
                "--data.split.train_fraction=1.0 (no test evaluation)"
                + (" and --data.split.val_fraction=0" if n_val else "")
            )
        train, val, test = images[:n_train], images[n_train : n_train + n_val], images[n_train + n_val :]
        describe = (
            f"fraction: first {n_train} images train, next {n_val} validate, last {n_test} test (file order; "
            f"train_fraction {cfg.train_fraction}, val_fraction {cfg.val_fraction})"
        )
        return Split(ids(train), ids(val), ids(test), describe)

    test_keys = _select(dataset, images, members, cfg.method, cfg.test, "--data.split.test")
    val_keys = _select(dataset, images, members, cfg.method, cfg.val, "--data.split.val")
    both = test_keys & val_keys
    if both:
        raise SplitError(f"--data.split.test and --data.split.val both hold {sorted(both)[0]!r}; a part each, please")
    if cfg.train:
        chosen = _select(dataset, images, members, cfg.method, cfg.train, "--data.split.train")
        for other, keys in (("test", test_keys), ("val", val_keys)):
            if chosen & keys:
                raise SplitError(
                    f"--data.split.train and --data.split.{other} both hold {sorted(chosen & keys)[0]!r}; an image "
                    "can be in one part only"
                )
        train_keys = [k for k in images if k in chosen]
        unused_keys = [k for k in images if k not in chosen and k not in test_keys and k not in val_keys]
        describe = (
            f"{cfg.method}: train {list(cfg.train)} ({len(train_keys)} images), test {list(cfg.test)}, val "
            f"{list(cfg.val)}; {len(unused_keys)} images in no part (unused)"
        )
        return Split(ids(train_keys), ids(val_keys), ids(test_keys), describe, ids(unused_keys))
    train_keys = [k for k in images if k not in test_keys and k not in val_keys]
    if not train_keys:
        raise SplitError(
            f"--data.split.test/val take all {n} images of {dataset.summary.source}; nothing is left to train on"
        )
    describe = f"{cfg.method}: test {list(cfg.test)}, val {list(cfg.val)}, the other {len(train_keys)} images train"
    return Split(ids(train_keys), ids(val_keys), ids(test_keys), describe)


def _check_complete(dataset: PoseDataset, split: Split, option: str) -> None:
    """A split file must place every sample exactly once."""
    seen: dict[str, str] = {}
    for part in (*PARTS, "unused"):
        for sid in getattr(split, part):
            if sid in seen:
                raise SplitError(f"{option}: sample {sid!r} is in both {seen[sid]} and {part}")
            seen[sid] = part
    known = set(dataset.sample_ids)
    unknown = [sid for sid in seen if sid not in known]
    if unknown:
        raise SplitError(
            f"{option}: {len(unknown)} sample id(s) are not in {dataset.summary.source} (first: {unknown[0]!r})"
        )
    absent = [sid for sid in dataset.sample_ids if sid not in seen]
    if absent:
        raise SplitError(
            f"{option}: {len(absent)} sample(s) of {dataset.summary.source} are in no part "
            f"(first: {absent[0]!r}); list every sample in train, val, test or unused"
        )
    if not split.train:
        raise SplitError(f"{option}: the train part is empty")
