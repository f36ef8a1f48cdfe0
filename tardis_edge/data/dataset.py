"""The loaded dataset (data stage): ``PoseDataset``, its load summary, splits, few-shot sampling, and the
one entry point ``load_dataset`` that recognises DeepLabCut projects, COCO keypoint files and SLEAP ``.slp`` files.

Torch-free: the edge runtime and the exporters can read labels and images without importing torch.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tardis_edge.data.sample import KeypointSchema, Sample


def image_key(sample: Sample) -> str:
    """Which image a sample is in: the COCO image id, else the image file, else the video frame."""
    if sample.image_id is not None:
        return f"image id {sample.image_id}"
    if sample.image_path is not None:
        return str(sample.image_path)
    return f"{sample.video_path}#{sample.frame_index}"


def group_by_image(samples: Sequence[Sample]) -> list[list[Sample]]:
    """The samples (one animal each) grouped per image (``image_key``), images in first-seen order."""
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(image_key(s), []).append(s)
    return list(groups.values())


def animals_per_image(samples: Sequence[Sample] | PoseDataset) -> dict[str, int]:
    """How many labelled animals each image holds: ``image_key`` -> number of samples with ``labelled=True``.

    Images whose samples are all unlabelled (frames kept for distillation) count 0. A dataset is multi-animal
    when some image holds more than one (``LoadSummary.max_animals_per_image > 1``).
    """
    counts: dict[str, int] = {}
    for s in samples:
        key = image_key(s)
        counts[key] = counts.get(key, 0) + int(s.labelled)
    return counts


@dataclass(frozen=True)
class Skipped:
    """One record the loader left out, and why (nothing is dropped without a line here)."""

    what: str  # e.g. "labeled-data/m4s2" or "annotation 17 (image 3)"
    reason: str


@dataclass
class LoadSummary:
    """What a loader read: counts, what it left out and why, and anything the user should know."""

    source: str
    format: str
    num_samples: int
    num_keypoints: int
    labelled_keypoints: int  # keypoint slots with visible > 0, over all samples
    unlabelled_keypoints: int  # keypoint slots with visible == 0 (NaN coordinates)
    unlabelled_samples: int  # samples without any labelled keypoint (labelled=False: distillation only)
    categories: dict[str, int]  # category -> number of samples
    num_images: int
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what the user should check: printed, and logged as warnings
    keypoint_counts: dict[str, int] = field(default_factory=dict)  # keypoint name -> samples where it is labelled
    max_animals_per_image: int = 0  # most labelled samples in one image (> 1: a multi-animal dataset)
    mean_animals_per_image: float = 0.0  # labelled samples per image, over all images
    identities: dict[str, int] = field(default_factory=dict)  # track name -> images it is labelled in (file order)
    images_with_animals: int = 0  # images holding at least one labelled sample

    @classmethod
    def from_samples(
        cls,
        samples: Sequence[Sample],
        schema: KeypointSchema,
        source: str,
        format: str,
        skipped: Sequence[Skipped] = (),
        notes: Sequence[str] = (),
        warnings: Sequence[str] = (),
    ) -> LoadSummary:
        labelled = sum(int((s.visible > 0).sum()) for s in samples)
        counts = {name: sum(int(s.visible[k] > 0) for s in samples) for k, name in enumerate(schema.names)}
        never = [name for name, n in counts.items() if n == 0]
        if samples and never:
            warnings = [*warnings, f"keypoint(s) {never} are labelled in no sample of {source}: the model cannot learn "
                        "them (their loss weight is 0); label them or remove them from the keypoint list"]  # fmt: skip
        per_image = animals_per_image(samples)
        identities: dict[str, set[str]] = {}
        for s in samples:
            if s.track is not None and s.labelled:
                identities.setdefault(s.track, set()).add(image_key(s))
        return cls(
            source=source,
            format=format,
            num_samples=len(samples),
            num_keypoints=schema.num_keypoints,
            labelled_keypoints=labelled,
            unlabelled_keypoints=len(samples) * schema.num_keypoints - labelled,
            unlabelled_samples=sum(1 for s in samples if not s.labelled),
            categories=dict(sorted(Counter(s.category for s in samples).items())),
            num_images=len(per_image),
            skipped=list(skipped),
            notes=list(notes),
            warnings=list(warnings),
            keypoint_counts=counts,
            max_animals_per_image=max(per_image.values(), default=0),
            mean_animals_per_image=sum(per_image.values()) / len(per_image) if per_image else 0.0,
            identities={track: len(images) for track, images in sorted(identities.items())},
            images_with_animals=sum(1 for n in per_image.values() if n > 0),
        )

    def __str__(self) -> str:
        lines = [
            f"{self.format} dataset {self.source}",
            f"  samples: {self.num_samples} in {self.num_images} images, {self.num_keypoints} keypoints each",
            f"  keypoints labelled: {self.labelled_keypoints}, unlabelled: {self.unlabelled_keypoints}",
        ]
        if self.max_animals_per_image > 1:
            lines.append(
                f"  animals per image: max {self.max_animals_per_image}, mean {self.mean_animals_per_image:.2f}"
            )
        if self.identities:
            tracks = ", ".join(f"{name} {n}" for name, n in self.identities.items())
            lines.append(f"  identities ({len(self.identities)}), images each is labelled in: {tracks}")
            absent = {name: self.images_with_animals - n for name, n in self.identities.items()}
            if any(absent.values()):
                missing = ", ".join(f"{name} {n}" for name, n in absent.items() if n)
                lines.append(
                    f"  note: identities absent from some of the {self.images_with_animals} labelled images "
                    f"(fewer animals there): {missing}"
                )
        if self.unlabelled_samples:
            lines.append(f"  samples without any labelled keypoint (kept, labelled=False): {self.unlabelled_samples}")
        if len(self.categories) > 1 or (self.categories and "animal" not in self.categories):
            cats = ", ".join(f"{name}: {count}" for name, count in self.categories.items())
            lines.append(f"  categories ({len(self.categories)}): {cats}")
        if self.skipped:
            lines.append(f"  skipped: {len(self.skipped)}")
            lines.extend(f"    {s.what}: {s.reason}" for s in self.skipped)
        else:
            lines.append("  skipped: none")
        if self.keypoint_counts:
            lines.append("  labels per keypoint: " + ", ".join(f"{k} {n}" for k, n in self.keypoint_counts.items()))
        lines.extend(f"  note: {n}" for n in self.notes)
        lines.extend(f"  WARNING: {w}" for w in self.warnings)
        return "\n".join(lines)


@dataclass
class PoseDataset:
    """Samples of one keypoint schema, as loaded from disk (no images are decoded here).

    Attributes:
        schema: keypoint names, skeleton, flip pairs, OKS sigmas.
        samples: one ``Sample`` per animal instance, in file order.
        summary: what the loader read and left out (``print(dataset.summary)``).
        root: the project folder or the COCO json, for messages and relative paths.
    """

    schema: KeypointSchema
    samples: list[Sample]
    summary: LoadSummary
    root: Path | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    @property
    def sample_ids(self) -> list[str]:
        return [s.sample_id for s in self.samples]

    def subset(self, indices: Sequence[int], name: str = "subset") -> PoseDataset:
        """A dataset with ``samples[i] for i in indices`` (order kept, schema shared)."""
        n = len(self.samples)
        bad = [i for i in indices if not -n <= int(i) < n]
        if bad:
            raise IndexError(f"subset indices {bad[:5]} are out of range for a dataset of {n} samples")
        samples = [self.samples[int(i)] for i in indices]
        summary = LoadSummary.from_samples(
            samples, self.schema, f"{self.summary.source} [{name}]", self.summary.format, notes=self.summary.notes
        )
        return PoseDataset(self.schema, samples, summary, self.root)

    def labelled_only(self) -> PoseDataset:
        """The samples with at least one labelled keypoint."""
        return self.subset([i for i, s in enumerate(self.samples) if s.labelled], "labelled")


def split_by_index(dataset: PoseDataset, n_train: int) -> tuple[PoseDataset, PoseDataset]:
    """The first ``n_train`` samples and the rest, in file order (for tests on small subsets; runs split with
    ``tardis_edge.splits``)."""
    if not 0 < n_train < len(dataset):
        raise ValueError(f"n_train={n_train} must be between 1 and {len(dataset) - 1} for {len(dataset)} samples")
    return dataset.subset(range(n_train), "train"), dataset.subset(range(n_train, len(dataset)), "test")


def few_shot(dataset: PoseDataset, n_per_category: int, seed: int) -> PoseDataset:
    """Draw ``n_per_category`` labelled images of each category (all instances of that category in a drawn image
    are kept), reproducibly from ``seed``.

    A category with fewer images than asked keeps all of them, and the summary says so.
    """
    if n_per_category < 1:
        raise ValueError(f"n_per_category must be >= 1, got {n_per_category}")
    groups: dict[str, dict[str, list[int]]] = {}
    for i, s in enumerate(dataset.samples):
        if s.labelled:
            groups.setdefault(s.category, {}).setdefault(image_key(s), []).append(i)
    if not groups:
        raise ValueError(f"{dataset.summary.source} has no labelled samples to draw a few-shot subset from")
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    notes = []
    for category in sorted(groups):
        images = sorted(groups[category])
        if len(images) <= n_per_category:
            picked = images
            if len(images) < n_per_category:
                notes.append(f"category {category!r} has only {len(images)} images (< {n_per_category}): took all")
        else:
            picked = [images[j] for j in sorted(rng.choice(len(images), n_per_category, replace=False))]
        for key in picked:
            chosen.extend(groups[category][key])
    subset = dataset.subset(sorted(chosen), f"few-shot {n_per_category}/category seed {seed}")
    subset.summary.notes.extend(notes)
    return subset


_SIDE_LETTERS = {"l": "r", "r": "l"}
# An upper-case side letter in a camel-case or suffixed name: ``eyeL``, ``forelegL1``, ``LEye``, ``wing_L`` (mmpose's
# fly, locust and zebra). Not after another capital (``ELbow``), and followed by the end, a digit, a separator or the
# next capitalised word.
_CAMEL_SIDE = re.compile(r"(?<![A-Z])[LR](?=$|[0-9_\-\s.]|[A-Z][a-z])")


def _mirror_names(name: str) -> list[str]:
    """Lower-case names the opposite-side keypoint may have (empty if ``name`` has no side).

    Handles ``left_eye``/``leftear``/``LeftEar`` (the words left/right anywhere), ``L_Eye``/``R_F_Paw``/``l-ear``/
    ``eye_l`` (a single ``l``/``r`` token between separators, prefix or suffix) and ``eyeL``/``forelegL1``/``LEye``
    (one upper-case ``L``/``R`` at a word boundary of a camel-case name).
    """
    lower = name.lower()
    if "left" in lower and "right" not in lower:
        return [lower.replace("left", "right")]
    if "right" in lower and "left" not in lower:
        return [lower.replace("right", "left")]
    mirrors = []
    tokens = re.split(r"([_\-\s.]+)", lower)
    sided = [i for i, t in enumerate(tokens) if t in _SIDE_LETTERS]
    if len(sided) == 1:
        tokens[sided[0]] = _SIDE_LETTERS[tokens[sided[0]]]
        mirrors.append("".join(tokens))
    camel = list(_CAMEL_SIDE.finditer(name))
    if len(camel) == 1:
        i = camel[0].start()
        mirrors.append((name[:i] + ("R" if name[i] == "L" else "L") + name[i + 1 :]).lower())
    return mirrors


def flip_pairs_from_names(names: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """Left/right keypoint pairs found from the names (``left_eye``/``right_eye``, ``leftear``/``rightear``,
    ``L_Eye``/``R_Eye``, ``eye_l``/``eye_r``, ``LeftPaw``/``RightPaw``, ``eyeL``/``eyeR``, ``forelegL1``/
    ``forelegR1`` …), as ``(i, j)`` index pairs with ``i < j``.

    Matching ignores case. A name whose mirror is not in the list has no pair (a keypoint on the midline), so a
    side-looking letter (``Leg``) pairs only when its mirror (``Reg``) is a keypoint too.
    """
    lower = [n.lower() for n in names]
    duplicates = [n for n, c in Counter(lower).items() if c > 1]
    if duplicates:
        raise ValueError(f"keypoint names must be unique (ignoring case); repeated: {duplicates}")
    index = {n: i for i, n in enumerate(lower)}
    pairs = set()
    for i, n in enumerate(names):
        for mirror in _mirror_names(n):
            j = index.get(mirror)
            if j is not None and j != i:
                pairs.add((min(i, j), max(i, j)))
                break
    used = [k for pair in pairs for k in pair]
    if len(used) != len(set(used)):
        raise ValueError(
            f"keypoint names {list(names)} give ambiguous flip pairs {sorted(pairs)} (a keypoint in two pairs); "
            "pass flip_pairs explicitly"
        )
    return tuple(sorted(pairs))


def describe_flip_pairs(pairs: Sequence[Sequence[int]], names: Sequence[str]) -> str:
    """``flip pairs (eyeL, eyeR), (wingL, wingR)`` for the load summary (``none`` when there are none)."""
    listed = ", ".join(f"({names[i]}, {names[j]})" for i, j in pairs)
    return f"flip pairs {listed or 'none'}"


def check_flip_pairs(
    pairs: Sequence[Sequence[int | str]], names: Sequence[str], source: str
) -> tuple[tuple[int, int], ...]:
    """Validate user-given flip pairs (indices or names) and return them as index pairs."""
    index = {n: i for i, n in enumerate(names)}
    out = []
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"{source}: flip pair {pair!r} must have two entries")
        ij = []
        for p in pair:
            if isinstance(p, str):
                if p not in index:
                    raise ValueError(f"{source}: flip pair {pair!r} names {p!r}, not a keypoint of {list(names)}")
                ij.append(index[p])
            elif isinstance(p, (int, np.integer)) and 0 <= int(p) < len(names):
                ij.append(int(p))
            else:
                raise ValueError(f"{source}: flip pair {pair!r} has {p!r}, not an index below {len(names)}")
        out.append((min(ij), max(ij)))
    used = [i for pair in out for i in pair]
    if len(used) != len(set(used)):
        raise ValueError(f"{source}: flip pairs {out} use a keypoint twice")
    return tuple(out)


def image_size(path: str | Path) -> tuple[int, int] | None:
    """``(width, height)`` of a PNG or JPEG from its header (no decoding); None for other or unreadable files."""
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(32)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                w, h = struct.unpack(">II", head[16:24])
                return int(w), int(h)
            if head[:2] != b"\xff\xd8":
                return None
            f.seek(2)
            while True:
                marker = f.read(2)
                if len(marker) < 2 or marker[0] != 0xFF:
                    return None
                if marker[1] in (0xD8, 0x01) or 0xD0 <= marker[1] <= 0xD7:
                    continue
                (length,) = struct.unpack(">H", f.read(2))
                if marker[1] in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                    h, w = struct.unpack(">xHH", f.read(5))
                    return int(w), int(h)
                f.seek(length - 2, 1)
    except (OSError, struct.error):
        return None


def labels_outside_images(samples: Sequence[Sample], names: Sequence[str], where: dict[str, str]) -> list[str]:
    """Warnings for labelled keypoints outside their image (frames resized or cropped after labelling?).

    ``where`` maps sample ids to "row 7 of <file>" for the message. Images whose size cannot be read from the
    header are not checked.
    """
    outside = []
    for s in samples:
        if not s.labelled:
            continue
        wh = s.image_wh or (image_size(s.image_path) if s.image_path is not None else None)
        if wh is None:
            continue
        xy = s.keypoints_xy
        bad = (s.visible > 0) & (
            (xy[:, 0] < -0.5) | (xy[:, 1] < -0.5) | (xy[:, 0] > wh[0] - 0.5) | (xy[:, 1] > wh[1] - 0.5)
        )
        for k in np.flatnonzero(bad):
            outside.append(f"{where.get(s.sample_id, s.sample_id)}: {names[k]} ({xy[k, 0]:.1f}, {xy[k, 1]:.1f}) in a "
                           f"{wh[0]}x{wh[1]} image")  # fmt: skip
    if not outside:
        return []
    return [
        f"{len(outside)} labelled keypoint(s) lie outside their image (first: {outside[0]}); were the frames resized "
        "or cropped after labelling? Fix the labels or restore the original frames"
    ]


def read_image_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB (grey is expanded, alpha dropped, 16-bit scaled to 8).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: OpenCV cannot decode it (corrupt, truncated, or not an image), naming the file.
    """
    import cv2

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image {p} does not exist; check the image root / project path")
    try:
        buffer = np.fromfile(str(p), dtype=np.uint8)  # fromfile + imdecode also handles non-ASCII paths
    except OSError as e:
        raise ValueError(f"image {p} cannot be read ({e}); check the file permissions") from e
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if image is None:
        raise ValueError(
            f"image {p} ({buffer.size} bytes) cannot be decoded by OpenCV; the file is corrupt or not an image — "
            "re-extract or replace it, or remove its labels"
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # (H, W, 3) uint8


def read_video_frame(video_path: str | Path, frame_index: int) -> np.ndarray:
    """One frame of a video as ``(H, W, 3)`` uint8 RGB, with an error naming the video and frame."""
    import cv2

    p = Path(video_path)
    if not p.is_file():
        raise FileNotFoundError(f"video {p} does not exist")
    capture = cv2.VideoCapture(str(p))
    try:
        if not capture.isOpened():
            raise ValueError(f"video {p} cannot be opened by OpenCV (codec missing or file corrupt)")
        capture.set(cv2.CAP_PROP_POS_FRAMES, int(frame_index))
        ok, frame = capture.read()
    finally:
        capture.release()
    if not ok or frame is None:
        raise ValueError(f"frame {frame_index} of video {p} cannot be read (past the end, or a decode error)")
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def read_sample_image(sample: Sample, frame_cache: str | Path | None = None) -> np.ndarray:
    """The ``(H, W, 3)`` uint8 RGB image of a sample (an image file or a video frame).

    A video frame comes from the frame cache when ``tardis_edge.data.frame_cache.cache_video_frames`` has put it
    there (under ``frame_cache``, default its default root): milliseconds instead of a seek and decode.
    """
    if sample.image_path is not None:
        return read_image_rgb(sample.image_path)
    if sample.video_path is not None and sample.frame_index is not None:
        from tardis_edge.data.frame_cache import read_cached_frame

        cached = read_cached_frame(sample.video_path, sample.frame_index, frame_cache)
        if cached is not None:
            return cached
        return read_video_frame(sample.video_path, sample.frame_index)
    raise ValueError(f"sample {sample.sample_id} has neither an image_path nor a video_path + frame_index")


def load_dataset(path: str | Path, **kwargs) -> PoseDataset:
    """Load a pose dataset, recognising its format from the path.

    Args:
        path: a DeepLabCut project folder or its ``config.yaml`` (-> ``load_dlc_project``), a COCO keypoint
            ``.json`` (-> ``load_coco_keypoints``), a SLEAP labels file ``.slp`` (-> ``load_sleap``), or a keypoint
            map ``.yaml`` naming several datasets (-> ``keypoint_map.load_mapped_dataset``).
        **kwargs: passed on to the format's loader.
    """
    from tardis_edge.data.coco import load_coco_keypoints
    from tardis_edge.data.dlc import load_dlc_project
    from tardis_edge.data.sleap import load_sleap

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"dataset path {p} does not exist; pass a DeepLabCut project folder (with config.yaml), a COCO keypoint "
            ".json file or a SLEAP .slp file"
        )
    if (p.is_dir() and (p / "config.yaml").is_file()) or (p.is_file() and p.name == "config.yaml"):
        return load_dlc_project(p, **kwargs)
    if p.is_file() and p.suffix.lower() == ".json":
        return load_coco_keypoints(p, **kwargs)
    if p.is_file() and p.suffix.lower() == ".slp":
        return load_sleap(p, **kwargs)
    from tardis_edge.data.keypoint_map import is_keypoint_map, load_mapped_dataset

    if is_keypoint_map(p):
        return load_mapped_dataset(p, **kwargs)
    raise ValueError(
        f"cannot tell the dataset format of {p}: pass a DeepLabCut project folder (with config.yaml), "
        "its config.yaml, a COCO keypoint .json file, a SLEAP .slp labels file or a keypoint map .yaml "
        "(tardis_edge.data.keypoint_map)"
    )
