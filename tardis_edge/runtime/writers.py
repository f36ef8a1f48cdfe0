"""Outputs of the edge runtime: DeepLabCut analysis results (H5, CSV, meta pickle), COCO keypoint results, overlay
video/images.

DeepLabCut 3's ``analyze_videos`` writes, for video ``<video>`` and scorer ``<scorer>`` (``DLC_…``, the model's name)::

    <video><scorer>.h5            pandas table, key "df_with_missing", columns (scorer, bodyparts, coords), one row
                                  per frame (index: frame number, or image file name for image folders)
    <video><scorer>.csv           the same table, three header rows
    <video><scorer>_meta.pickle   {"data": {...}}: scorer, fps, nframes, frame_dimensions, cropping, ...

``DlcResultWriter`` writes exactly these names and keys (and ``<video><scorer>_coco.json``, COCO keypoint results).
DeepLabCut finds results by file name (``auxiliaryfunctions.find_analyzed_data``: ``<video><scorer>*.h5``), so the
scorer must be the one the DeepLabCut call looks for: ``--scorer`` names an existing shuffle's scorer
(``DLC_Resnet50_openfieldOct30shuffle1_snapshot_200``), and the default ``DLC_<artifact folder name>`` is what
``create_labeled_video(..., init_weights=ARTIFACT)`` looks for. Multi-animal results use DeepLabCut's tracked layout:
``<video><scorer>_el.h5`` (``_bx``/``_sk``/``_tr`` for the other trackers), columns (scorer, individuals, bodyparts,
coords), key "df_with_missing" too: DeepLabCut reads whichever one table a file holds, and ``movement`` reads only
that key (DeepLabCut's tracklet stitcher writes "tracks", which ``movement.io.load_poses.from_dlc_file`` refuses).

Values (``values="deeplabcut"``, the default) are what DeepLabCut's tools and its ecosystem expect: ``likelihood`` is
the keypoint's score clipped to [0, 1], and ``x, y`` are always finite in single-animal files — where a keypoint is
not found (score <= 0, or an unreadable frame) its likelihood is 0 and its position is the keypoint's last found
position (its first found one before that; 0 if never found), so filters, ``analyzeskeleton`` and Kalman filters see
no NaN and every tool that honours ``pcutoff`` ignores the point. Multi-animal files follow DeepLabCut's tracked
files instead: an individual or keypoint not found is NaN. ``values="raw"`` writes NaN where not found and the
unclipped score. What the score means for ``pcutoff``: README.md, "DeepLabCut users".

pandas 3.1 stopped writing the ``pandas_version`` attribute to HDF5 tables (pandas GH 62792), and pandas <= 3.0 (every
DeepLabCut environment) cannot read a table without it; ``write_dlc_h5`` writes it. Which DeepLabCut functions and
tools were run on these files: tests/dlc/test_dlc_outputs.py and the table in README.md. ``read_dlc_predictions``
reads single-animal results back (our label reader, ``tardis_edge.data.dlc``, takes labels files, which have no
``likelihood`` column, and refuses these).

Every write goes through ``tardis_edge.io``: results are rewritten whole to a temporary file and renamed, so a
killed run leaves complete files with every frame flushed so far.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from tardis_edge.io import atomic_path, atomic_write_bytes, atomic_write_text, strict_json
from tardis_edge.multi import instance_score

H5_KEY = "df_with_missing"
COORDS = ("x", "y", "likelihood")
LEVELS = ("scorer", "bodyparts", "coords")
MULTI_LEVELS = ("scorer", "individuals", "bodyparts", "coords")
# DeepLabCut's tracker name -> the suffix of its tracked result files (core/trackingutils.py TRACK_METHODS)
TRACK_SUFFIXES = {"box": "_bx", "skeleton": "_sk", "ellipse": "_el", "transformer": "_tr"}
VALUES = ("deeplabcut", "raw")
# pandas <= 3.0 reads a table only when its group carries "pandas_version" (without it, it remaps the columns as for
# files older than pandas 0.10.1 and fails); pandas before 3.1 wrote this constant, pandas 3.1 writes nothing.
PANDAS_VERSION = "0.15.2"
SINGLE_ANIMAL_INDIVIDUALS = ["individual_1"]  # DeepLabCut 3's individuals of a single-animal project
FLUSH_TIME_RATIO = 9.0  # wait at least 9x the last flush's duration before the next: flushing stays under 10%


def _import_pandas():
    try:
        import pandas as pd
    except ImportError as e:
        raise ImportError("writing DeepLabCut files needs pandas: pip install 'tardis-edge[runtime]'") from e
    return pd


def check_scorer(scorer: str) -> str:
    """``scorer`` if DeepLabCut can find results named after it: it starts with ``DLC`` and names no folder."""
    if not scorer.startswith("DLC") or any(c in scorer for c in "/\\") or scorer != scorer.strip():
        raise ValueError(
            f"scorer {scorer!r}: DeepLabCut finds results named <video><scorer>.h5 with a scorer starting 'DLC' and "
            "no path separator; pass the shuffle's scorer (e.g. DLC_Resnet50_openfieldOct30shuffle1_snapshot_200) "
            "or DLC_<name>"
        )
    return scorer


def default_scorer(artifact: str | Path) -> str:
    """``DLC_<artifact folder name>``: the scorer ``create_labeled_video(..., init_weights=ARTIFACT)`` looks for
    (DeepLabCut takes ``"DLC_" + Path(init_weights).stem``). A ``model.json`` or a file names its folder or stem."""
    p = Path(artifact).resolve()
    if p.name == "model.json":
        p = p.parent
    return f"DLC_{p.stem}"


def dlc_result_stem(stem: str, scorer: str, track_method: str | None = None) -> str:
    """``<video><scorer>`` (single animal) or ``<video><scorer>_el`` (multi-animal, tracked with ``track_method``)."""
    if track_method is None:
        return f"{stem}{scorer}"
    if track_method not in TRACK_SUFFIXES:
        raise ValueError(f"unknown DeepLabCut track method {track_method!r}; choose one of {sorted(TRACK_SUFFIXES)}")
    return f"{stem}{scorer}{TRACK_SUFFIXES[track_method]}"


def not_found(keypoints: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``scores.shape`` mask of keypoints not found: no finite position, or a score that is NaN or <= 0 (the rule of
    ``tardis_edge.predict``, which owns it)."""
    from tardis_edge.predict import confident

    return ~confident(np.asarray(keypoints), np.asarray(scores), 0.0)


