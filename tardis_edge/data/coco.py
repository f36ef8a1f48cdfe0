"""COCO keypoint JSON (data stage): AP-10K, Animal-Pose and any file in the COCO keypoint layout.

One ``Sample`` per annotation: keypoints ``(x, y, v)`` with ``v`` 0 (not labelled, coordinates NaN), 1 (labelled,
occluded) or 2 (labelled, visible); the COCO ``bbox`` ``(x, y, w, h)``; the category (species) name; the identity
(``Sample.track``, as a string) from ``track_id`` (PoseTrack, video COCO), else an ``identity`` or ``track``
field, else None. Several annotations of one image are several animals of that image (``image_key``). Keypoint
names and the skeleton (1-based in COCO, 0-based here) come from the categories, which must share one keypoint
list. OKS sigmas: given, or the published ones of AP-10K / Animal-Pose / COCO recognised from the names.

COCO keypoints are continuous image coordinates; like mmpose and the COCO evaluator, tardis-edge uses them as
pixel-centre coordinates (``tardis_edge.geometry``) without a half-pixel shift.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

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

# Published OKS sigmas, keyed by the keypoint names they belong to (mmpose configs/_base_/datasets/*.py).
AP10K_NAMES = (
    "left_eye", "right_eye", "nose", "neck", "root_of_tail", "left_shoulder", "left_elbow", "left_front_paw",
    "right_shoulder", "right_elbow", "right_front_paw", "left_hip", "left_knee", "left_back_paw", "right_hip",
    "right_knee", "right_back_paw",
)  # fmt: skip
AP10K_SIGMAS = (
    0.025, 0.025, 0.026, 0.035, 0.035, 0.079, 0.072, 0.062, 0.079, 0.072, 0.062, 0.107, 0.087, 0.089, 0.107, 0.087,
    0.089,
)  # fmt: skip
ANIMALPOSE_NAMES = (
    "L_Eye", "R_Eye", "L_EarBase", "R_EarBase", "Nose", "Throat", "TailBase", "Withers", "L_F_Elbow", "R_F_Elbow",
    "L_B_Elbow", "R_B_Elbow", "L_F_Knee", "R_F_Knee", "L_B_Knee", "R_B_Knee", "L_F_Paw", "R_F_Paw", "L_B_Paw",
    "R_B_Paw",
)  # fmt: skip
# The Animal-Pose paper gives no sigmas; mmpose adapted these from COCO's.
ANIMALPOSE_SIGMAS = (
    0.025, 0.025, 0.026, 0.035, 0.035, 0.10, 0.10, 0.10, 0.107, 0.107, 0.107, 0.107, 0.087, 0.087, 0.087, 0.087,
    0.089, 0.089, 0.089, 0.089,
)  # fmt: skip
COCO_PERSON_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
)  # fmt: skip
COCO_PERSON_SIGMAS = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089,
    0.089,
)  # fmt: skip
KNOWN_SIGMAS: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "ap10k": (AP10K_NAMES, AP10K_SIGMAS),
    "animalpose": (ANIMALPOSE_NAMES, ANIMALPOSE_SIGMAS),
    "coco": (COCO_PERSON_NAMES, COCO_PERSON_SIGMAS),
}


def known_sigmas(names: Sequence[str]) -> tuple[str, tuple[float, ...]] | None:
    """``(dataset name, sigmas)`` of the published dataset whose keypoint names equal ``names`` (case ignored)."""
    lower = tuple(n.lower() for n in names)
    for dataset, (known_names, sigmas) in KNOWN_SIGMAS.items():
        if lower == tuple(n.lower() for n in known_names):
            return dataset, sigmas
    return None


def _check_bbox(bbox: object, where: str) -> np.ndarray:
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise ValueError(f"{where}: bbox {bbox!r} must be [x, y, width, height]")
    try:
        values = [float(v) for v in bbox]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: bbox {bbox!r} must be four numbers [x, y, width, height]") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{where}: bbox {bbox!r} has a NaN or infinite value; fix or remove the annotation")
    if values[2] < 0 or values[3] < 0:
        raise ValueError(
            f"{where}: bbox {bbox!r} has a negative width or height; COCO boxes are [x, y, width, height] "
            "(convert [x1, y1, x2, y2] boxes first)"
        )
    return np.asarray(values, dtype=np.float32)


def _keypoints_from_annotation(values: object, num_keypoints: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(K, 2)`` float32 coordinates (NaN where v == 0) and ``(K,)`` float32 visibility from a COCO triple list."""
    if not isinstance(values, list) or len(values) != 3 * num_keypoints:
        count = len(values) if isinstance(values, list) else type(values).__name__
        raise ValueError(
            f"{where}: 'keypoints' has {count} values; expected 3 x {num_keypoints} = {3 * num_keypoints} "
            "(x, y, v per keypoint of its category); fix the annotation or its category's keypoint list"
        )
    try:
        triples = np.asarray(values, dtype=np.float64).reshape(num_keypoints, 3)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: 'keypoints' must hold numbers only") from None
    visible = triples[:, 2]
    bad_v = [int(k) for k in np.flatnonzero(~np.isin(visible, (0, 1, 2)))]
    if bad_v:
        raise ValueError(f"{where}: keypoint {bad_v[0]} has visibility {float(visible[bad_v[0]])}; COCO uses 0, 1 or 2")
    xy = triples[:, :2].copy()
    bad_xy = [int(k) for k in np.flatnonzero((visible > 0) & ~np.isfinite(xy).all(axis=1))]
    if bad_xy:
        raise ValueError(f"{where}: labelled keypoint {bad_xy[0]} has a non-finite position {xy[bad_xy[0]].tolist()}")
    xy[visible == 0] = np.nan
    return xy.astype(np.float32), visible.astype(np.float32)


