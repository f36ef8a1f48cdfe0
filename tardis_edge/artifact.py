"""The exported-artifact contract shared by ``export`` (writer), ``tardis_edge.runtime`` (reader, no torch)
and the C++ library (reader). Pure Python + JSON: importing this module must not import torch.

An artifact is a folder written by ``tardis-export``::

    model.json                    # this metadata (also embedded in every ONNX file's metadata_props)
    tardis_fp32.onnx              # image -> keypoints (crop input pixels) + scores, decode in the graph
    tardis_fp32_heatmaps.onnx     # image -> heatmaps (for decoders outside the graph: C++/OpenCV DNN)
    tardis_fp16.onnx              # optional, FP16 body, FP32 I/O + decode
    tardis_int8_cpu.onnx          # optional, INT8 body for ONNX Runtime on CPU (uint8 activations, int8 weights)
    tardis_int8_qdq.onnx          # optional, INT8 body for TensorRT (symmetric Q/DQ, int8 weights); both INT8
                                  # graphs keep the last head conv + decode FP32; precision "int8" opens the one
                                  # made for the backend
    tardis_finder_<precision>.onnx  # multi-animal models: the whole-frame animal finder (``tardis_edge.finder``), one
                                  # graph per precision, listed under model.json's ``finder``
    trtexec_<precision>.sh        # the exact trtexec command that builds each engine on the target
    verification.json / .md       # parity report against PyTorch

ONNX I/O (every precision): input ``image`` float32 ``(N, 3, H_in, W_in)``, RGB, values in [0, 255]
(normalisation ``(x / 255 - mean) / std`` is inside the graph); outputs ``keypoints`` float32 ``(N, K, 2)``
``(x, y)`` in crop input pixels (pixel-centre convention of ``tardis_edge.geometry``) and ``scores``
float32 ``(N, K)`` (score <= 0: not found); the heatmap graph outputs ``heatmaps`` float32
``(N, K, H_hm, W_hm)``.

Finder graphs (``finder`` in ``model.json``: ``input_size`` S, ``stride``, the decode fields of
``tardis_edge.finder.FinderConfig``, and ``models``: precision -> ``{"file", "precision", "bytes", "sha256"}``): input
``image`` float32 ``(N, 3, S, S)`` RGB 0..255, the whole frame letterboxed (``geometry.box_from_image``, aspect kept);
output ``heatmaps`` float32 ``(N, 3, S/stride, S/stride)``: the animal-centre heatmap and the box width and height as
fractions of S.

ONNX ``metadata_props`` of every file: ``tardis_edge.artifact`` = this metadata's JSON (as ``model.json``, less the
files' ``bytes`` and ``sha256``, which a file cannot hold of itself) and ``tardis_edge.model`` = the key of ``models``
that describes the file itself (``fp32``, ``fp16``, ``int8_cpu``, ``int8_qdq`` …).

Every ``models`` entry of ``model.json`` records its file's size (``bytes``) and SHA-256 (``sha256``): the runtime
opens only the files ``model.json`` lists, and refuses one whose size or hash differs (a file left by another export,
or damaged), so an artifact folder can never run a model other than the one it describes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tardis_edge.geometry import DEFAULT_PADDING
from tardis_edge.io import atomic_write_text, strict_json  # noqa: F401  (atomic_write_text: re-exported for writers)

FORMAT = "tardis-edge-artifact"
FORMAT_VERSION = 1
METADATA_FILE = "model.json"
INPUT_NAME = "image"
OUTPUT_KEYPOINTS = "keypoints"
OUTPUT_SCORES = "scores"
OUTPUT_HEATMAPS = "heatmaps"
ONNX_METADATA_KEY = "tardis_edge.artifact"
ONNX_MODEL_KEY = "tardis_edge.model"
FINGERPRINT_KEYS = ("bytes", "sha256")
LOG = logging.getLogger(__name__)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ArtifactMetadata:
    """Everything a runtime needs to run an exported model without training code."""

    keypoint_names: list[str]
    skeleton: list[list[int]]
    flip_pairs: list[list[int]]
    input_width: int = 256
    input_height: int = 256
    heatmap_width: int = 64
    heatmap_height: int = 64
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    color: str = "RGB"
    padding: float = DEFAULT_PADDING
    decode_method: str = "msra"
    softargmax_beta: float | None = None
    models: dict[str, dict] = field(default_factory=dict)  # precision -> {"file", "outputs", ...}
    versions: dict[str, str] = field(default_factory=dict)
    finder: dict | None = None  # multi-animal models: the animal finder (see the module docstring)
    # per-keypoint OKS sigmas for COCO evaluation of the results (tardis_edge.metrics.schema_oks_sigmas: the training
    # data's, else a uniform default) and where they come from; None: exported before they were recorded
    oks_sigmas: list[float] | None = None
    oks_sigmas_source: str | None = None
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def stride(self) -> float:
        return self.input_width / self.heatmap_width

    def to_json(self) -> str:
        return strict_json(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> ArtifactMetadata:
        if data.get("format") != FORMAT:
            raise ValueError(f"{source} is not a tardis-edge artifact (format={data.get('format')!r})")
        if int(data.get("format_version", -1)) > FORMAT_VERSION:
            raise ValueError(
                f"{source} has format_version {data['format_version']}, newer than this runtime's "
                f"{FORMAT_VERSION}; upgrade tardis-edge"
            )
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source} has unknown metadata keys {unknown}; it was written by a newer exporter")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> ArtifactMetadata:
        """Read ``model.json`` from an artifact folder (or the file itself)."""
        p = Path(path)
        if p.is_dir():
            p = p / METADATA_FILE
        if not p.exists():
            raise FileNotFoundError(f"{p} not found: an artifact folder written by tardis-export has {METADATA_FILE}")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ValueError(f"{p} is not a text (UTF-8) file; re-export the artifact with tardis-export") from None
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{p} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}; truncated?); re-export "
                "the artifact with tardis-export"
            ) from None
        if not isinstance(data, dict):
            raise ValueError(f"{p} holds a JSON {type(data).__name__}, not an artifact description; re-export")
        try:
            return cls.from_dict(data, source=str(p))
        except TypeError as exc:  # a field missing
            raise ValueError(f"{p} is incomplete ({exc}); re-export the artifact with tardis-export") from None

    def without_fingerprints(self) -> ArtifactMetadata:
        """A copy whose ``models`` entries lack ``bytes``/``sha256`` (what every ONNX file embeds of itself)."""

        def strip(entries: dict) -> dict:
            return {k: {f: v for f, v in e.items() if f not in FINGERPRINT_KEYS} for k, e in entries.items()}

        finder = None if self.finder is None else {**self.finder, "models": strip(self.finder.get("models", {}))}
        return replace(self, models=strip(self.models), finder=finder)

    def entry_for_file(self, name: str) -> dict | None:
        """The ``models`` entry whose ``file`` is ``name`` (None: ``model.json`` does not list it)."""
        entries = list(self.models.values()) + list((self.finder or {}).get("models", {}).values())
        return next((e for e in entries if isinstance(e, dict) and e.get("file") == name), None)


def file_fingerprint(path: str | Path) -> dict[str, int | str]:
    """``{"bytes", "sha256"}`` of a file, as ``model.json`` records them (~0.1 s for a 50 MB graph)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"bytes": Path(path).stat().st_size, "sha256": digest.hexdigest()}


