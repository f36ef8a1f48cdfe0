"""The TensorRT backend cannot run here (no GPU, no TensorRT): it is type-checked with mypy against tensorrt-stubs,
and a deliberately wrong copy must fail the check (so the stubs are really in effect)."""

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "tardis_edge" / "runtime" / "backends" / "trt.py"
MYPY_INI = """[mypy]
strict = True
ignore_missing_imports = True
follow_imports = silent
[mypy-tensorrt.*,tensorrt_bindings.*]
ignore_errors = True
"""


def _stub_dirs() -> list[Path]:
    try:
        dist = importlib.metadata.distribution("tensorrt-stubs")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("tensorrt-stubs is not installed (make setup installs it: pip install --no-deps tensorrt-stubs)")
    dirs = [Path(dist.locate_file(name)) for name in ("tensorrt", "tensorrt_bindings")]
    if not all((d / "__init__.pyi").is_file() for d in dirs):
        pytest.fail(f"tensorrt-stubs {dist.version} does not have the expected layout {dirs}")
    return dirs


@pytest.fixture(scope="module")
def mypy_env(tmp_path_factory):
    """A copy of the stubs mypy can parse, and its config.

    tensorrt-stubs are installed as ``tensorrt/`` and ``tensorrt_bindings/`` (no ``-stubs`` suffix, no py.typed),
    so mypy only sees them through MYPYPATH; and 10.13 ships two syntax errors that stop mypy: a parameter named
    ``in`` (a keyword) and a non-default parameter after defaulted ones (``add_scale_nd``). Both are fixed in the copy.
    """
    root = tmp_path_factory.mktemp("stubs")
    for src in _stub_dirs():
        shutil.copytree(src, root / src.name)
    bindings = root / "tensorrt_bindings" / "tensorrt.pyi"
    text = bindings.read_text()
    text = text.replace("(self, in: ", "(self, in_: ").replace("(self: IPluginV3, in: ", "(self: IPluginV3, in_: ")
    text = text.replace("channel_axis: int) -> IScaleLayer", "channel_axis: int = ...) -> IScaleLayer")
    bindings.write_text(text)
    ini = root / "mypy.ini"
    ini.write_text(MYPY_INI)
    return root, ini


def _mypy(path: Path, env_root: Path, ini: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(ini), "--cache-dir", str(env_root / ".mypy_cache")]
    env = {**os.environ, "MYPYPATH": str(env_root)}
    return subprocess.run([*cmd, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


def test_tensorrt_backend_type_checks(mypy_env):
    root, ini = mypy_env
    done = _mypy(MODULE, root, ini)
    assert done.returncode == 0, done.stdout + done.stderr


def test_type_check_catches_a_wrong_tensorrt_call(mypy_env, tmp_path):
    root, ini = mypy_env
    source = MODULE.read_text()
    call = "engine.get_tensor_name(i)"
    assert call in source
    broken = tmp_path / "trt_broken.py"
    broken.write_text(source.replace(call, "engine.get_tensor_name(str(i))"))
    done = _mypy(broken, root, ini)
    assert done.returncode == 1
    assert 'Argument 1 to "get_tensor_name" of "ICudaEngine" has incompatible type "str"' in done.stdout, done.stdout
