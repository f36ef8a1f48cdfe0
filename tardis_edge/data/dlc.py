"""DeepLabCut projects, single- and multi-animal (data stage): ``config.yaml`` + ``labeled-data/*/CollectedData_*``.

Reads DeepLabCut's two label formats, which hold the same table:

* ``CollectedData_<scorer>.csv``: three header rows (``scorer``, ``bodyparts``, ``coords``) — four in a
  multi-animal project (``scorer``, ``individuals``, ``bodyparts``, ``coords``) — then one row per frame. The row
  label is either one column with the image path relative to the project (``labeled-data/<video>/<img>.png``)
  or, in DeepLabCut >= 2.3, three columns ``labeled-data,<video>,<img>``.
* ``CollectedData_<scorer>.h5``: the pandas DataFrame (key ``df_with_missing``) with MultiIndex columns
  ``(scorer, bodyparts, coords)`` (multi-animal: ``(scorer, individuals, bodyparts, coords)``) and a path index
  (plain or the three-level MultiIndex).

Single-animal projects give one ``Sample`` per labelled frame (id: the image path). Multi-animal projects
(``multianimalproject: true``, ``individuals``, ``multianimalbodyparts``, ``uniquebodyparts``) give one ``Sample``
per (frame, individual with at least one labelled point), ``track`` = the individual's name, id
``<image path>#<individual>``; a frame where no individual is labelled is kept as one ``labelled=False`` sample
(id: the image path) like an unlabelled single-animal frame. Unique bodyparts (DeepLabCut's ``single``
individual: a feeder, an arena corner) are points on no animal: they are not loaded, and ``summary.skipped``
says how many labelled points that leaves out.

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
UNIQUE_INDIVIDUAL = "single"  # DeepLabCut's individual name for the unique bodyparts of a multi-animal project
H5_KEY = "df_with_missing"
PREFER = ("h5", "csv")


@dataclass(frozen=True)
class DlcConfig:
    """The parts of a DeepLabCut ``config.yaml`` the loader needs."""

    path: Path
    bodyparts: tuple[str, ...]  # multi-animal: the multianimalbodyparts
    skeleton: tuple[tuple[int, int], ...]
    scorer: str | None
    task: str | None
    individuals: tuple[str, ...] = ()  # multi-animal only
    unique_bodyparts: tuple[str, ...] = ()  # multi-animal only: points on no animal (individual 'single')

    @property
    def multianimal(self) -> bool:
        return bool(self.individuals)


@dataclass(frozen=True)
class _LabelRow:
    """One frame of a labels file: the image path relative to the project, where it was read, its keypoints."""

    image: str  # relative to the project, '/' separated
    where: str  # "row 7 of <file>" for error messages
    keypoints_xy: np.ndarray  # (I, K, 2) float64, individuals x config bodyparts (I = 1 single-animal), NaN = none
    unique_xy: np.ndarray  # (U, 2) float64, the unique bodyparts of a multi-animal project (U = 0 otherwise)


@dataclass(frozen=True)
class _Columns:
    """Where each coordinate is in a labels table's data columns."""

    xy: np.ndarray  # (I, K, 2) int: x / y column of each individual's bodypart
    unique_xy: np.ndarray  # (U, 2) int: x / y column of each unique bodypart


