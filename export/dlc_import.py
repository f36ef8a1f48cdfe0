"""Export stage: a DeepLabCut 3 PyTorch model (``pytorch_config.yaml`` + ``snapshot-*.pt``) as an export source.

    tardis-export PROJECT/dlc-models-pytorch/iteration-0/openfieldOct30-trainset95shuffle1/train --fp16

The model is built by DeepLabCut's own code (``PoseModel.build``, the ``[dlc]`` extra) and its snapshot loaded with
``weights_only=True``; the rest of the export is the one our runs take (``export.pipeline``, ``export.verify``):

* body graph: ``image`` (N, 3, H, W) RGB 0..255 -> DeepLabCut's normalisation (albumentations' ``Normalize`` with
  ImageNet mean/std: ``(x - 255 mean) / (255 std)``), backbone, heads -> ``heatmaps`` (N, K + 2K, h, w): the
  bodypart head's heatmaps, then its location-refinement maps (x, y per keypoint) when it has them;
* decode in the graph (``DLCGraphDecode``), DeepLabCut's ``HeatmapPredictor``: the first maximum of each heatmap
  (sigmoid first when the config says so), its score (clipped to [0, 1] when the config says so), and the keypoint
  ``stride * (u + 0.5) + locref_std * locref(u, v)`` in input pixels: DeepLabCut's numbers, which with a whole
  frame at its own size (the bottom-up models' input) are DeepLabCut's image coordinates.

Supported: single-animal heatmap models (``HeatmapHead`` + ``HeatmapPredictor``, bottom-up ``bu`` or the pose model
of a top-down ``td`` pipeline such as SuperAnimal's) on the backbones in ``BACKBONES``. Anything else (multi-animal
bottom-up heads: DEKR, PAF; conditional top-down; detectors; identity or unique-bodypart heads; other backbones) is
refused with one line naming it. There is no heatmap-only graph: DeepLabCut's decode needs the locref maps too.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

CONFIG_FILE = "pytorch_config.yaml"
# DeepLabCut's backbone model_name -> the net_type a DeepLabCut user names it by
BACKBONES = {"resnet50_gn": "resnet_50", "hrnet_w32": "hrnet_w32"}
SUPPORTED = (
    "single-animal heatmap models (HeatmapHead + HeatmapPredictor; bottom-up, or the pose model of a top-down "
    f"SuperAnimal pipeline) with backbone {' or '.join(BACKBONES.values())}"
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # DeepLabCut's data.inference.normalize_images (albumentations' Normalize)
IMAGENET_STD = (0.229, 0.224, 0.225)
SNAPSHOT = re.compile(r"snapshot-(best-)?(\d+)\.pt$")  # not snapshot-detector-*.pt
SHUFFLE_FOLDER = re.compile(r"trainset(\d+)shuffle(\d+)")


def is_dlc_model(path: str | Path) -> bool:
    """A DeepLabCut model folder (with ``pytorch_config.yaml``), that file, or a snapshot in such a folder."""
    p = Path(path)
    if p.is_dir():
        return (p / CONFIG_FILE).is_file()
    return p.name == CONFIG_FILE or (p.suffix == ".pt" and (p.parent / CONFIG_FILE).is_file())


@dataclass(frozen=True)
class DLCDecode:
    """DeepLabCut's ``HeatmapPredictor`` settings (from ``pytorch_config.yaml``) and the head's stride."""

    stride: float  # input pixels per heatmap cell (PoseModel.get_stride)
    apply_sigmoid: bool
    clip_scores: bool
    location_refinement: bool
    locref_std: float

    def describe(self) -> str:
        score = ("sigmoid of " if self.apply_sigmoid else "") + "the heatmap maximum"
        score += ", clipped to [0, 1]" if self.clip_scores else ""
        where = f"{self.stride:g} * (cell + 0.5)"
        where += f" + {self.locref_std:g} * locref" if self.location_refinement else ""
        return f"DeepLabCut HeatmapPredictor: first maximum; keypoint = {where} input px; score = {score}"


# ------------------------------------------------------------------------------------------- the config
def _refuse(config_path: Path, what: str) -> ValueError:
    return ValueError(f"{config_path}: {what} is not supported; tardis-export imports {SUPPORTED}")


def read_model_config(path: str | Path) -> tuple[dict[str, Any], Path]:
    """``(config, its path)`` for a model folder, its ``pytorch_config.yaml`` or a snapshot beside it."""
    import yaml

    p = Path(path)
    config_path = p / CONFIG_FILE if p.is_dir() else p if p.name == CONFIG_FILE else p.parent / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: a DeepLabCut 3 model folder holds {CONFIG_FILE}")
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ValueError(f"{config_path} is not valid YAML ({reason}); restore DeepLabCut's file") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ValueError(f"{config_path} has no 'model' mapping: not a DeepLabCut 3 PyTorch model config")
    return config, config_path


def check_supported(config: dict[str, Any], config_path: Path) -> None:
    """A ValueError naming what is not supported (one line), unless ``config`` is a model this import takes."""
    method = str(config.get("method", "")).lower()
    net_type = config.get("net_type")
    model = config["model"]
    metadata = config.get("metadata") or {}
    if method not in ("bu", "td"):
        kind = {"ctd": "conditional top-down (CTD)"}.get(method, repr(method))
        raise _refuse(config_path, f"model method {kind} (net_type {net_type})")
    heads = model.get("heads") or {}
    if set(heads) != {"bodypart"}:
        raise _refuse(config_path, f"a model with heads {sorted(heads)} (net_type {net_type})")
    head = heads["bodypart"]
    predictor = head.get("predictor") or {}
    if head.get("type") != "HeatmapHead" or predictor.get("type") != "HeatmapPredictor":
        raise _refuse(
            config_path,
            f"head {head.get('type')} with predictor {predictor.get('type')} (net_type {net_type})",
        )
    individuals = metadata.get("individuals") or []
    if method == "bu" and len(individuals) > 1:
        raise _refuse(config_path, f"a multi-animal bottom-up model ({len(individuals)} individuals)")
    if metadata.get("unique_bodyparts"):
        raise _refuse(config_path, f"a model with unique bodyparts {metadata['unique_bodyparts']}")
    if metadata.get("with_identity"):
        raise _refuse(config_path, "a model with an identity head")
    if model.get("neck"):
        raise _refuse(config_path, f"a model with a neck ({model['neck'].get('type')})")
    backbone = model.get("backbone") or {}
    if backbone.get("model_name") not in BACKBONES:
        raise _refuse(config_path, f"backbone {backbone.get('type')} {backbone.get('model_name')!r}")
    if not metadata.get("bodyparts"):
        raise ValueError(f"{config_path}: metadata.bodyparts is empty; the config names no keypoints")


def predictor_decode(config: dict[str, Any], stride: float) -> DLCDecode:
    """The bodypart head's ``HeatmapPredictor`` settings, with DeepLabCut's defaults for those left out."""
    predictor = config["model"]["heads"]["bodypart"].get("predictor") or {}
    return DLCDecode(
        stride=float(stride),
        apply_sigmoid=bool(predictor.get("apply_sigmoid", True)),
        clip_scores=bool(predictor.get("clip_scores", False)),
        location_refinement=bool(predictor.get("location_refinement", True)),
        locref_std=float(predictor.get("locref_std", 7.2801)),
    )


def pick_snapshot(folder: Path, snapshot: str | Path | None) -> Path:
    """``snapshot``, else the folder's best snapshot, else its latest (DeepLabCut's own preference)."""
    if snapshot is not None:
        path = Path(snapshot)
        if not path.is_file():
            raise FileNotFoundError(f"--snapshot {path} does not exist; pass a snapshot-*.pt of the model folder")
        return path
    found = [
        (bool(m.group(1)), int(m.group(2)), p) for p in folder.glob("snapshot-*.pt") if (m := SNAPSHOT.match(p.name))
    ]
    if not found:
        raise FileNotFoundError(
            f"{folder} has no snapshot-*.pt (detector snapshots aside); train the model, or pass --snapshot PATH"
        )
    return max(found)[2]


def _input_size(config: dict[str, Any], config_path: Path, input_size: tuple[int, int] | None) -> tuple[int, int]:
    """The network input ``(W, H)``: the top-down crop, or for a bottom-up model ``--input-size`` or the DeepLabCut
    project's video crop (DeepLabCut runs such a model on whole frames at their own size)."""
    inference = (config.get("data") or {}).get("inference") or {}
    if config["method"] == "td":
        crop = inference.get("top_down_crop") or {}
        wh = (int(crop.get("width", 256)), int(crop.get("height", 256)))
        if input_size is not None and tuple(input_size) != wh:
            raise ValueError(
                f"--input-size {input_size[0]}x{input_size[1]}: {config_path} is a top-down model with a "
                f"{wh[0]}x{wh[1]} crop (data.inference.top_down_crop); leave --input-size out"
            )
    elif input_size is not None:
        wh = (int(input_size[0]), int(input_size[1]))
    else:
        wh = _project_frame_size(config, config_path)
    for key in ("resize", "longest_max_size"):
        if inference.get(key):
            raise _refuse(config_path, f"inference transform data.inference.{key}")
    padding = inference.get("auto_padding") or {}
    for side, size in (("width", wh[0]), ("height", wh[1])):
        divisor = int(padding.get(f"pad_{side}_divisor") or 1)
        if size % divisor:
            raise ValueError(
                f"input {side} {size} is not a multiple of {divisor} (data.inference.auto_padding of {config_path}); "
                f"pass an --input-size that is (DeepLabCut would pad the frame)"
            )
    return wh


