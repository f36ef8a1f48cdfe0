"""DeepLabCut single-animal projects (data stage): ``config.yaml`` + ``labeled-data/*/CollectedData_<scorer>``.

Reads DeepLabCut's two label formats, which hold the same table:

* ``CollectedData_<scorer>.csv``: three header rows (``scorer``, ``bodyparts``, ``coords``), then one row per
  frame. The row label is either one column with the image path relative to the project
  (``labeled-data/<video>/<img>.png``) or, in DeepLabCut >= 2.3, three columns ``labeled-data,<video>,<img>``.
* ``CollectedData_<scorer>.h5``: the pandas DataFrame (key ``df_with_missing``) with MultiIndex columns
  ``(scorer, bodyparts, coords)`` and a path index (plain or the three-level MultiIndex).

Empty cells / NaN mean "not labelled" (visible 0, NaN coordinates); labelled keypoints get visible 2.
Coordinates are DeepLabCut's pixel coordinates, which use the pixel-centre convention of
``tardis_edge.geometry`` unchanged.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tardis_edge.data.dataset import (
    LoadSummary,
    PoseDataset,
    Skipped,
    check_flip_pairs,
    describe_flip_pairs,
    flip_pairs_from_names,
    labels_outside_images,
)
from tardis_edge.data.sample import KeypointSchema, Sample

LABELS_PREFIX = "CollectedData_"
H5_KEY = "df_with_missing"
PREFER = ("h5", "csv")


@dataclass(frozen=True)
class DlcConfig:
    """The parts of a DeepLabCut ``config.yaml`` the loader needs."""

    path: Path
    bodyparts: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    scorer: str | None
    task: str | None


@dataclass(frozen=True)
class _LabelRow:
    """One frame of a labels file: the image path relative to the project, where it was read, its keypoints."""

    image: str  # relative to the project, '/' separated
    where: str  # "row 7 of <file>" for error messages
    keypoints_xy: np.ndarray  # (K, 2) float64 in config bodypart order, NaN where unlabelled


def read_dlc_config(path: str | Path) -> DlcConfig:
    """Parse a DeepLabCut ``config.yaml`` (bodyparts, skeleton as name pairs, scorer) with clear errors."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"DeepLabCut config {p} does not exist; pass the project folder that holds it")
    try:
        config = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{p} is not valid YAML: {e}") from e
    if not isinstance(config, dict):
        raise ValueError(f"{p} must hold a YAML mapping (a DeepLabCut config), got {type(config).__name__}")
    if config.get("multianimalproject") or config.get("bodyparts") == "MULTI!":
        raise ValueError(
            f"{p} is a multi-animal DeepLabCut project (multianimalproject: true); tardis-edge loads single-animal "
            "projects — convert it to a single-animal project or export COCO keypoints"
        )
    bodyparts = config.get("bodyparts")
    if not isinstance(bodyparts, list) or not bodyparts or not all(isinstance(b, str) and b for b in bodyparts):
        raise ValueError(f"{p}: 'bodyparts' must be a non-empty list of names, got {bodyparts!r}")
    if len(set(bodyparts)) != len(bodyparts):
        raise ValueError(f"{p}: 'bodyparts' has repeated names: {bodyparts}")
    index = {b: i for i, b in enumerate(bodyparts)}
    skeleton = []
    for edge in config.get("skeleton") or []:
        if not isinstance(edge, list) or len(edge) != 2 or any(e not in index for e in edge):
            raise ValueError(
                f"{p}: skeleton edge {edge!r} must be a pair of bodypart names from {bodyparts}; fix or remove it"
            )
        skeleton.append((index[edge[0]], index[edge[1]]))
    scorer = config.get("scorer")
    return DlcConfig(p, tuple(bodyparts), tuple(skeleton), str(scorer) if scorer else None, config.get("Task"))


def _parse_coordinate(text: str, where: str, column: str) -> float:
    text = text.strip()
    if text == "" or text.lower() == "nan":
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"{where}, column {column}: {text!r} is not a number; fix the cell or leave it empty for 'not labelled'"
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"{where}, column {column}: {text!r} is not finite; leave the cell empty for 'not labelled'")
    return value


