"""Outputs of the edge runtime: DeepLabCut analysis files (CSV + H5), COCO keypoint results, overlay video/images.

DeepLabCut writes its video analysis results as a pandas DataFrame with MultiIndex columns
``(scorer, bodyparts, coords)`` — coords ``x``, ``y``, ``likelihood`` — one row per frame (index: frame number, or
image path for frames), saved with ``to_hdf(key="df_with_missing", format="table", mode="w")`` and ``to_csv``.
``DlcResultWriter`` writes exactly that, so DeepLabCut's own tools (``create_labeled_video``, ``filterpredictions``,
``analyze_*``) read our files. ``read_dlc_predictions`` reads them back (our label reader,
``tardis_edge.data.dlc``, takes labels files, which have no ``likelihood`` column, and refuses these).

Every write goes through ``tardis_edge.io``: results are rewritten whole to a temporary file and renamed, so a
killed run leaves complete files with every frame flushed so far.
"""

from __future__ import annotations

import csv
import errno
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tardis_edge.io import atomic_path, atomic_write_bytes, atomic_write_text, strict_json

H5_KEY = "df_with_missing"
COORDS = ("x", "y", "likelihood")
LEVELS = ("scorer", "bodyparts", "coords")
FLUSH_TIME_RATIO = 9.0  # wait at least 9x the last flush's duration before the next: flushing stays under 10%


def _import_pandas():
    try:
        import pandas as pd
    except ImportError as e:
        raise ImportError("writing DeepLabCut files needs pandas: pip install 'tardis-edge[runtime]'") from e
    return pd


def dlc_dataframe(
    scorer: str, bodyparts: Sequence[str], index: Sequence[int | str], keypoints: np.ndarray, scores: np.ndarray
):
    """The DataFrame DeepLabCut writes for analysed frames.

    Args:
        scorer: the scorer (model) name in the first column level.
        bodyparts: ``K`` keypoint names.
        index: one label per row: frame numbers (video) or image paths.
        keypoints: ``(N, K, 2)`` image pixels (NaN: not found).
        scores: ``(N, K)`` the likelihood column (the heatmap maximum; NaN for bad frames).
    """
    pd = _import_pandas()
    n, k = scores.shape
    if keypoints.shape != (n, k, 2) or len(bodyparts) != k or len(index) != n:
        raise ValueError(
            f"inconsistent shapes: keypoints {keypoints.shape}, scores {scores.shape}, {len(bodyparts)} bodyparts, "
            f"{len(index)} index labels"
        )
    columns = pd.MultiIndex.from_product([[scorer], list(bodyparts), list(COORDS)], names=list(LEVELS))
    values = np.concatenate([keypoints, scores[..., None]], axis=-1).reshape(n, k * 3)  # (N, K * 3)
    return pd.DataFrame(values.astype(np.float64), columns=columns, index=list(index))


def write_dlc_h5(path: str | Path, frame) -> None:
    """``frame.to_hdf(path, key="df_with_missing", format="table", mode="w")`` through a temporary file."""
    try:
        import tables  # noqa: F401  (pandas' HDF5 backend)
    except ImportError as e:
        raise ImportError(f"writing {path} needs PyTables: pip install 'tardis-edge[runtime]'") from e
    with atomic_path(path) as tmp:
        frame.to_hdf(tmp, key=H5_KEY, format="table", mode="w")
        _check_h5_complete(tmp, path, len(frame))


def _check_h5_complete(tmp: Path, path: str | Path, rows: int) -> None:
    """HDF5 does not report a write cut short by a full disk or a file-size limit: it leaves a truncated file and
    returns. Read the table's row count back, so such a file never replaces the last complete one."""
    import tables

    try:
        with tables.open_file(str(tmp), mode="r") as h5:
            stored = h5.get_node(f"/{H5_KEY}/table").nrows
    except Exception:  # noqa: BLE001 - any failure to read it back means the write did not complete
        stored = -1
    if stored != rows:
        raise OSError(
            errno.ENOSPC,
            f"HDF5 could not write the whole file ({rows} rows; no space left on device, or a file-size limit)",
            str(path),
        )


def write_dlc_csv(path: str | Path, frame) -> None:
    """``frame.to_csv`` (three header rows scorer/bodyparts/coords) through a temporary file."""
    atomic_write_text(path, frame.to_csv())


