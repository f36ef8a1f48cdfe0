"""Export stage: read what is exported — a run folder of ``python -m training.full`` or its ``model.pt``.

The checkpoint (``training.full.stage_evaluate``) holds ``model`` (state dict), ``model_config`` (a
``ModelConfig`` dict), ``schema`` ({names, skeleton, flip_pairs, sigmas}), ``input_size``, ``heatmap_size``,
``predict`` (a ``PredictConfig`` dict) and ``versions``. A run folder adds ``config.yaml``, whose ``data``
section says where the labelled data and its split are (verification and calibration use them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tardis_edge.data.sample import KeypointSchema

CHECKPOINT_NAME = "model.pt"
CHECKPOINT_KEYS = ("model", "model_config", "schema", "input_size", "heatmap_size", "predict")


@dataclass
class ExportSource:
    """A trained pose model and everything about it that export needs.

    Attributes:
        checkpoint: the ``model.pt`` file read.
        run_dir: the run folder, or None when a bare checkpoint file was given.
        model: the ``PoseModel`` in eval mode, in its training form (the PyTorch reference of verification).
        schema: keypoint names, skeleton, flip pairs, OKS sigmas.
        input_wh: crop size ``(W, H)`` in input pixels; ``heatmap_wh`` the heatmap size ``(W, H)``.
        predict: the run's ``PredictConfig`` (decode method, soft-argmax beta, box padding, two-pass settings).
        versions: the training environment's versions (from the checkpoint).
        data: the run's ``config.yaml`` ``data`` section (``{}`` without a run folder).
    """

    checkpoint: Path
    run_dir: Path | None
    model: Any
    schema: KeypointSchema
    input_wh: tuple[int, int]
    heatmap_wh: tuple[int, int]
    predict: Any
    versions: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def stride(self) -> float:
        from tardis_edge.geometry import heatmap_stride

        return heatmap_stride(self.input_wh, self.heatmap_wh)


def resolve_checkpoint(run_or_checkpoint: str | Path) -> tuple[Path, Path | None]:
    """``(checkpoint file, run folder or None)`` for a run folder or a checkpoint path, with clear errors."""
    p = Path(run_or_checkpoint)
    if not p.exists():
        raise FileNotFoundError(
            f"{p} does not exist: pass a run folder written by `python -m training.full` (it holds {CHECKPOINT_NAME}) "
            "or a checkpoint file"
        )
    if p.is_file():
        return p, (p.parent if (p.parent / "config.yaml").is_file() else None)
    ckpt = p / CHECKPOINT_NAME
    if not ckpt.is_file():
        found = sorted(q.name for q in p.glob("*.pt"))
        hint = (
            f" (found {', '.join(found)}: the run has not reached its evaluate stage; run training.full again to "
            "finish it)"
            if found
            else ""
        )
        raise FileNotFoundError(f"run folder {p} has no {CHECKPOINT_NAME}{hint}")
    return ckpt, p


def _pair(value: Any, name: str, source: str) -> tuple[int, int]:
    """An int or a (W, H) pair -> ``(W, H)``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"{source}: {name} must be an int or a [width, height] pair, got {value!r}")


def _schema(data: Any, source: str) -> KeypointSchema:
    if not isinstance(data, Mapping) or not data.get("names"):
        raise ValueError(f"{source}: 'schema' must be a mapping with keypoint 'names'; got {data!r}")
    sigmas = data.get("sigmas")
    return KeypointSchema(
        names=tuple(str(n) for n in data["names"]),
        skeleton=tuple((int(a), int(b)) for a, b in data.get("skeleton") or ()),
        flip_pairs=tuple((int(a), int(b)) for a, b in data.get("flip_pairs") or ()),
        sigmas=tuple(float(s) for s in sigmas) if sigmas else None,
    )


def model_from_state(model_config: Mapping[str, Any], state: Mapping[str, Any], source: str) -> Any:
    """Rebuild the keypoint model (backbone + neck + heatmap head, no stage-1 decoder) and load its weights."""
    from tardis_edge.models import ModelConfig, build_model

    if "head.final.weight" not in state:
        raise ValueError(
            f"{source} has no heatmap head (no 'head.final.weight' in its state dict): it is a stage-1 (distillation) "
            "checkpoint; export the run's model.pt written after stage 2"
        )
    config = dict(model_config)
    config.update(use_decoder=False, use_head=True)
    num_keypoints = int(state["head.final.weight"].shape[0])
    config.setdefault("num_keypoints", num_keypoints)
    model = build_model(ModelConfig.from_dict(config, source=f"{source} model_config"))
    weights = {k: v for k, v in state.items() if not k.startswith("decoder.")}
    model.load_state_dict(weights)
    return model.eval()