def _check_header(
    path: Path, scorers: list[str], bodyparts: list[str], coords: list[str], config: DlcConfig, scorer: str
) -> list[tuple[int, int]]:
    """Validate the (scorer, bodyparts, coords) column header; return (x column, y column) per config bodypart."""
    wrong_scorer = sorted({s for s in scorers if s != scorer})
    if wrong_scorer:
        raise ValueError(f"{path}: columns are labelled by scorer {wrong_scorer}, expected {scorer!r} (file name)")
    bad_coords = sorted({c for c in coords if c not in ("x", "y")})
    if bad_coords:
        raise ValueError(f"{path}: coords header has {bad_coords}; a DeepLabCut labels file has only x and y columns")
    columns: dict[str, dict[str, int]] = {}
    for col, (part, coord) in enumerate(zip(bodyparts, coords, strict=True)):
        if coord in columns.setdefault(part, {}):
            raise ValueError(f"{path}: bodypart {part!r} has two {coord!r} columns")
        columns[part][coord] = col
    in_file = list(columns)
    if set(in_file) != set(config.bodyparts):
        missing = [b for b in config.bodyparts if b not in columns]
        unknown = [b for b in in_file if b not in config.bodyparts]
        raise ValueError(
            f"{path}: header bodyparts {in_file} do not match config.yaml bodyparts {list(config.bodyparts)} "
            f"(missing from the labels: {missing}; not in config.yaml: {unknown}); make config.yaml list the "
            "labelled bodyparts, or relabel the frames in DeepLabCut"
        )
    half = [b for b, xy in columns.items() if set(xy) != {"x", "y"}]
    if half:
        raise ValueError(f"{path}: bodyparts {half} lack an x or a y column")
    return [(columns[b]["x"], columns[b]["y"]) for b in config.bodyparts]


def read_labels_csv(path: str | Path, config: DlcConfig, scorer: str) -> list[_LabelRow]:
    """Read ``CollectedData_<scorer>.csv`` (one- or three-column row labels) into config bodypart order."""
    p = Path(path)
    with open(p, newline="", encoding="utf-8") as f:
        text = f.read()
    rows = list(csv.reader(io.StringIO(text)))
    complete = text.endswith(("\n", "\r"))  # a file cut mid-row (copy or disk full) has no final line end
    while rows and not any(cell.strip() for cell in rows[-1]):
        rows.pop()
    if len(rows) < 3 or [r[0].strip() if r else "" for r in rows[:3]] != ["scorer", "bodyparts", "coords"]:
        if len(rows) >= 2 and rows[1] and rows[1][0].strip() == "individuals":
            raise ValueError(f"{p} is a multi-animal labels file (an 'individuals' header row); not supported")
        raise ValueError(
            f"{p}: expected DeepLabCut's three header rows starting 'scorer', 'bodyparts', 'coords'; "
            f"got {[r[:1] for r in rows[:3]]}"
        )
    header = rows[:3]
    n_index = 1
    while n_index < len(header[0]) and header[0][n_index].strip() == "":
        n_index += 1
    if n_index not in (1, 3):
        raise ValueError(f"{p}: {n_index} row-label columns; expected 1 (image path) or 3 (labeled-data, video, image)")
    width = len(header[0])
    if any(len(r) != width for r in header):
        raise ValueError(f"{p}: the three header rows have different lengths {[len(r) for r in header]}")
    scorers, bodyparts, coords = ([c.strip() for c in r[n_index:]] for r in header)
    xy_columns = _check_header(p, scorers, bodyparts, coords, config, scorer)
    out = []
    for line_no, row in enumerate(rows[3:], start=4):
        where = f"row {line_no} of {p}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > width:
            raise ValueError(f"{where} has {len(row)} cells, the header has {width}; remove the extra cells")
        if not complete and line_no == len(rows) and len(row) < width:
            raise ValueError(
                f"{where} is cut short ({len(row)} of {width} cells and no line end): the file was truncated; restore "
                "it (DeepLabCut rewrites the CSV from the .h5), or delete the partial row"
            )
        row = row + [""] * (width - len(row))  # spreadsheets drop trailing empty cells
        parts = [c.strip().replace("\\", "/") for c in row[:n_index]]
        if any(not c for c in parts):
            raise ValueError(f"{where}: the image path cells {row[:n_index]} must not be empty")
        values = row[n_index:]
        xy = np.array(
            [
                [
                    _parse_coordinate(values[cx], where, f"{bodyparts[cx]}/x"),
                    _parse_coordinate(values[cy], where, f"{bodyparts[cy]}/y"),
                ]
                for cx, cy in xy_columns
            ],
            dtype=np.float64,
        ).reshape(len(xy_columns), 2)
        out.append(_LabelRow("/".join(parts), where, xy))
    return out


