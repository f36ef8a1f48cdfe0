"""export.tensorrt_build without a GPU: the trtexec script, the refusals, and a strict mypy check of the module
against tensorrt-stubs (with a control proving the stubs are in effect)."""

import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from export.tensorrt_build import (
    BatchProfile,
    build_engine,
    tensorrt_version,
    trtexec_command,
    write_trtexec_script,
)

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "export" / "tensorrt_build.py"


def test_trtexec_command_builds_a_strongly_typed_engine_with_a_batch_profile(tmp_path):
    command = trtexec_command(Path("tardis_fp16.onnx"), (3, 256, 192), BatchProfile(1, 8, 32), Path("t.cache"))
    assert command == [
        "trtexec",
        "--onnx=tardis_fp16.onnx",
        "--saveEngine=tardis_fp16.engine",
        "--minShapes=image:1x3x256x192",
        "--optShapes=image:8x3x256x192",
        "--maxShapes=image:32x3x256x192",
        "--stronglyTyped",
        "--timingCacheFile=t.cache",
    ]
    assert not {"--fp16", "--int8", "--best"} & set(command), "precision flags were removed in TensorRT 11"


def test_trtexec_script_is_valid_bash_and_writes_the_sidecar(tmp_path):
    onnx_path = tmp_path / "tardis_int8_qdq.onnx"
    onnx_path.write_bytes(b"")
    sidecar = {"keypoint_names": ["snout", "tailbase"], "outputs": [{"name": "keypoints", "shape": [-1, 2, 2]}]}
    script = write_trtexec_script(onnx_path, "int8_qdq", (3, 64, 64), BatchProfile(2, 4, 8), sidecar)
    text = script.read_text()
    assert script.name == "trtexec_int8_qdq.sh" and script.stat().st_mode & 0o111
    assert "trtexec --onnx=tardis_int8_qdq.onnx --saveEngine=tardis_int8_qdq.engine" in text
    assert "--minShapes=image:2x3x64x64 --optShapes=image:4x3x64x64 --maxShapes=image:8x3x64x64" in text
    assert "--stronglyTyped --timingCacheFile=tensorrt_timing.cache" in text
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    template = json.loads((tmp_path / "tardis_int8_qdq.engine.json.in").read_text())
    assert template["keypoint_names"] == ["snout", "tailbase"] and template["built_by"] == "trtexec_int8_qdq.sh"


def test_trtexec_script_runs_against_a_stand_in_trtexec(tmp_path):
    """The script's own steps (cd, trtexec call, sidecar) with a fake trtexec that records its arguments."""
    onnx_path = tmp_path / "tardis_fp32.onnx"
    onnx_path.write_bytes(b"")
    script = write_trtexec_script(onnx_path, "fp32", (3, 64, 64), BatchProfile(), {"precision": "fp32"})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "trtexec"
    fake.write_text('#!/usr/bin/env bash\necho "$@" > trtexec_args.txt\n')
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(["bash", str(script), "--verbose"], capture_output=True, text=True, env=env, cwd="/")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "trtexec_args.txt").read_text().split()[-1] == "--verbose"
    sidecar = json.loads((tmp_path / "tardis_fp32.engine.json").read_text())
    assert sidecar["precision"] == "fp32" and "tensorrt" in sidecar and "gpu" in sidecar


def test_refusals_without_tensorrt(tmp_path):
    with pytest.raises(ValueError, match="1 <= min <= opt <= max, got min=8 opt=4"):
        BatchProfile(8, 4, 32)
    if tensorrt_version() is not None:
        pytest.skip("TensorRT is installed here; the engine build is covered by the trt-marked tests")
    with pytest.raises(ImportError, match="needs TensorRT 10.x or 11.x .*trtexec_<precision>.sh"):
        build_engine(tmp_path / "m.onnx", "fp32", (3, 64, 64), BatchProfile(), {})