def _track(annotation: dict, where: str) -> str | None:
    """The annotation's identity as a string: ``track_id``, else ``identity``, else ``track``; None if none."""
    for key in ("track_id", "identity", "track"):
        value = annotation.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"{where}: {key} {value!r} must be a number or a name identifying the animal")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"{where}: {key} {value!r} must be a whole number or a name identifying the animal")
            value = int(value)
        return str(value)
    return None


def _skeleton(edges: list, num_k: int, where: str) -> tuple[list[tuple[int, int]], str | None]:
    """0-based skeleton edges from a COCO category's ``skeleton``, and a note when it was 0-based.

    COCO numbers keypoints from 1 in the skeleton, but some files (mmpose's own ATRW and AP-10K/AK files) number
    them from 0. The numbering is detected: an index 0 (or none reaching ``num_k``) means 0-based. Either way the
    skeleton only draws lines, so it never refuses the dataset.
    """
    for edge in edges:
        if not (isinstance(edge, (list, tuple)) and len(edge) == 2 and all(isinstance(v, int) for v in edge)):
            raise ValueError(f"{where}: skeleton edge {edge!r} must be two integer keypoint indices")
    used = [v for e in edges for v in e]
    if not used:
        return [], None
    if min(used) >= 1 and max(used) <= num_k:
        return [(a - 1, b - 1) for a, b in edges], None
    if min(used) >= 0 and max(used) <= num_k - 1:
        return [(a, b) for a, b in edges], (
            "skeleton numbered from 0 (COCO numbers keypoints from 1): read as 0-based, as mmpose's ATRW and AK "
            "files are"
        )
    raise ValueError(
        f"{where}: skeleton indices {min(used)}..{max(used)} fit neither 1..{num_k} (COCO) nor 0..{num_k - 1}; fix "
        "the skeleton (it only draws lines) or remove it"
    )