def read_labels_h5(path: str | Path, config: DlcConfig, scorer: str) -> list[_LabelRow]:
    """Read ``CollectedData_<scorer>.h5`` (pandas, key ``df_with_missing``) into config bodypart order."""
    try:
        import pandas as pd
        import tables  # noqa: F401  (pandas' HDF5 backend)
    except ImportError as e:
        raise ImportError(
            f"reading DeepLabCut .h5 labels ({path}) needs pandas and PyTables: pip install 'tardis-edge[data]', "
            "or load the CSV labels with prefer='csv'"
        ) from e
    p = Path(path)
    with pd.HDFStore(p, mode="r") as store:
        keys = [k.lstrip("/") for k in store.keys()]
        key = H5_KEY if H5_KEY in keys else (keys[0] if len(keys) == 1 else None)
        if key is None:
            raise ValueError(f"{p}: no '{H5_KEY}' table (keys: {keys}); is this a DeepLabCut labels file?")
        frame = store[key]
    if not isinstance(frame, pd.DataFrame) or frame.columns.nlevels != 3:
        levels = getattr(getattr(frame, "columns", None), "names", None)
        if levels is not None and "individuals" in levels:
            raise ValueError(f"{p} is a multi-animal labels file (an 'individuals' column level); not supported")
        raise ValueError(f"{p}: expected columns (scorer, bodyparts, coords), got levels {levels}")
    scorers, bodyparts, coords = ([str(v) for v in frame.columns.get_level_values(i)] for i in range(3))
    xy_columns = _check_header(p, scorers, bodyparts, coords, config, scorer)
    values = frame.to_numpy(dtype=np.float64)  # (rows, columns)
    out = []
    for row, label in enumerate(frame.index):
        parts = [str(v) for v in label] if isinstance(label, tuple) else [str(label)]
        image = "/".join(part.replace("\\", "/") for part in parts)
        xy = np.array([[values[row, cx], values[row, cy]] for cx, cy in xy_columns], dtype=np.float64)
        where = f"entry {row} ({image}) of {p}"
        bad = ~np.isnan(xy) & ~np.isfinite(xy)
        if bad.any():
            raise ValueError(f"{where}: infinite coordinate for {config.bodyparts[int(np.argwhere(bad)[0, 0])]}")
        out.append(_LabelRow(image, where, xy.reshape(len(xy_columns), 2)))
    return out


def _find_labels(folder: Path, scorer: str, prefer: str) -> Path | None:
    """The labels file of ``folder`` in the preferred format, or the other format if only that exists."""
    order = PREFER if prefer == "h5" else PREFER[::-1]
    for ext in order:
        candidate = folder / f"{LABELS_PREFIX}{scorer}.{ext}"
        if candidate.is_file():
            return candidate
    return None


def _compare_label_files(
    used: Path, used_rows: list[_LabelRow], other: Path, config: DlcConfig, scorer: str
) -> list[str]:
    """A warning when a folder's CSV and H5 labels disagree (someone edited one of them), naming the file used."""
    read = read_labels_h5 if other.suffix == ".h5" else read_labels_csv
    try:
        other_rows = {r.image: r.keypoints_xy for r in read(other, config, scorer)}
    except (ValueError, ImportError) as err:
        return [f"{other} cannot be read ({err}); using {used.name}"]
    used_map = {r.image: r.keypoints_xy for r in used_rows}
    differ = sorted(
        image
        for image in set(used_map) | set(other_rows)
        if image not in used_map
        or image not in other_rows
        or not np.allclose(used_map[image], other_rows[image], rtol=0, atol=1e-3, equal_nan=True)
    )
    if not differ:
        return []
    newer = "newer" if other.stat().st_mtime > used.stat().st_mtime else "older"
    return [
        f"{used.parent}: {used.name} and {other.name} disagree on {len(differ)} frame(s) (first: {differ[0]}); using "
        f"{used.name} (prefer={used.suffix[1:]!r}); the {newer} {other.name} is ignored — make them agree (DeepLabCut "
        "writes both), delete the stale one, or load with prefer="
        f"{other.suffix[1:]!r}"
    ]