def check_listed_file(folder: str | Path, meta: ArtifactMetadata, name: str) -> Path:
    """``folder/name`` after checking it is the file ``model.json`` lists: same size and SHA-256.

    Raises:
        ValueError: ``model.json`` does not list ``name``, or the file's size or hash differs (another export's file,
            or a damaged one): the message names the file, expected vs found, and says to re-export.
    """
    path = Path(folder) / name
    entry = meta.entry_for_file(name)
    if entry is None:
        raise ValueError(
            f"{path} is not listed in {Path(folder) / METADATA_FILE} (it lists {sorted(meta.models)}); the runtime "
            "opens only the files of its own export: re-export into this folder"
        )
    if "sha256" not in entry or "bytes" not in entry:
        LOG.warning(
            "%s: %s records no size and hash for %s (exported by an older tardis-export), so it cannot be checked "
            "to belong to this export; re-export to have it checked",
            path,
            METADATA_FILE,
            name,
        )
        return path
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise ValueError(
            f"{path} has {size} bytes but {METADATA_FILE} lists {entry['bytes']}: it is not the file this export "
            "wrote (another export's, or damaged); re-export into this folder"
        )
    found = file_fingerprint(path)["sha256"]
    if found != entry["sha256"]:
        raise ValueError(
            f"{path} has sha256 {found[:16]}… but {METADATA_FILE} lists {str(entry['sha256'])[:16]}…: it is not the "
            "file this export wrote (another export's, or damaged); re-export into this folder"
        )
    return path