def load_source(run_or_checkpoint: str | Path) -> ExportSource:
    """Load the model and its metadata from a run folder or a ``model.pt`` checkpoint file.

    Raises:
        FileNotFoundError: the path or the run's ``model.pt`` is missing.
        ValueError / KeyError: the checkpoint lacks an entry or holds an inconsistent one (named in the message).
    """
    import torch

    from tardis_edge.config import from_dict
    from training.predict import PredictConfig

    ckpt_path, run_dir = resolve_checkpoint(run_or_checkpoint)
    source = str(ckpt_path)
    try:
        # torch.__version__ is a TorchVersion (a str subclass); checkpoints whose "versions" hold it unconverted
        # need it allowlisted to load with weights_only=True. Nothing else beyond tensors and containers is allowed.
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated/corrupt file or not a checkpoint: say which
        raise ValueError(f"{source} cannot be read as a torch checkpoint ({exc})") from exc
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"{source} holds a {type(ckpt).__name__}, not a checkpoint dict")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise KeyError(
            f"{source} lacks {', '.join(missing)}; export needs the deployable checkpoint written by training.full's "
            f"evaluate stage (keys {', '.join(CHECKPOINT_KEYS)}); found keys {sorted(ckpt)}"
        )
    schema = _schema(ckpt["schema"], source)
    model = model_from_state(ckpt["model_config"], ckpt["model"], source)
    if model.config.num_keypoints != schema.num_keypoints:
        raise ValueError(
            f"{source}: the model predicts {model.config.num_keypoints} heatmaps but the schema names "
            f"{schema.num_keypoints} keypoints"
        )
    input_wh = _pair(ckpt["input_size"], "input_size", source)
    heatmap_wh = _pair(ckpt["heatmap_size"], "heatmap_size", source)
    expected = (input_wh[0] // model.out_stride, input_wh[1] // model.out_stride)
    if heatmap_wh != expected:
        raise ValueError(
            f"{source}: heatmap_size {heatmap_wh} does not match the model's output {expected} for input {input_wh} "
            f"(stride {model.out_stride})"
        )
    predict = from_dict(PredictConfig, dict(ckpt["predict"]))
    data: dict[str, Any] = {}
    if run_dir is not None:
        import yaml

        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        data = dict(config.get("data") or {})
    versions = {str(k): str(v) for k, v in dict(ckpt.get("versions") or {}).items()}
    return ExportSource(ckpt_path, run_dir, model, schema, input_wh, heatmap_wh, predict, versions, data)


def same_path(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def load_split(source: ExportSource, data_path: str | Path | None = None) -> tuple[Any, Any, Any]:
    """``(dataset, train, test)`` of the run's labelled data, split as the run split it.

    Args:
        source: the loaded run (its ``config.yaml`` ``data`` section names the data and the split).
        data_path: another dataset instead (DeepLabCut project or COCO json); the run's split rule still applies
            when it is the run's own data, else ``auto`` (the openfield split or the first 80 %).

    Raises:
        ValueError: no data is known (a bare checkpoint without ``data_path``), naming the options.
    """
    from tardis_edge.data import load_dataset, openfield_split, split_by_index

    run_path = source.data.get("path")
    builtin = None
    if data_path is None and run_path is None and source.run_dir is not None:
        candidate = source.run_dir / "builtin-data"
        builtin = candidate if (candidate / "config.yaml").is_file() else None
    path = data_path or run_path or builtin
    if path is None:
        raise ValueError(
            f"{source.checkpoint}: no labelled data to verify or calibrate on: the checkpoint is not in a run folder "
            "whose config.yaml names data.path (nor has builtin-data/); pass --data PATH (a DeepLabCut project or "
            "COCO json), or --no-verify"
        )
    if not Path(path).exists():
        raise FileNotFoundError(
            f"{source.checkpoint}: data path {path} does not exist (a relative data.path in config.yaml is relative to "
            "where training ran); pass --data PATH, or --no-verify"
        )
    dataset = load_dataset(path)
    own = data_path is None or (run_path is not None and same_path(data_path, run_path))
    split = str(source.data.get("split", "auto")) if own else "auto"
    if split == "auto":
        split = "openfield" if "openfield" in str(path) else "fraction"
    if split == "openfield":
        train, test = openfield_split(dataset)
    elif split == "fraction":
        if builtin is not None and path == builtin:
            from tardis_edge.data.synthetic import num_train_frames

            n_train = num_train_frames(len(dataset))  # the procedural project's fixed split, as training.full
        else:
            fraction = float(source.data.get("train_fraction", 0.8)) if own else 0.8
            n_train = max(1, int(round(len(dataset) * fraction)))
        train, test = split_by_index(dataset, n_train)
    else:
        raise ValueError(f"{source.checkpoint}: unknown data.split {split!r} in the run's config.yaml")
    return dataset, train, test