def _project_frame_size(config: dict[str, Any], config_path: Path) -> tuple[int, int]:
    project = _project_config(config)
    sizes = set()
    for video in ((project or {}).get("video_sets") or {}).values():
        crop = str((video or {}).get("crop", "")).replace(" ", "").split(",")
        if len(crop) == 4 and all(c.lstrip("-").isdigit() for c in crop):
            x1, x2, y1, y2 = (int(c) for c in crop)
            sizes.add((x2 - x1, y2 - y1))
    if len(sizes) != 1:
        found = f"video sizes {sorted(sizes)}" if sizes else "no project config.yaml with video_sets"
        raise ValueError(
            f"{config_path} is a bottom-up model, which DeepLabCut runs on whole frames at their own size, and there "
            f"is {found} to take the frame size from; pass --input-size WxH (your videos' size, e.g. 640x480)"
        )
    return sizes.pop()


def _project_config(config: dict[str, Any]) -> dict[str, Any] | None:
    import yaml

    project_path = (config.get("metadata") or {}).get("project_path")
    path = Path(str(project_path)) / "config.yaml" if project_path else None
    if path is None or not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


# ----------------------------------------------------------------------------------------- torch modules
def require_deeplabcut() -> Any:
    try:
        import deeplabcut
    except ImportError as exc:
        raise ImportError(
            "importing a DeepLabCut model builds it with DeepLabCut's own code: pip install 'tardis-edge[dlc]' "
            f"(see scripts/setup_dlc_env.sh) ({exc})"
        ) from exc
    return deeplabcut


