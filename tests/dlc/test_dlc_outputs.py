"""DeepLabCut 3.0.2's own functions (pandas < 3) on the result files of ``tardis-edge predict`` written under pandas 3.

Setup, all with DeepLabCut's code: a copy of the openfield project (its labels, the 10-frame cut of its video), a
PyTorch shuffle made by ``create_training_dataset`` and a snapshot of a resnet_50 built by ``PoseModel.build`` (random
weights: only its name matters to the functions below), so the shuffle's scorer is DeepLabCut's own
``DLC_Resnet50_openfieldOct30shuffle1_snapshot_200``. The model is the pooling artifact of test_runtime_support with the
project's four bodyparts (a real computation; its keypoints are not meant to be right). ``tardis-edge predict`` runs in
the main environment (pandas 3: ``$TARDIS_PANDAS3_PYTHON``, default .venv/bin/python), once with the default scorer and
once with ``--scorer`` naming the shuffle; then DeepLabCut's loaders, ``create_labeled_video(init_weights=...)``,
``analyze_videos_converth5_to_csv``, ``filterpredictions``, ``analyzeskeleton`` and ``movement`` read the files here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("TARDIS_SHARED_DIR") or ROOT.parent / "shared")
OPENFIELD = "data/openfield-Pranav-2018-10-30"
PANDAS3_ENV = "TARDIS_PANDAS3_PYTHON"
BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]
SKELETON = [["snout", "leftear"], ["snout", "rightear"], ["leftear", "tailbase"], ["rightear", "tailbase"]]
VIDEO = "m3v1mp4"
FRAMES = 10  # the committed cut of the openfield video


def shared_openfield() -> Path:
    """The whole openfield project (as tests/conftest.py's ``data_path``: skip without it, fail under CI's
    TARDIS_REQUIRE_SHARED=1)."""
    path = SHARED / OPENFIELD
    if not path.is_dir():
        if os.environ.get("TARDIS_REQUIRE_SHARED") == "1":
            pytest.fail(f"{path} is missing but TARDIS_REQUIRE_SHARED=1")
        pytest.skip(f"needs the full data: {path} not found")
    return path


def pandas3_python() -> str:
    """The interpreter that runs tardis-edge: pandas >= 3 there, or the test cannot show what it claims."""
    python = os.environ.get(PANDAS3_ENV) or str(ROOT / ".venv" / "bin" / "python")
    done = subprocess.run([python, "-c", "import pandas; print(pandas.__version__)"], capture_output=True, text=True)
    if done.returncode != 0 or int(done.stdout.split(".")[0]) < 3:
        pytest.fail(f"{python} has no pandas >= 3 ({done.stdout.strip() or done.stderr[-300:]}); set {PANDAS3_ENV}")
    return python


def run_main_env(python: str, *args: str) -> None:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}", OMP_NUM_THREADS="1")
    done = subprocess.run([python, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the openfield project with a DeepLabCut 3 PyTorch shuffle: ``(config.yaml, video, shuffle scorer)``."""
    import deeplabcut
    from deeplabcut.core.engine import Engine
    from deeplabcut.pose_estimation_pytorch.config import read_config_as_dict
    from deeplabcut.pose_estimation_pytorch.models import PoseModel
    from deeplabcut.pose_estimation_pytorch.runners.snapshots import TorchSnapshotManager
    from deeplabcut.utils import auxiliaryfunctions

    full = shared_openfield()
    root = tmp_path_factory.mktemp("openfield")
    shutil.copytree(full / "labeled-data", root / "labeled-data", copy_function=shutil.copyfile)
    for path in [root / "labeled-data", *(root / "labeled-data").rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # the shared data is read-only; DeepLabCut writes beside it
    video = root / "videos" / f"{VIDEO}.mp4"
    video.parent.mkdir()
    shutil.copyfile(ROOT / "tests" / "fixtures" / OPENFIELD / "videos" / f"{VIDEO}.mp4", video)
    config = root / "config.yaml"
    cfg = auxiliaryfunctions.read_config(full / "config.yaml")
    cfg.update(project_path=str(root), video_sets={str(video): {"crop": "0, 640, 0, 480"}}, skeleton=SKELETON)
    auxiliaryfunctions.write_config(str(config), cfg)

    deeplabcut.create_training_dataset(str(config), net_type="resnet_50", engine=Engine.PYTORCH)
    train = next(root.glob("dlc-models-pytorch/iteration-0/*shuffle1/train"))
    model = PoseModel.build(read_config_as_dict(train / "pytorch_config.yaml")["model"], pretrained_backbone=False)
    state = {"model": model.state_dict(), "metadata": {"metrics": {}, "epoch": 200}}
    TorchSnapshotManager(snapshot_prefix="snapshot", model_folder=train).update(epoch=200, state_dict=state, last=True)
    scorer, _ = auxiliaryfunctions.get_scorer_name(auxiliaryfunctions.read_config(config), 1, 0.95)
    return config, video, scorer


@pytest.fixture(scope="module")
def results(project, tmp_path_factory):
    """``tardis-edge predict`` under pandas 3: default scorer into results/, the shuffle's scorer beside the video."""
    config, video, shuffle_scorer = project
    python = pandas3_python()
    tmp = tmp_path_factory.mktemp("tardis")
    artifact = tmp / "tardis_openfield"
    build = (
        "from pathlib import Path; from test_runtime_support import build_artifact; "
        f"build_artifact(Path({str(artifact)!r}), names={BODYPARTS!r})"
    )
    run_main_env(python, "-c", build)
    default_out = tmp / "results"
    run_main_env(python, "-m", "tardis_edge.runtime", "predict", str(artifact), str(video), "--out", str(default_out))
    run_main_env(
        python, "-m", "tardis_edge.runtime", "predict", str(artifact), str(video), "--out", str(video.parent),
        "--scorer", shuffle_scorer,
    )  # fmt: skip
    return artifact, default_out


def ours(folder: Path, scorer: str) -> tuple[np.ndarray, np.ndarray]:
    """``(xy (N, K, 2), likelihood (N, K))`` from our CSV, read as text (no HDF5 involved)."""
    rows = (folder / f"{VIDEO}{scorer}.csv").read_text().splitlines()[3:]
    values = np.array([[float(v) for v in row.split(",")[1:]] for row in rows]).reshape(len(rows), len(BODYPARTS), 3)
    return values[..., :2], values[..., 2]


def test_written_under_pandas_3_with_deeplabcut_names(project, results):
    _, video, scorer = project
    artifact, default_out = results
    assert sorted(p.name for p in default_out.iterdir() if p.name != "summary.json") == [
        f"{VIDEO}DLC_tardis_openfield{suffix}" for suffix in (".csv", ".h5", "_coco.json", "_meta.pickle")
    ]
    assert scorer == "DLC_Resnet50_openfieldOct30shuffle1_snapshot_200"  # DeepLabCut 3's name of the shuffle
    assert (video.parent / f"{VIDEO}{scorer}.h5").is_file()
    xy, likelihood = ours(default_out, "DLC_tardis_openfield")
    assert xy.shape == (FRAMES, 4, 2) and np.isfinite(xy).all() and ((likelihood >= 0) & (likelihood <= 1)).all()
    summary = json.loads((default_out / "summary.json").read_text())
    assert summary["scorer"] == "DLC_tardis_openfield" and summary["values"] == "deeplabcut"


def test_deeplabcut_loaders_read_the_h5_and_meta_pickle(project, results):
    """DeepLabCut finds and reads the H5 by its scorer, and the meta pickle has DeepLabCut 3's keys and values (its
    own ``_generate_metadata`` on the same video is the reference)."""
    from deeplabcut.pose_estimation_pytorch.apis.videos import VideoIterator, _generate_metadata
    from deeplabcut.pose_estimation_pytorch.data import DLCLoader
    from deeplabcut.utils import auxiliaryfunctions

    config, video, _ = project
    _, default_out = results
    df, path, scorer, _ = auxiliaryfunctions.load_analyzed_data(default_out, VIDEO, "DLC_tardis_openfield")
    assert Path(path).name == f"{VIDEO}DLC_tardis_openfield.h5" and scorer == "DLC_tardis_openfield"
    assert list(df.columns.names) == ["scorer", "bodyparts", "coords"] and list(df.index) == list(range(FRAMES))
    xy, likelihood = ours(default_out, "DLC_tardis_openfield")
    np.testing.assert_allclose(df.to_numpy().reshape(FRAMES, 4, 3)[..., :2], xy, rtol=1e-12)
    np.testing.assert_allclose(df.xs("likelihood", level="coords", axis=1).to_numpy(), likelihood, rtol=1e-12)

    meta = auxiliaryfunctions.load_video_metadata(default_out, VIDEO, "DLC_tardis_openfield")
    loader = DLCLoader(config, shuffle=1)
    reference = _generate_metadata(
        cfg=loader.project_cfg, pytorch_config=loader.model_cfg, dlc_scorer="DLC_tardis_openfield",
        train_fraction=0.95, batch_size=8, cropping=None, runtime=(0.0, 1.0), video=VideoIterator(str(video)),
    )["data"]  # fmt: skip
    data = meta["data"]
    assert set(data) - {"tardis-edge"} == set(reference)
    for key in ("Scorer", "fps", "batch_size", "frame_dimensions", "nframes", "cropping", "cropping_parameters",
                "bodyparts", "unique_bodyparts"):  # fmt: skip
        assert data[key] == reference[key], key


def test_create_labeled_video_with_init_weights(project, results):
    """``init_weights=ARTIFACT``: DeepLabCut looks for scorer ``"DLC_" + stem``, our default scorer."""
    import deeplabcut

    config, video, _ = project
    artifact, default_out = results
    made = deeplabcut.create_labeled_video(
        str(config), [str(video)], init_weights=str(artifact), destfolder=str(default_out)
    )
    assert made == [True]
    [labeled] = default_out.glob(f"{VIDEO}DLC_tardis_openfield*_labeled.mp4")
    capture = cv2.VideoCapture(str(labeled))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES
    capture.release()


def test_analyze_videos_converth5_to_csv(project, results, tmp_path):
    """DeepLabCut's converter finds our H5 by name and writes the CSV we write."""
    import deeplabcut

    _, video, _ = project
    _, default_out = results
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copyfile(video, folder / video.name)
    shutil.copyfile(default_out / f"{VIDEO}DLC_tardis_openfield.h5", folder / f"{VIDEO}DLC_tardis_openfield.h5")
    deeplabcut.analyze_videos_converth5_to_csv(str(folder), ".mp4")
    theirs = pd.read_csv(folder / f"{VIDEO}DLC_tardis_openfield.csv", header=[0, 1, 2], index_col=0)
    mine = pd.read_csv(default_out / f"{VIDEO}DLC_tardis_openfield.csv", header=[0, 1, 2], index_col=0)
    pd.testing.assert_frame_equal(theirs, mine)


def test_filterpredictions_and_analyzeskeleton_with_the_shuffle_scorer(project, results):
    """Project-level functions take the shuffle (``shuffle=1``) and find our files by its scorer."""
    import deeplabcut

    config, video, scorer = project
    deeplabcut.filterpredictions(str(config), str(video), shuffle=1, filtertype="median", save_as_csv=True)
    filtered = pd.read_hdf(video.parent / f"{VIDEO}{scorer}_filtered.h5")
    assert filtered.shape == (FRAMES, 12) and np.isfinite(filtered.to_numpy()).all()

    deeplabcut.analyzeskeleton(str(config), [str(video)], shuffle=1, save_as_csv=True)
    skeleton = pd.read_hdf(video.parent / f"{VIDEO}{scorer}_skeleton.h5")
    xy, _ = ours(video.parent, scorer)
    for a, b in SKELETON:
        length = np.linalg.norm(xy[:, BODYPARTS.index(a)] - xy[:, BODYPARTS.index(b)], axis=-1)
        np.testing.assert_allclose(skeleton[(f"{a}_{b}", "length")].to_numpy(), length, rtol=1e-9)


def test_movement_reads_h5_and_csv(results):
    from movement.io import load_poses

    _, default_out = results
    xy, likelihood = ours(default_out, "DLC_tardis_openfield")
    for suffix in (".h5", ".csv"):
        ds = load_poses.from_dlc_file(default_out / f"{VIDEO}DLC_tardis_openfield{suffix}", fps=25)
        assert list(ds.keypoints.values) == BODYPARTS
        position = ds.position.transpose("time", "keypoints", "space", "individuals").to_numpy()[..., 0]
        np.testing.assert_allclose(position, xy, rtol=1e-9)
        np.testing.assert_allclose(ds.confidence.transpose("time", "keypoints", "individuals")[..., 0], likelihood)


def test_multi_animal_tracked_file(tmp_path):
    """The writer's multi-animal layout (written under pandas 3): DeepLabCut finds it as an ellipse-tracked result and
    reads it, and movement loads its individuals."""
    from deeplabcut.utils import auxiliaryfunctions
    from movement.io import load_poses

    write = (
        "import numpy as np\n"
        "from tardis_edge.runtime.writers import DlcResultWriter\n"
        f"w = DlcResultWriter({str(tmp_path)!r}, 'clip', 'DLC_tardis_multi', ['head', 'tail'],\n"
        "                    individuals=['ind1', 'ind2'])\n"
        "for t in range(6):\n"
        "    kps = np.array([[[10 + t, 20], [30, 40 + t]], [[50, 60], [70 + t, 80]]], float)\n"
        "    scores = np.array([[0.9, 0.8], [0.7, 0.6]]) if t != 3 else np.array([[0.9, 0.8], [0.0, 0.0]])\n"
        "    w.add(t, t, kps, scores, image_wh=(128, 96))\n"
        "w.flush()\n"
    )
    run_main_env(pandas3_python(), "-c", write)
    assert (tmp_path / "clipDLC_tardis_multi_el.h5").is_file()
    df, path, _, _ = auxiliaryfunctions.load_analyzed_data(tmp_path, "clip", "DLC_tardis_multi", track_method="ellipse")
    assert Path(path).name == "clipDLC_tardis_multi_el.h5"
    assert list(df.columns.names) == ["scorer", "individuals", "bodyparts", "coords"] and df.shape == (6, 12)
    assert df.loc[2, ("DLC_tardis_multi", "ind1", "head", "x")] == 12
    assert np.isnan(df.loc[3, ("DLC_tardis_multi", "ind2")]).all()  # not found: NaN, as DeepLabCut's tracked files
    meta = auxiliaryfunctions.load_video_metadata(tmp_path, "clip", "DLC_tardis_multi")
    assert meta["data"]["individuals"] == ["ind1", "ind2"] and meta["data"]["nframes"] == 6
    ds = load_poses.from_dlc_file(tmp_path / "clipDLC_tardis_multi_el.h5", fps=25)
    assert list(ds.individuals.values) == ["ind1", "ind2"] and ds.position.shape == (6, 2, 2, 2)
