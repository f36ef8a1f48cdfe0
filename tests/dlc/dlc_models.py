"""DeepLabCut 3 models made by DeepLabCut's own code on a copy of the openfield project, for the import's parity test
(tests/dlc/test_dlc_import.py) and its measurement (benchmarks/dlc_import_parity.py). Needs DeepLabCut (.venv-dlc).

``make_project`` copies the project's config and labelled frames, points the config at the copy and runs
``deeplabcut.create_training_dataset`` once per shuffle (its split, its ``pytorch_config.yaml``); ``make_snapshot``
builds the network with ``PoseModel.build`` from a seed and saves it as DeepLabCut saves snapshots.

Random weights, made usable: DeepLabCut's ResNet-50 uses group norm, and its seeded weights give heatmaps whose top
two values differ by 2e-3 to 1.5e-2 (well above float noise). HRNet-W32 uses batch norm with initial statistics
(mean 0, variance 1), which leave activations near 1e6 and every heatmap peak a matter of rounding; its batch-norm
statistics are therefore estimated on two 256 x 256 openfield crops (one no-grad pass in training mode) before saving.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_PX = 0.05  # the bound: our FP32 export's keypoints within this of DeepLabCut's inference
SNAPSHOT_NAME = "snapshot-000.pt"


@dataclass
class Project:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    def model_folder(self, shuffle: int) -> Path:
        found = sorted((self.path / "dlc-models-pytorch").glob(f"iteration-*/*shuffle{shuffle}/train"))
        if len(found) != 1:
            raise FileNotFoundError(f"shuffle {shuffle} of {self.path}: {found}")
        return found[0]

    def add_shuffle(self, shuffle: int, net_type: str) -> Path:
        """A new shuffle made by DeepLabCut's ``create_training_dataset``; its model folder."""
        import deeplabcut

        deeplabcut.create_training_dataset(str(self.config), Shuffles=[shuffle], net_type=net_type)
        return self.model_folder(shuffle)


def make_project(openfield: Path, where: Path, shuffles: dict[int, str]) -> Project:
    """A DeepLabCut project at ``where/openfield`` from the openfield project, with ``shuffles`` (index -> net_type)."""
    from deeplabcut.utils import auxiliaryfunctions

    path = where / "openfield"
    path.mkdir(parents=True)
    shutil.copy(openfield / "config.yaml", path / "config.yaml")
    shutil.copytree(openfield / "labeled-data", path / "labeled-data")
    for file in path.rglob("*"):
        file.chmod(0o755 if file.is_dir() else 0o644)  # shared/ is read-only
    config = auxiliaryfunctions.read_config(str(path / "config.yaml"))
    config["project_path"] = str(path)
    config["video_sets"] = {str(path / "videos" / f"{video.name}.mp4"): {"crop": "0, 640, 0, 480"}
                            for video in (path / "labeled-data").iterdir()}  # fmt: skip
    auxiliaryfunctions.write_config(str(path / "config.yaml"), config)
    project = Project(path)
    for shuffle, net_type in shuffles.items():
        project.add_shuffle(shuffle, net_type)
    return project


def read_frames(project: Path, sample_ids: list[str]) -> list[np.ndarray]:
    """RGB uint8 frames of the project, by sample id (``labeled-data/<video>/<image>``)."""
    import cv2

    return [cv2.cvtColor(cv2.imread(str(project / sample_id)), cv2.COLOR_BGR2RGB) for sample_id in sample_ids]


def make_snapshot(folder: Path, project: Path, seed: int) -> Path:
    """DeepLabCut's network for ``folder``'s config, from ``seed``, saved as ``folder/snapshot-000.pt``."""
    import torch
    from deeplabcut.pose_estimation_pytorch.config import read_config_as_dict
    from deeplabcut.pose_estimation_pytorch.models import PoseModel

    config = read_config_as_dict(folder / "pytorch_config.yaml")
    torch.manual_seed(seed)
    model = PoseModel.build(config["model"])
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if norms:
        frames = read_frames(project, [f"labeled-data/m4s1/img{i:04d}.png" for i in (0, 50)])
        crops = np.stack([f[112:368, 192:448] for f in frames]).astype(np.float32)  # (2, 256, 256, 3)
        x = (crops / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a plain average over the pass
            norm.train()
        with torch.no_grad():
            model(torch.from_numpy(x.astype(np.float32)).permute(0, 3, 1, 2).contiguous())
    model.eval()
    path = folder / SNAPSHOT_NAME
    torch.save({"model": model.state_dict(), "metadata": {"epoch": 0}}, path)
    return path


def dlc_inference(folder: Path, snapshot: Path, frames: list[np.ndarray]) -> np.ndarray:
    """DeepLabCut's own inference runner on RGB frames: ``(N, K, 3)`` x, y, score (its single individual)."""
    from deeplabcut.pose_estimation_pytorch.apis.utils import get_pose_inference_runner
    from deeplabcut.pose_estimation_pytorch.config import read_config_as_dict

    config = read_config_as_dict(folder / "pytorch_config.yaml")
    runner = get_pose_inference_runner(config, snapshot, device="cpu")
    return np.stack([prediction["bodyparts"][0] for prediction in runner.inference(frames)])
