"""Export stage: read what is exported — a run folder of ``python -m training.full`` or its ``model.pt``.

The checkpoint is a ``tardis_edge.checkpoint.DeployCheckpoint`` (weights, model config, keypoint schema, sizes,
predict settings, versions). A run folder adds ``config.yaml``, whose ``data`` section says where the labelled data
is (verification and calibration use them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tardis_edge.checkpoint import DeployCheckpoint, checkpoint_file
from tardis_edge.data.sample import KeypointSchema


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
        split: the run's split as written by training (``model.pt``, else the run's ``split.json``); None for
            checkpoints written before splits were recorded.
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
    split: dict[str, Any] | None = None  # the run's train/val/test sample ids (``tardis_edge.splits.Split``)
    finder: Any = None  # multi-animal runs: the animal finder (``PoseModel``, eval mode), else None
    finder_config: Any = None  # its ``tardis_edge.finder.FinderConfig``
    finder_stride: float | None = None
    dlc: Any = None  # a DeepLabCut 3 model (export.dlc_import.DLCModel): its own decode and verification reference

    @property
    def stride(self) -> float:
        from tardis_edge.geometry import heatmap_stride

        if self.dlc is not None:  # DeepLabCut's heads need not tile the input exactly (3x3 deconv, no padding)
            return float(self.dlc.decode.stride)
        return heatmap_stride(self.input_wh, self.heatmap_wh)

    def crop_runner(self, cfg: Any, flip_indices: Any = None, device: str = "cpu") -> Any:
        """The PyTorch reference on crops: the training-form model through ``kernels.predict``, or for a DeepLabCut
        model DeepLabCut's own transforms, model and predictor."""
        if self.dlc is not None:
            return self.dlc.crop_runner(device)
        from kernels.predict import model_crop_runner

        return model_crop_runner(self.model.eval().to(device), cfg, flip_indices, device=device)


def load_source(
    run_or_checkpoint: str | Path, snapshot: str | Path | None = None, input_size: tuple[int, int] | None = None
) -> ExportSource:
    """Load the model and its metadata from a run folder or a ``model.pt`` checkpoint file, or a DeepLabCut 3 model
    folder (``export.dlc_import``; ``snapshot`` and ``input_size`` are for those alone).

    Raises:
        FileNotFoundError: the path or the run's ``model.pt`` is missing.
        ValueError / KeyError: the checkpoint lacks an entry or holds an inconsistent one (named in the message).
    """
    from export.dlc_import import is_dlc_model, load_dlc_source
    from tardis_edge.config import from_dict
    from tardis_edge.predict import PredictConfig

    if is_dlc_model(run_or_checkpoint):
        return load_dlc_source(run_or_checkpoint, snapshot, input_size)
    if snapshot is not None or input_size is not None:
        raise ValueError(
            f"--snapshot and --input-size are for DeepLabCut model folders (with pytorch_config.yaml); "
            f"{run_or_checkpoint} is not one"
        )
    ckpt_path, run_dir = checkpoint_file(run_or_checkpoint)
    source = str(ckpt_path)
    checkpoint = DeployCheckpoint.load(ckpt_path)
    schema = checkpoint.schema
    model = checkpoint.build_model(source)
    if model.config.num_keypoints != schema.num_keypoints:
        raise ValueError(
            f"{source}: the model predicts {model.config.num_keypoints} heatmaps but the schema names "
            f"{schema.num_keypoints} keypoints"
        )
    input_wh, heatmap_wh = checkpoint.input_size, checkpoint.heatmap_size
    expected = (input_wh[0] // model.out_stride, input_wh[1] // model.out_stride)
    if heatmap_wh != expected:
        raise ValueError(
            f"{source}: heatmap_size {heatmap_wh} does not match the model's output {expected} for input {input_wh} "
            f"(stride {model.out_stride})"
        )
    predict = from_dict(PredictConfig, checkpoint.predict)
    data: dict[str, Any] = {}
    if run_dir is not None:
        import yaml

        config_path = run_dir / "config.yaml"  # only where the run's data is: the checkpoint holds the model
        config: Any = {}
        if config_path.is_file():
            try:
                config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
            except (yaml.YAMLError, UnicodeDecodeError) as exc:
                reason = " ".join(str(exc).split())[:200]
                raise ValueError(
                    f"{config_path} is not valid YAML ({reason}); restore the run's config.yaml, or export the "
                    f"checkpoint itself ({ckpt_path})"
                ) from None
        if not isinstance(config, dict) or not isinstance(config.get("data") or {}, dict):
            raise ValueError(f"{config_path} must hold a mapping with a 'data' mapping, as training.full writes it")
        data = dict(config.get("data") or {})
    split = checkpoint.split
    if split is None and run_dir is not None:
        from tardis_edge.splits import SPLIT_FILE, Split

        if (run_dir / SPLIT_FILE).is_file():
            split = Split.read(run_dir / SPLIT_FILE).to_dict()
    finder, finder_config, finder_stride = None, None, None
    if checkpoint.finder is not None:
        from tardis_edge.finder import FinderConfig

        finder = checkpoint.build_finder(source)
        finder_config = from_dict(FinderConfig, checkpoint.finder["config"])
        finder_stride = float(checkpoint.finder["stride"])
    return ExportSource(
        ckpt_path,
        run_dir,
        model,
        schema,
        input_wh,
        heatmap_wh,
        predict,
        checkpoint.versions,
        data,
        split,
        finder,
        finder_config,
        finder_stride,
    )


def same_path(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def load_split(source: ExportSource, data_path: str | Path | None = None) -> tuple[Any, Any, Any]:
    """``(dataset, train, test)``: the run's labelled data split as training split it, or another dataset.

    The split is read from the run (``model.pt`` / ``split.json``), never re-derived. Data the model never saw in
    training (``data_path`` other than the run's data) is held out whole: ``train`` and ``test`` are all of it.

    Args:
        source: the loaded run (its ``config.yaml`` ``data`` section names the data).
        data_path: another dataset instead (DeepLabCut project or COCO json).

    Raises:
        ValueError: no data is known (a bare checkpoint without ``data_path``), or the run's own data without a
            recorded split, naming the options.
    """
    from tardis_edge.data import load_dataset
    from tardis_edge.splits import Split

    run_path = source.data.get("path")
    builtin = None
    if source.run_dir is not None:
        candidate = source.run_dir / "builtin-data"
        builtin = candidate if (candidate / "config.yaml").is_file() else None
    own_data = run_path if run_path is not None else builtin
    path = data_path or own_data
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
    own = data_path is None or (own_data is not None and same_path(data_path, own_data))
    if not own:
        return dataset, dataset, dataset
    if source.split is None:
        raise ValueError(
            f"{source.checkpoint}: the run recorded no train/test split (trained before splits were written); "
            "retrain it, or pass --data with data the model was not trained on"
        )
    train, _, test = Split.from_dict(source.split, str(source.checkpoint)).apply(dataset)
    return dataset, train, test