class DLCBody(nn.Module):
    """``image`` (N, 3, H, W) RGB 0..255 -> (N, K [+ 2K locref], h, w): DeepLabCut's model, its normalisation."""

    def __init__(self, pose_model: Any, colormode: str, locref: bool, num_keypoints: int) -> None:
        super().__init__()
        self.pose_model = pose_model
        self.bgr = colormode.upper() == "BGR"
        self.locref = locref
        self.config = BodyConfig(list(IMAGENET_MEAN), list(IMAGENET_STD), num_keypoints)
        # albumentations' Normalize as DeepLabCut configures it: (x - 255 mean) * (1 / (255 std)), float32
        mean = torch.tensor([255.0 * m for m in IMAGENET_MEAN], dtype=torch.float32).view(1, 3, 1, 1)
        scale = torch.tensor([1.0 / (255.0 * s) for s in IMAGENET_STD], dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("scale", scale, persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.bgr:  # a model trained on BGR frames (data.colormode); the artifact's input stays RGB
            image = image.flip(1)
        outputs = self.pose_model((image - self.mean) * self.scale)["bodypart"]
        maps = [outputs["heatmap"]] + ([outputs["locref"]] if self.locref else [])
        return torch.cat(maps, dim=1)


class DLCGraphDecode(nn.Module):
    """DeepLabCut's ``HeatmapPredictor`` on the body's output, with the ops of ``export.decode_graph``.

    ``(N, K [+ 2K], h, w)`` -> ``keypoints (N, K, 2)`` input pixels, ``scores (N, K)``; a keypoint whose score is
    <= 0 is at (-1, -1) (the artifact's "not found").
    """

    def __init__(self, decode: DLCDecode, num_keypoints: int, heatmap_hw: tuple[int, int]) -> None:
        super().__init__()
        h, w = heatmap_hw
        self.decode = decode
        self.num_keypoints = num_keypoints
        self.heatmap_hw = (h, w)
        self.register_buffer("flat_positions", torch.arange(h * w, dtype=torch.float32), persistent=False)

    def forward(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        (h, w), k, d = self.heatmap_hw, self.num_keypoints, self.decode
        maps = maps.float()
        heatmaps = maps[:, :k].flatten(2)  # (N, K, h*w)
        if d.apply_sigmoid:
            heatmaps = torch.sigmoid(heatmaps)
        peak = heatmaps.amax(dim=-1)  # (N, K)
        # the first maximum in row-major order, as torch.argmax in DeepLabCut's predictor (see decode_graph)
        index = torch.where(heatmaps == peak.unsqueeze(-1), self.flat_positions, float(h * w)).amin(dim=-1)
        y = torch.floor(index / w)
        x = index - y * w
        keypoints = torch.stack([x, y], dim=-1) * d.stride + 0.5 * d.stride  # (N, K, 2)
        if d.location_refinement:
            locref = maps[:, k : 3 * k].reshape(maps.shape[0], k, 2, h * w)  # (N, K, (x, y), h*w)
            at = index.long().view(maps.shape[0], k, 1, 1).expand(-1, -1, 2, 1)
            keypoints = keypoints + d.locref_std * locref.gather(-1, at).squeeze(-1)
        scores = peak.clamp(0.0, 1.0) if d.clip_scores else peak
        found = (scores > 0).unsqueeze(-1)
        return torch.where(found, keypoints, torch.full_like(keypoints, -1.0)), scores


@dataclass
class BodyConfig:
    """What the pipeline reads of a model's config (``ArtifactMetadata`` mean/std)."""

    mean: list[float]
    std: list[float]
    num_keypoints: int


@dataclass
class DLCModel:
    """The DeepLabCut side of an ``ExportSource``: DeepLabCut's model, its decode, what the artifact says of it."""

    pose_model: Any  # DeepLabCut's PoseModel, eval mode
    config: dict[str, Any]  # pytorch_config.yaml
    config_path: Path
    decode: DLCDecode

    @property
    def colormode(self) -> str:
        return str((self.config.get("data") or {}).get("colormode") or "RGB")

    def graph_decode(self, num_keypoints: int, heatmap_hw: tuple[int, int]) -> Any:
        return DLCGraphDecode(self.decode, num_keypoints, heatmap_hw).eval()

    def crop_runner(self, device: str = "cpu") -> Any:
        """The verification reference: DeepLabCut's model, transforms and predictor on crops (input pixels)."""
        from deeplabcut.pose_estimation_pytorch.data.transforms import build_transforms

        from tardis_edge.predict import CropPrediction

        transform = build_transforms(self.config["data"]["inference"])
        model = self.pose_model.eval().to(device)
        bgr = self.colormode.upper() == "BGR"

        @torch.no_grad()
        def run(crops: np.ndarray, input_to_image: np.ndarray) -> CropPrediction:
            images = np.ascontiguousarray(np.asarray(crops, dtype=np.float32).transpose(0, 2, 3, 1))  # (N, H, W, 3)
            if bgr:
                images = images[..., ::-1]
            h, w = images.shape[1:3]
            x = np.stack(
                [
                    transform(
                        image=np.ascontiguousarray(im),
                        keypoints=[],
                        class_labels=[],
                        bboxes=[[0, 0, w, h]],
                        bbox_labels=["image"],
                    )["image"]  # as DeepLabCut's AugmentImage calls it
                    for im in images
                ]
            )
            outputs = model(torch.from_numpy(x.transpose(0, 3, 1, 2)).float().to(device))
            poses = model.get_predictions(outputs)["bodypart"]["poses"][:, 0].cpu().numpy()  # (N, K, 3)
            return CropPrediction(keypoints=poses[..., :2].astype(np.float32), scores=poses[..., 2].astype(np.float32))

        return run


def final_layers(body_graph: Any) -> list[str]:
    """The last Conv / ConvTranspose node of each DeepLabCut head branch (kept FP32 by FP16 and INT8)."""
    names = []
    for branch in ("heatmap_head", "locref_head"):
        scope = f"/bodypart/{branch}/"  # the exporter names nodes by module path (/pose_model/bodypart/...)
        nodes = [n.name for n in body_graph.graph.node if scope in n.name and "Conv" in n.op_type]
        if nodes:
            names.append(nodes[-1])
    if not names:
        raise ValueError("no heatmap-head Conv node in the DeepLabCut body graph; was it built by load_dlc_source?")
    return names


# ------------------------------------------------------------------------------------------------ loading
def load_dlc_source(
    path: str | Path, snapshot: str | Path | None = None, input_size: tuple[int, int] | None = None
) -> Any:
    """An ``export.source.ExportSource`` for a DeepLabCut 3 model folder (or its config, or a snapshot in it).

    Raises:
        ValueError: a model type this import does not support (one line naming it), a bad snapshot or input size.
        FileNotFoundError: no ``pytorch_config.yaml`` or no snapshot.
        ImportError: DeepLabCut is not installed (the ``[dlc]`` extra).
    """
    from export.source import ExportSource
    from tardis_edge.data.dataset import flip_pairs_from_names
    from tardis_edge.data.sample import KeypointSchema
    from tardis_edge.predict import PredictConfig

    config, config_path = read_model_config(path)
    check_supported(config, config_path)
    p = Path(path)
    if snapshot is None and p.suffix == ".pt":
        snapshot = p
    snapshot_path = pick_snapshot(config_path.parent, snapshot)
    input_wh = _input_size(config, config_path, input_size)
    deeplabcut = require_deeplabcut()
    from deeplabcut.pose_estimation_pytorch.models import PoseModel

    try:
        state = torch.load(snapshot_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, a non-tensor object weights_only refuses
        reason = " ".join(str(exc).split())[:200]
        raise ValueError(f"{snapshot_path} is not a loadable DeepLabCut snapshot ({reason})") from None
    weights = state.get("model") if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise ValueError(f"{snapshot_path} holds no 'model' state dict: not a DeepLabCut pose-model snapshot")
    pose_model = PoseModel.build(copy.deepcopy(config["model"]))  # pretrained=False: no download
    try:
        pose_model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise ValueError(f"{snapshot_path} does not fit {config_path} ({first})") from None
    pose_model.eval()

    names = tuple(str(n) for n in config["metadata"]["bodyparts"])
    decode = predictor_decode(config, pose_model.get_stride("bodypart"))
    dlc = DLCModel(pose_model, config, config_path, decode)
    body = DLCBody(pose_model, dlc.colormode, decode.location_refinement, len(names)).eval()
    with torch.no_grad():
        out = body(torch.zeros(1, 3, input_wh[1], input_wh[0]))
    expected = len(names) * (3 if decode.location_refinement else 1)
    if out.shape[1] != expected:
        raise ValueError(
            f"{config_path}: the model outputs {out.shape[1]} maps, not {expected} for {len(names)} bodyparts"
        )
    heatmap_wh = (int(out.shape[-1]), int(out.shape[-2]))
    project = _project_config(config) or {}
    skeleton = tuple(
        (names.index(a), names.index(b))
        for a, b in (project.get("skeleton") or [])
        if a in names and b in names and a != b
    )
    schema = KeypointSchema(names, skeleton, flip_pairs_from_names(names))
    pcutoff = float(project.get("pcutoff") or 0.6)
    predict = PredictConfig(
        decode="argmax",  # the peak; the locref step is DeepLabCut's, in the graph (DLCGraphDecode)
        flip_test=False,
        two_pass=config["method"] == "td",  # a bottom-up model sees the whole frame, as in DeepLabCut
        box_min_score=pcutoff,  # DeepLabCut's pcutoff: the score above which it draws a keypoint
    )
    data, split = _project_data(config, config_path)
    return ExportSource(
        checkpoint=snapshot_path,
        run_dir=None,
        model=body,
        schema=schema,
        input_wh=input_wh,
        heatmap_wh=heatmap_wh,
        predict=predict,
        versions={"deeplabcut": deeplabcut.__version__, "torch": torch.__version__},
        data=data,
        split=split,
        dlc=dlc,
    )


def _project_data(config: dict[str, Any], config_path: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The DeepLabCut project's data and this shuffle's train/test split (DeepLabCut's own ``DLCLoader``), when the
    model folder is a shuffle of a project on this disk; else ``({}, None)`` (verification then needs ``--data``)."""
    project_path = (config.get("metadata") or {}).get("project_path")
    match = SHUFFLE_FOLDER.search(str(config_path))
    if not project_path or match is None or not (Path(project_path) / "config.yaml").is_file():
        return {}, None
    from deeplabcut.pose_estimation_pytorch.data.dlcloader import DLCLoader

    from tardis_edge.splits import Split

    project = Path(project_path)
    try:
        fractions = [int(round(100 * float(f))) for f in (_project_config(config) or {}).get("TrainingFraction", [])]
        loader = DLCLoader(project / "config.yaml", fractions.index(int(match.group(1))), int(match.group(2)))
        ids = ["/".join(i) if isinstance(i, tuple) else str(i) for i in loader.df.index]
        split = Split(
            train=[ids[i] for i in loader.split["train"]],
            val=[],
            test=[ids[i] for i in loader.split["test"]],
            describe=f"DeepLabCut's split of {match.group(0)} (training-datasets Documentation_data pickle)",
        )
    except (OSError, ValueError, KeyError, IndexError):
        return {"path": str(project)}, None
    return {"path": str(project)}, split.to_dict()
