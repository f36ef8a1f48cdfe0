"""The exported-artifact contract shared by ``export`` (writer), ``tardis_edge.runtime`` (reader, no torch)
and the C++ library (reader). Pure Python + JSON: importing this module must not import torch.

An artifact is a folder written by ``tardis-export``::

    model.json                    # this metadata (also embedded in every ONNX file's metadata_props)
    tardis_fp32.onnx              # image -> keypoints (crop input pixels) + scores, decode in the graph
    tardis_fp32_heatmaps.onnx     # image -> heatmaps (for decoders outside the graph: C++/OpenCV DNN)
    tardis_fp16.onnx              # optional, FP16 body, FP32 I/O + decode
    tardis_int8_qdq.onnx          # optional, INT8 Q/DQ body, last head conv + decode FP32
    trtexec_<precision>.sh        # the exact trtexec command that builds each engine on the target
    verification.json / .md       # parity report against PyTorch

ONNX I/O (every precision): input ``image`` float32 ``(N, 3, H_in, W_in)``, RGB, values in [0, 255]
(normalisation ``(x / 255 - mean) / std`` is inside the graph); outputs ``keypoints`` float32 ``(N, K, 2)``
``(x, y)`` in crop input pixels (pixel-centre convention of ``tardis_edge.geometry``) and ``scores``
float32 ``(N, K)`` (score <= 0: not found); the heatmap graph outputs ``heatmaps`` float32
``(N, K, H_hm, W_hm)``.

ONNX ``metadata_props`` of every file: ``tardis_edge.artifact`` = this metadata's JSON (as ``model.json``) and
``tardis_edge.model`` = the key of ``models`` that describes the file itself (``fp32``, ``fp16``, ``int8_qdq`` …).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tardis_edge.geometry import DEFAULT_PADDING
from tardis_edge.io import atomic_write_text  # noqa: F401  (re-exported for writers of artifacts)

FORMAT = "tardis-edge-artifact"
FORMAT_VERSION = 1
METADATA_FILE = "model.json"
INPUT_NAME = "image"
OUTPUT_KEYPOINTS = "keypoints"
OUTPUT_SCORES = "scores"
OUTPUT_HEATMAPS = "heatmaps"
ONNX_METADATA_KEY = "tardis_edge.artifact"
ONNX_MODEL_KEY = "tardis_edge.model"
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
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def stride(self) -> float:
        return self.input_width / self.heatmap_width

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

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
        return cls.from_dict(json.loads(p.read_text()), source=str(p))
