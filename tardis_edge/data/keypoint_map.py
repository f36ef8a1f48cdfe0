"""One keypoint space across datasets (data stage): SuperAnimal's "generalized data converter".

A keypoint map is a small YAML file that names several datasets (DeepLabCut projects, COCO keypoint files, SLEAP
``.slp`` files, in any mix) and, for each, which of its keypoints is which keypoint of one unified list::

    keypoints: [snout, leftear, rightear, tailbase]     # the unified list (optional: else the mapped names in order)
    datasets:
      - path: mouse-project                             # relative paths are relative to this file's folder
        keypoints: {snout: snout, leftear: leftear, rightear: rightear, tailbase: tailbase}
      - path: ../coco/animals.json
        name: coco                                      # optional: prefixes its sample ids (default: the file stem)
        keypoints: {nose: snout, left_ear: leftear, right_ear: rightear}
    flip_pairs: [[leftear, rightear]]                   # optional: else found from the unified names

``--data=map.yaml`` (``load_dataset``) loads every dataset and remaps its samples into the unified list. A keypoint a
dataset does not map is unlabelled in its samples (NaN, ``visible`` 0), so its heatmap target weight is 0 and it
contributes nothing to the loss (stage 2's ``heatmap_loss`` weighs each keypoint by its target weight); each remapped
sample lists those keypoints in ``extra["absent_keypoints"]`` (unified indices), which memory replay
(``training.adapt.memory_replay``) fills with a previous model's confident predictions. Keypoints of a dataset the map
does not name are left out, and the load summary says so.

Sample ids keep their dataset's ids when the map has one dataset (so a split of that dataset applies unchanged);
with several they are prefixed ``<name>:`` to stay unique. Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tardis_edge.data.dataset import (
    LoadSummary,
    PoseDataset,
    Skipped,
    check_flip_pairs,
    describe_flip_pairs,
    flip_pairs_from_names,
)
from tardis_edge.data.sample import KeypointSchema, Sample

MAP_KEYS = ("keypoints", "datasets", "flip_pairs", "skeleton")
DATASET_KEYS = ("path", "keypoints", "name")
ABSENT = "absent_keypoints"  # Sample.extra key: unified indices the sample's dataset does not label


@dataclass(frozen=True)
class MappedSource:
    """One dataset of a keypoint map: where it is, its name (sample-id prefix) and its keypoint -> unified name."""

    path: Path
    name: str
    keypoints: dict[str, str]


@dataclass(frozen=True)
class KeypointMap:
    """A parsed keypoint map file (``read_keypoint_map``)."""

    source: Path
    keypoints: tuple[str, ...]
    datasets: tuple[MappedSource, ...]
    flip_pairs: tuple[tuple[str, str], ...] | None = None  # None: found from the names
    skeleton: tuple[tuple[str, str], ...] | None = None  # None: the datasets' edges that map whole


def is_keypoint_map(path: str | Path) -> bool:
    """A ``.yaml``/``.yml`` file (not a DeepLabCut ``config.yaml``) whose top-level mapping has ``datasets``."""
    p = Path(path)
    if not p.is_file() or p.suffix.lower() not in (".yaml", ".yml") or p.name == "config.yaml":
        return False
    try:
        import yaml

        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except Exception:  # not ours to judge here: read_keypoint_map reports what is wrong with the file
        return True
    return isinstance(data, Mapping) and "datasets" in data


def _names(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{where} must be a list of keypoint names, got {value!r}")
    repeated = sorted({v for v in value if value.count(v) > 1})
    if repeated:
        raise ValueError(f"{where} names {repeated} more than once; each keypoint once")
    return tuple(value)


def _pairs(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(n, str) for n in p) for p in value
    ):
        raise ValueError(f"{where} must be a list of [name, name] pairs, got {value!r}")
    return tuple((a, b) for a, b in value)


def read_keypoint_map(path: str | Path) -> KeypointMap:
    """Parse and check a keypoint map file (the datasets themselves are loaded by ``load_mapped_dataset``).

    Raises:
        FileNotFoundError: the file or a dataset path does not exist (named).
        ValueError: a malformed entry, naming the file, the entry and the fix.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"keypoint map {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"keypoint map {p} is not valid YAML ({str(err).splitlines()[0]}); fix the file") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"keypoint map {p} must hold a mapping with 'datasets' (and 'keypoints'), got {data!r}")
    unknown = sorted(set(data) - set(MAP_KEYS))
    if unknown:
        raise ValueError(f"keypoint map {p}: unknown key(s) {unknown}; known keys: {', '.join(MAP_KEYS)}")
    entries = data.get("datasets")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"keypoint map {p}: 'datasets' must be a non-empty list of {{path, keypoints}} entries")
    sources: list[MappedSource] = []
    for i, entry in enumerate(entries):
        where = f"keypoint map {p}, datasets[{i}]"
        if not isinstance(entry, Mapping) or "path" not in entry or "keypoints" not in entry:
            raise ValueError(f"{where} must be a mapping with 'path' and 'keypoints', got {entry!r}")
        extra = sorted(set(entry) - set(DATASET_KEYS))
        if extra:
            raise ValueError(f"{where}: unknown key(s) {extra}; known keys: {', '.join(DATASET_KEYS)}")
        mapping = entry["keypoints"]
        if (
            not isinstance(mapping, Mapping)
            or not mapping
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())
        ):
            raise ValueError(
                f"{where}: 'keypoints' must map the dataset's keypoint names to unified names, got {mapping!r}"
            )
        targets = list(mapping.values())
        twice = sorted({t for t in targets if targets.count(t) > 1})
        if twice:
            raise ValueError(f"{where}: several keypoints map to {twice}; map one keypoint of a dataset to each name")
        dataset_path = Path(str(entry["path"]))
        if not dataset_path.is_absolute():
            dataset_path = p.parent / dataset_path
        if not dataset_path.exists():
            raise FileNotFoundError(
                f"{where}: dataset path {dataset_path} does not exist (relative paths are relative to {p.parent})"
            )
        name = str(entry.get("name") or (dataset_path.stem if dataset_path.is_file() else dataset_path.name))
        sources.append(MappedSource(dataset_path, name, dict(mapping)))
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"keypoint map {p}: datasets share a name ({names}); give each a distinct 'name'")
    mapped = list(dict.fromkeys(t for s in sources for t in s.keypoints.values()))
    keypoints = _names(data["keypoints"], f"keypoint map {p}: 'keypoints'") if "keypoints" in data else tuple(mapped)
    stray = [t for t in mapped if t not in keypoints]
    if stray:
        raise ValueError(
            f"keypoint map {p}: datasets map to {stray}, which 'keypoints' does not list; add them to "
            f"'keypoints' ({list(keypoints)})"
        )
    flip = _pairs(data["flip_pairs"], f"keypoint map {p}: 'flip_pairs'") if "flip_pairs" in data else None
    skeleton = _pairs(data["skeleton"], f"keypoint map {p}: 'skeleton'") if "skeleton" in data else None
    for pairs, what in ((flip, "flip_pairs"), (skeleton, "skeleton")):
        bad = sorted({n for pair in pairs or () for n in pair if n not in keypoints})
        if bad:
            raise ValueError(f"keypoint map {p}: '{what}' names {bad}, not in 'keypoints' ({list(keypoints)})")
    return KeypointMap(p, keypoints, tuple(sources), flip, skeleton)