def load_dlc_project(
    project_dir: str | Path,
    scorer: str | None = None,
    prefer: str = "h5",
    flip_pairs: list[tuple[int | str, int | str]] | None = None,
    category: str = "animal",
    check_images: bool = True,
) -> PoseDataset:
    """Load the labelled frames of a single-animal DeepLabCut project.

    Args:
        project_dir: the project folder (holding ``config.yaml`` and ``labeled-data/``) or its ``config.yaml``.
        scorer: labeller name in ``CollectedData_<scorer>``; default: ``scorer`` from config.yaml.
        prefer: ``"h5"`` or ``"csv"``: which labels file to read where a folder has both (they hold the same
            table; a folder with only the other one is read from that).
        flip_pairs: left/right pairs as indices or bodypart names; default: found from the names
            (``leftear``/``rightear``, ``L_paw``/``R_paw`` …, see ``flip_pairs_from_names``).
        category: species name put on every sample.
        check_images: check at load time that every labelled image exists (cheap; decoding happens at read time).

    Returns:
        A ``PoseDataset``: one ``Sample`` per labelled frame (sample id = image path relative to the project),
        keypoints in image pixels, no bounding boxes (top-down crops derive them from the keypoints). Frames
        with no labelled keypoint are kept with ``labelled=False``; label folders without a labels file for the
        scorer are listed in ``summary.skipped``.
    """
    if prefer not in PREFER:
        raise ValueError(f"prefer must be one of {PREFER}, got {prefer!r}")
    p = Path(project_dir)
    config_path = p if p.name == "config.yaml" else p / "config.yaml"
    project = config_path.parent
    config = read_dlc_config(config_path)
    scorer = scorer or config.scorer
    if not scorer:
        raise ValueError(f"{config_path} names no scorer; pass scorer= (the <scorer> in CollectedData_<scorer>.csv)")
    labeled = project / "labeled-data"
    if not labeled.is_dir():
        raise FileNotFoundError(f"{labeled} does not exist: {project} has no labelled frames; label some in DeepLabCut")

    skipped: list[Skipped] = []
    warnings: list[str] = []
    rows: list[_LabelRow] = []
    for folder in sorted(d for d in labeled.iterdir() if d.is_dir()):
        labels = _find_labels(folder, scorer, prefer)
        if labels is None:
            others = sorted(f.name for f in folder.glob(f"{LABELS_PREFIX}*") if f.suffix in (".csv", ".h5"))
            reason = f"no {LABELS_PREFIX}{scorer}.h5/.csv" + (
                f" (found {others}; pass scorer= to read those)" if others else " (frames not labelled yet)"
            )
            skipped.append(Skipped(f"labeled-data/{folder.name}", reason))
            continue
        read = read_labels_h5 if labels.suffix == ".h5" else read_labels_csv
        folder_rows = read(labels, config, scorer)
        rows.extend(folder_rows)
        other = labels.with_suffix(".csv" if labels.suffix == ".h5" else ".h5")
        if other.is_file():
            warnings.extend(_compare_label_files(labels, folder_rows, other, config, scorer))

    if not rows:
        found = "; ".join(f"{s.what}: {s.reason}" for s in skipped) or "no folders"
        raise ValueError(
            f"empty dataset: no labelled frames for scorer {scorer!r} under {labeled} ({found}); label frames in "
            "DeepLabCut or pass the right scorer="
        )

    seen: dict[str, str] = {}
    samples = []
    for row in rows:
        if row.image in seen:
            raise ValueError(f"image {row.image} is labelled twice ({seen[row.image]} and {row.where}); keep one row")
        seen[row.image] = row.where
        image_path = project / row.image
        if check_images and not image_path.is_file():
            raise FileNotFoundError(
                f"image {row.image} ({row.where}) does not exist under {project}; restore the image or delete its row"
            )
        xy = row.keypoints_xy.copy()
        labelled = np.isfinite(xy).all(axis=1)  # (K,); a half-filled x/y pair counts as not labelled
        xy[~labelled] = np.nan
        samples.append(
            Sample(
                sample_id=row.image,
                image_path=image_path,
                keypoints_xy=xy.astype(np.float32),
                visible=np.where(labelled, 2.0, 0.0).astype(np.float32),
                category=category,
                labelled=bool(labelled.any()),
            )
        )

    names = config.bodyparts
    if flip_pairs is not None:
        pairs = check_flip_pairs(flip_pairs, names, str(config_path))
    else:
        pairs = flip_pairs_from_names(names)
    schema = KeypointSchema(names=names, skeleton=config.skeleton, flip_pairs=pairs, sigmas=None)
    notes = [describe_flip_pairs(pairs, names) + (" (from names)" if flip_pairs is None else "")]
    if check_images:
        warnings += labels_outside_images(samples, names, seen)
    summary = LoadSummary.from_samples(samples, schema, str(project), "DeepLabCut", skipped, notes, warnings)
    return PoseDataset(schema, samples, summary, project)