def dlc_values(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeepLabCut-compatible single-animal values: finite ``x, y`` and ``likelihood`` in [0, 1].

    Args:
        keypoints: ``(N, K, 2)`` image pixels of consecutive rows (frames), NaN where not found.
        scores: ``(N, K)`` scores (NaN for unreadable frames).

    Returns:
        ``(xy (N, K, 2), likelihood (N, K))``: the score clipped to [0, 1]; where a keypoint is not found, likelihood
        0 and the keypoint's last found position (its first found one before it is ever found; 0 if never found).
    """
    missing = not_found(keypoints, scores)  # (N, K)
    likelihood = np.where(missing, 0.0, np.clip(np.nan_to_num(scores, nan=0.0), 0.0, 1.0))
    if len(keypoints) == 0:
        return np.zeros_like(keypoints, dtype=np.float64), likelihood
    rows = np.broadcast_to(np.arange(len(keypoints))[:, None], missing.shape)
    last = np.maximum.accumulate(np.where(missing, -1, rows), axis=0)  # (N, K) last found row, -1 before the first
    first = np.argmax(~missing, axis=0)  # (K,) first found row (0 if never)
    source = np.where(last >= 0, last, first[None, :])
    xy = np.take_along_axis(np.asarray(keypoints, np.float64), np.repeat(source[..., None], 2, axis=-1), axis=0)
    xy[:, missing.all(axis=0)] = 0.0
    return xy, likelihood


def dlc_multi_values(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeepLabCut's tracked-file values: ``likelihood`` in [0, 1], and NaN ``x, y, likelihood`` where not found."""
    missing = not_found(keypoints, scores)
    likelihood = np.where(missing, np.nan, np.clip(np.nan_to_num(scores, nan=0.0), 0.0, 1.0))
    return np.where(missing[..., None], np.nan, keypoints).astype(np.float64), likelihood


def dlc_dataframe(
    scorer: str,
    bodyparts: Sequence[str],
    index: Sequence[int | str],
    keypoints: np.ndarray,
    scores: np.ndarray,
    individuals: Sequence[str] | None = None,
):
    """The DataFrame DeepLabCut writes for analysed frames, with the values as given (see ``dlc_values``).

    Args:
        scorer: the scorer (model) name in the first column level.
        bodyparts: ``K`` keypoint names.
        index: one label per row: frame numbers (video) or image names.
        keypoints: ``(N, K, 2)`` image pixels; multi-animal: ``(N, M, K, 2)``.
        scores: the likelihood column, ``(N, K)``; multi-animal: ``(N, M, K)``.
        individuals: None (single animal: columns scorer/bodyparts/coords), or ``M`` names (multi-animal: columns
            scorer/individuals/bodyparts/coords, as DeepLabCut's tracked files).
    """
    pd = _import_pandas()
    lead = (len(index),) if individuals is None else (len(index), len(individuals))
    shape = (*lead, len(bodyparts))
    if scores.shape != shape or keypoints.shape != (*shape, 2):
        raise ValueError(
            f"inconsistent shapes: keypoints {keypoints.shape} and scores {scores.shape} for {len(index)} index "
            f"labels, {'' if individuals is None else f'{len(individuals)} individuals, '}{len(bodyparts)} bodyparts"
        )
    if individuals is None:
        columns = pd.MultiIndex.from_product([[scorer], list(bodyparts), list(COORDS)], names=list(LEVELS))
    else:
        levels = [[scorer], list(individuals), list(bodyparts), list(COORDS)]
        columns = pd.MultiIndex.from_product(levels, names=list(MULTI_LEVELS))
    values = np.concatenate([keypoints, scores[..., None]], axis=-1).reshape(len(index), -1)  # (N, [M *] K * 3)
    return pd.DataFrame(values.astype(np.float64), columns=columns, index=list(index))


def write_dlc_h5(path: str | Path, frame, key: str = H5_KEY) -> None:
    """``frame.to_hdf(path, key=key, format="table", mode="w")`` through a temporary file, readable by pandas 2 and 3
    (the ``pandas_version`` attribute pandas <= 3.0 needs is written when this pandas did not)."""
    try:
        import tables
    except ImportError as e:
        raise ImportError(f"writing {path} needs PyTables: pip install 'tardis-edge[runtime]'") from e
    with atomic_path(path) as tmp:
        frame.to_hdf(tmp, key=key, format="table", mode="w")
        with tables.open_file(str(tmp), mode="a") as h5:
            attrs = h5.get_node(f"/{key}")._v_attrs
            if "pandas_version" not in attrs._v_attrnames:
                attrs.pandas_version = PANDAS_VERSION
        _check_h5_complete(tmp, path, len(frame), key)


def _check_h5_complete(tmp: Path, path: str | Path, rows: int, key: str) -> None:
    """HDF5 does not report a write cut short by a full disk or a file-size limit: it leaves a truncated file and
    returns. Read the table's row count back, so such a file never replaces the last complete one."""
    import tables

    try:
        with tables.open_file(str(tmp), mode="r") as h5:
            stored = h5.get_node(f"/{key}/table").nrows
    except Exception:  # noqa: BLE001 - any failure to read it back means the write did not complete
        stored = -1
    if stored != rows:
        raise OSError(
            errno.ENOSPC,
            f"HDF5 could not write the whole file ({rows} rows; no space left on device, or a file-size limit)",
            str(path),
        )


def write_dlc_csv(path: str | Path, frame) -> None:
    """``frame.to_csv`` (a header row per column level) through a temporary file."""
    atomic_write_text(path, frame.to_csv())


def dlc_metadata(
    scorer: str,
    bodyparts: Sequence[str],
    *,
    nframes: int,
    fps: float | None,
    frame_wh: tuple[int, int] | None,
    start: float,
    stop: float,
    batch_size: int,
    individuals: Sequence[str] | None = None,
    model: dict | None = None,
) -> dict:
    """The ``_meta.pickle`` dict DeepLabCut 3's ``analyze_videos`` writes (``{"data": {...}}``, the same keys).

    DeepLabCut's ``"pytorch-config"`` is None (no DeepLabCut model config) and ``"tardis-edge"`` describes the
    artifact instead; the project's ``"iteration (active-learning)"`` and ``"training set fraction"`` are None. No
    cropping: ``"cropping_parameters"`` is the whole frame ``[0, width, 0, height]``, as DeepLabCut writes then.
    """
    w, h = frame_wh or (0, 0)
    data: dict[str, Any] = {
        "start": float(start),
        "stop": float(stop),
        "run_duration": float(stop - start),
        "Scorer": scorer,
        "pytorch-config": None,
        "tardis-edge": dict(model or {}),
        "fps": None if fps is None else float(fps),
        "batch_size": int(batch_size),
        "frame_dimensions": (int(w), int(h)),
        "nframes": int(nframes),
        "iteration (active-learning)": None,
        "training set fraction": None,
        "cropping": False,
        "cropping_parameters": [0, int(w), 0, int(h)],
        "individuals": list(individuals) if individuals is not None else list(SINGLE_ANIMAL_INDIVIDUALS),
        "bodyparts": list(bodyparts),
        "unique_bodyparts": [],
    }
    return {"data": data}


def write_dlc_metadata(path: str | Path, metadata: dict) -> None:
    """Pickle ``metadata`` (protocol 4: any Python 3 DeepLabCut reads it) through a temporary file."""
    atomic_write_bytes(path, pickle.dumps(metadata, protocol=4))


@dataclass
class DlcPredictions:
    """A DeepLabCut analysis file read back."""

    scorer: str
    bodyparts: list[str]
    index: list[str]  # row labels as text (frame numbers or image paths)
    keypoints: np.ndarray  # (N, K, 2) image pixels (NaN where missing in raw files)
    likelihood: np.ndarray  # (N, K)


def _predictions_from_columns(
    path: Path, scorers: list[str], parts: list[str], coords: list[str], index: list[str], values: np.ndarray
) -> DlcPredictions:
    if len(set(scorers)) != 1:
        raise ValueError(f"{path}: expected one scorer, found {sorted(set(scorers))}")
    bodyparts = list(dict.fromkeys(parts))
    expected = [(b, c) for b in bodyparts for c in COORDS]
    if list(zip(parts, coords, strict=True)) != expected:
        raise ValueError(
            f"{path}: columns must be x, y, likelihood per bodypart (DeepLabCut analysis results); got coords "
            f"{sorted(set(coords))} — a labels file (x, y only) is read with tardis_edge.data.dlc instead"
        )
    k = len(bodyparts)
    table = values.reshape(len(index), k, 3)
    return DlcPredictions(scorers[0], bodyparts, index, table[..., :2].copy(), table[..., 2].copy())


def read_dlc_predictions(path: str | Path) -> DlcPredictions:
    """Read a single-animal DeepLabCut analysis result (``.h5`` holding one table, or its ``.csv``)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} does not exist")
    if p.suffix == ".h5":
        pd = _import_pandas()
        frame = pd.read_hdf(p)  # the file's one table, as DeepLabCut reads it
        if frame.columns.nlevels != 3 or list(frame.columns.names) != list(LEVELS):
            raise ValueError(
                f"{p}: columns must have levels {list(LEVELS)} (single-animal results), got "
                f"{list(frame.columns.names)}; read multi-animal files with pandas.read_hdf"
            )
        levels = [[str(v) for v in frame.columns.get_level_values(i)] for i in range(3)]
        index = [str(v) for v in frame.index]
        return _predictions_from_columns(p, levels[0], levels[1], levels[2], index, frame.to_numpy(dtype=np.float64))
    with open(p, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if len(rows) < 3 or [r[0] for r in rows[:3]] != list(LEVELS):
        raise ValueError(
            f"{p}: expected three header rows starting {', '.join(LEVELS)}; got {[r[:1] for r in rows[:3]]}"
        )
    levels = [r[1:] for r in rows[:3]]
    body = rows[3:]
    values = np.full((len(body), len(rows[0]) - 1), np.nan)
    for line_no, row in enumerate(body, start=4):
        if len(row) != len(rows[0]):
            raise ValueError(f"row {line_no} of {p} has {len(row)} cells, the header has {len(rows[0])}")
        for col, cell in enumerate(row[1:]):
            if cell.strip():
                try:
                    values[line_no - 4, col] = float(cell)
                except ValueError:
                    column = f"{levels[1][col]}/{levels[2][col]}"
                    raise ValueError(f"row {line_no} of {p}, column {column}: {cell!r} is not a number") from None
    return _predictions_from_columns(p, levels[0], levels[1], levels[2], [row[0] for row in body], values)


# ---------------------------------------------------------------------------------------------------- COCO
def coco_results(
    image_ids: Sequence[int],
    keypoints: np.ndarray,
    scores: np.ndarray,
    category_id: int = 1,
    file_names: Sequence[str] | None = None,
    track_ids: Sequence[int] | None = None,
) -> list[dict]:
    """COCO keypoint results (``COCO.loadRes`` format), one entry per animal instance.

    Args:
        image_ids: ``(I,)`` the ground truth's image id of each instance.
        keypoints: ``(I, K, 2)`` image pixels (NaN: not found).
        scores: ``(I, K)`` keypoint scores (<= 0 or NaN: not found).
        category_id: the ground truth's category.
        file_names: optional ``(I,)`` image names, written as ``file_name`` (ignored by ``loadRes``).
        track_ids: optional ``(I,)`` identities (multi-animal tracking), written as ``track_id`` (as PoseTrack and
            mmpose's tracking results do; ignored by ``loadRes``).

    Each entry has ``keypoints`` ``[x, y, v] * K`` with ``v`` the score clipped to [0, 1], ``score`` (the mean of
    those, ``tardis_edge.multi.instance_score``: the score ``tardis_edge.metrics`` ranks detections by), and ``bbox``
    / ``area`` around the keypoints found. A keypoint not found is left out of the box and written as ``0, 0, 0``
    (the array must hold every keypoint; COCO's "no keypoint"); an instance with no keypoint found is not written.
    """
    results = []
    for i, image_id in enumerate(image_ids):
        found = ~not_found(keypoints[i], scores[i])  # (K,)
        if not found.any():
            continue
        xy = np.where(found[:, None], keypoints[i], 0.0)
        v = np.where(found, np.clip(np.nan_to_num(scores[i], nan=0.0), 0.0, 1.0), 0.0)
        low, high = keypoints[i][found].min(axis=0), keypoints[i][found].max(axis=0)
        entry = {
            "image_id": int(image_id),
            "category_id": int(category_id),
            "keypoints": [round(float(c), 3) for c in np.column_stack([xy, v]).reshape(-1)],
            "score": round(float(instance_score(np.nan_to_num(scores[i : i + 1], nan=0.0))[0]), 6),
            "bbox": [round(float(c), 3) for c in (*low, *(high - low))],
            "area": round(float(np.prod(high - low)), 3),
        }
        if file_names is not None:
            entry["file_name"] = str(file_names[i])
        if track_ids is not None:
            entry["track_id"] = int(track_ids[i])
        results.append(entry)
    return results


@dataclass
class CocoGroundTruth:
    """What results need from a COCO ground-truth file: its image ids (found by file name) and the category.

    Attributes:
        path: the ground-truth JSON.
        category_id: the category whose keypoints the model predicts.
        images: ``file_name`` path parts -> image id.
    """

    path: Path
    category_id: int
    images: dict[tuple[str, ...], int]

    @classmethod
    def read(cls, path: str | Path, keypoint_names: Sequence[str]) -> CocoGroundTruth:
        """Read ``path``; the category is the only one, or the one whose ``keypoints`` are ``keypoint_names``."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"--coco-gt {p} does not exist; pass the COCO ground-truth JSON") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"--coco-gt {p} is not a JSON file ({exc}); pass the COCO ground-truth JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise ValueError(f"--coco-gt {p} has no 'images' list; pass a COCO ground-truth file (images, categories)")
        categories = [c for c in data.get("categories", []) if isinstance(c, dict) and "id" in c]
        names = list(keypoint_names)
        matching = [c for c in categories if c.get("keypoints") == names]
        if len(categories) == 1 and categories[0].get("keypoints") in (None, names):
            category = categories[0]
        elif len(matching) == 1:
            category = matching[0]
        else:
            listed = [(c["id"], c.get("name"), c.get("keypoints")) for c in categories]
            raise ValueError(
                f"--coco-gt {p}: no single category with this model's keypoints {names}; its categories (id, name, "
                f"keypoints) are {listed}"
            )
        images: dict[tuple[str, ...], int] = {}
        for n, image in enumerate(data["images"]):
            if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
                raise ValueError(f"--coco-gt {p}: images[{n}] has no 'id' and 'file_name'; got {image!r:.120}")
            parts = PurePosixPath(image["file_name"].replace("\\", "/")).parts
            if parts in images:
                raise ValueError(
                    f"--coco-gt {p}: images {images[parts]} and {image['id']} have the same file_name "
                    f"{image['file_name']!r}; each image needs its own"
                )
            images[parts] = int(image["id"])
        return cls(p, int(category["id"]), images)

    def image_id(self, image_path: str | Path) -> int | None:
        """The id of the ground-truth image whose ``file_name`` ends ``image_path`` (the longest such name), or None."""
        parts = Path(image_path).resolve().parts
        matches = [(len(k), v) for k, v in self.images.items() if len(k) <= len(parts) and parts[-len(k) :] == k]
        return max(matches)[1] if matches else None


# ---------------------------------------------------------------------------------------------------- writer
class DlcResultWriter:
    """Collects one source's results and (re)writes its DeepLabCut files and COCO results (see the module docstring).

    Rows are frames in order; an unreadable frame is added as ``None`` (a row all "not found", so row ``i`` stays
    frame ``i`` for DeepLabCut tools) and gets no COCO entry.

    Args:
        out_dir: output folder.
        stem: the video (or image folder) name.
        scorer: DeepLabCut scorer name (``check_scorer``).
        bodyparts: keypoint names.
        formats: any of ``csv``, ``h5``, ``coco`` (csv or h5 also write the ``_meta.pickle``).
        individuals: None (single animal), or the multi-animal individuals (``add`` then takes ``(M, K, 2)``).
        track_method: multi-animal: the DeepLabCut tracker named in the file (``_el`` for "ellipse").
        values: ``"deeplabcut"`` (finite, likelihood in [0, 1]; the module docstring) or ``"raw"``.
        fps: the video's frame rate (meta pickle).
        batch_size: frames per inference call (meta pickle).
        model: what made the results (artifact, backend, precision ...), kept in the meta pickle.
        category_id: the COCO category of the results.
    """

    FORMATS = ("csv", "h5", "coco")

    def __init__(
        self,
        out_dir: str | Path,
        stem: str,
        scorer: str,
        bodyparts: Sequence[str],
        formats: Sequence[str] = FORMATS,
        *,
        individuals: Sequence[str] | None = None,
        track_method: str = "ellipse",
        values: str = "deeplabcut",
        fps: float | None = None,
        batch_size: int = 1,
        model: dict | None = None,
        category_id: int = 1,
    ) -> None:
        unknown = sorted(set(formats) - set(self.FORMATS))
        if unknown:
            raise ValueError(f"unknown output formats {unknown}; choose from {list(self.FORMATS)}")
        if values not in VALUES:
            raise ValueError(f"unknown values {values!r}; choose one of {', '.join(VALUES)}")
        self.out_dir = Path(out_dir)
        self.stem = stem
        self.scorer = check_scorer(scorer)
        self.bodyparts = list(bodyparts)
        self.formats = tuple(formats)
        self.individuals = None if individuals is None else list(individuals)
        self.track_method = None if individuals is None else track_method
        self.result_stem = dlc_result_stem(stem, self.scorer, self.track_method)
        self.values = values
        self.fps = fps
        self.batch_size = batch_size
        self.model = dict(model or {})
        self.category_id = category_id
        self.frame_wh: tuple[int, int] | None = None
        self._start = time.time()
        self._index: list[int | str] = []
        self._image_ids: list[int | None] = []
        self._keypoints: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self.rows_written = 0
        self._rows_in_file: dict[str, int] = {}  # format -> frames its file holds (they can differ after a failure)
        self._last_flush_end = 0.0
        self._last_flush_seconds = 0.0

    @property
    def paths(self) -> dict[str, Path]:
        """Output file per format (``meta``: the ``_meta.pickle`` beside the csv/h5)."""
        # DeepLabCut names the meta pickle of tracked results after the untracked stem (<video><scorer>_meta.pickle)
        names = {
            "csv": f"{self.result_stem}.csv",
            "h5": f"{self.result_stem}.h5",
            "meta": f"{self.stem}{self.scorer}_meta.pickle",
            "coco": f"{self.result_stem}_coco.json",
        }
        wanted = [f for f in ("csv", "h5", "meta", "coco") if f in self.formats or (f == "meta" and self._tables)]
        return {fmt: self.out_dir / names[fmt] for fmt in wanted}

    @property
    def _tables(self) -> bool:
        return "csv" in self.formats or "h5" in self.formats

    def __len__(self) -> int:
        return len(self._index)

    def rows_in_files(self) -> dict[Path, int]:
        """Frames each written file holds (bad frames included): its last complete flush."""
        return {self.paths[fmt]: n for fmt, n in self._rows_in_file.items()}

    def add(
        self,
        label: int | str,
        image_id: int | None,
        keypoints: np.ndarray | None,
        scores: np.ndarray | None,
        image_wh: tuple[int, int] | None = None,
    ) -> None:
        """One frame.

        Args:
            label: the row label (frame number, or image name).
            image_id: its COCO ``image_id`` (None: no COCO entry, e.g. an image the ground truth does not have).
            keypoints: ``(K, 2)`` image pixels (multi-animal ``(M, K, 2)``), NaN where not found; None for a bad frame.
            scores: ``(K,)`` (multi-animal ``(M, K)``); None for a bad frame.
            image_wh: the frame's size (the meta pickle's ``frame_dimensions``: the first one given).
        """
        shape = (len(self.bodyparts),) if self.individuals is None else (len(self.individuals), len(self.bodyparts))
        if keypoints is None or scores is None:
            keypoints, scores = np.full((*shape, 2), np.nan), np.full(shape, np.nan)
        keypoints, scores = np.asarray(keypoints, np.float64), np.asarray(scores, np.float64)
        if keypoints.shape != (*shape, 2) or scores.shape != shape:
            raise ValueError(f"frame {label}: expected keypoints {(*shape, 2)} and scores {shape}, got "
                             f"{keypoints.shape} and {scores.shape}")  # fmt: skip
        if self.frame_wh is None and image_wh is not None:
            self.frame_wh = (int(image_wh[0]), int(image_wh[1]))
        self._index.append(label)
        self._image_ids.append(image_id)
        self._keypoints.append(keypoints)
        self._scores.append(scores)

    def flush_due(self, every: int) -> bool:
        """Whether ``every`` rows were added since the last flush and flushing again keeps its share of the run's
        time under ``1 / (1 + FLUSH_TIME_RATIO)``: each flush rewrites every row, so on long videos flushes space out
        (100k rows take seconds to write) instead of costing O(rows^2)."""
        if len(self._index) - self.rows_written < every:
            return False
        return time.monotonic() - self._last_flush_end >= FLUSH_TIME_RATIO * self._last_flush_seconds

    def table(self):
        """The DeepLabCut DataFrame of every row so far, with the writer's ``values``."""
        keypoints = np.stack(self._keypoints)  # (N, K, 2) or (N, M, K, 2)
        scores = np.stack(self._scores)
        if self.values == "deeplabcut":
            convert = dlc_values if self.individuals is None else dlc_multi_values
            keypoints, scores = convert(keypoints, scores)
        return dlc_dataframe(self.scorer, self.bodyparts, self._index, keypoints, scores, self.individuals)

    def flush(self) -> None:
        """Rewrite every output file with all rows so far (atomic replace of each file)."""
        if not self._index:
            return
        start = time.monotonic()
        rows = len(self._index)
        paths = self.paths
        if self._tables:
            frame = self.table()
            if "csv" in self.formats:
                write_dlc_csv(paths["csv"], frame)
                self._rows_in_file["csv"] = rows
            if "h5" in self.formats:
                write_dlc_h5(paths["h5"], frame)
                self._rows_in_file["h5"] = rows
            metadata = dlc_metadata(
                self.scorer,
                self.bodyparts,
                nframes=rows,
                fps=self.fps,
                frame_wh=self.frame_wh,
                start=self._start,
                stop=time.time(),
                batch_size=self.batch_size,
                individuals=self.individuals,
                model=self.model,
            )
            write_dlc_metadata(paths["meta"], metadata)
            self._rows_in_file["meta"] = rows
        if "coco" in self.formats:
            self._write_coco(paths["coco"])
            self._rows_in_file["coco"] = rows
        self.rows_written = rows
        self._last_flush_end = time.monotonic()
        self._last_flush_seconds = self._last_flush_end - start

    def _write_coco(self, path: Path) -> None:
        ids, names, keypoints, scores, tracks = [], [], [], [], []
        for label, image_id, kps, sc in zip(self._index, self._image_ids, self._keypoints, self._scores, strict=True):
            if image_id is None:
                continue
            for track, (one_kps, one_sc) in enumerate(
                zip(*((kps, sc) if self.individuals is not None else ([kps], [sc])), strict=True)
            ):
                ids.append(image_id)
                names.append(str(label))
                keypoints.append(one_kps)
                scores.append(one_sc)
                tracks.append(track)  # multi-animal: row m of a frame is individual m, i.e. track id m
        k = len(self.bodyparts)
        results = coco_results(
            ids,
            np.reshape(keypoints, (len(ids), k, 2)),
            np.reshape(scores, (len(ids), k)),
            category_id=self.category_id,
            file_names=names,
            track_ids=tracks if self.individuals is not None else None,
        )
        atomic_write_text(path, strict_json(results, indent=None))


def skeleton_colors(num_keypoints: int) -> list[tuple[int, int, int]]:
    """One distinct BGR colour per keypoint (hue wheel)."""
    import cv2

    hues = np.linspace(0, 179, num_keypoints, endpoint=False).astype(np.uint8)
    hsv = np.stack([hues, np.full_like(hues, 255), np.full_like(hues, 255)], axis=-1)[None]
    return [(int(b), int(g), int(r)) for b, g, r in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0]]


def draw_pose(
    image_bgr: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray,
    skeleton: Sequence[Sequence[int]],
    min_score: float = 0.2,
    box_xywh: Sequence[float] | None = None,
) -> np.ndarray:
    """A copy of ``image_bgr`` with the skeleton (edges between confident keypoints), keypoints and the crop box."""
    import cv2

    out = image_bgr.copy()
    colors = skeleton_colors(len(scores))
    radius = max(2, round(min(out.shape[:2]) / 160))
    ok = np.isfinite(keypoints).all(axis=-1) & (scores > min_score)
    if box_xywh is not None:
        x, y, w, h = box_xywh
        cv2.rectangle(out, (round(x), round(y)), (round(x + w), round(y + h)), (200, 200, 200), 1)
    for a, b in skeleton:
        if ok[a] and ok[b]:
            pa = tuple(int(round(v)) for v in keypoints[a])
            pb = tuple(int(round(v)) for v in keypoints[b])
            cv2.line(out, pa, pb, (255, 255, 255), max(1, radius // 2), cv2.LINE_AA)
    for k in np.flatnonzero(ok):
        cv2.circle(out, tuple(int(round(v)) for v in keypoints[k]), radius, colors[k], -1, cv2.LINE_AA)
    return out


def identity_colour(track_id: int) -> tuple[int, int, int]:
    """A BGR colour per identity (golden-angle hues, so neighbouring ids differ); grey for -1 (untracked)."""
    import cv2

    if track_id < 0:
        return (160, 160, 160)
    hue = np.uint8(int(track_id * 137.508 / 2) % 180)
    b, g, r = cv2.cvtColor(np.array([[[hue, 220, 255]]], np.uint8), cv2.COLOR_HSV2BGR)[0, 0]
    return (int(b), int(g), int(r))


def draw_identities(
    image_bgr: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray,
    track_ids: np.ndarray,
    skeleton: Sequence[Sequence[int]],
    min_score: float = 0.2,
) -> np.ndarray:
    """A copy of ``image_bgr`` with every animal ``(M, K, 2)`` drawn in its identity's colour, labelled by track id."""
    import cv2

    out = image_bgr.copy()
    radius = max(2, round(min(out.shape[:2]) / 200))
    for kps, sc, track_id in zip(keypoints, scores, track_ids, strict=True):
        colour = identity_colour(int(track_id))
        ok = np.isfinite(kps).all(axis=-1) & (np.nan_to_num(sc, nan=0.0) > min_score)
        for a, b in skeleton:
            if ok[a] and ok[b]:
                pa = tuple(int(round(v)) for v in kps[a])
                pb = tuple(int(round(v)) for v in kps[b])
                cv2.line(out, pa, pb, colour, max(1, radius // 2), cv2.LINE_AA)
        for k in np.flatnonzero(ok):
            cv2.circle(out, tuple(int(round(v)) for v in kps[k]), radius, colour, -1, cv2.LINE_AA)
        if ok.any():
            x, y = kps[ok].min(axis=0)
            label = f"#{int(track_id)}" if track_id >= 0 else "?"
            cv2.putText(out, label, (int(x), int(y) - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    return out


class OverlayVideo:
    """An overlay video written to a hidden partial file and renamed into place when closed (complete or absent).

    Args:
        path: output ``.mp4`` (``mp4v``) or ``.avi`` (``MJPG``).
        fps: frame rate (the source's, or 25 when unknown).
    """

    def __init__(self, path: str | Path, fps: float | None) -> None:
        self.path = Path(path)
        self.fps = fps or 25.0
        # OpenCV picks the container from the extension, so the partial file keeps the real one.
        self._partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self._writer: Any = None  # cv2.VideoWriter, opened on the first frame (its size)
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, image_bgr: np.ndarray) -> None:
        import cv2

        h, w = image_bgr.shape[:2]
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter.fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
            self._writer = cv2.VideoWriter(str(self._partial), fourcc, self.fps, (w, h))
            if not self._writer.isOpened():
                raise RuntimeError(f"OpenCV cannot write the overlay video {self.path}; try an .avi (MJPG) path")
            self._size = (w, h)
        if (w, h) != self._size:
            image_bgr = cv2.resize(image_bgr, self._size)
        self._writer.write(image_bgr)
        self.frames += 1

    def close(self, keep: bool = True) -> None:
        """Finish the file and move it into place (``keep``), or delete the partial file."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        if keep:
            with open(self._partial, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(self._partial, self.path)
        else:
            self._partial.unlink(missing_ok=True)


def write_overlay_image(path: str | Path, image_bgr: np.ndarray) -> None:
    """Encode ``image_bgr`` as PNG/JPEG (by the suffix) and write it atomically."""
    import cv2

    ok, data = cv2.imencode(Path(path).suffix or ".png", image_bgr)
    if not ok:
        raise RuntimeError(f"OpenCV cannot encode {path}")
    atomic_write_bytes(path, data.tobytes())