def remap_sample(sample: Sample, index: Sequence[int], num_unified: int, sample_id: str | None = None) -> Sample:
    """``sample`` in the unified keypoint space.

    Args:
        sample: a sample of its dataset's schema (``K`` keypoints).
        index: ``(K,)`` unified index of each dataset keypoint, ``-1`` for one the map leaves out.
        num_unified: ``U``, the number of unified keypoints.
        sample_id: a new id (default: the sample's own).

    Returns:
        A copy with ``(U, 2)`` keypoints (NaN where the dataset has no label) and ``(U,)`` visible (0 there), and
        ``extra["absent_keypoints"]``: the unified indices no dataset keypoint maps to.
    """
    index = np.asarray(index, dtype=np.int64)
    if index.shape != (len(sample.visible),):
        raise ValueError(f"sample {sample.sample_id}: {len(sample.visible)} keypoints but {len(index)} map entries")
    keypoints = np.full((num_unified, 2), np.nan, dtype=np.float32)
    visible = np.zeros(num_unified, dtype=np.float32)
    kept = index >= 0
    keypoints[index[kept]] = sample.keypoints_xy[kept]
    visible[index[kept]] = sample.visible[kept]
    absent = tuple(sorted(set(range(num_unified)) - {int(i) for i in index[kept]}))
    return replace(
        sample,
        sample_id=sample_id or sample.sample_id,
        keypoints_xy=keypoints,
        visible=visible,
        extra={**sample.extra, ABSENT: absent},
    )


