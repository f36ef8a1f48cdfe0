"""SLEAP labels files (data stage): ``.slp`` -> one ``Sample`` per user-labelled animal instance.

Read with sleap-io (the ``data`` extra), imported when a ``.slp`` is loaded. What becomes of SLEAP's records:

* each user-labelled instance -> a ``Sample`` with ``video_path`` + ``frame_index`` (no image file), ``track`` =
  its SLEAP track name (None for an untracked instance), ``image_wh`` from the video, no bounding box (top-down
  crops derive it from the keypoints), id ``<video stem>#<frame:06d>/<track>`` (``clip#001000/female``; an
  untracked instance has its position in the frame instead of a track name), so ids sort by frame;
* a point that is not visible or has no coordinates -> NaN and ``visible`` 0; the others ``visible`` 2;
* predicted instances (a model's output, also those a user has not corrected) are not labels: they are left
  out and counted in ``summary.skipped``, as are user instances without any labelled point;
* samples are ordered by video, then frame index, then track (the file's track order; untracked last), so the
  ``ranges`` split method counts frames in video order whatever order they were labelled in.

Coordinates: SLEAP files of format 1.1 and later put the centre of the top-left pixel at ``(0, 0)``, the
pixel-centre convention of ``tardis_edge.geometry``, so points are used unchanged. Files older than format 1.1
put ``(0, 0)`` at that pixel's top-left corner; their points are shifted by -0.5 px (recent sleap-io versions do
that themselves: the loader checks whether it happened and shifts only if not).

The video is the path stored in the file when it exists; else the same path relative to the ``.slp``'s folder;
else a file of that name next to the ``.slp`` (or in ``video_root``). A package (``.pkg.slp``) whose frames are
embedded images is refused with the command that writes plain labels pointing at the videos.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

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

PIXEL_CENTRE_FORMAT = 1.1  # SLEAP .slp format_id from which (0, 0) is the centre of the top-left pixel


def _import_sleap_io():
    try:
        import sleap_io
    except ImportError as e:
        raise ImportError(
            "reading SLEAP .slp labels needs sleap-io: pip install 'tardis-edge[data]' (or pip install sleap-io)"
        ) from e
    return sleap_io


def _stored_video_path(video) -> str:
    """The video path as written in the .slp (before sleap-io resolves it)."""
    meta = getattr(video, "backend_metadata", None) or {}
    return str(meta.get("filename") or video.filename)


def _is_embedded(video, slp: Path) -> bool:
    """True when the frames are images inside an HDF5 file (a ``.pkg.slp``), not a video or image files."""
    meta = getattr(video, "backend_metadata", None) or {}
    filename = str(video.filename) if isinstance(video.filename, (str, Path)) else ""
    return bool(meta.get("dataset")) or filename.lower().endswith((".slp", ".h5", ".hdf5"))


def _resolve_video(stored: str, slp: Path, video_root: Path | None) -> tuple[Path, list[Path]]:
    """The video file for a stored path, and the candidates tried (the first that exists wins)."""
    name = PureWindowsPath(stored).name if "\\" in stored else PurePosixPath(stored).name
    stored_path = Path(stored.replace("\\", "/"))
    candidates = [stored_path] if stored_path.is_absolute() else [slp.parent / stored_path]
    if video_root is not None:
        candidates.append(video_root / name)
    candidates.append(slp.parent / name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate, candidates
    return candidates[0], candidates


def _legacy_shift(path: Path, loaded_points: np.ndarray) -> tuple[float, str | None]:
    """Shift (px) that brings this file's user points to the pixel-centre convention, and a note saying why.

    ``loaded_points``: ``(N, 2)`` all user points as sleap-io returned them (NaN where missing).
    """
    import h5py

    with h5py.File(path, "r") as f:
        attrs = f["metadata"].attrs if "metadata" in f else {}
        format_id = float(attrs["format_id"]) if "format_id" in attrs else None
        if format_id is None or format_id >= PIXEL_CENTRE_FORMAT:
            return 0.0, None
        raw = f["points"][:]
    raw_xy = np.stack([raw["x"], raw["y"]], axis=1).astype(np.float64)
    finite_raw = raw_xy[np.isfinite(raw_xy).all(axis=1)]
    finite_loaded = loaded_points[np.isfinite(loaded_points).all(axis=1)]
    if len(finite_raw) == 0 or len(finite_loaded) == 0:
        return 0.0, None
    difference = float(np.mean(finite_raw) - np.mean(finite_loaded))
    shifted_already = abs(difference - 0.5) < 0.25
    note = (
        f"SLEAP format {format_id:g} (< {PIXEL_CENTRE_FORMAT}): points are pixel-corner coordinates, shifted by "
        f"-0.5 px to pixel centres ({'by sleap-io' if shifted_already else 'here'})"
    )
    return (0.0 if shifted_already else -0.5), note


def _video_names(videos: list, stored: list[str]) -> list[str]:
    """The video part of the sample ids: the file stem, made unique where two videos share one."""
    stems = [PurePosixPath(s.replace("\\", "/")).name.split(".")[0] or f"video{i}" for i, s in enumerate(stored)]
    if len(set(stems)) == len(stems):
        return stems
    return [f"video{i}-{stem}" for i, stem in enumerate(stems)]


def load_sleap(
    slp_path: str | Path,
    flip_pairs: list[tuple[int | str, int | str]] | None = None,
    category: str = "animal",
    video_root: str | Path | None = None,
    check_videos: bool = True,
) -> PoseDataset:
    """Load the user-labelled instances of a SLEAP ``.slp`` labels file.

    Args:
        slp_path: the ``.slp`` file.
        flip_pairs: left/right pairs as indices or node names; default: the skeleton's symmetries, else found from
            the names (``wingL``/``wingR``, ``eyeL``/``eyeR`` …, see ``flip_pairs_from_names``).
        category: species name put on every sample.
        video_root: another folder to look for the videos in (by file name) when the stored path does not exist.
        check_videos: open each video once (header only) for its frame size and length, and refuse labels past
            its last frame.

    Returns:
        A ``PoseDataset``: one ``Sample`` per user instance (see the module docstring for ids, order, coordinates).
        Read a sample's frame with ``tardis_edge.data.read_sample_image``: milliseconds once
        ``tardis_edge.data.frame_cache.cache_video_frames(dataset)`` has decoded the labelled frames.
    """
    path = Path(slp_path)
    if not path.is_file():
        raise FileNotFoundError(f"SLEAP labels file {path} does not exist")
    sio = _import_sleap_io()
    try:
        labels = sio.load_slp(str(path), open_videos=False)
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path} cannot be read as SLEAP labels ({type(e).__name__}: {e}); is it a .slp file?") from e
    root = Path(video_root) if video_root is not None else None

    videos = list(labels.videos)
    stored = [_stored_video_path(v) for v in videos]
    embedded = [s for v, s in zip(videos, stored, strict=True) if _is_embedded(v, path)]
    if embedded:
        raise ValueError(
            f"{path} is a SLEAP package with frames embedded as images ({embedded[0]}); tardis-edge reads frames from "
            'the videos: save plain labels that point at them, e.g. python -c "import sleap_io as sio; '
            f"sio.save_slp(sio.load_slp('{path}'), 'labels.slp', embed=False)\", and load that"
        )
    names = _video_names(videos, stored)
    video_paths: dict[int, Path] = {}
    video_sizes: dict[int, tuple[tuple[int, int], int] | None] = {}
    for i, s in enumerate(stored):
        found, tried = _resolve_video(s, path, root)
        if check_videos and not found.is_file():
            raise FileNotFoundError(
                f"{path}: video {s!r} not found (tried {', '.join(map(str, tried))}); put the video next to the .slp "
                "or pass video_root= (the folder holding it)"
            )
        video_paths[i] = found
        video_sizes[i] = None
        if check_videos:
            from tardis_edge.data.video import video_info

            count, size, _ = video_info(found)
            video_sizes[i] = (size, count)

    tracks = list(labels.tracks)
    track_order = {id(t): k for k, t in enumerate(tracks)}
    video_index = {id(v): i for i, v in enumerate(videos)}

    frames = sorted(labels.labeled_frames, key=lambda lf: (video_index[id(lf.video)], int(lf.frame_idx)))
    skeletons_used: dict[int, object] = {}
    predicted = predicted_frames = 0
    empty: list[str] = []
    records = []  # (video index, frame index, instance position, instance)
    for lf in frames:
        v = video_index[id(lf.video)]
        frame_index = int(lf.frame_idx)
        n_predicted = len(lf.predicted_instances)
        predicted += n_predicted
        predicted_frames += int(n_predicted > 0)
        users = list(lf.user_instances)
        if users and video_sizes[v] is not None and frame_index >= video_sizes[v][1]:
            raise ValueError(
                f"{path}: frame {frame_index} of {stored[v]} is labelled but the video {video_paths[v]} has only "
                f"{video_sizes[v][1]} frames; is it the same video the labels were made on?"
            )
        order = sorted(
            range(len(users)),
            key=lambda j: (track_order.get(id(users[j].track), len(tracks)) if users[j].track else len(tracks), j),
        )
        for position, j in enumerate(order):
            skeletons_used[id(users[j].skeleton)] = users[j].skeleton
            records.append((v, frame_index, position, users[j]))
    if len(skeletons_used) > 1:
        used = [[n.name for n in s.nodes] for s in skeletons_used.values()]
        raise ValueError(
            f"{path}: user instances use {len(used)} different skeletons ({used}); one dataset has one keypoint "
            "list — split the labels per skeleton"
        )
    if not records:
        raise ValueError(
            f"empty dataset: {path} has no user-labelled instance ({predicted} predicted instances are not labels); "
            "label frames in SLEAP"
        )
    skeleton = next(iter(skeletons_used.values()))
    node_names = tuple(str(n) for n in skeleton.node_names)

    all_xy = np.stack([inst.numpy() for _, _, _, inst in records]).astype(np.float64)  # (N, K, 2), NaN = missing
    shift, shift_note = _legacy_shift(path, all_xy.reshape(-1, 2))
    all_xy += shift

    samples: list[Sample] = []
    seen: dict[str, int] = {}
    duplicates = 0
    for (v, frame_index, position, inst), xy in zip(records, all_xy, strict=True):
        labelled = np.isfinite(xy).all(axis=1)  # (K,)
        track = str(inst.track.name) if inst.track is not None else None
        sample_id = f"{names[v]}#{frame_index:06d}/{track if track is not None else position}"
        if sample_id in seen:
            duplicates += 1
            sample_id = f"{sample_id}~{position}"
        seen[sample_id] = 1
        if not labelled.any():
            empty.append(sample_id)
            continue
        xy = xy.copy()
        xy[~labelled] = np.nan
        size = video_sizes[v]
        samples.append(
            Sample(
                sample_id=sample_id,
                image_path=None,
                keypoints_xy=xy.astype(np.float32),
                visible=np.where(labelled, 2.0, 0.0).astype(np.float32),
                category=category,
                image_wh=size[0] if size is not None else None,
                video_path=video_paths[v],
                frame_index=frame_index,
                track=track,
            )
        )

    skipped: list[Skipped] = []
    if predicted:
        skipped.append(
            Skipped(
                f"{predicted} predicted instance(s) in {predicted_frames} frame(s)",
                "model predictions, not labels (only user-labelled instances are loaded)",
            )
        )
    if empty:
        skipped.append(
            Skipped(f"{len(empty)} user instance(s) (first: {empty[0]})", "no labelled point (all nodes missing)")
        )
    warnings = []
    if duplicates:
        warnings.append(
            f"{duplicates} frame(s) of {path} hold two user instances of the same track; their ids got a '~<n>' "
            "suffix — fix the track assignment in SLEAP"
        )
    if flip_pairs is not None:
        pairs = check_flip_pairs(flip_pairs, node_names, str(path))
        pairs_from = ""
    elif getattr(skeleton, "symmetries", None):
        index = {n: i for i, n in enumerate(node_names)}
        pairs = tuple(
            sorted({tuple(sorted(index[str(n.name)] for n in sym.nodes)) for sym in skeleton.symmetries})  # type: ignore[misc]
        )
        pairs = check_flip_pairs(pairs, node_names, str(path))
        pairs_from = " (skeleton symmetries)"
    else:
        pairs = flip_pairs_from_names(node_names)
        pairs_from = " (from names)"
    edges = tuple((int(a), int(b)) for a, b in skeleton.edge_inds)
    schema = KeypointSchema(names=node_names, skeleton=edges, flip_pairs=pairs, sigmas=None)
    notes = [describe_flip_pairs(pairs, node_names) + pairs_from]
    if shift_note:
        notes.append(shift_note)
    if check_videos:
        warnings += labels_outside_images(samples, node_names, {})
    summary = LoadSummary.from_samples(samples, schema, str(path), "SLEAP", skipped, notes, warnings)
    return PoseDataset(schema, samples, summary, path)