def _name_list(config: dict, key: str, p: Path, allow_empty: bool = False) -> list[str]:
    values = config.get(key)
    if values is None and allow_empty:
        return []
    if (
        not isinstance(values, list)
        or (not values and not allow_empty)
        or not all(isinstance(v, str) and v for v in values)
    ):
        kind = "a list" if allow_empty else "a non-empty list"
        raise ValueError(f"{p}: '{key}' must be {kind} of names, got {values!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{p}: '{key}' has repeated names: {values}")
    return values


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
    individuals: list[str] = []
    unique: list[str] = []
    if config.get("multianimalproject") or config.get("bodyparts") == "MULTI!":
        if not config.get("individuals"):
            raise ValueError(
                f"{p} is a multi-animal DeepLabCut project (multianimalproject: true) without an 'individuals' list; "
                "add the individuals' names (as DeepLabCut's create_new_project does) or set multianimalproject: false"
            )
        individuals = _name_list(config, "individuals", p)
        if UNIQUE_INDIVIDUAL in individuals:
            raise ValueError(f"{p}: '{UNIQUE_INDIVIDUAL}' names DeepLabCut's unique bodyparts, not an individual")
        bodyparts = _name_list(config, "multianimalbodyparts", p)
        unique = _name_list(config, "uniquebodyparts", p, allow_empty=True)
        both = sorted(set(bodyparts) & set(unique))
        if both:
            raise ValueError(f"{p}: {both} are both multianimalbodyparts and uniquebodyparts; list each once")
    else:
        bodyparts = _name_list(config, "bodyparts", p)
    index = {b: i for i, b in enumerate(bodyparts)}
    skeleton = []
    for edge in config.get("skeleton") or []:
        if not isinstance(edge, list) or len(edge) != 2 or any(e not in index for e in edge):
            if isinstance(edge, list) and len(edge) == 2 and all(e in index or e in unique for e in edge):
                continue  # an edge to a unique bodypart (not on an animal) draws nothing on one animal
            raise ValueError(
                f"{p}: skeleton edge {edge!r} must be a pair of bodypart names from {bodyparts}; fix or remove it"
            )
        skeleton.append((index[edge[0]], index[edge[1]]))
    scorer = config.get("scorer")
    return DlcConfig(
        p,
        tuple(bodyparts),
        tuple(skeleton),
        str(scorer) if scorer else None,
        config.get("Task"),
        tuple(individuals),
        tuple(unique),
    )


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
    path: Path,
    scorers: list[str],
    individuals: list[str] | None,
    bodyparts: list[str],
    coords: list[str],
    config: DlcConfig,
    scorer: str,
) -> _Columns:
    """Validate the (scorer, [individuals,] bodyparts, coords) column header; return where each coordinate is."""
    wrong_scorer = sorted({s for s in scorers if s != scorer})
    if wrong_scorer:
        raise ValueError(f"{path}: columns are labelled by scorer {wrong_scorer}, expected {scorer!r} (file name)")
    bad_coords = sorted({c for c in coords if c not in ("x", "y")})
    if bad_coords:
        raise ValueError(f"{path}: coords header has {bad_coords}; a DeepLabCut labels file has only x and y columns")
    if individuals is None and config.multianimal:
        raise ValueError(
            f"{path} has no 'individuals' header row, but {config.path} is a multi-animal project; relabel or convert "
            "the labels with DeepLabCut (convert2_maDLC), or set multianimalproject: false"
        )
    if individuals is not None and not config.multianimal:
        raise ValueError(
            f"{path} is a multi-animal labels file (an 'individuals' header), but {config.path} is a single-animal "
            "project; set multianimalproject: true with its individuals, multianimalbodyparts and uniquebodyparts"
        )
    owners = individuals if individuals is not None else [""] * len(bodyparts)
    columns: dict[str, dict[str, dict[str, int]]] = {}  # individual -> bodypart -> coord -> column
    for col, (who, part, coord) in enumerate(zip(owners, bodyparts, coords, strict=True)):
        parts = columns.setdefault(who, {})
        if coord in parts.setdefault(part, {}):
            raise ValueError(f"{path}: bodypart {part!r}{f' of {who!r}' if who else ''} has two {coord!r} columns")
        parts[part][coord] = col

    def xy_of(who: str, expected: tuple[str, ...], kind: str) -> np.ndarray:
        parts = columns.get(who, {})
        if set(parts) != set(expected):
            missing = [b for b in expected if b not in parts]
            unknown = [b for b in parts if b not in expected]
            whose = f" of individual {who!r}" if who else ""
            raise ValueError(
                f"{path}: header bodyparts{whose} {list(parts)} do not match config.yaml {kind} {list(expected)} "
                f"(missing from the labels: {missing}; not in config.yaml: {unknown}); make config.yaml list the "
                "labelled bodyparts, or relabel the frames in DeepLabCut"
            )
        half = [b for b, xy in parts.items() if set(xy) != {"x", "y"}]
        if half:
            raise ValueError(f"{path}: bodyparts {half} lack an x or a y column")
        return np.array([[parts[b]["x"], parts[b]["y"]] for b in expected], dtype=np.int64).reshape(len(expected), 2)

    if individuals is None:
        return _Columns(xy_of("", config.bodyparts, "bodyparts")[None], np.zeros((0, 2), np.int64))
    unknown_individuals = [w for w in columns if w not in config.individuals and w != UNIQUE_INDIVIDUAL]
    if unknown_individuals:
        raise ValueError(
            f"{path}: individuals {unknown_individuals} are not in config.yaml's individuals "
            f"{list(config.individuals)}; add them to config.yaml (or use the config these labels were made with)"
        )
    absent = [w for w in config.individuals if w not in columns]
    if absent:
        raise ValueError(
            f"{path}: config.yaml individuals {absent} have no columns in the labels; DeepLabCut writes every "
            "individual — remove them from config.yaml or relabel the frames"
        )
    unique = (
        xy_of(UNIQUE_INDIVIDUAL, config.unique_bodyparts, "uniquebodyparts")
        if config.unique_bodyparts or UNIQUE_INDIVIDUAL in columns
        else np.zeros((0, 2), np.int64)
    )
    xy = np.stack([xy_of(w, config.bodyparts, "multianimalbodyparts") for w in config.individuals])
    return _Columns(xy, unique)


