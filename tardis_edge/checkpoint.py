"""The deploy checkpoint ``model.pt``: what the evaluate stage of ``python -m training.full`` writes and what export,
the runtime's PyTorch backend and the tests read. One dataclass, one writer, one reader.

Format versions: 1 is every ``model.pt`` written before this module (no ``format_version`` key); 2 adds
``format_version`` and the run's ``split``; 3 adds the optional ``finder`` (multi-animal runs: the whole-frame
animal-finding model, ``tardis_edge.finder``). All read back the same way; a missing ``split`` or ``finder`` is
``None``.

torch is imported only inside ``save``, ``load`` and ``build_model``: the runtime imports this module's types
without torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tardis_edge.data.sample import KeypointSchema

CHECKPOINT_NAME = "model.pt"
FORMAT_VERSION = 3
REQUIRED_KEYS = ("model", "model_config", "schema", "input_size", "heatmap_size", "predict")
WRITER = "python -m training.full (its evaluate stage)"


@dataclass
class DeployCheckpoint:
    """A trained keypoint model and everything needed to deploy it.

    Attributes:
        model: the state dict (parameter name -> tensor) of the stage-2 ``PoseModel``.
        model_config: its ``ModelConfig`` as a dict.
        schema: keypoint names, skeleton, flip pairs, OKS sigmas.
        input_size: crop size ``(W, H)`` in input pixels; ``heatmap_size`` the heatmap's ``(W, H)``.
        predict: the run's ``PredictConfig`` as a dict (decode method, soft-argmax beta, box padding, two passes).
        versions: the training environment (``tardis_edge.provenance.versions``).
        split: the run's train/val/test sample ids (``tardis_edge.splits``); None in files written before splits.
        finder: multi-animal runs: ``{"model": state dict, "model_config": dict, "config": FinderConfig dict,
            "stride": float}``; None for single-animal runs.
        format_version: the file format (see the module docstring).
    """

    model: dict[str, Any]
    model_config: dict[str, Any]
    schema: KeypointSchema
    input_size: tuple[int, int]
    heatmap_size: tuple[int, int]
    predict: dict[str, Any]
    versions: dict[str, str] = field(default_factory=dict)
    split: dict[str, Any] | None = None
    finder: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The file's contents: tensors and plain containers only (``torch.load(weights_only=True)`` reads it)."""
        return {
            "format_version": self.format_version,
            "model": self.model,
            "model_config": dict(self.model_config),
            "schema": {
                "names": list(self.schema.names),
                "skeleton": [list(e) for e in self.schema.skeleton],
                "flip_pairs": [list(p) for p in self.schema.flip_pairs],
                "sigmas": list(self.schema.sigmas) if self.schema.sigmas else None,
            },
            "input_size": list(self.input_size),
            "heatmap_size": list(self.heatmap_size),
            "predict": dict(self.predict),
            "versions": {str(k): str(v) for k, v in self.versions.items()},
            "split": self.split,
            "finder": self.finder,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "checkpoint") -> DeployCheckpoint:
        """Check and convert a loaded checkpoint dict; ``source`` (the file) is named in every error."""
        version = data.get("format_version", 1)
        if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise ValueError(
                f"{source} has deploy checkpoint format {version!r}; this tardis-edge reads formats 1 to "
                f"{FORMAT_VERSION}: upgrade tardis-edge, or re-export with the one that trained it"
            )
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise KeyError(
                f"{source} lacks {', '.join(missing)}: it is not a deploy checkpoint (those are written by {WRITER}, "
                f"with keys {', '.join(REQUIRED_KEYS)}); found keys {', '.join(sorted(map(str, data)))}"
            )
        for key in ("model", "model_config", "predict"):
            if not isinstance(data[key], Mapping):
                raise ValueError(f"{source}: {key!r} must be a mapping, got {type(data[key]).__name__}")
        return cls(
            model=dict(data["model"]),
            model_config=dict(data["model_config"]),
            schema=_schema(data["schema"], source),
            input_size=_pair(data["input_size"], "input_size", source),
            heatmap_size=_pair(data["heatmap_size"], "heatmap_size", source),
            predict=dict(data["predict"]),
            versions={str(k): str(v) for k, v in dict(data.get("versions") or {}).items()},
            split=dict(data["split"]) if data.get("split") is not None else None,
            finder=_finder(data.get("finder"), source),
            format_version=version,
        )

    def save(self, path: str | Path) -> None:
        """Write atomically (a temporary file renamed into place): a killed run leaves the old file or none."""
        from tardis_edge.io import atomic_torch_save

        atomic_torch_save(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> DeployCheckpoint:
        """Read a ``model.pt`` with ``torch.load(weights_only=True)`` on the CPU.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a torch file of tensors and containers, or a newer format.
            KeyError: a required key is missing (named, with the keys found).
        """
        import torch

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: a deploy checkpoint is the {CHECKPOINT_NAME} written by {WRITER}")
        try:
            # Files written before versions() converted torch.__version__ hold a TorchVersion (a str subclass).
            with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
                data = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated file, or objects weights_only refuses: say which file and why
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise ValueError(
                f"{p} cannot be read with torch.load(weights_only=True): {reason}; a {CHECKPOINT_NAME} holds only "
                "tensors and plain containers"
            ) from exc
        if not isinstance(data, Mapping):
            raise ValueError(f"{p} holds a {type(data).__name__}, not a deploy checkpoint dict")
        return cls.from_dict(data, source=str(p))

    def build_model(self, source: str = "checkpoint") -> Any:
        """The keypoint ``PoseModel`` (backbone + neck + heatmap head, no stage-1 decoder) with these weights, in
        eval mode on the CPU."""
        from tardis_edge.models import ModelConfig, build_model

        if "head.final.weight" not in self.model:
            raise ValueError(
                f"{source} has no heatmap head (no 'head.final.weight' in its state dict): it is a stage-1 "
                f"(distillation) checkpoint; use the run's {CHECKPOINT_NAME} written after stage 2"
            )
        config = dict(self.model_config, use_decoder=False, use_head=True)
        config.setdefault("num_keypoints", int(self.model["head.final.weight"].shape[0]))
        model = build_model(ModelConfig.from_dict(config, source=f"{source} model_config"))
        model.load_state_dict({k: v for k, v in self.model.items() if not k.startswith("decoder.")})
        return model.eval()

    def build_finder(self, source: str = "checkpoint") -> Any:
        """The finder ``PoseModel`` (3-channel whole-frame head) in eval mode on the CPU; None without a finder."""
        if self.finder is None:
            return None
        from tardis_edge.models import ModelConfig, build_model

        model = build_model(ModelConfig.from_dict(self.finder["model_config"], source=f"{source} finder model_config"))
        model.load_state_dict(self.finder["model"])
        return model.eval()


def _finder(data: Any, source: str) -> dict[str, Any] | None:
    if data is None:
        return None
    missing = [
        k for k in ("model", "model_config", "config", "stride") if not isinstance(data, Mapping) or k not in data
    ]
    if missing:
        raise ValueError(f"{source}: 'finder' lacks {', '.join(missing)}; re-run the finder stage of training.full")
    return dict(data)


def checkpoint_file(run_or_checkpoint: str | Path) -> tuple[Path, Path | None]:
    """``(model.pt file, run folder or None)`` for a run folder or a checkpoint file, with errors that say what to
    pass instead."""
    p = Path(run_or_checkpoint)
    if not p.exists():
        raise FileNotFoundError(
            f"{p} does not exist: pass a run folder written by {WRITER} (it holds {CHECKPOINT_NAME}) or a checkpoint "
            "file"
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
    """An int (square) or a ``[W, H]`` pair -> ``(W, H)``."""
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