def map_index(
    dataset_names: Sequence[str], mapping: Mapping[str, str], unified: Sequence[str], where: str
) -> list[int]:
    """``(K,)`` unified index per dataset keypoint (``-1``: not mapped); a mapped name the dataset lacks is an error."""
    missing = sorted(set(mapping) - set(dataset_names))
    if missing:
        raise ValueError(
            f"{where} maps keypoint(s) {missing} that the dataset does not have; its keypoints are "
            f"{list(dataset_names)}"
        )
    position = {name: i for i, name in enumerate(unified)}
    return [position[mapping[n]] if n in mapping else -1 for n in dataset_names]


def load_mapped_dataset(path: str | Path, **kwargs: Any) -> PoseDataset:
    """Load every dataset of a keypoint map and remap its samples into the unified keypoint list.

    Args:
        path: the keypoint map file.
        **kwargs: passed to each dataset's loader.

    Returns:
        One ``PoseDataset`` of the unified schema, datasets in the map's order; its summary says per dataset which
        unified keypoints it labels and which it lacks (their loss weight is 0).
    """
    from tardis_edge.data.dataset import load_dataset

    kmap = read_keypoint_map(path)
    unified = kmap.keypoints
    several = len(kmap.datasets) > 1
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    notes: list[str] = []
    warnings: list[str] = []
    edges: list[tuple[int, int]] = []
    for source in kmap.datasets:
        if source.path.suffix.lower() in (".yaml", ".yml") and is_keypoint_map(source.path):
            raise ValueError(
                f"keypoint map {kmap.source}: dataset {source.path} is itself a keypoint map; list its "
                "datasets directly"
            )
        dataset = load_dataset(source.path, **kwargs)
        names = dataset.schema.names
        index = map_index(names, source.keypoints, unified, f"keypoint map {kmap.source}, dataset {source.name}")
        for s in dataset.samples:
            sid = f"{source.name}:{s.sample_id}" if several else s.sample_id
            samples.append(remap_sample(s, index, len(unified), sid))
        for a, b in dataset.schema.skeleton:
            if index[a] >= 0 and index[b] >= 0:
                edges.append((min(index[a], index[b]), max(index[a], index[b])))
        labels = [unified[i] for i in index if i >= 0]
        lacks = [n for n in unified if n not in labels]
        dropped = [n for n, i in zip(names, index, strict=True) if i < 0]
        notes.append(
            f"{source.name} ({dataset.summary.format}, {len(dataset)} samples) labels {labels}"
            + (f"; lacks {lacks} (loss weight 0 on its samples)" if lacks else "")
            + (f"; its keypoint(s) {dropped} are not mapped (left out)" if dropped else "")
        )
        skipped += [Skipped(f"{source.name}: {s.what}", s.reason) for s in dataset.summary.skipped]
        warnings += [f"{source.name}: {w}" for w in dataset.summary.warnings]
    ids = [s.sample_id for s in samples]
    if len(set(ids)) != len(ids):
        raise ValueError(f"keypoint map {kmap.source}: sample ids repeat across datasets; give the datasets names")
    if kmap.flip_pairs is not None:
        flip = check_flip_pairs([list(p) for p in kmap.flip_pairs], unified, f"keypoint map {kmap.source}")
    else:
        flip = flip_pairs_from_names(unified)
    if kmap.skeleton is not None:
        position = {n: i for i, n in enumerate(unified)}
        skeleton = tuple((position[a], position[b]) for a, b in kmap.skeleton)
    else:
        skeleton = tuple(dict.fromkeys(edges))
    schema = KeypointSchema(names=unified, skeleton=skeleton, flip_pairs=flip)
    notes.append(describe_flip_pairs(flip, unified))
    summary = LoadSummary.from_samples(
        samples,
        schema,
        str(kmap.source),
        f"keypoint map of {len(kmap.datasets)} dataset(s)",
        skipped=skipped,
        notes=notes,
        warnings=warnings,
    )
    return PoseDataset(schema, samples, summary, kmap.source.parent)


def absent_keypoints(sample: Sample, dataset_counts: Mapping[str, int] | None, names: Sequence[str]) -> tuple[int, ...]:
    """The keypoints a sample's dataset does not label: ``extra["absent_keypoints"]`` of a remapped sample, else
    (a plain dataset) the keypoints labelled in no sample of it (``dataset_counts`` = ``summary.keypoint_counts``)."""
    if ABSENT in sample.extra:
        return tuple(sample.extra[ABSENT])
    counts = dataset_counts or {}
    return tuple(k for k, name in enumerate(names) if counts.get(name, 1) == 0)