def read_labels_csv(path: str | Path, config: DlcConfig, scorer: str) -> list[_LabelRow]:
    """Read ``CollectedData_<scorer>.csv`` (one- or three-column row labels; three or four header rows) into
    config individual and bodypart order."""
    p = Path(path)
    with open(p, newline="", encoding="utf-8") as f:
        text = f.read()
    rows = list(csv.reader(io.StringIO(text)))
    complete = text.endswith(("\n", "\r"))  # a file cut mid-row (copy or disk full) has no final line end
    while rows and not any(cell.strip() for cell in rows[-1]):
        rows.pop()
    firsts = [r[0].strip() if r else "" for r in rows[:4]]
    if firsts[:3] == ["scorer", "bodyparts", "coords"]:
        n_header = 3
    elif firsts == ["scorer", "individuals", "bodyparts", "coords"]:
        n_header = 4
    else:
        raise ValueError(
            f"{p}: expected DeepLabCut's header rows starting 'scorer', 'bodyparts', 'coords' (multi-animal: "
            f"'scorer', 'individuals', 'bodyparts', 'coords'); got {[r[:1] for r in rows[:4]]}"
        )
    header = rows[:n_header]
    n_index = 1
    while n_index < len(header[0]) and header[0][n_index].strip() == "":
        n_index += 1
    if n_index not in (1, 3):
        raise ValueError(f"{p}: {n_index} row-label columns; expected 1 (image path) or 3 (labeled-data, video, image)")
    width = len(header[0])
    if any(len(r) != width for r in header):
        raise ValueError(f"{p}: the {n_header} header rows have different lengths {[len(r) for r in header]}")
    levels = [[c.strip() for c in r[n_index:]] for r in header]
    scorers, individuals, bodyparts, coords = levels[0], levels[1] if n_header == 4 else None, levels[-2], levels[-1]
    columns = _check_header(p, scorers, individuals, bodyparts, coords, config, scorer)
    names = [
        "/".join(part for part in (individuals[c] if individuals else "", bodyparts[c], coords[c]) if part)
        for c in range(width - n_index)
    ]
    out = []
    for line_no, row in enumerate(rows[n_header:], start=n_header + 1):
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
        numbers = np.array(
            [_parse_coordinate(cell, where, names[c]) for c, cell in enumerate(row[n_index:])], dtype=np.float64
        )
        out.append(_LabelRow("/".join(parts), where, numbers[columns.xy], numbers[columns.unique_xy]))
    return out


def read_labels_h5(path: str | Path, config: DlcConfig, scorer: str) -> list[_LabelRow]:
    """Read ``CollectedData_<scorer>.h5`` (pandas, key ``df_with_missing``) into config individual and bodypart
    order."""
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
    if not isinstance(frame, pd.DataFrame) or frame.columns.nlevels not in (3, 4):
        levels = getattr(getattr(frame, "columns", None), "names", None)
        raise ValueError(
            f"{p}: expected columns (scorer, bodyparts, coords) or (scorer, individuals, bodyparts, coords), got "
            f"levels {levels}"
        )
    levels = [[str(v) for v in frame.columns.get_level_values(i)] for i in range(frame.columns.nlevels)]
    individuals = levels[1] if len(levels) == 4 else None
    columns = _check_header(p, levels[0], individuals, levels[-2], levels[-1], config, scorer)
    values = frame.to_numpy(dtype=np.float64)  # (rows, columns)
    out = []
    for row, label in enumerate(frame.index):
        parts = [str(v) for v in label] if isinstance(label, tuple) else [str(label)]
        image = "/".join(part.replace("\\", "/") for part in parts)
        where = f"entry {row} ({image}) of {p}"
        bad = ~np.isnan(values[row]) & ~np.isfinite(values[row])
        if bad.any():
            c = int(np.flatnonzero(bad)[0])
            column = "/".join(level[c] for level in levels[1:])
            raise ValueError(f"{where}: infinite coordinate for {column}")
        out.append(_LabelRow(image, where, values[row][columns.xy], values[row][columns.unique_xy]))
    return out