def _stubs_dir(tmp_path: Path) -> Path:
    """A copy of tensorrt-stubs that mypy can read.

    tensorrt-stubs 10.13 installs ``tensorrt/__init__.pyi`` without ``py.typed`` (mypy then skips it as untyped)
    and its ``tensorrt.pyi`` has two syntax errors mypy refuses to parse: parameters named ``in`` and a parameter
    without a default after defaulted ones (``add_scale_nd``). The copy gets exactly those two fixes.
    """
    try:
        files = [f for f in metadata.files("tensorrt-stubs") or [] if f.suffix == ".pyi"]
    except metadata.PackageNotFoundError:
        pytest.fail("tensorrt-stubs is not installed: pip install --no-deps 'tensorrt-stubs>=10'")
    stubs = tmp_path / "stubs"
    for f in files:
        target = stubs / str(f)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = Path(f.locate()).read_text()
        if f.name == "tensorrt.pyi":
            text = text.replace(", in: ", ", in_: ").replace("(self, in: ", "(self, in_: ")
            text = text.replace("channel_axis: int) -> IScaleLayer", "channel_axis: int = ...) -> IScaleLayer")
        target.write_text(text)
    (stubs / "tensorrt_libs.pyi").write_text("")  # imported by the stubs, shipped with the real wheel only
    assert (stubs / "tensorrt" / "__init__.pyi").is_file() and (stubs / "tensorrt_bindings" / "tensorrt.pyi").is_file()
    return stubs


def _mypy(tmp_path: Path, target: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("mypy")
    config = tmp_path / "mypy.ini"
    config.write_text(
        "[mypy]\nstrict = True\nfollow_imports = silent\n"
        f"mypy_path = {_stubs_dir(tmp_path)}\n"
        "[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*,tensorrt_libs]\nignore_errors = True\n"
    )
    command = [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(tmp_path / "cache"),
               "--no-error-summary", str(target)]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_tensorrt_module_type_checks_against_tensorrt_stubs(tmp_path):
    result = _mypy(tmp_path, MODULE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_control_catches_a_wrong_tensorrt_call(tmp_path):
    """The same check fails on a copy with two wrong TensorRT calls, so the stubs (not Any) are what is checked."""
    broken = tmp_path / "export_broken" / "tensorrt_build.py"
    broken.parent.mkdir()
    text = MODULE.read_text()
    text = text.replace("builder.create_network(flags)", "builder.create_network(str(flags))")
    text = text.replace("config.set_timing_cache(cache, ignore_mismatch=False)", "config.set_timing_cache(cache)")
    assert text != MODULE.read_text()
    broken.write_text(text)
    shutil.copy(ROOT / "export" / "__init__.py", broken.parent / "__init__.py")
    result = _mypy(tmp_path, broken)
    assert result.returncode == 1
    assert 'Argument 1 to "create_network" of "Builder" has incompatible type "str"' in result.stdout
    assert 'Missing positional argument "ignore_mismatch" in call to "set_timing_cache"' in result.stdout


@pytest.mark.trt
def test_build_engine_from_an_exported_graph(tmp_path):
    """Where TensorRT 10.x/11.x and a GPU are present: a strongly typed FP32 and FP16 engine with sidecars."""
    if tensorrt_version() is None:
        pytest.skip("TensorRT is not importable here")
    import torch

    from export.decode_graph import GraphDecode
    from export.fp16 import convert_fp16
    from export.onnx_export import append_decode, export_decode_graph, export_heatmaps_graph, save_graph
    from tardis_edge.models import ModelConfig, build_model

    torch.manual_seed(0)
    config = ModelConfig(backbone="resnet18", num_keypoints=3, input_size=(64, 64), use_decoder=False, use_head=True)
    body = export_heatmaps_graph(build_model(config).eval(), (64, 64))
    decode = export_decode_graph(GraphDecode("msra", (16, 16), 4.0), 3)
    graphs = {"fp32": append_decode(body, decode), "fp16": append_decode(convert_fp16(body, []), decode)}
    for precision, graph in graphs.items():
        path = save_graph(graph, tmp_path / f"tardis_{precision}.onnx")
        engine = build_engine(path, precision, (3, 64, 64), BatchProfile(1, 2, 4), {"keypoint_names": ["a", "b", "c"]})
        sidecar = json.loads(engine.with_name(engine.name + ".json").read_text())
        assert engine.stat().st_size > 0 and sidecar["strongly_typed"] and sidecar["precision"] == precision
        assert [t["name"] for t in sidecar["outputs"]] == ["keypoints", "scores"]
        assert sidecar["profile"] == {"min": [1, 3, 64, 64], "opt": [2, 3, 64, 64], "max": [4, 3, 64, 64]}
    assert (tmp_path / "tensorrt_timing.cache").stat().st_size > 0