@dataclass
class DlcPredictions:
    """A DeepLabCut analysis file read back."""

    scorer: str
    bodyparts: list[str]
    index: list[str]  # row labels as text (frame numbers or image paths)
    keypoints: np.ndarray  # (N, K, 2) image pixels, NaN where missing
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
    """Read a DeepLabCut analysis result (``.h5`` with key ``df_with_missing``, or its ``.csv``)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} does not exist")
    if p.suffix == ".h5":
        pd = _import_pandas()
        frame = pd.read_hdf(p, key=H5_KEY)
        if frame.columns.nlevels != 3 or list(frame.columns.names) != list(LEVELS):
            raise ValueError(f"{p}: columns must have levels {list(LEVELS)}, got {list(frame.columns.names)}")
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


def coco_results(
    image_ids: Sequence[int],
    keypoints: np.ndarray,
    scores: np.ndarray,
    file_names: Sequence[str] | None = None,
    category_id: int = 1,
) -> list[dict]:
    """COCO keypoint results (``loadRes`` format): one entry per frame, ``[x, y, score] * K`` flattened.

    Keypoints not found (NaN) are written as ``0, 0, 0`` (COCO's "not labelled"); the instance score is the mean
    keypoint score.
    """
    results = []
    for i, image_id in enumerate(image_ids):
        kps = np.nan_to_num(keypoints[i], nan=0.0)
        sc = np.where(np.isfinite(keypoints[i]).all(axis=-1), scores[i], 0.0)
        flat = np.concatenate([kps, sc[:, None]], axis=-1).reshape(-1)
        entry = {
            "image_id": int(image_id),
            "category_id": int(category_id),
            "keypoints": [round(float(v), 3) for v in flat],
            "score": float(np.mean(scores[i])),
        }
        if file_names is not None:
            entry["file_name"] = str(file_names[i])
        results.append(entry)
    return results


class DlcResultWriter:
    """Collects one source's results and (re)writes ``<stem>.csv``, ``<stem>.h5`` and ``<stem>_coco.json``.

    Bad frames get a row of NaN (so row ``i`` stays frame ``i`` for DeepLabCut tools) and no COCO entry.

    Args:
        out_dir: output folder.
        stem: file name stem (the video or folder name).
        scorer: DeepLabCut scorer name.
        bodyparts: keypoint names.
        formats: any of ``csv``, ``h5``, ``coco``.
    """

    FORMATS = ("csv", "h5", "coco")

    def __init__(
        self,
        out_dir: str | Path,
        stem: str,
        scorer: str,
        bodyparts: Sequence[str],
        formats: Sequence[str] = FORMATS,
    ) -> None:
        unknown = sorted(set(formats) - set(self.FORMATS))
        if unknown:
            raise ValueError(f"unknown output formats {unknown}; choose from {list(self.FORMATS)}")
        self.out_dir = Path(out_dir)
        self.stem = stem
        self.scorer = scorer
        self.bodyparts = list(bodyparts)
        self.formats = tuple(formats)
        self._index: list[int | str] = []
        self._frame_ids: list[int] = []
        self._keypoints: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self.rows_written = 0
        self._rows_in_file: dict[str, int] = {}  # format -> frames its file holds (they can differ after a failure)
        self._last_flush_end = 0.0
        self._last_flush_seconds = 0.0

    @property
    def paths(self) -> dict[str, Path]:
        names = {"csv": f"{self.stem}.csv", "h5": f"{self.stem}.h5", "coco": f"{self.stem}_coco.json"}
        return {fmt: self.out_dir / names[fmt] for fmt in self.formats}

    def __len__(self) -> int:
        return len(self._index)

    def rows_in_files(self) -> dict[Path, int]:
        """Frames each written file holds (bad frames included): its last complete flush."""
        return {self.paths[fmt]: n for fmt, n in self._rows_in_file.items()}

    def add(self, label: int | str, frame_id: int, keypoints: np.ndarray | None, scores: np.ndarray | None) -> None:
        """One frame: its row label, its id (COCO ``image_id``), and ``(K, 2)`` keypoints + ``(K,)`` scores
        (None for a bad frame)."""
        k = len(self.bodyparts)
        self._index.append(label)
        self._frame_ids.append(frame_id)
        self._keypoints.append(np.full((k, 2), np.nan) if keypoints is None else np.asarray(keypoints, np.float64))
        self._scores.append(np.full(k, np.nan) if scores is None else np.asarray(scores, np.float64))

    def flush_due(self, every: int) -> bool:
        """Whether ``every`` rows were added since the last flush and flushing again keeps its share of the run's
        time under ``1 / (1 + FLUSH_TIME_RATIO)``: each flush rewrites every row, so on long videos flushes space out
        (100k rows take seconds to write) instead of costing O(rows^2)."""
        if len(self._index) - self.rows_written < every:
            return False
        return time.monotonic() - self._last_flush_end >= FLUSH_TIME_RATIO * self._last_flush_seconds

    def flush(self) -> None:
        """Rewrite every output file with all rows so far (atomic replace of each file)."""
        if not self._index:
            return
        start = time.monotonic()
        keypoints = np.stack(self._keypoints)  # (N, K, 2)
        scores = np.stack(self._scores)  # (N, K)
        rows = len(self._index)
        if "csv" in self.formats or "h5" in self.formats:
            frame = dlc_dataframe(self.scorer, self.bodyparts, self._index, keypoints, scores)
            if "csv" in self.formats:
                write_dlc_csv(self.paths["csv"], frame)
                self._rows_in_file["csv"] = rows
            if "h5" in self.formats:
                write_dlc_h5(self.paths["h5"], frame)
                self._rows_in_file["h5"] = rows
        if "coco" in self.formats:
            good = [i for i in range(len(self._index)) if np.isfinite(scores[i]).all()]
            results = coco_results(
                [self._frame_ids[i] for i in good],
                keypoints[good],
                scores[good],
                file_names=[str(self._index[i]) for i in good],
            )
            atomic_write_text(self.paths["coco"], strict_json(results, indent=None))
            self._rows_in_file["coco"] = rows
        self.rows_written = len(self._index)
        self._last_flush_end = time.monotonic()
        self._last_flush_seconds = self._last_flush_end - start


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