def _find_labels(folder: Path, scorer: str, prefer: str) -> Path | None:
    """The labels file of ``folder`` in the preferred format, or the other format if only that exists."""
    order = PREFER if prefer == "h5" else PREFER[::-1]
    for ext in order:
        candidate = folder / f"{LABELS_PREFIX}{scorer}.{ext}"
        if candidate.is_file():
            return candidate
    return None


def _all_points(row: _LabelRow) -> np.ndarray:
    """``(I * K + U, 2)`` every coordinate of a row, for comparing two files."""
    return np.concatenate([row.keypoints_xy.reshape(-1, 2), row.unique_xy])


def _compare_label_files(
    used: Path, used_rows: list[_LabelRow], other: Path, config: DlcConfig, scorer: str
) -> list[str]:
    """A warning when a folder's CSV and H5 labels disagree (someone edited one of them), naming the file used."""
    read = read_labels_h5 if other.suffix == ".h5" else read_labels_csv
    try:
        other_rows = {r.image: _all_points(r) for r in read(other, config, scorer)}
    except (ValueError, ImportError) as err:
        return [f"{other} cannot be read ({err}); using {used.name}"]
    used_map = {r.image: _all_points(r) for r in used_rows}
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
    """Load the labelled frames of a DeepLabCut project (single- or multi-animal, see the module docstring).

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
        A ``PoseDataset``: one ``Sample`` per labelled frame (sample id = image path relative to the project) or,
        multi-animal, per labelled individual in a frame (id ``<image path>#<individual>``, ``track`` = the
        individual), keypoints in image pixels, no bounding boxes (top-down crops derive them from the keypoints).
        Frames with no labelled keypoint are kept as one sample with ``labelled=False``; label folders without a
        labels file for the scorer, and the labelled points of unique bodyparts, are listed in ``summary.skipped``.
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
    unique_points = unique_frames = 0
    for row in rows:
        if row.image in seen:
            raise ValueError(f"image {row.image} is labelled twice ({seen[row.image]} and {row.where}); keep one row")
        seen[row.image] = row.where
        image_path = project / row.image
        if check_images and not image_path.is_file():
            raise FileNotFoundError(
                f"image {row.image} ({row.where}) does not exist under {project}; restore the image or delete its row"
            )
        xy = row.keypoints_xy.copy()  # (I, K, 2)
        labelled = np.isfinite(xy).all(axis=2)  # (I, K); a half-filled x/y pair counts as not labelled
        xy[~labelled] = np.nan
        n_unique = int(np.isfinite(row.unique_xy).all(axis=1).sum())
        unique_points += n_unique
        unique_frames += int(n_unique > 0)
        animals = [i for i in range(len(xy)) if labelled[i].any()]
        if not config.multianimal or not animals:
            # single-animal (I = 1), or a multi-animal frame where no individual is labelled (all NaN): one sample
            samples.append(
                Sample(
                    sample_id=row.image,
                    image_path=image_path,
                    keypoints_xy=xy[0].astype(np.float32),
                    visible=np.where(labelled[0], 2.0, 0.0).astype(np.float32),
                    category=category,
                    labelled=bool(animals),
                )
            )
            continue
        for i in animals:
            samples.append(
                Sample(
                    sample_id=f"{row.image}#{config.individuals[i]}",
                    image_path=image_path,
                    keypoints_xy=xy[i].astype(np.float32),
                    visible=np.where(labelled[i], 2.0, 0.0).astype(np.float32),
                    category=category,
                    track=config.individuals[i],
                )
            )
            seen[samples[-1].sample_id] = row.where
    if unique_points:
        skipped.append(
            Skipped(
                f"unique bodyparts {list(config.unique_bodyparts)}: {unique_points} labelled point(s) in "
                f"{unique_frames} frame(s)",
                f"on no animal (DeepLabCut's '{UNIQUE_INDIVIDUAL}' individual); tardis-edge poses animals only",
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