def load_coco_keypoints(
    json_path: str | Path,
    image_root: str | Path | None = None,
    sigmas: Sequence[float] | None = None,
    flip_pairs: Sequence[tuple[int | str, int | str]] | None = None,
    keep_unlabelled: bool = False,
    check_images: bool = True,
) -> PoseDataset:
    """Load a COCO keypoint file into one ``Sample`` per annotation.

    Args:
        json_path: the COCO keypoint JSON (``images``, ``annotations``, ``categories`` with ``keypoints`` names).
        image_root: folder the images' ``file_name`` is relative to; default: the JSON's folder.
        sigmas: per-keypoint OKS sigmas; default: AP-10K's / Animal-Pose's / COCO's when the keypoint names are
            theirs, else None (the evaluator then says which sigma it uses).
        flip_pairs: left/right pairs as indices or names; default: found from the names.
        keep_unlabelled: keep annotations without any labelled keypoint (``num_keypoints == 0``) as
            ``labelled=False`` samples; by default they are skipped (and listed in ``summary.skipped``).
        check_images: check at load time that every image file exists (decode errors surface at read time).

    Returns:
        A ``PoseDataset`` with samples in annotation order; ``Sample.extra["area"]`` keeps the annotation's area.

    Raises:
        ValueError / FileNotFoundError naming the file, the annotation id and the fix for: wrong keypoint count,
        NaN or negative bbox, unknown image or category, a missing image, no usable annotation.
    """
    path = Path(json_path)
    if not path.is_file():
        raise FileNotFoundError(f"COCO keypoint file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key) if isinstance(data, dict) else None, list):
            raise ValueError(f"{path}: a COCO keypoint file needs a list '{key}'")
    root = Path(image_root) if image_root is not None else path.parent

    categories = {}
    for cat in data["categories"]:
        if "keypoints" in cat:
            categories[cat["id"]] = cat
    if not categories:
        raise ValueError(f"{path}: no category has a 'keypoints' name list; this is not a COCO keypoint file")
    used_ids = {a.get("category_id") for a in data["annotations"]}
    reference = next((categories[c] for c in sorted(categories) if c in used_ids), next(iter(categories.values())))
    names = tuple(str(n) for n in reference["keypoints"])
    for cat in categories.values():
        if cat["id"] in used_ids and tuple(cat["keypoints"]) != names:
            raise ValueError(
                f"{path}: categories {reference['name']!r} and {cat['name']!r} have different keypoint lists; "
                "split the file per keypoint schema"
            )
    num_k = len(names)
    where = f"{path}: category {reference['name']!r}"
    skeleton, skeleton_note = _skeleton(reference.get("skeleton") or [], num_k, where)
    notes_from_schema = [skeleton_note] if skeleton_note else []

    images = {}
    for image in data["images"]:
        if "id" not in image or "file_name" not in image:
            raise ValueError(f"{path}: image entry {image!r} needs 'id' and 'file_name'")
        images[image["id"]] = image

    samples: list[Sample] = []
    skipped: list[Skipped] = []
    checked: dict[int, Path] = {}
    for a in data["annotations"]:
        ann_id = a.get("id")
        where = f"{path}: annotation {ann_id} (image {a.get('image_id')})"
        if a.get("category_id") not in categories:
            raise ValueError(f"{where}: category_id {a.get('category_id')!r} is not a keypoint category of the file")
        if a.get("image_id") not in images:
            raise ValueError(f"{where}: image_id {a.get('image_id')!r} is not in 'images'; add it or drop the entry")
        if "keypoints" not in a:
            raise ValueError(f"{where}: no 'keypoints'; this is not a keypoint annotation")
        xy, visible = _keypoints_from_annotation(a["keypoints"], num_k, where)
        if a.get("iscrowd", 0):
            skipped.append(Skipped(f"annotation {ann_id}", "iscrowd=1 (crowd regions carry no single pose)"))
            continue
        labelled = bool((visible > 0).any())
        if not labelled and not keep_unlabelled:
            skipped.append(Skipped(f"annotation {ann_id}", "no labelled keypoint (pass keep_unlabelled=True to keep)"))
            continue
        if "bbox" not in a:
            raise ValueError(f"{where}: no 'bbox'; top-down crops and OKS need the instance box [x, y, w, h]")
        bbox = _check_bbox(a["bbox"], where)
        image = images[a["image_id"]]
        image_path = checked.get(a["image_id"])
        if image_path is None:
            image_path = root / image["file_name"]
            if check_images and not image_path.is_file():
                raise FileNotFoundError(
                    f"{where}: image {image_path} does not exist; pass image_root= (the folder the file_name "
                    "entries are relative to) or restore the file"
                )
            checked[a["image_id"]] = image_path
        area = float(a["area"]) if "area" in a else float(bbox[2] * bbox[3])
        width, height = image.get("width"), image.get("height")
        samples.append(
            Sample(
                sample_id=f"{image['file_name']}#{ann_id}",
                image_path=image_path,
                keypoints_xy=xy,
                visible=visible,
                bbox_xywh=bbox,
                category=str(categories[a["category_id"]]["name"]),
                image_wh=(int(width), int(height)) if width and height else None,
                labelled=labelled,
                annotation_id=ann_id,
                image_id=a["image_id"],
                track=_track(a, where),
                extra={"area": area},
            )
        )
    if not samples:
        reasons = "; ".join(f"{s.what}: {s.reason}" for s in skipped[:5]) or "no annotations"
        raise ValueError(f"empty dataset: {path} has no usable keypoint annotation ({reasons})")

    notes = list(notes_from_schema)
    if sigmas is not None:
        sigmas = tuple(float(s) for s in sigmas)
        if len(sigmas) != num_k or not all(s > 0 for s in sigmas):
            raise ValueError(f"sigmas must be {num_k} positive numbers (one per keypoint), got {list(sigmas)}")
        notes.append("OKS sigmas given by the caller")
    else:
        found = known_sigmas(names)
        if found is not None:
            sigmas = found[1]
            notes.append(f"OKS sigmas of {found[0]} (recognised from the keypoint names)")
        else:
            notes.append("no OKS sigmas known for these keypoint names; pass sigmas= for OKS AP")
    if flip_pairs is not None:
        pairs = check_flip_pairs(flip_pairs, names, str(path))
    else:
        pairs = flip_pairs_from_names(names)
    notes.append(describe_flip_pairs(pairs, names) + (" (from names)" if flip_pairs is None else ""))
    schema = KeypointSchema(names=names, skeleton=tuple(skeleton), flip_pairs=pairs, sigmas=sigmas)
    summary = LoadSummary.from_samples(samples, schema, str(path), "COCO keypoints", skipped, notes)
    return PoseDataset(schema, samples, summary, path)
