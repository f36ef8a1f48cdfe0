"""DeepLabCut 3 PyTorch models through tardis-export (export/dlc_import.py), checked against DeepLabCut's own code.

The models are made by DeepLabCut itself: ``create_training_dataset`` on a copy of the openfield project writes the
shuffles' ``pytorch_config.yaml``, ``PoseModel.build`` makes the network with its own seeded initialisation, and
``dlc_models.py`` saves it as a snapshot (HRNet's batch-norm statistics estimated on two openfield crops
first: with its initial statistics the activations reach 1e6 and every peak is decided by rounding).
"""

from __future__ import annotations

import numpy as np
import pytest
from dlc_models import MAX_PX, dlc_inference, make_project, make_snapshot, read_frames

FRAMES = 3  # of the shuffle's test split (6 frames); DeepLabCut's own HRNet inference takes ~4 s a frame here


def test_environment_is_deeplabcut_3_with_pandas_2():
    """The environment scripts/setup_dlc_env.sh promises: DeepLabCut 3.0, pandas < 3, and this package beside them."""
    import deeplabcut
    import pandas

    import export.cli  # noqa: F401
    import tardis_edge  # noqa: F401

    assert deeplabcut.__version__.startswith("3.0."), deeplabcut.__version__
    assert int(pandas.__version__.split(".")[0]) < 3, pandas.__version__


@pytest.fixture(scope="module")
def project(tmp_path_factory, openfield_dir):
    return make_project(openfield_dir, tmp_path_factory.mktemp("dlc"), {1: "resnet_50", 2: "hrnet_w32"})


@pytest.mark.parametrize("shuffle,net_type", [(1, "resnet_50"), (2, "hrnet_w32")])
def test_fp32_export_equals_deeplabcut_inference(project, tmp_path, shuffle, net_type):
    """Our FP32 graph (whole frames, through the edge runtime) reproduces DeepLabCut's own inference runner."""
    from export.cli import main
    from export.source import load_source
    from tardis_edge.runtime import open_runner

    folder = project.model_folder(shuffle)
    snapshot = make_snapshot(folder, project.path, seed=shuffle)
    out = tmp_path / "artifact"
    assert main([str(folder), "--no-verify", "--out", str(out)]) == 0

    test_ids = load_source(folder).split["test"][:FRAMES]  # DeepLabCut's own split of this shuffle
    frames = read_frames(project.path, test_ids)
    with open_runner(out, precision="fp32", refine=False) as runner:
        ours = runner(frames)
    theirs = dlc_inference(folder, snapshot, frames)  # (N, K, 3)

    assert np.isfinite(ours.keypoints).all(), "a keypoint DeepLabCut places was reported not found"
    deviation = np.linalg.norm(ours.keypoints - theirs[..., :2], axis=-1)
    assert deviation.max() <= MAX_PX, f"{net_type}: max deviation {deviation.max():.4g} px"
    np.testing.assert_allclose(ours.scores, theirs[..., 2], atol=1e-4)


@pytest.mark.parametrize(
    "net_type,named",
    [("dekr_w32", "head DEKRHead with predictor DEKRPredictor"), ("rtmpose_s", "head RTMCCHead"),
     ("resnet_101", "backbone ResNet 'resnet101'")],
)  # fmt: skip
def test_unsupported_model_types_are_refused_in_one_line(project, capsys, net_type, named):
    from export.cli import main
    from tardis_edge.errors import EXIT_USER

    shuffle = {"dekr_w32": 3, "rtmpose_s": 4, "resnet_101": 5}[net_type]
    folder = project.add_shuffle(shuffle, net_type)  # its config: refused before any snapshot is read
    assert main([str(folder), "--no-verify"]) == EXIT_USER
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert named in err and "supported" in err and "resnet_50 or hrnet_w32" in err, err


def test_superanimal_top_down_pose_model_matches_deeplabcut_on_crops(tmp_path, openfield_dir):
    """A SuperAnimal pose model's config as DeepLabCut builds it (superanimal_topviewmouse, resnet_50, top-down with
    its detector; seeded weights: we have no SuperAnimal weights) exports at its 256 x 256 crop, and the FP32 graph
    gives DeepLabCut's model + predictor's keypoints on openfield crops."""
    from deeplabcut.pose_estimation_pytorch.config import PoseConfig

    from export.cli import main
    from export.source import load_source
    from export.verify import ort_session

    folder = tmp_path / "superanimal_topviewmouse_resnet_50"
    folder.mkdir()
    config = PoseConfig.build_for_superanimal_inference(
        super_animal="superanimal_topviewmouse", model_name="resnet_50", detector_name="fasterrcnn_resnet50_fpn_v2"
    )
    config.to_yaml(folder / "pytorch_config.yaml")
    make_snapshot(folder, openfield_dir, seed=3)
    out = tmp_path / "artifact"
    assert main([str(folder), "--no-verify", "--out", str(out)]) == 0

    source = load_source(folder)
    assert source.input_wh == (256, 256) and source.predict.two_pass and source.schema.num_keypoints == 27
    frames = read_frames(openfield_dir, [f"labeled-data/m4s1/img{i:04d}.png" for i in (3, 60)])
    crops = np.stack([f[y : y + 256, x : x + 256] for f in frames for x, y in ((0, 0), (300, 200))])
    crops = np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)  # (4, 3, 256, 256) RGB 0..255
    keypoints, scores = ort_session(out / "tardis_fp32.onnx").run(None, {"image": crops})
    theirs = source.dlc.crop_runner()(crops, np.broadcast_to(np.eye(2, 3), (len(crops), 2, 3)))
    found = scores > 0
    assert found.any()
    assert (np.linalg.norm(keypoints - theirs.keypoints, axis=-1)[found]).max() <= MAX_PX
    np.testing.assert_allclose(scores, theirs.scores, atol=1e-4)
